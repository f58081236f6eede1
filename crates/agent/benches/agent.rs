//! Agent API benchmark (`cargo bench -p paddock-agent --bench agent`): prints a table.
//!
//! - exec round trip of `echo hi` over the agent (RemoteSandbox → HTTP → LocalSandbox),
//!   p50/p99 over 1,000 calls, against the same sandbox's exec called in process;
//! - write-then-read throughput of 1 MiB and 100 MiB files through the streamed upload
//!   and download routes, against a plain `cp` of the same file;
//! - the server's peak RSS (VmHWM) across the 100 MiB transfer.
//!
//! The server is a separate `paddock agent` process (the release `paddock-full`: build it
//! first with `cargo build --release -p paddock-cli`) on a loopback port the OS picks, so
//! its memory is measured alone. Kernel isolation must be available (it is on CI).

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::StreamExt;
use paddock_client::{AgentClient, RemoteSandbox};
use paddock_core::sandbox::{ByteStream, ExecRequest, ReadBytes, WriteBytes};
use paddock_core::{Sandbox, SandboxError, ThreadId, UserId};
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

const CALLS: usize = 1_000;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn exec_latencies(sb: &dyn Sandbox) -> anyhow::Result<(Duration, Duration)> {
    for _ in 0..20 {
        sb.exec(ExecRequest::new("echo hi")).await?;
    }
    let mut lat = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        let o = sb.exec(ExecRequest::new("echo hi")).await?;
        lat.push(t.elapsed());
        anyhow::ensure!(o.stdout == "hi\n", "unexpected output {:?}", o.stdout);
    }
    lat.sort();
    Ok((pct(&lat, 0.5), pct(&lat, 0.99)))
}

fn file_stream(path: &Path) -> anyhow::Result<ByteStream> {
    let f = std::fs::File::open(path)?;
    let file = tokio::fs::File::from_std(f);
    Ok(Box::pin(futures_util::stream::unfold(
        file,
        |mut file| async move {
            let mut buf = vec![0u8; 1 << 20];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), file))
                }
                Err(e) => Some((
                    Err(SandboxError::Internal {
                        message: e.to_string(),
                    }),
                    file,
                )),
            }
        },
    )))
}

/// Upload then download `src` through the agent; returns (seconds, bytes read back).
async fn transfer(sb: &dyn Sandbox, src: &Path, name: &str) -> anyhow::Result<(f64, u64)> {
    let path = format!("/mnt/user-data/workspace/{name}");
    let t = Instant::now();
    sb.write_bytes(
        WriteBytes {
            path: path.clone(),
            ..WriteBytes::default()
        },
        file_stream(src)?,
    )
    .await?;
    let mut fs = sb
        .read_bytes(ReadBytes {
            path,
            offset: 0,
            len: None,
        })
        .await?;
    let mut n = 0u64;
    while let Some(c) = fs.stream.next().await {
        n += c?.len() as u64;
    }
    Ok((t.elapsed().as_secs_f64(), n))
}

fn cp_time(src: &Path, dir: &Path) -> anyhow::Result<f64> {
    let dst = dir.join("cp-copy");
    let t = Instant::now();
    let st = std::process::Command::new("cp")
        .arg(src)
        .arg(&dst)
        .status()?;
    anyhow::ensure!(st.success(), "cp failed");
    // Read it back too, as the agent path does.
    let back = std::fs::read(&dst)?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        back.len() as u64 == std::fs::metadata(src)?.len(),
        "cp size"
    );
    Ok(secs)
}

fn vm_hwm_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse()?)
}

fn make_file(path: &Path, size: usize) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut left = size;
    let mut block = vec![0u8; 1 << 16];
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len());
        f.write_all(&block[..n])?;
        left -= n;
    }
    f.flush()?;
    Ok(())
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / secs
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    let token = format!("bench{}", paddock_agent::shell::random_token());
    std::fs::write(work.path().join("token"), &token)?;
    let paddock =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/paddock-full");
    anyhow::ensure!(
        paddock.exists(),
        "{} is not built: run `cargo build --release -p paddock-cli` first",
        paddock.display()
    );
    let mut child = tokio::process::Command::new(&paddock)
        .args([
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--user",
            "bench",
            "--thread",
            "bench",
            "--token-file",
        ])
        .arg(work.path().join("token"))
        .arg("--data-dir")
        .arg(&data)
        .env_remove("PADDOCK_CONFIG")
        .env("PADDOCK_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start paddock agent")?;
    let pid = child.id().context("agent pid")?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    let line = lines.next_line().await?.context("agent exited")?;
    let addr = line
        .strip_prefix("listening on ")
        .context("first line")?
        .to_owned();
    let remote = RemoteSandbox::connect(AgentClient::new(&format!("{addr}/s/{token}"))?).await?;

    // The same thread's sandbox in process, for the direct baseline.
    let provider = paddock_runtime::LocalProvider::new(
        work.path().join("direct"),
        Default::default(),
        Vec::new(),
    )?;
    let direct: Arc<dyn Sandbox> = provider
        .acquire(&UserId::new("bench")?, &ThreadId::new("bench")?)
        .await?;

    let (rp50, rp99) = exec_latencies(&remote).await?;
    let (dp50, dp99) = exec_latencies(direct.as_ref()).await?;

    let mut rows = Vec::new();
    let rss_before = vm_hwm_kib(pid)?;
    let mut rss_after = rss_before;
    for (label, size) in [("1 MiB", 1usize << 20), ("100 MiB", 100usize << 20)] {
        let src = work.path().join(format!("src-{size}"));
        make_file(&src, size)?;
        let (secs, n) = transfer(&remote, &src, &format!("t-{size}")).await?;
        anyhow::ensure!(n == size as u64, "read back {n} of {size} bytes");
        let cp = cp_time(&src, work.path())?;
        if size > 1 << 20 {
            rss_after = vm_hwm_kib(pid)?;
        }
        rows.push((
            label,
            mbps(2 * size as u64, secs),
            secs,
            mbps(2 * size as u64, cp),
            cp,
        ));
    }

    println!("| measurement | agent API | baseline |");
    println!("| --- | --- | --- |");
    println!(
        "| exec `echo hi` round trip, p50 / p99 ({CALLS} calls) | {:.2} ms / {:.2} ms (RemoteSandbox over HTTP) | {:.2} ms / {:.2} ms (LocalSandbox in process) |",
        rp50.as_secs_f64() * 1e3,
        rp99.as_secs_f64() * 1e3,
        dp50.as_secs_f64() * 1e3,
        dp99.as_secs_f64() * 1e3
    );
    for (label, mb_s, secs, cp_mb_s, cp_secs) in rows {
        println!(
            "| {label} upload then download | {mb_s:.0} MiB/s ({:.1} ms) | `cp` then read: {cp_mb_s:.0} MiB/s ({:.1} ms) |",
            secs * 1e3,
            cp_secs * 1e3
        );
    }
    println!(
        "| server peak RSS (VmHWM) before / after the 100 MiB transfer | {:.1} MiB / {:.1} MiB | — |",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    child.start_kill()?;
    let _ = child.wait().await;
    Ok(())
}
