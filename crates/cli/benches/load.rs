//! Load test of `paddock serve` (local backend), printed as a table:
//! N concurrent clients each create a sandbox, exec `echo hi` through the returned URL
//! (the AIO route DeerFlow uses), and delete it; for N = 10, 100, 500. Also: a repeated
//! create of a live id, and the server's idle and peak RSS.
//!
//! Run: `cargo bench -p paddock-cli --bench load` (as root, on the machine under test).
//! Set `PADDOCK_LOAD_NS=10,100` to choose the client counts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is the report

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let ns: Vec<usize> = std::env::var("PADDOCK_LOAD_NS")
        .unwrap_or_else(|_| "10,100,500".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("paddock.yaml");
    std::fs::write(
        &cfg,
        "server:\n  max_sandboxes: 1000\n  max_sandboxes_per_user: 0\n  max_concurrent_execs_per_user: 0\n  idle_timeout_secs: 0\nlog:\n  level: warn\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--api-key",
            "bench-key",
            "--data-dir",
        ])
        .arg(tmp.path().join("data"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start paddock serve");
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = Arc::new(
        line.trim()
            .trim_start_matches("paddock serve listening on ")
            .to_owned(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_rss = status_kib(pid, "VmRSS:");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap();

    // Repeated create of a live id.
    let body = json!({"sandbox_id": "warm", "thread_id": "warm"}).to_string();
    let mut repeat = Vec::new();
    for i in 0..1001 {
        let t = Instant::now();
        let r = client
            .post(format!("{base}/api/sandboxes"))
            .header("x-api-key", "bench-key")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        r.bytes().await.unwrap();
        if i > 0 {
            repeat.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }

    println!(
        "paddock serve load test (local backend, {} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("idle server RSS: {:.1} MiB", idle_rss as f64 / 1024.0);
    println!(
        "repeated create of a live id: p50 {:.3} ms, p99 {:.3} ms (1000 calls)",
        pct(&mut repeat, 0.5),
        pct(&mut repeat, 0.99)
    );
    println!();
    println!(
        "| clients | create p50 ms | create p99 ms | exec p50 ms | exec p99 ms | delete p50 ms | errors | wall s | peak RSS MiB |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (round, n) in ns.iter().enumerate() {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..*n {
            let client = client.clone();
            let base = base.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("r{round}-c{i}");
                let mut errors = 0;
                let t = Instant::now();
                let r = client
                    .post(format!("{base}/api/sandboxes"))
                    .header("x-api-key", "bench-key")
                    .header("content-type", "application/json")
                    .body(
                        json!({"sandbox_id": id, "thread_id": id, "user_id": "bench"}).to_string(),
                    )
                    .send()
                    .await;
                let create = t.elapsed().as_secs_f64() * 1e3;
                let url = match r {
                    Ok(r) if r.status().is_success() => {
                        let v: serde_json::Value =
                            serde_json::from_slice(&r.bytes().await.unwrap_or_default())
                                .unwrap_or_default();
                        v["sandbox_url"].as_str().unwrap_or_default().to_owned()
                    }
                    _ => return (create, f64::NAN, f64::NAN, 1),
                };
                let t = Instant::now();
                let r = client
                    .post(format!("{url}/v1/shell/exec"))
                    .header("content-type", "application/json")
                    .body(json!({"command": "echo hi"}).to_string())
                    .send()
                    .await;
                let exec = t.elapsed().as_secs_f64() * 1e3;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let v: serde_json::Value =
                            serde_json::from_slice(&r.bytes().await.unwrap_or_default())
                                .unwrap_or_default();
                        if !v["data"]["output"]
                            .as_str()
                            .unwrap_or_default()
                            .contains("hi")
                        {
                            errors += 1;
                        }
                    }
                    _ => errors += 1,
                }
                let t = Instant::now();
                let r = client
                    .delete(format!("{base}/api/sandboxes/{id}"))
                    .header("x-api-key", "bench-key")
                    .send()
                    .await;
                let delete = t.elapsed().as_secs_f64() * 1e3;
                if !matches!(r, Ok(ref r) if r.status().is_success()) {
                    errors += 1;
                }
                (create, exec, delete, errors)
            }));
        }
        let (mut c, mut e, mut d, mut errs) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for t in tasks {
            let (ci, ei, di, er) = t.await.unwrap();
            c.push(ci);
            if ei.is_finite() {
                e.push(ei);
            }
            if di.is_finite() {
                d.push(di);
            }
            errs += er;
        }
        let wall = started.elapsed().as_secs_f64();
        let peak = status_kib(pid, "VmHWM:") as f64 / 1024.0;
        println!(
            "| {n} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {errs} | {wall:.2} | {peak:.1} |",
            pct(&mut c, 0.5),
            pct(&mut c, 0.99),
            pct(&mut e, 0.5),
            pct(&mut e, 0.99),
            pct(&mut d, 0.5)
        );
    }
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
}
