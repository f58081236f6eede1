//! One black-box conformance suite for every `Sandbox` backend.
//!
//! Each case in [`cases`] is written once as an async function over an [`Env`] (a fresh
//! data directory, seeded like a real deployment, and the sandbox of one thread in it);
//! [`conformance_suite!`] turns every case into its own `#[tokio::test]` for a given
//! [`Backend`]. The same cases run against the local sandbox and against
//! `RemoteSandbox` talking to a real agent process, so the two cannot drift apart.
//! Invariant: a case only uses the `Sandbox` trait and the host data directory it was
//! handed; it never depends on which backend serves it.

pub mod cases;
pub mod host;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use paddock_core::{DataLayout, Sandbox, ThreadId, UserId};
use tokio::io::AsyncBufReadExt;

pub use host::HostSandbox;

/// The file seeded into the global skills directory before a sandbox is created.
pub const SEEDED_SKILL: &str = "/mnt/skills/demo/SKILL.md";
/// Its content.
pub const SEEDED_SKILL_TEXT: &str = "# demo skill\nread-only\n";

/// One case's world: a data directory, a user and a thread, and the sandbox serving them.
pub struct Env {
    /// The sandbox under test.
    pub sandbox: Arc<dyn Sandbox>,
    /// The host data directory (for assertions that no host path leaks).
    pub data_dir: PathBuf,
    /// Keeps the directory (and any agent process) alive for the case.
    _guard: Vec<Box<dyn Send + Sync>>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl Env {
    /// The sandbox.
    pub fn sb(&self) -> &dyn Sandbox {
        self.sandbox.as_ref()
    }
}

/// A prepared data directory before a backend opens a sandbox in it.
#[derive(Debug)]
pub struct Prepared {
    /// The temp dir.
    pub dir: tempfile::TempDir,
    /// The user.
    pub user: UserId,
    /// The thread.
    pub thread: ThreadId,
}

impl Prepared {
    /// A fresh data directory with the skills seed in place.
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("paddock-conf-")
            .tempdir()
            .context("tempdir")?;
        let layout = DataLayout::new(dir.path());
        let skill = layout.skills_dir().join("demo");
        std::fs::create_dir_all(&skill).context("seed skills")?;
        std::fs::write(skill.join("SKILL.md"), SEEDED_SKILL_TEXT).context("seed skill")?;
        Ok(Self {
            dir,
            user: UserId::new("conf-user")?,
            thread: ThreadId::new("conf-thread")?,
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A way of serving a sandbox to the suite.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Opens the sandbox of `prep`'s thread; the returned guards live as long as the case.
    async fn open(
        &self,
        prep: &Prepared,
    ) -> anyhow::Result<(Arc<dyn Sandbox>, Vec<Box<dyn Send + Sync>>)>;
}

/// The in-process sandbox (the host test sandbox until the runtime is wired in).
#[derive(Debug, Default)]
pub struct LocalBackend;

#[async_trait]
impl Backend for LocalBackend {
    async fn open(
        &self,
        prep: &Prepared,
    ) -> anyhow::Result<(Arc<dyn Sandbox>, Vec<Box<dyn Send + Sync>>)> {
        let sb = HostSandbox::new(prep.data_dir(), &prep.user, &prep.thread)?;
        Ok((Arc::new(sb), Vec::new()))
    }
}

/// A running agent process, killed (by its pid) when dropped.
#[derive(Debug)]
pub struct AgentProcess {
    child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    /// The token it requires.
    pub token: String,
    _token_dir: tempfile::TempDir,
}

impl AgentProcess {
    /// Starts `bin` serving `data_dir`'s `user`/`thread` on a port the OS picks, and
    /// waits for its `listening on` line.
    pub async fn spawn(
        bin: &Path,
        data_dir: &Path,
        user: &str,
        thread: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let token = format!("tok{}", paddock_agent::shell::random_token());
        let token_dir = tempfile::tempdir()?;
        let token_file = token_dir.path().join("token");
        std::fs::write(&token_file, &token)?;
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(["--listen", "127.0.0.1:0", "--token-file"])
            .arg(&token_file)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--user", user, "--thread", thread])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not start {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .context("the agent did not report its address within 30 s")??
            .context("the agent exited before listening")?;
        let addr = line
            .strip_prefix("listening on ")
            .context("unexpected first line")?
            .trim()
            .to_owned();
        Ok(Self {
            child,
            addr,
            token,
            _token_dir: token_dir,
        })
    }

    /// The capability base URL (`http://ADDR/s/TOKEN`).
    pub fn capability_url(&self) -> String {
        format!("{}/s/{}", self.addr, self.token)
    }

    /// The server's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Err(e) = self.child.start_kill() {
            eprintln!("could not stop the agent process: {e}");
        }
    }
}

/// `RemoteSandbox` over a real agent process started from `bin`.
#[derive(Debug)]
pub struct RemoteBackend {
    /// The agent binary.
    pub bin: PathBuf,
}

#[async_trait]
impl Backend for RemoteBackend {
    async fn open(
        &self,
        prep: &Prepared,
    ) -> anyhow::Result<(Arc<dyn Sandbox>, Vec<Box<dyn Send + Sync>>)> {
        let agent = AgentProcess::spawn(
            &self.bin,
            prep.data_dir(),
            prep.user.as_str(),
            prep.thread.as_str(),
            &[],
        )
        .await?;
        let client = paddock_client::AgentClient::new(&agent.capability_url())?;
        let sb = paddock_client::RemoteSandbox::connect(client).await?;
        Ok((Arc::new(sb), vec![Box::new(agent)]))
    }
}

/// Runs one case against `backend` in a fresh environment.
pub async fn run<F, Fut>(backend: &dyn Backend, case: F) -> anyhow::Result<()>
where
    F: FnOnce(Env) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let prep = Prepared::new()?;
    let (sandbox, mut guard) = backend.open(&prep).await?;
    let data_dir = prep.data_dir().to_path_buf();
    guard.push(Box::new(prep.dir));
    case(Env {
        sandbox,
        data_dir,
        _guard: guard,
    })
    .await
}

/// Expands to one `#[tokio::test]` per conformance case for `$backend` (an expression
/// building a [`Backend`]).
#[macro_export]
macro_rules! conformance_suite {
    ($backend:expr) => {
        $crate::conformance_suite!(@cases $backend;
            exec_echo, exec_exit_code_and_stderr, exec_default_cwd, exec_env, exec_bad_env_key,
            exec_timeout, exec_truncation, exec_stream_events, exec_background_returns, exec_unicode,
            exec_bad_cwd, text_round_trip, text_unicode_and_parents, text_append, text_line_ranges,
            text_bad_range, text_binary_refused, text_missing, bytes_round_trip, bytes_ranges,
            big_file_round_trip, bytes_cap, read_only_mount, escapes_refused, symlink_escapes_refused,
            str_replace_variants, glob_cases, glob_cap, grep_cases, grep_cap_and_cuts, list_depth_and_ignore,
            stat_kinds, errors_hide_host_paths, info_facts, write_to_directory_refused
        );
    };
    (@cases $backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() -> anyhow::Result<()> {
                let backend = $backend;
                $crate::run(&backend, $crate::cases::$case).await
            }
        )*
    };
}
