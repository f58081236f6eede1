//! Pins every text format of the tool layer with snapshots, branch by branch, against a
//! scripted sandbox; also checks what the tools ask the sandbox for.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use insta::assert_snapshot;
use paddock_core::SandboxError;
use paddock_core::sandbox::{EntryKind, ExecExit};
use paddock_tools::{FileLocks, Tools, ToolsConfig};

fn tools_with(config: ToolsConfig, replies: Vec<Reply>) -> (Tools, Arc<ScriptedSandbox>) {
    let sb = ScriptedSandbox::with("sb-1", replies);
    let t = Tools::with_env(sb.clone(), config, |_| None, Arc::new(FileLocks::new()));
    (t, sb)
}

fn tools(replies: Vec<Reply>) -> (Tools, Arc<ScriptedSandbox>) {
    tools_with(ToolsConfig::default(), replies)
}

const WS: &str = "/mnt/user-data/workspace";

// ---------------------------------------------------------------- bash

async fn bash_once(reply: Reply) -> String {
    let (t, _) = tools(vec![reply]);
    t.bash("cmd", &BTreeMap::new()).await
}

#[tokio::test]
async fn bash_formats() {
    assert_snapshot!(
        "bash_stdout",
        bash_once(outcome("hello\n", "", exit_code(0))).await
    );
    assert_snapshot!(
        "bash_stdout_stderr",
        bash_once(outcome("out\n", "warn\n", exit_code(0))).await
    );
    assert_snapshot!(
        "bash_stderr_only",
        bash_once(outcome("", "only err\n", exit_code(0))).await
    );
    assert_snapshot!(
        "bash_no_output",
        bash_once(outcome("", "", exit_code(0))).await
    );
    assert_snapshot!(
        "bash_exit_code",
        bash_once(outcome("partial\n", "boom\n", exit_code(3))).await
    );
    assert_snapshot!(
        "bash_exit_code_no_output",
        bash_once(outcome("", "", exit_code(1))).await
    );
    let signal = ExecExit {
        signal: Some(15),
        ..Default::default()
    };
    assert_snapshot!("bash_signal", bash_once(outcome("x\n", "", signal)).await);
    let timeout = ExecExit {
        timed_out: true,
        signal: Some(9),
        ..Default::default()
    };
    assert_snapshot!(
        "bash_timeout_no_output",
        bash_once(outcome("", "", timeout.clone())).await
    );
    assert_snapshot!(
        "bash_timeout_with_output",
        bash_once(outcome("serving on :8000\n", "", timeout)).await
    );
    let oom = ExecExit {
        oom_killed: true,
        signal: Some(9),
        ..Default::default()
    };
    assert_snapshot!("bash_oom", bash_once(outcome("loading\n", "", oom)).await);
    let capped = ExecExit {
        exit_code: Some(0),
        stdout_dropped: 90,
        ..Default::default()
    };
    assert_snapshot!(
        "bash_stream_capped",
        bash_once(outcome("0123456789", "", capped)).await
    );
    let spawn = SandboxError::spawn("no shell found in the sandbox");
    assert_snapshot!("bash_error", bash_once(Reply::Exec(Err(spawn))).await);
    let unavailable = SandboxError::Unavailable {
        message: "agent did not answer".into(),
    };
    assert_snapshot!(
        "bash_unavailable",
        bash_once(Reply::Exec(Err(unavailable))).await
    );
}

#[tokio::test]
async fn bash_timeout_uses_configured_seconds() {
    let mut cfg = ToolsConfig::default();
    cfg.bash_timeout_secs = 1.0;
    let timeout = ExecExit {
        timed_out: true,
        ..Default::default()
    };
    let (t, sb) = tools_with(cfg, vec![outcome("", "", timeout)]);
    let out = t.bash("sleep 5", &BTreeMap::new()).await;
    assert_snapshot!("bash_timeout_one_second", out);
    let Call::Exec(req) = &sb.calls()[0] else {
        panic!("{:?}", sb.calls())
    };
    assert_eq!(req.command, "sleep 5");
    assert_eq!(req.timeout_secs, Some(1.0));
    assert_eq!(req.cwd, None);
}

