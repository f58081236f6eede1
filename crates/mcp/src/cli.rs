//! The `paddock mcp` command line: picks the backend (local runtime over `--data-dir`,
//! or `--provisioner URL`), then serves MCP on stdin/stdout until the client closes it.
//!
//! Invariant: nothing but protocol messages is written to stdout; diagnostics go to
//! stderr through `tracing`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use paddock_core::{SandboxId, ThreadId, UserId};
use paddock_runtime::{Isolation, LocalProvider, RuntimeOptions};
use paddock_tools::ToolsConfig;
use rmcp::ServiceExt as _;

use crate::backend::{Backend, derived_sandbox_id};
use crate::server::PaddockMcp;

/// Arguments of `paddock mcp`.
#[derive(Debug, Clone, Args)]
pub struct McpArgs {
    /// The data directory of the local runtime (required unless --provisioner is given).
    #[arg(long, value_name = "DIR", env = "PADDOCK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The user owning the thread.
    #[arg(long, value_name = "USER", default_value = paddock_core::ids::DEFAULT_USER)]
    pub user: String,
    /// The conversation thread whose sandbox the tools use.
    #[arg(long, value_name = "THREAD")]
    pub thread: String,
    /// Isolation of the local runtime.
    #[arg(long, value_enum, default_value = "isolated")]
    pub isolation: Isolation,
    /// Use a running `paddock serve` (or DeerFlow-compatible provisioner) at this URL instead of the local runtime.
    #[arg(long, value_name = "URL")]
    pub provisioner: Option<String>,
    /// The provisioner's API key (sent as X-API-Key).
    #[arg(
        long,
        value_name = "KEY",
        env = "PADDOCK_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// The sandbox id to create or reuse at the provisioner (default: derived from user and thread).
    #[arg(long, value_name = "ID")]
    pub sandbox_id: Option<String>,
    /// Wall-clock timeout of one `bash` call, in seconds.
    #[arg(long, value_name = "SECS")]
    pub bash_timeout_secs: Option<f64>,
}

/// Builds the server for `args` (without serving).
pub fn build(args: &McpArgs) -> anyhow::Result<PaddockMcp> {
    let user = UserId::new(args.user.clone()).context("--user")?;
    let thread = ThreadId::new(args.thread.clone()).context("--thread")?;
    let mut config = ToolsConfig::default();
    if let Some(secs) = args.bash_timeout_secs {
        if !(secs.is_finite() && secs > 0.0) {
            anyhow::bail!("--bash-timeout-secs must be a positive number of seconds, got {secs}");
        }
        config.bash_timeout_secs = secs;
    }
    let backend = match &args.provisioner {
        Some(url) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                anyhow::bail!("--provisioner {url:?}: must start with http:// or https://");
            }
            let api_key = args
                .api_key
                .clone()
                .context("--api-key (or PADDOCK_API_KEY) is required with --provisioner")?;
            let sandbox_id = match &args.sandbox_id {
                Some(id) => SandboxId::new(id.clone()).context("--sandbox-id")?,
                None => derived_sandbox_id(&user, &thread).context("derived sandbox id")?,
            };
            Backend::Provisioner {
                url: url.clone(),
                api_key,
                sandbox_id,
                user,
                thread,
            }
        }
        None => {
            let data_dir = args
                .data_dir
                .clone()
                .context("--data-dir is required (or --provisioner URL)")?;
            let opts = RuntimeOptions {
                isolation: args.isolation,
                ..RuntimeOptions::default()
            };
            let provider = LocalProvider::new(data_dir, opts, Vec::new())
                .context("starting the local runtime")?;
            Backend::Local {
                provider: Arc::new(provider),
                user,
                thread,
            }
        }
    };
    Ok(PaddockMcp::new(backend, config))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PADDOCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // The binary may already have installed a subscriber (also on stderr); keep it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Serves MCP on stdio until the client disconnects.
pub async fn run(args: McpArgs) -> anyhow::Result<()> {
    init_logging();
    let server = build(&args)?;
    tracing::info!(?args.user, ?args.thread, "serving MCP on stdio");
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .context("MCP initialisation")?;
    let reason = running.waiting().await.context("MCP session")?;
    tracing::info!(?reason, "MCP session ended");
    Ok(())
}
