//! Point 7: slow clients cannot hold the server. Uploads that trickle in a byte at a time
//! hold no blocking-pool thread (the server's thread count stays flat) and one that stalls
//! is ended after `server.connection_idle_secs`; thousands of idle connections, and some
//! that never finish their headers, are closed by the header timeout or make room for new
//! connections at `server.max_connections`. Meanwhile another tenant's create, exec and
//! `/health` answer within seconds.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Serve, can_run};

/// `host:port` and the path prefix of a sandbox URL (`http://127.0.0.1:P/s/TOKEN`).
fn split_url(url: &str) -> (String, String) {
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap();
    (host.to_owned(), format!("/{path}"))
}

/// A client with no pooled connections: every request opens a fresh one, as a new
/// tenant's first request would.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// How long `f` took, with its result.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (Duration, T) {
    let t = Instant::now();
    let v = f.await;
    (t.elapsed(), v)
}

/// Another tenant's work while a flood goes on: `/health`, a create, an exec and a read,
/// each from a fresh connection. Returns the slowest latency.
async fn neighbour_answers(srv: &Serve, thread: &str) -> Duration {
    let c = fresh_client();
    let (health, r) = timed(c.get(format!("{}/health", srv.base)).send()).await;
    assert_eq!(r.unwrap().status().as_u16(), 200);
    let (create, r) = timed(
        c.post(format!("{}/api/sandboxes", srv.base))
            .header("X-API-Key", &srv.key)
            .header("content-type", "application/json")
            .body(json!({"sandbox_id": format!("bob-{thread}"), "thread_id": thread, "user_id": "bob"}).to_string())
            .send(),
    )
    .await;
    let r = r.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let url = v["sandbox_url"].as_str().unwrap().to_owned();
    let (exec, r) = timed(
        c.post(format!("{url}/v1/shell/exec"))
            .header("content-type", "application/json")
            .body(json!({"command": "echo neighbour"}).to_string())
            .send(),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&r.unwrap().text().await.unwrap()).unwrap();
    assert_eq!(
        v["data"]["output"].as_str().unwrap().trim(),
        "neighbour",
        "{v}"
    );
    let (read, r) = timed(
        c.post(format!("{url}/v1/file/list"))
            .header("content-type", "application/json")
            .body(json!({"path": "/mnt/user-data"}).to_string())
            .send(),
    )
    .await;
    assert_eq!(r.unwrap().status().as_u16(), 200);
    eprintln!(
        "neighbour under flood: health {} ms, create {} ms, exec {} ms, list {} ms",
        health.as_millis(),
        create.as_millis(),
        exec.as_millis(),
        read.as_millis()
    );
    health.max(create).max(exec).max(read)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_uploads_hold_no_threads_and_stalled_ones_are_ended() {
    if !can_run() {
        return;
    }
    // No heavy-request limits here: this case shows that uploads themselves hold no
    // thread, however many there are.
    let srv = Serve::start(
        "log:\n  level: warn\n\
server:\n  header_read_timeout_secs: 2\n  connection_idle_secs: 3\n\
agent:\n  max_concurrent_heavy_per_sandbox: 0\n  max_concurrent_heavy: 0\n",
    );
    let sb = srv.sandbox("mallory", "t1").await;
    let (host, prefix) = split_url(&sb.url);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let threads_before = srv.threads();

    const UPLOADS: usize = 150;
    const STALLERS: usize = 10;
    let mut conns = Vec::new();
    for i in 0..UPLOADS {
        let mut s = TcpStream::connect(&host).await.unwrap();
        let head = format!(
            "PUT {prefix}/v1/fs/write_bytes?path=/mnt/user-data/workspace/up{i}.bin HTTP/1.1\r\n\
             host: {host}\r\ncontent-length: 1000\r\n\r\nx"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        conns.push(s);
    }
    // Trickle: one byte per connection every 700 ms (under the 3 s idle limit), except the
    // stallers, which send nothing more. Opening an upload takes a moment of blocking file
    // IO, so accepting 150 at once may start threads; those idle out after 10 s, so after
    // 13 s of trickling only threads that uploads *hold* would remain.
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut peak_threads = 0;
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(13) {
        for s in conns.iter_mut().skip(STALLERS) {
            let _ = s.write_all(b"x").await;
        }
        peak_threads = peak_threads.max(srv.threads());
        if round == 2 {
            worst = worst.max(neighbour_answers(&srv, "t1").await);
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let threads_after = srv.threads();
    eprintln!(
        "server threads: {threads_before} before, at most {peak_threads} while {UPLOADS} uploads \
         started, {threads_after} after 13 s of trickling"
    );
    assert!(
        threads_after <= threads_before + 8,
        "{UPLOADS} trickling uploads hold threads: {threads_before} before, {threads_after} while they trickle"
    );
    assert!(
        worst < Duration::from_secs(4),
        "a neighbour waited {worst:?}"
    );

    // The stallers were answered and closed after the 3 s idle limit (13 s have passed).
    for s in conns.iter_mut().take(STALLERS) {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("a stalled upload is answered, not left hanging")
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            text.starts_with("HTTP/1.1 422") && text.contains("upload interrupted"),
            "{text}"
        );
    }
    // The tricklers are still going; the server holds them cheaply. Drop them all and no
    // temp file is left behind in the tenant's directory.
    drop(conns);
    let ws = crate::harness::thread_dir(&srv.data, "mallory", "t1").join("user-data/workspace");
    let leftovers = crate::harness::wait_for(Duration::from_secs(5), || {
        let n = std::fs::read_dir(&ws)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().contains(".part"))
                    .count()
            })
            .unwrap_or(0);
        (n == 0).then_some(())
    });
    assert!(
        leftovers.is_some(),
        "upload temp files were left in {}",
        ws.display()
    );
}

