//! `paddock agent`: serve one sandbox's agent API on a TCP address.
//!
//! Invariant: the server never starts unauthenticated by accident: a token comes from
//! `--token-file` or `PADDOCK_AGENT_TOKEN`, and serving without one needs the explicit
//! `--insecure-no-auth`. The bound address is printed on stdout as exactly one line
//! `listening on http://ADDR` (so a caller can bind port 0 and read it), logs go to
//! stderr, and SIGTERM/SIGINT stop the server gracefully.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use paddock_core::Sandbox;

use crate::{AgentConfig, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_UPLOAD_BYTES, app};

/// The environment variable holding the token when no `--token-file` is given.
pub const TOKEN_ENV: &str = "PADDOCK_AGENT_TOKEN";

/// Arguments of `paddock agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// File holding the secret (surrounding whitespace ignored); else $PADDOCK_AGENT_TOKEN.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Serve without any authentication (only behind another authenticating proxy).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Paddock's data directory.
    #[arg(long, default_value = "/var/lib/paddock")]
    pub data_dir: PathBuf,
    /// The user whose thread is served.
    #[arg(long, default_value = "default")]
    pub user: String,
    /// The thread served.
    #[arg(long, default_value = "default")]
    pub thread: String,
    /// Largest JSON request body in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Largest upload in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_UPLOAD_BYTES)]
    pub max_upload_bytes: u64,
    /// `isolated` (kernel isolation, the default) or `none` (plain host processes: an
    /// explicit opt-in for hosts without namespaces).
    #[arg(long, value_enum, default_value_t = paddock_runtime::Isolation::Isolated)]
    pub isolation: paddock_runtime::Isolation,
    /// `none` (loopback only, the default) or `host`.
    #[arg(long, value_enum, default_value_t = paddock_runtime::Network::None)]
    pub network: paddock_runtime::Network,
}

/// A standalone parser for binaries that serve only the agent.
#[derive(Debug, clap::Parser)]
#[command(
    name = "paddock-agent",
    about = "Serve one Paddock sandbox's agent API"
)]
pub struct AgentCli {
    /// The arguments.
    #[command(flatten)]
    pub args: AgentArgs,
}

/// Reads the token as configured: the file, else the environment, else none (only
/// allowed with `--insecure-no-auth`).
pub fn resolve_token(args: &AgentArgs) -> anyhow::Result<Option<String>> {
    let token = match &args.token_file {
        Some(f) => {
            let raw = std::fs::read_to_string(f)
                .with_context(|| format!("could not read the token file {}", f.display()))?;
            Some(raw.trim().to_owned())
        }
        None => std::env::var(TOKEN_ENV).ok().map(|t| t.trim().to_owned()),
    };
    match token {
        Some(t) if t.is_empty() => anyhow::bail!(
            "the agent token is empty\n\nhint: write a long random secret to the token file"
        ),
        Some(t) if t.contains('/') || t.chars().any(char::is_control) => {
            anyhow::bail!(
                "the agent token may not contain '/' or control characters (it is used as a URL path segment)"
            )
        }
        Some(t) => Ok(Some(t)),
        None if args.insecure_no_auth => Ok(None),
        None => anyhow::bail!(
            "no agent token configured\n\nhint: pass --token-file FILE or set {TOKEN_ENV}; --insecure-no-auth serves without one"
        ),
    }
}

/// The agent configuration the arguments describe.
pub fn config_from(args: &AgentArgs) -> anyhow::Result<AgentConfig> {
    Ok(AgentConfig {
        token: resolve_token(args)?,
        max_body_bytes: args.max_body_bytes,
        max_upload_bytes: args.max_upload_bytes,
        ..AgentConfig::default()
    })
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "could not listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// Serves the local sandbox of `--user`/`--thread` under `--data-dir` (built with
/// `paddock-runtime`) until SIGTERM/SIGINT.
pub async fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    let user = paddock_core::UserId::new(args.user.clone()).context("invalid --user")?;
    let thread = paddock_core::ThreadId::new(args.thread.clone()).context("invalid --thread")?;
    let opts = paddock_runtime::RuntimeOptions {
        isolation: args.isolation,
        network: args.network,
        ..paddock_runtime::RuntimeOptions::default()
    };
    if args.isolation == paddock_runtime::Isolation::None {
        tracing::warn!("isolation: none; commands run as plain host processes");
    }
    let provider = paddock_runtime::LocalProvider::new(&args.data_dir, opts, Vec::new())
        .context("could not start the local runtime")?;
    let sandbox = provider
        .acquire(&user, &thread)
        .await
        .context("could not prepare the sandbox")?;
    run_agent_with(&args, sandbox).await
}

/// What `paddock agent` takes from `paddock.yaml` beyond its flags: the listener's limits
/// (`server.*`) and the memory bounds of the agent API (`agent.*`).
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Header, idle and connection limits of the listener.
    pub listen: crate::listen::ListenConfig,
    /// `agent.max_read_bytes`.
    pub max_read_bytes: u64,
    /// `agent.max_concurrent_heavy_per_sandbox` (0: none).
    pub max_heavy_per_sandbox: usize,
    /// `agent.max_concurrent_heavy` (0: none).
    pub max_heavy: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            listen: crate::listen::ListenConfig::default(),
            max_read_bytes: crate::DEFAULT_MAX_READ_BYTES,
            max_heavy_per_sandbox: crate::heavy::DEFAULT_MAX_HEAVY_PER_SANDBOX,
            max_heavy: crate::heavy::DEFAULT_MAX_HEAVY,
        }
    }
}

/// Serves `sandbox` as configured by `args` until SIGTERM/SIGINT.
pub async fn run_agent_with(args: &AgentArgs, sandbox: Arc<dyn Sandbox>) -> anyhow::Result<()> {
    run_agent_with_limits(args, sandbox, ServeLimits::default()).await
}

/// [`run_agent_with`] with the limits of a configuration file.
pub async fn run_agent_with_limits(
    args: &AgentArgs,
    sandbox: Arc<dyn Sandbox>,
    limits: ServeLimits,
) -> anyhow::Result<()> {
    let config = AgentConfig {
        max_read_bytes: limits.max_read_bytes,
        max_heavy_per_sandbox: limits.max_heavy_per_sandbox,
        heavy_global: (limits.max_heavy > 0).then(|| crate::HeavyLimit::global(limits.max_heavy)),
        ..config_from(args)?
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("could not listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("could not read the bound address")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}").context("could not write to stdout")?;
        out.flush().context("could not write to stdout")?;
    }
    tracing::info!(%addr, auth = config.token.is_some(), "agent API serving");
    crate::listen::serve(
        listener,
        app(sandbox, config),
        limits.listen,
        shutdown_signal(),
    )
    .await
    .context("the agent server failed")
}
