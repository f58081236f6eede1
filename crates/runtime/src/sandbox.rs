//! `LocalSandbox`: one (user, thread) sandbox on this host. Its commands run in the
//! sandbox's jail (`crate::jail`), built once and kept for as long as the sandbox lives, as a
//! container is; file operations go through `paddock-fsops` over the same mount table, so a
//! path means the same thing to a command and to the file API.
//!
//! Why one jail per sandbox and not one per command (the design before): agents expect what
//! a container gives them — `/tmp` and `/dev/shm` that keep what one command wrote for the
//! next, a server started in the background reachable by the next command — and the limits
//! must hold for the sandbox, not per command, or a few background jobs multiply them. A
//! per-sandbox jail gives all three at once, and a command costs a message to the jail's
//! init and a fork instead of building and tearing down a set of namespaces (which is also
//! what bounded throughput). The cost: one init process per live sandbox (a small static
//! program, not a copy of Paddock), and a timeout needs the command's own cgroup slot to kill
//! exactly its processes (without cgroups, a timeout ends the jail).
//!
//! A one-shot `paddock exec` still builds a jail for its one command (there is no next
//! command to keep anything for), with `/tmp` of its own.
//!
//! Invariants: every running command of a one-shot runtime is registered in `live` until its
//! process tree is gone; [`LocalSandbox::kill_all`] (reset, shutdown, drop) ends the
//! sandbox's jail and everything in it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use paddock_core::mount::{WORKSPACE, WalkOptions};
use paddock_core::sandbox::*;
use paddock_core::{Mount, MountTable, Sandbox, SandboxError, ThreadId, UserId, VirtualPath};
use paddock_fsops::{FsOps, FsOptions};
use paddock_sys::PidFd;
use paddock_sys::cgroup::ExecCgroup;
use paddock_sys::jail::{JailCommand, StatusRecord, StepFailed};
use paddock_sys::process::WaitStatus;
use tokio::io::AsyncReadExt;

use crate::drive::{Control, ShellEnd, drive};
use crate::error::JailError;
use crate::jail::RunningJail;
use crate::options::Isolation;
use crate::plan::JailPlan;
use crate::runtime::{Runtime, spawn_jail};

/// The reference's id format for a thread's local sandbox.
pub fn sandbox_id(user: &UserId, thread: &ThreadId) -> String {
    format!("local:{user}:{thread}")
}

/// Parses `local:{user}:{thread}`.
pub fn parse_sandbox_id(id: &str) -> Option<(UserId, ThreadId)> {
    let rest = id.strip_prefix("local:")?;
    let (u, t) = rest.split_once(':')?;
    Some((UserId::new(u).ok()?, ThreadId::new(t).ok()?))
}

enum Live {
    /// The init of a one-shot exec's pid namespace.
    Jail(Arc<PidFd>),
    /// A process group (`isolation: none`).
    Group(i32),
}

type Building = Shared<BoxFuture<'static, Result<Arc<RunningJail>, JailError>>>;

/// The sandbox's jail: none yet, on its way up, or running.
enum JailState {
    Down,
    Building { build: Building, generation: u64 },
    Up(Arc<RunningJail>),
}

static JAIL_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Names of sandbox cgroups (`sb-{n}`): unique in the process, meaningless outside it.
static SANDBOX_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long an init with nothing left in its one-shot jail lives on after the result was
/// handed over: its teardown (about a millisecond of kernel work) then runs after the
/// caller has the result, not beside the hand-over on a small host.
const IDLE_INIT_GRACE: Duration = Duration::from_millis(5);

/// Removes a one-shot exec's cgroup when the last holder (driver or reaper) is done with it.
struct CgroupGuard(ExecCgroup);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        self.0.remove();
    }
}

/// One thread's sandbox.
pub struct LocalSandbox {
    id: String,
    rt: Arc<Runtime>,
    table: Arc<MountTable>,
    fs: FsOps,
    ids: (u32, u32),
    plan: Option<JailPlan>,
    jail: Mutex<JailState>,
    live: Arc<Mutex<HashMap<u64, Live>>>,
    /// Reapers still to finish (one-shot: each removes its exec's cgroup when init is gone).
    reaping: Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>,
    /// Of those, the ones whose cgroup is to be removed once their init is gone (a reusable
    /// slot of the pool is not; see `paddock_sys::cgroup::CgroupSet::flat`).
    removing: Arc<std::sync::atomic::AtomicUsize>,
    /// What draining its commands' background output may cost the server.
    drains: Arc<crate::drive::DrainBudget>,
    /// The sandbox's own host id while it lives (declared last: returned after the fields
    /// above are dropped, and `Drop` has killed the jail).
    _id_lease: Option<crate::ids::IdLease>,
    /// The thread's disk image while it is mounted for this sandbox (see `crate::disk`);
    /// after everything else, so it is unmounted once nothing here holds it.
    disk: Option<crate::disk::Attached>,
}

