//! Spawning one jailed command: the *apply* step.
//!
//! Design (one exec = one short-lived set of namespaces):
//!
//! 1. The parent (a long-lived spawner thread of the runtime) prepares everything — C
//!    strings, the mount ops, the landlock plan, the seccomp program, rlimits, a buffer for
//!    the command, the shell's stack, the exec cgroups' v1 `tasks` files opened for writing —
//!    then calls `clone(CLONE_NEWUSER | NEWNS | NEWPID | NEWIPC | NEWUTS | NEWCGROUP
//!    [| NEWNET] | CLONE_PIDFD)` with no new stack (fork semantics); with a v2 exec cgroup,
//!    `clone3` with `CLONE_INTO_CGROUP` as well, so init is born inside it.
//! 2. The child is pid 1 of the new pid namespace: the exec's *init*. First it moves itself
//!    into its v1 cgroups (see `cgroup::ExecCgroup::join_plan` for why itself), then waits on
//!    a sync pipe while the parent writes its uid/gid maps (and, on a kernel older than 5.7
//!    with a v2 exec cgroup, its pid into `cgroup.procs`).
//! 3. Init opens every bind source (`O_PATH`) while it still holds its original host
//!    credentials, switches to the sandbox uid/gid (keeping its capabilities *inside* the new
//!    user namespace), builds the root on a tmpfs, mounts a fresh procfs, sets the hostname,
//!    brings `lo` up, `pivot_root`s into the new root and detaches the old one, creates the
//!    landlock ruleset, applies rlimits, drops every capability, sets `no_new_privs`, makes
//!    itself non-dumpable (its memory is a copy of Paddock's) and installs the seccomp filter
//!    on itself (the shell inherits it).
//! 4. Init then waits for its command (argv, environment, cwd) on the sync pipe: the jail is
//!    built before the command is known, so a runtime can build the next exec's jail ahead
//!    of time ([`PendingJail`]) and an exec pays only for the shell. Init starts the shell
//!    with `CLONE_VM | CLONE_VFORK` (no copy of its address space), which points stdio at
//!    the pipes, `chdir`s to the cwd, restricts itself with landlock, and `execve`s
//!    `/bin/bash -c CMD`. With [`JailSpec::waiting_shell`] init starts the shell at once,
//!    with a placeholder argv and environment and the shell preload ([`SHELL_PRELOAD`],
//!    `zygote/zygote.rs`); the shell then reads the command from the sync pipe itself, before
//!    bash's `main`, so its `execve` and dynamic loading are done before the command is
//!    known.
//! 5. Init reaps every process of the namespace, reports the shell's wait status on the
//!    status pipe as soon as the shell exits, and lives on while background processes remain.
//!    Killing init (SIGKILL through its pidfd) makes the kernel kill the whole namespace, so
//!    `setsid` or double-forked children cannot outlive a timeout or a reset.
//!
//! Invariant: between `clone` and `execve` the children only call raw syscalls on memory
//! prepared before the clone. No allocation, no locking, no formatting, no panics.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::landlock::{LandlockPlan, ruleset_attr_size};
use crate::mountplan::{MountOp, MountPlan, ms};
use crate::process::{PidFd, WaitStatus};

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
    /// command goes straight to the waiting shell. Needs [`SHELL_PRELOAD`] at
    /// [`SHELL_PRELOAD_PATH`] in the root, a dynamically linked `program`, and commands of
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
const COMMAND_HEADER: usize = 12;
/// The shell child's stack before `execve`: it runs a dozen raw syscalls and no formatting.
const SHELL_STACK_BYTES: usize = 256 * 1024;

/// A [`JailCommand`] encoded for init: `[body length, argc, envc]` (u32, native order), then
/// `cwd\0 argv…\0 KEY=VALUE…\0`. Encoding checks every limit, so a message that
/// encodes is one init accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedCommand(Vec<u8>);

impl JailCommand {
    /// Encodes the command, refusing NUL bytes and anything over the limits.
    pub fn encode(&self) -> Result<EncodedCommand, SpawnError> {
        if self.argv.is_empty() || self.argv.len() > COMMAND_MAX_ARGS {
            return Err(SpawnError::TooLarge {
                what: "argv (1 to 1024 entries)",
            });
        }
        if self.env.len() > COMMAND_MAX_ENV {
            return Err(SpawnError::TooLarge {
                what: "environment (at most 4096 entries)",
            });
        }
        let mut out = vec![0u8; COMMAND_HEADER];
        let mut put = |bytes: &[&[u8]], what: &'static str| -> Result<(), SpawnError> {
            for b in bytes {
                if b.contains(&0) {
                    return Err(SpawnError::Nul { what });
                }
                out.extend_from_slice(b);
            }
            out.push(0);
            Ok(())
        };
        put(&[self.cwd.as_bytes()], "cwd")?;
        for a in &self.argv {
            put(&[a.as_bytes()], "command")?;
        }
        for (k, v) in &self.env {
            put(&[k.as_bytes(), b"=", v.as_bytes()], "environment")?;
        }
        let body = out.len() - COMMAND_HEADER;
        if body > COMMAND_MAX_BYTES {
            return Err(SpawnError::TooLarge {
                what: "command and environment (at most 4 MiB)",
            });
        }
        // The limits above keep all three far below u32::MAX.
        out[0..4].copy_from_slice(&(body as u32).to_ne_bytes());
        out[4..8].copy_from_slice(&(self.argv.len() as u32).to_ne_bytes());
        out[8..12].copy_from_slice(&(self.env.len() as u32).to_ne_bytes());
        Ok(EncodedCommand(out))
    }
}

impl EncodedCommand {
    /// The bytes sent to init.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The network namespace of a jail.
#[derive(Debug, Clone)]
pub enum NetMode {
    /// The host's network (`network: host`).
    Host,
    /// A fresh namespace per exec with only loopback (when Paddock is not root and so cannot
    /// join a namespace it created earlier).
    PerExec,
    /// Join this namespace (from [`create_netns`]): the sandbox keeps one loopback-only
    /// network across execs, so a server started by one exec is reachable by the next, and
    /// no namespace is created and torn down per exec.
    Join(std::sync::Arc<OwnedFd>),
}

/// Creates a loopback-only network namespace (with `lo` up) and returns a descriptor that
/// keeps it alive. A short-lived thread of our own moves itself into a new network
/// namespace (`unshare(CLONE_NEWNET)` changes only the calling thread), brings `lo` up
/// there, opens its namespace and ends; nothing is forked, so the cost does not grow with
/// Paddock's memory. Creating (and later joining) a network namespace needs CAP_SYS_ADMIN
/// in Paddock's user namespace, so this is for a root Paddock. The namespace belongs to
/// Paddock's user namespace: a jail that joins it has no capability over it (its
/// capabilities are in the jail's own user namespace), so it cannot reconfigure it.
pub fn create_netns() -> io::Result<OwnedFd> {
    std::thread::Builder::new()
        .name("paddock-netns".into())
        .spawn(|| {
            // SAFETY: unshare affects only this thread, which ends right after; no other
            // code runs on it.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: raw socket/ioctl on a local ifreq.
            if unsafe { loopback_up() } < 0 {
                return Err(io::Error::other(format!(
                    "could not bring up loopback in the new network namespace: {}",
                    io::Error::last_os_error()
                )));
            }
            std::fs::File::open("/proc/thread-self/ns/net").map(OwnedFd::from)
        })?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the network namespace thread panicked")))
}

/// Joins `target` on the calling thread for the duration of `f`, then returns to the
/// thread's previous network namespace. Only the calling thread is affected.
fn in_netns<T>(target: &OwnedFd, f: impl FnOnce() -> T) -> Result<T, SpawnError> {
    let home = std::fs::File::open("/proc/thread-self/ns/net")
        .map_err(os("open the spawner's network namespace"))?;
    // SAFETY: setns on valid namespace descriptors; affects only this thread.
    if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(os("join the sandbox's network namespace")(
            io::Error::last_os_error(),
        ));
    }
    let out = f();
    // SAFETY: as above.
    if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        // The thread would stay in a sandbox's network and hand it to the next jail: never
        // let that happen.
        tracing::error!("could not return the spawner thread to its network namespace; aborting");
        std::process::abort();
    }
    Ok(out)
}

