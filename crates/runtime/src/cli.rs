//! The `paddock exec` and `paddock doctor` commands as library functions; the `paddock`
//! binary only parses its top level and calls these.
//!
//! Exit codes of `exec`: the command's own code, 128+signal when it was killed, 124 on
//! timeout, 2 for a usage error (the message names the field), 126 when the command could
//! not be started, 1 when the runtime itself is unavailable (the message carries a hint).
//! When `paddock exec` itself gets SIGINT, SIGTERM or SIGHUP it kills the command, removes
//! its cgroup and exits with 128 + that signal (130, 143, 129).

use std::io::Write;
use std::path::PathBuf;

use futures_util::StreamExt;
use paddock_core::sandbox::{ExecEvent, ExecRequest, truncation_marker};
use paddock_core::{Sandbox, SandboxError, ThreadId, UserId};
use paddock_sys::cgroup::Controller;
use paddock_sys::probe::{Action, probe, probe_cgroup};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::options::RuntimeOptions;

/// One `paddock exec`: which thread's sandbox runs which command. The `paddock` binary
/// resolves it from its flags (see its `settings` module); the runtime options come
/// beside it, already merged from defaults, the config file, the environment and flags.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecJob {
    /// Paddock's data directory.
    pub data_dir: PathBuf,
    /// User id (`^[A-Za-z0-9_-]{1,128}$`), checked here.
    pub user: String,
    /// Thread id (`^[A-Za-z0-9_-]{1,64}$`), checked here.
    pub thread: String,
    /// Wall-clock timeout in seconds (`None`: the runtime's `exec_timeout_secs`).
    pub timeout: Option<f64>,
    /// The command. One word is passed to the shell as is; several are quoted and joined.
    pub command: Vec<String>,
}

/// Quotes one word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./=:,@%+".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The command string for `words`.
pub fn command_string(words: &[String]) -> String {
    if words.len() == 1 {
        return words[0].clone();
    }
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

fn usage(msg: impl std::fmt::Display) -> i32 {
    eprintln!("error: {msg}");
    2
}

/// Runs `paddock exec`: `job` in a one-shot runtime with `opts`; returns the exit status.
pub async fn run_exec(job: ExecJob, opts: RuntimeOptions) -> anyhow::Result<i32> {
    let user = match UserId::new(&job.user) {
        Ok(u) => u,
        Err(e) => return Ok(usage(e)),
    };
    let thread = match ThreadId::new(&job.thread) {
        Ok(t) => t,
        Err(e) => return Ok(usage(e)),
    };
    if job.command.is_empty() {
        return Ok(usage("no command given (put it after --)"));
    }
    let mut req = ExecRequest::new(command_string(&job.command));
    req.timeout_secs = job.timeout;
    if let Err(e) = req.validate() {
        return Ok(usage(e));
    }
    let rt = match crate::Runtime::one_shot(&job.data_dir, opts) {
        Ok(rt) => rt,
        Err(crate::RuntimeError::Options(e)) => return Ok(usage(e)),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
    };
    // One sandbox, prepared right here: a one-shot process has nothing to do beside it, so
    // its directory work needs no worker thread (and no provider cache).
    let sb = match crate::LocalSandbox::prepare(rt, &user, &thread, Vec::new()) {
        Ok(sb) => sb,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
    };
    // Installed before the command starts, so an interrupt at any point still ends it.
    let mut signals = match Interrupts::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: could not install signal handlers: {e}");
            return Ok(1);
        }
    };
    let run = async {
        // On the LocalSandbox itself, never as `&dyn Sandbox`: a trait object's vtable
        // would link every Sandbox method (grep, glob, transfers) into the `paddock` front.
        let stream = sb.exec_stream(req).await?;
        // The command runs; tidying up after earlier runs cannot delay it now.
        sb.runtime().sweep_stale_cgroups();
        pump_to_stdio(stream).await
    };
    let result = tokio::select! {
        r = run => r,
        sig = signals.next() => {
            eprintln!("paddock: interrupted by {}; the command was killed", sig.name());
            Ok(128 + sig.number())
        }
    };
    let code = match result {
        Ok(code) => code,
        Err(e @ (SandboxError::InvalidArgument { .. } | SandboxError::InvalidPath { .. })) => {
            usage(e)
        }
        Err(e @ SandboxError::Spawn { .. }) => {
            eprintln!("error: {e}");
            126
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    };
    // Background processes would die with this process anyway (parent-death signal); end
    // them now. Where the jail's init is reaped by whoever adopts it and its cgroup is a
    // reusable slot, that is all: the kernel finishes the teardown after we are gone, as it
    // would for any process. Otherwise wait for the reaper to remove the exec's cgroup, so
    // no directory is left for the next run to sweep.
    sb.kill_all();
    if !sb.teardown_can_be_left_to_the_kernel() {
        sb.settle(std::time::Duration::from_millis(500)).await;
    }
    drop(sb);
    Ok(code)
}

