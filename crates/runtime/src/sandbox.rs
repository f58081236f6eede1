//! `LocalSandbox`: one (user, thread) sandbox on this host. Commands run in a fresh jail per
//! exec (see `paddock_sys::jail`), file operations go through `paddock-fsops` over the same
//! mount table, so a path means the same thing to a command and to the file API.
//!
//! Choice of namespaces: each exec gets its own user, mount, pid, ipc, uts and cgroup
//! namespaces, torn down with it, so nothing but files and the network survives between
//! execs and one exec costs a single clone. The network is per *sandbox*: when Paddock runs
//! as root, the sandbox creates one loopback-only network namespace when it is prepared and
//! every exec joins it (the spawner thread enters it just for the clone). So a server started
//! in the background by one exec (`python -m http.server &`) is reachable on 127.0.0.1 by the
//! next one, as agents expect, and no network namespace is created and torn down per exec
//! (that churn is the most expensive part of a fresh namespace set). Without root, joining a
//! kept namespace is not permitted, so each exec gets a fresh one and background servers are
//! only reachable from the exec that started them. `network: host` joins nothing.
//!
//! Prebuilt jails (`prebuild_jail`, the default): a jail does not need its command until
//! the end of its build, so once an exec's stream has ended the sandbox builds the next
//! exec's jail in the background (`JailFactory::build`), and the next exec only sends its
//! command to the waiting init — or, with `prebuild_shell`, to the jail's shell, already
//! started and waiting in the shell preload (`paddock_sys::jail::SHELL_PRELOAD`). An exec
//! that finds the build still running awaits it; one that finds the jail dead (killed from
//! outside) builds a fresh one.
//!
//! Invariants: every running exec is registered in `live` until its process tree is gone,
//! and [`LocalSandbox::kill_all`] (reset, shutdown, drop) kills every one of them and the
//! prebuilt jail; a prebuilt jail is never counted as running and is used by one exec only.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use paddock_core::mount::{Mount, MountKind, WORKSPACE, WalkOptions};
use paddock_core::sandbox::*;
use paddock_core::{MountTable, Sandbox, SandboxError, ThreadId, UserId, VirtualPath};
use paddock_fsops::{FsOps, FsOptions};
use paddock_sys::PidFd;
use paddock_sys::cgroup::{CgroupLimits, Controller, ExecCgroup};
use paddock_sys::jail::{
    EncodedCommand, JailChild, JailCommand, JailSpec, NetMode, PendingJail, Rlimit, StatusRecord,
};
use paddock_sys::landlock::LandlockPlan;
use paddock_sys::mountplan::{
    DataBind, JailFile, MountInputs, MountPlan, locked_flags_from_statvfs, plan_mounts,
};
use paddock_sys::process::WaitStatus;
use tokio::io::AsyncReadExt;

use crate::drive::{Control, ShellEnd, drive};
use crate::options::{Isolation, Network};
use crate::runtime::{JailBase, Runtime, build_jail, spawn_jail};

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
    /// The init of an exec's pid namespace.
    Jail(Arc<PidFd>),
    /// A process group (`isolation: none`).
    Group(i32),
}

/// Builds this sandbox's jails: everything but the command is fixed per sandbox.
#[derive(Clone)]
struct JailFactory {
    rt: Arc<Runtime>,
    base: Arc<JailBase>,
    mounts: Arc<MountPlan>,
    landlock: Option<Arc<LandlockPlan>>,
    ids: (u32, u32),
    /// The sandbox's own loopback-only network, kept across execs (root Paddock,
    /// `network: none`); `None` means a fresh one per exec or the host's.
    netns: Option<Arc<std::os::fd::OwnedFd>>,
}

impl JailFactory {
    fn base(&self) -> &JailBase {
        &self.base
    }