#[tokio::test]
async fn bash_masks_secrets_and_passes_env() {
    let mut env = BTreeMap::new();
    env.insert("API_TOKEN".to_owned(), "tok-1234567890".to_owned());
    env.insert("SHORT".to_owned(), "1234567".to_owned());
    env.insert("GH_TOKEN".to_owned(), "tok-1234567890-extended".to_owned());
    let (t, sb) = tools(vec![outcome(
        "token=tok-1234567890 gh=tok-1234567890-extended short=1234567\n",
        "echo tok-1234567890\n",
        exit_code(0),
    )]);
    let out = t.bash("env", &env).await;
    assert_snapshot!("bash_secrets_masked", out);
    let Call::Exec(req) = &sb.calls()[0] else {
        panic!()
    };
    assert_eq!(req.env, env);
    assert_eq!(req.timeout_secs, Some(600.0));
}

#[tokio::test]
async fn bash_truncation() {
    let mut cfg = ToolsConfig::default();
    cfg.bash_output_max_chars = 200;
    let long: String = (0..100).map(|i| format!("line {i:03}\n")).collect();
    let (t, _) = tools_with(cfg.clone(), vec![outcome(&long, "", exit_code(0))]);
    let out = t.bash("seq", &BTreeMap::new()).await;
    assert!(out.chars().count() <= 200);
    assert_snapshot!("bash_truncated", out);

    let (t, _) = tools_with(
        cfg.clone(),
        vec![outcome(&long, "fatal: it broke\n", exit_code(2))],
    );
    let out = t.bash("seq", &BTreeMap::new()).await;
    assert!(out.chars().count() <= 200);
    assert!(out.ends_with("\nExit Code: 2"));
    assert_snapshot!("bash_truncated_keeps_exit_code", out);

    // The default limit of 20,000 chars.
    let huge = "é".repeat(50_000);
    let (t, _) = tools(vec![outcome(&huge, "", exit_code(0))]);
    let out = t.bash("x", &BTreeMap::new()).await;
    assert!(out.chars().count() <= 20_000);
    assert!(
        out.contains("\n... [middle truncated: 30049 chars skipped] ...\n"),
        "{}",
        &out[19_000..]
    );

    // 0 turns truncation off.
    cfg.bash_output_max_chars = 0;
    let (t, _) = tools_with(cfg, vec![outcome(&huge, "", exit_code(0))]);
    assert_eq!(t.bash("x", &BTreeMap::new()).await, huge);
}

// ---------------------------------------------------------------- ls

#[tokio::test]
async fn ls_formats() {
    let (t, sb) = tools(vec![listing(
        &[
            ("/mnt/user-data/workspace/data", EntryKind::Dir),
            ("/mnt/user-data/workspace/data/a.csv", EntryKind::File),
            ("/mnt/user-data/workspace/link", EntryKind::Symlink),
            ("/mnt/user-data/workspace/main.py", EntryKind::File),
        ],
        false,
    )]);
    assert_snapshot!("ls_success", t.ls(WS).await);
    let Call::List(req) = &sb.calls()[0] else {
        panic!()
    };
    assert_eq!((req.path.as_str(), req.max_depth), (WS, 2));

    let (t, _) = tools(vec![listing(&[], false)]);
    assert_snapshot!("ls_empty", t.ls(WS).await);

    let (t, _) = tools(vec![Reply::List(Err(not_found("/mnt/user-data/nope")))]);
    assert_snapshot!("ls_not_found", t.ls("/mnt/user-data/nope").await);
    let (t, _) = tools(vec![Reply::List(Err(SandboxError::NotADirectory {
        path: "/mnt/user-data/workspace/f".into(),
    }))]);
    assert_snapshot!(
        "ls_not_a_directory",
        t.ls("/mnt/user-data/workspace/f").await
    );
    let (t, _) = tools(vec![Reply::List(Err(permission_denied(
        "list",
        "/mnt/user-data/workspace/locked",
    )))]);
    assert_snapshot!(
        "ls_permission_denied",
        t.ls("/mnt/user-data/workspace/locked").await
    );
    let (t, _) = tools(vec![Reply::List(Err(SandboxError::Unmapped {
        path: "/etc".into(),
    }))]);
    assert_snapshot!("ls_unmapped", t.ls("/etc").await);
}

