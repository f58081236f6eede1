//! One black-box conformance suite for every `Sandbox` implementation.
//!
//! Each case in [`cases`] is written once as an async function over an [`Env`] (a fresh
//! data directory, seeded like a real deployment, and the sandbox of one thread in it);
//! [`conformance_suite!`] turns every case into its own `#[tokio::test]` for a given
//! [`Target`]. The same cases run against the local sandbox and against
//! `RemoteSandbox` talking to a real agent process, so the two cannot drift apart.
//! Invariant: a case only uses the `Sandbox` trait and the host data directory it was
//! handed; it never depends on which implementation serves it.

pub mod agent_process;
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

/// A prepared data directory before a target opens a sandbox in it.
#[derive(Debug)]
pub struct Prepared {
    /// The temp dir, when this case owns it (`None` for a shared one).
    pub dir: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    /// The user.
    pub user: UserId,
    /// The thread.
    pub thread: ThreadId,
}

fn seed(data_dir: &Path) -> anyhow::Result<()> {
    let layout = DataLayout::new(data_dir);
    let skill = layout.skills_dir().join("demo");
    std::fs::create_dir_all(&skill).context("seed skills")?;
    // Cases sharing a data directory seed it concurrently while others read the skill: a
    // plain write truncates the file under a reader, so the seed is put in place by rename
    // (from outside any mount, so no listing sees the temporary file).
    let tmp = tempfile::NamedTempFile::new_in(data_dir).context("seed skill")?;
    std::fs::write(tmp.path(), SEEDED_SKILL_TEXT).context("seed skill")?;
    tmp.persist(skill.join("SKILL.md")).context("seed skill")?;
    Ok(())
}