/// Errors of spawning.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A string contains NUL.
    #[error("{what} contains a NUL byte")]
    Nul {
        /// Which.
        what: &'static str,
    },
    /// A command over the limits.
    #[error("{what} is too large")]
    TooLarge {
        /// Which part, with its limit.
        what: &'static str,
    },
    /// A syscall in the parent failed.
    #[error("{step}: {source}")]
    Os {
        /// What was being done.
        step: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn os(step: &'static str) -> impl FnOnce(io::Error) -> SpawnError {
    move |source| SpawnError::Os { step, source }
}

/// The steps of a jail's child, reported by number on the status pipe when one fails.
/// The numbers are a wire format shared with the shell preload (`zygote/proto.rs`): append,
/// never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Step {
    /// wait for the parent.
    WaitForParent = 0,
    /// open a mount source.
    OpenSource = 1,
    /// drop supplementary groups.
    SetGroups = 2,
    /// switch to the sandbox gid.
    SetGid = 3,
    /// switch to the sandbox uid.
    SetUid = 4,
    /// make mounts private.
    MakePrivate = 5,
    /// mount the root tmpfs.
    MountTmpfs = 6,
    /// create a directory in the jail.
    Mkdir = 7,
    /// create a symlink in the jail.
    Symlink = 8,
    /// create a device mount point.
    DeviceMountPoint = 9,
    /// bind mount.
    Bind = 10,
    /// remount read-only.
    Remount = 11,
    /// mount proc.
    MountProc = 12,
    /// set the hostname.
    Hostname = 13,
    /// bring up loopback.
    Loopback = 14,
    /// pivot_root.
    PivotRoot = 15,
    /// detach the old root.
    DetachOldRoot = 16,
    /// create the landlock ruleset.
    LandlockCreate = 17,
    /// add a landlock rule.
    LandlockRule = 18,
    /// set a resource limit.
    Rlimit = 19,
    /// drop the capability bounding set.
    DropBoundingSet = 20,
    /// clear ambient capabilities.
    ClearAmbient = 21,
    /// drop capabilities.
    DropCapabilities = 22,
    /// set no_new_privs.
    NoNewPrivs = 23,
    /// fork the shell.
    ForkShell = 24,
    /// set up stdio.
    Stdio = 25,
    /// change to the working directory.
    Cwd = 26,
    /// restrict with landlock.
    LandlockRestrict = 27,
    /// install the seccomp filter.
    Seccomp = 28,
    /// execute the shell.
    ExecShell = 29,
    /// set the parent-death signal.
    ParentDeathSignal = 30,
    /// make init non-dumpable.
    NotDumpable = 31,
    /// join the exec cgroup.
    JoinCgroup = 32,
    /// read the command.
    ReadCommand = 33,
    /// write a file into the jail root.
    WriteFile = 34,
    /// enter a cgroup namespace rooted at the jail's cgroup.
    CgroupNamespace = 35,
    /// execute the sandbox's init.
    ExecInit = 36,
    /// make an idmapped bind mount.
    IdmappedBind = 37,
}

impl Step {
    /// Every step, in wire order.
    pub const ALL: [Step; 38] = {
        let mut all = [Step::WaitForParent; 38];
        let mut i = 0;
        while i < 38 {
            all[i] = match Step::from_wire(i as u32) {
                Some(s) => s,
                None => Step::WaitForParent,
            };
            i += 1;
        }
        all
    };

    /// What the step does, for messages (`"bind mount failed: …"`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::WaitForParent => "wait for the parent",
            Self::OpenSource => "open a mount source",
            Self::SetGroups => "drop supplementary groups",
            Self::SetGid => "switch to the sandbox gid",
            Self::SetUid => "switch to the sandbox uid",
            Self::MakePrivate => "make mounts private",
            Self::MountTmpfs => "mount the root tmpfs",
            Self::Mkdir => "create a directory in the jail",
            Self::Symlink => "create a symlink in the jail",
            Self::DeviceMountPoint => "create a device mount point",
            Self::Bind => "bind mount",
            Self::Remount => "remount read-only",
            Self::MountProc => "mount proc",
            Self::Hostname => "set the hostname",
            Self::Loopback => "bring up loopback",
            Self::PivotRoot => "pivot_root",
            Self::DetachOldRoot => "detach the old root",
            Self::LandlockCreate => "create the landlock ruleset",
            Self::LandlockRule => "add a landlock rule",
            Self::Rlimit => "set a resource limit",
            Self::DropBoundingSet => "drop the capability bounding set",
            Self::ClearAmbient => "clear ambient capabilities",
            Self::DropCapabilities => "drop capabilities",
            Self::NoNewPrivs => "set no_new_privs",
            Self::ForkShell => "fork the shell",
            Self::Stdio => "set up stdio",
            Self::Cwd => "change to the working directory",
            Self::LandlockRestrict => "restrict with landlock",
            Self::Seccomp => "install the seccomp filter",
            Self::ExecShell => "execute the shell",
            Self::ParentDeathSignal => "set the parent-death signal",
            Self::NotDumpable => "make init non-dumpable",
            Self::JoinCgroup => "join the exec cgroup",
            Self::ReadCommand => "read the command",
            Self::WriteFile => "write a file into the jail root",
            Self::CgroupNamespace => "enter the cgroup namespace",
            Self::ExecInit => "execute the sandbox's init",
            Self::IdmappedBind => "make an idmapped bind mount",
        }
    }

    /// The step with wire number `n`.
    pub const fn from_wire(n: u32) -> Option<Self> {
        Some(match n {
            0 => Self::WaitForParent,
            1 => Self::OpenSource,
            2 => Self::SetGroups,
            3 => Self::SetGid,
            4 => Self::SetUid,
            5 => Self::MakePrivate,
            6 => Self::MountTmpfs,
            7 => Self::Mkdir,
            8 => Self::Symlink,
            9 => Self::DeviceMountPoint,
            10 => Self::Bind,
            11 => Self::Remount,
            12 => Self::MountProc,
            13 => Self::Hostname,
            14 => Self::Loopback,
            15 => Self::PivotRoot,
            16 => Self::DetachOldRoot,
            17 => Self::LandlockCreate,
            18 => Self::LandlockRule,
            19 => Self::Rlimit,
            20 => Self::DropBoundingSet,
            21 => Self::ClearAmbient,
            22 => Self::DropCapabilities,
            23 => Self::NoNewPrivs,
            24 => Self::ForkShell,
            25 => Self::Stdio,
            26 => Self::Cwd,
            27 => Self::LandlockRestrict,
            28 => Self::Seccomp,
            29 => Self::ExecShell,
            30 => Self::ParentDeathSignal,
            31 => Self::NotDumpable,
            32 => Self::JoinCgroup,
            33 => Self::ReadCommand,
            34 => Self::WriteFile,
            35 => Self::CgroupNamespace,
            36 => Self::ExecInit,
            37 => Self::IdmappedBind,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

mod preload {
    // The constants shared with the shell preload (`zygote/zygote.rs`).
    #![allow(dead_code)]
    include!("../zygote/proto.rs");
}
use preload::{
    ZYGOTE_ARG_BYTES, ZYGOTE_CMD_FD, ZYGOTE_ENV_BYTES, ZYGOTE_ENV_KEY, ZYGOTE_ENV_SLOTS,
    ZYGOTE_LOCALE_KEY, ZYGOTE_PLACEHOLDER, ZYGOTE_STATUS_FD,
};
const _: () = {
    // The preload reports these steps by number, and records as init writes them.
    assert!(preload::ZYGOTE_S_CWD == Step::Cwd as u32);
    assert!(preload::ZYGOTE_S_EXEC == Step::ExecShell as u32);
    assert!(preload::ZYGOTE_S_COMMAND == Step::ReadCommand as u32);
    assert!(preload::ZYGOTE_TAG_SETUP == TAG_SETUP);
    assert!(ZYGOTE_PLACEHOLDER.len() < ZYGOTE_ARG_BYTES);
};

/// The shell preload (built from `zygote/zygote.rs` by `build.rs`): with it at
/// [`SHELL_PRELOAD_PATH`] in the root, a jail can start its shell before the command is
/// known ([`JailSpec::waiting_shell`]).
pub const SHELL_PRELOAD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/zygote.so"));
/// Where the runtime puts [`SHELL_PRELOAD`] in the jail.
pub const SHELL_PRELOAD_PATH: &str = "/.paddock/shell-preload.so";
/// The descriptor a waiting shell reads its command from, and the one it reports a failed
/// step on (a [`StatusRecord`]).
pub const WAITING_SHELL_FDS: (i32, i32) = (ZYGOTE_CMD_FD, ZYGOTE_STATUS_FD);

const TAG_EXIT: u32 = 1;
const TAG_SETUP: u32 = 2;
const TAG_IDLE: u32 = 3;

/// A record read from the status pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusRecord {
    /// The shell ended.
    ShellExited(WaitStatus),
    /// Setting up the jail failed at a step with an errno.
    SetupFailed {
        /// The step.
        step: Step,
        /// OS error number.
        errno: i32,
    },
    /// Every process of the jail has ended; init waits to be killed (see `child_main`).
    Idle,
}

impl StatusRecord {
    /// Size of one record on the wire.
    pub const LEN: usize = 12;

    /// Decodes one record.
    pub fn parse(b: &[u8; Self::LEN]) -> Option<Self> {
        let tag = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        let a = i32::from_ne_bytes([b[4], b[5], b[6], b[7]]);
        let c = i32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
        match tag {
            TAG_EXIT => Some(Self::ShellExited(WaitStatus::from_raw(a))),
            TAG_IDLE => Some(Self::Idle),
            TAG_SETUP => {
                let step = u32::try_from(a).ok().and_then(Step::from_wire)?;
                Some(Self::SetupFailed { step, errno: c })
            }
            _ => None,
        }
    }

    fn encode(tag: u32, a: i32, c: i32) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0..4].copy_from_slice(&tag.to_ne_bytes());
        out[4..8].copy_from_slice(&a.to_ne_bytes());
        out[8..12].copy_from_slice(&c.to_ne_bytes());
        out
    }
}

/// A built jail whose init waits for its command ([`PendingJail::start`]). Dropping it
/// kills and reaps init.
#[derive(Debug)]
pub struct PendingJail {
    parts: Option<(JailChild, OwnedFd)>,
}

impl PendingJail {
    /// The waiting init.
    pub fn init(&self) -> Option<&PidFd> {
        self.parts.as_ref().map(|(c, _)| &c.init)
    }

