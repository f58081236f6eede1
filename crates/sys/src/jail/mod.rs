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
//!
//! The module is split at the clone:
//!
//! - [`spec`]: what a jail is made of ([`JailSpec`]) and what it runs ([`JailCommand`]);
//! - [`wire`]: the bytes that cross between Paddock, init and the shell preload: the
//!   command message, the status records and the [`Step`] numbers;
//! - `prepared`: the memory the child reads, built from a spec before the clone;
//! - `parent`: everything Paddock does — prepare, clone, write the maps, release, hand over;
//! - `child`: everything between `clone` and `execve`, in order, written against the
//!   `Syscalls` trait of `crate::syscalls` (small safe wrappers, one per syscall, shared
//!   with the probes); its tests run it over a recording fake.

use std::io;

mod child;
mod parent;
mod prepared;
#[cfg(test)]
mod recording;
pub mod spec;
pub mod wire;

pub use parent::{
    BuildingSandbox, JailChild, PendingJail, build, build_sandbox, cap_last_cap, create_netns,
    spawn, takes_preload,
};
pub use spec::{
    COMMAND_MAX_ARGS, COMMAND_MAX_BYTES, COMMAND_MAX_ENV, JailCommand, JailSpec, NetMode, Rlimit,
};
pub use wire::{
    EncodedCommand, SHELL_PRELOAD, SHELL_PRELOAD_PATH, StatusRecord, Step, StepFailed,
    WAITING_SHELL_FDS, waiting_shell_command,
};

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

impl SpawnError {
    /// The OS error number behind the error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

pub(crate) fn os(step: &'static str) -> impl FnOnce(io::Error) -> SpawnError {
    move |source| SpawnError::Os { step, source }
}
