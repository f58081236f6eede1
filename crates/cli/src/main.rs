//! The `paddock` binary: a thin `main` over the library crates. Each subcommand parses
//! its arguments with clap, resolves configuration once, and hands off to a library.

use std::process::ExitCode;

fn main() -> ExitCode {
    paddock_cli::main_entry()
}
