//! Commands through `paddock serve` as DeerFlow runs them, printed as tables:
//!
//! 1. **First command after a create**: `POST /api/sandboxes`, then (as DeerFlow's provider
//!    does) `GET {sandbox_url}/v1/sandbox` until ready, then the first
//!    `POST /v1/shell/exec` of `true` — against a warm exec on an older sandbox, interleaved
//!    in one run. Also the first exec sent right after the create, without the readiness
//!    wait.
//! 2. **The AIO shell route's session bookkeeping**: `POST /v1/shell/exec` against the
//!    native `POST /v1/exec`, both of `true` on one warm sandbox, interleaved.
//! 3. **Throughput**: commands per second with 16 sandboxes, each with one client running
//!    `true` in a loop, through `paddock serve` (native and AIO routes), against 16
//!    concurrent loops of `bwrap --unshare-all ... bash -c true` (the binds of
//!    `crates/runtime/benches/exec.rs`) and of plain `bash -c true`, each for the same
//!    wall time, one after the other in one run.
//!
//! Run (as root, CI's kernel features): `cargo bench -p paddock-cli --bench serve_exec`.
//! `PADDOCK_BENCH_SECS` sets the throughput window (10 s), `PADDOCK_BENCH_CREATES` the number
//! of creates (40).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is the report

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const KEY: &str = "bench-key";

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct Serve {
    child: std::process::Child,
    base: String,
    _tmp: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY-free: a signal to our own child by pid, then reap it.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn serve() -> Serve {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("paddock.yaml");
    std::fs::write(
        &cfg,
        "server:\n  max_sandboxes: 1000\n  max_sandboxes_per_user: 0\n  idle_timeout_secs: 0\nlog:\n  level: warn\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0", "--api-key", KEY, "--data-dir"])
        .arg(tmp.path().join("data"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start paddock serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .trim_start_matches("paddock serve listening on ")
        .to_owned();
    Serve {
        child,
        base,
        _tmp: tmp,
    }
}

async fn create(c: &reqwest::Client, base: &str, id: &str) -> String {
    let r = c
        .post(format!("{base}/api/sandboxes"))
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body(json!({"sandbox_id": id, "thread_id": id, "user_id": "bench"}).to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create: {}", r.status());
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    v["sandbox_url"].as_str().unwrap().to_owned()
}

async fn ready(c: &reqwest::Client, url: &str) {
    loop {
        if c.get(format!("{url}/v1/sandbox"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One `true` over the AIO shell route; milliseconds.
async fn aio(c: &reqwest::Client, url: &str) -> f64 {
    let t = Instant::now();
    let r = c
        .post(format!("{url}/v1/shell/exec"))
        .header("content-type", "application/json")
        .body(json!({"command": "true"}).to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "aio exec: {}", r.status());
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["data"]["exit_code"], 0, "{v}");
    t.elapsed().as_secs_f64() * 1e3
}

/// One `true` over the native route; milliseconds.
async fn native(c: &reqwest::Client, url: &str) -> f64 {
    let t = Instant::now();
    let r = c
        .post(format!("{url}/v1/exec"))
        .header("content-type", "application/json")
        .body(json!({"command": "true"}).to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "native exec: {}", r.status());
    let body = r.text().await.unwrap();
    assert!(body.contains("\"exit_code\":0"), "{body}");
    t.elapsed().as_secs_f64() * 1e3
}

fn bwrap(ws: &Path) -> Command {
    let mut c = Command::new("bwrap");
    c.args(["--unshare-all", "--die-with-parent", "--new-session"]);
    c.args(["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]);
    for l in ["bin", "sbin", "lib", "lib64"] {
        if let Ok(t) = std::fs::read_link(Path::new("/").join(l)) {
            c.arg("--symlink").arg(t).arg(format!("/{l}"));
        }
    }
    c.args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
    c.arg("--bind").arg(ws).arg("/mnt/user-data/workspace");
    c.args(["--chdir", "/mnt/user-data/workspace", "bash", "-c", "true"]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// Runs `n` loops of `one` for `secs` seconds; commands per second.
fn process_loops(n: usize, secs: f64, one: impl Fn() -> Command + Send + Sync + 'static) -> f64 {
    let one = Arc::new(one);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for _ in 0..n {
        let (one, stop, done) = (one.clone(), stop.clone(), done.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let st = one().status().unwrap();
                assert!(st.success());
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let count = done.load(Ordering::Relaxed);
    let el = t.elapsed().as_secs_f64();
    for t in threads {
        t.join().unwrap();
    }
    count as f64 / el
}

async fn serve_loops(c: &reqwest::Client, urls: &[String], secs: f64, aio_route: bool) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for url in urls {
        let (c, url, stop, done) = (c.clone(), url.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if aio_route {
                    aio(&c, &url).await;
                } else {
                    native(&c, &url).await;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let count = done.load(Ordering::Relaxed);
    let el = t.elapsed().as_secs_f64();
    for t in tasks {
        t.await.unwrap();
    }
    count as f64 / el
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs: f64 = std::env::var("PADDOCK_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let creates: usize = std::env::var("PADDOCK_BENCH_CREATES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let s = serve();
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let base = s.base.clone();
    let warm_url = create(&c, &base, "warm").await;
    ready(&c, &warm_url).await;
    for _ in 0..50 {
        aio(&c, &warm_url).await;
        native(&c, &warm_url).await;
    }

    // 1. First command after a create, interleaved with warm execs.
    let (mut create_ms, mut ready_ms, mut first_ms, mut warm_ms, mut eager_ms) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..creates {
        let t = Instant::now();
        let url = create(&c, &base, &format!("first-{i}")).await;
        create_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        ready(&c, &url).await;
        ready_ms.push(t.elapsed().as_secs_f64() * 1e3);
        first_ms.push(aio(&c, &url).await);
        warm_ms.push(aio(&c, &warm_url).await);
        // The same without waiting for readiness: the exec waits for the jail itself.
        let url = create(&c, &base, &format!("eager-{i}")).await;
        eager_ms.push(aio(&c, &url).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "paddock serve, exec of `true` ({} cores)\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| {creates} creates | p50 ms | p99 ms |");
    println!("| --- | ---: | ---: |");
    for (name, v) in [
        ("create (POST /api/sandboxes)", &create_ms),
        ("readiness wait (GET /v1/sandbox until 200)", &ready_ms),
        ("first /v1/shell/exec after readiness", &first_ms),
        ("warm /v1/shell/exec (older sandbox, same rounds)", &warm_ms),
        ("first /v1/shell/exec right after the create", &eager_ms),
    ] {
        println!("| {name} | {:.2} | {:.2} |", pct(v, 0.5), pct(v, 0.99));
    }
    println!(
        "\nfirst after readiness - warm: p50 {:+.2} ms, p99 {:+.2} ms\n",
        pct(&first_ms, 0.5) - pct(&warm_ms, 0.5),
        pct(&first_ms, 0.99) - pct(&warm_ms, 0.99)
    );

    // 2. AIO shell route against the native route, interleaved.
    let (mut a, mut n) = (Vec::new(), Vec::new());
    for _ in 0..300 {
        a.push(aio(&c, &warm_url).await);
        n.push(native(&c, &warm_url).await);
    }
    println!("| 300 warm execs each | p50 ms | p99 ms |");
    println!("| --- | ---: | ---: |");
    println!(
        "| POST /v1/exec (native) | {:.2} | {:.2} |",
        pct(&n, 0.5),
        pct(&n, 0.99)
    );
    println!(
        "| POST /v1/shell/exec (AIO, session bookkeeping) | {:.2} | {:.2} |",
        pct(&a, 0.5),
        pct(&a, 0.99)
    );
    println!(
        "\nAIO - native: p50 {:+.2} ms\n",
        pct(&a, 0.5) - pct(&n, 0.5)
    );

    // 3. Throughput with 16 concurrent sandboxes.
    let mut urls = Vec::new();
    for i in 0..16 {
        let u = create(&c, &base, &format!("loop-{i}")).await;
        ready(&c, &u).await;
        aio(&c, &u).await;
        urls.push(u);
    }
    let native_rate = serve_loops(&c, &urls, secs, false).await;
    let aio_rate = serve_loops(&c, &urls, secs, true).await;
    let ws = tempfile::tempdir().unwrap();
    let ws_path = ws.path().to_owned();
    let have_bwrap = Command::new("bwrap")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let bwrap_rate = if have_bwrap {
        Some(
            tokio::task::spawn_blocking(move || process_loops(16, secs, move || bwrap(&ws_path)))
                .await
                .unwrap(),
        )
    } else {
        None
    };
    let bash_rate = tokio::task::spawn_blocking(move || {
        process_loops(16, secs, || {
            let mut c = Command::new("bash");
            c.args(["-c", "true"]).stdout(Stdio::null());
            c
        })
    })
    .await
    .unwrap();
    println!("| 16 concurrent loops of `true`, {secs:.0} s each | commands/s | / bwrap |");
    println!("| --- | ---: | ---: |");
    let ratio = |r: f64| bwrap_rate.map_or("n/a".to_owned(), |b| format!("{:.2}", r / b));
    println!(
        "| paddock serve, POST /v1/exec (16 sandboxes) | {native_rate:.0} | {} |",
        ratio(native_rate)
    );
    println!(
        "| paddock serve, POST /v1/shell/exec (16 sandboxes) | {aio_rate:.0} | {} |",
        ratio(aio_rate)
    );
    match bwrap_rate {
        Some(b) => println!("| bwrap --unshare-all ... bash -c true | {b:.0} | 1.00 |"),
        None => println!("| bwrap (not installed: apt-get install -y bubblewrap) | n/a | n/a |"),
    }
    println!(
        "| bash -c true (no sandbox) | {bash_rate:.0} | {} |",
        ratio(bash_rate)
    );
    drop(s);
}
