//! Where the tools run: the local runtime's sandbox for the thread, or a sandbox obtained
//! from a provisioner (`POST {url}/api/sandboxes`) and reached with `RemoteSandbox`.
//!
//! Invariant: the sandbox is obtained lazily, once, on the first tool call (listing tools
//! costs nothing); a failure to obtain it is reported to that call and retried by the next.

use std::sync::Arc;

use paddock_client::{AgentClient, RemoteSandbox};
use paddock_core::{Sandbox, SandboxId, ThreadId, UserId};
use paddock_runtime::LocalProvider;
use serde::Deserialize;

/// Failure to obtain the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxSourceError {
    /// The local runtime could not prepare the thread's sandbox.
    #[error("local sandbox: {0}")]
    Local(#[from] paddock_core::SandboxError),
    /// The provisioner refused or could not be reached.
    #[error("provisioner {url}: {message}")]
    Provisioner {
        /// The provisioner URL.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// Where an MCP session's sandbox comes from, obtained on the first tool call.
pub enum SandboxSource {
    /// The embedded local runtime.
    Local {
        /// The provider over the data dir.
        provider: Arc<LocalProvider>,
        /// The user.
        user: UserId,
        /// The thread.
        thread: ThreadId,
    },
    /// A `paddock serve` (or DeerFlow-compatible) provisioner.
    Provisioner {
        /// Base URL, e.g. `http://127.0.0.1:8002`.
        url: String,
        /// The `X-API-Key`.
        api_key: String,
        /// The sandbox id to create or reuse.
        sandbox_id: SandboxId,
        /// The user.
        user: UserId,
        /// The thread.
        thread: ThreadId,
    },
}

impl std::fmt::Debug for SandboxSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SandboxSource::Local { user, thread, .. } => f
                .debug_struct("Local")
                .field("user", user)
                .field("thread", thread)
                .finish_non_exhaustive(),
            SandboxSource::Provisioner {
                url,
                sandbox_id,
                user,
                thread,
                ..
            } => f
                .debug_struct("Provisioner")
                .field("url", url)
                .field("sandbox_id", sandbox_id)
                .field("user", user)
                .field("thread", thread)
                .finish_non_exhaustive(),
        }
    }
}

#[derive(Deserialize)]
struct CreateResponse {
    sandbox_url: String,
}

/// A sandbox id derived from the user and thread (16 lower-case hex chars, DeerFlow's
/// shape), so repeated sessions of one thread reuse one provisioned sandbox.
pub fn derived_sandbox_id(
    user: &UserId,
    thread: &ThreadId,
) -> Result<SandboxId, paddock_core::IdError> {
    // FNV-1a 64: stable across releases and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in user
        .as_str()
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(thread.as_str().bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    SandboxId::new(format!("{h:016x}"))
}

impl SandboxSource {
    /// Obtains the sandbox.
    pub async fn sandbox(&self) -> Result<Arc<dyn Sandbox>, SandboxSourceError> {
        match self {
            SandboxSource::Local {
                provider,
                user,
                thread,
            } => {
                let sb = provider.acquire(user, thread).await?;
                Ok(sb as Arc<dyn Sandbox>)
            }
            SandboxSource::Provisioner {
                url,
                api_key,
                sandbox_id,
                user,
                thread,
            } => {
                let err = |message: String| SandboxSourceError::Provisioner {
                    url: url.clone(),
                    message,
                };
                let body = serde_json::json!({
                    "sandbox_id": sandbox_id,
                    "thread_id": thread,
                    "user_id": user,
                });
                let http = reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .map_err(|e| err(e.to_string()))?;
                let resp = http
                    .post(format!("{}/api/sandboxes", url.trim_end_matches('/')))
                    .header("X-API-Key", api_key)
                    .header("Content-Type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .map_err(|e| err(format!("POST /api/sandboxes: {e}")))?;
                let status = resp.status();
                let text = resp
                    .text()
                    .await
                    .map_err(|e| err(format!("reading the response: {e}")))?;
                if !status.is_success() {
                    let shown: String = text.chars().take(500).collect();
                    return Err(err(format!("POST /api/sandboxes: HTTP {status}: {shown}")));
                }
                let created: CreateResponse = serde_json::from_str(&text)
                    .map_err(|e| err(format!("unexpected response to POST /api/sandboxes: {e}")))?;
                let client = AgentClient::new(&created.sandbox_url)
                    .map_err(|e| err(format!("sandbox_url {:?}: {e}", created.sandbox_url)))?;
                let remote = RemoteSandbox::connect(client)
                    .await
                    .map_err(|e| err(format!("connecting to {}: {e}", created.sandbox_url)))?;
                Ok(Arc::new(remote) as Arc<dyn Sandbox>)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_sandbox_ids_are_stable_valid_and_distinct() {
        let u = UserId::new("alice").expect("user");
        let t = ThreadId::new("thread-1").expect("thread");
        let a = derived_sandbox_id(&u, &t).expect("id");
        assert_eq!(a, derived_sandbox_id(&u, &t).expect("id"));
        assert_eq!(a.as_str().len(), 16);
        assert!(
            a.as_str()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        let x = derived_sandbox_id(
            &UserId::new("ab").expect("u"),
            &ThreadId::new("c").expect("t"),
        );
        let y = derived_sandbox_id(
            &UserId::new("a").expect("u"),
            &ThreadId::new("bc").expect("t"),
        );
        assert_ne!(x.expect("id"), y.expect("id"));
        let other = derived_sandbox_id(&UserId::new("bob").expect("u"), &t).expect("id");
        assert_ne!(a, other);
    }
}