#[tokio::test]
async fn ls_truncation() {
    let names: Vec<String> = (0..50)
        .map(|i| format!("/mnt/user-data/workspace/file-{i:02}.txt"))
        .collect();
    let entries: Vec<(&str, EntryKind)> = names
        .iter()
        .map(|n| (n.as_str(), EntryKind::File))
        .collect();
    let mut cfg = ToolsConfig::default();
    cfg.ls_output_max_chars = 300;
    let (t, _) = tools_with(cfg, vec![listing(&entries, false)]);
    let out = t.ls(WS).await;
    assert!(out.chars().count() <= 300);
    assert_snapshot!("ls_truncated", out);

    let (t, _) = tools(vec![listing(&entries[..3], true)]);
    assert_snapshot!("ls_entry_cap_hit", t.ls(WS).await);
}

// ---------------------------------------------------------------- glob

#[tokio::test]
async fn glob_formats() {
    let (t, _) = tools(vec![globbed(
        &[
            "/mnt/user-data/workspace/a.py",
            "/mnt/user-data/workspace/pkg/b.py",
        ],
        false,
    )]);
    assert_snapshot!("glob_success", t.glob("**/*.py", WS, false, None).await);
    let (t, _) = tools(vec![globbed(
        &[
            "/mnt/user-data/workspace/a.py",
            "/mnt/user-data/workspace/b.py",
        ],
        true,
    )]);
    assert_snapshot!("glob_truncated", t.glob("*.py", WS, false, Some(2)).await);
    let (t, _) = tools(vec![globbed(&[], false)]);
    assert_snapshot!("glob_none", t.glob("*.rs", WS, false, None).await);
    let (t, _) = tools(vec![Reply::Glob(Err(not_found(
        "/mnt/user-data/workspace/missing",
    )))]);
    assert_snapshot!(
        "glob_not_found",
        t.glob("*", "/mnt/user-data/workspace/missing", false, None)
            .await
    );
    let (t, _) = tools(vec![Reply::Glob(Err(SandboxError::NotADirectory {
        path: "/mnt/user-data/workspace/a.py".into(),
    }))]);
    assert_snapshot!(
        "glob_not_a_directory",
        t.glob("*", "/mnt/user-data/workspace/a.py", false, None)
            .await
    );
    let (t, _) = tools(vec![Reply::Glob(Err(permission_denied("glob", WS)))]);
    assert_snapshot!("glob_permission_denied", t.glob("*", WS, false, None).await);
    let bad = SandboxError::invalid_argument("pattern", "unclosed character class `[`");
    let (t, _) = tools(vec![Reply::Glob(Err(bad))]);
    assert_snapshot!("glob_bad_pattern", t.glob("[", WS, false, None).await);
}

#[tokio::test]
async fn glob_and_grep_result_caps() {
    async fn glob_max(cfg_max: usize, requested: Option<i64>) -> usize {
        let mut cfg = ToolsConfig::default();
        cfg.glob_max_results = cfg_max;
        let (t, sb) = tools_with(cfg, vec![globbed(&[], false)]);
        t.glob("*", WS, true, requested).await;
        let Call::Glob(req) = &sb.calls()[0] else {
            panic!()
        };
        assert!(req.include_dirs);
        req.max_results
    }
    assert_eq!(glob_max(200, None).await, 200);
    assert_eq!(glob_max(200, Some(0)).await, 200);
    assert_eq!(glob_max(200, Some(-1)).await, 200);
    assert_eq!(glob_max(200, Some(50)).await, 50);
    assert_eq!(glob_max(200, Some(5000)).await, 200);
    assert_eq!(glob_max(5000, Some(5000)).await, 1000);
    assert_eq!(glob_max(0, Some(700)).await, 200);
    assert_eq!(glob_max(800, Some(700)).await, 700);

    async fn grep_max(cfg_max: usize, requested: Option<i64>) -> usize {
        let mut cfg = ToolsConfig::default();
        cfg.grep_max_results = cfg_max;
        let (t, sb) = tools_with(cfg, vec![grepped(&[], false)]);
        t.grep("x", WS, None, false, false, requested).await;
        let Call::Grep(req) = &sb.calls()[0] else {
            panic!()
        };
        req.max_results
    }
    assert_eq!(grep_max(100, None).await, 100);
    assert_eq!(grep_max(100, Some(0)).await, 100);
    assert_eq!(grep_max(100, Some(7)).await, 7);
    assert_eq!(grep_max(100, Some(400)).await, 100);
    assert_eq!(grep_max(9999, Some(9999)).await, 500);
    assert_eq!(grep_max(300, Some(i64::MAX)).await, 300);
}