impl std::fmt::Debug for LocalSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSandbox")
            .field("id", &self.id)
            .field("uid", &self.ids.0)
            .finish()
    }
}

fn internal(message: impl Into<String>) -> SandboxError {
    SandboxError::Internal {
        message: message.into(),
    }
}

impl LocalSandbox {
    /// Prepares the thread's directories, ownership and jail plan (blocking filesystem work).
    pub fn prepare(
        rt: Arc<Runtime>,
        user: &UserId,
        thread: &ThreadId,
        custom: Vec<Mount>,
    ) -> Result<Self, SandboxError> {
        let disk = attach_disk(&rt, user, thread)?;
        let table = MountTable::for_thread(rt.layout(), user, thread, custom).map_err(|e| {
            tracing::error!(error = %e, "could not prepare the thread's directories");
            SandboxError::Unavailable {
                message: format!("could not prepare the directories of thread {thread}"),
            }
        })?;
        let o = rt.options();
        let lease = match &rt.ids {
            Some(a) => Some(a.lease(user.as_str(), thread.as_str()).map_err(|e| {
                tracing::error!(error = %e, "no host id for a new sandbox");
                SandboxError::Unavailable {
                    message: "no free sandbox uid: too many live sandboxes for sandbox.uid_range"
                        .into(),
                }
            })?),
            None => None,
        };
        let ids = match &lease {
            Some(l) => (l.id(), l.id()),
            None => paddock_sys::uidmap::choose_ids(
                paddock_sys::process::euid(),
                paddock_sys::process::egid(),
                (o.sandbox_uid, o.sandbox_gid),
                o.uid_range.map(|r| paddock_sys::uidmap::IdRange {
                    start: r.start,
                    count: r.count,
                }),
                user.as_str(),
                thread.as_str(),
            )
            .map_err(|e| SandboxError::invalid_argument("sandbox_uid", e.to_string()))?,
        };
        let mut owner = None;
        let mut mount_owners = Vec::new();
        let plan = match &rt.jail {
            None => None,
            Some(base) => {
                if base.privileged {
                    owner = Some(ids);
                    // Paddock's own thread directories become the sandbox user's, private
                    // to it (0700 roots, no group or other bits below, so no other user of
                    // the host can read a tenant's files); a gateway's (another program's
                    // tree) are shown to it through idmapped mounts instead, never chowned
                    // and their modes left as the gateway made them.
                    for m in table.mounts() {
                        // The sandbox sees a gateway directory as its own through an
                        // idmapped mount of the directory's owner: what the file API
                        // creates there goes to that owner, which the mount maps to the
                        // sandbox (the sandbox's own uid it does not map).
                        if rt.layout().is_gateways(&m.host) {
                            let o = crate::plan::owner_of(&m.host).map_err(|e| {
                                tracing::error!(error = %e, mount = %m.container, "could not inspect a mount's owner");
                                internal(format!("could not inspect the directory of {}", m.container))
                            })?;
                            mount_owners.push((m.container.clone(), o));
                        }
                        if m.is_user_data() && !rt.layout().is_gateways(&m.host) {
                            let handed = paddock_sys::tree::chown_tree(&m.host, ids.0, ids.1, true);
                            let failed = handed.map_err(|e| {
                                tracing::error!(error = %e, mount = %m.container, "chown of thread data failed");
                                internal(format!(
                                    "could not give {} to the sandbox user",
                                    m.container
                                ))
                            })?;
                            if failed > 0 {
                                tracing::warn!(mount = %m.container, failed, "some entries of the thread's data could not be given to the sandbox user (changed while being walked)");
                            }
                        }
                    }
                }
                Some(JailPlan::prepare(&rt, base, &table, ids)?)
            }
        };
        let table = Arc::new(table);
        let fs = FsOps::new(
            table.clone(),
            FsOptions {
                owner,
                // What the file API creates in Paddock's own thread data is private to the
                // sandbox's uid, as the handover above leaves the rest; a gateway's data
                // keeps the modes its owner gives it.
                private_user_data: owner.is_some() && rt.layout().gateway_root().is_none(),
                mount_owners,
                ..FsOptions::default()
            },
        );
        Ok(Self {
            id: sandbox_id(user, thread),
            rt,
            table,
            fs,
            ids,
            plan,
            jail: Mutex::new(JailState::Down),
            live: Arc::new(Mutex::new(HashMap::new())),
            reaping: Arc::default(),
            removing: Arc::default(),
            drains: Arc::default(),
            _id_lease: lease,
            disk,
        })
    }

    /// `st_dev` of the thread's disk image while it is mounted for this sandbox (`None`:
    /// the thread's data is a plain directory).
    pub fn disk_dev(&self) -> Option<u64> {
        self.disk.as_ref().map(crate::disk::Attached::dev)
    }