/// SIGINT, SIGTERM and SIGHUP of `paddock exec` itself: instead of dying and leaving the
/// command to its parent-death signal (and its cgroup to the next run's sweep), the exec
/// kills the command, cleans up and exits with 128 + the signal, as a shell reports it.
struct Interrupts([(Interrupt, tokio::signal::unix::Signal); 3]);

#[derive(Debug, Clone, Copy)]
enum Interrupt {
    Int,
    Term,
    Hup,
}

impl Interrupt {
    fn number(self) -> i32 {
        match self {
            Self::Int => libc::SIGINT,
            Self::Term => libc::SIGTERM,
            Self::Hup => libc::SIGHUP,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Int => "SIGINT",
            Self::Term => "SIGTERM",
            Self::Hup => "SIGHUP",
        }
    }
}

impl Interrupts {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self([
            (Interrupt::Int, signal(SignalKind::interrupt())?),
            (Interrupt::Term, signal(SignalKind::terminate())?),
            (Interrupt::Hup, signal(SignalKind::hangup())?),
        ]))
    }

    /// The next of them to arrive.
    async fn next(&mut self) -> Interrupt {
        let [(a, sa), (b, sb), (c, sc)] = &mut self.0;
        tokio::select! {
            _ = sa.recv() => *a,
            _ = sb.recv() => *b,
            _ = sc.recv() => *c,
        }
    }
}

/// Writes a running command's output to this process's stdout/stderr as it comes; returns
/// the shell status.
pub async fn pump_to_stdio(
    mut stream: paddock_core::sandbox::ExecStream,
) -> Result<i32, SandboxError> {
    let mut out = tokio::io::stdout();
    let mut err = tokio::io::stderr();
    let (mut out_len, mut err_len) = (0u64, 0u64);
    while let Some(ev) = stream.next().await {
        match ev? {
            ExecEvent::Stdout { data } => {
                out_len += data.len() as u64;
                let _ = out.write_all(&data).await;
                let _ = out.flush().await;
            }
            ExecEvent::Stderr { data } => {
                err_len += data.len() as u64;
                let _ = err.write_all(&data).await;
                let _ = err.flush().await;
            }
            ExecEvent::Exit(exit) => {
                if exit.stdout_dropped > 0 {
                    let _ = out
                        .write_all(
                            truncation_marker(out_len, out_len + exit.stdout_dropped).as_bytes(),
                        )
                        .await;
                    let _ = out.write_all(b"\n").await;
                    let _ = out.flush().await;
                }
                if exit.stderr_dropped > 0 {
                    let _ = err
                        .write_all(
                            truncation_marker(err_len, err_len + exit.stderr_dropped).as_bytes(),
                        )
                        .await;
                    let _ = err.write_all(b"\n").await;
                }
                if exit.timed_out {
                    let _ = err
                        .write_all(b"paddock: command timed out and was killed\n")
                        .await;
                }
                if exit.oom_killed {
                    let _ = err
                        .write_all(
                            b"paddock: the memory limit was exceeded and a process was killed\n",
                        )
                        .await;
                }
                let _ = err.flush().await;
                return Ok(exit.shell_status());
            }
        }
    }
    Err(SandboxError::Internal {
        message: "command stream ended without an exit record".into(),
    })
}

/// One row of `paddock doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The feature.
    pub feature: String,
    /// Whether `isolation: isolated` needs it.
    pub required: bool,
    /// Whether the probe succeeded.
    pub ok: bool,
    /// What the probe saw.
    pub detail: String,
    /// What to do when it is missing.
    pub hint: String,
}

