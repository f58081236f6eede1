//! The command line of the suite's agent binaries (`paddock-conformance-agent` and
//! `paddock-host-test-agent`): exactly the flags [`crate::AgentProcess::spawn`] passes,
//! `--listen ADDR --token-file FILE --data-dir DIR --user USER --thread THREAD`, each once.
//! They take no config file and read no environment: the real `paddock agent` (whose
//! settings the `paddock` binary resolves) is tested by `tests/compat`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use paddock_agent::cli::ServeOptions;
use paddock_core::{ThreadId, UserId};

/// What an agent binary of the suite serves.
#[derive(Debug, Clone)]
pub struct AgentProcessArgs {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The file holding the token.
    pub token_file: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The user.
    pub user: UserId,
    /// The thread.
    pub thread: ThreadId,
}

impl AgentProcessArgs {
    /// Reads the flags (without `argv[0]`); an unknown, repeated or missing flag is an error.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<Self> {
        let mut args = args.into_iter();
        let mut seen: [Option<String>; 5] = Default::default();
        const NAMES: [&str; 5] = [
            "--listen",
            "--token-file",
            "--data-dir",
            "--user",
            "--thread",
        ];
        while let Some(flag) = args.next() {
            let flag = flag.to_string_lossy().into_owned();
            let i = NAMES
                .iter()
                .position(|n| *n == flag)
                .with_context(|| format!("unknown argument {flag:?}"))?;
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?
                .into_string()
                .map_err(|v| anyhow::anyhow!("{flag} {v:?}: not UTF-8"))?;
            anyhow::ensure!(seen[i].replace(value).is_none(), "{flag} given twice");
        }
        let [listen, token_file, data_dir, user, thread] = seen;
        let need = |v: Option<String>, name: &str| v.with_context(|| format!("{name} is required"));
        Ok(Self {
            listen: need(listen, "--listen")?.parse().context("--listen")?,
            token_file: need(token_file, "--token-file")?.into(),
            data_dir: need(data_dir, "--data-dir")?.into(),
            user: UserId::new(need(user, "--user")?).context("--user")?,
            thread: ThreadId::new(need(thread, "--thread")?).context("--thread")?,
        })
    }

    /// The agent API as `paddock agent` serves it by default, with this token.
    pub fn serve_options(&self) -> anyhow::Result<ServeOptions> {
        let raw = std::fs::read_to_string(&self.token_file).with_context(|| {
            format!(
                "could not read the token file {}",
                self.token_file.display()
            )
        })?;
        Ok(ServeOptions {
            listen: self.listen,
            config: paddock_agent::AgentConfig {
                token: Some(paddock_agent::cli::check_token(&raw)?),
                ..paddock_agent::AgentConfig::default()
            },
            limits: paddock_agent::listen::ListenConfig::default(),
        })
    }
}

/// Logs to stderr at `$PADDOCK_LOG` (default `warn`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PADDOCK_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_spawned_flags_are_read_and_nothing_else() {
        let ok = os(&[
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            "/t",
            "--data-dir",
            "/d",
            "--user",
            "u",
            "--thread",
            "t",
        ]);
        let a = AgentProcessArgs::parse(ok.clone()).expect("parses");
        assert_eq!(a.listen.to_string(), "127.0.0.1:0");
        assert_eq!((a.user.as_str(), a.thread.as_str()), ("u", "t"));
        let mut extra = ok.clone();
        extra.extend(os(&["--bogus", "x"]));
        assert!(AgentProcessArgs::parse(extra).is_err());
        let mut twice = ok.clone();
        twice.extend(os(&["--user", "v"]));
        assert!(AgentProcessArgs::parse(twice).is_err());
        assert!(AgentProcessArgs::parse(ok[2..].to_vec()).is_err());
        let mut bad = ok;
        bad[7] = "a b".into();
        assert!(AgentProcessArgs::parse(bad).is_err());
    }
}