    /// Sends the command: init forks the shell and the jail runs. Blocks only while the pipe
    /// is full (a message over 64 KiB and an init still building the jail). When init is
    /// gone (setup failed, or it was killed) the write fails with `EPIPE`; a setup failure is
    /// then also waiting on the status pipe of the returned error's jail, which is dropped.
    pub fn start(mut self, cmd: &EncodedCommand) -> Result<JailChild, SpawnError> {
        let Some((child, pipe)) = self.parts.take() else {
            return Err(os("send the command")(io::Error::other(
                "jail already used",
            )));
        };
        let mut off = 0usize;
        let bytes = cmd.as_bytes();
        while off < bytes.len() {
            // SAFETY: writing from a live buffer to our pipe's write end.
            let n = unsafe {
                libc::write(
                    pipe.as_raw_fd(),
                    bytes[off..].as_ptr().cast(),
                    bytes.len() - off,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.parts = Some((child, pipe));
                return Err(os("send the command")(e));
            }
            off += n as usize;
        }
        Ok(child)
    }
}

impl Drop for PendingJail {
    fn drop(&mut self) {
        if let Some((child, pipe)) = self.parts.take() {
            drop(pipe);
            let _ = child.init.kill();
            let _ = child.init.wait_blocking();
        }
    }
}

/// A running jail.
#[derive(Debug)]
pub struct JailChild {
    /// The exec's init (pid 1 of its namespace).
    pub init: PidFd,
    /// Status records ([`StatusRecord`]); EOF when init is gone.
    pub status: OwnedFd,
    /// The shell's stdout (non-blocking).
    pub stdout: OwnedFd,
    /// The shell's stderr (non-blocking).
    pub stderr: OwnedFd,
}

enum COp {
    Tmpfs {
        dst: CString,
        flags: u64,
        data: CString,
    },
    Mkdir {
        path: CString,
    },
    Symlink {
        target: CString,
        path: CString,
    },
    Touch {
        path: CString,
    },
    Bind {
        source: usize,
        dst: CString,
        recursive: bool,
    },
    IdmappedBind {
        source: usize,
        dst: CString,
        userns: RawFd,
    },
    Remount {
        dst: CString,
        flags: u64,
    },
    Proc {
        dst: CString,
    },
    Devpts {
        dst: CString,
    },
    File {
        path: CString,
        data: &'static [u8],
        mode: u32,
    },
}

fn cstr(s: &str, what: &'static str) -> Result<CString, SpawnError> {
    CString::new(s).map_err(|_| SpawnError::Nul { what })
}

fn cpath(p: &Path, what: &'static str) -> Result<CString, SpawnError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| SpawnError::Nul { what })
}

/// A private anonymous mapping, unmapped on drop. The command buffer and the shell's stack
/// are large and almost never touched: a mapping costs two syscalls and its untouched pages
/// nothing, where a heap buffer of that size would be zeroed (and made resident) by the
/// allocator on every jail once glibc has raised its mmap threshold past it.
struct AnonMap {
    ptr: *mut u8,
    len: usize,
}

impl AnonMap {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ptr: p.cast(), len })
    }
}

impl Drop for AnonMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping `new` created, once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The memory the child reads. Built before the clone; the child gets a private copy.
struct Prepared {
    sources: Vec<CString>,
    /// Per source: `None` to open as is, or its components to walk without following a
    /// symlink (see `MountSource::no_symlinks`).
    source_parts: Vec<Option<Vec<CString>>>,
    source_fds: Vec<RawFd>,
    ops: Vec<COp>,
    staging: CString,
    hostname: CString,
    program: CString,
    /// The command message lands here (pages are touched only by the read).
    cmd_buf: AnonMap,
    /// Pointers into `cmd_buf`, NULL-terminated, filled by init.
    argv_ptrs: Vec<*const libc::c_char>,
    env_ptrs: Vec<*const libc::c_char>,
    /// The waiting shell's start (see [`JailSpec::waiting_shell`]).
    waiting: Option<WaitingShell>,
    ll_rules: Vec<(CString, u64)>,
    ll: Option<(i32, u64, u64)>,
    rlimits: Vec<Rlimit>,
    uid: u32,
    gid: u32,
    privileged: bool,
    privileged_mounts: bool,
    new_net: bool,
    cap_last_cap: u32,
    /// argv of a sandbox's init (NULL-terminated pointers into `init_strings`).
    init_argv: Vec<*const libc::c_char>,
    /// Owns what `init_argv` points at.
    _init_strings: Vec<CString>,
    empty: CString,
    dot: CString,
    slash: CString,
    dev_null: CString,
    proc_s: CString,
    tmpfs_s: CString,
    devpts_s: CString,
    devpts_data: CString,
}

fn prepare(spec: &JailSpec) -> Result<Prepared, SpawnError> {
    let mut ops = Vec::with_capacity(spec.mounts.ops.len());
    for op in &spec.mounts.ops {
        ops.push(match op {
            MountOp::Tmpfs { dst, flags, data } => COp::Tmpfs {
                dst: cpath(dst, "mount path")?,
                flags: *flags,
                data: cstr(data, "tmpfs options")?,
            },
            MountOp::Mkdir { path } => COp::Mkdir {
                path: cpath(path, "mount path")?,
            },
            MountOp::Symlink { target, path } => COp::Symlink {
                target: cstr(target, "symlink target")?,
                path: cpath(path, "mount path")?,
            },
            MountOp::Touch { path } => COp::Touch {
                path: cpath(path, "mount path")?,
            },
            MountOp::Bind {
                source,
                dst,
                recursive,
            } => COp::Bind {
                source: *source,
                dst: cpath(dst, "mount path")?,
                recursive: *recursive,
            },
            MountOp::IdmappedBind { source, dst, idmap } => COp::IdmappedBind {
                source: *source,
                dst: cpath(dst, "mount path")?,
                userns: spec.idmap_userns.get(*idmap).map(|f| f.as_raw_fd()).ok_or(
                    SpawnError::Os {
                        step: "idmapped mount",
                        source: io::Error::other("no user namespace for an idmapping of the plan"),
                    },
                )?,
            },
            MountOp::Remount { dst, flags } => COp::Remount {
                dst: cpath(dst, "mount path")?,
                flags: *flags,
            },
            MountOp::Proc { dst } => COp::Proc {
                dst: cpath(dst, "mount path")?,
            },
            MountOp::Devpts { dst } => COp::Devpts {
                dst: cpath(dst, "mount path")?,
            },
            MountOp::File { path, data, mode } => COp::File {
                mode: *mode,
                path: cpath(path, "mount path")?,
                data,
            },
        });
    }
    let sources = spec
        .mounts
        .sources
        .iter()
        .map(|s| cpath(&s.path, "mount source"))
        .collect::<Result<Vec<_>, _>>()?;
    let source_parts = spec
        .mounts
        .sources
        .iter()
        .map(|s| {
            if !s.no_symlinks {
                return Ok(None);
            }
            if !s.path.is_absolute() {
                return Err(SpawnError::Nul {
                    what: "mount source (not absolute)",
                });
            }
            s.path
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(n) => Some(n),
                    _ => None,
                })
                .map(|n| {
                    CString::new(n.as_bytes()).map_err(|_| SpawnError::Nul {
                        what: "mount source",
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut init_strings = vec![cstr("paddock-init", "init")?];
    if spec.landlock.is_some() {
        init_strings.push(
            CString::new(crate::sandbox_jail::proto::INIT_ARG_LANDLOCK)
                .map_err(|_| SpawnError::Nul { what: "init" })?,
        );
    }
    let init_argv = init_strings
        .iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let mut ll_rules = Vec::new();
    let mut ll = None;
    if let Some(p) = &spec.landlock {
        for r in &p.rules {
            ll_rules.push((cstr(&r.path, "landlock path")?, r.access));
        }
        ll = Some((p.abi, p.handled_fs, p.scoped));
    }
    Ok(Prepared {
        waiting: if spec.waiting_shell {
            Some(WaitingShell::new(
                &spec.program,
                spec.shell_locale.as_deref(),
            )?)
        } else {
            None
        },
        source_fds: vec![-1; sources.len()],
        sources,
        source_parts,
        ops,
        staging: cpath(&spec.mounts.staging, "staging path")?,
        hostname: cstr(&spec.hostname, "hostname")?,
        program: cstr(&spec.program, "program")?,
        cmd_buf: AnonMap::new(COMMAND_MAX_BYTES).map_err(os("map the command buffer"))?,
        argv_ptrs: vec![std::ptr::null(); COMMAND_MAX_ARGS + 1],
        env_ptrs: vec![std::ptr::null(); COMMAND_MAX_ENV + 1],
        ll_rules,
        ll,
        rlimits: spec.rlimits.clone(),
        uid: spec.uid,
        gid: spec.gid,
        privileged: spec.privileged,
        privileged_mounts: spec.privileged_mounts(),
        new_net: matches!(spec.net, NetMode::PerExec),
        cap_last_cap: spec.cap_last_cap,
        init_argv,
        _init_strings: init_strings,
        empty: cstr("", "path")?,
        dot: cstr(".", "path")?,
        slash: cstr("/", "path")?,
        dev_null: cstr("/dev/null", "path")?,
        proc_s: cstr("proc", "fstype")?,
        tmpfs_s: cstr("tmpfs", "fstype")?,
        devpts_s: cstr("devpts", "fstype")?,
        devpts_data: cstr("newinstance,ptmxmode=0666,mode=0620", "devpts options")?,
    })
}

/// The waiting shell's argv (`[name, "-c", placeholder]`) and environment (`LD_PRELOAD`,
/// the program for commands that do not fit, the locale to load, padding): the preload writes the command and
/// its environment over these strings, so their sizes are the room it has.
struct WaitingShell {
    /// NULL-terminated pointers into `strings`.
    argv: Vec<*const libc::c_char>,
    env: Vec<*const libc::c_char>,
    /// Owns what the pointers point at (a `CString`'s bytes stay put when it moves).
    _strings: Vec<CString>,
}

/// A waiting shell's argv and environment as strings: `[name, "-c", placeholder]`, and
/// `LD_PRELOAD`, the program for commands that do not fit, the locale to load, and padding.
/// The preload writes the command and its environment over these, so their sizes are the
/// room it has (see `zygote/zygote.rs`).
pub fn waiting_shell_command(program: &str, locale: Option<&str>) -> (Vec<String>, Vec<String>) {
    let name = program.rsplit('/').next().unwrap_or(program);
    let mut placeholder = String::from_utf8_lossy(ZYGOTE_PLACEHOLDER).into_owned();
    while placeholder.len() < ZYGOTE_ARG_BYTES - 1 {
        placeholder.push(' ');
    }
    let key = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    let mut env: Vec<String> = vec![
        format!("LD_PRELOAD={SHELL_PRELOAD_PATH}"),
        format!("{}{program}", key(ZYGOTE_ENV_KEY)),
        format!("{}{}", key(ZYGOTE_LOCALE_KEY), locale.unwrap_or_default()),
    ];
    while env.len() < ZYGOTE_ENV_SLOTS - 1 {
        env.push("_=".into());
    }
    let used: usize = env.iter().map(|e| e.len() + 1).sum();
    let pad = ZYGOTE_ENV_BYTES.saturating_sub(used + 1).max("_PAD=".len());
    let mut last = String::from("_PAD=");
    while last.len() < pad {
        last.push('.');
    }
    env.push(last);
    (vec![name.into(), "-c".into(), placeholder], env)
}

impl WaitingShell {
    fn new(program: &str, locale: Option<&str>) -> Result<Self, SpawnError> {
        let (argv, env) = waiting_shell_command(program, locale);
        let mut strings = Vec::with_capacity(argv.len() + env.len());
        for b in argv.into_iter().chain(env) {
            strings.push(CString::new(b).map_err(|_| SpawnError::Nul { what: "program" })?);
        }
        let ptrs = |s: &[CString]| {
            s.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        Ok(Self {
            argv: ptrs(&strings[..3]),
            env: ptrs(&strings[3..]),
            _strings: strings,
        })
    }
}

/// Whether `program` can take the shell preload: an ELF executable with a dynamic loader
/// (`PT_INTERP`). A static shell ignores `LD_PRELOAD`, so its jails must not wait for it.
pub fn takes_preload(program: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(program) else {
        return false;
    };
    let mut head = [0u8; 64];
    if f.read_exact(&mut head).is_err() || &head[..4] != b"\x7fELF" || head[4] != 2 {
        return false;
    }
    // 64-bit, native byte order (this is the host's own shell).
    let u16_at = |b: &[u8], o: usize| u16::from_ne_bytes([b[o], b[o + 1]]) as usize;
    let u64_at = |b: &[u8], o: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[o..o + 8]);
        u64::from_ne_bytes(x)
    };
    let (phoff, phentsize, phnum) = (u64_at(&head, 32), u16_at(&head, 54), u16_at(&head, 56));
    if phentsize < 4 || phnum == 0 || phnum > 256 {
        return false;
    }
    let mut ph = vec![0u8; phentsize * phnum];
    use std::io::{Seek, SeekFrom};
    if f.seek(SeekFrom::Start(phoff)).is_err() || f.read_exact(&mut ph).is_err() {
        return false;
    }
    const PT_INTERP: u32 = 3;
    ph.chunks(phentsize)
        .any(|e| u32::from_ne_bytes([e[0], e[1], e[2], e[3]]) == PT_INTERP)
}

fn pipe_pair(step: &'static str) -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(os(step)(io::Error::last_os_error()));
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(r, step)?, above_stdio(w, step)?))
}

/// Moves a descriptor to >= 3, so the child can close everything else by ranges and use
/// 0..=2 for the shell's stdio.
fn above_stdio(fd: OwnedFd, step: &'static str) -> Result<OwnedFd, SpawnError> {
    if fd.as_raw_fd() >= 3 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC duplicates a valid descriptor.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(os(step)(io::Error::last_os_error()));
    }
    // SAFETY: `n` is a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    crate::process::set_nonblocking(fd)
}

