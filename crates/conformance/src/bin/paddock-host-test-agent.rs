//! The same server over the TEST-ONLY `HostSandbox` (no isolation at all): for exercising
//! the agent API and its clients on machines where the isolated runtime cannot start.
//! Never point real agents at this binary.

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
    let args = AgentCli::parse().args;
    let user = UserId::new(args.user.clone()).context("invalid --user")?;
    let thread = ThreadId::new(args.thread.clone()).context("invalid --thread")?;
    let sandbox = HostSandbox::new(&args.data_dir, &user, &thread)?;
    paddock_agent::cli::run_agent_with(&args, Arc::new(sandbox)).await
}
