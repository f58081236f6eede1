//! The `paddock` binary: runs `paddock exec` itself and hands every other subcommand to
//! `paddock-full` beside it (see [`paddock_cli::front`] for why).

use std::process::ExitCode;

fn main() -> ExitCode {
    paddock_cli::front::main_entry()
}