// ---------------------------------------------------------------- grep

#[tokio::test]
async fn grep_formats() {
    let (t, sb) = tools(vec![grepped(
        &[
            ("/mnt/user-data/workspace/app.py", 3, "def main():"),
            (
                "/mnt/user-data/workspace/lib/util.py",
                17,
                "    def helper(x):",
            ),
        ],
        false,
    )]);
    assert_snapshot!(
        "grep_success",
        t.grep("def \\w+", WS, Some("**/*.py"), false, true, None)
            .await
    );
    let Call::Grep(req) = &sb.calls()[0] else {
        panic!()
    };
    assert_eq!(req.glob.as_deref(), Some("**/*.py"));
    assert!(req.case_sensitive && !req.literal);

    let (t, _) = tools(vec![grepped(
        &[("/mnt/user-data/workspace/a.txt", 1, "TODO one")],
        true,
    )]);
    assert_snapshot!(
        "grep_truncated",
        t.grep("todo", WS, None, false, false, Some(1)).await
    );
    let (t, _) = tools(vec![grepped(&[], false)]);
    assert_snapshot!(
        "grep_none",
        t.grep("nothing", WS, None, false, false, None).await
    );

    // An invalid regex is refused before the sandbox is asked.
    let (t, sb) = tools(vec![]);
    assert_snapshot!(
        "grep_invalid_regex",
        t.grep("foo(", WS, None, false, false, None).await
    );
    assert!(sb.calls().is_empty());
    // ... unless it is literal text.
    let (t, sb) = tools(vec![grepped(
        &[("/mnt/user-data/workspace/a.c", 9, "foo(bar);")],
        false,
    )]);
    assert_snapshot!(
        "grep_literal",
        t.grep("foo(", WS, None, true, false, None).await
    );
    let Call::Grep(req) = &sb.calls()[0] else {
        panic!()
    };
    assert!(req.literal);
    // A backend that refuses the pattern gets the same message shape.
    let (t, sb) = tools(vec![Reply::Grep(Err(SandboxError::invalid_argument(
        "pattern",
        "the pattern is too large",
    )))]);
    assert_snapshot!(
        "grep_backend_invalid_regex",
        t.grep("a+b", WS, None, false, false, None).await
    );
    assert_eq!(sb.calls().len(), 1);

    let (t, _) = tools(vec![Reply::Grep(Err(not_found(
        "/mnt/user-data/outputs/x",
    )))]);
    assert_snapshot!(
        "grep_not_found",
        t.grep("x", "/mnt/user-data/outputs/x", None, false, false, None)
            .await
    );
    let (t, _) = tools(vec![Reply::Grep(Err(SandboxError::Escape {
        path: "/mnt/user-data/workspace/../../etc".into(),
    }))]);
    assert_snapshot!(
        "grep_escape",
        t.grep(
            "x",
            "/mnt/user-data/workspace/../../etc",
            None,
            false,
            false,
            None
        )
        .await
    );
}

// ---------------------------------------------------------------- hostile names

/// Names a tenant controls: a directory named `a` + newline whose path continues like
/// another virtual path, a terminal escape, a name that is not UTF-8 (lossy in `path`,
/// exact in `escaped_path`), a backslash; and a directory the walk could not read.
const FORGED: &str = "/mnt/user-data/workspace/a\n/mnt/user-data/outputs/x";
const ESC: &str = "/mnt/user-data/workspace/\x1b[2J\x1b[31mred.txt";
const LOSSY: &str = "/mnt/user-data/workspace/bad\u{fffd}.txt";
const EXACT: &str = "/mnt/user-data/workspace/bad\\xff.txt";
const BACKSLASH: &str = "/mnt/user-data/workspace/a\\nb.txt";

fn locked() -> paddock_core::sandbox::Unreadable {
    paddock_core::sandbox::Unreadable {
        path: vp("/mnt/user-data/workspace/locked\r"),
        escaped_path: None,
        reason: "permission denied".into(),
    }
}

