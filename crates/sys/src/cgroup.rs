//! Per-exec cgroups for memory, pids and cpu limits, on cgroup v1 (one hierarchy per
//! controller) or v2 (the unified hierarchy), and OOM-kill detection.
//!
//! Paddock never moves itself or anyone else out of the cgroup it was started in: it creates
//! a delegated subtree `paddock-{pid}` *beneath* its own cgroup of each controller (read from
//! `/proc/self/cgroup`), one child per exec, and puts only the exec's init in it (the jail's
//! processes inherit it). On v2, where a cgroup with processes of its own cannot enable
//! controllers for children, Paddock first moves itself one level down into
//! `paddock-{pid}-supervisor` — when, and only when, it is alone in its cgroup
//! ([`delegate_v2`]). Discovery ([`discover`]) and the file-writing logic
//! ([`CgroupSet::create_exec`]) work on any root directory, so both versions are unit-tested
//! against a fake cgroupfs in a temp dir. Invariant: a limit that was asked for is either
//! written or reported as unavailable — never silently dropped.
//!
//! A process that runs one command and exits (`paddock exec`) on cgroup v1 does not make and
//! remove a cgroup per command: it takes one of a pool of reusable exec cgroups beside its
//! own, `paddock-slot-{k}`, held by an exclusive `flock` on the slot's `cgroup.procs` for as
//! long as the process lives (the kernel drops the lock when the process ends, however it
//! ends), and only when no process is left in it (see [`CgroupSet::flat`]). A v1 memory
//! cgroup costs a `mkdir` and an `rmdir` of about 0.1 ms each, and its removal waits for
//! the jail to be gone; a slot needs neither, and the host keeps a bounded number of memory
//! cgroups instead of a dying one per command.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many reusable exec cgroups one cgroup's one-shot processes share (see
/// [`CgroupSet::flat`]); when every one is taken, an exec gets a cgroup of its own.
pub const SLOTS: usize = 64;

/// The directory name of reusable exec cgroup `k`.
pub fn slot_name(k: usize) -> String {
    format!("paddock-slot-{k}")
}

/// The controllers Paddock drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    /// Memory limit and OOM reporting.
    Memory,
    /// Process count limit.
    Pids,
    /// CPU bandwidth.
    Cpu,
}

impl Controller {
    /// All of them.
    pub const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

    /// Kernel name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Pids => "pids",
            Self::Cpu => "cpu",
        }
    }
}

/// Where a controller lives for this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// `Some(1)` or `Some(2)`.
    pub version: u8,
    /// Our own cgroup directory of that controller (mount point + our path).
    pub dir: PathBuf,
}

/// The result of discovery: for each controller, where our cgroup is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    /// Found controllers.
    pub controllers: BTreeMap<Controller, Location>,
}

/// Finds our cgroup directory for each controller from the texts of
/// `/proc/self/mountinfo` and `/proc/self/cgroup`. A v1 hierarchy wins over v2 for a
/// controller when both are mounted (hybrid hosts bind controllers to v1); v2 controllers
/// are taken from `cgroup.controllers` of the unified mount, read through `read_controllers`.
pub fn discover(
    mountinfo: &str,
    self_cgroup: &str,
    read_controllers: impl Fn(&Path) -> Option<String>,
) -> Layout {
    // (hierarchy controllers or "" for v2) -> path relative to the hierarchy root
    let mut v1_paths: BTreeMap<String, String> = BTreeMap::new();
    let mut v2_path: Option<String> = None;
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            v2_path = Some(path.to_owned());
        } else {
            for c in ctrls.split(',') {
                v1_paths.insert(c.to_owned(), path.to_owned());
            }
        }
    }
    let mut layout = Layout::default();
    let mut v2_mount: Option<(PathBuf, String)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(root), Some(point), Some(fstype), Some(opts)) = (
            fields.get(3),
            fields.get(4),
            fields.get(dash + 1),
            fields.get(dash + 3),
        ) else {
            continue;
        };
        let point = crate::mountplan::unescape_mountinfo(point);
        match *fstype {
            "cgroup" => {
                for c in Controller::ALL {
                    if opts.split(',').any(|o| o == c.name())
                        && let Some(ours) = v1_paths.get(c.name())
                        && let Some(dir) = join_below(Path::new(&point), root, ours)
                    {
                        layout.controllers.insert(c, Location { version: 1, dir });
                    }
                }
            }
            "cgroup2" => v2_mount = Some((PathBuf::from(point), (*root).to_owned())),
            _ => {}
        }
    }
    if let (Some((point, root)), Some(ours)) = (v2_mount, v2_path)
        && let Some(dir) = join_below(&point, &root, &ours)
    {
        {
            let avail = read_controllers(&dir).unwrap_or_default();
            for c in Controller::ALL {
                if !layout.controllers.contains_key(&c)
                    && avail.split_whitespace().any(|x| x == c.name())
                {
                    layout.controllers.insert(
                        c,
                        Location {
                            version: 2,
                            dir: dir.clone(),
                        },
                    );
                }
            }
        }
    }
    layout
}

/// `point` + (`ours` relative to the mount's `root`); `None` when our cgroup is not visible
/// through that mount.
fn join_below(point: &Path, root: &str, ours: &str) -> Option<PathBuf> {
    let rel = if root == "/" {
        ours
    } else {
        ours.strip_prefix(root)?
    };
    let rel = rel.trim_start_matches('/');
    if rel.split('/').any(|s| s == "..") {
        return None;
    }
    Some(if rel.is_empty() {
        point.to_path_buf()
    } else {
        point.join(rel)
    })
}

/// Limits of one exec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CgroupLimits {
    /// Bytes of memory (RAM; swap is held at 0 where the kernel allows it).
    pub memory_bytes: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
    /// CPUs (fractions allowed).
    pub cpus: Option<f64>,
}

/// CPU period used for quotas, microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The files and values to write for `limits` on controller `c` of `version`. Pure.
pub fn limit_writes(
    version: u8,
    c: Controller,
    limits: &CgroupLimits,
) -> Vec<(&'static str, String, bool)> {
    // (file, value, required)
    let mut w = Vec::new();
    match (version, c) {
        (1, Controller::Memory) => {
            if let Some(m) = limits.memory_bytes {
                // memory+swap may never be below memory: written first for a reused cgroup
                // whose old limit is lower (the kernel refuses it while it is higher, and
                // the write after memory's makes them equal), and last for every cgroup.
                w.push(("memory.memsw.limit_in_bytes", m.to_string(), false));
                w.push(("memory.limit_in_bytes", m.to_string(), true));
                w.push(("memory.memsw.limit_in_bytes", m.to_string(), false));
                w.push(("memory.swappiness", "0".into(), false));
            }
        }
        (_, Controller::Memory) => {
            if let Some(m) = limits.memory_bytes {
                w.push(("memory.max", m.to_string(), true));
                w.push(("memory.swap.max", "0".into(), false));
            }
        }
        (_, Controller::Pids) => {
            if let Some(p) = limits.pids {
                w.push(("pids.max", p.to_string(), true));
            }
        }
        (1, Controller::Cpu) => {
            if let Some(q) = limits.cpus.and_then(quota_us) {
                w.push(("cpu.cfs_period_us", CPU_PERIOD_US.to_string(), true));
                w.push(("cpu.cfs_quota_us", q.to_string(), true));
            }
        }
        (_, Controller::Cpu) => {
            if let Some(q) = limits.cpus.and_then(quota_us) {
                w.push(("cpu.max", format!("{q} {CPU_PERIOD_US}"), true));
            }
        }
    }
    w
}

fn quota_us(cpus: f64) -> Option<u64> {
    (cpus.is_finite() && cpus > 0.0)
        .then(|| ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000))
}

/// Errors of cgroup handling.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// On cgroup v2 our cgroup also holds processes that are not ours.
    #[error(
        "cgroup {} also holds {others} process(es) other than Paddock: cgroup v2 lets only a \
         cgroup without processes of its own enable controllers for child cgroups, and Paddock \
         never moves other processes; run Paddock in a cgroup of its own (a systemd service \
         with Delegate=yes, or `systemd-run --scope -p Delegate=yes paddock ...`)",
        path.display()
    )]
    Shared {
        /// Our cgroup directory.
        path: PathBuf,
        /// How many other processes are in it.
        others: usize,
    },
    /// A directory or file could not be written.
    #[error("cgroup {what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The path (a host cgroupfs path, never a sandbox path).
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The sandbox has no cgroup to put a command's sub-cgroup in.
    #[error("no cgroup controller is available for per-command cgroups")]
    NoSlots,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { what, path, source }
}

