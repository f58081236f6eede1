//! Paddock's local isolated runtime: runs each command of a (user, thread) sandbox in a fresh
//! jail on this host — user, mount, pid, ipc, uts and (by default) network namespaces, a
//! read-only system root with the thread's directories bound at their virtual paths, an
//! unprivileged host uid, no capabilities, `no_new_privs`, seccomp, landlock and cgroup
//! limits — and serves file operations through `paddock-fsops` over the same mount table.
//!
//! Layers: [`options`] (the `sandbox:` config), [`runtime`] (kernel probing, shared jail
//! artefacts, the spawner thread), [`sandbox`] (`LocalSandbox`, the `Sandbox` trait),
//! [`provider`] (one sandbox per thread, LRU), `drive` (streaming, caps, timeouts),
//! [`cli`] (`paddock exec` and `paddock doctor`). The design of one exec is described in
//! `paddock_sys::jail`; the choice of per-exec namespaces in [`sandbox`].

pub mod cli;
pub mod disk;
mod drive;
pub mod env;
mod error;
mod etc;
pub mod ids;
mod jail;
pub mod options;
mod plan;
mod probecache;
pub mod provider;
pub mod runtime;
pub mod sandbox;

pub use options::{DiskQuotaMode, Isolation, Limits, Network, RuntimeOptions, UidRange};
pub use provider::LocalProvider;
pub use runtime::{Runtime, RuntimeError};
pub use sandbox::LocalSandbox;
