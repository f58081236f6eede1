//! `paddock serve` as users run it: the real binary on a loopback port, driven over HTTP.
//! DeerFlow's provisioner client sequence, exec through the returned sandbox URL, state
//! and data surviving `kill -9`, and SIGTERM killing sandbox processes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Server {
    child: Child,
    base: String,
    stdout_lines: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free port below the kernel's ephemeral range, for a server that must come back on the
/// same port after a restart: a port from the ephemeral range can be taken in between by
/// the local end of any outgoing connection (other tests run in parallel), and the restart
/// then fails with "Address already in use".
fn free_port_for_restart() -> u16 {
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let span = u32::from(low.saturating_sub(10_000).max(1));
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
    (0..1000)
        .map(|i| 10_000 + ((seed.wrapping_add(i * 7919)) % span) as u16)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below the ephemeral range")
}

fn start(data: &Path, port: u16, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .env_remove("PADDOCK_API_KEY")
        .env_remove("PROVISIONER_API_KEY")
        .env_remove("PADDOCK_CONFIG")
        .env("PADDOCK_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start paddock serve");
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("paddock serve listening on http://"),
        "{line:?}"
    );
    let base = line
        .trim()
        .trim_start_matches("paddock serve listening on ")
        .to_owned();
    lines.push(line.trim().to_owned());
    // Drain the rest in the background so the pipe never fills.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in reader.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    lines.extend(rx.try_iter());
    Server {
        child,
        base,
        stdout_lines: lines,
    }
}

fn key(data: &Path) -> String {
    std::fs::read_to_string(data.join("api-key"))
        .unwrap()
        .trim()
        .to_owned()
}