/// Spawns the jail and starts `cmd` in it: [`build`] then [`PendingJail::start`].
pub fn spawn(spec: &JailSpec, cmd: &JailCommand) -> Result<JailChild, SpawnError> {
    let cmd = cmd.encode()?;
    build(spec)?.start(&cmd)
}

/// Builds the jail: returns once init is released and building the root; init then waits for
/// its command. Call it from a thread that lives as long as the jails it starts: init's
/// parent-death signal fires when *that thread* exits.
pub fn build(spec: &JailSpec) -> Result<PendingJail, SpawnError> {
    let (out_r, out_w) = pipe_pair("stdout pipe")?;
    let (err_r, err_w) = pipe_pair("stderr pipe")?;
    let cloned = clone_jail(spec, Some((&out_w, &err_w)), None)?;
    drop((out_w, err_w));
    let child = JailChild {
        init: cloned.init,
        status: cloned.status,
        stdout: out_r,
        stderr: err_r,
    };
    // From here on, dropping `pending` kills and reaps init.
    let pending = PendingJail {
        parts: Some((child, cloned.sync_w)),
    };
    cloned.setup?;
    if let Some((c, _)) = &pending.parts {
        set_nonblocking(&c.stdout).map_err(os("stdout pipe"))?;
        set_nonblocking(&c.stderr).map_err(os("stderr pipe"))?;
        set_nonblocking(&c.status).map_err(os("status pipe"))?;
    }
    Ok(pending)
}

/// A jail that lives as long as its sandbox, on its way up: once the root is built its
/// child `execve`s the sandbox's init ([`crate::sandbox_jail`]). `status` reaches end of
/// file when init runs (the child's copy was close-on-exec), or carries the failed step.
#[derive(Debug)]
pub struct BuildingSandbox {
    /// The jail's pid 1 (first the child building the root, then init).
    pub init: PidFd,
    /// Setup failures; end of file once init runs.
    pub status: OwnedFd,
    /// Paddock's end of init's control socket.
    pub control: OwnedFd,
}