/// Runs every probe.
pub fn checks() -> Vec<Check> {
    let u = libc::CLONE_NEWUSER;
    let mut out = Vec::new();
    let mut add = |feature: &str, required: bool, r: Result<String, String>, hint: &str| {
        let ok = r.is_ok();
        let detail = match r {
            Ok(d) | Err(d) => d,
        };
        out.push(Check {
            feature: feature.into(),
            required,
            ok,
            detail,
            hint: if ok { String::new() } else { hint.into() },
        });
    };
    let p = |flags: i32, a: Action, what: &str| {
        probe(flags, a)
            .map(|()| what.to_owned())
            .map_err(|e| e.to_string())
    };
    add(
        "user namespace",
        true,
        p(u, Action::Nothing, "created"),
        "enable unprivileged user namespaces (user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1, no AppArmor userns restriction)",
    );
    add(
        "mount namespace",
        true,
        p(u | libc::CLONE_NEWNS, Action::Tmpfs, "tmpfs mounted inside"),
        "the kernel or a container forbids mounts in user namespaces",
    );
    add(
        "pid namespace + procfs",
        true,
        p(
            u | libc::CLONE_NEWNS | libc::CLONE_NEWPID,
            Action::Proc,
            "fresh /proc mounted",
        ),
        "an over-mounted /proc blocks mounting a fresh one",
    );
    add(
        "network namespace",
        true,
        p(u | libc::CLONE_NEWNET, Action::Loopback, "loopback up"),
        "enable CONFIG_NET_NS, or run with network: host",
    );
    add(
        "ipc namespace",
        true,
        p(u | libc::CLONE_NEWIPC, Action::Nothing, "created"),
        "enable CONFIG_IPC_NS",
    );
    add(
        "uts namespace",
        true,
        p(u | libc::CLONE_NEWUTS, Action::Nothing, "created"),
        "enable CONFIG_UTS_NS",
    );
    add(
        "pivot_root",
        true,
        p(
            u | libc::CLONE_NEWNS,
            Action::PivotRoot,
            "pivoted into a tmpfs",
        ),
        "the root filesystem must allow pivot_root (not a ramfs initramfs)",
    );
    add(
        "seccomp",
        true,
        p(0, Action::Seccomp, "filter installed, keyctl refused"),
        "enable CONFIG_SECCOMP_FILTER",
    );
    let abi = paddock_sys::landlock::kernel_abi();
    add(
        "landlock",
        false,
        p(
            0,
            Action::Landlock,
            &format!("ABI {abi}, restriction enforced"),
        )
        .map_err(|e| format!("ABI {abi}: {e}")),
        "boot with lsm=...,landlock (Linux 5.13+); the jail runs without this layer otherwise",
    );
    for c in Controller::ALL {
        let hint = match c {
            Controller::Memory => {
                "no memory cgroup: RLIMIT_AS is used and OOM kills are not reported; delegate a cgroup to Paddock"
            }
            Controller::Pids => {
                "no pids cgroup: RLIMIT_NPROC (per host uid) is used; delegate a cgroup to Paddock"
            }
            Controller::Cpu => "no cpu cgroup: cpu is not limited; delegate a cgroup to Paddock",
        };
        add(
            &format!("cgroup {}", c.name()),
            false,
            probe_cgroup(c).map(|v| format!("v{v}, child cgroup created and removed")),
            hint,
        );
    }
    add(
        "overlayfs in a user namespace",
        false,
        p(u | libc::CLONE_NEWNS, Action::Overlay, "overlay mounted"),
        "not used by the runtime today",
    );
    out
}

/// What `paddock doctor` knows of the configuration: enough to say which disk quota a
/// runtime would enforce here.
#[derive(Debug, Clone)]
pub struct DoctorContext {
    /// The `sandbox:` section.
    pub opts: RuntimeOptions,
    /// Where users' data lives.
    pub layout: paddock_core::DataLayout,
}

