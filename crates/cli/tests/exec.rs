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

/// Runs `paddock exec` as `exec` does, with stdout captured; returns its pid too.
fn exec_with_pid(data: &std::path::Path, thread: &str, cmd: &str) -> (u32, Output) {
    let child = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["exec", "--data-dir"])
        .arg(data)
        .args(["--user", "alice", "--thread", thread, "--"])
        .arg(cmd)
        .env_remove("PADDOCK_CONFIG")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run paddock exec");
    let pid = child.id();
    (
        pid,
        child.wait_with_output().expect("wait for paddock exec"),
    )
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
    assert!(gone_soon("sleep 61234"), "processes outlived the timeout");
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

/// Waits (at most 10 s) until no process's command line contains `needle`; false if one
/// still does then. A `paddock exec` that knows its jail's init will be reaped returns once
/// the jail is killed, not once the kernel has finished tearing it down.
fn gone_soon(needle: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let alive = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .any(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(needle)
            });
        if !alive {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The kernel probe record of a data directory.
fn probe_record(data: &std::path::Path) -> String {
    std::fs::read_to_string(data.join("state/kernel-probe")).unwrap_or_default()
}

/// `paddock-{pid}[-n]` cgroup directories of process `pid` in any v1 hierarchy or v2.
fn cgroup_dirs_of(pid: u32) -> Vec<std::path::PathBuf> {
    let prefix = format!("paddock-{pid}");
    let mut out = Vec::new();
    let mut stack = vec![std::path::PathBuf::from("/sys/fs/cgroup")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name == prefix || name.starts_with(&format!("{prefix}-")) {
                out.push(e.path());
            } else if !name.starts_with("paddock-") && stack.len() < 10_000 {
                stack.push(e.path());
            }
        }
    }
    out
}

#[test]
fn a_one_shot_exec_leaves_no_cgroup_or_process_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (pid, o) = exec_with_pid(&data, "tidy", "sleep 612399 & echo started");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "started\n");
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(cgroup_dirs_of(pid), Vec::<std::path::PathBuf>::new());
    assert!(
        gone_soon("sleep 612399"),
        "the background process outlived paddock exec"
    );
    // The kernel probe passed once and is remembered for the next run, with an orphan left
    // to learn whether orphans are reaped here.
    assert!(
        probe_record(&data).contains("\norphan_left="),
        "{}",
        probe_record(&data)
    );
}

#[test]
fn once_orphans_are_known_to_be_reaped_exec_returns_without_waiting_for_the_teardown() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // The first run leaves an orphan; a later one sees it reaped (this host's pid 1 reaps
    // on a timer of a second or two) and remembers that.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let o = exec(&data, "early", &[], "true");
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        let rec = probe_record(&data);
        if rec.contains("\norphans_reaped=yes\n") {
            break;
        }
        assert!(
            !rec.contains("orphans_reaped=no"),
            "this host's pid 1 does not reap: {rec}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the orphan was never reaped: {rec}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // Now exec returns as soon as the command's status is known: output and exit code as
    // ever, the background process killed, and nothing named after the process left.
    let (pid, o) = exec_with_pid(&data, "early", "sleep 612398 & echo started; exit 4");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "started\n");
    assert_eq!(o.status.code(), Some(4));
    assert!(
        gone_soon("sleep 612398"),
        "the background process outlived paddock exec"
    );
    assert_eq!(cgroup_dirs_of(pid), Vec::<std::path::PathBuf>::new());
    // The files the command wrote are there when exec returns.
    let o = exec(&data, "early", &[], "echo kept > f; cat f");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "kept\n");
    assert_eq!(
        std::fs::read_to_string(data.join("users/alice/threads/early/user-data/workspace/f"))
            .unwrap(),
        "kept\n"
    );
}

#[test]
fn a_killed_exec_leaves_no_cgroup_to_sweep() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["exec", "--data-dir"])
        .arg(&data)
        .args(["--user", "alice", "--thread", "killed", "--"])
        .arg("echo up; sleep 612403")
        .env_remove("PADDOCK_CONFIG")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "up\n");
    // "up" comes before bash has replaced itself with sleep: look until it has.
    let find_sleeper = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .find(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x00612403\x00")
            })
            .map(|e| e.file_name().to_string_lossy().parse::<u32>().unwrap())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let sleeper = loop {
        if let Some(p) = find_sleeper() {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "the command runs");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    // On cgroup v1 the command runs in a reusable slot, held by the paddock process's lock;
    // nothing is named after the process (on v2 the exec cgroup is named after it).
    let slots: Vec<(String, String)> = v1_cgroups(sleeper)
        .into_iter()
        .filter(|(_, path)| {
            path.rsplit('/')
                .next()
                .is_some_and(|l| l.starts_with("paddock-slot-"))
        })
        .collect();
    if !v1_cgroups(pid).is_empty() {
        assert!(!slots.is_empty(), "{:?}", v1_cgroups(sleeper));
        assert!(cgroup_dirs_of(pid).is_empty());
    }
    // SIGKILL: no chance to clean up. The jail dies with it (parent-death signal), and the
    // kernel releases the slot's lock with the process: nothing is left to sweep.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        gone_soon("sleep 612403"),
        "the command outlived a killed paddock"
    );
    for (ctrl, path) in &slots {
        let mount = ctrl
            .split(',')
            .find(|c| ["pids", "memory", "cpu"].contains(c))
            .unwrap();
        // The sleeper's cmdline is gone as soon as its memory is; it leaves the cgroup a
        // moment later in its exit.
        let file = format!("/sys/fs/cgroup/{mount}{path}/cgroup.procs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let procs = std::fs::read_to_string(&file).unwrap();
            if !procs.lines().any(|l| l == sleeper.to_string()) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{mount}{path}: {procs}"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    let o = exec(&data, "other", &[], "true");
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(cgroup_dirs_of(pid), Vec::<std::path::PathBuf>::new());
}

/// `(controllers, path)` of each v1 hierarchy line of `/proc/{pid}/cgroup`.
fn v1_cgroups(pid: u32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, c, path) = (p.next()?, p.next()?, p.next()?);
            (!c.is_empty()).then(|| (c.to_owned(), path.to_owned()))
        })
        .collect()
}

