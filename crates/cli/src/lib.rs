//! The `paddock` command line. `main` only calls [`main_entry`]; every subcommand parses
//! its flags with clap, resolves configuration once (file < env < flags), and hands off
//! to the library crate that owns the work. Data goes to stdout, logs to stderr.

pub mod config;
pub mod env;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for bad usage or configuration.
pub const EXIT_USAGE: u8 = 2;

/// Paddock: isolated, persistent sandboxes for AI agents, one per user and thread.
#[derive(Debug, Parser)]
#[command(name = "paddock", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show or check the resolved configuration (defaults < paddock.yaml < environment).
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `paddock config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the resolved configuration as JSON (secrets omitted).
    Show(ConfigArgs),
    /// Validate the configuration and exit 0, or print what is wrong and exit 2.
    Check(ConfigArgs),
}

/// Where the configuration comes from.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// The config file (default: $PADDOCK_CONFIG, else built-in defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Prints an error the way every subcommand does: `error: …`, then an optional hint.
pub fn report(err: &anyhow::Error, hint: Option<&str>) {
    let mut msg = format!("error: {err}");
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(&format!(": {text}"));
        }
        source = s.source();
    }
    eprintln!("{msg}");
    if let Some(h) = hint {
        eprintln!("\nhint: {h}");
    }
}

fn run_config(cmd: ConfigCommand) -> ExitCode {
    let (args, show) = match cmd {
        ConfigCommand::Show(a) => (a, true),
        ConfigCommand::Check(a) => (a, false),
    };
    match config::load(args.config.as_deref(), &process_env) {
        Ok(cfg) => {
            if show {
                match serde_json::to_string_pretty(&cfg) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        report(&e.into(), None);
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                println!("configuration ok");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            report(
                &e.into(),
                Some("every key is documented in docs/configuration.md"),
            );
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// The binary's entry point.
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config(c) => run_config(c),
    }
}