/// The disk quota row: which mode `paddock serve` over `ctx` would use, and why. Required
/// when a quota is configured explicitly (Paddock then refuses to start without it).
pub fn disk_quota_check(ctx: &DoctorContext) -> Check {
    let o = &ctx.opts;
    let explicit = o.disk_quota_bytes.is_some() || o.disk_quota_mode == crate::DiskQuotaMode::Image;
    // A real image is tried where Paddock would try it, or in the temporary directory
    // while the data directory does not exist yet (doctor creates nothing there).
    let probe_dir = if ctx.layout.root().is_dir() {
        ctx.layout.root().to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let (ok, detail, hint) = match crate::disk::resolve(o, &ctx.layout, Some(&probe_dir), true) {
        Ok(q) if q.active() => (true, q.reason, ""),
        Ok(q) => {
            // Off by configuration is fine; off because the default cannot apply is not.
            let by_config = o.disk_quota_mode == crate::DiskQuotaMode::Off
                || o.disk_quota_bytes == Some(0)
                || ctx.layout.gateway_root().is_some();
            (
                by_config,
                q.reason,
                "run Paddock as root with loop devices and e2fsprogs (mkfs.ext4), or set sandbox.disk_quota_bytes: 0 to say no quota is wanted",
            )
        }
        Err((detail, hint)) => (false, detail, hint),
    };
    Check {
        feature: format!("disk quota ({})", o.disk_quota_mode.as_str()),
        required: explicit,
        ok,
        detail,
        hint: if ok { String::new() } else { hint.into() },
    }
}

/// Runs `paddock doctor` for a configuration, printing a table (or JSON when `json`): 0
/// when every required feature works, 1 otherwise.
pub fn run_doctor(json: bool, ctx: &DoctorContext) -> anyhow::Result<i32> {
    let mut checks = checks();
    checks.push(disk_quota_check(ctx));
    let (ok, text) = doctor_report(&checks, json)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(if ok { 0 } else { 1 })
}

/// What `paddock doctor` prints for `checks` (the disk quota row last), and whether
/// Paddock can run as configured: every required feature works.
pub fn doctor_report(checks: &[Check], json: bool) -> serde_json::Result<(bool, String)> {
    let (features, disk) = match checks.split_last() {
        Some((disk, features)) => (features, Some(disk)),
        None => (checks, None),
    };
    let isolation_ok = features.iter().all(|c| c.ok || !c.required);
    let disk_ok = disk.is_none_or(|d| d.ok || !d.required);
    let ok = isolation_ok && disk_ok;
    if json {
        #[derive(Serialize)]
        struct Report<'a> {
            ok: bool,
            checks: &'a [Check],
        }
        let mut s = serde_json::to_string_pretty(&Report { ok, checks })?;
        s.push('\n');
        return Ok((ok, s));
    }
    let mut s = render_table(checks);
    if isolation_ok {
        s.push_str("\nisolation: isolated is available\n");
    } else {
        s.push_str(
            "\nisolation: isolated is NOT available: a required feature is missing (see the hints above)\n",
        );
    }
    match disk {
        Some(d) if disk_ok => s.push_str(&format!("disk quota: {}\n", d.detail)),
        Some(_) => s.push_str(
            "the configured disk quota cannot be enforced here: Paddock refuses to start (see the hint above)\n",
        ),
        None => {}
    }
    Ok((ok, s))
}

/// The human table.
pub fn render_table(checks: &[Check]) -> String {
    let w = checks
        .iter()
        .map(|c| c.feature.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let mut s = format!(
        "{:<w$}  {:<8}  {:<8}  detail\n",
        "feature", "status", "needed"
    );
    for c in checks {
        let status = if c.ok { "ok" } else { "missing" };
        let needed = if c.required { "required" } else { "optional" };
        s.push_str(&format!(
            "{:<w$}  {:<8}  {:<8}  {}\n",
            c.feature, status, needed, c.detail
        ));
        if !c.ok {
            s.push_str(&format!("{:<w$}  hint: {}\n", "", c.hint));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("abc"), "abc");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(
            command_string(&["echo $HOME | wc".into()]),
            "echo $HOME | wc"
        );
        assert_eq!(
            command_string(&["sh".into(), "-c".into(), "echo $HOME".into()]),
            "sh -c 'echo $HOME'"
        );
    }

    #[test]
    fn table_shows_hints_only_for_missing() {
        let t = render_table(&[
            Check {
                feature: "a".into(),
                required: true,
                ok: true,
                detail: "fine".into(),
                hint: String::new(),
            },
            Check {
                feature: "b".into(),
                required: false,
                ok: false,
                detail: "nope".into(),
                hint: "do x".into(),
            },
        ]);
        assert!(t.contains("a        ok        required  fine"), "{t}");
        assert!(t.contains("hint: do x"));
        assert_eq!(t.matches("hint:").count(), 1);
    }

    #[test]
    fn doctor_probes_this_kernel() {
        let c = checks();
        assert!(c.len() >= 13);
        if std::env::var("CI").as_deref() == Ok("true") {
            for x in c.iter().filter(|x| x.required) {
                assert!(x.ok, "{} is required: {}", x.feature, x.detail);
            }
        }
    }
}