/// `/proc/{pid}/cmdline` of the command of the cgroup test.
const SLEEPER_CMDLINE: &[u8] = b"sleep\x00612401\x00";

#[test]
fn a_one_shot_exec_runs_in_a_limited_cgroup_right_beside_paddocks_own() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Half a CPU: a cpu limit of at least every online CPU gets no cpu cgroup.
    let config = tmp.path().join("paddock.yaml");
    std::fs::write(&config, "sandbox:\n  limits:\n    cpus: 0.5\n").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["exec", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--user",
            "alice",
            "--thread",
            "limits",
            "--timeout",
            "20",
            "--",
        ])
        .arg("sleep 612401")
        .env_remove("PADDOCK_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let paddock = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let sleeper = loop {
        let found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            (cmd == SLEEPER_CMDLINE).then(|| e.file_name().to_string_lossy().parse::<u32>().ok())?
        });
        if let Some(pid) = found {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the command never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let ours = v1_cgroups(paddock);
    let theirs = v1_cgroups(sleeper);
    let mut checked = 0;
    for (ctrl, path) in &theirs {
        let Some(file) = (match ctrl.as_str() {
            "pids" => Some("pids.max"),
            c if c.split(',').any(|x| x == "memory") => Some("memory.limit_in_bytes"),
            c if c.split(',').any(|x| x == "cpu") => Some("cpu.cfs_quota_us"),
            _ => None,
        }) else {
            continue;
        };
        let own = &ours.iter().find(|(c, _)| c == ctrl).unwrap().1;
        let (parent, leaf) = path.rsplit_once('/').unwrap();
        // One level below Paddock's own cgroup, named after the paddock process.
        assert_eq!(
            parent.trim_end_matches('/'),
            own.trim_end_matches('/'),
            "{ctrl}"
        );
        // A reusable slot (one-shot processes on v1 share a pool of them).
        assert!(leaf.starts_with("paddock-slot-"), "{ctrl}: {leaf}");
        let mount = ctrl
            .split(',')
            .find(|c| ["pids", "memory", "cpu"].contains(c))
            .unwrap();
        let value = std::fs::read_to_string(format!("/sys/fs/cgroup/{mount}{path}/{file}"))
            .unwrap_or_else(|e| panic!("{mount}{path}/{file}: {e}"));
        let expected = match file {
            "pids.max" => "512",
            "memory.limit_in_bytes" => "2147483648",
            _ => "50000",
        };
        assert_eq!(value.trim(), expected, "{file}");
        checked += 1;
    }
    assert_eq!(checked, 3, "memory, pids and cpu cgroups: {theirs:?}");
    // The jail's init (the command's parent) is in the memory and cpu cgroups but not in
    // the pids one: only the command's processes count there.
    let init = std::fs::read_to_string(format!("/proc/{sleeper}/stat"))
        .unwrap()
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u32>()
        .unwrap();
    for (ctrl, path) in v1_cgroups(init) {
        let own = &ours.iter().find(|(c, _)| *c == ctrl).unwrap().1;
        if ctrl.split(',').any(|c| c == "pids") {
            assert_eq!(&path, own, "init is counted in pids");
        } else if ctrl.split(',').any(|c| c == "memory" || c == "cpu") {
            let theirs = &theirs.iter().find(|(c, _)| *c == ctrl).unwrap().1;
            assert_eq!(&path, theirs, "{ctrl}");
        }
    }
    // SIGTERM to paddock exec: it kills the command, removes its cgroup and says so.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(paddock.to_string())
        .status();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("interrupted by SIGTERM"),
        "{o:?}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{sleeper}")).exists()
            || std::fs::read(format!("/proc/{sleeper}/cmdline")).unwrap_or_default()
                != SLEEPER_CMDLINE,
        "the command outlived paddock exec"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cgroup_dirs_of(paddock).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "cgroups left: {:?}",
            cgroup_dirs_of(paddock)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