/// The leaf cgroup a Paddock process moves itself into on cgroup v2 (see [`delegate_v2`]).
pub fn supervisor_name(pid: u32) -> String {
    format!("paddock-{pid}-supervisor")
}

/// The pids listed in a `cgroup.procs` text.
pub fn parse_procs(text: &str) -> Vec<u32> {
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Makes our cgroup v2 directory `own` able to enable controllers for child cgroups.
///
/// cgroup v2 only lets a cgroup that has no processes of its own enable controllers in its
/// `cgroup.subtree_control` (the "no internal processes" rule; the root is exempt), and
/// Paddock runs in the cgroup it was started in. So when nobody but Paddock (process `pid`)
/// is in `own`, Paddock moves itself one level down, into `own/paddock-{pid}-supervisor`:
/// it stays inside the cgroup it was started in, and `own` can then delegate. A cgroup
/// that also holds other processes is left alone — other processes are never moved — and
/// the caller falls back to rlimits for its controllers ([`CgroupError::Shared`]).
pub fn delegate_v2(own: &Path, pid: u32) -> Result<(), CgroupError> {
    // Only non-root cgroups have `cgroup.type`; the root is exempt from the rule.
    if !own.join("cgroup.type").exists() {
        return Ok(());
    }
    let procs = own.join("cgroup.procs");
    let members = parse_procs(&std::fs::read_to_string(&procs).map_err(io_err("read", &procs))?);
    if members.is_empty() {
        // Nobody is in it (we moved down earlier, or were started elsewhere below it).
        return Ok(());
    }
    let others = members.iter().filter(|p| **p != pid).count();
    if others > 0 {
        return Err(CgroupError::Shared {
            path: own.to_path_buf(),
            others,
        });
    }
    let leaf = own.join(supervisor_name(pid));
    match std::fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("create", &leaf)(e)),
    }
    let leaf_procs = leaf.join("cgroup.procs");
    // One write of the pid moves every thread of the process.
    std::fs::write(&leaf_procs, pid.to_string()).map_err(io_err("move Paddock into", &leaf_procs))
}

/// Enables `c` for the children of our v2 cgroup `own`, delegating it first (once per
/// directory: `delegated` remembers which were done). Returns whether it was Paddock that
/// enabled it (it was not enabled before), so [`CgroupSet::remove`] can give it back.
fn enable_v2(own: &Path, c: Controller, delegated: &mut Vec<PathBuf>) -> Result<bool, CgroupError> {
    if !delegated.iter().any(|d| d == own) {
        delegate_v2(own, std::process::id())?;
        delegated.push(own.to_path_buf());
    }
    let sc = own.join("cgroup.subtree_control");
    let before = std::fs::read_to_string(&sc).unwrap_or_default();
    if before.split_whitespace().any(|w| w == c.name()) {
        return Ok(false);
    }
    std::fs::write(&sc, format!("+{}", c.name())).map_err(io_err("enable controller in", &sc))?;
    Ok(true)
}

/// Gives back what [`enable_v2`] changed in `own`, so the cgroup Paddock was started in can
/// hold processes again (another Paddock, or whatever its owner starts there next): the
/// `controllers` Paddock enabled are disabled again — but only when no child cgroup other
/// than Paddock's own supervisor leaf is left in `own`, else someone still uses them.
/// Paddock stays in its leaf (moving back would take the threadgroup lock for writing); the
/// leaf, empty once Paddock exits, is swept by the next Paddock started there.
pub fn undelegate_v2(own: &Path, controllers: &[&str], pid: u32) {
    let leaf = supervisor_name(pid);
    let Ok(rd) = std::fs::read_dir(own) else {
        return;
    };
    let busy = rd.flatten().any(|e| {
        e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name().to_str() != Some(leaf.as_str())
    });
    if busy {
        return;
    }
    let sc = own.join("cgroup.subtree_control");
    for c in controllers {
        if let Err(e) = std::fs::write(&sc, format!("-{c}")) {
            tracing::debug!(error = %e, path = %sc.display(), "could not disable a cgroup controller again");
        }
    }
}

/// The `paddock-{pid}` subtree of each usable controller.
#[derive(Debug, Clone, Default)]
pub struct CgroupSet {
    /// Controller -> (version, base directory of our subtree).
    pub bases: BTreeMap<Controller, (u8, PathBuf)>,
    /// Set by [`CgroupSet::flat`]: the bases are our own cgroups, exec cgroups are named
    /// `{prefix}-{name}` beside us, and [`CgroupSet::remove`] leaves the bases alone.
    flat_prefix: Option<String>,
    /// v2 controllers this set enabled in our own cgroup (see [`undelegate_v2`]).
    v2_enabled: Vec<(PathBuf, Controller)>,
    /// Exec cgroups come from the pool of reusable slots first (a flat set on v1).
    pooled: bool,
}