    /// Creates exec number `n`'s cgroup with the configured limits.
    fn cgroup(&self, n: u64) -> Result<Option<Arc<CgroupGuard>>, SandboxError> {
        let base = self.base();
        if base.cgroups.bases.is_empty() {
            return Ok(None);
        }
        let cg = base
            .cgroups
            .create_exec(&format!("x{n}"), &self.cgroup_limits())
            .map_err(|e| {
                tracing::error!(error = %e, "could not create the exec's cgroup");
                SandboxError::Spawn {
                    message: "could not create the command's cgroup".into(),
                }
            })?;
        Ok(Some(Arc::new(CgroupGuard(cg))))
    }

    fn cgroup_limits(&self) -> CgroupLimits {
        let o = self.rt.options();
        let nz = |v: u64| (v > 0).then_some(v);
        CgroupLimits {
            memory_bytes: nz(o.limits.memory_bytes),
            pids: nz(o.limits.pids),
            cpus: binding_cpus(o.limits.cpus, self.base().online_cpus),
        }
    }

    /// The jail of one exec, in `cgroup`.
    fn spec(&self, cgroup: Option<&CgroupGuard>) -> JailSpec {
        let base = self.base();
        let o = self.rt.options();
        let lim = self.cgroup_limits();
        let has = |c: Controller| cgroup.is_some_and(|g| g.0.has(c));
        let mut rlimits = vec![Rlimit {
            resource: libc::RLIMIT_CORE as i32,
            value: 0,
        }];
        if o.limits.nofile > 0 {
            rlimits.push(Rlimit {
                resource: libc::RLIMIT_NOFILE as i32,
                value: o.limits.nofile.min(base.nofile_hard),
            });
        }
        if let (Some(p), false) = (lim.pids, has(Controller::Pids)) {
            rlimits.push(Rlimit {
                resource: libc::RLIMIT_NPROC as i32,
                value: p,
            });
        }
        if let (Some(m), false) = (lim.memory_bytes, has(Controller::Memory)) {
            rlimits.push(Rlimit {
                resource: libc::RLIMIT_AS as i32,
                value: m,
            });
        }
        JailSpec {
            mounts: (*self.mounts).clone(),
            landlock: self.landlock.as_deref().cloned(),
            seccomp: base.seccomp.clone(),
            uid: self.ids.0,
            gid: self.ids.1,
            privileged: base.privileged,
            net: match (&self.netns, o.network) {
                (_, Network::Host) => NetMode::Host,
                (Some(ns), Network::None) => NetMode::Join(ns.clone()),
                (None, Network::None) => NetMode::PerExec,
            },
            hostname: "sandbox".into(),
            program: base.shell.into(),
            rlimits,
            cgroup: cgroup.map(|g| g.0.join_plan()).unwrap_or_default(),
            cap_last_cap: base.cap_last_cap,
            waiting_shell: false,
            shell_locale: None,
            idmap_userns: Vec::new(),
        }
    }

    /// A jail waiting for its command.
    async fn build(&self) -> Result<Warm, String> {
        let n = self.rt.next_exec_id();
        let cgroup = self.cgroup(n).map_err(|e| e.to_string())?;
        let mut spec = self.spec(cgroup.as_deref());
        if self.rt.prebuilds_shell() {
            spec.waiting_shell = true;
            spec.shell_locale = crate::env::likely_locale(&self.rt.options().environment);
        }
        let pending = build_jail(spec).await?;
        Ok(Warm { pending, cgroup, n })
    }
}

/// A jail built ahead of time for the sandbox's next exec. Dropping it kills its init, then
/// removes its cgroup (fields drop in order).
struct Warm {
    pending: PendingJail,
    cgroup: Option<Arc<CgroupGuard>>,
    n: u64,
}

