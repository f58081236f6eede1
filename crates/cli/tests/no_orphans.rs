//! No jail process outlives the Paddock process that built it, whatever the moment that
//! process dies: `paddock serve` is SIGKILLed at many points of jail construction and use
//! (while a create builds the sandbox's jail, while its first command is handed over, while
//! commands and background processes run), and afterwards no process of that run may be
//! left — found host-side by two markers: the run's own sandbox uid (every jail process
//! runs as it once its ids are taken) and the run's own data directory in a command line
//! (the jail's child is a fork of `paddock` until it runs the sandbox's init). A later
//! `paddock serve` then sweeps the dead one's cgroups and says so.
//!
//! Needs root (a sandbox uid of the test's choosing); CI runs as root.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "orphan-key";

/// The tests start servers that sweep each other's dead subtrees: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn root() -> bool {
    if paddock_sys_euid() == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI must run the orphan tests as root"
    );
    eprintln!("SKIPPED: needs root to run sandboxes as a uid of the test's choosing");
    false
}

fn paddock_sys_euid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

/// Processes that carry one of the run's markers (not zombies).
fn leftovers(uid: u32, marker: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        if status.lines().any(|l| l.starts_with("State:\tZ")) {
            continue;
        }
        let real = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next().map(str::to_owned));
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        if real.as_deref() == Some(uid.to_string().as_str()) || cmdline.contains(marker) {
            out.push(format!(
                "{pid} uid={} {}",
                real.unwrap_or_default(),
                cmdline.trim()
            ));
        }
    }
    out
}

/// A minimal HTTP/1.1 request on a fresh connection; the response body (or an error).
fn http(addr: &str, method: &str, path: &str, body: &str, key: bool) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = if key {
        format!("x-api-key: {KEY}\r\n")
    } else {
        String::new()
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    Ok(resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

struct Run {
    child: std::process::Child,
    addr: String,
}

fn serve(data: &Path, uid: u32) -> Run {
    let cfg = data.with_extension("yaml");
    std::fs::write(
        &cfg,
        format!("sandbox:\n  uid_range: null\n  sandbox_uid: {uid}\n  sandbox_gid: {uid}\nlog:\n  level: warn\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            KEY,
            "--config",
        ])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(data)
        .env_remove("PADDOCK_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start paddock serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .trim_start_matches("paddock serve listening on http://")
        .to_owned();
    Run { child, addr }
}

fn sandbox_path(url: &str) -> String {
    // http://127.0.0.1:PORT/s/TOKEN -> /s/TOKEN
    url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap()
}

#[test]
fn a_killed_server_leaves_no_jail_process_behind() {
    if !root() {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let nonce = format!("orphan-run-{}", std::process::id());
    let base_uid = 953_000 + (std::process::id() % 500) * 4;
    let mut checked = 0;
    for i in 0..18u32 {
        let uid = base_uid + (i % 4);
        let marker = format!("{nonce}-{i}");
        let data: PathBuf = tmp.path().join(&marker);
        std::fs::create_dir_all(&data).unwrap();
        let mut run = serve(&data, uid);
        let delay = Duration::from_micros(u64::from((i * 2_700) % 30_000));
        let addr = run.addr.clone();
        let id = format!("o{i}");
        let phase = i % 3;
        // The requests run on a thread of their own; the kill comes from here.
        let worker = std::thread::spawn(move || {
            let body = format!(r#"{{"sandbox_id": "{id}", "thread_id": "{id}"}}"#);
            let Ok(resp) = http(&addr, "POST", "/api/sandboxes", &body, true) else {
                return;
            };
            let Some(url) = resp
                .split("\"sandbox_url\":\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_owned)
            else {
                return;
            };
            let path = sandbox_path(&url);
            if phase >= 1 {
                let _ = http(&addr, "GET", &format!("{path}/v1/sandbox"), "", false);
            }
            let cmd = r#"{"command": "sleep 600 >/dev/null 2>&1 & setsid sleep 601 >/dev/null 2>&1 & sleep 602"}"#;
            let _ = http(&addr, "POST", &format!("{path}/v1/shell/exec"), cmd, false);
        });
        // Phase 0 kills during the create (the jail is being built), 1 while the first
        // command is handed over, 2 once commands and background processes run.
        let wait = match phase {
            0 => delay,
            1 => Duration::from_millis(8) + delay,
            _ => Duration::from_millis(150) + delay,
        };
        std::thread::sleep(wait);
        run.child.kill().unwrap();
        run.child.wait().unwrap();
        let _ = worker.join();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut left = leftovers(uid, &marker);
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            left = leftovers(uid, &marker);
        }
        assert!(
            left.is_empty(),
            "after SIGKILL of paddock serve (phase {phase}, {wait:?}) these were left: {left:#?}"
        );
        checked += 1;
    }
    assert_eq!(checked, 18);
}

#[test]
fn a_new_server_sweeps_what_a_dead_one_left_and_says_so() {
    if !root() {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("sweep");
    std::fs::create_dir_all(&data).unwrap();
    let uid = 953_900 + std::process::id() % 90;
    let mut run = serve(&data, uid);
    let resp = http(
        &run.addr,
        "POST",
        "/api/sandboxes",
        r#"{"sandbox_id": "s1", "thread_id": "s1"}"#,
        true,
    )
    .unwrap();
    assert!(resp.contains("sandbox_url"), "{resp}");
    let dead_pid = run.child.id();
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    // The next server starts, finds the dead one's cgroup subtree and removes it.
    let cfg = data.with_extension("yaml");
    let mut next = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            KEY,
            "--config",
        ])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(tmp.path().join("sweep2"))
        .env("PADDOCK_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(next.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    next.kill().unwrap();
    next.wait().unwrap();
    let mut err = String::new();
    next.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = dead_pid;
    assert!(leftovers(uid, "sweep").is_empty());
    if err.contains("falling back to rlimits") {
        // No cgroup was usable (on cgroup v2 a Paddock sharing its cgroup with this test
        // cannot delegate one): there was no subtree to leave or to sweep.
        eprintln!("NOTE: no cgroups here, so nothing to sweep: {err}");
    } else {
        assert!(
            err.contains("removed cgroup subtrees of Paddock processes that are gone"),
            "the new server did not sweep the dead one's cgroups: {err}"
        );
    }
}