    /// Starts building the sandbox's jail in the background (when `prebuild_jail` is on), so
    /// the first command finds it ready. Call from within a tokio runtime.
    pub fn start_jail(self: &Arc<Self>) {
        if self.plan.is_none() || !self.rt.prebuilds() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        handle.spawn(async move {
            if let Some(sb) = weak.upgrade()
                && let Err(e) = sb.jail().await
            {
                tracing::warn!(sandbox = %sb.id, error = %e, "could not build the sandbox's jail ahead of its first command");
            }
        });
    }

    /// The sandbox id (`local:{user}:{thread}`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The host (uid, gid) its commands run as.
    pub fn host_ids(&self) -> (u32, u32) {
        self.ids
    }

    /// Its mount table.
    pub fn mount_table(&self) -> &MountTable {
        &self.table
    }

    fn running_jail(&self) -> Option<Arc<RunningJail>> {
        match &*self.jail.lock().unwrap_or_else(|p| p.into_inner()) {
            JailState::Up(j) if j.alive() => Some(j.clone()),
            _ => None,
        }
    }

    /// Host pids of the sandbox's processes while something runs in it: its jail's init
    /// first, then the rest (isolated); the process groups of running commands (one-shot
    /// or `isolation: none`). Empty when nothing runs.
    pub fn running(&self) -> Vec<i32> {
        if let Some(j) = self.running_jail() {
            return if j.busy() { j.processes() } else { Vec::new() };
        }
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.values()
            .map(|l| match l {
                Live::Jail(p) => p.pid(),
                Live::Group(g) => *g,
            })
            .collect()
    }

    /// The host pid of the sandbox's jail's init, while its jail runs.
    pub fn init_pid(&self) -> Option<i32> {
        self.running_jail().map(|j| j.init_pid())
    }

    /// The runtime this sandbox runs on.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    /// Waits (at most `limit`) until every one-shot exec's process tree is gone and its
    /// cgroup removed; true when that happened. Used after [`Self::kill_all`] by a process
    /// about to exit, so it leaves nothing behind.
    pub async fn settle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.reaping.1.notified();
            if self.reaping.0.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// Whether a process about to exit can leave the rest of its commands' teardown to the
    /// kernel once [`Self::kill_all`] was called: their inits are adopted and reaped by
    /// someone else ([`Runtime::orphans_reaped`]) and no cgroup waits to be removed.
    pub fn teardown_can_be_left_to_the_kernel(&self) -> bool {
        self.rt.orphans_reaped() && self.removing.load(std::sync::atomic::Ordering::SeqCst) == 0
    }

    /// Kills every process of this sandbox: its jail (and with it every command and
    /// background process), and the process groups of `isolation: none` commands. The next
    /// command builds a fresh jail.
    pub fn kill_all(&self) {
        let state = std::mem::replace(
            &mut *self.jail.lock().unwrap_or_else(|p| p.into_inner()),
            JailState::Down,
        );
        // A build in flight finds its generation gone and drops (kills) what it built.
        if let JailState::Up(j) = state {
            j.kill();
        }
        let live = std::mem::take(&mut *self.live.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, l) in live {
            match l {
                Live::Jail(p) => {
                    let _ = p.kill();
                }
                Live::Group(g) => {
                    let _ = paddock_sys::process::kill_process_group(g, libc::SIGKILL);
                }
            }
        }
    }

    /// The sandbox's running jail, built (or awaited while another caller builds it) when
    /// there is none.
    async fn jail(&self) -> Result<Arc<RunningJail>, SandboxError> {
        let Some(plan) = &self.plan else {
            return Err(internal("isolated exec without a jail plan"));
        };
        let (build, generation) = {
            let mut st = self.jail.lock().unwrap_or_else(|p| p.into_inner());
            match &*st {
                JailState::Up(j) if j.alive() => return Ok(j.clone()),
                JailState::Building { build, generation } => (build.clone(), *generation),
                _ => {
                    let generation =
                        JAIL_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let n = SANDBOX_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let plan = plan.clone();
                    // The first command's shell is started with the jail, so a sandbox that
                    // is ready (see `Sandbox::ready`) runs its first command as fast as any.
                    let shell = self
                        .rt
                        .prebuilds_shell()
                        .then(|| crate::env::likely_locale(&self.rt.options().environment));
                    let build = async move {
                        let j = RunningJail::build(&plan, &format!("sb-{n}")).await?;
                        if let Some(locale) = shell
                            && let Err(e) = j
                                .prepare_waiting_shell(plan.base.shell, locale.as_deref())
                                .await
                        {
                            tracing::debug!(error = %e, "could not start a shell ahead of the first command");
                        }
                        Ok(Arc::new(j))
                    }
                    .boxed()
                    .shared();
                    *st = JailState::Building {
                        build: build.clone(),
                        generation,
                    };
                    (build, generation)
                }
            }
        };
        let built = build.await;
        let mut st = self.jail.lock().unwrap_or_else(|p| p.into_inner());
        let current = matches!(&*st, JailState::Building { generation: g, .. } if *g == generation);
        match built {
            Ok(j) if current => {
                *st = JailState::Up(j.clone());
                Ok(j)
            }
            Ok(j) => match &*st {
                // Another caller of the same build got there first.
                JailState::Up(u) if Arc::ptr_eq(u, &j) => Ok(j),
                _ => Err(SandboxError::Unavailable {
                    message: "the sandbox was reset while its jail was being built".into(),
                }),
            },
            Err(error) => {
                if current {
                    *st = JailState::Down;
                }
                tracing::error!(sandbox = %self.id, message = %error, "could not build the sandbox's jail");
                Err(error.into())
            }
        }
    }