/// No line starts like a virtual path that is not a real entry, and no control
/// character but the line breaks (and tabs) this output puts there itself.
fn assert_unforgeable(out: &str) {
    for line in out.lines() {
        assert!(
            !line.starts_with("/mnt/user-data/outputs"),
            "forged line {line:?} in:\n{out}"
        );
        assert!(
            !line
                .chars()
                .any(|c| c != '\t' && paddock_core::escape::is_control(c)),
            "control character in {line:?}"
        );
    }
}

#[tokio::test]
async fn hostile_names_are_escaped_and_kept() {
    let mut bad = entry(LOSSY, EntryKind::File);
    bad.escaped_path = Some(EXACT.to_owned());
    let listing = paddock_core::sandbox::Listing {
        entries: vec![
            entry(ESC, EntryKind::File),
            entry("/mnt/user-data/workspace/a\n", EntryKind::Dir),
            entry(FORGED, EntryKind::File),
            entry(BACKSLASH, EntryKind::File),
            bad,
        ],
        truncated: false,
        unreadable: vec![locked()],
    };
    let (t, _) = tools(vec![Reply::List(Ok(listing))]);
    let out = t.ls(WS).await;
    assert_unforgeable(&out);
    assert_snapshot!("ls_hostile_names", out);

    let glob = paddock_core::sandbox::GlobOutcome {
        paths: [ESC, FORGED, BACKSLASH, LOSSY]
            .iter()
            .map(|p| vp(p))
            .collect(),
        truncated: false,
        escaped_paths: BTreeMap::from([(3, EXACT.to_owned())]),
        unreadable: vec![locked()],
    };
    let (t, _) = tools(vec![Reply::Glob(Ok(glob))]);
    let out = t.glob("**/*", WS, false, None).await;
    assert_unforgeable(&out);
    assert_snapshot!("glob_hostile_names", out);

    let m = |path: &str, line: &str, escaped: Option<&str>| paddock_core::sandbox::GrepMatch {
        path: vp(path),
        line_number: 1,
        line: line.to_owned(),
        escaped_path: escaped.map(str::to_owned),
    };
    let grep = paddock_core::sandbox::GrepOutcome {
        matches: vec![
            m(ESC, "needle\r/mnt/user-data/outputs/y:1: forged", None),
            m(FORGED, "\tneedle \x1b]0;title\x07", None),
            m(LOSSY, "needle", Some(EXACT)),
        ],
        truncated: false,
        unreadable: vec![locked()],
    };
    let (t, _) = tools(vec![Reply::Grep(Ok(grep))]);
    let out = t.grep("needle", WS, None, false, false, None).await;
    assert_unforgeable(&out);
    assert_snapshot!("grep_hostile_names", out);

    // Nothing found, but something could not be read: that is said too.
    let (t, _) = tools(vec![Reply::List(Ok(paddock_core::sandbox::Listing {
        unreadable: vec![locked()],
        ..Default::default()
    }))]);
    assert_snapshot!("ls_empty_with_unreadable", t.ls(WS).await);
    let (t, _) = tools(vec![Reply::Glob(Ok(paddock_core::sandbox::GlobOutcome {
        unreadable: (0..12).map(|_| locked()).collect(),
        ..Default::default()
    }))]);
    assert_snapshot!(
        "glob_none_with_unreadable",
        t.glob("*", WS, false, None).await
    );
}

// ---------------------------------------------------------------- read_file

