//! A `paddock agent`-equivalent server for the conformance suite, the Python
//! compatibility tests and the benchmark: it takes `paddock agent`'s arguments and serves
//! one thread's sandbox with `paddock_agent::cli::run_agent_with`.
//!
//! Until `paddock-runtime` is wired in, the sandbox is the TEST-ONLY `HostSandbox` (no
//! isolation); never point real agents at this binary.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use paddock_agent::cli::AgentCli;
use paddock_conformance::HostSandbox;
use paddock_core::{ThreadId, UserId};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PADDOCK_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = AgentCli::parse();
    let args = cli.args;
    let user = UserId::new(args.user.clone()).context("invalid --user")?;
    let thread = ThreadId::new(args.thread.clone()).context("invalid --thread")?;
    let sandbox = HostSandbox::new(&args.data_dir, &user, &thread)?;
    paddock_agent::cli::run_agent_with(&args, Arc::new(sandbox)).await
}
