//! `paddock agent`: serve one sandbox's agent API on a TCP address.
//!
//! The `paddock` binary resolves its settings (flags, environment, config file) and hands
//! them here as plain typed values: [`ServeOptions`] for the server, [`LocalAgent`] for the
//! local sandbox it serves. Invariant: the server never starts unauthenticated by accident:
//! [`AgentConfig::token`] is `None` only when the caller chose so (`--insecure-no-auth`),
//! and a token is checked by [`check_token`]. The bound address is printed on stdout as
//! exactly one line `listening on http://ADDR` (so a caller can bind port 0 and read it),
//! logs go to stderr, and SIGTERM/SIGINT stop the server gracefully.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use paddock_core::{Mount, Sandbox, ThreadId, UserId};

use crate::{AgentConfig, app};

/// How the agent API is served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// The API's configuration: token, body and read limits, heavy-request limits, tools.
    pub config: AgentConfig,
    /// Header, idle and connection limits of the listener.
    pub limits: crate::listen::ListenConfig,
}

/// One thread's sandbox of the local runtime, served by [`run_local`].
#[derive(Debug, Clone)]
pub struct LocalAgent {
    /// Paddock's data directory.
    pub data_dir: PathBuf,
    /// The user whose thread is served.
    pub user: UserId,
    /// The thread served.
    pub thread: ThreadId,
    /// The runtime's options (the `sandbox:` section).
    pub runtime: paddock_runtime::RuntimeOptions,
    /// Validated custom mounts every sandbox gets.
    pub mounts: Vec<Mount>,
    /// How the API is served.
    pub serve: ServeOptions,
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Only whitespace.
    #[error("the agent token is empty\n\nhint: write a long random secret to the token file")]
    Empty,
    /// It could not be a URL path segment.
    #[error(
        "the agent token may not contain '/' or control characters (it is used as a URL path segment)"
    )]
    Unusable,
}

/// The token in `raw` (a file's content or a variable's value), without surrounding
/// whitespace; refused when empty or unusable in a URL path.
pub fn check_token(raw: &str) -> Result<String, TokenError> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(TokenError::Empty);
    }
    if t.contains('/') || t.chars().any(char::is_control) {
        return Err(TokenError::Unusable);
    }
    Ok(t.to_owned())
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

/// Serves the local runtime's sandbox of `agent.user`/`agent.thread` until SIGTERM/SIGINT,
/// then shuts the runtime down.
pub async fn run_local(agent: LocalAgent) -> anyhow::Result<()> {
    let provider =
        paddock_runtime::LocalProvider::new(&agent.data_dir, agent.runtime, agent.mounts)?;
    let sandbox = provider.acquire(&agent.user, &agent.thread).await?;
    let r = serve(agent.serve, sandbox).await;
    provider.shutdown();
    r
}

/// Serves `sandbox` as `opts` say until SIGTERM/SIGINT.
pub async fn serve(opts: ServeOptions, sandbox: Arc<dyn Sandbox>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("could not listen on {}", opts.listen))?;
    let addr = listener
        .local_addr()
        .context("could not read the bound address")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}").context("could not write to stdout")?;
        out.flush().context("could not write to stdout")?;
    }
    tracing::info!(%addr, auth = opts.config.token.is_some(), "agent API serving");
    crate::listen::serve(
        listener,
        app(sandbox, opts.config),
        opts.limits,
        shutdown_signal(),
    )
    .await
    .context("the agent server failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_trimmed_and_checked() {
        assert_eq!(check_token("  s3cret\n").as_deref(), Ok("s3cret"));
        assert_eq!(check_token(" \n"), Err(TokenError::Empty));
        assert_eq!(check_token("a/b"), Err(TokenError::Unusable));
        assert_eq!(check_token("a\u{7}b"), Err(TokenError::Unusable));
    }
}