impl CgroupSet {
    /// Creates `{our cgroup}/{name}` for every discovered controller that lets us. On v2 the
    /// controllers are enabled in our cgroup's (after [`delegate_v2`]) and the base's
    /// `cgroup.subtree_control`; a controller whose setup fails is left out, with its error.
    pub fn create(layout: &Layout, name: &str) -> (Self, Vec<(Controller, CgroupError)>) {
        let mut set = Self::default();
        let mut failed = Vec::new();
        let mut delegated = Vec::new();
        for (c, loc) in &layout.controllers {
            let base = loc.dir.join(name);
            let r = (|| -> Result<(), CgroupError> {
                if loc.version == 2 && enable_v2(&loc.dir, *c, &mut delegated)? {
                    set.v2_enabled.push((loc.dir.clone(), *c));
                }
                match std::fs::create_dir(&base) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err("create", &base)(e)),
                }
                if loc.version == 2 {
                    let sc = base.join("cgroup.subtree_control");
                    std::fs::write(&sc, format!("+{}", c.name()))
                        .map_err(io_err("enable controller in", &sc))?;
                }
                Ok(())
            })();
            match r {
                Ok(()) => {
                    set.bases.insert(*c, (loc.version, base));
                }
                Err(e) => failed.push((*c, e)),
            }
        }
        (set, failed)
    }

    /// Uses our own cgroup of every discovered controller directly as the parent of exec
    /// cgroups, named `{prefix}-{name}`: for a process that runs one command and exits,
    /// where a subtree level of its own would cost a `mkdir` and an `rmdir` per controller
    /// and isolate nothing more (the exec cgroup holds the limits either way). On v2 the
    /// controllers are enabled in our cgroup's `cgroup.subtree_control` after
    /// [`delegate_v2`], as [`Self::create`] does. `prefix` must start with `paddock-{pid}` so [`sweep_stale`] finds leftovers.
    ///
    /// When every controller is on v1, [`Self::create_exec`] first takes a free slot of the
    /// pool (see the module documentation): the set's process runs one command at a time, and
    /// a slot it holds is released by the kernel when the process ends, so nothing needs to
    /// be removed when it exits and nobody needs to wait for the jail to be gone. v2 keeps
    /// a cgroup per exec: its controllers were delegated for this process and are given
    /// back when it is done ([`Self::remove`]), which needs the exec cgroup removed first.
    pub fn flat(layout: &Layout, prefix: &str) -> (Self, Vec<(Controller, CgroupError)>) {
        let mut set = Self {
            flat_prefix: Some(prefix.to_owned()),
            ..Self::default()
        };
        let mut failed = Vec::new();
        let mut delegated = Vec::new();
        for (c, loc) in &layout.controllers {
            if loc.version == 2 {
                match enable_v2(&loc.dir, *c, &mut delegated) {
                    Ok(true) => set.v2_enabled.push((loc.dir.clone(), *c)),
                    Ok(false) => {}
                    Err(e) => {
                        failed.push((*c, e));
                        continue;
                    }
                }
            }
            set.bases.insert(*c, (loc.version, loc.dir.clone()));
        }
        set.pooled = !set.bases.is_empty() && set.bases.values().all(|(v, _)| *v == 1);
        (set, failed)
    }

    /// Takes the first free, empty slot of the pool and writes `limits` into it; `None` when
    /// every slot is taken or the slots cannot be used (the caller then makes a cgroup of
    /// its own, which reports any error). The lock is on the slot of the first controller
    /// in use or not, so processes with different limits still exclude each other.
    fn claim_slot(&self, limits: &CgroupLimits) -> Option<ExecCgroup> {
        let (_, (_, lock_base)) = self.bases.iter().next()?;
        'slots: for k in 0..SLOTS {
            let name = slot_name(k);
            let lock = open_slot_lock(&lock_base.join(&name)).ok()?;
            match try_lock_exclusive(&lock) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => return None,
            }
            let used: Vec<_> = self
                .bases
                .iter()
                .map(|(c, (version, base))| {
                    (
                        *c,
                        *version,
                        base.join(&name),
                        limit_writes(*version, *c, limits),
                    )
                })
                .filter(|(_, _, _, writes)| !writes.is_empty())
                .collect();
            // A process of an exec that ended without waiting for its jail may still be on
            // its way out: such a slot is skipped, never shared.
            for (c, _, dir, _) in &used {
                match slot_is_idle(*c, dir) {
                    Ok(true) => {}
                    Ok(false) => continue 'slots,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => match std::fs::create_dir(dir)
                    {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(_) => return None,
                    },
                    Err(_) => return None,
                }
            }
            let mut dirs = Vec::new();
            for (c, version, dir, writes) in used {
                for (file, value, required) in writes {
                    if std::fs::write(dir.join(file), &value).is_err() && required {
                        return None;
                    }
                }
                dirs.push((c, version, dir));
            }
            let mut cg = ExecCgroup {
                dirs,
                slot: Some(Arc::new(lock)),
                oom_base: 0,
            };
            // The slot's OOM kills so far belong to earlier commands.
            cg.oom_base = cg.oom_kills_total();
            return Some(cg);
        }
        None
    }

    /// Whether exec cgroups are taken from the pool of reusable slots first.
    pub fn is_pooled(&self) -> bool {
        self.pooled
    }

    /// The directory of exec cgroup `name` below `base`.
    fn exec_dir(&self, base: &Path, name: &str) -> PathBuf {
        match &self.flat_prefix {
            Some(prefix) => base.join(format!("{prefix}-{name}")),
            None => base.join(name),
        }
    }

    /// Whether a controller is usable.
    pub fn has(&self, c: Controller) -> bool {
        self.bases.contains_key(&c)
    }

    /// Creates the exec's cgroup `{base}/{name}` and writes its limits. On v2 the controllers
    /// share one directory; on v1 each has its own, and a controller `limits` sets nothing
    /// for gets none (its directory would only cost a `mkdir`, a join and an `rmdir`).
    pub fn create_exec(
        &self,
        name: &str,
        limits: &CgroupLimits,
    ) -> Result<ExecCgroup, CgroupError> {
        if self.pooled
            && let Some(cg) = self.claim_slot(limits)
        {
            return Ok(cg);
        }
        let mut dirs: Vec<(Controller, u8, PathBuf)> = Vec::new();
        let mut made: Vec<PathBuf> = Vec::new();
        let result = (|| -> Result<(), CgroupError> {
            for (c, (version, base)) in &self.bases {
                let writes = limit_writes(*version, *c, limits);
                if *version == 1 && writes.is_empty() {
                    continue;
                }
                let dir = self.exec_dir(base, name);
                if !made.contains(&dir) {
                    match std::fs::create_dir(&dir) {
                        Ok(()) => made.push(dir.clone()),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(io_err("create", &dir)(e)),
                    }
                }
                for (file, value, required) in writes {
                    let f = dir.join(file);
                    match std::fs::write(&f, &value) {
                        Ok(()) => {}
                        Err(e) if required => return Err(io_err("write", &f)(e)),
                        Err(_) => {}
                    }
                }
                dirs.push((*c, *version, dir));
            }
            Ok(())
        })();
        let cg = ExecCgroup {
            dirs,
            ..ExecCgroup::default()
        };
        if let Err(e) = result {
            for d in made.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
            return Err(e);
        }
        Ok(cg)
    }

    /// Removes the base directories and any exec directories left in them whose processes
    /// are gone (a busy one stays, for [`sweep_stale`] after this process exits). A flat set
    /// removes no directory: its bases are our own cgroups, and each exec cgroup is removed
    /// by its [`ExecCgroup::remove`]. On v2, the controllers this set enabled in our own
    /// cgroup are given back when nothing else uses them ([`undelegate_v2`]).
    pub fn remove(&self) {
        if self.flat_prefix.is_none() {
            for (_, base) in self.bases.values() {
                remove_tree(base, 2);
            }
        }
        let mut dirs: Vec<&PathBuf> = self.v2_enabled.iter().map(|(d, _)| d).collect();
        dirs.dedup();
        for own in dirs {
            let cs: Vec<&str> = self
                .v2_enabled
                .iter()
                .filter(|(d, _)| d == own)
                .map(|(_, c)| c.name())
                .collect();
            undelegate_v2(own, &cs, std::process::id());
        }
    }
}

/// Removes the cgroup directory `dir` and the directories below it, deepest first, at most
/// `depth` levels down (a runtime's subtree: sandboxes, then their slots). A cgroup's control
/// files go with its `rmdir`; one that still holds a process stays. Returns whether `dir` is
/// gone. Entries are told apart by `d_type`, so nothing is `stat`ed.
pub fn remove_tree(dir: &Path, depth: usize) -> bool {
    if depth > 0
        && let Ok(rd) = std::fs::read_dir(dir)
    {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path(), depth - 1);
            }
        }
    }
    std::fs::remove_dir(dir).is_ok()
}

/// What [`sweep_stale`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Subtrees removed.
    pub subtrees: usize,
    /// Processes killed in them (jails a Paddock that died left behind).
    pub processes: usize,
}

/// Kills every process in `dir` and the cgroups below it (at most `depth` levels down), until
/// none is left or a second has passed; returns how many it signalled.
fn kill_tree(dir: &Path, depth: usize) -> usize {
    let mut dirs = vec![(dir.to_path_buf(), depth)];
    let mut all = Vec::new();
    while let Some((d, left)) = dirs.pop() {
        all.push(d.clone());
        if left > 0
            && let Ok(rd) = std::fs::read_dir(&d)
        {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push((e.path(), left - 1));
                }
            }
        }
    }
    let mut killed = 0usize;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let mut seen = 0usize;
        for d in &all {
            let Ok(t) = std::fs::read_to_string(d.join("cgroup.procs")) else {
                continue;
            };
            for p in parse_procs(&t) {
                if let Ok(pid) = i32::try_from(p)
                    && pid > 1
                    && pid != std::process::id() as i32
                {
                    seen += 1;
                    // SAFETY: kill(2) of a process listed in a cgroup of a dead Paddock.
                    if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                        killed += 1;
                    }
                }
            }
        }
        if seen == 0 || std::time::Instant::now() > deadline {
            return killed;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Removes `paddock-{pid}[-{n}]` subtrees left behind by Paddock processes that are gone (a
/// crash, or a test binary that exited with sandboxes still running), killing first any
/// process still in them: a jail dies with the Paddock that built it (parent-death signal,
/// its init's control socket), so one found here outlived a window the kernel left open.
pub fn sweep_stale(layout: &Layout, is_alive: impl Fn(u32) -> bool) -> Swept {
    let mut swept = Swept::default();
    let mut seen: Vec<&Path> = Vec::new();
    for loc in layout.controllers.values() {
        if seen.contains(&loc.dir.as_path()) {
            continue;
        }
        seen.push(&loc.dir);
        let Ok(rd) = std::fs::read_dir(&loc.dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(owner) = name.to_str().and_then(stale_owner) else {
                continue;
            };
            if is_alive(owner) {
                continue;
            }
            swept.processes += kill_tree(&e.path(), 3);
            if remove_tree(&e.path(), 3) {
                swept.subtrees += 1;
            }
        }
    }
    swept
}

/// The pid in a subtree name `paddock-{pid}` or `paddock-{pid}-{n}`.
pub fn stale_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("paddock-")?;
    let pid = rest.split('-').next()?;
    pid.parse().ok()
}

/// How an exec's init joins its cgroups (see [`ExecCgroup::join_plan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinPlan {
    /// v1 `tasks` files init writes `0` into (opened by the parent before the clone).
    pub self_tasks: Vec<PathBuf>,
    /// v1 `tasks` files the shell writes `0` into before its `execve`: a hierarchy of `pids`
    /// alone. Init stays out of it, so only the command's processes are counted, and when
    /// the command is over the count drops to zero as soon as init has reaped them — not
    /// when whoever adopts init reaps *it*, which for a `paddock exec` that did not wait
    /// may be seconds later (see [`CgroupSet::flat`]).
    pub shell_tasks: Vec<PathBuf>,
    /// The v2 cgroup directory init is cloned into (`clone3` with `CLONE_INTO_CGROUP`; on a
    /// kernel without it the parent writes init's pid into its `cgroup.procs` instead).
    pub clone_into: Option<PathBuf>,
}

