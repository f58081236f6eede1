//! Benchmark of Paddock's grep and glob against ripgrep on the same 10,000-file tree.
//!
//! Run: `cargo bench -p paddock-fsops --bench search`. It builds a deterministic tree in a
//! temp dir, then times, in the same run, `FsOps::grep` vs `rg -n -i PATTERN DIR` and
//! `FsOps::glob` vs `rg --files -g GLOB DIR` (both with `--no-ignore --hidden`, so rg does
//! the same work), and prints median / p90 wall time and the paddock/rg ratio.

use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use paddock_core::sandbox::{Glob, Grep};
use paddock_core::{DataLayout, MountTable, ThreadId, UserId};
use paddock_fsops::{FsOps, FsOptions};

const FILES: usize = 10_000;
const ITERATIONS: usize = 15;
const PATTERN: &str = "needle";
const GLOB: &str = "*.rs";

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "alpha", "beta", "gamma", "delta", "sandbox", "mount", "thread", "user", "fn", "let", "match",
    "return", "struct", "impl", "value", "error", "path", "virtual", "host", "file", "{", "}", "(",
    ")", "=", ";",
];
const EXTS: &[&str] = &["rs", "py", "txt", "md", "json"];

fn build_tree(root: &Path) -> std::io::Result<()> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut made = 0usize;
    'outer: for a in 0..20 {
        for b in 0..10 {
            let dir = root.join(format!("pkg{a:02}")).join(format!("mod{b:02}"));
            std::fs::create_dir_all(&dir)?;
            for f in 0..50 {
                let ext = EXTS[(rng.below(EXTS.len() as u64)) as usize];
                // Mixed sizes: mostly small, some medium, a few large (up to ~64 KiB).
                let lines = match rng.below(10) {
                    0 => 600 + rng.below(400),
                    1..=3 => 100 + rng.below(200),
                    _ => 5 + rng.below(60),
                };
                let mut body = String::new();
                for _ in 0..lines {
                    let words = 3 + rng.below(10);
                    for w in 0..words {
                        if w > 0 {
                            body.push(' ');
                        }
                        body.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
                    }
                    if rng.below(400) == 0 {
                        body.push_str(if rng.below(2) == 0 {
                            " needle"
                        } else {
                            " NeedLe_found"
                        });
                    }
                    body.push('\n');
                }
                std::fs::write(dir.join(format!("file{f:02}.{ext}")), body)?;
                made += 1;
                if made == FILES {
                    break 'outer;
                }
            }
        }
    }
    Ok(())
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = ms(v[v.len() / 2]);
    let p90 = ms(v[((v.len() * 9).div_ceil(10))
        .saturating_sub(1)
        .min(v.len() - 1)]);
    (median, p90)
}

/// Times `ours` and `theirs` alternately (one warm-up each), so load from other processes
/// on the machine hits both sides alike.
fn time_pair<A, B>(
    mut ours: impl FnMut() -> A,
    mut theirs: impl FnMut() -> B,
) -> ((Vec<Duration>, A), (Vec<Duration>, B)) {
    let (mut a, mut b) = (ours(), theirs());
    let (mut va, mut vb) = (
        Vec::with_capacity(ITERATIONS),
        Vec::with_capacity(ITERATIONS),
    );
    for _ in 0..ITERATIONS {
        let t = Instant::now();
        a = ours();
        va.push(t.elapsed());
        let t = Instant::now();
        b = theirs();
        vb.push(t.elapsed());
    }
    ((va, a), (vb, b))
}

fn rg(args: &[&str]) -> usize {
    let out = Command::new("rg")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match out {
        // Output is piped and read, never sent to /dev/null (where rg may stop early).
        Ok(o) => o.stdout.iter().filter(|&&b| b == b'\n').count(),
        Err(_) => 0,
    }
}

fn main() -> ExitCode {
    if Command::new("rg")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!(
            "error: ripgrep (`rg`) is not installed; this benchmark compares against it\n\nhint: apt-get install -y ripgrep"
        );
        return ExitCode::FAILURE;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let layout = DataLayout::new(tmp.path());
    let table = MountTable::for_thread(
        &layout,
        &UserId::default(),
        &ThreadId::new("bench")?,
        Vec::new(),
    )?;
    let ws = layout
        .thread_dirs(&UserId::default(), &ThreadId::new("bench")?)
        .workspace;
    let t = Instant::now();
    build_tree(&ws)?;
    println!(
        "built {FILES} files in {:.1} s under the workspace mount",
        t.elapsed().as_secs_f64()
    );
    let ops = FsOps::new(Arc::new(table), FsOptions::default());
    let ws_str = ws.to_str().ok_or("temp dir is not UTF-8")?.to_owned();

    let mut grep_req = Grep::new("/mnt/user-data/workspace", PATTERN);
    grep_req.max_results = usize::MAX - 1;
    let ((pg, pg_out), (rgg, rg_lines)) = time_pair(
        || ops.grep(&grep_req),
        || rg(&["-n", "-i", "--no-ignore", "--hidden", PATTERN, &ws_str]),
    );
    let pg_out = pg_out?;

    let mut glob_req = Glob::new("/mnt/user-data/workspace", GLOB);
    glob_req.max_results = usize::MAX - 1;
    let ((pgl, pgl_out), (rgl, rgl_lines)) = time_pair(
        || ops.glob(&glob_req),
        || rg(&["--files", "--no-ignore", "--hidden", "-g", GLOB, &ws_str]),
    );
    let pgl_out = pgl_out?;

    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "\n{ITERATIONS} timed iterations each, paddock and rg alternating, after one warm-up; {threads} CPUs available"
    )?;
    writeln!(
        o,
        "| operation | results (paddock / rg) | paddock median ms | paddock p90 ms | rg median ms | rg p90 ms | ratio (median) |"
    )?;
    writeln!(o, "| --- | --- | --- | --- | --- | --- | --- |")?;
    for (name, ours, theirs, n_ours, n_theirs) in [
        (
            format!("grep -i {PATTERN}"),
            pg,
            rgg,
            pg_out.matches.len(),
            rg_lines,
        ),
        (
            format!("glob {GLOB}"),
            pgl,
            rgl,
            pgl_out.paths.len(),
            rgl_lines,
        ),
    ] {
        let (om, op) = stats(ours);
        let (tm, tp) = stats(theirs);
        writeln!(
            o,
            "| {name} | {n_ours} / {n_theirs} | {om:.1} | {op:.1} | {tm:.1} | {tp:.1} | {:.2} |",
            om / tm
        )?;
    }
    if pg_out.matches.len() != rg_lines || pgl_out.paths.len() != rgl_lines {
        writeln!(
            o,
            "warning: result counts differ, the comparison is not like for like"
        )?;
    }
    Ok(())
}