    fn cwd(&self, req: &ExecRequest) -> Result<VirtualPath, SandboxError> {
        let raw = req.cwd.as_deref().unwrap_or(WORKSPACE);
        let loc = self
            .table
            .locate(raw)
            .map_err(|e| SandboxError::invalid_argument("cwd", e.to_string()))?;
        Ok(loc.vpath)
    }

    fn limits(&self, req: &ExecRequest) -> (Duration, u64) {
        let o = self.rt.options();
        let t = req.timeout_secs.unwrap_or(o.exec_timeout_secs);
        let cap = req
            .max_output_bytes
            .map_or(o.output_cap_bytes, |m| m.min(o.output_cap_bytes));
        (Duration::from_secs_f64(t), cap)
    }

    /// The shell's argv and the environment of an isolated command.
    fn isolated_command(
        &self,
        req: &ExecRequest,
        shell: &str,
    ) -> (Vec<String>, Vec<(String, String)>) {
        let o = self.rt.options();
        let env = crate::env::isolated_env(&o.environment, &req.env);
        (
            vec![
                shell.rsplit('/').next().unwrap_or("sh").into(),
                "-c".into(),
                req.command.clone(),
            ],
            env.into_iter().collect(),
        )
    }

    /// A command in the sandbox's jail: handed to the shell waiting for it there, or
    /// started now.
    async fn exec_in_jail(&self, req: ExecRequest) -> Result<ExecStream, SandboxError> {
        let Some(plan) = &self.plan else {
            return Err(internal("isolated exec without a jail plan"));
        };
        let cwd = self.cwd(&req)?;
        let (timeout, cap) = self.limits(&req);
        let shell = plan.base.shell;
        let (argv, env) = self.isolated_command(&req, shell);
        let jail = self.jail().await?;
        let prebuild = self.rt.prebuilds_shell();
        let waiting = if prebuild {
            jail.take_waiting_shell()
        } else {
            None
        };
        let (started, stdout, stderr, status) = match waiting {
            Some(w) => {
                let cmd = JailCommand {
                    argv: argv.clone(),
                    env: env.clone(),
                    cwd: cwd.to_string(),
                }
                .encode()
                .map_err(|e| SandboxError::invalid_argument("command", e.to_string()))?;
                let crate::jail::WaitingShell {
                    started,
                    cmd: cmd_w,
                    status,
                    stdout,
                    stderr,
                } = w;
                // A message larger than a pipe buffer is read by the preload as it comes.
                set_nonblocking(&cmd_w).map_err(|e| internal(format!("pipe: {e}")))?;
                let mut tx = tokio::net::unix::pipe::Sender::from_owned_fd(cmd_w)
                    .map_err(|e| internal(format!("pipe: {e}")))?;
                use tokio::io::AsyncWriteExt;
                if let Err(e) = tx.write_all(cmd.as_bytes()).await {
                    // The shell is gone (killed from outside); its slot is given back.
                    tracing::debug!(error = %e, "the waiting shell is gone; starting the command anew");
                    drop(started);
                    return self
                        .exec_started_anew(&jail, shell, &argv, &env, &cwd, timeout, cap)
                        .await;
                }
                (started, stdout, stderr, Some(status))
            }
            None => {
                return self
                    .exec_started_anew(&jail, shell, &argv, &env, &cwd, timeout, cap)
                    .await;
            }
        };
        self.drive_in_jail(jail, started, stdout, stderr, status, timeout, cap)
    }