/// Opens the lock file of slot `dir` (its `cgroup.procs`), making the slot first if needed.
fn open_slot_lock(dir: &Path) -> io::Result<std::fs::File> {
    let file = dir.join("cgroup.procs");
    match std::fs::File::open(&file) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match std::fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            std::fs::File::open(&file)
        }
        r => r,
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: whether the lock was taken (false: someone holds it).
fn try_lock_exclusive(f: &std::fs::File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(e)
}

/// Whether nothing is left in a slot: no process in it, and (pids) none counted against it
/// (a process that has exited but was not yet reaped still counts). `NotFound` when the
/// slot has no directory of this controller yet.
fn slot_is_idle(c: Controller, dir: &Path) -> io::Result<bool> {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    if !procs.trim().is_empty() {
        return Ok(false);
    }
    if c == Controller::Pids {
        return Ok(std::fs::read_to_string(dir.join("pids.current"))?.trim() == "0");
    }
    Ok(true)
}

/// One exec's cgroup directories.
#[derive(Debug, Clone, Default)]
pub struct ExecCgroup {
    dirs: Vec<(Controller, u8, PathBuf)>,
    /// The lock of a reusable slot (see [`CgroupSet::flat`]), held while any clone lives.
    slot: Option<Arc<std::fs::File>>,
    /// OOM kills the slot had counted before this exec.
    oom_base: u64,
}

impl ExecCgroup {
    /// How the exec's init enters its cgroups: the v1 `tasks` files it writes `0` into itself,
    /// one per distinct directory, and the v2 directory it is cloned into.
    ///
    /// Why not the obvious route: a write of another process's pid (or any write to
    /// `cgroup.procs`) takes the kernel's global threadgroup lock, whose writer side waits for
    /// an RCU grace period unless the hierarchy was mounted with `favordynmods`: about 10 ms on
    /// an idle host, on every exec. On v1, a single thread moving *itself* through the
    /// `tasks` file skips that lock: init is single-threaded at that point, so moving the
    /// thread moves the process, and every process it forks is born inside. The file is
    /// opened by the parent, and the kernel checks the opener's credentials, so the child
    /// needs no privilege of its own. v2 has no `tasks` file, but `clone3(CLONE_INTO_CGROUP)`
    /// creates init inside its cgroup, taking that lock only for reading.
    pub fn join_plan(&self) -> JoinPlan {
        let mut plan = JoinPlan::default();
        for (c, version, d) in &self.dirs {
            if *version == 1 {
                let f = d.join("tasks");
                // A directory shared with another controller (co-mounted hierarchies) is
                // init's to join.
                let pids_only =
                    *c == Controller::Pids && !self.dirs.iter().any(|(o, _, od)| o != c && od == d);
                let list = if pids_only {
                    &mut plan.shell_tasks
                } else {
                    &mut plan.self_tasks
                };
                if !list.contains(&f) {
                    list.push(f);
                }
            } else {
                // Every v2 controller of an exec shares its one directory.
                plan.clone_into = Some(d.clone());
            }
        }
        plan
    }

    /// Whether the memory controller is in use for this exec.
    pub fn has(&self, c: Controller) -> bool {
        self.dirs.iter().any(|(x, _, _)| *x == c)
    }

    /// Whether this is a reusable slot of the pool, which [`Self::remove`] leaves in place.
    pub fn is_pooled(&self) -> bool {
        self.slot.is_some()
    }

    /// How many processes the kernel OOM-killed in this cgroup during this exec.
    pub fn oom_kills(&self) -> u64 {
        self.oom_kills_total().saturating_sub(self.oom_base)
    }

    fn oom_kills_total(&self) -> u64 {
        let Some((_, version, dir)) = self.dirs.iter().find(|(c, _, _)| *c == Controller::Memory)
        else {
            return 0;
        };
        let file = if *version == 1 {
            "memory.oom_control"
        } else {
            "memory.events"
        };
        std::fs::read_to_string(dir.join(file))
            .map(|t| parse_oom_kills(&t))
            .unwrap_or(0)
    }

