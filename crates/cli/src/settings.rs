//! What each subcommand runs with, resolved once, here, before any work starts.
//!
//! Every setting comes from four layers, each overriding the one before it:
//!
//! 1. built-in defaults ([`PaddockConfig::default`], the same for every subcommand);
//! 2. the config file: `--config FILE`, else `$PADDOCK_CONFIG`, else none;
//! 3. environment variables (the table in [`crate::env`]);
//! 4. flags given on the command line ([`crate::args`]: a flag that sets a key is an
//!    `Option`, so only a flag actually given overrides, whatever its value).
//!
//! [`crate::config::load`] does layers 1–3 and checks the result; each function below adds
//! its subcommand's flags, checks what only that subcommand needs, and returns one typed
//! value ([`ServeSettings`], [`ExecSettings`], ...) that `lib.rs` hands to the library
//! crates as plain typed options. Nothing here reads the process environment except
//! through the `vars` lookup it is given.
//!
//! Which keys each subcommand uses (all of them check the whole file):
//!
//! | subcommand | keys | flags over them |
//! | --- | --- | --- |
//! | `serve` | all | `--listen`, `--data-dir`, `--api-key`, `--public-url` |
//! | `exec` | `data_dir`, `sandbox` | `--data-dir`, `--timeout`, `--network`, `--isolation` |
//! | `agent` | `data_dir`, `log`, `sandbox`, `mounts`, `server` (listener), `agent`, `tools` | `--data-dir`, `--max-body-bytes`, `--max-upload-bytes`, `--isolation`, `--network` |
//! | `mcp` | `data_dir`, `api_key`, `api_key_file`, `sandbox`, `mounts`, `tools` | `--data-dir`, `--api-key`, `--isolation`, `--bash-timeout-secs` |
//! | `doctor` | `data_dir`, `sandbox`, `deerflow` | `--data-dir` |
//! | `config show`, `config check` | all | none |
//! | `migrate-layout`, `kube manifests` | none (flags only) | |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use paddock_core::{Mount, SandboxId, ThreadId, UserId};

use crate::args::{AgentArgs, ConfigArgs, DoctorArgs, ExecArgs, McpArgs, MigrateArgs, ServeArgs};
use crate::config::{self, AgentSection, ConfigError, LogConfig, PaddockConfig};
use crate::env;

/// How a variable is looked up (the process environment, or a table in tests).
pub type Vars<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Why a subcommand's settings could not be resolved; every variant names the key, the
/// variable or the flag. All are usage errors (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file or the environment.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `mounts.custom` refused by `mounts.allowed_host_roots` or the mount rules.
    #[error("invalid mounts.custom: {0}")]
    Mounts(String),
    /// `deerflow.host_base_dir` (or the root `threads_host_path` implies) is no directory.
    #[error("deerflow.host_base_dir (DEER_FLOW_HOST_BASE_DIR) {} is not a directory", .0.display())]
    GatewayRoot(PathBuf),
    /// A flag's value (the message starts with the flag, or is the id error naming it).
    #[error("{0}")]
    Flag(String),
    /// `paddock agent`'s token: missing, unreadable or unusable.
    #[error("{0}")]
    Token(String),
}

impl SettingsError {
    /// What to print after the error.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::Config(_) => Some("every key is documented in docs/configuration.md"),
            Self::Mounts(_) => Some(
                "custom mounts must live under mounts.allowed_host_roots (docs/configuration.md)",
            ),
            Self::GatewayRoot(_) => Some(
                "point it at the directory DeerFlow's gateway keeps its state in (its DEER_FLOW_HOME as this host sees it)",
            ),
            Self::Flag(_) | Self::Token(_) => None,
        }
    }
}

/// `paddock config show` / `check`: the file and the environment, no flags.
pub fn config(args: &ConfigArgs, vars: Vars<'_>) -> Result<PaddockConfig, SettingsError> {
    Ok(config::load(args.config.as_deref(), vars)?)
}