/// Builds a sandbox's jail and starts `init` (a sealed memfd holding the init program) as
/// its pid 1. Same thread rule as [`build`]. Killing `init` through the returned pidfd ends
/// the jail with everything in it.
pub fn build_sandbox(spec: &JailSpec, init: &OwnedFd) -> Result<BuildingSandbox, SpawnError> {
    let mut pair = [0 as RawFd; 2];
    // SAFETY: socketpair writes two fresh descriptors into the array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    } < 0
    {
        return Err(os("control socket")(io::Error::last_os_error()));
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    let theirs = above_stdio(theirs, "control socket")?;
    let cloned = clone_jail(spec, None, Some((&theirs, init)))?;
    drop(theirs);
    let building = BuildingSandbox {
        init: cloned.init,
        status: cloned.status,
        control: ours,
    };
    if let Err(e) = cloned.setup {
        let _ = building.init.kill();
        let _ = building.init.wait_blocking();
        return Err(e);
    }
    drop(cloned.sync_w);
    set_nonblocking(&building.status).map_err(os("status pipe"))?;
    Ok(building)
}

/// The pidfd of this process, inherited by every jail's child so it can tell whether
/// Paddock is still there at the moments its parent-death signal is not armed (`-1` on a
/// kernel without pidfds: the signal alone then).
fn own_pidfd() -> RawFd {
    static OWN: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    OWN.get_or_init(|| {
        // SAFETY: pidfd_open of our own pid; the result is a fresh descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        above_stdio(fd, "pidfd").ok()
    })
    .as_ref()
    .map_or(-1, |f| f.as_raw_fd())
}

/// What [`clone_jail`] made. `setup` is the parent's part after the clone (maps, cgroup,
/// release); when it failed the child is still there and must be killed by the caller.
struct Cloned {
    init: PidFd,
    status: OwnedFd,
    sync_w: OwnedFd,
    setup: Result<(), SpawnError>,
}

/// Clones the jail's child and releases it. `stdio`: the write ends of a one-shot jail's
/// stdout and stderr; `sandbox`: the child's end of init's control socket and the init
/// program, for a sandbox's jail.
fn clone_jail(
    spec: &JailSpec,
    stdio: Option<(&OwnedFd, &OwnedFd)>,
    sandbox: Option<(&OwnedFd, &OwnedFd)>,
) -> Result<Cloned, SpawnError> {
    let mut p = prepare(spec)?;
    let fprog = libc::sock_fprog {
        len: u16::try_from(spec.seccomp.len()).map_err(|_| SpawnError::Os {
            step: "seccomp program",
            source: io::Error::other("too long"),
        })?,
        // `Insn` is #[repr(C)] with the kernel's `sock_filter` layout (u16, u8, u8, u32).
        filter: spec.seccomp.as_ptr() as *mut libc::sock_filter,
    };
    // Opened here, with Paddock's credentials (the kernel checks the opener's), and written
    // by the child: see `ExecCgroup::join_plan`.
    let open_all = |files: &[PathBuf]| {
        files
            .iter()
            .map(|f| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(f)
                    .map(OwnedFd::from)
            })
            .collect::<io::Result<Vec<OwnedFd>>>()
            .map_err(os("open the exec cgroup"))
    };
    let tasks = open_all(&spec.cgroup.self_tasks)?;
    let task_fds: Vec<RawFd> = tasks.iter().map(|f| f.as_raw_fd()).collect();
    let shell_tasks = open_all(&spec.cgroup.shell_tasks)?;
    let shell_task_fds: Vec<RawFd> = shell_tasks.iter().map(|f| f.as_raw_fd()).collect();
    if shell_task_fds.len() > MAX_SHELL_TASKS {
        return Err(SpawnError::Os {
            step: "open the exec cgroup",
            source: io::Error::other("too many cgroup hierarchies for the shell to join"),
        });
    }
    // The child's copy of this buffer is the shell's stack (see `child_main`).
    let shell_stack = AnonMap::new(SHELL_STACK_BYTES).map_err(os("map the shell stack"))?;
    let (sync_r, sync_w) = pipe_pair("sync pipe")?;
    let (status_r, status_w) = pipe_pair("status pipe")?;
    // The cgroup namespace is entered by the child once it has joined its cgroups (see
    // `child_main`); the user namespace only when Paddock is not root.
    let mut flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_PIDFD;
    if !spec.privileged_mounts() {
        flags |= libc::CLONE_NEWUSER;
    }
    if matches!(spec.net, NetMode::PerExec) {
        flags |= libc::CLONE_NEWNET;
    }
    let mut keep: Vec<u32> = [
        sync_r.as_raw_fd(),
        status_w.as_raw_fd(),
        stdio.map_or(-1, |(o, _)| o.as_raw_fd()),
        stdio.map_or(-1, |(_, e)| e.as_raw_fd()),
        own_pidfd(),
        sandbox.map_or(-1, |(c, _)| c.as_raw_fd()),
        sandbox.map_or(-1, |(_, i)| i.as_raw_fd()),
    ]
    .into_iter()
    .chain(shell_task_fds.iter().copied())
    .chain(spec.idmap_userns.iter().map(|f| f.as_raw_fd()))
    .filter_map(|fd| u32::try_from(fd).ok())
    .collect();
    keep.sort_unstable();
    keep.dedup();
    let fds = ChildFds {
        sync_r: sync_r.as_raw_fd(),
        status_w: status_w.as_raw_fd(),
        out_w: stdio.map_or(-1, |(o, _)| o.as_raw_fd()),
        err_w: stdio.map_or(-1, |(_, e)| e.as_raw_fd()),
        parent: own_pidfd(),
        control: sandbox.map_or(-1, |(c, _)| c.as_raw_fd()),
        init_program: sandbox.map_or(-1, |(_, i)| i.as_raw_fd()),
        keep: &keep,
        cgroup_tasks: &task_fds,
        shell_cgroup_tasks: &shell_task_fds,
        shell_stack: shell_stack.ptr,
    };
    // The v2 cgroup init is created in (CLONE_INTO_CGROUP), opened with our credentials.
    let into = spec
        .cgroup
        .clone_into
        .as_ref()
        .map(|d| std::fs::File::open(d).map(OwnedFd::from))
        .transpose()
        .map_err(os("open the exec cgroup"))?;
    let mut pidfd: libc::c_int = -1;
    // Whether init was created inside its v2 cgroup (else the parent moves it there below).
    let mut joined_by_clone = false;
    let mut do_clone = |pidfd: &mut libc::c_int, joined: &mut bool| {
        let mut r = -1;
        if let Some(cg) = &into {
            let args = CloneArgs {
                flags: flags as u64 | CLONE_INTO_CGROUP,
                pidfd: pidfd as *mut libc::c_int as u64,
                exit_signal: libc::SIGCHLD as u64,
                cgroup: cg.as_raw_fd() as u64,
                ..CloneArgs::default()
            };
            // SAFETY: clone3 with no stack has fork semantics, as clone below; `args` and the
            // pidfd slot it points at are live locals.
            r = unsafe {
                libc::syscall(
                    libc::SYS_clone3,
                    &args as *const CloneArgs,
                    std::mem::size_of::<CloneArgs>(),
                )
            };
            *joined = r >= 0;
            // A kernel before 5.7 (no CLONE_INTO_CGROUP) or 5.3 (no clone3) refuses it: fall
            // back to clone, and the parent moves init afterwards.
            if r < 0
                && !matches!(
                    io::Error::last_os_error().raw_os_error(),
                    Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
                )
            {
                return r;
            }
        }
        if r < 0 {
            // SAFETY: clone with a NULL stack has fork semantics: the child runs on a private
            // copy of this thread's stack and memory. CLONE_PIDFD stores the pidfd through
            // the parent_tid pointer, which points at a live local.
            r = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    (flags as libc::c_ulong) | libc::SIGCHLD as libc::c_ulong,
                    std::ptr::null_mut::<libc::c_void>(),
                    pidfd as *mut libc::c_int,
                    std::ptr::null_mut::<libc::c_int>(),
                    0 as libc::c_ulong,
                )
            };
        }
        if r == 0 {
            // SAFETY: we are the freshly cloned child; `child_main` only makes raw syscalls
            // over the prepared memory and ends in execve or _exit — it never returns here,
            // so the child never runs the parent's code after the clone.
            unsafe { child_main(&mut p, &fds, &fprog) }
        }
        r
    };
    let pid = match &spec.net {
        NetMode::Join(ns) => in_netns(ns, || do_clone(&mut pidfd, &mut joined_by_clone))?,
        _ => do_clone(&mut pidfd, &mut joined_by_clone),
    };
    if pid < 0 {
        return Err(os("clone")(io::Error::last_os_error()));
    }
    let pid = i32::try_from(pid).map_err(|_| os("clone")(io::Error::other("pid out of range")))?;
    // SAFETY: CLONE_PIDFD filled in a fresh descriptor owned by us.
    let init = PidFd::from_owned(unsafe { OwnedFd::from_raw_fd(pidfd) }, pid);
    drop((sync_r, status_w, tasks));
    let setup = (|| -> Result<(), SpawnError> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        if !spec.privileged_mounts() {
            if !spec.privileged {
                std::fs::write(proc.join("setgroups"), "deny").map_err(os("write setgroups"))?;
            }
            std::fs::write(proc.join("uid_map"), crate::uidmap::identity_map(spec.uid))
                .map_err(os("write uid_map"))?;
            std::fs::write(proc.join("gid_map"), crate::uidmap::identity_map(spec.gid))
                .map_err(os("write gid_map"))?;
        }
        if let (Some(dir), false) = (&spec.cgroup.clone_into, joined_by_clone) {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())
                .map_err(os("join the exec cgroup"))?;
        }
        let one = [1u8];
        // SAFETY: write one byte from a live buffer to our pipe.
        if unsafe { libc::write(sync_w.as_raw_fd(), one.as_ptr().cast(), 1) } != 1 {
            return Err(os("release the child")(io::Error::last_os_error()));
        }
        Ok(())
    })();
    Ok(Cloned {
        init,
        status: status_r,
        sync_w,
        setup,
    })
}

/// `struct clone_args` of `clone3(2)` (the 88-byte version with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// At most this many v1 hierarchies are joined by the shell (`pids` is the only one).
const MAX_SHELL_TASKS: usize = 3;

/// `CLONE_INTO_CGROUP` (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

struct ChildFds<'a> {
    sync_r: RawFd,
    status_w: RawFd,
    /// The shell's stdout and stderr (one-shot jails; -1 in a sandbox's jail).
    out_w: RawFd,
    err_w: RawFd,
    /// A pidfd of Paddock's process (-1: none), readable once Paddock has ended.
    parent: RawFd,
    /// A sandbox's jail: the child's end of init's control socket, and the init program
    /// (-1 both in a one-shot jail).
    control: RawFd,
    init_program: RawFd,
    /// Every descriptor the child keeps past its first `close_range`, sorted: the ones
    /// above, the cgroup files and the idmapping namespaces.
    keep: &'a [u32],
    /// v1 `tasks` files to write `0` into (closed with the rest afterwards).
    cgroup_tasks: &'a [RawFd],
    /// v1 `tasks` files the shell writes `0` into (see `JoinPlan::shell_tasks`); init keeps
    /// them open until the shell has started.
    shell_cgroup_tasks: &'a [RawFd],
    /// `SHELL_STACK_BYTES` of memory the shell child runs on until its `execve`.
    shell_stack: *mut u8,
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Writes a whole record; async-signal-safe.
unsafe fn put_record(fd: RawFd, rec: &[u8; StatusRecord::LEN]) {
    let mut off = 0usize;
    while off < rec.len() {
        // SAFETY: writing from a live stack buffer.
        let n = unsafe { libc::write(fd, rec[off..].as_ptr().cast(), rec.len() - off) };
        if n <= 0 {
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            return;
        }
        off += n as usize;
    }
}

/// Reports a failed step and exits.
unsafe fn fail(fd: RawFd, step: Step, err: i32) -> ! {
    let rec = StatusRecord::encode(TAG_SETUP, step as u32 as i32, err);
    // SAFETY: see put_record; _exit never returns.
    unsafe {
        put_record(fd, &rec);
        libc::_exit(126)
    }
}

