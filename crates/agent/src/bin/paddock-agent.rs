//! `paddock-agent`: the agent API of one thread's local sandbox as a standalone binary
//! (the same as `paddock agent`), a thin `main` over [`paddock_agent::cli::run_agent`].

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PADDOCK_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    paddock_agent::cli::run_agent(paddock_agent::cli::AgentCli::parse().args).await
}