/// Starts building the next exec's jail in the background, unless a build is already there.
/// A failure is only logged by the exec that takes it, which then builds its own jail and
/// reports.
fn prebuild(slot: &Arc<Mutex<WarmSlot>>, factory: JailFactory) {
    // Called from a driver task, so normally inside a runtime; outside one (a driver dropped
    // by a runtime being torn down) there is nothing to build for.
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_some() {
        return;
    }
    let generation = PREBUILT_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ttl = Duration::from_secs(factory.rt.options().prebuilt_jail_idle_secs);
    let build = rt.spawn(async move { factory.build().await });
    // An unused jail is not kept forever: its init holds a copy-on-write snapshot of
    // Paddock's memory, which turns into private memory as Paddock's heap changes.
    let weak = Arc::downgrade(slot);
    let expiry = rt.spawn(async move {
        tokio::time::sleep(ttl).await;
        let Some(slot) = weak.upgrade() else {
            return;
        };
        let expired = {
            let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
            if s.as_ref().is_some_and(|p| p.generation == generation) {
                s.take()
            } else {
                None
            }
        };
        drop(expired);
    });
    *guard = Some(Prebuilt {
        generation,
        build,
        expiry: expiry.abort_handle(),
    });
}

static PREBUILT_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The next exec's jail: its build task (maybe finished) and the timer that drops it unused.
/// Whoever takes the build handle gets the jail; a handle dropped untaken drops the jail
/// (killing it) when the task ends.
struct Prebuilt {
    generation: u64,
    build: tokio::task::JoinHandle<Result<Warm, String>>,
    expiry: tokio::task::AbortHandle,
}

impl Prebuilt {
    /// The build, with the expiry timer stopped.
    fn take_build(self) -> tokio::task::JoinHandle<Result<Warm, String>> {
        self.expiry.abort();
        self.build
    }
}

/// Sends `cmd` to a prebuilt jail. A message that fits a pipe buffer is written at once;
/// a larger one blocks until init has read it, so it is written off the async threads.
async fn send_command(
    pending: PendingJail,
    cmd: &EncodedCommand,
) -> Result<JailChild, paddock_sys::jail::SpawnError> {
    const PIPE_BUFFER: usize = 64 * 1024;
    if cmd.as_bytes().len() <= PIPE_BUFFER {
        return pending.start(cmd);
    }
    let cmd = cmd.clone();
    tokio::task::spawn_blocking(move || pending.start(&cmd))
        .await
        .unwrap_or_else(|e| {
            Err(paddock_sys::jail::SpawnError::Os {
                step: "send the command",
                source: std::io::Error::other(e.to_string()),
            })
        })
}

type WarmSlot = Option<Prebuilt>;

/// How long an init with nothing left in its jail lives on after the result was handed
/// over: its teardown (about a millisecond of kernel work) then runs after the caller has
/// the result, not beside the hand-over on a small host.
const IDLE_INIT_GRACE: Duration = Duration::from_millis(5);

/// Removes the exec's cgroup when the last holder (driver or reaper) is done with it.
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
    jail: Option<JailFactory>,
    /// The next exec's jail, when `prebuild_jail` is on.
    warm: Arc<Mutex<WarmSlot>>,
    live: Arc<Mutex<HashMap<u64, Live>>>,
    /// Reapers still to finish (each removes its exec's cgroup when init is gone).
    reaping: Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>,
    /// Of those, the ones whose cgroup is to be removed once their init is gone (a reusable
    /// slot of the pool is not; see `paddock_sys::cgroup::CgroupSet::flat`).
    removing: Arc<std::sync::atomic::AtomicUsize>,
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

