//! `paddock exec` as users run it: output on the right streams, the command's exit code,
//! 128+signal, 124 on timeout, 2 for bad ids — and the thread's files persist.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

use std::process::{Command, Output};

fn exec(data: &std::path::Path, thread: &str, extra: &[&str], cmd: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["exec", "--data-dir"])
        .arg(data)
        .args(["--user", "alice", "--thread", thread])
        .args(extra)
        .args(["--", cmd])
        .env_remove("PADDOCK_CONFIG")
        .output()
        .expect("run paddock exec")
}

#[test]
fn exit_codes_streams_and_persistence() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let o = exec(
        &data,
        "t1",
        &[],
        "echo out; echo err >&2; echo kept > notes.txt; exit 3",
    );
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert!(String::from_utf8_lossy(&o.stderr).contains("err\n"));
    let o = exec(
        &data,
        "t1",
        &[],
        "cat /mnt/user-data/workspace/notes.txt; pwd",
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "kept\n/mnt/user-data/workspace\n"
    );
    assert_eq!(o.status.code(), Some(0));
    // Another thread does not see it.
    let o = exec(&data, "t2", &[], "ls /mnt/user-data/workspace | wc -l");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0");
    // Killed by a signal: 128 + signal.
    let o = exec(&data, "t1", &[], "kill -9 $$");
    assert_eq!(o.status.code(), Some(137));
    // Timeout: 124, and the whole tree is gone.
    let started = std::time::Instant::now();
    let o = exec(
        &data,
        "t1",
        &["--timeout", "1"],
        "setsid sleep 612345 & sleep 612346",
    );
    assert_eq!(o.status.code(), Some(124));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let survivors: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("sleep 61234"))
        .collect();
    assert!(
        survivors.is_empty(),
        "processes outlived the timeout: {survivors:?}"
    );
    // Bad input: a usage error naming the field, exit 2, nothing created.
    let o = exec(&data, "../etc", &[], "true");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("thread_id"),
        "{o:?}"
    );
    let o = exec(&data, "t1", &["--timeout", "0"], "true");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("timeout"),
        "{o:?}"
    );
}