/// This process's soft limit on open files.
fn nofile_soft() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_flood_does_not_keep_others_out() {
    if !can_run() {
        return;
    }
    let srv = Serve::start(
        "log:\n  level: warn\n\
server:\n  header_read_timeout_secs: 2\n  connection_idle_secs: 3\n  max_connections: 400\n",
    );
    // A server with an ordinary open-file limit, so that idle connections could exhaust it.
    let st = std::process::Command::new("prlimit")
        .args(["--pid", &srv.pid().to_string(), "--nofile=1024:1024"])
        .status()
        .expect("prlimit");
    assert!(st.success());
    let (host, _) = split_url(&format!("{}/", srv.base));
    let _warm = srv.sandbox("alice", "t1").await;
    let fds_before = srv.fds();

    // As many idle connections as this process may hold, up to 3,000, plus some that send
    // half a request head and then nothing.
    let flood = (nofile_soft().saturating_sub(300) as usize).min(3000);
    assert!(
        flood >= 1500,
        "the test needs room for 1,500 connections: {flood}"
    );
    let mut idle = Vec::with_capacity(flood);
    for _ in 0..flood {
        match TcpStream::connect(&host).await {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect {}: {e}", idle.len()),
        }
    }
    let mut slowloris = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(&host).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        slowloris.push(s);
    }
    // The flood goes on while the neighbour works: a task keeps opening idle connections.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let more = {
        let (host, stop) = (host.clone(), stop.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && held.len() < 200 {
                if let Ok(s) = TcpStream::connect(&host).await {
                    held.push(s);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            held
        })
    };
    let worst = neighbour_answers(&srv, "t1").await;
    let fds_during = srv.fds();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let more = more.await.unwrap();
    eprintln!(
        "{flood} idle + 20 half-sent + {} more connections: server fds {fds_before} before, {fds_during} during; slowest neighbour answer {} ms",
        more.len(),
        worst.as_millis()
    );
    assert!(
        worst < Duration::from_secs(4),
        "a neighbour waited {worst:?}"
    );
    assert!(
        fds_during <= fds_before + 400 + 32,
        "{fds_during} server fds: the connection cap did not hold"
    );
    // A connection that never finishes its head is closed by the header timeout.
    let mut buf = [0u8; 512];
    let t = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), slowloris[0].read(&mut buf))
        .await
        .expect("a half-sent request is closed, not kept")
        .unwrap_or(0);
    assert!(
        n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
        "{:?} after {:?}",
        String::from_utf8_lossy(&buf[..n]),
        t.elapsed()
    );
    drop(idle);
    drop(slowloris);
    drop(more);
    // And the server is as before afterwards.
    let healthy = fresh_client()
        .get(format!("{}/health", srv.base))
        .send()
        .await
        .unwrap();
    assert_eq!(healthy.status().as_u16(), 200);
}