#[tokio::test]
async fn read_file_formats() {
    let f = "/mnt/user-data/workspace/notes.md";
    let (t, sb) = tools(vec![text(f, "# Notes\n\n- one\n- two\n")]);
    assert_snapshot!("read_file_success", t.read_file(f, None, None).await);
    let Call::ReadText(req) = &sb.calls()[0] else {
        panic!()
    };
    assert_eq!((req.start_line, req.end_line), (None, None));

    let (t, sb) = tools(vec![text(f, "- one\n- two")]);
    assert_snapshot!("read_file_range", t.read_file(f, Some(3), Some(4)).await);
    let Call::ReadText(req) = &sb.calls()[0] else {
        panic!()
    };
    assert_eq!((req.start_line, req.end_line), (Some(3), Some(4)));

    let (t, sb) = tools(vec![]);
    assert_snapshot!(
        "read_file_start_below_one",
        t.read_file(f, Some(0), None).await
    );
    assert_snapshot!(
        "read_file_end_below_one",
        t.read_file(f, None, Some(-2)).await
    );
    assert_snapshot!(
        "read_file_start_after_end",
        t.read_file(f, Some(5), Some(2)).await
    );
    assert!(sb.calls().is_empty());

    let (t, _) = tools(vec![text(f, "")]);
    assert_snapshot!("read_file_empty", t.read_file(f, None, None).await);
    let (t, _) = tools(vec![text(f, "")]);
    assert_snapshot!(
        "read_file_empty_range_from_one",
        t.read_file(f, Some(1), Some(10)).await
    );
    let (t, _) = tools(vec![text(f, "")]);
    assert_snapshot!(
        "read_file_start_past_end",
        t.read_file(f, Some(99), None).await
    );

    let bin = "/mnt/user-data/uploads/sales.xlsx";
    let (t, _) = tools(vec![Reply::ReadText(Err(SandboxError::NotText {
        path: bin.into(),
    }))]);
    assert_snapshot!("read_file_binary", t.read_file(bin, None, None).await);
    let (t, _) = tools(vec![Reply::ReadText(Err(not_found(
        "/mnt/user-data/workspace/gone.txt",
    )))]);
    assert_snapshot!(
        "read_file_not_found",
        t.read_file("/mnt/user-data/workspace/gone.txt", None, None)
            .await
    );
    let (t, _) = tools(vec![Reply::ReadText(Err(SandboxError::IsADirectory {
        path: WS.into(),
    }))]);
    assert_snapshot!("read_file_directory", t.read_file(WS, None, None).await);
    let (t, _) = tools(vec![Reply::ReadText(Err(permission_denied("read", f)))]);
    assert_snapshot!(
        "read_file_permission_denied",
        t.read_file(f, None, None).await
    );
    let big = SandboxError::TooLarge {
        path: f.into(),
        size: 200 << 20,
        limit: 100 << 20,
    };
    let (t, _) = tools(vec![Reply::ReadText(Err(big))]);
    assert_snapshot!("read_file_too_large", t.read_file(f, None, None).await);
}

#[tokio::test]
async fn read_file_truncation() {
    let f = "/mnt/user-data/workspace/big.log";
    let content: String = (0..40).map(|i| format!("log line {i}\n")).collect();
    let mut cfg = ToolsConfig::default();
    cfg.read_file_output_max_chars = 250;
    let (t, _) = tools_with(cfg, vec![text(f, &content)]);
    let out = t.read_file(f, None, None).await;
    assert!(out.chars().count() <= 250);
    assert_snapshot!("read_file_truncated", out);

    let huge = "ü".repeat(60_000);
    let (t, _) = tools(vec![text(f, &huge)]);
    let out = t.read_file(f, None, None).await;
    assert_eq!(out.chars().count(), 50_000);
    assert!(out.ends_with(
        "\n... [truncated: showing first 49894 of 60000 chars. Use start_line/end_line to read a specific range] ..."
    ));
}

// ---------------------------------------------------------------- write_file

