//! Paddock's contract crate: validated ids, the on-disk data layout, virtual paths and
//! the mount table, the `Sandbox` trait with its request and outcome types, the one
//! error enum and the environment policy.
//!
//! It has no async runtime, no HTTP and no raw syscalls, so every other crate can depend
//! on it cheaply.

pub mod envpolicy;
pub mod error;
pub mod escape;
pub mod ids;
pub mod layout;
pub mod mount;
pub mod sandbox;
pub mod time;
pub mod vpath;

pub use error::SandboxError;
pub use ids::{IdError, SandboxId, ThreadId, UserId};
pub use layout::{DataLayout, ThreadDirs};
pub use mount::{Mount, MountKind, MountPolicy, MountSpec, MountTable};
pub use sandbox::Sandbox;
pub use vpath::VirtualPath;
