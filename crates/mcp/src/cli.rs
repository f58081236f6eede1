//! `paddock mcp`: serves MCP on stdin/stdout until the client closes it, over the local
//! runtime's sandbox of one thread or over a running `paddock serve` (provisioner mode).
//! The `paddock` binary resolves the settings (flags, environment, config file) into
//! [`McpOptions`] and calls [`run`].
//!
//! Invariant: nothing but protocol messages is written to stdout; diagnostics go to
//! stderr through `tracing` (the binary installs the subscriber).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use paddock_core::{Mount, SandboxId, ThreadId, UserId};
use paddock_runtime::{LocalProvider, RuntimeOptions};
use paddock_tools::ToolsConfig;
use rmcp::ServiceExt as _;

use crate::server::PaddockMcp;
use crate::source::{SandboxSource, derived_sandbox_id};

/// What `paddock mcp` serves.
#[derive(Debug, Clone)]
pub struct McpOptions {
    /// The user owning the thread.
    pub user: UserId,
    /// The conversation thread whose sandbox the tools use.
    pub thread: ThreadId,
    /// Where the sandbox comes from.
    pub source: SandboxSourceOptions,
    /// The tool layer's limits (the `tools:` section).
    pub tools: ToolsConfig,
}

/// Where the sandbox of [`McpOptions`] comes from.
#[derive(Clone)]
pub enum SandboxSourceOptions {
    /// The local runtime over a data directory.
    Local {
        /// Paddock's data directory.
        data_dir: PathBuf,
        /// The runtime's options (the `sandbox:` section).
        runtime: RuntimeOptions,
        /// Validated custom mounts the sandbox gets.
        mounts: Vec<Mount>,
    },
    /// A running `paddock serve` (or DeerFlow-compatible provisioner).
    Provisioner {
        /// Its base URL (`http://` or `https://`).
        url: String,
        /// Its API key, sent as `X-API-Key`.
        api_key: String,
        /// The sandbox id to create or reuse (`None`: derived from user and thread).
        sandbox_id: Option<SandboxId>,
    },
}

impl std::fmt::Debug for SandboxSourceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local {
                data_dir,
                runtime,
                mounts,
            } => f
                .debug_struct("Local")
                .field("data_dir", data_dir)
                .field("runtime", runtime)
                .field("mounts", mounts)
                .finish(),
            Self::Provisioner {
                url, sandbox_id, ..
            } => f
                .debug_struct("Provisioner")
                .field("url", url)
                .field("api_key", &"<redacted>")
                .field("sandbox_id", sandbox_id)
                .finish(),
        }
    }
}

/// Builds the server for `opts` (without serving); the local runtime starts here.
pub fn build(opts: McpOptions) -> anyhow::Result<PaddockMcp> {
    let McpOptions {
        user,
        thread,
        source,
        tools,
    } = opts;
    let source = match source {
        SandboxSourceOptions::Provisioner {
            url,
            api_key,
            sandbox_id,
        } => {
            let sandbox_id = match sandbox_id {
                Some(id) => id,
                None => derived_sandbox_id(&user, &thread).context("derived sandbox id")?,
            };
            SandboxSource::Provisioner {
                url,
                api_key,
                sandbox_id,
                user,
                thread,
            }
        }
        SandboxSourceOptions::Local {
            data_dir,
            runtime,
            mounts,
        } => {
            let provider = LocalProvider::new(data_dir, runtime, mounts)
                .context("starting the local runtime")?;
            SandboxSource::Local {
                provider: Arc::new(provider),
                user,
                thread,
            }
        }
    };
    Ok(PaddockMcp::new(source, tools))
}

/// Serves MCP on stdio until the client disconnects.
pub async fn run(opts: McpOptions) -> anyhow::Result<()> {
    let (user, thread) = (opts.user.clone(), opts.thread.clone());
    let server = build(opts)?;
    tracing::info!(?user, ?thread, "serving MCP on stdio");
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .context("MCP initialisation")?;
    let reason = running.waiting().await.context("MCP session")?;
    tracing::info!(?reason, "MCP session ended");
    Ok(())
}