    /// Removes the directories (they must be empty of processes: call after init is reaped).
    /// A slot of the pool stays for the next command.
    pub fn remove(&self) {
        if self.is_pooled() {
            return;
        }
        for (_, _, d) in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// `oom_kill N` from `memory.oom_control` (v1) or `memory.events` (v2).
pub fn parse_oom_kills(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix("oom_kill "))
        .filter_map(|v| v.trim().parse().ok())
        .next()
        .unwrap_or(0)
}

/// A `/proc/self/cgroup` text with our v2 cgroup taken as the one we started in: once
/// [`delegate_v2`] moved process `pid` into its `paddock-{pid}-supervisor` leaf, that
/// leaf's parent is still the cgroup Paddock works in.
pub fn without_supervisor(self_cgroup: &str, pid: u32) -> String {
    let leaf = format!("/{}", supervisor_name(pid));
    self_cgroup
        .lines()
        .map(|l| match l.strip_prefix("0::") {
            Some(path) if path.ends_with(&leaf) => {
                let parent = &path[..path.len() - leaf.len()];
                format!("0::{}", if parent.is_empty() { "/" } else { parent })
            }
            _ => l.to_owned(),
        })
        .map(|l| l + "\n")
        .collect()
}

/// The layout of the running process.
pub fn discover_self() -> Layout {
    discover_self_with(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// [`discover_self`] with the text of `/proc/self/mountinfo` already read.
pub fn discover_self_with(mountinfo: &str) -> Layout {
    let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let cg = without_supervisor(&cg, std::process::id());
    discover(mountinfo, &cg, |d| {
        std::fs::read_to_string(d.join("cgroup.controllers")).ok()
    })
}

/// A sandbox's cgroup: its limits hold for everything the sandbox runs, all its commands
/// and their background processes together, for as long as the sandbox lives. Each running
/// command sits in a sub-cgroup of it, an [`ExecSlot`], so that a timeout kills exactly that
/// command's processes (those that called `setsid` or double-forked included). Slots carry
/// no limits of their own and are reused once empty, so their names (`x0`, `x1`, …, all a
/// command sees of them through its cgroup namespace) count nothing across sandboxes.
#[derive(Debug, Clone, Default)]
pub struct SandboxCgroup {
    cg: ExecCgroup,
    /// Where slots go: the v2 directory, or one v1 hierarchy (pids, else memory, else cpu).
    slots_in: Option<(u8, PathBuf)>,
    /// Who the v2 `cgroup.procs` files are delegated to (see [`Self::delegate_to`]).
    delegate: Option<(u32, u32)>,
}

/// The name of slot `k`.
pub fn exec_slot_name(k: usize) -> String {
    format!("x{k}")
}

impl CgroupSet {
    /// Writes `limits` into the subtree itself: a cap on all sandboxes of this runtime
    /// together, beneath Paddock's own cgroup.
    pub fn limit_total(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        if self.flat_prefix.is_some() {
            return Ok(());
        }
        for (c, (version, base)) in &self.bases {
            for (file, value, required) in limit_writes(*version, *c, limits) {
                let f = base.join(file);
                match std::fs::write(&f, &value) {
                    Err(e) if required => return Err(io_err("write", &f)(e)),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Creates sandbox `name`'s cgroup below the subtree with `limits` (see
    /// [`SandboxCgroup`]). The hierarchy its slots go in gets a directory even when no limit
    /// is written there.
    pub fn create_sandbox(
        &self,
        name: &str,
        limits: &CgroupLimits,
    ) -> Result<SandboxCgroup, CgroupError> {
        let slot_controller = [Controller::Pids, Controller::Memory, Controller::Cpu]
            .into_iter()
            .find(|c| self.bases.contains_key(c));
        let mut dirs: Vec<(Controller, u8, PathBuf)> = Vec::new();
        let mut made: Vec<PathBuf> = Vec::new();
        let mut slots_in = None;
        let result = (|| -> Result<(), CgroupError> {
            for (c, (version, base)) in &self.bases {
                let writes = limit_writes(*version, *c, limits);
                let for_slots = *version == 2 || Some(*c) == slot_controller;
                if *version == 1 && writes.is_empty() && !for_slots {
                    continue;
                }
                let dir = self.exec_dir(base, name);
                if !made.contains(&dir) {
                    match std::fs::create_dir(&dir) {
                        Ok(()) => made.push(dir.clone()),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(io_err("create", &dir)(e)),
                    }
                }
                for (file, value, required) in writes {
                    let f = dir.join(file);
                    match std::fs::write(&f, &value) {
                        Err(e) if required => return Err(io_err("write", &f)(e)),
                        _ => {}
                    }
                }
                if for_slots && slots_in.is_none() {
                    slots_in = Some((*version, dir.clone()));
                }
                dirs.push((*c, *version, dir));
            }
            Ok(())
        })();
        if let Err(e) = result {
            for d in made.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
            return Err(e);
        }
        let mut cg = ExecCgroup {
            dirs,
            ..ExecCgroup::default()
        };
        cg.oom_base = cg.oom_kills_total();
        Ok(SandboxCgroup {
            cg,
            slots_in,
            delegate: None,
        })
    }
}

impl SandboxCgroup {
    /// How the sandbox's init enters its cgroups: every v1 hierarchy's `tasks` (init and
    /// everything it starts count against the sandbox), or the v2 directory it is cloned
    /// into.
    pub fn join_plan(&self) -> JoinPlan {
        let mut plan = JoinPlan::default();
        for (_, version, d) in &self.cg.dirs {
            if *version == 1 {
                let f = d.join("tasks");
                if !plan.self_tasks.contains(&f) {
                    plan.self_tasks.push(f);
                }
            } else {
                plan.clone_into = Some(d.clone());
            }
        }
        plan
    }

    /// Lets `uid`/`gid` (the sandbox's init) create processes in the slots: on v2 a clone
    /// into a cgroup needs write access to the `cgroup.procs` of the destination and of the
    /// common ancestor, here the sandbox's own cgroup (each slot's is handed over as the slot
    /// is made). Nothing above the sandbox's cgroup is delegated, and the sandbox has no
    /// cgroupfs mounted, so this gives its commands nothing to reach.
    pub fn delegate_to(&mut self, uid: u32, gid: u32) -> Result<(), CgroupError> {
        if let Some((2, dir)) = &self.slots_in {
            let f = dir.join("cgroup.procs");
            crate::process::lchown(&f, uid, gid).map_err(io_err("delegate", &f))?;
            self.delegate = Some((uid, gid));
        }
        Ok(())
    }

    /// Whether the sandbox has a cgroup at all (else commands cannot be killed one by one).
    pub fn has_slots(&self) -> bool {
        self.slots_in.is_some()
    }

    /// Whether a controller limits the sandbox.
    pub fn has(&self, c: Controller) -> bool {
        self.cg.has(c)
    }

    /// Slot `k` (its directory made if needed).
    pub fn slot(&self, k: usize) -> Result<ExecSlot, CgroupError> {
        let Some((version, base)) = &self.slots_in else {
            return Err(CgroupError::NoSlots);
        };
        let dir = base.join(exec_slot_name(k));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create", &dir)(e)),
        }
        if let (2, Some((uid, gid))) = (*version, self.delegate) {
            let f = dir.join("cgroup.procs");
            crate::process::lchown(&f, uid, gid).map_err(io_err("delegate", &f))?;
        }
        Ok(ExecSlot {
            version: *version,
            dir,
        })
    }

    /// OOM kills in the sandbox since its cgroup was made.
    pub fn oom_kills(&self) -> u64 {
        self.cg.oom_kills()
    }

    /// Host pids of every process in the sandbox (its init included).
    pub fn procs(&self) -> Vec<u32> {
        let Some((_, dir)) = &self.slots_in else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut add = |d: &Path| {
            if let Ok(t) = std::fs::read_to_string(d.join("cgroup.procs")) {
                out.extend(parse_procs(&t));
            }
        };
        add(dir);
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    add(&e.path());
                }
            }
        }
        out
    }

    /// Removes the slots and the sandbox's directories (once its processes are gone).
    pub fn remove(&self) {
        if let Some((_, dir)) = &self.slots_in
            && let Ok(rd) = std::fs::read_dir(dir)
        {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        self.cg.remove();
    }
}

/// One command's sub-cgroup of a sandbox (see [`SandboxCgroup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSlot {
    version: u8,
    dir: PathBuf,
}

impl ExecSlot {
    /// What the command's shell joins by: on v1 its `tasks` file, opened for writing (the
    /// shell writes `0` into it, a thread moving itself, which skips the threadgroup lock);
    /// on v2 the directory, which init clones the shell into (`CLONE_INTO_CGROUP`).
    pub fn open_join(&self) -> io::Result<(std::os::fd::OwnedFd, bool)> {
        if self.version == 1 {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(self.dir.join("tasks"))?;
            Ok((f.into(), false))
        } else {
            let f = std::fs::File::open(&self.dir)?;
            Ok((f.into(), true))
        }
    }

    /// Whether no process is in the slot (so another command may take it).
    pub fn is_empty(&self) -> bool {
        if self.version == 2
            && let Ok(t) = std::fs::read_to_string(self.dir.join("cgroup.events"))
        {
            return t.lines().any(|l| l.trim() == "populated 0");
        }
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|t| t.trim().is_empty())
            .unwrap_or(false)
    }

    /// Kills every process in the slot: `cgroup.kill` where the kernel has it (v2, Linux
    /// 5.14), else SIGKILL to each process listed until none is left (a fork racing the loop
    /// is caught by the next round). Returns whether the slot is empty afterwards.
    pub fn kill(&self) -> bool {
        if self.version == 2 && std::fs::write(self.dir.join("cgroup.kill"), "1").is_ok() {
            return true;
        }
        for _ in 0..200 {
            let Ok(t) = std::fs::read_to_string(self.dir.join("cgroup.procs")) else {
                return false;
            };
            let pids = parse_procs(&t);
            if pids.is_empty() {
                return true;
            }
            for p in pids {
                if let Ok(pid) = i32::try_from(p)
                    && pid > 1
                {
                    // SAFETY: kill(2) of a process listed in our own cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        false
    }

    /// The slot's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MI: &str = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
        32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
        35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
        39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
    const HYBRID_CG: &str = "8:pids:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n";

    /// A fake hybrid cgroupfs: v1 memory (our cgroup below /process_api/abc), pids, cpu.
    fn fake_v1() -> (tempfile::TempDir, Layout) {
        let tmp = tempfile::tempdir().unwrap();
        for c in ["memory/process_api/abc", "pids", "cpu"] {
            std::fs::create_dir_all(tmp.path().join(c)).unwrap();
        }
        let t = tmp.path().display();
        let mi = format!(
            "35 31 0:32 / {t}/memory rw - cgroup cgroup rw,memory\n39 31 0:36 / {t}/pids rw - cgroup cgroup rw,pids\n32 31 0:29 / {t}/cpu rw - cgroup cgroup rw,cpu\n"
        );
        let layout = discover(&mi, HYBRID_CG, |_| None);
        (tmp, layout)
    }

    /// A fake cgroup2 mount with our cgroup at `rel`, offering `controllers` and holding
    /// `procs`; a non-root cgroup (it has a `cgroup.type`).
    fn fake_v2(rel: &str, controllers: &str, procs: &str) -> (tempfile::TempDir, PathBuf, Layout) {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path().join(rel);
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(own.join("cgroup.controllers"), controllers).unwrap();
        std::fs::write(own.join("cgroup.procs"), procs).unwrap();
        std::fs::write(own.join("cgroup.type"), "domain\n").unwrap();
        let mi = format!(
            "30 1 0:26 / {} rw - cgroup2 cgroup2 rw\n",
            tmp.path().display()
        );
        let layout = discover(&mi, &format!("0::/{rel}\n"), |d| {
            std::fs::read_to_string(d.join("cgroup.controllers")).ok()
        });
        (tmp, own, layout)
    }

    #[test]
    fn discovers_hybrid_v1() {
        let l = discover(HYBRID_MI, HYBRID_CG, |_| Some("hugetlb".into()));
        assert_eq!(
            l.controllers[&Controller::Memory],
            Location {
                version: 1,
                dir: "/sys/fs/cgroup/memory/process_api/abc".into()
            }
        );
        assert_eq!(
            l.controllers[&Controller::Pids].dir,
            Path::new("/sys/fs/cgroup/pids")
        );
        assert_eq!(
            l.controllers[&Controller::Cpu].dir,
            Path::new("/sys/fs/cgroup/cpu")
        );
    }

    #[test]
    fn discovers_pure_v2_and_combined_v1() {
        let mi = "30 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let cg = "0::/system.slice/paddock.service\n";
        let l = discover(mi, cg, |d| {
            assert_eq!(d, Path::new("/sys/fs/cgroup/system.slice/paddock.service"));
            Some("cpuset cpu io memory pids".into())
        });
        assert_eq!(l.controllers.len(), 3);
        assert!(l.controllers.values().all(|loc| loc.version == 2));
        // v1 with cpu,cpuacct co-mounted and a mount root that is not "/".
        let mi = "32 31 0:29 /outer /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let cg = "1:cpu,cpuacct:/outer/inner\n";
        let l = discover(mi, cg, |_| None);
        assert_eq!(
            l.controllers[&Controller::Cpu].dir,
            Path::new("/sys/fs/cgroup/cpu,cpuacct/inner")
        );
        // Our cgroup outside the mount's root: not usable.
        let cg = "1:cpu,cpuacct:/elsewhere\n";
        assert!(discover(mi, cg, |_| None).controllers.is_empty());
    }

    #[test]
    fn limit_files_per_version() {
        let l = CgroupLimits {
            memory_bytes: Some(1 << 30),
            pids: Some(64),
            cpus: Some(1.5),
        };
        let v1: Vec<_> = Controller::ALL
            .iter()
            .flat_map(|c| limit_writes(1, *c, &l))
            .collect();
        assert!(v1.contains(&("memory.limit_in_bytes", (1u64 << 30).to_string(), true)));
        assert!(v1.contains(&("pids.max", "64".into(), true)));
        assert!(v1.contains(&("cpu.cfs_quota_us", "150000".into(), true)));
        let v2: Vec<_> = Controller::ALL
            .iter()
            .flat_map(|c| limit_writes(2, *c, &l))
            .collect();
        assert!(v2.contains(&("memory.max", (1u64 << 30).to_string(), true)));
        assert!(v2.contains(&("memory.swap.max", "0".into(), false)));
        assert!(v2.contains(&("cpu.max", "150000 100000".into(), true)));
        let none = CgroupLimits {
            memory_bytes: None,
            pids: None,
            cpus: None,
        };
        assert!(limit_writes(2, Controller::Memory, &none).is_empty());
    }

    #[test]
    fn v2_subtree_is_written_in_a_fake_cgroupfs() {
        // Nobody in it (as after a move down): nothing to delegate first.
        let (_tmp, own, layout) = fake_v2("system.slice/paddock.service", "cpu memory pids", "");
        let (set, failed) = CgroupSet::create(&layout, "paddock-1");
        assert!(failed.is_empty(), "{failed:?}");
        // A real cgroupfs keeps "+memory +pids +cpu"; a plain file keeps the last write.
        assert!(
            std::fs::read_to_string(own.join("cgroup.subtree_control"))
                .unwrap()
                .starts_with('+')
        );
        let limits = CgroupLimits {
            memory_bytes: Some(1000),
            pids: Some(7),
            cpus: Some(2.0),
        };
        let cg = set.create_exec("x1", &limits).unwrap();
        let d = own.join("paddock-1/x1");
        assert_eq!(
            std::fs::read_to_string(d.join("memory.max")).unwrap(),
            "1000"
        );
        assert_eq!(std::fs::read_to_string(d.join("pids.max")).unwrap(), "7");
        assert_eq!(
            std::fs::read_to_string(d.join("cpu.max")).unwrap(),
            "200000 100000"
        );
        assert_eq!(
            cg.join_plan(),
            JoinPlan {
                self_tasks: vec![],
                shell_tasks: vec![],
                clone_into: Some(d.clone()),
            }
        );
        std::fs::write(
            d.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kills(), 1);
    }

    #[test]
    fn a_v2_sandbox_holds_its_limits_and_its_slots_in_one_directory() {
        let (_tmp, own, layout) = fake_v2("svc", "cpu memory pids", "");
        let (set, failed) = CgroupSet::create(&layout, "paddock-1");
        assert!(failed.is_empty(), "{failed:?}");
        set.limit_total(&CgroupLimits {
            memory_bytes: Some(9000),
            pids: Some(90),
            cpus: None,
        })
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(own.join("paddock-1/pids.max")).unwrap(),
            "90"
        );
        let limits = CgroupLimits {
            memory_bytes: Some(1000),
            pids: Some(7),
            cpus: None,
        };
        let sb = set.create_sandbox("sb-3", &limits).unwrap();
        let d = own.join("paddock-1/sb-3");
        assert_eq!(std::fs::read_to_string(d.join("pids.max")).unwrap(), "7");
        assert_eq!(
            sb.join_plan(),
            JoinPlan {
                self_tasks: vec![],
                shell_tasks: vec![],
                clone_into: Some(d.clone()),
            }
        );
        let slot = sb.slot(0).unwrap();
        assert_eq!(slot.dir(), d.join("x0"));
        let (_, clone_into) = slot.open_join().unwrap();
        assert!(clone_into, "a v2 command is cloned into its slot");
        std::fs::write(d.join("x0/cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        assert!(!slot.is_empty());
        std::fs::write(d.join("x0/cgroup.events"), "populated 0\nfrozen 0\n").unwrap();
        assert!(slot.is_empty());
        std::fs::write(d.join("cgroup.procs"), "41\n").unwrap();
        std::fs::write(d.join("x0/cgroup.procs"), "42\n43\n").unwrap();
        assert_eq!(sb.procs(), [41, 42, 43]);
    }

    #[test]
    fn a_v1_sandbox_puts_its_slots_in_the_pids_hierarchy_and_init_in_every_one() {
        let (tmp, layout) = fake_v1();
        let (set, failed) = CgroupSet::create(&layout, "paddock-9");
        assert!(failed.is_empty());
        let sb = set
            .create_sandbox(
                "sb-1",
                &CgroupLimits {
                    memory_bytes: Some(5000),
                    pids: None,
                    cpus: None,
                },
            )
            .unwrap();
        let pids = tmp.path().join("pids/paddock-9/sb-1");
        let mem = tmp.path().join("memory/process_api/abc/paddock-9/sb-1");
        assert!(
            pids.is_dir(),
            "the slots' hierarchy gets a directory without a limit"
        );
        assert!(!tmp.path().join("cpu/paddock-9/sb-1").exists());
        let plan = sb.join_plan();
        assert_eq!(plan.self_tasks.len(), 2, "{plan:?}");
        assert!(plan.self_tasks.contains(&pids.join("tasks")));
        assert!(plan.self_tasks.contains(&mem.join("tasks")));
        let slot = sb.slot(2).unwrap();
        assert_eq!(slot.dir(), pids.join("x2"));
        std::fs::write(pids.join("x2/tasks"), "").unwrap();
        let (_, clone_into) = slot.open_join().unwrap();
        assert!(
            !clone_into,
            "a v1 command writes itself into the slot's tasks"
        );
        std::fs::write(pids.join("x2/cgroup.procs"), "").unwrap();
        assert!(slot.is_empty());
        assert!(slot.kill(), "an empty slot has nothing to kill");
    }

    #[test]
    fn v1_subtree_is_written_in_a_fake_cgroupfs() {
        let (tmp, layout) = fake_v1();
        let (set, failed) = CgroupSet::create(&layout, "paddock-9");
        assert!(failed.is_empty());
        let cg = set
            .create_exec(
                "x2",
                &CgroupLimits {
                    memory_bytes: Some(5),
                    pids: Some(6),
                    cpus: Some(0.5),
                },
            )
            .unwrap();
        let mem = tmp.path().join("memory/process_api/abc/paddock-9/x2");
        assert_eq!(
            std::fs::read_to_string(mem.join("memory.limit_in_bytes")).unwrap(),
            "5"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("pids/paddock-9/x2/pids.max")).unwrap(),
            "6"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("cpu/paddock-9/x2/cpu.cfs_quota_us")).unwrap(),
            "50000"
        );
        assert_eq!(
            cg.join_plan(),
            JoinPlan {
                self_tasks: vec![mem.join("tasks"), tmp.path().join("cpu/paddock-9/x2/tasks")],
                shell_tasks: vec![tmp.path().join("pids/paddock-9/x2/tasks")],
                clone_into: None,
            }
        );
        std::fs::write(
            mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kills(), 2);
    }

    #[test]
    fn a_flat_set_puts_exec_cgroups_beside_us_and_never_removes_our_own() {
        let (tmp, layout) = fake_v1();
        let (set, failed) = CgroupSet::flat(&layout, "paddock-9-0");
        assert!(failed.is_empty());
        let cg = set
            .create_exec(
                "x3",
                &CgroupLimits {
                    memory_bytes: Some(5),
                    pids: Some(6),
                    cpus: None,
                },
            )
            .unwrap();
        let mem = tmp.path().join("memory/process_api/abc/paddock-9-0-x3");
        assert_eq!(
            std::fs::read_to_string(mem.join("memory.limit_in_bytes")).unwrap(),
            "5"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("pids/paddock-9-0-x3/pids.max")).unwrap(),
            "6"
        );
        assert_eq!(
            cg.join_plan(),
            JoinPlan {
                self_tasks: vec![mem.join("tasks")],
                shell_tasks: vec![tmp.path().join("pids/paddock-9-0-x3/tasks")],
                clone_into: None,
            }
        );
        // No cpu limit: no cpu cgroup (a v1 directory without limits would only cost).
        assert!(!tmp.path().join("cpu/paddock-9-0-x3").exists());
        assert!(!cg.has(Controller::Cpu));
        // A leftover flat exec cgroup is found by its owner's pid.
        assert_eq!(stale_owner("paddock-9-0-x3"), Some(9));
        // Removing the set leaves our own cgroups (and the exec's, which its guard removes).
        set.remove();
        assert!(tmp.path().join("memory/process_api/abc").is_dir());
        assert!(tmp.path().join("pids").is_dir());
        assert!(mem.is_dir());
    }

    /// Slot `k` of the fake v1 cgroupfs as the kernel would show it: `procs` in its
    /// `cgroup.procs` of every controller, `pids` counted, `ooms` OOM kills so far.
    fn fake_slot(root: &Path, k: usize, procs: &str, pids: &str, ooms: u64) {
        for c in ["memory/process_api/abc", "pids", "cpu"] {
            let d = root.join(c).join(slot_name(k));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("cgroup.procs"), procs).unwrap();
        }
        std::fs::write(
            root.join("pids").join(slot_name(k)).join("pids.current"),
            pids,
        )
        .unwrap();
        std::fs::write(
            root.join("memory/process_api/abc")
                .join(slot_name(k))
                .join("memory.oom_control"),
            format!("oom_kill_disable 0\nunder_oom 0\noom_kill {ooms}\n"),
        )
        .unwrap();
    }

    #[test]
    fn a_flat_v1_set_reuses_free_empty_slots_and_holds_them_locked() {
        let (tmp, layout) = fake_v1();
        let root = tmp.path();
        let (set, failed) = CgroupSet::flat(&layout, "paddock-9-0");
        assert!(failed.is_empty());
        assert!(set.is_pooled());
        // Slot 0 is free and empty; slot 1 still holds a process (an exec that ended
        // without waiting for its jail); slot 2 has a process counted but not yet reaped.
        fake_slot(root, 0, "", "0\n", 4);
        fake_slot(root, 1, "4242\n", "1\n", 0);
        fake_slot(root, 2, "", "1\n", 0);
        fake_slot(root, 3, "", "0\n", 0);
        let limits = CgroupLimits {
            memory_bytes: Some(5),
            pids: Some(6),
            cpus: None,
        };
        let first = set.create_exec("x0", &limits).unwrap();
        assert!(first.is_pooled());
        let mem0 = root.join("memory/process_api/abc").join(slot_name(0));
        assert_eq!(
            first.join_plan(),
            JoinPlan {
                self_tasks: vec![mem0.join("tasks")],
                shell_tasks: vec![root.join("pids").join(slot_name(0)).join("tasks")],
                clone_into: None,
            }
        );
        assert_eq!(
            std::fs::read_to_string(mem0.join("memory.limit_in_bytes")).unwrap(),
            "5"
        );
        assert_eq!(
            std::fs::read_to_string(mem0.join("memory.memsw.limit_in_bytes")).unwrap(),
            "5"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("pids").join(slot_name(0)).join("pids.max")).unwrap(),
            "6"
        );
        // The slot's earlier OOM kills are not this exec's.
        assert_eq!(first.oom_kills(), 0);
        std::fs::write(mem0.join("memory.oom_control"), "oom_kill 5\n").unwrap();
        assert_eq!(first.oom_kills(), 1);
        // While the first is held (by any clone), the next claim skips the busy slots.
        let held = first.clone();
        drop(first);
        let second = set.create_exec("x1", &limits).unwrap();
        assert_eq!(
            second.join_plan().self_tasks[0],
            root.join("memory/process_api/abc")
                .join(slot_name(3))
                .join("tasks")
        );
        // Another process's lock excludes as well (flock is per open file).
        let other = std::fs::File::open(mem0.join("cgroup.procs")).unwrap();
        assert!(!try_lock_exclusive(&other).unwrap());
        // Removing a slot keeps it; dropping the last holder releases it.
        held.remove();
        assert!(mem0.is_dir());
        drop(held);
        assert!(try_lock_exclusive(&other).unwrap());
        drop(other);
        let again = set.create_exec("x2", &limits).unwrap();
        assert_eq!(again.join_plan().self_tasks[0], mem0.join("tasks"));
        // Every slot taken: the exec gets a cgroup of its own, removed as before.
        let mut held = vec![again, second];
        for k in 4..SLOTS {
            fake_slot(root, k, "", "0\n", 0);
            held.push(set.create_exec("x", &limits).unwrap());
        }
        let own = set.create_exec("x9", &limits).unwrap();
        assert!(!own.is_pooled());
        let dir = root.join("memory/process_api/abc/paddock-9-0-x9");
        assert!(dir.is_dir());
        // (A real cgroupfs removes a directory with its control files; the fake needs help.)
        for d in [dir.clone(), root.join("pids/paddock-9-0-x9")] {
            for f in std::fs::read_dir(&d).unwrap().flatten() {
                std::fs::remove_file(f.path()).unwrap();
            }
        }
        own.remove();
        assert!(!dir.exists());
        // Slots are never taken for a stale subtree by the sweep.
        assert_eq!(stale_owner(&slot_name(3)), None);
    }

    #[test]
    fn v1_memory_limits_are_written_so_that_memsw_never_falls_below_memory() {
        let l = CgroupLimits {
            memory_bytes: Some(7),
            pids: None,
            cpus: None,
        };
        let files: Vec<&str> = limit_writes(1, Controller::Memory, &l)
            .iter()
            .map(|w| w.0)
            .collect();
        assert_eq!(
            files,
            [
                "memory.memsw.limit_in_bytes",
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                "memory.swappiness"
            ]
        );
    }

    #[test]
    fn pids_alone_is_joined_by_the_shell_and_a_shared_hierarchy_by_init() {
        let d = |p: &str| PathBuf::from(p);
        let cg = ExecCgroup {
            dirs: vec![
                (Controller::Memory, 1, d("/m/x")),
                (Controller::Pids, 1, d("/p/x")),
            ],
            ..ExecCgroup::default()
        };
        let plan = cg.join_plan();
        assert_eq!(plan.self_tasks, vec![d("/m/x/tasks")]);
        assert_eq!(plan.shell_tasks, vec![d("/p/x/tasks")]);
        // memory and pids co-mounted in one hierarchy: one directory, joined by init.
        let cg = ExecCgroup {
            dirs: vec![
                (Controller::Memory, 1, d("/mp/x")),
                (Controller::Pids, 1, d("/mp/x")),
            ],
            ..ExecCgroup::default()
        };
        let plan = cg.join_plan();
        assert_eq!(plan.self_tasks, vec![d("/mp/x/tasks")]);
        assert!(plan.shell_tasks.is_empty());
    }

    #[test]
    fn a_flat_v2_set_is_not_pooled() {
        let (_tmp, _own, layout) = fake_v2("system.slice/paddock.service", "memory pids", "");
        let (set, _) = CgroupSet::flat(&layout, "paddock-4-1");
        assert!(!set.is_pooled());
        let (tmp, layout) = fake_v1();
        let (set, _) = CgroupSet::create(&layout, "paddock-9");
        assert!(
            !set.is_pooled(),
            "a long-lived subtree makes a cgroup per exec"
        );
        drop(tmp);
    }

    #[test]
    fn a_flat_set_enables_v2_controllers_in_our_own_cgroup() {
        let (_tmp, own, layout) = fake_v2("system.slice/paddock.service", "memory pids", "");
        let (set, failed) = CgroupSet::flat(&layout, "paddock-4-1");
        assert!(failed.is_empty(), "{failed:?}");
        assert!(set.has(Controller::Memory) && set.has(Controller::Pids));
        assert!(!set.has(Controller::Cpu));
        assert!(
            std::fs::read_to_string(own.join("cgroup.subtree_control"))
                .unwrap()
                .starts_with('+')
        );
        let cg = set
            .create_exec(
                "x0",
                &CgroupLimits {
                    memory_bytes: Some(1000),
                    pids: Some(7),
                    cpus: None,
                },
            )
            .unwrap();
        let d = own.join("paddock-4-1-x0");
        assert_eq!(std::fs::read_to_string(d.join("pids.max")).unwrap(), "7");
        assert_eq!(
            cg.join_plan(),
            JoinPlan {
                self_tasks: vec![],
                shell_tasks: vec![],
                clone_into: Some(d.clone()),
            }
        );
    }

    #[test]
    fn v2_delegation_moves_only_paddock_and_only_down() {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path().join("paddock.service");
        std::fs::create_dir_all(&own).unwrap();
        // Only Paddock (pid 42) in its (non-root: it has a type) cgroup: it moves down.
        std::fs::write(own.join("cgroup.type"), "domain\n").unwrap();
        std::fs::write(own.join("cgroup.procs"), "42\n").unwrap();
        delegate_v2(&own, 42).unwrap();
        let leaf = own.join("paddock-42-supervisor");
        assert_eq!(
            std::fs::read_to_string(leaf.join("cgroup.procs")).unwrap(),
            "42"
        );
        // Others beside it: nothing is moved, and the error says why and what to do.
        std::fs::write(own.join("cgroup.procs"), "42\n7\n9\n").unwrap();
        std::fs::remove_dir_all(&leaf).unwrap();
        let e = delegate_v2(&own, 42).unwrap_err();
        assert!(matches!(e, CgroupError::Shared { others: 2, .. }), "{e}");
        assert!(e.to_string().contains("Delegate=yes"), "{e}");
        assert!(!leaf.exists());
        // Empty (we moved down earlier): nothing to do.
        std::fs::write(own.join("cgroup.procs"), "").unwrap();
        delegate_v2(&own, 42).unwrap();
        assert!(!leaf.exists());
        // A v2 controller of a shared cgroup is reported unusable, never half set up.
        std::fs::write(own.join("cgroup.procs"), "42\n7\n").unwrap();
        std::fs::write(own.join("cgroup.controllers"), "memory").unwrap();
        let mi = format!(
            "30 1 0:26 / {} rw - cgroup2 cgroup2 rw\n",
            tmp.path().display()
        );
        let layout = discover(&mi, "0::/paddock.service\n", |d| {
            std::fs::read_to_string(d.join("cgroup.controllers")).ok()
        });
        let (set, failed) = CgroupSet::create(&layout, "paddock-42-0");
        assert!(set.bases.is_empty());
        assert!(matches!(
            failed[..],
            [(Controller::Memory, CgroupError::Shared { .. })]
        ));
        assert!(!own.join("paddock-42-0").exists());
    }

    #[test]
    fn the_root_cgroup_needs_no_delegation() {
        // The root has no `cgroup.type` and is exempt from "no internal processes".
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("cgroup.procs"), "1\n2\n42\n").unwrap();
        delegate_v2(tmp.path(), 42).unwrap();
        assert!(!tmp.path().join(supervisor_name(42)).exists());
    }

