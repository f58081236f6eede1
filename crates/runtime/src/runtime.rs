//! The process-wide part of the local runtime: options, the data layout, and — for
//! `isolated` — the facts and artefacts every jail shares (host system directories, the
//! compiled seccomp program, the landlock ABI, the cgroup subtree) and the spawner thread.
//!
//! Invariant: a [`Runtime`] with `isolation: isolated` exists only after the kernel was
//! probed and can provide every required layer; otherwise construction fails with a hint.
//! The spawner is one long-lived thread because init's parent-death signal is tied to the
//! thread that cloned it: a pool thread exiting would kill every sandbox it had started.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use paddock_core::DataLayout;
use paddock_sys::cgroup::{CgroupSet, Controller};

use crate::error::JailError;
use crate::probecache::Orphans;
use paddock_sys::jail::{BuildingSandbox, EncodedCommand, JailChild, JailSpec, SpawnError};
use paddock_sys::mountplan::HostFacts;
use paddock_sys::probe::{Action, probe};

use crate::options::{Isolation, Network, RuntimeOptions};

/// Errors creating the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Bad options.
    #[error(transparent)]
    Options(#[from] crate::options::OptionsError),
    /// A kernel feature `isolated` needs is missing.
    #[error("isolation: isolated is not available: {feature} failed ({detail})\n\nhint: {hint}")]
    Unsupported {
        /// The feature.
        feature: &'static str,
        /// The probe's error.
        detail: String,
        /// What to do.
        hint: &'static str,
    },
    /// A disk quota is configured and cannot be enforced on this host.
    #[error("sandbox.disk_quota_bytes cannot be enforced: {detail}\n\nhint: {hint}")]
    DiskQuota {
        /// What is missing.
        detail: String,
        /// What to do.
        hint: &'static str,
    },
    /// Something else on the host.
    #[error("{what}: {source}")]
    Host {
        /// What failed.
        what: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Shared state of the isolated mode.
#[derive(Debug)]
pub(crate) struct JailBase {
    pub facts: HostFacts,
    pub seccomp: Arc<paddock_sys::seccomp::BpfProgram>,
    /// The filter of a sandbox's init (allows `clone3`, which init's children refuse
    /// themselves; see `paddock_sys::seccomp::build_init_program`).
    pub seccomp_init: Arc<paddock_sys::seccomp::BpfProgram>,
    pub landlock_abi: i32,
    pub cgroups: CgroupSet,
    pub cap_last_cap: u32,
    pub privileged: bool,
    pub shell: &'static str,
    /// Whether the shell is dynamically linked, so a prebuilt jail can start it before its
    /// command (see `RuntimeOptions::prebuild_shell`); not looked at by one-shot runtimes.
    pub shell_takes_preload: bool,
    pub nofile_hard: u64,
    /// CPUs online when the runtime started: a cpu limit of at least this many binds
    /// nothing, so no cpu cgroup is made for it.
    pub online_cpus: Option<u32>,
    /// Processes this one-shot process leaves behind are reaped by whoever adopts them, so
    /// it may exit before its jail is torn down (see [`Runtime::orphans_reaped`]).
    pub orphans_reaped: bool,
    /// The cgroups of a one-shot runtime, not yet swept for leftovers of dead Paddock
    /// processes.
    pub unswept: Option<paddock_sys::cgroup::Layout>,
}

/// Removes cgroups left behind by Paddock processes that are gone.
fn sweep_stale(layout: &paddock_sys::cgroup::Layout) {
    let swept = paddock_sys::cgroup::sweep_stale(layout, |pid| {
        paddock_sys::process::pid_exists(pid as i32)
    });
    if swept.processes > 0 {
        tracing::warn!(
            processes = swept.processes,
            "killed jail processes left by Paddock processes that are gone"
        );
    }
    if swept.subtrees > 0 {
        tracing::info!(
            subtrees = swept.subtrees,
            "removed cgroup subtrees of Paddock processes that are gone"
        );
    }
}

/// The runtime shared by every sandbox of one provider.
#[derive(Debug)]
pub struct Runtime {
    pub(crate) opts: RuntimeOptions,
    pub(crate) layout: DataLayout,
    pub(crate) jail: Option<Arc<JailBase>>,
    /// One command per process (see [`Runtime::one_shot`]).
    pub(crate) one_shot: bool,
    /// Per-sandbox host ids (a root Paddock with `uid_range`): no two live sandboxes share
    /// a uid, so none can spend another's per-user kernel counters.
    pub(crate) ids: Option<crate::ids::IdAllocator>,
    /// The disk quota of every thread's data (see `crate::disk`).
    pub(crate) disk: crate::disk::DiskQuota,
    /// The thread images this runtime has mounted.
    pub(crate) disks: crate::disk::Disks,
}

/// The warnings for controllers without a usable cgroup: one per distinct cause, naming the
/// controllers it hit and what stands in for each (controllers that share a cause, as all of
/// them do in a shared cgroup v2, would otherwise repeat the same long message).
fn cgroup_warnings(
    failed: &[(Controller, paddock_sys::cgroup::CgroupError)],
    has: impl Fn(Controller) -> bool,
) -> Vec<String> {
    let instead = |c: Controller| match c {
        Controller::Memory => "memory is limited with RLIMIT_AS and OOM kills are not reported",
        Controller::Pids => "processes are limited with RLIMIT_NPROC (per host uid)",
        Controller::Cpu => "cpu is not limited",
    };
    let describe = |cs: &[Controller]| {
        let names: Vec<&str> = cs.iter().map(|c| c.name()).collect();
        let fallbacks: Vec<&str> = cs.iter().map(|c| instead(*c)).collect();
        (names.join(", "), fallbacks.join("; "))
    };
    let mut causes: Vec<(String, Vec<Controller>)> = Vec::new();
    for (c, e) in failed {
        let cause = e.to_string();
        match causes.iter_mut().find(|(k, _)| *k == cause) {
            Some((_, cs)) => cs.push(*c),
            None => causes.push((cause, vec![*c])),
        }
    }
    let mut out: Vec<String> = causes
        .iter()
        .map(|(cause, cs)| {
            let (names, fallbacks) = describe(cs);
            format!("cgroup {names} unusable ({cause}); falling back to rlimits: {fallbacks}")
        })
        .collect();
    let missing: Vec<Controller> = Controller::ALL
        .into_iter()
        .filter(|c| !has(*c) && !failed.iter().any(|(f, _)| f == c))
        .collect();
    if !missing.is_empty() {
        let (names, fallbacks) = describe(&missing);
        let (noun, verb) = if missing.len() == 1 {
            ("controller", "is")
        } else {
            ("controllers", "are")
        };
        out.push(format!(
            "no cgroup {names} {noun} {verb} mounted for this process: {fallbacks}"
        ));
    }
    out
}

/// How long an orphan left to find out whether orphans are reaped may stay unreaped before
/// the answer is no (an adopter that reaps on a timer takes a second or two).
const ORPHAN_GRACE_SECS: u64 = 10;

/// What to record next about orphans being reaped, if anything changed: leave one when
/// nothing is known, and look at the one left before.
fn next_orphan_fact(known: Orphans) -> Option<Orphans> {
    use paddock_sys::process::{OrphanState, leave_orphan, orphan_state};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match known {
        Orphans::Reaped(_) => None,
        Orphans::Unknown => match leave_orphan() {
            Ok(orphan) => Some(Orphans::Left { orphan, at: now }),
            Err(e) => {
                tracing::debug!(error = %e, "could not leave an orphan to see whether orphans are reaped");
                None
            }
        },
        Orphans::Left { orphan, at } => match orphan_state(&orphan) {
            OrphanState::Reaped => Some(Orphans::Reaped(true)),
            OrphanState::Waiting if now.saturating_sub(at) >= ORPHAN_GRACE_SECS => {
                tracing::warn!(
                    pid = orphan.pid,
                    "processes left behind are not reaped here (pid 1 of this pid namespace never waits for them): every `paddock exec` waits for its jail to be torn down; in a container, run an init as pid 1 (`docker run --init`)"
                );
                Some(Orphans::Reaped(false))
            }
            OrphanState::Waiting => None,
        },
    }
}

/// Exec numbers are process-wide: several runtimes in one process (tests, a server with two
/// providers) share the cgroup hierarchy, and two execs must never share a cgroup.
static EXEC_COUNTER: AtomicU64 = AtomicU64::new(0);
/// Distinguishes the cgroup subtrees of several runtimes in one process.
static RUNTIME_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The shell sandboxed commands run in: bash when the host's /usr has it.
fn pick_shell() -> &'static str {
    if std::path::Path::new("/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    }
}

/// Required probes of `isolated`: (feature, clone flags, action, hint).
fn required_probes(network: Network) -> Vec<(&'static str, i32, Action, &'static str)> {
    let ns = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    let mut v = vec![
        (
            "user namespaces",
            libc::CLONE_NEWUSER,
            Action::Nothing,
            "enable unprivileged user namespaces (sysctl user.max_user_namespaces > 0; on Debian kernel.unprivileged_userns_clone=1; check AppArmor's userns restriction), or run with isolation: none",
        ),
        (
            "mount, pid, ipc and uts namespaces with pivot_root",
            ns,
            Action::PivotRoot,
            "the kernel or a container runtime forbids mounts in a user namespace; run Paddock outside such a container or with isolation: none",
        ),
        (
            "procfs in a new pid namespace",
            ns,
            Action::Proc,
            "a masked /proc prevents mounting a fresh one; run Paddock with an unmasked /proc",
        ),
        (
            "seccomp filters",
            0,
            Action::Seccomp,
            "the kernel needs CONFIG_SECCOMP_FILTER",
        ),
    ];
    if network == Network::None {
        v.push((
            "network namespaces",
            libc::CLONE_NEWUSER | libc::CLONE_NEWNET,
            Action::Loopback,
            "network namespaces are required for network: none; enable CONFIG_NET_NS or set network: host",
        ));
    }
    v
}

impl Runtime {
    /// Builds the runtime for `data_dir`, probing the kernel for `isolated`.
    pub fn new(
        data_dir: impl Into<PathBuf>,
        opts: RuntimeOptions,
    ) -> Result<Arc<Self>, RuntimeError> {
        Self::build(DataLayout::new(data_dir.into()), opts, false, false)
    }

    /// [`Runtime::new`] over a layout (users' data in a gateway's state root, see
    /// [`DataLayout::with_gateway_root`]).
    pub fn with_layout(
        layout: DataLayout,
        opts: RuntimeOptions,
    ) -> Result<Arc<Self>, RuntimeError> {
        Self::build(layout, opts, false, false)
    }

    /// The runtime of `paddock serve`, whose sandboxes belong to many tenants: as
    /// [`Runtime::with_layout`], and the default disk quota applies (see `crate::disk`);
    /// elsewhere (one sandbox per process, an embedding, a one-shot exec) only a configured
    /// one does.
    pub fn server(layout: DataLayout, opts: RuntimeOptions) -> Result<Arc<Self>, RuntimeError> {
        Self::build(layout, opts, false, true)
    }

    /// The runtime of a process that runs one command and exits (`paddock exec`), and so
    /// skips what only a long-lived process needs: no jail is prebuilt; each exec gets a
    /// fresh loopback-only network instead of a kept one (nothing could use it after the
    /// process is gone); exec cgroups sit right beside the process's own cgroup instead of
    /// in a subtree of their own; and jails are cloned on the calling thread, not on the
    /// spawner thread, so drive it from the thread that outlives its jails (the main thread
    /// of a current-thread tokio runtime).
    pub fn one_shot(
        data_dir: impl Into<PathBuf>,
        opts: RuntimeOptions,
    ) -> Result<Arc<Self>, RuntimeError> {
        Self::build(DataLayout::new(data_dir.into()), opts, true, false)
    }

    fn build(
        layout: DataLayout,
        opts: RuntimeOptions,
        one_shot: bool,
        default_quota: bool,
    ) -> Result<Arc<Self>, RuntimeError> {
        opts.validate()?;
        // A long-lived runtime proves with a real image that images work here; a one-shot
        // process only makes the cheap checks (its first attach fails loudly otherwise).
        let probe_dir = (!one_shot).then(|| layout.root().to_path_buf());
        let disk = crate::disk::resolve(&opts, &layout, probe_dir.as_deref(), default_quota)
            .map_err(|(detail, hint)| RuntimeError::DiskQuota { detail, hint })?;
        if disk.active()
            || !default_quota
            || opts.disk_quota_bytes == Some(0)
            || opts.disk_quota_mode != crate::options::DiskQuotaMode::Auto
        {
            tracing::info!("disk quota: {}", disk.reason);
        } else {
            tracing::warn!("disk quota: {}", disk.reason);
        }
        if !one_shot && paddock_sys::process::euid() == 0 {
            let swept = crate::disk::sweep(&layout);
            if swept > 0 {
                tracing::info!(
                    swept,
                    "unmounted disk images of threads left mounted by Paddock processes that are gone"
                );
            }
        }
        let jail = match opts.isolation {
            Isolation::None => {
                tracing::warn!(
                    "sandbox isolation is `none`: commands run as plain host processes with Paddock's privileges; \
                     use it only where namespaces are unavailable"
                );
                None
            }
            Isolation::Isolated => Some(Arc::new(Self::jail_base(&opts, layout.root(), one_shot)?)),
        };
        let ids = match (&jail, opts.uid_range) {
            (Some(_), Some(r)) if paddock_sys::process::euid() == 0 => {
                Some(crate::ids::IdAllocator::new(r.start, r.count))
            }
            _ => None,
        };
        Ok(Arc::new(Self {
            opts,
            layout,
            jail,
            one_shot,
            ids,
            disk,
            disks: crate::disk::Disks::default(),
        }))
    }

    /// Whether a sandbox's jail is built as soon as the sandbox is prepared.
    pub(crate) fn prebuilds(&self) -> bool {
        self.opts.prebuild_jail && !self.one_shot
    }

    /// Whether jails keep a shell started ahead of the next command.
    pub(crate) fn prebuilds_shell(&self) -> bool {
        !self.one_shot
            && self.opts.prebuild_shell
            && self.jail.as_ref().is_some_and(|b| b.shell_takes_preload)
    }

    fn jail_base(
        opts: &RuntimeOptions,
        data_root: &Path,
        one_shot: bool,
    ) -> Result<JailBase, RuntimeError> {
        // One child checks everything; only when it fails do the single probes run, to name
        // the missing feature.
        let mut all = libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS;
        if opts.network == Network::None {
            all |= libc::CLONE_NEWNET;
        }
        let cache = crate::probecache::ProbeCache::new(data_root, opts.network == Network::None);
        let hit = cache.lookup();
        let cached = hit.is_some();
        let combined = if cached {
            Ok(())
        } else {
            probe(all, Action::Jail)
        };
        for (feature, flags, action, hint) in required_probes(opts.network) {
            if combined.is_ok() {
                break;
            }
            if let Err(e) = probe(flags, action) {
                return Err(RuntimeError::Unsupported {
                    feature,
                    detail: e.to_string(),
                    hint,
                });
            }
        }
        if let Err(e) = combined {
            return Err(RuntimeError::Unsupported {
                feature: "the combined jail probe",
                detail: e.to_string(),
                hint: "each feature works alone but not together; run `paddock doctor` and report it",
            });
        }
        let host_err = |source| RuntimeError::Host {
            what: "inspect system directories",
            source,
        };
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(host_err)?;
        let facts = HostFacts::gather_with(&mountinfo).map_err(host_err)?;
        let seccomp = paddock_sys::seccomp::build_program().map_err(|e| RuntimeError::Unsupported {
            feature: "seccomp filters",
            detail: e.to_string(),
            hint: "this CPU architecture is not supported by the filter compiler; use isolation: none",
        })?;
        let seccomp_init = paddock_sys::seccomp::build_init_program().map_err(|e| {
            RuntimeError::Unsupported {
                feature: "seccomp filters",
                detail: e.to_string(),
                hint: "this CPU architecture is not supported by the filter compiler; use isolation: none",
            }
        })?;
        let mut landlock_abi = paddock_sys::landlock::kernel_abi();
        if landlock_abi < 1 {
            tracing::warn!(
                "landlock is not available on this kernel: the jail runs without its landlock layer (namespaces, uid, seccomp and read-only mounts still apply)"
            );
        } else if !cached && let Err(e) = probe(0, Action::Landlock) {
            tracing::warn!(
                "landlock ABI {landlock_abi} is reported but restricting failed ({e}); continuing without it"
            );
            landlock_abi = 0;
        }
        // A one-shot process finds out once whether what it leaves behind is reaped (see
        // `Runtime::orphans_reaped` and `probecache`).
        let known = hit.unwrap_or(Orphans::Unknown);
        let found = if one_shot {
            next_orphan_fact(known)
        } else {
            None
        };
        let orphans = found.unwrap_or(known);
        // Only a full pass is remembered (see `probecache`).
        if (!cached || found.is_some())
            && landlock_abi == paddock_sys::landlock::kernel_abi()
            && let Err(e) = cache.record(orphans)
        {
            tracing::debug!(error = %e, "could not record the kernel probe");
        }
        let layout = paddock_sys::cgroup::discover_self_with(&mountinfo);
        // A one-shot process sweeps once its command runs (see `sweep_stale_cgroups`).
        if !one_shot {
            sweep_stale(&layout);
        }
        let name = format!(
            "paddock-{}-{}",
            std::process::id(),
            RUNTIME_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        // One command per process: its exec cgroup goes right beside us (see
        // `CgroupSet::flat`); a long-lived runtime keeps a subtree of its own.
        let (cgroups, failed) = if one_shot {
            CgroupSet::flat(&layout, &name)
        } else {
            CgroupSet::create(&layout, &name)
        };
        for line in cgroup_warnings(&failed, |c| cgroups.has(c)) {
            tracing::warn!("{line}");
        }
        if !one_shot {
            let nz = |v: u64| (v > 0).then_some(v);
            let (memory, pids) = opts.total_limits.effective();
            let total = paddock_sys::cgroup::CgroupLimits {
                memory_bytes: nz(memory),
                pids: nz(pids),
                cpus: None,
            };
            if let Err(e) = cgroups.limit_total(&total) {
                tracing::warn!(error = %e, "could not cap all sandboxes together; each sandbox is still limited");
            }
        }
        let shell = pick_shell();
        Ok(JailBase {
            facts,
            seccomp: Arc::new(seccomp),
            seccomp_init: Arc::new(seccomp_init),
            landlock_abi,
            cgroups,
            cap_last_cap: paddock_sys::jail::cap_last_cap(),
            privileged: paddock_sys::process::euid() == 0,
            shell,
            shell_takes_preload: !one_shot
                && paddock_sys::jail::takes_preload(std::path::Path::new(shell)),
            nofile_hard: paddock_sys::process::rlimit_hard(libc::RLIMIT_NOFILE as i32)
                .unwrap_or(1024),
            online_cpus: paddock_sys::process::online_cpus(),
            unswept: one_shot.then_some(layout),
            orphans_reaped: one_shot && orphans == Orphans::Reaped(true),
        })
    }

    /// Whether a one-shot process may exit while its jail is still being torn down: the
    /// jail's init, once its parent is gone, is adopted by the nearest subreaper or pid 1,
    /// and that one was seen to reap. Always false for a long-lived runtime, which reaps its
    /// own jails.
    pub fn orphans_reaped(&self) -> bool {
        self.jail.as_ref().is_some_and(|j| j.orphans_reaped)
    }

    /// Removes cgroups left behind by Paddock processes that are gone (a `paddock exec`
    /// killed with SIGKILL leaves its exec cgroup). A long-lived runtime does this when it
    /// starts; a one-shot runtime leaves it to its caller, to do while the command runs,
    /// since nothing before the command needs it.
    pub fn sweep_stale_cgroups(&self) {
        if let Some(layout) = self.jail.as_ref().and_then(|j| j.unswept.as_ref()) {
            sweep_stale(layout);
        }
    }

    /// The options in force.
    pub fn options(&self) -> &RuntimeOptions {
        &self.opts
    }

    /// The data layout.
    pub fn layout(&self) -> &DataLayout {
        &self.layout
    }

    /// The disk quota in force (`paddock doctor`, logs).
    pub fn disk_quota(&self) -> &crate::disk::DiskQuota {
        &self.disk
    }

    /// The isolation mode.
    pub fn isolation(&self) -> Isolation {
        if self.jail.is_some() {
            Isolation::Isolated
        } else {
            Isolation::None
        }
    }

    pub(crate) fn next_exec_id(&self) -> u64 {
        EXEC_COUNTER.fetch_add(1, Ordering::Relaxed)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // No sandbox is left (each holds the runtime): its images can go.
        self.disks.release_all();
        if let Some(j) = &self.jail {
            j.cgroups.remove();
        }
    }
}

type Reply<T> = tokio::sync::oneshot::Sender<Result<T, SpawnError>>;

/// What the spawner thread does with a spec, and where the answer goes.
enum Task {
    /// Build a sandbox's jail and start its init (the init program's memfd).
    Sandbox(Arc<std::os::fd::OwnedFd>, Reply<BuildingSandbox>),
    /// Build the jail and start this command in it at once.
    Run(EncodedCommand, Reply<JailChild>),
}

struct Job {
    spec: JailSpec,
    task: Task,
}

static SPAWNER: OnceLock<Result<std::sync::mpsc::Sender<Job>, Arc<std::io::Error>>> =
    OnceLock::new();

fn spawner() -> Result<&'static std::sync::mpsc::Sender<Job>, JailError> {
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("paddock-spawner".into())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        match job.task {
                            Task::Sandbox(init, reply) => {
                                let r = paddock_sys::jail::build_sandbox(&job.spec, &init);
                                if let Err(Ok(b)) = reply.send(r) {
                                    // The caller went away: do not leave the jail running.
                                    let _ = b.init.kill();
                                    let _ = b.init.wait_blocking();
                                }
                            }
                            Task::Run(cmd, reply) => {
                                let built = paddock_sys::jail::build(&job.spec);
                                let r = built.and_then(|p| p.start(&cmd));
                                if let Err(Ok(child)) = reply.send(r) {
                                    // The caller went away: do not leave the jail running.
                                    let _ = child.init.kill();
                                    let _ = child.init.wait_blocking();
                                }
                            }
                        }
                    }
                })
                .map(|_| tx)
                .map_err(Arc::new)
        })
        .as_ref()
        .map_err(|e| JailError::SpawnerStart(e.clone()))
}

