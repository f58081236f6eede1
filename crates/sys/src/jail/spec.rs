//! What a jail is made of ([`JailSpec`]) and what it runs ([`JailCommand`]): plain data,
//! built by the runtime's planning and read by the parent before the clone.

use std::os::fd::OwnedFd;

use crate::landlock::LandlockPlan;
use crate::mountplan::MountPlan;

/// A resource limit to set in the jail (`RLIMIT_*`, soft, hard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// `libc::RLIMIT_*`.
    pub resource: i32,
    /// Soft and hard value (the jail sets both; lowering a hard limit needs no privilege).
    pub value: u64,
}

/// Everything needed to spawn one jailed command.
#[derive(Debug, Clone)]
pub struct JailSpec {
    /// The root to build.
    pub mounts: MountPlan,
    /// The landlock ruleset (`None`: landlock unavailable and allowed to be skipped).
    pub landlock: Option<LandlockPlan>,
    /// The seccomp program (from [`crate::seccomp::build_program`]).
    pub seccomp: std::sync::Arc<crate::seccomp::BpfProgram>,
    /// Host uid the sandbox runs as (mapped to itself).
    pub uid: u32,
    /// Host gid the sandbox runs as.
    pub gid: u32,
    /// Whether Paddock runs as root (then supplementary groups are dropped with setgroups;
    /// otherwise setgroups must be denied before an unprivileged gid map can be written).
    pub privileged: bool,
    /// Which network namespace the jail gets.
    pub net: NetMode,
    /// Hostname inside.
    pub hostname: String,
    /// Program to execute (absolute jail path); its argv comes with the [`JailCommand`].
    pub program: String,
    /// Limits.
    pub rlimits: Vec<Rlimit>,
    /// The exec's cgroups: v1 `tasks` files init joins by itself as its first step, and the
    /// v2 directory init is cloned into.
    pub cgroup: crate::cgroup::JoinPlan,
    /// Highest capability number of this kernel (`/proc/sys/kernel/cap_last_cap`).
    pub cap_last_cap: u32,
    /// Start the shell as soon as the jail is built, before its command comes: the shell's
    /// `execve`, dynamic loading and relocation then happen while the jail waits, and the
    /// command goes straight to the waiting shell. Needs [`super::SHELL_PRELOAD`] at
    /// [`super::SHELL_PRELOAD_PATH`] in the root, a dynamically linked `program`, and commands of
    /// the form `[name, "-c", COMMAND]` to gain anything (any other is `execve`d as is).
    pub waiting_shell: bool,
    /// The locale a waiting shell loads while it waits (the `LC_ALL` or `LANG` its command
    /// will most likely have): the shell's own `setlocale` then reads no file. `None`: none.
    pub shell_locale: Option<String>,
    /// One user namespace per entry of `mounts.idmaps`, holding that owner's mapping to
    /// `uid`/`gid` (from [`crate::idmap::userns_for`]).
    pub idmap_userns: Vec<std::sync::Arc<OwnedFd>>,
}

impl JailSpec {
    /// Whether the root is built by host root before the jail takes the sandbox's ids (a
    /// root Paddock: no user namespace, so the mounts can come from any host directory
    /// whatever its owner and mode, and per-user kernel counters are charged to the
    /// sandbox's own uid), or inside a user namespace of the jail's own (an unprivileged
    /// Paddock, which can only map its own uid).
    pub fn privileged_mounts(&self) -> bool {
        self.privileged
    }
}

/// The per-exec part of a jail, sent to a built jail's init: what to run, with which
/// environment, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailCommand {
    /// argv of [`JailSpec::program`] (argv\[0\] included).
    pub argv: Vec<String>,
    /// The environment.
    pub env: Vec<(String, String)>,
    /// Working directory (jail path).
    pub cwd: String,
}

/// Most bytes a command message may take (argv, environment and cwd with their NULs): the
/// kernel's own `execve` limit is lower (`ARG_MAX`, a quarter of the stack limit, 2 MiB by
/// default), so no command `execve` accepts is refused here.
pub const COMMAND_MAX_BYTES: usize = 4 << 20;
/// Most argv entries of a command.
pub const COMMAND_MAX_ARGS: usize = 1024;
/// Most environment entries of a command.
pub const COMMAND_MAX_ENV: usize = 4096;

/// The network namespace of a jail.
#[derive(Debug, Clone)]
pub enum NetMode {
    /// The host's network (`network: host`).
    Host,
    /// A fresh namespace per exec with only loopback (when Paddock is not root and so cannot
    /// join a namespace it created earlier).
    PerExec,
    /// Join this namespace (from [`super::create_netns`]): the sandbox keeps one loopback-only
    /// network across execs, so a server started by one exec is reachable by the next, and
    /// no namespace is created and torn down per exec.
    Join(std::sync::Arc<OwnedFd>),
}