/// `paddock serve`: every key of the file.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// The configuration with the flags applied.
    pub config: PaddockConfig,
    /// `mounts.custom`, validated.
    pub base_mounts: Vec<Mount>,
    /// DeerFlow's state root, canonical (`deerflow:`), when configured.
    pub gateway_root: Option<PathBuf>,
    /// Whether the API key came from `--api-key` (visible to every local user).
    pub api_key_on_argv: bool,
}

/// Resolves `paddock serve`'s settings.
pub fn serve(args: ServeArgs, vars: Vars<'_>) -> Result<ServeSettings, SettingsError> {
    let mut cfg = config::load(args.config.as_deref(), vars)?;
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    let api_key_on_argv = args.api_key.is_some();
    if let Some(k) = args.api_key {
        cfg.api_key = Some(k);
    }
    if let Some(u) = args.public_url {
        cfg.public_url = Some(u);
    }
    let base_mounts = custom_mounts(&cfg)?;
    let gateway_root = match cfg.deerflow.state_root() {
        None => None,
        Some(root) => match std::fs::canonicalize(&root) {
            Ok(c) if c.is_dir() => Some(c),
            _ => return Err(SettingsError::GatewayRoot(root)),
        },
    };
    Ok(ServeSettings {
        config: cfg,
        base_mounts,
        gateway_root,
        api_key_on_argv,
    })
}

/// `paddock exec`: one command in one thread's sandbox.
#[derive(Debug, Clone)]
pub struct ExecSettings {
    /// Which thread's sandbox runs which command (ids are checked by the runtime).
    pub job: paddock_runtime::cli::ExecJob,
    /// The `sandbox:` section with `--network` and `--isolation` applied.
    pub sandbox: paddock_runtime::RuntimeOptions,
    /// `$PADDOCK_LOG` (the file's `log.level` does not apply: stderr is the command's).
    pub log: Option<String>,
}

/// Resolves `paddock exec`'s settings.
pub fn exec(args: ExecArgs, vars: Vars<'_>) -> Result<ExecSettings, SettingsError> {
    let cfg = config::load(args.config.as_deref(), vars)?;
    let mut sandbox = cfg.sandbox;
    if let Some(n) = args.network {
        sandbox.network = n.into();
    }
    if let Some(i) = args.isolation {
        sandbox.isolation = i.into();
    }
    Ok(ExecSettings {
        job: paddock_runtime::cli::ExecJob {
            data_dir: args.data_dir.unwrap_or(cfg.data_dir),
            user: args.user,
            thread: args.thread,
            timeout: args.timeout,
            command: args.command,
        },
        sandbox,
        log: vars(env::LOG),
    })
}

/// `paddock doctor`.
#[derive(Debug, Clone)]
pub struct DoctorSettings {
    /// Print JSON instead of a table.
    pub json: bool,
    /// The runtime options and data layout whose disk quota it reports.
    pub context: paddock_runtime::cli::DoctorContext,
}

/// Resolves `paddock doctor`'s settings.
pub fn doctor(args: DoctorArgs, vars: Vars<'_>) -> Result<DoctorSettings, SettingsError> {
    let cfg = config::load(args.config.as_deref(), vars)?;
    let data_dir = args.data_dir.unwrap_or(cfg.data_dir);
    // As `paddock serve` resolves it; a state root that is not a directory yet still
    // means users' data is the gateway's.
    let gateway = cfg
        .deerflow
        .state_root()
        .map(|r| std::fs::canonicalize(&r).unwrap_or(r));
    Ok(DoctorSettings {
        json: args.json,
        context: paddock_runtime::cli::DoctorContext {
            opts: cfg.sandbox,
            layout: paddock_core::DataLayout::new(data_dir).with_gateway_root(gateway),
        },
    })
}

