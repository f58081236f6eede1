//! Paddock's control plane: the DeerFlow-compatible provisioner API (`fn app(state) ->
//! Router`), the sandbox lifecycle (idempotent create, global and per-user capacity, the
//! reaper of idle, busy-idle and expired sandboxes), per-user exec limits, metrics,
//! and the backends it drives through one trait.

pub mod api;
pub mod backend;
pub mod error;
pub mod lifecycle;
pub mod limits;
pub mod local;
pub mod metrics;
pub mod serve;

pub use api::{AppState, app};
pub use backend::{Backend, BackendError, CreateSpec, SandboxRecord, SandboxStatus};
pub use error::ApiError;
pub use lifecycle::{Lifecycle, LifecycleConfig};
pub use limits::{Limit, ReapReason};
