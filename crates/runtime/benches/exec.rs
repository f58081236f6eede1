//! Launch cost of one command, side by side in one run:
//! `paddock exec -- true` (the built CLI), `bwrap --unshare-all --die-with-parent` with
//! equivalent binds, a plain fork/exec of `true`, and in-process `LocalSandbox::exec("true")`.
//!
//! Run: `cargo bench -p paddock-runtime --bench exec` (build `paddock` first with
//! `cargo build --release -p paddock-cli` to get its row; `apt-get install -y bubblewrap`
//! for the bwrap row). `PADDOCK_BENCH_RUNS` overrides the in-process run count (1000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use paddock_core::sandbox::ExecRequest;
use paddock_core::{Sandbox, ThreadId, UserId};
use paddock_runtime::{LocalProvider, RuntimeOptions};

struct Row {
    name: String,
    runs: usize,
    samples: Vec<Duration>,
    note: Option<String>,
}

fn pct(s: &[Duration], p: f64) -> Duration {
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i.min(s.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn time_command(mut make: impl FnMut() -> Command, runs: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut c = make();
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let t = Instant::now();
        let st = c.status().expect("spawn");
        out.push(t.elapsed());
        assert!(st.success(), "command failed: {st}");
    }
    out
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn main() {
    let runs: usize = std::env::var("PADDOCK_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let cli_runs = 200;
    let data = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();

    // Warm the thread's directories so every row measures only the launch.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let provider = LocalProvider::new(data.path(), RuntimeOptions::default(), Vec::new())
        .expect("isolated runtime");
    let sb = rt
        .block_on(provider.acquire(&UserId::default(), &ThreadId::new("bench").unwrap()))
        .unwrap();

    let paddock = workspace_root().join("target/release/paddock");
    if paddock.exists() {
        let d = data.path().to_path_buf();
        let s = time_command(
            || {
                let mut c = Command::new(&paddock);
                c.args(["exec", "--data-dir"])
                    .arg(&d)
                    .args(["--user", "default", "--thread", "bench", "--", "true"]);
                c
            },
            cli_runs,
        );
        rows.push(Row {
            name: "paddock exec -- true".into(),
            runs: cli_runs,
            samples: s,
            note: None,
        });
    } else {
        rows.push(Row {
            name: "paddock exec -- true".into(),
            runs: 0,
            samples: vec![],
            note: Some(format!(
                "skipped: {} not built (cargo build --release -p paddock-cli)",
                paddock.display()
            )),
        });
    }

    let ws = data
        .path()
        .join("users/default/threads/bench/user-data/workspace");
    if Command::new("bwrap")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        let s = time_command(
            || {
                let mut c = Command::new("bwrap");
                c.args(["--unshare-all", "--die-with-parent", "--new-session"]);
                c.args(["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]);
                for l in ["bin", "sbin", "lib", "lib64"] {
                    if let Ok(t) = std::fs::read_link(Path::new("/").join(l)) {
                        c.arg("--symlink").arg(t).arg(format!("/{l}"));
                    }
                }
                c.args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
                c.arg("--bind").arg(&ws).arg("/mnt/user-data/workspace");
                c.args([
                    "--chdir",
                    "/mnt/user-data/workspace",
                    "/bin/bash",
                    "-c",
                    "true",
                ]);
                c
            },
            cli_runs,
        );
        rows.push(Row {
            name: "bwrap --unshare-all --die-with-parent bash -c true".into(),
            runs: cli_runs,
            samples: s,
            note: None,
        });
    } else {
        rows.push(Row {
            name: "bwrap --unshare-all --die-with-parent".into(),
            runs: 0,
            samples: vec![],
            note: Some("skipped: bwrap not installed (apt-get install -y bubblewrap)".into()),
        });
    }

    let s = time_command(|| Command::new("/bin/true"), runs);
    rows.push(Row {
        name: "fork/exec /bin/true".into(),
        runs,
        samples: s,
        note: None,
    });

    // In process, three ways: the default (the next jail is prebuilt after each command)
    // with a pause between execs, as an agent leaves between tool calls; the same back to
    // back, where each exec waits for the build the previous one started; and with
    // prebuilding off, every jail built on demand.
    let cold_provider = LocalProvider::new(
        data.path(),
        RuntimeOptions {
            prebuild_jail: false,
            ..RuntimeOptions::default()
        },
        Vec::new(),
    )
    .expect("isolated runtime");
    let cold = rt
        .block_on(cold_provider.acquire(&UserId::default(), &ThreadId::new("bench-cold").unwrap()))
        .unwrap();
    for (name, sandbox, pause) in [
        (
            "LocalSandbox::exec(\"true\") in-process, prebuilt jail (10 ms between execs)",
            &sb,
            Duration::from_millis(10),
        ),
        (
            "LocalSandbox::exec(\"true\") in-process, prebuilt jail, back to back",
            &sb,
            Duration::ZERO,
        ),
        (
            "LocalSandbox::exec(\"true\") in-process, prebuild_jail: false",
            &cold,
            Duration::ZERO,
        ),
    ] {
        let s: Vec<Duration> = rt.block_on(async {
            // Warm-up.
            for _ in 0..20 {
                sandbox.exec(ExecRequest::new("true")).await.unwrap();
            }
            let mut out = Vec::with_capacity(runs);
            for _ in 0..runs {
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                let t = Instant::now();
                let o = sandbox.exec(ExecRequest::new("true")).await.unwrap();
                out.push(t.elapsed());
                assert_eq!(o.exit.exit_code, Some(0));
            }
            out
        });
        rows.push(Row {
            name: name.into(),
            runs,
            samples: s,
            note: None,
        });
    }

    println!("\n| command | runs | p50 | p99 | mean |");
    println!("| --- | --- | --- | --- | --- |");
    for mut r in rows {
        if let Some(n) = r.note {
            println!("| {} | - | - | - | {n} |", r.name);
            continue;
        }
        r.samples.sort();
        let mean = r.samples.iter().sum::<Duration>() / r.samples.len() as u32;
        println!(
            "| {} | {} | {} | {} | {} |",
            r.name,
            r.runs,
            ms(pct(&r.samples, 0.5)),
            ms(pct(&r.samples, 0.99)),
            ms(mean)
        );
    }
    drop(sb);
    drop(cold);
    provider.shutdown();
    cold_provider.shutdown();
}