/// Formats `/proc/self/fd/N` into `buf` (NUL-terminated) without allocating.
fn fd_path(buf: &mut [u8; 40], fd: RawFd) -> *const libc::c_char {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 12];
    let mut n = fd.max(0) as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[PREFIX.len() + i] = digits[len - 1 - i];
    }
    buf[PREFIX.len() + len] = 0;
    buf.as_ptr().cast()
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[repr(C)]
struct LandlockRulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct LandlockPathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

/// Whether Paddock's process has ended (its pidfd, `fd`, is readable).
///
/// # Safety
/// Child only; a raw `poll`.
unsafe fn parent_gone(fd: RawFd) -> bool {
    if fd < 0 {
        return false;
    }
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one live pollfd, without waiting.
    unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents & libc::POLLIN != 0 }
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: u32 = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;

/// Binds the directory `src` (an `O_PATH` descriptor) at `dst` through a mount idmapped by
/// the user namespace `userns`: a detached copy of the source (`open_tree`), the idmapping
/// set on it (`mount_setattr`), then attached (`move_mount`). Returns the raw result.
///
/// # Safety
/// Child only; raw syscalls on live descriptors and a NUL-terminated path.
unsafe fn idmapped_bind(src: RawFd, dst: &CString, userns: RawFd) -> i32 {
    // SAFETY: as the function's contract; `attr` and the empty path outlive the calls.
    unsafe {
        let empty = c"";
        let tree = libc::syscall(
            libc::SYS_open_tree,
            src,
            empty.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | libc::AT_EMPTY_PATH as u32,
        ) as RawFd;
        if tree < 0 {
            return -1;
        }
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns as u64,
        };
        let mut r = libc::syscall(
            libc::SYS_mount_setattr,
            tree,
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as u32,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        ) as i32;
        if r == 0 {
            r = libc::syscall(
                libc::SYS_move_mount,
                tree,
                empty.as_ptr(),
                libc::AT_FDCWD,
                dst.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            ) as i32;
        }
        let e = errno();
        libc::close(tree);
        *libc::__errno_location() = e;
        r
    }
}

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;

/// Opens every mount source (`O_PATH`) in the child's mount namespace. A source marked
/// `no_symlinks` is refused (ELOOP) when any component of its path is a symbolic link:
/// `openat2(RESOLVE_NO_SYMLINKS)`, or on a kernel without it a walk from `/` that opens each
/// component with `O_NOFOLLOW` and refuses a link it lands on.
///
/// # Safety
/// Child only; raw syscalls over prepared memory; fails through `fail`.
unsafe fn open_sources(p: &mut Prepared, st: RawFd) {
    // SAFETY: as the function's contract.
    unsafe {
        for i in 0..p.sources.len() {
            let src = &p.sources[i];
            let fd = match &p.source_parts[i] {
                None => libc::open(src.as_ptr(), libc::O_PATH | libc::O_CLOEXEC),
                Some(parts) => {
                    let how = OpenHow {
                        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
                        mode: 0,
                        resolve: RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
                    };
                    let r = libc::syscall(
                        libc::SYS_openat2,
                        libc::AT_FDCWD,
                        src.as_ptr(),
                        &how as *const OpenHow,
                        std::mem::size_of::<OpenHow>(),
                    ) as RawFd;
                    if r >= 0 || errno() != libc::ENOSYS {
                        r
                    } else {
                        walk_no_symlinks(p.slash.as_ptr(), parts)
                    }
                }
            };
            if fd < 0 {
                fail(st, Step::OpenSource, errno());
            }
            p.source_fds[i] = fd;
        }
    }
}

/// Opens `/` then each of `parts` with `O_PATH | O_NOFOLLOW`; a symlink anywhere is ELOOP.
///
/// # Safety
/// Child only; raw syscalls.
unsafe fn walk_no_symlinks(slash: *const libc::c_char, parts: &[CString]) -> RawFd {
    // SAFETY: raw open/openat/fstat/close over NUL-terminated strings and a stack stat.
    unsafe {
        let mut fd = libc::open(slash, libc::O_PATH | libc::O_CLOEXEC | libc::O_DIRECTORY);
        for part in parts {
            if fd < 0 {
                return fd;
            }
            let next = libc::openat(
                fd,
                part.as_ptr(),
                libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            );
            libc::close(fd);
            fd = next;
            if fd >= 0 {
                let mut sb: libc::stat = std::mem::zeroed();
                if libc::fstat(fd, &mut sb) < 0 || sb.st_mode & libc::S_IFMT == libc::S_IFLNK {
                    libc::close(fd);
                    *libc::__errno_location() = libc::ELOOP;
                    return -1;
                }
            }
        }
        fd
    }
}

/// Takes the sandbox's uid and gid (and no supplementary groups).
///
/// # Safety
/// Child only; raw syscalls.
unsafe fn switch_ids(p: &Prepared, st: RawFd) {
    // SAFETY: raw set*id syscalls, not libc's wrappers: glibc's broadcast the change to
    // every thread it knows of, taking its thread-list lock — in this child those threads do
    // not exist and the lock may have been held by a parent thread at the clone: a deadlock.
    unsafe {
        if p.privileged
            && libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) < 0
        {
            fail(st, Step::SetGroups, errno());
        }
        if libc::syscall(libc::SYS_setresgid, p.gid, p.gid, p.gid) < 0 {
            fail(st, Step::SetGid, errno());
        }
        if libc::syscall(libc::SYS_setresuid, p.uid, p.uid, p.uid) < 0 {
            fail(st, Step::SetUid, errno());
        }
    }
}

/// The end of a sandbox jail's build: places the control socket and the landlock ruleset
/// where init expects them and `execve`s init from its memfd. The status pipe is
/// close-on-exec, so Paddock reads end of file once init runs.
///
/// # Safety
/// Child only; raw syscalls; never returns.
unsafe fn exec_init(p: &Prepared, fds: &ChildFds, ruleset: RawFd) -> ! {
    use crate::sandbox_jail::proto::{INIT_CTL_FD, INIT_RULESET_FD};
    let st = fds.status_w;
    // SAFETY: as the function's contract.
    unsafe {
        // Park everything above the numbers it goes to, then place it.
        let park = |fd: RawFd| {
            if fd < 0 {
                return -1;
            }
            libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 16)
        };
        let (ctl, rs, prog, status) = (
            park(fds.control),
            park(ruleset),
            park(fds.init_program),
            park(st),
        );
        if ctl < 0 || prog < 0 || status < 0 || (ruleset >= 0 && rs < 0) {
            fail(st, Step::ExecInit, errno());
        }
        let st = status;
        let place = |from: RawFd, to: RawFd, cloexec: bool| {
            let r = if cloexec {
                libc::syscall(libc::SYS_dup3, from, to, libc::O_CLOEXEC) as RawFd
            } else {
                libc::dup2(from, to)
            };
            if r < 0 {
                fail(st, Step::ExecInit, errno());
            }
        };
        place(ctl, INIT_CTL_FD, false);
        if rs >= 0 {
            place(rs, INIT_RULESET_FD, false);
        }
        place(prog, 5, true);
        place(st, 6, true);
        libc::syscall(libc::SYS_close_range, 0u32, 2u32, 0u32);
        if rs < 0 {
            libc::close(INIT_RULESET_FD);
        }
        libc::syscall(libc::SYS_close_range, 7u32, u32::MAX, 0u32);
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        libc::syscall(
            libc::SYS_execveat,
            5,
            p.empty.as_ptr(),
            p.init_argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        fail(6, Step::ExecInit, errno())
    }
}

