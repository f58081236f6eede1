//! The same server over the TEST-ONLY `HostSandbox` (no isolation at all): for exercising
//! the agent API and its clients on machines where the isolated runtime cannot start.
//! Never point real agents at this binary.

use std::sync::Arc;

use paddock_conformance::HostSandbox;
use paddock_conformance::agent_process::{AgentProcessArgs, init_logging};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let args = AgentProcessArgs::parse(std::env::args_os().skip(1))?;
    let sandbox = HostSandbox::new(&args.data_dir, &args.user, &args.thread)?;
    paddock_agent::cli::serve(args.serve_options()?, Arc::new(sandbox)).await
}