    /// Starts the command in the jail now (no shell is waiting for it).
    #[allow(clippy::too_many_arguments)]
    async fn exec_started_anew(
        &self,
        jail: &Arc<RunningJail>,
        shell: &str,
        argv: &[String],
        env: &[(String, String)],
        cwd: &VirtualPath,
        timeout: Duration,
        cap: u64,
    ) -> Result<ExecStream, SandboxError> {
        let (out_r, out_w) = std::io::pipe().map_err(|e| internal(format!("pipe: {e}")))?;
        let (err_r, err_w) = std::io::pipe().map_err(|e| internal(format!("pipe: {e}")))?;
        let started = jail
            .start(
                shell,
                argv,
                env,
                cwd.as_str(),
                vec![out_w.into(), err_w.into()],
            )
            .await
            .map_err(|error| {
                tracing::error!(sandbox = %self.id, message = %error, "could not start a command");
                SandboxError::from(error)
            })?;
        self.drive_in_jail(
            jail.clone(),
            started,
            out_r.into(),
            err_r.into(),
            None,
            timeout,
            cap,
        )
    }

    /// Streams a started command to its end. `status`: a waiting shell's status pipe, where
    /// the preload reports a step that failed before the command ran (a missing cwd).
    #[allow(clippy::too_many_arguments)]
    fn drive_in_jail(
        &self,
        jail: Arc<RunningJail>,
        started: crate::jail::Started,
        stdout: std::os::fd::OwnedFd,
        stderr: std::os::fd::OwnedFd,
        status: Option<std::os::fd::OwnedFd>,
        timeout: Duration,
        cap: u64,
    ) -> Result<ExecStream, SandboxError> {
        let pipe = |fd: std::os::fd::OwnedFd| {
            set_nonblocking(&fd).map_err(|e| internal(format!("pipe: {e}")))?;
            tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                .map_err(|e| internal(format!("pipe: {e}")))
        };
        let (out, err) = (pipe(stdout)?, pipe(stderr)?);
        let status = status.map(pipe).transpose()?;
        let crate::jail::Started {
            end,
            slot,
            oom_before,
            ..
        } = started;
        let slot = slot.map(Arc::new);
        let kill: Box<dyn Fn() + Send + Sync> = match slot.clone() {
            Some(s) => Box::new(move || {
                s.kill();
            }),
            // No cgroup to tell the command's processes from the others: end the jail.
            None => {
                let j = jail.clone();
                Box::new(move || j.kill())
            }
        };
        let shell = async move {
            if let Some(mut status) = status {
                let mut rec = [0u8; StatusRecord::LEN];
                // End of file once the command runs; a record when the preload failed.
                if status.read_exact(&mut rec).await.is_ok()
                    && let Some(failed) = StatusRecord::parse(&rec).and_then(|r| r.failure())
                {
                    return ShellEnd::SpawnFailed(failed.into());
                }
            }
            end.await.unwrap_or(ShellEnd::Vanished)
        };
        let oom_jail = jail.clone();
        // Once the result is out: the slot is given back, and (with `prebuild_shell`) the
        // next command's shell is started — not before, on a small host it would compete
        // with the command for the CPU.
        let next = self
            .rt
            .prebuilds_shell()
            .then(|| (jail.clone(), self.plan.as_ref().map(|p| p.base.shell)));
        let locale = crate::env::likely_locale(&self.rt.options().environment);
        let keep = (slot, jail);
        let on_end: Box<dyn FnOnce() + Send> = Box::new(move || {
            drop(keep);
            if let Some((j, Some(shell))) = next
                && let Ok(rt) = tokio::runtime::Handle::try_current()
            {
                rt.spawn(async move {
                    if let Err(e) = j.prepare_waiting_shell(shell, locale.as_deref()).await {
                        tracing::debug!(error = %e, "could not start a shell ahead of the next command");
                    }
                });
            }
        });
        let ctl = Control {
            shell: Box::pin(shell),
            kill,
            oom_check: Box::new(move || oom_jail.oom_kills() > oom_before),
            map_output: None,
            on_end: Some(on_end),
            drain: self.drains.clone(),
        };
        Ok(drive(out, err, ctl, timeout, cap))
    }