/// Init: builds the jail, forks the shell, reaps, reports.
///
/// # Safety
/// Must only be called in the child right after `clone`, never returns.
unsafe fn child_main(p: &mut Prepared, fds: &ChildFds, fprog: &libc::sock_fprog) -> ! {
    let st = fds.status_w;
    macro_rules! check {
        ($step:expr, $e:expr) => {
            if $e < 0 {
                fail(st, $step, errno())
            }
        };
    }
    // SAFETY: raw syscalls with pointers into `p`, `fds`, `argv`, `envp` and stack buffers,
    // all alive until execve/_exit. Nothing allocates.
    unsafe {
        // Before anything else: a jail must never outlive the process that builds it. The
        // signal fires when the cloning thread ends; a parent that ended before this line is
        // caught by `parent_gone` just below.
        check!(
            Step::ParentDeathSignal,
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0
            )
        );
        if parent_gone(fds.parent) {
            libc::_exit(125);
        }
        // Next, while single-threaded and before anything is charged to the wrong cgroup:
        // move ourselves into the jail's v1 cgroups. Everything forked later is born inside.
        let zero = [b'0'];
        for fd in fds.cgroup_tasks {
            if libc::write(*fd, zero.as_ptr().cast(), 1) != 1 {
                fail(st, Step::JoinCgroup, errno());
            }
        }
        // Keep only our own descriptors (and the shell's cgroup files, until it has joined):
        // init must not hold Paddock's sockets and files open for as long as it lives.
        let mut lo = 0u32;
        for &k in fds.keep {
            if k > lo {
                libc::syscall(libc::SYS_close_range, lo, k - 1, 0);
            }
            lo = k.saturating_add(1);
        }
        if lo != 0 {
            libc::syscall(libc::SYS_close_range, lo, u32::MAX, 0);
        }

        let mut b = [0u8; 1];
        loop {
            let n = libc::read(fds.sync_r, b.as_mut_ptr().cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            if n < 0 {
                fail(st, Step::WaitForParent, errno());
            }
            // The parent gave up (it could not write our maps) or is gone: leave quietly.
            libc::_exit(125);
        }
        // Commands see their cgroup paths from the jail's own cgroup down, never Paddock's
        // (its pid is in those names) or a neighbour's. Entered here, after joining, because
        // a namespace's root is the cgroup its creator is in at that moment.
        check!(Step::CgroupNamespace, libc::unshare(libc::CLONE_NEWCGROUP));

        open_sources(p, st);
        if !p.privileged_mounts {
            // Inside a user namespace of our own: take the sandbox ids first, keeping the
            // capabilities the namespace gives us for the mounts below.
            switch_ids(p, st);
        }
        check!(
            Step::MakePrivate,
            libc::mount(
                std::ptr::null(),
                p.slash.as_ptr(),
                std::ptr::null(),
                (ms::REC | ms::PRIVATE) as libc::c_ulong,
                std::ptr::null()
            )
        );
        let mut buf = [0u8; 40];
        for op in &p.ops {
            match op {
                COp::Tmpfs { dst, flags, data } => check!(
                    Step::MountTmpfs,
                    libc::mount(
                        p.tmpfs_s.as_ptr(),
                        dst.as_ptr(),
                        p.tmpfs_s.as_ptr(),
                        *flags as libc::c_ulong,
                        data.as_ptr().cast()
                    )
                ),
                COp::Mkdir { path } => {
                    if libc::mkdir(path.as_ptr(), 0o755) < 0 && errno() != libc::EEXIST {
                        fail(st, Step::Mkdir, errno());
                    }
                }
                COp::Symlink { target, path } => {
                    check!(Step::Symlink, libc::symlink(target.as_ptr(), path.as_ptr()))
                }
                COp::Touch { path } => {
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o644,
                    );
                    check!(Step::DeviceMountPoint, fd);
                    libc::close(fd);
                }
                COp::Bind {
                    source,
                    dst,
                    recursive,
                } => {
                    let fd = p.source_fds.get(*source).copied().unwrap_or(-1);
                    let src = fd_path(&mut buf, fd);
                    let flags = ms::BIND | if *recursive { ms::REC } else { 0 };
                    check!(
                        Step::Bind,
                        libc::mount(
                            src,
                            dst.as_ptr(),
                            std::ptr::null(),
                            flags as libc::c_ulong,
                            std::ptr::null()
                        )
                    );
                }
                COp::IdmappedBind {
                    source,
                    dst,
                    userns,
                } => {
                    let fd = p.source_fds.get(*source).copied().unwrap_or(-1);
                    check!(Step::IdmappedBind, idmapped_bind(fd, dst, *userns));
                }
                COp::Remount { dst, flags } => check!(
                    Step::Remount,
                    libc::mount(
                        std::ptr::null(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        (ms::REMOUNT | ms::BIND | flags) as libc::c_ulong,
                        std::ptr::null()
                    )
                ),
                COp::Proc { dst } => check!(
                    Step::MountProc,
                    libc::mount(
                        p.proc_s.as_ptr(),
                        dst.as_ptr(),
                        p.proc_s.as_ptr(),
                        (ms::NOSUID | ms::NODEV | ms::NOEXEC) as libc::c_ulong,
                        std::ptr::null()
                    )
                ),
                COp::Devpts { dst } => {
                    // A private pty instance is a convenience (interactive tools); the jail
                    // is complete without it, so a failure here is not fatal.
                    libc::mount(
                        p.devpts_s.as_ptr(),
                        dst.as_ptr(),
                        p.devpts_s.as_ptr(),
                        (ms::NOSUID | ms::NOEXEC) as libc::c_ulong,
                        p.devpts_data.as_ptr().cast(),
                    );
                }
                COp::File { path, data, mode } => {
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                        *mode,
                    );
                    check!(Step::WriteFile, fd);
                    let mut off = 0usize;
                    while off < data.len() {
                        let n = libc::write(fd, data[off..].as_ptr().cast(), data.len() - off);
                        if n <= 0 {
                            if n < 0 && errno() == libc::EINTR {
                                continue;
                            }
                            fail(
                                st,
                                Step::WriteFile,
                                if n < 0 { errno() } else { libc::ENOSPC },
                            );
                        }
                        off += n as usize;
                    }
                    libc::close(fd);
                }
            }
        }
        for fd in &p.source_fds {
            libc::close(*fd);
        }
        check!(
            Step::Hostname,
            libc::sethostname(p.hostname.as_ptr(), p.hostname.as_bytes().len())
        );
        if p.new_net {
            check!(Step::Loopback, loopback_up());
        }
        check!(Step::PivotRoot, libc::chdir(p.staging.as_ptr()));
        check!(
            Step::PivotRoot,
            libc::syscall(libc::SYS_pivot_root, p.dot.as_ptr(), p.dot.as_ptr()) as i32
        );
        check!(
            Step::DetachOldRoot,
            libc::umount2(p.dot.as_ptr(), libc::MNT_DETACH)
        );
        check!(Step::DetachOldRoot, libc::chdir(p.slash.as_ptr()));

        let mut ruleset: RawFd = -1;
        if let Some((abi, handled, scoped)) = p.ll {
            let attr = LandlockRulesetAttr {
                handled_access_fs: handled,
                handled_access_net: 0,
                scoped,
            };
            let r = libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const LandlockRulesetAttr,
                ruleset_attr_size(abi),
                0u32,
            );
            check!(Step::LandlockCreate, r as i32);
            ruleset = r as RawFd;
            for (path, access) in &p.ll_rules {
                let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                if fd < 0 {
                    // A planned path that does not exist (no /dev/tty on this host): nothing
                    // beneath it can be written anyway.
                    continue;
                }
                let rule = LandlockPathBeneath {
                    allowed_access: *access,
                    parent_fd: fd,
                };
                let r = libc::syscall(
                    libc::SYS_landlock_add_rule,
                    ruleset,
                    1 as libc::c_int, // LANDLOCK_RULE_PATH_BENEATH
                    &rule as *const LandlockPathBeneath,
                    0u32,
                );
                libc::close(fd);
                check!(Step::LandlockRule, r as i32);
            }
        }
        for l in &p.rlimits {
            let lim = libc::rlimit {
                rlim_cur: l.value,
                rlim_max: l.value,
            };
            check!(Step::Rlimit, libc::setrlimit(l.resource as _, &lim));
        }
        for cap in 0..=p.cap_last_cap {
            check!(
                Step::DropBoundingSet,
                libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0)
            );
        }
        if p.privileged_mounts {
            // Host root until here, so the root could be built from any host directory
            // whatever its owner and mode (a 0700 parent of a nested mount included). Now
            // the sandbox ids: leaving uid 0 clears every capability.
            switch_ids(p, st);
        }
        // A change of credentials clears the parent-death signal: arm it again, and look
        // once more for a parent that ended in between.
        check!(
            Step::ParentDeathSignal,
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0
            )
        );
        if parent_gone(fds.parent) {
            libc::_exit(125);
        }
        if fds.parent >= 0 {
            libc::close(fds.parent);
        }
        check!(
            Step::ClearAmbient,
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0
            )
        );
        let hdr = CapHeader {
            version: 0x2008_0522,
            pid: 0,
        };
        let data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        check!(
            Step::DropCapabilities,
            libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) as i32
        );
        check!(
            Step::NoNewPrivs,
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        );
        check!(
            Step::NotDumpable,
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0)
        );
        // The seccomp filter goes on init itself, before the command comes: the shell
        // inherits it, and attaching a filter (the kernel validates it and precomputes its
        // per-syscall cache) leaves the exec's critical path. What init does from here on —
        // read, clone without namespace flags, wait4, write, exit — the filter allows.
        check!(
            Step::Seccomp,
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                fprog as *const libc::sock_fprog as libc::c_ulong,
                0,
                0
            )
        );
        if fds.control >= 0 {
            exec_init(p, fds, ruleset);
        }

        // The jail is built: wait for the command, or start the shell now and let it read
        // the command itself (see `JailSpec::waiting_shell`).
        let waiting = p.waiting.is_some();
        let cwd = if waiting {
            p.slash.as_ptr()
        } else {
            let cwd = read_command(p, fds.sync_r, st);
            libc::close(fds.sync_r);
            cwd
        };

        // The shell shares init's memory until its execve (CLONE_VM | CLONE_VFORK, as
        // posix_spawn does), on its own stack: init is a copy of all of Paddock's address
        // space, and a plain fork would copy its page tables only for execve to throw them
        // away. Init sleeps until the execve (or the child's exit). Descriptors, cwd,
        // credentials, landlock and seccomp are per task, so the child's changes stay its own.
        let args = ShellArgs {
            p: &*p,
            fds,
            ruleset,
            cwd,
        };
        let top = fds.shell_stack.add(SHELL_STACK_BYTES);
        let top = ((top as usize) & !15usize) as *mut libc::c_void;
        let shell = libc::clone(
            shell_entry,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&args as *const ShellArgs).cast_mut().cast(),
        );
        check!(Step::ForkShell, shell);
        if waiting {
            libc::close(fds.sync_r);
        }
        for fd in fds.shell_cgroup_tasks {
            libc::close(*fd);
        }
        libc::close(fds.out_w);
        libc::close(fds.err_w);
        if ruleset >= 0 {
            libc::close(ruleset);
        }
        loop {
            let mut status: libc::c_int = 0;
            let r = libc::waitpid(-1, &mut status, 0);
            if r < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                break;
            }
            if r == shell {
                put_record(st, &StatusRecord::encode(TAG_EXIT, status, 0));
            }
        }
        // Nothing is left. Exiting now would tear the namespaces down (the mount tree, this
        // copy of Paddock's memory: about a millisecond of kernel work) while Paddock hands
        // the result over; say so and wait for Paddock's SIGKILL (or the parent-death
        // signal) instead, which comes once the result is out.
        put_record(st, &StatusRecord::encode(TAG_IDLE, 0, 0));
        loop {
            libc::pause();
        }
    }
}