#[tokio::test]
async fn write_file_formats() {
    let f = "/mnt/user-data/outputs/report.md";
    let (t, sb) = tools(vec![written(f, 5)]);
    assert_snapshot!("write_file_ok", t.write_file(f, "hello", false).await);
    let Call::WriteText(req) = &sb.calls()[0] else {
        panic!()
    };
    assert_eq!(
        (req.path.as_str(), req.content.as_str(), req.append),
        (f, "hello", false)
    );

    // 80 KiB of UTF-8 bytes: 40,961 two-byte chars are 81,922 bytes.
    let (t, sb) = tools(vec![]);
    let over = "é".repeat(40_961);
    assert_snapshot!("write_file_too_large", t.write_file(f, &over, false).await);
    assert!(sb.calls().is_empty());
    // Exactly at the cap is fine, and appends are never capped.
    let (t, _) = tools(vec![written(f, 81_920), written(f, 81_922)]);
    assert_eq!(t.write_file(f, &"a".repeat(81_920), false).await, "OK");
    assert_eq!(t.write_file(f, &over, true).await, "OK");

    let (t, _) = tools(vec![Reply::Write(Err(permission_denied("write", f)))]);
    assert_snapshot!(
        "write_file_permission_denied",
        t.write_file(f, "x", false).await
    );
    let (t, _) = tools(vec![Reply::Write(Err(SandboxError::IsADirectory {
        path: "/mnt/user-data/outputs".into(),
    }))]);
    assert_snapshot!(
        "write_file_directory",
        t.write_file("/mnt/user-data/outputs", "x", false).await
    );
    let (t, _) = tools(vec![Reply::Write(Err(SandboxError::ReadOnly {
        path: "/mnt/skills/public/x.md".into(),
    }))]);
    assert_snapshot!(
        "write_file_read_only",
        t.write_file("/mnt/skills/public/x.md", "x", false).await
    );
    let io = SandboxError::Io {
        op: "write".into(),
        path: f.into(),
        message: "No space left on device (os error 28)".into(),
    };
    let (t, _) = tools(vec![Reply::Write(Err(io))]);
    assert_snapshot!("write_file_io_error", t.write_file(f, "x", true).await);

    // Errors are bounded to 2,000 chars, keeping the header.
    let long_path = format!("/mnt/user-data/workspace/{}", "d/".repeat(1500));
    let (t, _) = tools(vec![Reply::Write(Err(SandboxError::InvalidArgument {
        field: "path".into(),
        message: "x".repeat(5000),
    }))]);
    let out = t.write_file(f, "x", false).await;
    assert_eq!(out.chars().count(), 2000);
    assert!(out.starts_with(
        "Error: Failed to write file '/mnt/user-data/outputs/report.md': invalid path: xxx"
    ));
    assert!(out.contains("\n... [write_file error truncated: "));
    let (t, _) = tools(vec![Reply::Write(Err(permission_denied(
        "write", &long_path,
    )))]);
    let out = t.write_file(&long_path, "x", false).await;
    assert!(out.chars().count() <= 2000);
    assert!(
        out.starts_with("Error: Permission denied writing to file: /mnt/user-data/workspace/d/d/")
    );
    let (t, _) = tools(vec![Reply::Write(Err(SandboxError::ReadOnly {
        path: long_path.clone(),
    }))]);
    let out = t.write_file(&long_path, "x", false).await;
    assert!(out.chars().count() <= 2000);
    assert!(out.starts_with("Error: Failed to write file '/mnt/user-data/workspace/d/d/"));
}

#[tokio::test]
async fn write_file_limit_sources() {
    let f = "/mnt/user-data/workspace/a";
    let sb = ScriptedSandbox::with("sb-env", vec![written(f, 0)]);
    let env = |k: &str| (k == "PADDOCK_WRITE_FILE_MAX_BYTES").then(|| "10".to_owned());
    let t = Tools::with_env(sb, ToolsConfig::default(), env, Arc::new(FileLocks::new()));
    assert_eq!(t.write_file_limit(), Some(10));
    assert_snapshot!(
        "write_file_env_limit",
        t.write_file(f, "more than ten bytes", false).await
    );
    assert_eq!(t.write_file(f, "ten bytes!", false).await, "OK");

    let sb = ScriptedSandbox::with("sb-env", vec![written(f, 0)]);
    let env = |k: &str| (k == "DEERFLOW_WRITE_FILE_MAX_BYTES").then(|| "0".to_owned());
    let t = Tools::with_env(sb, ToolsConfig::default(), env, Arc::new(FileLocks::new()));
    assert_eq!(t.write_file_limit(), None);
    assert_eq!(t.write_file(f, &"a".repeat(200_000), false).await, "OK");

    let mut cfg = ToolsConfig::default();
    cfg.set_write_file_max_bytes(None);
    let (t, _) = tools_with(cfg, vec![written(f, 0)]);
    assert_eq!(t.write_file(f, &"a".repeat(200_000), false).await, "OK");
}

// ---------------------------------------------------------------- str_replace