/// `paddock agent`: one thread's sandbox served over the agent API.
#[derive(Clone)]
pub struct AgentSettings {
    /// Its own address (`--listen`; not the file's `listen`, which is `paddock serve`'s).
    pub listen: SocketAddr,
    /// The secret (`None` only with `--insecure-no-auth`).
    pub token: Option<String>,
    /// Paddock's data directory.
    pub data_dir: PathBuf,
    /// The user whose thread is served.
    pub user: UserId,
    /// The thread served.
    pub thread: ThreadId,
    /// The `sandbox:` section with `--isolation` and `--network` applied.
    pub sandbox: paddock_runtime::RuntimeOptions,
    /// `mounts.custom`, validated.
    pub mounts: Vec<Mount>,
    /// The `agent:` section with `--max-body-bytes` and `--max-upload-bytes` applied.
    pub agent: AgentSection,
    /// The `tools:` section.
    pub tools: paddock_tools::ToolsConfig,
    /// The listener's limits (`server.header_read_timeout_secs`, ...).
    pub listen_limits: paddock_agent::listen::ListenConfig,
    /// Logging.
    pub log: LogConfig,
}

impl std::fmt::Debug for AgentSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSettings")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("data_dir", &self.data_dir)
            .field("user", &self.user)
            .field("thread", &self.thread)
            .field("sandbox", &self.sandbox)
            .field("mounts", &self.mounts)
            .field("agent", &self.agent)
            .field("tools", &self.tools)
            .field("listen_limits", &self.listen_limits)
            .field("log", &self.log)
            .finish()
    }
}

/// Resolves `paddock agent`'s settings.
pub fn agent(args: AgentArgs, vars: Vars<'_>) -> Result<AgentSettings, SettingsError> {
    let cfg = config::load(args.config.as_deref(), vars)?;
    let user = UserId::new(&args.user).map_err(|e| SettingsError::Flag(e.to_string()))?;
    let thread = ThreadId::new(&args.thread).map_err(|e| SettingsError::Flag(e.to_string()))?;
    let mounts = custom_mounts(&cfg)?;
    let mut sandbox = cfg.sandbox;
    if let Some(i) = args.isolation {
        sandbox.isolation = i.into();
    }
    if let Some(n) = args.network {
        sandbox.network = n.into();
    }
    let mut agent = cfg.agent;
    if let Some(b) = args.max_body_bytes {
        agent.max_body_bytes = b;
    }
    if let Some(b) = args.max_upload_bytes {
        agent.max_upload_bytes = b;
    }
    let token = agent_token(
        args.token_file.as_deref(),
        vars(env::AGENT_TOKEN),
        args.insecure_no_auth,
    )?;
    Ok(AgentSettings {
        listen: args.listen,
        token,
        data_dir: args.data_dir.unwrap_or(cfg.data_dir),
        user,
        thread,
        sandbox,
        mounts,
        agent,
        tools: cfg.tools,
        listen_limits: cfg.server.listen_config(),
        log: cfg.log,
    })
}

/// The agent's token: `--token-file`, else `$PADDOCK_AGENT_TOKEN`, else none, which only
/// `--insecure-no-auth` allows.
fn agent_token(
    file: Option<&Path>,
    from_env: Option<String>,
    insecure_no_auth: bool,
) -> Result<Option<String>, SettingsError> {
    let raw = match file {
        Some(f) => Some(std::fs::read_to_string(f).map_err(|e| {
            SettingsError::Token(format!(
                "could not read the token file {}: {e}",
                f.display()
            ))
        })?),
        None => from_env,
    };
    match raw {
        Some(raw) => paddock_agent::cli::check_token(&raw)
            .map(Some)
            .map_err(|e| SettingsError::Token(e.to_string())),
        None if insecure_no_auth => Ok(None),
        None => Err(SettingsError::Token(format!(
            "no agent token configured\n\nhint: pass --token-file FILE or set {}; --insecure-no-auth serves without one",
            env::AGENT_TOKEN
        ))),
    }
}

