//! The `paddock` binary is a small front: it runs `paddock exec` itself and hands every
//! other subcommand to `paddock-full`, installed next to it.
//!
//! Why two binaries: a one-shot `paddock exec` is a fresh process per command, and the
//! time to load a binary grows with it (the dynamic loader relocates every pointer in
//! the binary's read-only data, and exit unmaps every page the run touched). The servers
//! link an HTTP stack, a Kubernetes client and the tool layer; the exec path needs none
//! of them. Only code reachable from this module is linked into `paddock`, so it stays a
//! fraction of the full binary's size. `paddock-full` has every subcommand, `exec`
//! included, behind the same parser, so the two never disagree on flags.
//!
//! The hand-off is an `execve` of the same process (same pid, same arguments, same
//! environment, `argv[0]` kept so messages still say `paddock`).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::args::ExecArgs;

/// The name of the full binary, looked up beside the running `paddock`.
pub const FULL_BINARY: &str = "paddock-full";

/// `paddock exec` as the front parses it: the same [`ExecArgs`] as `paddock-full`'s.
#[derive(Debug, Parser)]
#[command(name = "paddock", version, propagate_version = true)]
pub(crate) struct FrontCli {
    #[command(subcommand)]
    command: FrontCommand,
}

impl FrontCli {
    /// The `exec` command it holds (its only subcommand).
    pub(crate) fn exec(self) -> ExecArgs {
        let FrontCommand::Exec(cmd) = self.command;
        cmd
    }
}

#[derive(Debug, Subcommand)]
enum FrontCommand {
    /// Run one command in a thread's isolated sandbox; exits with its exit code
    /// (128+signal when killed, 124 on timeout).
    Exec(ExecArgs),
}

/// True when these arguments (without `argv[0]`) are for `paddock exec`.
pub fn is_exec(args: &[OsString]) -> bool {
    args.first().is_some_and(|a| a == "exec")
}

/// Where `paddock-full` is for a `paddock` at `exe`: the same directory.
pub fn full_binary_for(exe: &Path) -> PathBuf {
    exe.with_file_name(FULL_BINARY)
}

/// The front's entry point; returns the exit status.
pub fn main_entry() -> u8 {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "paddock".into());
    let rest: Vec<OsString> = args.collect();
    if is_exec(&rest) {
        // The plain forms without clap (see `fastargs`); clap for everything else.
        let cmd = crate::fastargs::parse_exec(&rest).unwrap_or_else(|| FrontCli::parse().exec());
        return crate::run_exec(cmd);
    }
    hand_off(argv0, rest)
}

/// Replaces this process with `paddock-full`; returns only when that fails.
fn hand_off(argv0: OsString, rest: Vec<OsString>) -> u8 {
    let full = match std::env::current_exe() {
        Ok(exe) => full_binary_for(&exe),
        Err(e) => {
            crate::report(
                &anyhow::Error::from(e).context("cannot find this binary's own path"),
                None,
            );
            return 1;
        }
    };
    let err = std::process::Command::new(&full)
        .arg0(argv0)
        .args(&rest)
        .exec();
    let what = rest
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    crate::report(
        &anyhow::Error::from(err).context(format!(
            "`paddock {what}` runs in {FULL_BINARY}, which must sit next to paddock: cannot run {}",
            full.display()
        )),
        Some(
            "install both binaries (`cargo install --path crates/cli` installs paddock and paddock-full); only `paddock exec` works without it",
        ),
    );
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_leading_exec_is_handled_by_the_front() {
        let v = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(is_exec(&v(&["exec", "--thread", "t", "--", "true"])));
        assert!(!is_exec(&v(&["serve", "exec"])));
        assert!(!is_exec(&v(&["--help"])));
        assert!(!is_exec(&v(&["execute"])));
        assert!(!is_exec(&v(&[])));
    }

    #[test]
    fn the_full_binary_is_looked_up_beside_the_front() {
        assert_eq!(
            full_binary_for(Path::new("/opt/paddock/bin/paddock")),
            PathBuf::from("/opt/paddock/bin/paddock-full")
        );
    }

    #[test]
    fn the_front_parses_exec_as_the_full_cli_does() {
        let argv = [
            "paddock",
            "exec",
            "--data-dir",
            "/d",
            "--thread",
            "t",
            "--",
            "echo",
            "hi",
        ];
        let FrontCommand::Exec(front) = FrontCli::try_parse_from(argv).expect("front").command;
        let crate::args::Command::Exec(full) = crate::args::Cli::try_parse_from(argv)
            .expect("full")
            .command
        else {
            panic!("the full CLI did not parse exec");
        };
        assert_eq!(format!("{front:?}"), format!("{full:?}"));
    }
}