async fn on_spawner<T>(
    spec: JailSpec,
    task: impl FnOnce(Reply<T>) -> Task,
) -> Result<T, JailError> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    spawner()?
        .send(Job {
            spec,
            task: task(reply),
        })
        .map_err(|_| JailError::Spawner("is gone"))?;
    rx.await
        .map_err(|_| JailError::Spawner("dropped the request"))?
        .map_err(JailError::from)
}

/// Builds a jail and starts `cmd` in it: on the spawner thread, or — in a one-shot runtime
/// — on the calling thread, which is the process's main thread (`paddock exec` drives a
/// current-thread runtime) and so outlives the jail; no thread is started for one clone.
pub(crate) async fn spawn_jail(
    rt: &Runtime,
    spec: JailSpec,
    cmd: EncodedCommand,
) -> Result<JailChild, JailError> {
    if rt.one_shot {
        return paddock_sys::jail::build(&spec)
            .and_then(|p| p.start(&cmd))
            .map_err(JailError::from);
    }
    on_spawner(spec, |r| Task::Run(cmd, r)).await
}

/// Builds a sandbox's jail on the spawner thread (its init's parent-death signal is tied to
/// that thread, which lives as long as the process).
pub(crate) async fn build_sandbox_jail(spec: JailSpec) -> Result<BuildingSandbox, JailError> {
    let init =
        paddock_sys::sandbox_jail::init_program().map_err(JailError::io("the init program"))?;
    on_spawner(spec, |r| Task::Sandbox(init, r)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_sys::cgroup::CgroupError;

    #[test]
    fn one_warning_per_cause_naming_the_controllers_and_their_stand_ins() {
        let shared = || CgroupError::Shared {
            path: "/sys/fs/cgroup/user.slice".into(),
            others: 3,
        };
        let failed = vec![
            (Controller::Memory, shared()),
            (Controller::Pids, shared()),
            (Controller::Cpu, shared()),
        ];
        let w = cgroup_warnings(&failed, |_| false);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(
                "cgroup memory, pids, cpu unusable (cgroup /sys/fs/cgroup/user.slice also holds 3"
            ),
            "{w:?}"
        );
        assert!(w[0].contains("Delegate=yes"), "{w:?}");
        assert!(w[0].ends_with("falling back to rlimits: memory is limited with RLIMIT_AS and OOM kills are not reported; processes are limited with RLIMIT_NPROC (per host uid); cpu is not limited"), "{w:?}");
        // Controllers that are simply not there get one line of their own.
        let w = cgroup_warnings(&[], |c| c == Controller::Pids);
        assert_eq!(
            w,
            vec!["no cgroup memory, cpu controllers are mounted for this process: memory is limited with RLIMIT_AS and OOM kills are not reported; cpu is not limited".to_owned()]
        );
        assert!(cgroup_warnings(&[], |_| true).is_empty());
    }
}
