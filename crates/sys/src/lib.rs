//! Paddock's raw-syscall layer, the only crate of the workspace allowed `unsafe`.
//!
//! It is split the way the kernel work is split: pure *plan* functions ([`mountplan`],
//! [`seccomp`], [`landlock`], [`cgroup`] discovery, [`uidmap`]) compute every path, flag,
//! filter and string in ordinary allocating Rust and are unit-tested everywhere; the small
//! *apply* step in [`jail`] turns a finished plan into raw syscalls in a freshly cloned
//! child. Invariant: after `clone` the child only makes async-signal-safe raw syscalls over
//! memory prepared before the clone — no allocation, no locks, no formatting — because the
//! parent is a multi-threaded async process whose allocator lock may be held by another
//! thread at the moment of the clone.
//!
//! Those syscalls are made through `syscalls`: one small safe wrapper each, with its own
//! `SAFETY` argument, behind a trait the jail's child and the kernel [`probe`]s are written
//! against (and a recording fake implements, to check the order of a jail's steps).

pub mod cgroup;
pub mod disk;
pub mod entry;
pub mod idmap;
pub mod jail;
pub mod landlock;
pub mod mountplan;
pub mod probe;
pub mod process;
pub mod sandbox_jail;
pub mod seccomp;
pub(crate) mod syscalls;
pub mod tree;
pub mod uidmap;

pub use jail::{JailChild, JailSpec, NetMode, StatusRecord};
pub use process::PidFd;