    /// A one-shot runtime's command: a jail of its own (`paddock exec`).
    async fn exec_one_shot(&self, req: ExecRequest) -> Result<ExecStream, SandboxError> {
        let Some(plan) = &self.plan else {
            return Err(internal("isolated exec without a jail plan"));
        };
        let cwd = self.cwd(&req)?;
        let (timeout, cap) = self.limits(&req);
        let (argv, env) = self.isolated_command(&req, plan.base.shell);
        let cmd = JailCommand {
            argv,
            env,
            cwd: cwd.to_string(),
        }
        .encode()
        .map_err(|e| SandboxError::invalid_argument("command", e.to_string()))?;
        let n = self.rt.next_exec_id();
        let cgroup = if plan.base.cgroups.bases.is_empty() {
            None
        } else {
            let cg = plan
                .base
                .cgroups
                .create_exec(&format!("x{n}"), &plan.limits())
                .map_err(|e| {
                    tracing::error!(error = %e, "could not create the exec's cgroup");
                    SandboxError::from(JailError::Cgroup {
                        what: "create the command's cgroup",
                    })
                })?;
            Some(Arc::new(CgroupGuard(cg)))
        };
        let spec = plan.spec(
            cgroup.as_ref().map(|g| g.0.join_plan()).unwrap_or_default(),
            |c| cgroup.as_ref().is_some_and(|g| g.0.has(c)),
        );
        let child = spawn_jail(&self.rt, spec, cmd).await.map_err(|error| {
            tracing::error!(message = %error, "jail spawn failed");
            SandboxError::from(error)
        })?;
        let (handed_over, result_out) = tokio::sync::oneshot::channel::<()>();
        let on_end: Option<Box<dyn FnOnce() + Send>> = Some(Box::new(move || {
            let _ = handed_over.send(());
        }));
        let init = Arc::new(child.init);
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(n, Live::Jail(init.clone()));
        let pipe = |fd| {
            tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                .map_err(|e| internal(format!("pipe: {e}")))
        };
        let (out, err, mut status) = (
            pipe(child.stdout)?,
            pipe(child.stderr)?,
            pipe(child.status)?,
        );
        // Reaper: when init is gone the whole namespace is gone; unregister and clean up.
        {
            let live = Arc::downgrade(&self.live);
            let init = init.clone();
            let cg = cgroup.clone();
            let reaping = self.reaping.clone();
            reaping.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let removing = cg
                .as_ref()
                .is_some_and(|g| !g.0.is_pooled())
                .then(|| self.removing.clone());
            if let Some(r) = &removing {
                r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            tokio::spawn(async move {
                let _ = paddock_sys::process::wait_exit(init).await;
                if let Some(live) = live.upgrade() {
                    live.lock().unwrap_or_else(|p| p.into_inner()).remove(&n);
                }
                drop(cg);
                if let Some(r) = removing {
                    r.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
                reaping.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                reaping.1.notify_waiters();
            });
        }
        let idle_init = init.clone();
        let shell = Box::pin(async move {
            let mut rec = [0u8; StatusRecord::LEN];
            let first = status.read_exact(&mut rec).await;
            if first.is_ok() {
                // Background processes keep the jail (and its init) until they end, a reset
                // or the sandbox's eviction; when the last one is gone init says so.
                tokio::spawn(async move {
                    let mut rec = [0u8; StatusRecord::LEN];
                    if status.read_exact(&mut rec).await.is_ok()
                        && StatusRecord::parse(&rec) == Some(StatusRecord::Idle)
                    {
                        let _ = result_out.await;
                        tokio::time::sleep(IDLE_INIT_GRACE).await;
                        let _ = idle_init.kill();
                    }
                });
            }
            match first {
                Ok(_) => match StatusRecord::parse(&rec) {
                    Some(StatusRecord::ShellExited(WaitStatus::Exited(c))) => ShellEnd::Exited(c),
                    Some(StatusRecord::ShellExited(WaitStatus::Signaled(s))) => {
                        ShellEnd::Signaled(s)
                    }
                    Some(StatusRecord::SetupFailed { step, errno }) => {
                        ShellEnd::SpawnFailed(StepFailed { step, errno }.into())
                    }
                    // (Idle only ever follows the shell's record.)
                    Some(StatusRecord::Idle) | None => ShellEnd::Vanished,
                },
                Err(_) => ShellEnd::Vanished,
            }
        });
        let killer = init.clone();
        let oom_cg = cgroup.clone();
        let ctl = Control {
            shell,
            kill: Box::new(move || {
                let _ = killer.kill();
            }),
            oom_check: Box::new(move || oom_cg.as_ref().is_some_and(|g| g.0.oom_kills() > 0)),
            map_output: None,
            on_end,
            drain: self.drains.clone(),
        };
        Ok(drive(out, err, ctl, timeout, cap))
    }

    async fn exec_host(&self, req: ExecRequest) -> Result<ExecStream, SandboxError> {
        let cwd = self.cwd(&req)?;
        let (timeout, cap) = self.limits(&req);
        let o = self.rt.options();
        let command = self.table.rewrite_command(&req.command)?;
        let (host_cwd, _) = self
            .table
            .resolve_host(
                cwd.as_str(),
                WalkOptions {
                    follow_final: true,
                    create_parents: false,
                },
            )
            .map_err(|e| SandboxError::invalid_argument("cwd", e.to_string()))?;
        let env = crate::env::host_env(std::env::vars(), &o.environment, &req.env);
        let shell = if Path::new("/bin/bash").exists() {
            "/bin/bash"
        } else {
            "/bin/sh"
        };
        let mut cmd = tokio::process::Command::new(shell);
        cmd.arg("-c")
            .arg(command)
            .env_clear()
            .envs(env)
            .current_dir(host_cwd)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| SandboxError::Spawn {
            message: e.to_string(),
            step: None,
            errno: e.raw_os_error(),
        })?;
        let pgid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| internal("child has no pid"))?;
        let n = self.rt.next_exec_id();
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(n, Live::Group(pgid));
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(internal("missing pipes"));
        };
        let live = Arc::downgrade(&self.live);
        let shell = Box::pin(async move {
            let end = match child.wait().await {
                Ok(st) => {
                    use std::os::unix::process::ExitStatusExt;
                    match (st.code(), st.signal()) {
                        (Some(c), _) => ShellEnd::Exited(c),
                        (None, Some(s)) => ShellEnd::Signaled(s),
                        _ => ShellEnd::Vanished,
                    }
                }
                Err(_) => ShellEnd::Vanished,
            };
            // Background members of the group may live on: unregister once the group is empty.
            tokio::spawn(async move {
                while group_alive(pgid) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                if let Some(live) = live.upgrade() {
                    live.lock().unwrap_or_else(|p| p.into_inner()).remove(&n);
                }
            });
            end
        });
        let table = self.table.clone();
        let ctl = Control {
            shell,
            kill: Box::new(move || {
                let _ = paddock_sys::process::kill_process_group(pgid, libc::SIGKILL);
            }),
            oom_check: Box::new(|| false),
            map_output: Some(Box::new(move |b: Bytes| match std::str::from_utf8(&b) {
                Ok(s) => match table.mask_host_paths(s) {
                    std::borrow::Cow::Borrowed(_) => b,
                    std::borrow::Cow::Owned(o) => Bytes::from(o),
                },
                Err(_) => b,
            })),
            on_end: None,
            drain: self.drains.clone(),
        };
        Ok(drive(out, err, ctl, timeout, cap))
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, SandboxError>
    where
        T: Send + 'static,
        F: FnOnce(&FsOps) -> Result<T, SandboxError> + Send + 'static,
    {
        let fs = self.fs.clone();
        tokio::task::spawn_blocking(move || f(&fs))
            .await
            .map_err(|e| internal(format!("file task failed: {e}")))?
    }
}