/// What the shell child needs, passed through `clone`'s argument pointer.
struct ShellArgs<'a> {
    p: &'a Prepared,
    fds: &'a ChildFds<'a>,
    ruleset: RawFd,
    cwd: *const libc::c_char,
}

/// Entry point of the shell child on its own stack.
extern "C" fn shell_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at the `ShellArgs` on init's stack; init is suspended (vfork) until
    // this child execs or exits, so it stays valid. shell_main never returns.
    unsafe {
        let a = &*(arg as *const ShellArgs);
        shell_main(a.p, a.fds, a.ruleset, a.cwd)
    }
}

/// The shell child: landlock, stdio, cwd, execve (seccomp it inherited from init). Landlock
/// stays here, not on init: init outside the sandbox's landlock domain is what keeps the
/// command from signalling it (the domain's signal scope).
unsafe fn shell_main(p: &Prepared, fds: &ChildFds, ruleset: RawFd, cwd: *const libc::c_char) -> ! {
    let mut st = fds.status_w;
    macro_rules! check {
        ($step:expr, $e:expr) => {
            if $e < 0 {
                fail(st, $step, errno())
            }
        };
    }
    // SAFETY: raw syscalls over prepared memory; ends in execve or _exit.
    unsafe {
        // Into the cgroups init stays out of (see `JoinPlan::shell_tasks`), before the
        // command can fork. A single thread moving itself, as init did.
        let zero = [b'0'];
        for fd in fds.shell_cgroup_tasks {
            if libc::write(*fd, zero.as_ptr().cast(), 1) != 1 {
                fail(st, Step::JoinCgroup, errno());
            }
        }
        // Next, while the ruleset descriptor may still sit at 0..=2 (init closed those, so
        // the kernel may have handed one out), before stdio is set up over them.
        if ruleset >= 0 {
            check!(
                Step::LandlockRestrict,
                libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) as i32
            );
            libc::close(ruleset);
        }
        let null = libc::open(p.dev_null.as_ptr(), libc::O_RDONLY);
        check!(Step::Stdio, null);
        if null != 0 {
            check!(Step::Stdio, libc::dup2(null, 0));
            libc::close(null);
        }
        check!(Step::Stdio, libc::dup2(fds.out_w, 1));
        check!(Step::Stdio, libc::dup2(fds.err_w, 2));
        libc::close(fds.out_w);
        libc::close(fds.err_w);
        libc::setsid();
        // Paddock ignores SIGPIPE (a write to a closed pipe is an error it handles), and an
        // ignored signal stays ignored across execve: give the command the default, so
        // `yes | head -1` ends as it does everywhere. Without CLONE_SIGHAND this changes
        // only the child's own table.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        check!(Step::Cwd, libc::chdir(cwd));
        let (argv, env) = if let Some(w) = &p.waiting {
            // The preload's descriptors at the numbers it expects (copies first, so neither
            // original can be overwritten while still needed), inherited across execve.
            let c = libc::fcntl(fds.sync_r, libc::F_DUPFD_CLOEXEC, 5);
            check!(Step::Stdio, c);
            let s = libc::fcntl(st, libc::F_DUPFD_CLOEXEC, 5);
            check!(Step::Stdio, s);
            check!(Step::Stdio, libc::dup2(s, ZYGOTE_STATUS_FD));
            st = ZYGOTE_STATUS_FD;
            check!(Step::Stdio, libc::dup2(c, ZYGOTE_CMD_FD));
            libc::close(c);
            libc::close(s);
            (w.argv.as_ptr(), w.env.as_ptr())
        } else {
            (p.argv_ptrs.as_ptr(), p.env_ptrs.as_ptr())
        };
        libc::execve(p.program.as_ptr(), argv, env);
        fail(st, Step::ExecShell, errno())
    }
}

/// Reads `len` bytes from `fd` into `buf`; `Err(true)` on EOF before the first byte.
///
/// # Safety
/// `buf` must hold `len` bytes.
unsafe fn read_full(fd: RawFd, buf: *mut u8, len: usize) -> Result<(), bool> {
    let mut off = 0usize;
    while off < len {
        // SAFETY: `buf + off` stays within the `len` bytes the caller guarantees.
        let n = unsafe { libc::read(fd, buf.add(off).cast(), len - off) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            return Err(off == 0);
        }
        off += n as usize;
    }
    Ok(())
}

/// Init's side of the command message (see [`EncodedCommand`]): reads it into the buffer
/// prepared before the clone, points `argv_ptrs`/`env_ptrs` into it and returns the cwd.
/// EOF before the message means the jail was abandoned: exit quietly.
///
/// # Safety
/// Child only; raw syscalls over prepared memory.
unsafe fn read_command(p: &mut Prepared, fd: RawFd, st: RawFd) -> *const libc::c_char {
    let mut h = [0u8; COMMAND_HEADER];
    // SAFETY: reads into live buffers of the stated sizes; fail/_exit never return.
    unsafe {
        match read_full(fd, h.as_mut_ptr(), h.len()) {
            Ok(()) => {}
            Err(true) => libc::_exit(0),
            Err(false) => fail(st, Step::ReadCommand, libc::EPIPE),
        }
        let body = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let argc = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let envc = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]) as usize;
        if body == 0 || body > p.cmd_buf.len || argc == 0 || argc > COMMAND_MAX_ARGS {
            fail(st, Step::ReadCommand, libc::EINVAL);
        }
        if envc > COMMAND_MAX_ENV {
            fail(st, Step::ReadCommand, libc::EINVAL);
        }
        if read_full(fd, p.cmd_buf.ptr, body).is_err() {
            fail(st, Step::ReadCommand, libc::EPIPE);
        }
        let want = 1 + argc + envc;
        let base: *const u8 = p.cmd_buf.ptr;
        // SAFETY: the mapping holds `len` bytes and `body <= len`; only this process uses it.
        let buf = std::slice::from_raw_parts(base, body);
        let mut cwd: *const libc::c_char = std::ptr::null();
        let mut seen = 0usize;
        let mut start = 0usize;
        for (i, &b) in buf.iter().enumerate() {
            if b != 0 {
                continue;
            }
            if seen >= want {
                fail(st, Step::ReadCommand, libc::EINVAL);
            }
            let ptr: *const libc::c_char = base.add(start).cast();
            if seen == 0 {
                cwd = ptr;
            } else if seen <= argc {
                p.argv_ptrs[seen - 1] = ptr;
            } else {
                p.env_ptrs[seen - 1 - argc] = ptr;
            }
            seen += 1;
            start = i + 1;
        }
        if seen != want || start != body {
            fail(st, Step::ReadCommand, libc::EINVAL);
        }
        p.argv_ptrs[argc] = std::ptr::null();
        p.env_ptrs[envc] = std::ptr::null();
        cwd
    }
}

/// `ip link set lo up` with one ioctl pair on a throwaway socket.
unsafe fn loopback_up() -> i32 {
    // SAFETY: socket/ioctl/close on a local ifreq.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return -1;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) < 0 {
            libc::close(s);
            return -1;
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        let r = libc::ioctl(s, libc::SIOCSIFFLAGS, &req);
        libc::close(s);
        r
    }
}

/// `/proc/sys/kernel/cap_last_cap` (40 when unreadable, the value of Linux 5.9+).
pub fn cap_last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = StatusRecord::encode(TAG_EXIT, 3 << 8, 0);
        assert_eq!(
            StatusRecord::parse(&r),
            Some(StatusRecord::ShellExited(WaitStatus::Exited(3)))
        );
        let r = StatusRecord::encode(TAG_SETUP, Step::Bind as i32, libc::EPERM);
        assert_eq!(
            StatusRecord::parse(&r),
            Some(StatusRecord::SetupFailed {
                step: Step::Bind,
                errno: libc::EPERM
            })
        );
        assert_eq!(Step::Bind.name(), "bind mount");
        let r = StatusRecord::encode(TAG_IDLE, 0, 0);
        assert_eq!(StatusRecord::parse(&r), Some(StatusRecord::Idle));
        let r = StatusRecord::encode(9, 0, 0);
        assert_eq!(StatusRecord::parse(&r), None);
        for (i, step) in Step::ALL.iter().enumerate() {
            assert_eq!(*step as u32, i as u32, "{step}");
            assert_eq!(Step::from_wire(i as u32), Some(*step));
        }
        assert_eq!(Step::from_wire(Step::ALL.len() as u32), None);
    }

    #[test]
    fn fd_paths_format_without_allocation() {
        let mut b = [0u8; 40];
        for (fd, want) in [
            (0, "/proc/self/fd/0"),
            (7, "/proc/self/fd/7"),
            (1234567, "/proc/self/fd/1234567"),
        ] {
            let p = fd_path(&mut b, fd);
            // SAFETY: fd_path returns a NUL-terminated string inside `b`.
            let s = unsafe { std::ffi::CStr::from_ptr(p) };
            assert_eq!(s.to_str().unwrap(), want);
        }
    }
}