impl Prepared {
    /// A fresh data directory with the skills seed in place.
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("paddock-conf-")
            .tempdir()
            .context("tempdir")?;
        seed(dir.path())?;
        Ok(Self {
            data_dir: dir.path().to_path_buf(),
            dir: Some(dir),
            user: UserId::new("conf-user")?,
            thread: ThreadId::new("conf-thread")?,
        })
    }

    /// A fresh thread in a shared, seeded data directory.
    pub fn in_shared(data_dir: &Path) -> anyhow::Result<Self> {
        seed(data_dir)?;
        let thread = format!("t-{}", &paddock_agent::shell::random_token()[..20]);
        Ok(Self {
            dir: None,
            data_dir: data_dir.to_path_buf(),
            user: UserId::new("conf-user")?,
            thread: ThreadId::new(thread)?,
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// What the suite runs against: a `Sandbox` implementation and how to open one.
#[async_trait]
pub trait Target: Send + Sync {
    /// The data directory and thread for one case (a fresh directory by default).
    fn prepare(&self) -> anyhow::Result<Prepared> {
        Prepared::new()
    }

    /// Opens the sandbox of `prep`'s thread; the returned guards live as long as the case.
    async fn open(
        &self,
        prep: &Prepared,
    ) -> anyhow::Result<(Arc<dyn Sandbox>, Vec<Box<dyn Send + Sync>>)>;
}

/// A target that cannot run on this machine (a missing kernel feature). Outside CI the
/// case is skipped with a loud message; with `CI=true` it fails.
#[derive(Debug, thiserror::Error)]
#[error("target unavailable on this machine: {0}")]
pub struct Unsupported(pub String);

/// The local runtime's sandbox (`paddock_runtime::LocalSandbox`, isolated), in process.
///
/// All cases of a test binary share one provider over one data directory, each case in
/// its own thread: the runtime owns process-wide resources (its cgroup subtree is named
/// after the process), so a process runs one runtime, as the server does.
#[derive(Debug, Default)]
pub struct LocalTarget;

struct Shared {
    dir: tempfile::TempDir,
    provider: Result<paddock_runtime::LocalProvider, String>,
}

fn shared() -> Result<&'static Shared, Unsupported> {
    static SHARED: std::sync::OnceLock<Result<Shared, String>> = std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| {
            let dir = tempfile::Builder::new()
                .prefix("paddock-conf-local-")
                .tempdir()
                .map_err(|e| format!("cannot create a temp dir: {e}"))?;
            let provider = paddock_runtime::LocalProvider::new(
                dir.path(),
                paddock_runtime::RuntimeOptions::default(),
                Vec::new(),
            )
            .map_err(|e| e.to_string());
            Ok(Shared { dir, provider })
        })
        .as_ref()
        .map_err(|e| Unsupported(e.clone()))
}

#[async_trait]
impl Target for LocalTarget {
    fn prepare(&self) -> anyhow::Result<Prepared> {
        Prepared::in_shared(shared()?.dir.path())
    }

    async fn open(
        &self,
        prep: &Prepared,
    ) -> anyhow::Result<(Arc<dyn Sandbox>, Vec<Box<dyn Send + Sync>>)> {
        let provider = shared()?
            .provider
            .as_ref()
            .map_err(|e| Unsupported(format!("the isolated local runtime cannot start: {e}")))?;
        let sb = provider.acquire(&prep.user, &prep.thread).await?;
        Ok((sb, Vec::new()))
    }
}

/// The TEST-ONLY [`HostSandbox`] (no isolation), in process.
#[derive(Debug, Default)]
pub struct HostTarget;

#[async_trait]
impl Target for HostTarget {
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
pub struct RemoteTarget {
    /// The agent binary.
    pub bin: PathBuf,
}

#[async_trait]
impl Target for RemoteTarget {
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

/// Runs one case against `target` in a fresh environment.
pub async fn run<F, Fut>(target: &dyn Target, case: F) -> anyhow::Result<()>
where
    F: FnOnce(Env) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let opened = async {
        let prep = target.prepare()?;
        let (sandbox, guard) = target.open(&prep).await?;
        Ok::<_, anyhow::Error>((prep, sandbox, guard))
    };
    let (prep, sandbox, mut guard) = match opened.await {
        Ok(v) => v,
        Err(e)
            if e.downcast_ref::<Unsupported>().is_some()
                && std::env::var("CI").as_deref() != Ok("true") =>
        {
            eprintln!("SKIPPED (set CI=true to make this a failure): {e:#}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let data_dir = prep.data_dir().to_path_buf();
    if let Some(dir) = prep.dir {
        guard.push(Box::new(dir));
    }
    case(Env {
        sandbox,
        data_dir,
        _guard: guard,
    })
    .await
}

/// The one tokio runtime every case of a test process runs on. A process shares one
/// sandbox runtime between cases, and that runtime's child processes and timers must not
/// be tied to a per-test tokio runtime that ends (and takes its drivers with it) while
/// other cases still run; the server runs one tokio runtime too.
pub fn tokio_runtime() -> anyhow::Result<&'static tokio::runtime::Runtime> {
    static RT: std::sync::OnceLock<Result<tokio::runtime::Runtime, String>> =
        std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot build the test runtime: {e}"))
    })
    .as_ref()
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Expands to one `#[test]` per conformance case for `$target` (an expression
/// building a [`Target`]).
#[macro_export]
macro_rules! conformance_suite {
    ($target:expr) => {
        $crate::conformance_suite!(@cases $target;
            exec_echo, exec_exit_code_and_stderr, exec_default_cwd, exec_env, exec_bad_env_key,
            exec_timeout, exec_truncation, exec_stream_events, exec_background_returns, exec_unicode,
            exec_bad_cwd, text_round_trip, text_unicode_and_parents, text_append, text_line_ranges,
            text_bad_range, text_binary_refused, text_missing, bytes_round_trip, bytes_ranges,
            big_file_round_trip, bytes_cap, read_only_mount, escapes_refused, symlink_escapes_refused,
            str_replace_variants, glob_cases, glob_cap, grep_cases, grep_cap_and_cuts, list_depth_and_ignore,
            stat_kinds, errors_hide_host_paths, info_facts, write_to_directory_refused
        );
    };
    (@cases $target:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() -> anyhow::Result<()> {
                $crate::tokio_runtime()?.block_on(async {
                    let target = $target;
                    $crate::run(&target, $crate::cases::$case).await
                })
            }
        )*
    };
}
