//! Launch cost of one command, side by side in one run: `paddock exec -- true` (the built
//! CLI's `paddock` front, and the same through `paddock-full`), `bwrap --unshare-all --die-with-parent` with equivalent binds, a plain fork/exec of
//! `true`, and in-process `LocalSandbox::exec("true")` four ways (in the sandbox's jail with
//! a pause between execs, the same with `prebuild_shell: false`, back to back, and the first
//! command of a new sandbox, which builds its jail).
//!
//! The rows are *interleaved*: each round runs a little of every row, so all rows see the
//! same machine at the same moments. A shared machine's speed drifts by 2x within minutes;
//! rows measured one after the other would compare different machines.
//!
//! Run: `cargo bench -p paddock-runtime --bench exec` (build `paddock` first with
//! `cargo build --release -p paddock-cli` to get its row; `apt-get install -y bubblewrap`
//! for the bwrap row). `PADDOCK_BENCH_ROUNDS` overrides the number of rounds (200).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paddock_core::sandbox::ExecRequest;
use paddock_core::{Sandbox, ThreadId, UserId};
use paddock_runtime::{LocalProvider, LocalSandbox, RuntimeOptions};

/// In-process execs per row and round (the CLI rows run once per round).
const PER_ROUND: usize = 5;
/// The pause before each exec of the "prebuilt" row, as an agent leaves between calls.
const PAUSE: Duration = Duration::from_millis(10);

struct Row {
    name: String,
    samples: Vec<Duration>,
    note: Option<String>,
}

impl Row {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            samples: Vec::new(),
            note: None,
        }
    }
}

