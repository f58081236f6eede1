//! A `paddock agent`-equivalent server for the conformance suite, the Python
//! compatibility tests and the benchmark: `paddock agent`'s arguments, served by
//! `paddock_agent::cli::run_agent` (the local runtime's sandbox of one thread).

use clap::Parser as _;
use paddock_agent::cli::AgentCli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PADDOCK_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    paddock_agent::cli::run_agent(AgentCli::parse().args).await
}