fn set_nonblocking(fd: &std::os::fd::OwnedFd) -> std::io::Result<()> {
    paddock_sys::process::set_nonblocking(fd)
}

/// Whether any process of group `pgid` is alive (not a zombie).
fn group_alive(pgid: i32) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    rd.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // Fields after the command name: state, ppid, pgrp.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            return false;
        };
        let mut f = rest.split_whitespace();
        let state = f.next();
        let _ppid = f.next();
        f.next().and_then(|g| g.parse::<i32>().ok()) == Some(pgid) && state != Some("Z")
    })
}

/// The thread's directories, and its disk image mounted at `user-data` when it has one or
/// the runtime makes them (see `crate::disk`).
fn attach_disk(
    rt: &Runtime,
    user: &UserId,
    thread: &ThreadId,
) -> Result<Option<crate::disk::Attached>, SandboxError> {
    let dirs = rt.layout().ensure_thread_dirs(user, thread).map_err(|e| {
        tracing::error!(error = %e, "could not prepare the thread's directories");
        SandboxError::Unavailable {
            message: format!("could not prepare the directories of thread {thread}"),
        }
    })?;
    rt.disks.attach(&rt.disk, &dirs.thread).map_err(|e| {
        use crate::disk::DiskError;
        tracing::error!(error = %e, %user, %thread, "could not set up the thread's disk");
        let message = match e {
            DiskError::DoesNotFit { .. } | DiskError::Foreign | DiskError::CannotMount { .. } => {
                format!("thread {thread}: {e}")
            }
            DiskError::Io { .. } | DiskError::Tool { .. } => {
                format!("could not set up the disk of thread {thread}")
            }
        };
        SandboxError::Unavailable { message }
    })
}

impl Drop for LocalSandbox {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// An upload's received bytes are written once this many are in (or the body ended): the
/// most one upload holds in memory, and the size of each piece of blocking file IO.
const UPLOAD_FLUSH_BYTES: usize = 256 * 1024;

/// Writes `chunks` on the blocking pool and hands the upload back (dropped there, which
/// undoes it, when a write fails).
async fn write_chunks(
    mut up: paddock_fsops::Upload,
    chunks: Vec<Bytes>,
) -> Result<paddock_fsops::Upload, SandboxError> {
    tokio::task::spawn_blocking(move || {
        for c in &chunks {
            up.write(c)?;
        }
        Ok(up)
    })
    .await
    .map_err(|e| internal(format!("file task failed: {e}")))?
}

#[async_trait]
impl Sandbox for LocalSandbox {
    fn info(&self) -> SandboxInfo {
        let mounts = self.table.infos();
        SandboxInfo {
            id: self.id.clone(),
            home_dir: WORKSPACE.into(),
            backend: "local".into(),
            isolation: self.rt.isolation().as_str().into(),
            mounts,
        }
    }