    #[test]
    fn removing_a_set_gives_back_the_controllers_it_enabled_unless_still_used() {
        let pid = std::process::id();
        let (_tmp, own, layout) = fake_v2("job", "memory pids", &format!("{pid}\n"));
        std::fs::write(own.join("cgroup.subtree_control"), "").unwrap();
        let (set, failed) = CgroupSet::flat(&layout, &format!("paddock-{pid}-0"));
        assert!(failed.is_empty(), "{failed:?}");
        assert!(own.join(supervisor_name(pid)).is_dir());
        // Another child cgroup still there: nothing is given back.
        let exec = own.join(format!("paddock-{pid}-0-x0"));
        std::fs::create_dir(&exec).unwrap();
        std::fs::write(own.join("cgroup.subtree_control"), "memory pids").unwrap();
        set.remove();
        assert_eq!(
            std::fs::read_to_string(own.join("cgroup.subtree_control")).unwrap(),
            "memory pids"
        );
        // Only Paddock's leaf left: its controllers are disabled again (a plain file keeps
        // the last write).
        std::fs::remove_dir(&exec).unwrap();
        set.remove();
        assert!(
            std::fs::read_to_string(own.join("cgroup.subtree_control"))
                .unwrap()
                .starts_with('-')
        );
        // Controllers that were enabled before Paddock came are not Paddock's to disable.
        std::fs::write(own.join("cgroup.subtree_control"), "memory pids").unwrap();
        let (set, _) = CgroupSet::flat(&layout, &format!("paddock-{pid}-1"));
        set.remove();
        assert_eq!(
            std::fs::read_to_string(own.join("cgroup.subtree_control")).unwrap(),
            "memory pids"
        );
    }