/// `paddock mcp`.
#[derive(Debug, Clone)]
pub struct McpSettings {
    /// What it serves, for `paddock_mcp`.
    pub options: paddock_mcp::cli::McpOptions,
    /// `$PADDOCK_LOG`, else `warn` (stdout carries the protocol; logs go to stderr).
    pub log: String,
}

/// Resolves `paddock mcp`'s settings.
pub fn mcp(args: McpArgs, vars: Vars<'_>) -> Result<McpSettings, SettingsError> {
    let cfg = config::load(args.config.as_deref(), vars)?;
    let flag = |flag: &str, e: &dyn std::fmt::Display| SettingsError::Flag(format!("{flag}: {e}"));
    let user = UserId::new(&args.user).map_err(|e| flag("--user", &e))?;
    let thread = ThreadId::new(&args.thread).map_err(|e| flag("--thread", &e))?;
    let mut tools = cfg.tools.clone();
    if let Some(secs) = args.bash_timeout_secs {
        if !(secs.is_finite() && secs > 0.0) {
            return Err(SettingsError::Flag(format!(
                "--bash-timeout-secs must be a positive number of seconds, got {secs}"
            )));
        }
        tools.bash_timeout_secs = secs;
    }
    let source = match args.provisioner {
        Some(url) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(SettingsError::Flag(format!(
                    "--provisioner {url:?}: must start with http:// or https://"
                )));
            }
            let api_key = match (args.api_key.or(cfg.api_key), &cfg.api_key_file) {
                (Some(k), _) => k,
                (None, Some(f)) => read_key_file(f)?,
                (None, None) => {
                    return Err(SettingsError::Flag(
                        "--api-key (or PADDOCK_API_KEY, or the config's api_key or api_key_file) is required with --provisioner".into(),
                    ));
                }
            };
            let sandbox_id = args
                .sandbox_id
                .map(|id| SandboxId::new(id).map_err(|e| flag("--sandbox-id", &e)))
                .transpose()?;
            paddock_mcp::cli::SandboxSourceOptions::Provisioner {
                url,
                api_key,
                sandbox_id,
            }
        }
        None => {
            let mounts = custom_mounts(&cfg)?;
            let mut runtime = cfg.sandbox;
            if let Some(i) = args.isolation {
                runtime.isolation = i.into();
            }
            paddock_mcp::cli::SandboxSourceOptions::Local {
                data_dir: args.data_dir.unwrap_or(cfg.data_dir),
                runtime,
                mounts,
            }
        }
    };
    Ok(McpSettings {
        options: paddock_mcp::cli::McpOptions {
            user,
            thread,
            source,
            tools,
        },
        log: vars(env::LOG).unwrap_or_else(|| "warn".into()),
    })
}

/// `api_key_file`'s key, without surrounding whitespace.
fn read_key_file(path: &Path) -> Result<String, SettingsError> {
    let invalid = |message: String| {
        SettingsError::Config(ConfigError::Invalid {
            key: "api_key_file".into(),
            message,
        })
    };
    let raw = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    let key = raw.trim();
    if key.is_empty() {
        return Err(invalid(format!("{} is empty", path.display())));
    }
    Ok(key.to_owned())
}

/// `paddock migrate-layout`: its flags, nothing else.
pub fn migrate(args: MigrateArgs) -> paddock_migrate::cli::MigrateOptions {
    paddock_migrate::cli::MigrateOptions {
        data_dir: args.data_dir,
        user_id: args.user_id,
        owners_db: args.owners_db,
        dry_run: args.dry_run,
        json: args.json,
        allow_copy: args.allow_copy,
    }
}

fn custom_mounts(cfg: &PaddockConfig) -> Result<Vec<Mount>, SettingsError> {
    paddock_core::mount::validate_custom_mounts(&cfg.mounts.custom, &cfg.mounts.policy())
        .map_err(|e| SettingsError::Mounts(e.to_string()))
}

#[cfg(test)]
mod tests;