async fn api(method: reqwest::Method, url: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client.request(method, url).header("X-API-Key", key);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn aio_exec(sandbox_url: &str, command: &str) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{sandbox_url}/v1/shell/exec"))
        .header("content-type", "application/json")
        .body(json!({"command": command}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    serde_json::from_str(&resp.text().await.unwrap()).unwrap()
}

fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("data");
    (tmp, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deerflow_sequence_then_kill_9_and_recover() {
    let (_tmp, data) = data_dir();
    let port = free_port_for_restart();
    let mut srv = start(&data, port, &[]);
    assert!(
        srv.stdout_lines
            .iter()
            .any(|l| l.contains("api key generated and stored in")),
        "{:?}",
        srv.stdout_lines
    );
    let key_file = data.join("api-key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let k = key(&data);
    let base = srv.base.clone();

    // Exactly what DeerFlow's RemoteSandboxBackend sends.
    let (s, v) = api(reqwest::Method::GET, &format!("{base}/health"), "", None).await;
    assert_eq!((s, v), (200, json!({"status": "ok"})));
    let (s, _) = api(
        reqwest::Method::GET,
        &format!("{base}/api/sandboxes"),
        "wrong",
        None,
    )
    .await;
    assert_eq!(s, 401);
    let create = json!({"sandbox_id": "0123456789abcdef", "thread_id": "thread-42", "user_id": "user-7",
        "include_legacy_skills": false, "provision_lark_cli_runtime": false, "provision_lark_cli_broker": false});
    let (s, v) = api(
        reqwest::Method::POST,
        &format!("{base}/api/sandboxes"),
        &k,
        Some(create.clone()),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let url = v["sandbox_url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("{base}/s/")), "{url}");
    let (s, v) = api(
        reqwest::Method::GET,
        &format!("{base}/api/sandboxes/0123456789abcdef"),
        &k,
        None,
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("Running")));
    let (s, v) = api(
        reqwest::Method::GET,
        &format!("{base}/api/sandboxes"),
        &k,
        None,
    )
    .await;
    assert_eq!((s, v["count"].as_u64()), (200, Some(1)));
    // Readiness probe DeerFlow uses, then exec through the URL with the AIO route.
    let ready = reqwest::get(format!("{url}/v1/sandbox")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let out = aio_exec(
        &url,
        "echo persisted > /mnt/user-data/workspace/note.txt && cat note.txt && id -u",
    )
    .await;
    let text = out["data"]["output"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(text.contains("persisted"), "{out}");
    // The URL without the secret learns nothing.
    let bad = reqwest::get(format!("{base}/s/not-the-secret/v1/sandbox"))
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 404);
    // Repeated create returns the same sandbox.
    let (_, v) = api(
        reqwest::Method::POST,
        &format!("{base}/api/sandboxes"),
        &k,
        Some(create.clone()),
    )
    .await;
    assert_eq!(v["sandbox_url"].as_str(), Some(url.as_str()));
    let on_disk = data.join("users/user-7/threads/thread-42/user-data/workspace/note.txt");
    assert_eq!(std::fs::read_to_string(&on_disk).unwrap(), "persisted\n");

    // kill -9, restart on the same port and data dir: same sandbox, same URL, same data.
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    drop(srv);
    let srv = start(&data, port, &[]);
    assert!(
        !srv.stdout_lines.iter().any(|l| l.contains("generated")),
        "key must be reused"
    );
    let (s, v) = api(
        reqwest::Method::GET,
        &format!("{base}/api/sandboxes"),
        &k,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["count"], 1, "{v}");
    assert_eq!(
        v["sandboxes"][0]["sandbox_url"].as_str(),
        Some(url.as_str())
    );
    let out = aio_exec(&url, "cat /mnt/user-data/workspace/note.txt").await;
    assert!(
        out["data"]["output"]
            .as_str()
            .unwrap_or_default()
            .contains("persisted"),
        "{out}"
    );

    // Delete: the sandbox goes, the data stays, a second delete is fine.
    let del = format!("{base}/api/sandboxes/0123456789abcdef");
    let (s, v) = api(reqwest::Method::DELETE, &del, &k, None).await;
    assert_eq!(
        (s, v),
        (200, json!({"ok": true, "sandbox_id": "0123456789abcdef"}))
    );
    let (s, _) = api(reqwest::Method::DELETE, &del, &k, None).await;
    assert_eq!(s, 200);
    let (s, _) = api(reqwest::Method::GET, &del, &k, None).await;
    assert_eq!(s, 404);
    assert!(on_disk.exists(), "user data must outlive the sandbox");
    let gone = reqwest::get(format!("{url}/v1/sandbox")).await.unwrap();
    assert_eq!(gone.status().as_u16(), 404);
}

fn processes_with(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && String::from_utf8_lossy(&cmd)
                .replace('\0', " ")
                .contains(marker)
        {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_kills_sandbox_processes_and_exits_cleanly() {
    let (_tmp, data) = data_dir();
    let mut srv = start(&data, free_port(), &["--api-key", "k-sigterm"]);
    let base = srv.base.clone();
    let (s, v) = api(
        reqwest::Method::POST,
        &format!("{base}/api/sandboxes"),
        "k-sigterm",
        Some(json!({"sandbox_id": "term"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let url = v["sandbox_url"].as_str().unwrap().to_owned();
    let started = Instant::now();
    aio_exec(&url, "sleep 987651 >/dev/null 2>&1 &").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a backgrounded command returns promptly"
    );
    assert!(
        !processes_with("sleep 987651").is_empty(),
        "background process runs"
    );
    let pid = srv.child.id();
    assert_eq!(unsafe_free_kill(pid, "TERM"), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = srv.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "server did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_with("sleep 987651").is_empty() {
        assert!(
            Instant::now() < deadline,
            "sandbox processes survived SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a signal with the `kill` command (keeps this crate free of unsafe code).
fn unsafe_free_kill(pid: u32, sig: &str) -> i32 {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sandboxes_are_reaped_unless_busy() {
    let (tmp, data) = data_dir();
    let cfg = tmp.path().join("paddock.yaml");
    std::fs::write(
        &cfg,
        "server:\n  idle_timeout_secs: 1\n  reap_interval_secs: 1\n",
    )
    .unwrap();
    let srv = start(
        &data,
        free_port(),
        &["--api-key", "k-reap", "--config", cfg.to_str().unwrap()],
    );
    let base = srv.base.clone();
    let mut urls = Vec::new();
    for id in ["idle", "busy"] {
        let (s, v) = api(
            reqwest::Method::POST,
            &format!("{base}/api/sandboxes"),
            "k-reap",
            Some(json!({"sandbox_id": id})),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        urls.push(v["sandbox_url"].as_str().unwrap().to_owned());
    }
    aio_exec(&urls[1], "sleep 987652 >/dev/null 2>&1 &").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (s, _) = api(
            reqwest::Method::GET,
            &format!("{base}/api/sandboxes/idle"),
            "k-reap",
            None,
        )
        .await;
        if s == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "idle sandbox was not reaped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (s, _) = api(
        reqwest::Method::GET,
        &format!("{base}/api/sandboxes/busy"),
        "k-reap",
        None,
    )
    .await;
    assert_eq!(s, 200, "a sandbox running a process is not idle");
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("paddock_sandboxes_reaped_total 1"),
        "{metrics}"
    );
    assert!(
        data.join("users/default/threads/idle/user-data/workspace")
            .is_dir(),
        "data stays after a reap"
    );
    drop(srv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_mounts_are_validated() {
    let (tmp, data) = data_dir();
    let allowed = tmp.path().join("allowed");
    std::fs::create_dir_all(allowed.join("shared")).unwrap();
    std::fs::write(allowed.join("shared/readme.txt"), "shared data\n").unwrap();
    let cfg = tmp.path().join("paddock.yaml");
    std::fs::write(
        &cfg,
        format!("mounts:\n  allowed_host_roots: [{}]\n", allowed.display()),
    )
    .unwrap();
    let srv = start(
        &data,
        free_port(),
        &["--api-key", "k-m", "--config", cfg.to_str().unwrap()],
    );
    let base = srv.base.clone();
    let shared = allowed.join("shared").to_string_lossy().into_owned();
    let cases = [
        (
            json!([{"host_path": "/etc", "container_path": "/mnt/etc"}]),
            "extra_mounts[0]",
            "allowed_host_roots",
        ),
        (
            json!([{"host_path": shared, "container_path": "/mnt/user-data/x"}]),
            "extra_mounts[0]",
            "reserved",
        ),
        (
            json!([{"host_path": shared, "container_path": "/usr/lib/x"}]),
            "extra_mounts[0]",
            "system directory",
        ),
        (
            json!([{"host_path": shared, "container_path": "/mnt/a"}, {"host_path": shared, "container_path": "/mnt/a"}]),
            "extra_mounts[1]",
            "another mount",
        ),
        (
            json!([{"host_path": format!("{shared}/missing"), "container_path": "/mnt/a"}]),
            "extra_mounts[0]",
            "does not exist",
        ),
    ];
    for (mounts, field, words) in cases {
        let (s, v) = api(
            reqwest::Method::POST,
            &format!("{base}/api/sandboxes"),
            "k-m",
            Some(json!({"sandbox_id": "m", "extra_mounts": mounts})),
        )
        .await;
        assert_eq!(s, 422, "{v}");
        assert_eq!(v["field"], field, "{v}");
        assert!(v["detail"].as_str().unwrap().contains(words), "{v}");
        assert!(
            !v["detail"]
                .as_str()
                .unwrap()
                .contains(&*tmp.path().to_string_lossy()),
            "no host path in errors: {v}"
        );
    }
    // A valid read-only mount is visible inside and read-only.
    let (s, v) = api(reqwest::Method::POST, &format!("{base}/api/sandboxes"), "k-m",
        Some(json!({"sandbox_id": "m", "extra_mounts": [{"host_path": shared, "container_path": "/mnt/shared", "read_only": true}]}))).await;
    assert_eq!(s, 200, "{v}");
    let url = v["sandbox_url"].as_str().unwrap().to_owned();
    let out = aio_exec(
        &url,
        "cat /mnt/shared/readme.txt; touch /mnt/shared/x 2>&1 || echo refused",
    )
    .await;
    let text = out["data"]["output"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        text.contains("shared data") && text.contains("refused"),
        "{out}"
    );
    assert!(!allowed.join("shared/x").exists());
    let (s, _) = api(reqwest::Method::GET, &format!("{base}/health"), "", None).await;
    assert_eq!(s, 200);
    drop(srv);
}