/// Chowns `dir` and everything below it (not following symlinks) when `dir` is not already
/// owned by `uid:gid`. A thread created before a uid change, or by an older Paddock, becomes
/// writable by its sandbox again; the common case costs one stat.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(dir)?;
    if md.uid() == uid && md.gid() == gid {
        return Ok(());
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        paddock_sys::process::lchown(&d, uid, gid)?;
        if std::fs::symlink_metadata(&d)?.is_dir() {
            for e in std::fs::read_dir(&d)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(())
}

impl LocalSandbox {
    /// Prepares the thread's directories, ownership and jail plan (blocking filesystem work).
    pub fn prepare(
        rt: Arc<Runtime>,
        user: &UserId,
        thread: &ThreadId,
        custom: Vec<Mount>,
    ) -> Result<Self, SandboxError> {
        let table = MountTable::for_thread(rt.layout(), user, thread, custom).map_err(|e| {
            tracing::error!(error = %e, "could not prepare the thread's directories");
            SandboxError::Unavailable {
                message: format!("could not prepare the directories of thread {thread}"),
            }
        })?;
        let o = rt.options();
        let range = o.uid_range.map(|r| paddock_sys::uidmap::IdRange {
            start: r.start,
            count: r.count,
        });
        let ids = paddock_sys::uidmap::choose_ids(
            paddock_sys::process::euid(),
            paddock_sys::process::egid(),
            (o.sandbox_uid, o.sandbox_gid),
            range,
            user.as_str(),
            thread.as_str(),
        )
        .map_err(|e| SandboxError::invalid_argument("sandbox_uid", e.to_string()))?;
        let mut owner = None;
        let jail = match &rt.jail {
            None => None,
            Some(base) => {
                if base.privileged {
                    owner = Some(ids);
                    for m in table.mounts() {
                        if matches!(
                            m.kind,
                            MountKind::UserData
                                | MountKind::Workspace
                                | MountKind::Uploads
                                | MountKind::Outputs
                        ) {
                            chown_tree(&m.host, ids.0, ids.1).map_err(|e| {
                                tracing::error!(error = %e, path = %m.host.display(), "chown of thread data failed");
                                internal(format!("could not give {} to the sandbox user", m.container))
                            })?;
                        }
                    }
                }
                // Mount points of nested mounts must exist in the parent's host directory:
                // a read-only parent cannot get them from inside the jail.
                for m in table.mounts() {
                    let parent = table
                        .mounts()
                        .iter()
                        .filter(|p| {
                            p.container != m.container && m.container.starts_with(&p.container)
                        })
                        .max_by_key(|p| p.container.depth());
                    if let Some(p) = parent {
                        let rel = m.container.strip_prefix(&p.container).unwrap_or_default();
                        let point = p.host.join(rel);
                        // The mount's own directory (workspace inside user-data) exists.
                        if point == m.host {
                            continue;
                        }
                        std::fs::create_dir_all(point).map_err(|e| {
                            tracing::error!(error = %e, "could not create a mount point");
                            internal(format!(
                                "could not create the mount point of {}",
                                m.container
                            ))
                        })?;
                    }
                }
                let mut binds = Vec::new();
                for m in table.mounts() {
                    let flags = paddock_sys::process::statvfs_flags(&m.host).map_err(|_| {
                        internal(format!(
                            "could not inspect the directory of {}",
                            m.container
                        ))
                    })?;
                    binds.push(DataBind {
                        host: m.host.clone(),
                        jail: m.container.to_string(),
                        read_only: m.read_only,
                        locked: locked_flags_from_statvfs(flags),
                        idmap: None,
                    });
                }
                let mounts = plan_mounts(&MountInputs {
                    facts: base.facts.clone(),
                    binds,
                    tmp_size_bytes: o.limits.tmp_size_bytes,
                    staging: "/tmp".into(),
                    files: if rt.prebuilds_shell() {
                        vec![JailFile {
                            path: paddock_sys::jail::SHELL_PRELOAD_PATH.into(),
                            data: paddock_sys::jail::SHELL_PRELOAD,
                        }]
                    } else {
                        Vec::new()
                    },
                    etc_files: crate::etc::etc_files(rt.layout().root(), ids.0, ids.1).map_err(
                        |e| {
                            tracing::error!(error = %e, "could not write the sandbox user's account files");
                            internal("could not write the sandbox user's account files")
                        },
                    )?,
                })
                .map_err(|e| SandboxError::invalid_argument("mounts", e.to_string()))?;
                let landlock = paddock_sys::landlock::plan(
                    base.landlock_abi,
                    &mounts.writable_dirs,
                    &mounts.device_files,
                );
                let mut netns = None;
                if base.privileged && o.network == Network::None && !rt.one_shot {
                    let ns = paddock_sys::jail::create_netns().map_err(|e| {
                        tracing::error!(error = %e, "could not create the sandbox's network namespace");
                        internal("could not create the sandbox's network namespace")
                    })?;
                    netns = Some(Arc::new(ns));
                }
                Some(JailFactory {
                    rt: rt.clone(),
                    base: base.clone(),
                    mounts: Arc::new(mounts),
                    landlock: landlock.map(Arc::new),
                    ids,
                    netns,
                })
            }
        };
        let table = Arc::new(table);
        let fs = FsOps::new(
            table.clone(),
            FsOptions {
                owner,
                ..FsOptions::default()
            },
        );
        Ok(Self {
            id: sandbox_id(user, thread),
            rt,
            table,
            fs,
            ids,
            jail,
            warm: Arc::default(),
            live: Arc::new(Mutex::new(HashMap::new())),
            reaping: Arc::default(),
            removing: Arc::default(),
        })
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

    /// Host pids of the inits of running execs (isolated) or process-group ids (none).
    pub fn running(&self) -> Vec<i32> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.values()
            .map(|l| match l {
                Live::Jail(p) => p.pid(),
                Live::Group(g) => *g,
            })
            .collect()
    }

    /// The runtime this sandbox runs on.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    /// Waits (at most `limit`) until every exec's process tree is gone and its cgroup
    /// removed; true when that happened. Used after [`Self::kill_all`] by a process about to
    /// exit, so it leaves nothing behind.
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
    /// someone else ([`Runtime::orphans_reaped`]) and no cgroup waits to be removed. Then
    /// [`Self::settle`] would only wait for the kernel to dismantle the namespaces (about a
    /// millisecond: the mount tree, the process's memory, its `/proc` entries).
    pub fn teardown_can_be_left_to_the_kernel(&self) -> bool {
        self.rt.orphans_reaped() && self.removing.load(std::sync::atomic::Ordering::SeqCst) == 0
    }

    /// Kills every running command of this sandbox, including background processes, and
    /// the jail prebuilt for its next command.
    pub fn kill_all(&self) {
        let warm = self
            .warm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map(Prebuilt::take_build);
        // A finished build's jail is dropped (killed, then its cgroup removed) with the
        // handle; a running one is left to finish and its jail dropped then, in that order.
        // (Cancelling it could remove the cgroup before the jail is gone.)
        drop(warm);
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

    async fn exec_isolated(&self, req: ExecRequest) -> Result<ExecStream, SandboxError> {
        let Some(factory) = &self.jail else {
            return Err(internal("isolated exec without a jail"));
        };
        let cwd = self.cwd(&req)?;
        let (timeout, cap) = self.limits(&req);
        let o = self.rt.options();
        let env = crate::env::isolated_env(&o.environment, &req.env);
        let shell = factory.base().shell;
        let cmd = JailCommand {
            argv: vec![
                shell.rsplit('/').next().unwrap_or("sh").into(),
                "-c".into(),
                req.command.clone(),
            ],
            env: env.into_iter().collect(),
            cwd: cwd.to_string(),
        }
        .encode()
        .map_err(|e| SandboxError::invalid_argument("command", e.to_string()))?;
        // A jail built ahead of time only needs its command; if its init is gone (killed
        // from outside, or its setup failed), build a fresh one now, which reports any
        // systematic failure.
        // A build still in flight is awaited: it finishes sooner than a new one would.
        let warm = self
            .warm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map(Prebuilt::take_build);
        let mut started = None;
        if let Some(task) = warm {
            match task.await {
                Ok(Ok(Warm { pending, cgroup, n })) => match send_command(pending, &cmd).await {
                    Ok(child) => started = Some((child, cgroup, n)),
                    Err(e) => {
                        tracing::debug!(error = %e, "prebuilt jail unusable; building one now")
                    }
                },
                Ok(Err(e)) => tracing::warn!(error = %e, "could not prebuild the jail"),
                Err(e) => tracing::debug!(error = %e, "the prebuild task ended early"),
            }
        }
        let (child, cgroup, n) = match started {
            Some(s) => s,
            None => {
                let n = self.rt.next_exec_id();
                let cgroup = factory.cgroup(n)?;
                let spec = factory.spec(cgroup.as_deref());
                let child = spawn_jail(&self.rt, spec, cmd).await.map_err(|message| {
                    tracing::error!(%message, "jail spawn failed");
                    SandboxError::Spawn { message }
                })?;
                (child, cgroup, n)
            }
        };
        // The next jail is built once this command has ended, not while it runs: on
        // a small host the build would compete with the command for the CPU. An agent's
        // next call comes later than that; a caller running commands back to back waits
        // for the build in flight, which is never slower than building anew.
        // Once the result is handed over, an init with nothing left in its jail is killed
        // (see `StatusRecord::Idle`): its teardown then no longer delays the result.
        let (handed_over, result_out) = tokio::sync::oneshot::channel::<()>();
        let prebuilding = self
            .rt
            .prebuilds()
            .then(|| (Arc::downgrade(&self.warm), factory.clone()));
        let on_end: Option<Box<dyn FnOnce() + Send>> = Some(Box::new(move || {
            let _ = handed_over.send(());
            if let Some((slot, factory)) = prebuilding
                && let Some(slot) = slot.upgrade()
            {
                prebuild(&slot, factory);
            }
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
                        ShellEnd::SpawnFailed(format!(
                            "{step} failed: {}",
                            std::io::Error::from_raw_os_error(errno)
                        ))
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

impl Drop for LocalSandbox {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Feeds an async byte stream to a blocking reader (`FsOps::write_from_reader`).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, SandboxError>>,
    cur: Bytes,
    failed: Arc<Mutex<Option<SandboxError>>>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => {
                    *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    return Err(std::io::Error::other("upload stream failed"));
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
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

    async fn exec_stream(&self, req: ExecRequest) -> Result<ExecStream, SandboxError> {
        req.validate()?;
        match self.rt.isolation() {
            Isolation::Isolated => self.exec_isolated(req).await,
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
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let failed = Arc::new(Mutex::new(None));
        let mut reader = ChannelReader {
            rx,
            cur: Bytes::new(),
            failed: failed.clone(),
        };
        let task = self.blocking(move |fs| fs.write_from_reader(&req, &mut reader));
        let feed = async move {
            while let Some(item) = body.next().await {
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        };
        let (res, ()) = tokio::join!(task, feed);
        if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        res
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

/// The cpu limit worth a cgroup: none for 0 (no limit) or for at least every online CPU,
/// which the quota could never hold back.
fn binding_cpus(cpus: f64, online: Option<u32>) -> Option<f64> {
    (cpus > 0.0 && online.is_none_or(|n| cpus < f64::from(n))).then_some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_limits_only_where_they_can_bind() {
        assert_eq!(binding_cpus(0.0, Some(4)), None);
        assert_eq!(binding_cpus(1.5, Some(4)), Some(1.5));
        assert_eq!(binding_cpus(4.0, Some(4)), None);
        assert_eq!(binding_cpus(2.0, Some(2)), None);
        assert_eq!(binding_cpus(2.0, None), Some(2.0));
    }

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

    #[test]
    fn chown_tree_only_when_needed() {
        if paddock_sys::process::euid() != 0 {
            eprintln!("SKIPPED: chown needs root");
            return;
        }
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("ws");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("link")).unwrap();
        chown_tree(&d, 951_123, 951_124).unwrap();
        assert_eq!(std::fs::metadata(d.join("sub/f")).unwrap().uid(), 951_123);
        assert_eq!(
            std::fs::symlink_metadata(d.join("link")).unwrap().uid(),
            951_123
        );
        assert_eq!(
            std::fs::metadata("/etc/passwd").unwrap().uid(),
            0,
            "symlink target untouched"
        );
    }
}
