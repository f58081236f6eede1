//! `paddock-full`: every subcommand (`serve`, `agent`, `mcp`, `doctor`, ...). Users run
//! `paddock`, which hands over to this binary for everything but `exec`.

use std::process::ExitCode;

fn main() -> ExitCode {
    paddock_cli::main_entry()
}