fn pct(s: &[Duration], p: f64) -> Duration {
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i.min(s.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn time_command(mut c: Command) -> Duration {
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let t = Instant::now();
    let st = c.status().expect("spawn");
    let d = t.elapsed();
    if !st.success() {
        // Run it once more to show why (the timed run keeps its stderr out of the table).
        let o = c.stderr(Stdio::piped()).output().expect("spawn");
        panic!(
            "{:?} failed: {st}\n{}",
            c.get_program(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    d
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
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
    c.args([
        "--chdir",
        "/mnt/user-data/workspace",
        "/bin/bash",
        "-c",
        "true",
    ]);
    c
}

async fn exec_true(sb: &LocalSandbox, pause: Duration) -> Duration {
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
    let t = Instant::now();
    let o = sb.exec(ExecRequest::new("true")).await.unwrap();
    let d = t.elapsed();
    assert_eq!(o.exit.exit_code, Some(0));
    d
}

fn main() {
    let rounds: usize = std::env::var("PADDOCK_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let data = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acquire = |provider: &LocalProvider, thread: &str| -> Arc<LocalSandbox> {
        rt.block_on(provider.acquire(&UserId::default(), &ThreadId::new(thread).unwrap()))
            .unwrap()
    };
    let provider_with = |opts: RuntimeOptions| {
        LocalProvider::new(data.path(), opts, Vec::new()).expect("isolated runtime")
    };
    let provider = provider_with(RuntimeOptions::default());
    let cold_provider = provider_with(RuntimeOptions {
        prebuild_jail: false,
        ..RuntimeOptions::default()
    });
    let shell_later_provider = provider_with(RuntimeOptions {
        prebuild_shell: false,
        ..RuntimeOptions::default()
    });
    // Separate sandboxes, so one row's prebuilt jail is never another row's.
    let warm = acquire(&provider, "bench");
    let busy = acquire(&provider, "bench-b2b");
    let cold = acquire(&cold_provider, "bench-cold");
    let mut cold_n = 0usize;
    let shell_later = acquire(&shell_later_provider, "bench-shell-later");

    let paddock = workspace_root().join("target/release/paddock");
    let paddock_full = workspace_root().join("target/release/paddock-full");
    let have_paddock = paddock.exists();
    let have_full = paddock_full.exists();
    let have_bwrap = Command::new("bwrap")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    // bwrap's workspace is a directory of its own: a sandbox's data is private to the
    // sandbox's uid (0700), which bwrap's user namespace cannot enter.
    let ws = data.path().join("bwrap-workspace");
    std::fs::create_dir_all(&ws).unwrap();
    let paddock_exec = |bin: &Path| {
        let mut c = Command::new(bin);
        c.args(["exec", "--data-dir"]).arg(data.path()).args([
            "--user",
            "default",
            "--thread",
            "bench-cli",
            "--",
            "true",
        ]);
        c
    };

    let mut r_cli = Row::new("paddock exec -- true");
    let mut r_full = Row::new("paddock-full exec -- true (the binary with every subcommand)");
    let mut r_bwrap = Row::new("bwrap --unshare-all --die-with-parent bash -c true");
    let mut r_fork = Row::new("fork/exec /bin/true");
    let mut r_warm = Row::new(
        "LocalSandbox::exec(\"true\") in-process, the sandbox's jail (10 ms between execs)",
    );
    let mut r_shell_later = Row::new(
        "LocalSandbox::exec(\"true\") in-process, the sandbox's jail, prebuild_shell: false (10 ms between execs)",
    );
    let mut r_b2b =
        Row::new("LocalSandbox::exec(\"true\") in-process, the sandbox's jail, back to back");
    let mut r_cold = Row::new(
        "LocalSandbox::exec(\"true\") in-process, first command of a new sandbox (builds its jail; prebuild_jail: false)",
    );
    if !have_paddock {
        r_cli.note = Some(format!(
            "skipped: {} not built (cargo build --release -p paddock-cli)",
            paddock.display()
        ));
    }
    if !have_full {
        r_full.note = Some(format!(
            "skipped: {} not built (cargo build --release -p paddock-cli)",
            paddock_full.display()
        ));
    }
    if !have_bwrap {
        r_bwrap.note = Some("skipped: bwrap not installed (apt-get install -y bubblewrap)".into());
    }

    // Warm-up: caches, the thread directories, the kernel-probe record, first jails.
    for _ in 0..3 {
        if have_paddock {
            time_command(paddock_exec(&paddock));
        }
        if have_full {
            time_command(paddock_exec(&paddock_full));
        }
        if have_bwrap {
            time_command(bwrap(&ws));
        }
    }
    // A one-shot exec learns once per boot (and pid namespace) whether the jail's init is
    // reaped after it exits, and until then waits for the teardown; that steady state is
    // what the rows measure. This host's pid 1 may take a second or two to reap.
    if have_paddock {
        let record = data.path().join("state/kernel-probe");
        let deadline = Instant::now() + Duration::from_secs(20);
        let fact = loop {
            time_command(paddock_exec(&paddock));
            let text = std::fs::read_to_string(&record).unwrap_or_default();
            if let Some(f) = text.lines().find(|l| l.starts_with("orphans_reaped=")) {
                break f.to_owned();
            }
            if Instant::now() > deadline {
                break "orphans_reaped unknown after 20 s".to_owned();
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        println!("one-shot exec: {fact}");
    }
    rt.block_on(async {
        for sb in [&warm, &shell_later, &busy, &cold] {
            for _ in 0..10 {
                exec_true(sb, Duration::ZERO).await;
            }
        }
    });

    for _ in 0..rounds {
        if have_paddock {
            r_cli.samples.push(time_command(paddock_exec(&paddock)));
        }
        if have_full {
            r_full
                .samples
                .push(time_command(paddock_exec(&paddock_full)));
        }
        if have_bwrap {
            r_bwrap.samples.push(time_command(bwrap(&ws)));
        }
        for _ in 0..PER_ROUND {
            r_fork.samples.push(time_command(Command::new("/bin/true")));
        }
        rt.block_on(async {
            for _ in 0..PER_ROUND {
                r_warm.samples.push(exec_true(&warm, PAUSE).await);
            }
            for _ in 0..PER_ROUND {
                r_shell_later
                    .samples
                    .push(exec_true(&shell_later, PAUSE).await);
            }
            for _ in 0..PER_ROUND {
                r_b2b.samples.push(exec_true(&busy, Duration::ZERO).await);
            }
            // One new sandbox per round: its first command builds its jail.
            cold_n += 1;
            let fresh = cold_provider
                .acquire(
                    &UserId::default(),
                    &ThreadId::new(format!("bench-cold-{cold_n}")).unwrap(),
                )
                .await
                .unwrap();
            r_cold.samples.push(exec_true(&fresh, Duration::ZERO).await);
            fresh.kill_all();
        });
    }

    println!("\n{rounds} interleaved rounds\n");
    println!("| command | runs | p50 | p99 | mean | p50 / bwrap | p50 / fork-exec |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let rows = [
        r_cli,
        r_full,
        r_bwrap,
        r_fork,
        r_warm,
        r_shell_later,
        r_b2b,
        r_cold,
    ]
    .map(|mut r| {
        r.samples.sort();
        r
    });
    let p50_of = |r: &Row| (!r.samples.is_empty()).then(|| pct(&r.samples, 0.5));
    let (bwrap_p50, fork_p50) = (p50_of(&rows[2]), p50_of(&rows[3]));
    let ratio = |p: Duration, base: Option<Duration>| {
        base.map_or("-".to_owned(), |b| {
            format!("{:.2}", p.as_secs_f64() / b.as_secs_f64())
        })
    };
    for r in &rows {
        if let Some(n) = &r.note {
            println!("| {} | - | - | - | {n} | - | - |", r.name);
            continue;
        }
        let mean = r.samples.iter().sum::<Duration>() / r.samples.len() as u32;
        let p50 = pct(&r.samples, 0.5);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.samples.len(),
            ms(p50),
            ms(pct(&r.samples, 0.99)),
            ms(mean),
            ratio(p50, bwrap_p50),
            ratio(p50, fork_p50)
        );
    }
    drop((warm, busy, cold, shell_later));
    provider.shutdown();
    cold_provider.shutdown();
    shell_later_provider.shutdown();
}
