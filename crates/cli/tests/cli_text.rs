//! What users read, pinned by snapshots (insta): `paddock config show`, the `paddock
//! doctor` table, and the main error texts (a bad key, a bad value naming its key or
//! variable, a bad flag). Each runs the real `paddock` binary with a cleared environment,
//! so nothing of the machine's `PADDOCK_*` leaks in; temporary paths are written `[TMP]`
//! and the doctor's machine-dependent columns are redacted.
//!
//! A changed text is a changed interface: review the `.snap.new` file, then accept it
//! (`cargo insta review`, or `INSTA_UPDATE=always cargo test -p paddock-cli --test cli_text`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

use std::path::Path;
use std::process::Command;

use paddock_runtime::cli::{Check, doctor_report};

const PADDOCK: &str = env!("CARGO_BIN_EXE_paddock");

/// Runs `paddock {args}` with only `env` (and `PATH`) set, in `dir`.
fn paddock(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(PADDOCK);
    c.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run paddock")
}

/// The transcript of one run: the command, its status and both streams, with `tmp`
/// written `[TMP]`.
fn transcript(tmp: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let o = paddock(tmp, args, env);
    let mut s = String::new();
    for (k, v) in env {
        s.push_str(&format!("{k}={v} "));
    }
    s.push_str(&format!("paddock {}\n", args.join(" ")));
    s.push_str(&format!("exit status: {:?}\n", o.status.code()));
    for (name, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        if !bytes.is_empty() {
            s.push_str(&format!("--- {name}\n{}", String::from_utf8_lossy(bytes)));
        }
    }
    s.replace(&tmp.display().to_string(), "[TMP]")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

#[test]
fn config_show_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let o = paddock(tmp.path(), &["config", "show"], &[]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    insta::assert_snapshot!(String::from_utf8(o.stdout).unwrap());
}

/// Defaults < file < environment, shown: the file sets `data_dir`, `listen` and a limit;
/// the environment overrides `listen` and sets the log level; the secret never shows.
#[test]
fn config_show_file_then_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(
        tmp.path(),
        "paddock.yaml",
        "data_dir: /srv/paddock\nlisten: 0.0.0.0:9000\napi_key: file-secret\n\
         sandbox:\n  limits:\n    pids: 64\nagent:\n  max_body_bytes: 1024\n",
    );
    let t = transcript(
        tmp.path(),
        &["config", "show"],
        &[
            ("PADDOCK_CONFIG", &cfg),
            ("PADDOCK_LISTEN", "127.0.0.1:7000"),
            ("PADDOCK_LOG", "debug"),
            ("PADDOCK_API_KEY", "env-secret"),
        ],
    );
    // The key is never shown: only the command line above the output names it.
    assert!(
        !t.contains("file-secret") && t.matches("env-secret").count() == 1,
        "{t}"
    );
    insta::assert_snapshot!(t);
}

/// `paddock doctor` as it runs here, with what depends on the machine (whether a feature
/// works, what the probe saw, the hints and the verdicts) redacted: the rows, their order
/// and which are required stay.
#[test]
fn doctor_table_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let o = paddock(
        tmp.path(),
        &["doctor", "--data-dir", &data.display().to_string()],
        &[],
    );
    assert!(matches!(o.status.code(), Some(0 | 1)), "{o:?}");
    let text = String::from_utf8(o.stdout).unwrap();
    insta::assert_snapshot!(redact_doctor(&text));
}

/// The table's columns sit where its header puts them: keep the feature and "needed"
/// columns, redact status and detail, drop hints, and keep only the first words of the
/// verdict lines.
fn redact_doctor(text: &str) -> String {
    let mut lines = text.lines();
    let header = lines.next().expect("header");
    let status_at = header.find("status").expect("status column");
    let needed_at = header.find("needed").expect("needed column");
    let detail_at = header.find("detail").expect("detail column");
    let mut out = format!("{header}\n");
    // The rows (and their hints) up to the blank line, then the verdicts.
    for line in lines.by_ref() {
        if line.is_empty() {
            out.push('\n');
            break;
        }
        if line.trim_start().starts_with("hint:") {
            continue;
        }
        let feature = &line[..status_at];
        let needed = &line[needed_at..detail_at];
        out.push_str(&format!("{feature}<status>  {needed}<detail>\n"));
    }
    // "isolation: isolated is ...", "disk quota: ..." or "the configured disk quota
    // cannot be enforced here: ...".
    for line in lines {
        let what = line.split_once(':').map_or("", |(w, _)| w);
        out.push_str(&format!("{what}: <verdict>\n"));
    }
    out
}

