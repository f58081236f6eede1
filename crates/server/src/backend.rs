//! The backend trait: what the control plane needs from a place that runs sandboxes
//! (this host, or a Kubernetes cluster). The API layer never knows which one it talks to.

use async_trait::async_trait;
use paddock_core::{MountSpec, SandboxId, ThreadId, UserId};
use serde::{Deserialize, Serialize};

/// Sandbox status values, as DeerFlow's provisioner reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SandboxStatus {
    /// Being prepared.
    Pending,
    /// Ready to serve its URL.
    Running,
    /// Ended normally.
    Succeeded,
    /// Ended in failure.
    Failed,
    /// The backend cannot tell.
    Unknown,
    /// Gone.
    NotFound,
}

impl SandboxStatus {
    /// Every status, for metrics.
    pub const ALL: [SandboxStatus; 6] = [
        Self::Pending,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Unknown,
        Self::NotFound,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Unknown => "Unknown",
            Self::NotFound => "NotFound",
        }
    }
}

/// Flags DeerFlow sends that change what a sandbox gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateFlags {
    /// Project legacy skills (accepted; Paddock's skills layout has no legacy split).
    pub include_legacy_skills: bool,
    /// Lark CLI runtime requested.
    pub provision_lark_cli_runtime: bool,
    /// Lark CLI broker requested.
    pub provision_lark_cli_broker: bool,
}

/// A validated create request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSpec {
    /// The sandbox.
    pub sandbox_id: SandboxId,
    /// Its thread (the sandbox id when the request had none).
    pub thread_id: ThreadId,
    /// Its user.
    pub user_id: UserId,
    /// Extra mounts as requested (validated by the backend against its policy).
    pub extra_mounts: Vec<MountSpec>,
    /// Flags.
    pub flags: CreateFlags,
}

/// What the API returns about a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// The sandbox.
    pub sandbox_id: SandboxId,
    /// Its user.
    pub user_id: UserId,
    /// Its thread.
    pub thread_id: ThreadId,
    /// Where its agent API answers.
    pub sandbox_url: String,
    /// Its status.
    pub status: SandboxStatus,
}

/// Why a backend refused or failed. Messages never contain host paths or secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The request is invalid (422), naming the field.
    #[error("{message}")]
    Invalid {
        /// The offending field (`extra_mounts[1]`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The id is taken by another user or thread (409).
    #[error("{0}")]
    Conflict(String),
    /// No capacity now (429).
    #[error("{message}")]
    Capacity {
        /// What is full.
        message: String,
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// The backend cannot be reached or is too slow (503).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// Anything else (500); details are logged where they happen.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A place that runs sandboxes.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// `local` or `kubernetes`.
    fn name(&self) -> &'static str;

    /// Feature flags for `GET /api/capabilities`.
    fn capabilities(&self) -> serde_json::Value;

    /// Makes the sandbox exist and returns it. Called under a per-id lock; must succeed
    /// (returning the existing sandbox) when it already exists for the same user and thread.
    async fn create(&self, spec: &CreateSpec) -> Result<SandboxRecord, BackendError>;

    /// The sandbox, when it exists.
    async fn get(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, BackendError>;

    /// Every sandbox this backend manages (after a restart too).
    async fn list(&self) -> Result<Vec<SandboxRecord>, BackendError>;

    /// Destroys the sandbox and kills its processes; user data stays. `Ok(false)` when
    /// there was nothing to destroy.
    async fn destroy(&self, id: &SandboxId) -> Result<bool, BackendError>;

    /// Whether the sandbox still runs processes (such a sandbox is not idle).
    async fn busy(&self, id: &SandboxId) -> Result<bool, BackendError>;

    /// Seconds since the sandbox's data plane last served a request, when known.
    fn idle_secs(&self, _id: &SandboxId) -> Option<u64> {
        None
    }

    /// Seconds since the sandbox was first created (kept across restarts), when known; the
    /// lifecycle falls back to the time it first saw the sandbox.
    fn age_secs(&self, _id: &SandboxId) -> Option<u64> {
        None
    }

    /// Execs served through sandbox URLs so far (for metrics).
    fn exec_count(&self) -> u64 {
        0
    }

    /// Execs refused at `max_concurrent_execs_per_user` so far (for metrics); 0 for a
    /// backend whose data plane does not pass through this server.
    fn exec_limit_refusals(&self) -> u64 {
        0
    }

    /// Stops everything (SIGTERM): kills sandbox processes, keeps records for recovery.
    async fn shutdown(&self);
}
