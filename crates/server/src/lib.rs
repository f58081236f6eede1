//! Paddock's control plane: the DeerFlow-compatible provisioner API (`fn app(state) ->
//! Router`), the sandbox lifecycle (idempotent create, capacity, idle reaper), metrics,
//! and the backends it drives through one trait.

pub mod api;
pub mod backend;
pub mod error;
pub mod lifecycle;
pub mod local;
pub mod metrics;
pub mod serve;

pub use api::{AppState, app};
pub use backend::{Backend, BackendError, CreateSpec, SandboxRecord, SandboxStatus};
pub use error::ApiError;
pub use lifecycle::{Lifecycle, LifecycleConfig};