fn check(feature: &str, required: bool, ok: bool, detail: &str, hint: &str) -> Check {
    Check {
        feature: feature.into(),
        required,
        ok,
        detail: detail.into(),
        hint: hint.into(),
    }
}

/// The whole doctor text for fixed probe results: everything available, then a required
/// feature and an explicitly configured quota missing (hints shown, verdicts negative).
#[test]
fn doctor_table_text() {
    let available = [
        check("user namespace", true, true, "created", ""),
        check("landlock", false, true, "ABI 4, restriction enforced", ""),
        check(
            "cgroup memory",
            false,
            true,
            "v2, child cgroup created and removed",
            "",
        ),
        check(
            "disk quota (auto)",
            false,
            true,
            "image: 10 GiB per thread (root, loop devices and mkfs.ext4 here)",
            "",
        ),
    ];
    let missing = [
        check(
            "user namespace",
            true,
            false,
            "Operation not permitted (os error 1)",
            "enable unprivileged user namespaces",
        ),
        check("landlock", false, true, "ABI 4, restriction enforced", ""),
        check(
            "disk quota (image)",
            true,
            false,
            "mkfs.ext4 not found",
            "install e2fsprogs",
        ),
    ];
    let mut s = String::new();
    for (name, checks) in [("available", &available[..]), ("missing", &missing[..])] {
        let (ok, text) = doctor_report(checks, false).unwrap();
        s.push_str(&format!("=== {name}: ok={ok}\n{text}"));
        let (json_ok, json) = doctor_report(checks, true).unwrap();
        assert_eq!(json_ok, ok);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["ok"], ok);
        assert_eq!(v["checks"].as_array().unwrap().len(), checks.len());
    }
    insta::assert_snapshot!(s);
}

/// The main ways to get it wrong, each with its message and exit status.
#[test]
fn error_texts() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let bad_key = write(t, "bad-key.yaml", "sandbox:\n  limits:\n    memroy: 1\n");
    let bad_value = write(t, "bad-value.yaml", "sandbox:\n  isolation: maybe\n");
    let bad_yaml = write(t, "bad-yaml.yaml", "listen: [1, 2\n");
    let bad_mount = write(
        t,
        "bad-mount.yaml",
        "mounts:\n  custom:\n    - {host_path: /etc, container_path: /data}\n",
    );
    let data = t.join("data").display().to_string();
    /// A command line and the variables it runs with.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case<'_>> = vec![
        // A key that does not exist, with its full path.
        (vec!["config", "check", "--config", &bad_key], vec![]),
        // A value of the wrong kind, naming its key.
        (vec!["config", "check", "--config", &bad_value], vec![]),
        // A variable of the wrong kind, naming the variable and the key it sets.
        (
            vec!["exec", "--thread", "t", "--", "true"],
            vec![("PADDOCK_EXEC_TIMEOUT_SECS", "soon")],
        ),
        // A file that is not YAML, naming the file.
        (vec!["serve", "--config", &bad_yaml], vec![]),
        // A missing file.
        (
            vec!["doctor"],
            vec![("PADDOCK_CONFIG", "/nonexistent/paddock.yaml")],
        ),
        // A custom mount the file is not allowed to make.
        (
            vec!["agent", "--config", &bad_mount, "--insecure-no-auth"],
            vec![],
        ),
        // A flag that does not exist, in the front and in paddock-full.
        (
            vec!["exec", "--bogus", "x", "--thread", "t", "--", "true"],
            vec![],
        ),
        (vec!["serve", "--bogus"], vec![]),
        // A flag value clap refuses, listing the ones it takes.
        (
            vec![
                "exec",
                "--thread",
                "t",
                "--isolation",
                "maybe",
                "--",
                "true",
            ],
            vec![],
        ),
        // A flag value the settings refuse, naming the flag.
        (
            vec![
                "exec",
                "--data-dir",
                &data,
                "--thread",
                "../x",
                "--",
                "true",
            ],
            vec![],
        ),
        (
            vec![
                "mcp",
                "--thread",
                "t",
                "--provisioner",
                "ftp://x",
                "--api-key",
                "k",
            ],
            vec![],
        ),
        (
            vec!["mcp", "--thread", "t", "--bash-timeout-secs=-1"],
            vec![],
        ),
        // The agent without a token.
        (vec!["agent"], vec![]),
    ];
    let mut s = String::new();
    for (args, env) in &cases {
        s.push_str(&transcript(t, args, env));
        s.push('\n');
    }
    assert!(
        !t.join(".paddock").exists(),
        "no refused command may create the default data directory"
    );
    insta::assert_snapshot!(s);
}
