//! Driving one running command: stream its output as it comes (capped per stream), wait for
//! the *shell* (not its background children), enforce the wall-clock timeout, and end the
//! stream with an exit record.
//!
//! Both isolation modes share this loop; they differ in how the shell's end is observed and
//! how the process tree is killed ([`Control`]). Invariants: the stream always ends with
//! exactly one `Exit` (or one error when the command could not start); nothing past the cap
//! is kept, but it is counted; a command never outlives its timeout, and `cmd &` returns as
//! soon as the shell exits plus a short drain window, while the background process keeps
//! running with its output discarded.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use paddock_core::SandboxError;
use paddock_core::sandbox::{ExecEvent, ExecExit, ExecStream};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// How long output is still collected after the shell exited (background children may hold
/// the pipes open forever).
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);
/// How long output is still collected after a kill.
pub const DRAIN_AFTER_KILL: Duration = Duration::from_secs(2);
/// Read buffer per stream.
const CHUNK: usize = 64 * 1024;
/// Read buffer of a drain of background output (nobody listens; keep it small).
const DRAIN_CHUNK: usize = 4 * 1024;
/// Background output one sandbox's drains may read, bytes per second, all together.
pub const DRAIN_SANDBOX_RATE: f64 = 256.0 * 1024.0;
/// Background output all drains of this process may read, bytes per second.
pub const DRAIN_GLOBAL_RATE: f64 = 8.0 * 1024.0 * 1024.0;
/// Commands of one sandbox whose background output is drained at once; past this the
/// pipes of a further one are closed (its background writers then get `EPIPE`).
pub const MAX_DRAINS_PER_SANDBOX: usize = 64;