    fn base_env(&self) -> Option<std::collections::BTreeMap<String, String>> {
        let o = self.rt.options();
        Some(match self.rt.isolation() {
            Isolation::Isolated => crate::env::isolated_env(&o.environment, &Default::default()),
            Isolation::None => {
                crate::env::host_env(std::env::vars(), &o.environment, &Default::default())
            }
        })
    }

    async fn ready(&self) -> Result<(), SandboxError> {
        if self.plan.is_some() && !self.rt.one_shot {
            self.jail().await?;
        }
        Ok(())
    }

    async fn exec_stream(&self, req: ExecRequest) -> Result<ExecStream, SandboxError> {
        req.validate()?;
        match self.rt.isolation() {
            Isolation::Isolated if self.rt.one_shot => self.exec_one_shot(req).await,
            Isolation::Isolated => self.exec_in_jail(req).await,
            Isolation::None => self.exec_host(req).await,
        }
    }

    async fn read_text(&self, req: ReadText) -> Result<TextContent, SandboxError> {
        self.blocking(move |fs| fs.read_text(&req)).await
    }

    async fn read_bytes(&self, req: ReadBytes) -> Result<FileStream, SandboxError> {
        let opened = self.blocking(move |fs| fs.open_read(&req)).await?;
        let (len, file_size) = (opened.len, opened.file_size);
        let shown = opened.vpath.to_string();
        let file = tokio::fs::File::from_std(opened.file);
        let stream = futures_util::stream::unfold(
            (file, len, shown),
            |(mut file, left, shown)| async move {
                if left == 0 {
                    return None;
                }
                let mut buf =
                    vec![0u8; (64 * 1024).min(usize::try_from(left).unwrap_or(usize::MAX))];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(Bytes::from(buf)), (file, left - n as u64, shown)))
                    }
                    Err(e) => Some((
                        Err(SandboxError::from_io("read", &shown, &e)),
                        (file, 0, shown),
                    )),
                }
            },
        );
        Ok(FileStream {
            len,
            file_size,
            stream: Box::pin(stream),
        })
    }

    async fn write_text(&self, req: WriteText) -> Result<WriteOutcome, SandboxError> {
        self.blocking(move |fs| fs.write_text(&req)).await
    }

    async fn write_bytes(
        &self,
        req: WriteBytes,
        mut body: ByteStream,
    ) -> Result<WriteOutcome, SandboxError> {
        // The body is received here, asynchronously: a client that trickles its upload
        // holds a task, never a blocking-pool thread. File IO happens on the pool in pieces
        // of at most UPLOAD_FLUSH_BYTES once those bytes are in.
        let mut up = self.blocking(move |fs| fs.begin_write(&req)).await?;
        let mut pending: Vec<Bytes> = Vec::new();
        let mut held = 0usize;
        loop {
            let next = body.next().await;
            let end = match next {
                Some(Ok(b)) => {
                    held += b.len();
                    pending.push(b);
                    false
                }
                Some(Err(e)) => {
                    // Abandoning the upload removes its temp file: do that IO on the pool.
                    drop(tokio::task::spawn_blocking(move || drop(up)));
                    return Err(e);
                }
                None => true,
            };
            if held >= UPLOAD_FLUSH_BYTES || (end && held > 0) {
                up = write_chunks(up, std::mem::take(&mut pending)).await?;
                held = 0;
            }
            if end {
                break;
            }
        }
        tokio::task::spawn_blocking(move || up.finish())
            .await
            .map_err(|e| internal(format!("file task failed: {e}")))?
    }

    async fn stat(&self, path: &str) -> Result<Entry, SandboxError> {
        let path = path.to_owned();
        self.blocking(move |fs| fs.stat(&path)).await
    }

    async fn list(&self, req: List) -> Result<Listing, SandboxError> {
        self.blocking(move |fs| fs.list(&req)).await
    }

    async fn glob(&self, req: Glob) -> Result<GlobOutcome, SandboxError> {
        self.blocking(move |fs| fs.glob(&req)).await
    }

    async fn grep(&self, req: Grep) -> Result<GrepOutcome, SandboxError> {
        self.blocking(move |fs| fs.grep(&req)).await
    }

    async fn str_replace(&self, req: StrReplace) -> Result<ReplaceOutcome, SandboxError> {
        self.blocking(move |fs| fs.str_replace(&req)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let u = UserId::new("alice").unwrap();
        let t = ThreadId::new("t-1").unwrap();
        let id = sandbox_id(&u, &t);
        assert_eq!(id, "local:alice:t-1");
        assert_eq!(parse_sandbox_id(&id), Some((u, t)));
        assert_eq!(parse_sandbox_id("local:a"), None);
        assert_eq!(parse_sandbox_id("local:a:b/c"), None);
        assert_eq!(parse_sandbox_id("remote:a:b"), None);
    }
}