    #[test]
    fn the_supervisor_leaf_is_not_taken_for_our_cgroup() {
        let cg = "4:memory:/a\n0::/system.slice/paddock.service/paddock-42-supervisor\n";
        assert_eq!(
            without_supervisor(cg, 42),
            "4:memory:/a\n0::/system.slice/paddock.service\n"
        );
        assert_eq!(
            without_supervisor("0::/paddock-42-supervisor\n", 42),
            "0::/\n"
        );
        // Another process's leaf, or a name that merely ends alike, is kept.
        assert_eq!(
            without_supervisor("0::/x/paddock-43-supervisor\n", 42),
            "0::/x/paddock-43-supervisor\n"
        );
        assert_eq!(
            without_supervisor("0::/xpaddock-42-supervisor\n", 42),
            "0::/xpaddock-42-supervisor\n"
        );
        assert_eq!(stale_owner(&supervisor_name(42)), Some(42));
    }

    #[test]
    fn stale_subtrees_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("pids");
        for d in [
            "paddock-111-0/x1",
            "paddock-111-0/sb-4/x0",
            "paddock-111-0/sb-4/x7",
            "paddock-222/x2",
            "paddock-333-1",
            "other",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let mut layout = Layout::default();
        layout.controllers.insert(
            Controller::Pids,
            Location {
                version: 1,
                dir: root.clone(),
            },
        );
        assert_eq!(sweep_stale(&layout, |pid| pid == 333).subtrees, 2);
        assert!(!root.join("paddock-111-0").exists());
        assert!(!root.join("paddock-222").exists());
        assert!(root.join("paddock-333-1").exists(), "the owner is alive");
        assert!(root.join("other").exists());
        assert_eq!(stale_owner("paddock-12-3"), Some(12));
        assert_eq!(stale_owner("paddock-probe-12"), None);
    }

    #[test]
    fn oom_parsing() {
        assert_eq!(parse_oom_kills("oom 3\noom_kill 2\n"), 2);
        assert_eq!(parse_oom_kills("nothing"), 0);
    }
}
