//! A `paddock agent`-equivalent server for the conformance suite: the local runtime's
//! sandbox of one thread, served by `paddock_agent::cli::run_local` with `paddock agent`'s
//! defaults (see [`paddock_conformance::agent_process`] for its flags).

use paddock_conformance::agent_process::{AgentProcessArgs, init_logging};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let args = AgentProcessArgs::parse(std::env::args_os().skip(1))?;
    paddock_agent::cli::run_local(paddock_agent::cli::LocalAgent {
        serve: args.serve_options()?,
        data_dir: args.data_dir,
        user: args.user,
        thread: args.thread,
        runtime: paddock_runtime::RuntimeOptions::default(),
        mounts: Vec::new(),
    })
    .await
}