#[tokio::test]
async fn str_replace_formats() {
    let f = "/mnt/user-data/workspace/app.py";
    let (t, sb) = tools(vec![replaced(1)]);
    assert_snapshot!(
        "str_replace_ok",
        t.str_replace(f, "old", "new", false).await
    );
    let Call::StrReplace(req) = &sb.calls()[0] else {
        panic!()
    };
    assert_eq!(
        (
            req.old.as_str(),
            req.new.as_str(),
            req.replace_all,
            req.expect_unique
        ),
        ("old", "new", false, false)
    );

    let (t, sb) = tools(vec![replaced(3)]);
    assert_eq!(t.str_replace(f, "a", "b", true).await, "OK");
    let Call::StrReplace(req) = &sb.calls()[0] else {
        panic!()
    };
    assert!(req.replace_all);

    let (t, _) = tools(vec![Reply::Replace(Err(SandboxError::NoMatch {
        path: f.into(),
    }))]);
    assert_snapshot!(
        "str_replace_no_match",
        t.str_replace(f, "absent", "x", false).await
    );
    let (t, _) = tools(vec![Reply::Replace(Err(not_found(f)))]);
    assert_snapshot!(
        "str_replace_file_not_found",
        t.str_replace(f, "a", "b", false).await
    );
    let (t, _) = tools(vec![Reply::Replace(Err(permission_denied("write", f)))]);
    assert_snapshot!(
        "str_replace_permission_denied",
        t.str_replace(f, "a", "b", false).await
    );
    let (t, _) = tools(vec![Reply::Replace(Err(SandboxError::NotText {
        path: f.into(),
    }))]);
    assert_snapshot!(
        "str_replace_not_text",
        t.str_replace(f, "a", "b", false).await
    );
    let (t, _) = tools(vec![Reply::Replace(Err(SandboxError::ReadOnly {
        path: "/mnt/skills/public/s/SKILL.md".into(),
    }))]);
    assert_snapshot!(
        "str_replace_read_only",
        t.str_replace("/mnt/skills/public/s/SKILL.md", "a", "b", false)
            .await
    );

    // An empty old_str edits nothing, but a wrong path is still reported.
    let (t, sb) = tools(vec![Reply::Stat(Ok(entry(f, EntryKind::File)))]);
    assert_snapshot!(
        "str_replace_empty_old",
        t.str_replace(f, "", "anything", false).await
    );
    assert_eq!(sb.calls(), vec![Call::Stat(f.to_owned())]);
    let (t, _) = tools(vec![Reply::Stat(Err(not_found(f)))]);
    assert_snapshot!(
        "str_replace_empty_old_missing_file",
        t.str_replace(f, "", "x", false).await
    );
    let (t, _) = tools(vec![Reply::Stat(Ok(entry(WS, EntryKind::Dir)))]);
    assert_snapshot!(
        "str_replace_empty_old_directory",
        t.str_replace(WS, "", "x", false).await
    );
}

#[tokio::test]
async fn edits_of_one_file_are_serialised() {
    let f = "/mnt/user-data/workspace/shared.txt";
    let mut sb = ScriptedSandbox::new("sb-lock");
    sb.replace_yields = 20;
    for _ in 0..4 {
        sb.push(replaced(1));
    }
    let sb = Arc::new(sb);
    let locks = Arc::new(FileLocks::new());
    // Two tool instances over one sandbox share the lock map, as HTTP handlers would.
    let t1 = Tools::with_env(sb.clone(), ToolsConfig::default(), |_| None, locks.clone());
    let t2 = Tools::with_env(sb.clone(), ToolsConfig::default(), |_| None, locks);
    let other = "/mnt/user-data/workspace/other.txt";
    let (a, b, c, d) = tokio::join!(
        t1.str_replace(f, "a", "b", false),
        t2.str_replace("/mnt/user-data/workspace/./shared.txt", "c", "d", false),
        t1.str_replace(other, "e", "f", false),
        t2.str_replace(other, "g", "h", false),
    );
    assert_eq!([a, b, c, d], ["OK", "OK", "OK", "OK"].map(String::from));
    // For each file, every start is followed by its own end before the next start.
    let mut open: Vec<&str> = Vec::new();
    let norm = |p: &str| p.replace("/./", "/");
    for call in sb.calls() {
        match call {
            Call::StrReplace(req) => {
                let p = norm(&req.path);
                assert!(
                    !open.iter().any(|o| *o == p),
                    "two edits of {p} overlapped: {:?}",
                    sb.calls()
                );
                open.push(if p == f { f } else { other });
            }
            Call::StrReplaceDone(p) => {
                let p = norm(&p);
                open.retain(|o| *o != p);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Different files did run concurrently (the lock is per file, not global).
    let calls = sb.calls();
    let first_done = calls
        .iter()
        .position(|c| matches!(c, Call::StrReplaceDone(_)))
        .expect("must succeed");
    assert!(first_done >= 2, "{calls:?}");
}
