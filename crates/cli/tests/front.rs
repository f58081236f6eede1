//! The two binaries: `paddock` runs `exec` itself and hands everything else to
//! `paddock-full` beside it, keeping the pid, the arguments and the `paddock` name.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

use std::process::Command;

const FRONT: &str = env!("CARGO_BIN_EXE_paddock");

#[test]
fn other_subcommands_run_in_paddock_full_under_the_paddock_name() {
    let o = Command::new(FRONT).arg("--version").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("paddock {}", env!("CARGO_PKG_VERSION"))
    );
    let o = Command::new(FRONT).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for sub in [
        "serve",
        "exec",
        "doctor",
        "agent",
        "migrate-layout",
        "mcp",
        "kube",
        "config",
    ] {
        assert!(help.contains(sub), "{sub} missing from\n{help}");
    }
    assert!(help.contains("Usage: paddock "), "{help}");
    // A usage error from paddock-full still names paddock and exits 2.
    let o = Command::new(FRONT).arg("no-such-command").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Usage: paddock "), "{err}");
    assert!(!err.contains("paddock-full"), "{err}");
    // The exit code of the subcommand comes back unchanged.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, "sandbox:\n  limits:\n    memroy: 1\n").unwrap();
    let o = Command::new(FRONT)
        .args(["config", "check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("memroy"));
}

#[test]
fn the_hand_off_keeps_the_process() {
    // `paddock-full` replaces the front in the same process: the pid a supervisor started
    // is the server's, and argv[0] stays. `mcp` waits on stdin, long enough to look.
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(FRONT)
        .args(["mcp", "--data-dir"])
        .arg(tmp.path().join("data"))
        .args(["--user", "u", "--thread", "t"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let full = std::path::Path::new(FRONT).with_file_name("paddock-full");
    let exe_is_full = (0..200).any(|_| {
        let now = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if now.as_deref() == Some(full.as_path()) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        false
    });
    let argv0 = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(exe_is_full, "pid {pid} never became {}", full.display());
    let first = argv0.split(|b| *b == 0).next().unwrap();
    assert_eq!(first, FRONT.as_bytes());
}

#[test]
fn without_paddock_full_beside_it_the_front_says_so_and_exec_still_works() {
    let tmp = tempfile::tempdir().unwrap();
    let alone = tmp.path().join("paddock");
    std::fs::copy(FRONT, &alone).unwrap();
    let o = Command::new(&alone).args(["doctor"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`paddock doctor` runs in paddock-full"),
        "{err}"
    );
    assert!(
        err.contains(&tmp.path().join("paddock-full").display().to_string()),
        "{err}"
    );
    assert!(err.contains("hint: install both binaries"), "{err}");
    let o = Command::new(&alone)
        .args(["exec", "--data-dir"])
        .arg(tmp.path().join("data"))
        .args(["--thread", "t", "--", "echo front; exit 7"])
        .env_remove("PADDOCK_CONFIG")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "front\n", "{o:?}");
    assert_eq!(o.status.code(), Some(7));
    // Its own usage errors need no paddock-full either.
    let o = Command::new(&alone)
        .args(["exec", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--bogus"));
}