/// A token bucket: `take(n)` says how long to wait so the rate holds on average.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        Self {
            rate,
            // One second of burst.
            tokens: rate,
            last: Instant::now(),
        }
    }

    fn take(&mut self, n: usize) -> Duration {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

static GLOBAL_DRAIN: std::sync::LazyLock<std::sync::Mutex<Bucket>> =
    std::sync::LazyLock::new(|| std::sync::Mutex::new(Bucket::new(DRAIN_GLOBAL_RATE)));

/// What the draining of one sandbox's background output may cost the server: its drains
/// read at most [`DRAIN_SANDBOX_RATE`] together (and all sandboxes' at most
/// [`DRAIN_GLOBAL_RATE`]), at most [`MAX_DRAINS_PER_SANDBOX`] at once, each with a small
/// buffer. A writer beyond the rate blocks on its full pipe, as it would writing to a slow
/// terminal; it is never killed for it.
#[derive(Debug)]
pub struct DrainBudget {
    bucket: std::sync::Mutex<Bucket>,
    active: std::sync::atomic::AtomicUsize,
}

impl Default for DrainBudget {
    fn default() -> Self {
        Self::with_rate(DRAIN_SANDBOX_RATE)
    }
}

impl DrainBudget {
    fn with_rate(rate: f64) -> Self {
        Self {
            bucket: std::sync::Mutex::new(Bucket::new(rate)),
            active: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn wait_for(&self, n: usize) -> Duration {
        let mine = self
            .bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(n);
        let all = GLOBAL_DRAIN
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(n);
        mine.max(all)
    }
}

/// How the shell ended, as seen by the mode's watcher.
#[derive(Debug, Clone)]
pub enum ShellEnd {
    /// Exit code.
    Exited(i32),
    /// Killed by a signal.
    Signaled(i32),
    /// The command could not be started (jail setup or execve failed).
    SpawnFailed(crate::error::JailError),
    /// The process tree vanished without a report (killed from outside).
    Vanished,
}

/// What the mode provides to the driver.
pub struct Control {
    /// Resolves when the shell ends.
    pub shell: Pin<Box<dyn Future<Output = ShellEnd> + Send>>,
    /// Kills the whole tree (pid namespace or process group). Idempotent.
    pub kill: Box<dyn Fn() + Send + Sync>,
    /// Called once after the shell ended: whether the memory limit killed something.
    pub oom_check: Box<dyn Fn() -> bool + Send + Sync>,
    /// Rewrites an output chunk (host-path masking in `isolation: none`).
    pub map_output: Option<Box<dyn Fn(Bytes) -> Bytes + Send + Sync>>,
    /// Runs once the exit record is handed to the consumer (or the stream ended early).
    pub on_end: Option<Box<dyn FnOnce() + Send>>,
    /// The sandbox's budget for draining background output once the shell has exited.
    pub drain: std::sync::Arc<DrainBudget>,
}

struct Capped {
    cap: u64,
    kept: u64,
    dropped: u64,
}

impl Capped {
    /// The part of `n` bytes that still fits.
    fn admit(&mut self, n: usize) -> usize {
        let room = self.cap.saturating_sub(self.kept);
        let take = (n as u64).min(room);
        self.kept += take;
        self.dropped += n as u64 - take;
        take as usize
    }
}

/// Starts the driver task and returns the event stream.
pub fn drive<O, E>(stdout: O, stderr: E, ctl: Control, timeout: Duration, cap: u64) -> ExecStream
where
    O: AsyncRead + Unpin + Send + 'static,
    E: AsyncRead + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Result<ExecEvent, SandboxError>>(32);
    tokio::spawn(run(stdout, stderr, ctl, timeout, cap, tx));
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

async fn run<O, E>(
    mut stdout: O,
    mut stderr: E,
    ctl: Control,
    timeout: Duration,
    cap: u64,
    tx: mpsc::Sender<Result<ExecEvent, SandboxError>>,
) where
    O: AsyncRead + Unpin + Send + 'static,
    E: AsyncRead + Unpin + Send + 'static,
{
    let Control {
        mut shell,
        kill,
        oom_check,
        map_output,
        on_end,
        drain,
    } = ctl;
    // Runs `on_end` however this function returns.
    struct OnEnd(Option<Box<dyn FnOnce() + Send>>);
    impl Drop for OnEnd {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    let _on_end = OnEnd(on_end);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out_cap = Capped {
        cap,
        kept: 0,
        dropped: 0,
    };
    let mut err_cap = Capped {
        cap,
        kept: 0,
        dropped: 0,
    };
    let mut out_buf = vec![0u8; CHUNK];
    let mut err_buf = vec![0u8; CHUNK];
    let (mut out_open, mut err_open) = (true, true);
    let mut end: Option<ShellEnd> = None;
    let mut timed_out = false;
    let mut drain_until: Option<tokio::time::Instant> = None;
    // The consumer may stop listening; the command still runs to its end or timeout.
    let mut listening = true;

    loop {
        if !out_open && !err_open && end.is_some() {
            break;
        }
        if drain_until.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
        let drain_sleep = async {
            match drain_until {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = stdout.read(&mut out_buf), if out_open => match r {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => {
                    let take = out_cap.admit(n);
                    if take > 0 && listening {
                        let data = map(map_output.as_deref(), Bytes::copy_from_slice(&out_buf[..take]));
                        listening = send(&tx, ExecEvent::Stdout { data }, deadline, &mut timed_out, &*kill, end.is_some()).await;
                    }
                }
            },
            r = stderr.read(&mut err_buf), if err_open => match r {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => {
                    let take = err_cap.admit(n);
                    if take > 0 && listening {
                        let data = map(map_output.as_deref(), Bytes::copy_from_slice(&err_buf[..take]));
                        listening = send(&tx, ExecEvent::Stderr { data }, deadline, &mut timed_out, &*kill, end.is_some()).await;
                    }
                }
            },
            e = &mut shell, if end.is_none() => {
                if let ShellEnd::SpawnFailed(failure) = &e {
                    kill();
                    let _ = tx.send(Err(failure.clone().into())).await;
                    return;
                }
                end = Some(e);
                let window = if timed_out { DRAIN_AFTER_KILL } else { DRAIN_AFTER_EXIT };
                drain_until = Some(tokio::time::Instant::now() + window);
            },
            () = tokio::time::sleep_until(deadline), if !timed_out && end.is_none() => {
                timed_out = true;
                kill();
            },
            () = drain_sleep => {}
        }
    }
    if out_open || err_open {
        // Background processes still hold the pipes. Nobody listens any more, so the
        // output is read and discarded (the writers never block for good nor die of
        // SIGPIPE) at a bounded rate with a small buffer; past the sandbox's number of
        // drains the pipes are closed instead.
        drop((out_buf, err_buf));
        let n = drain
            .active
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n >= MAX_DRAINS_PER_SANDBOX {
            drain
                .active
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(
                "a sandbox has {MAX_DRAINS_PER_SANDBOX} commands whose background output is drained; closing this one's pipes"
            );
        } else {
            tokio::spawn(async move {
                struct Active(std::sync::Arc<DrainBudget>);
                impl Drop for Active {
                    fn drop(&mut self) {
                        self.0
                            .active
                            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                let active = Active(drain);
                let (mut sink_o, mut sink_e) = ([0u8; DRAIN_CHUNK], [0u8; DRAIN_CHUNK]);
                while out_open || err_open {
                    let n = tokio::select! {
                        r = stdout.read(&mut sink_o), if out_open => match r {
                            Ok(0) | Err(_) => { out_open = false; 0 }
                            Ok(n) => n,
                        },
                        r = stderr.read(&mut sink_e), if err_open => match r {
                            Ok(0) | Err(_) => { err_open = false; 0 }
                            Ok(n) => n,
                        },
                    };
                    let wait = active.0.wait_for(n);
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
            });
        }
    }
    let end = end.unwrap_or(ShellEnd::Vanished);
    let (exit_code, signal) = match end {
        ShellEnd::Exited(c) => (Some(c), None),
        ShellEnd::Signaled(s) => (None, Some(s)),
        ShellEnd::SpawnFailed(_) | ShellEnd::Vanished => (None, Some(9)),
    };
    let exit = ExecExit {
        exit_code: if timed_out { None } else { exit_code },
        signal: if timed_out { Some(9) } else { signal },
        timed_out,
        oom_killed: oom_check(),
        stdout_dropped: out_cap.dropped,
        stderr_dropped: err_cap.dropped,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let _ = tx.send(Ok(ExecEvent::Exit(exit))).await;
}

fn map(f: Option<&(dyn Fn(Bytes) -> Bytes + Send + Sync)>, b: Bytes) -> Bytes {
    match f {
        Some(f) => f(b),
        None => b,
    }
}

/// Sends one event; a consumer too slow to take it before the deadline triggers the timeout
/// (so a stuck reader cannot stretch a command past its limit). Returns whether the
/// consumer is still listening.
async fn send(
    tx: &mpsc::Sender<Result<ExecEvent, SandboxError>>,
    ev: ExecEvent,
    deadline: tokio::time::Instant,
    timed_out: &mut bool,
    kill: &(dyn Fn() + Send + Sync),
    shell_done: bool,
) -> bool {
    match tokio::time::timeout_at(deadline, tx.send(Ok(ev))).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            if !shell_done && !*timed_out {
                *timed_out = true;
                kill();
            }
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_second_of_burst_then_its_rate() {
        let mut b = Bucket::new(1000.0);
        assert_eq!(b.take(600), Duration::ZERO);
        assert_eq!(b.take(400), Duration::ZERO);
        // The next 500 bytes are owed: about half a second at 1000 bytes/s.
        let wait = b.take(500);
        assert!(
            wait > Duration::from_millis(450) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
    }

    #[test]
    fn cap_accounting() {
        let mut c = Capped {
            cap: 10,
            kept: 0,
            dropped: 0,
        };
        assert_eq!(c.admit(4), 4);
        assert_eq!(c.admit(10), 6);
        assert_eq!(c.admit(5), 0);
        assert_eq!((c.kept, c.dropped), (10, 9));
    }
}
