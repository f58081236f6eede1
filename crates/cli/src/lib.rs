//! The `paddock` command line. `main` only calls [`main_entry`]; every subcommand parses
//! its flags with clap, resolves configuration once (file < env < flags), and hands off
//! to the library crate that owns the work. Data goes to stdout, logs to stderr.

pub mod config;
pub mod env;
pub mod fastargs;
pub mod front;
pub mod lograte;

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
    /// Run the control plane: the DeerFlow-compatible provisioner API on 127.0.0.1:8002,
    /// with each sandbox's agent API served under its capability URL.
    Serve(ServeArgs),
    /// Run one command in a thread's isolated sandbox; exits with its exit code
    /// (128+signal when killed, 124 on timeout).
    Exec(ExecCmd),
    /// Check which kernel features the isolated runtime needs are available here.
    Doctor(DoctorCmd),
    /// Serve one thread's sandbox over the AIO-compatible agent API (as inside a Pod).
    Agent(AgentCmd),
    /// Move data from the legacy layout (threads/{id}) to users/{user}/threads/{id}.
    MigrateLayout(paddock_migrate::cli::MigrateArgs),
    /// Serve the LLM tool layer of one thread's sandbox over MCP on stdio.
    Mcp(paddock_mcp::cli::McpArgs),
    /// Kubernetes helpers.
    #[command(subcommand)]
    Kube(KubeCommand),
    /// Show or check the resolved configuration (defaults < paddock.yaml < environment).
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `paddock kube …`.
#[derive(Debug, Subcommand)]
pub enum KubeCommand {
    /// Print the deployment manifests (Deployment, ServiceAccount, Role, RoleBinding,
    /// Service, ConfigMap) as one multi-document YAML stream.
    Manifests,
}

/// `paddock config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the resolved configuration as JSON (secrets omitted).
    Show(ConfigArgs),
    /// Validate the configuration and exit 0, or print what is wrong and exit 2.
    Check(ConfigArgs),
}

/// `paddock serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The config file (default: $PADDOCK_CONFIG, else built-in defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8002; port 0 picks a free one).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Data directory (default ./.paddock).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The API key clients must send (else $PADDOCK_API_KEY, $PROVISIONER_API_KEY, the
    /// config, or one generated into the data dir).
    #[arg(long)]
    pub api_key: Option<String>,
    /// Base URL of sandbox URLs (default http://{listen}).
    #[arg(long)]
    pub public_url: Option<String>,
}

/// `paddock exec`.
#[derive(Debug, clap::Args)]
pub struct ExecCmd {
    /// The config file whose `sandbox:` section applies (flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to run and where.
    #[command(flatten)]
    pub args: paddock_runtime::cli::ExecArgs,
}

/// `paddock doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorCmd {
    /// The config file whose `sandbox:` and `deerflow:` sections say which disk quota
    /// applies (default: $PADDOCK_CONFIG, else built-in defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (default: the config's `data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Output format.
    #[command(flatten)]
    pub args: paddock_runtime::cli::DoctorArgs,
}

/// `paddock agent`.
#[derive(Debug, clap::Args)]
pub struct AgentCmd {
    /// The config file whose `sandbox:`, `mounts:` and `tools:` sections apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address, token and thread.
    #[command(flatten)]
    pub args: paddock_agent::cli::AgentArgs,
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

fn init_logging(level: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // Warnings and errors are bounded per call site (see `lograte`).
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if json {
        registry
            .with(fmt.json().with_filter(lograte::RateLimit::default()))
            .try_init()
    } else {
        registry
            .with(fmt.with_filter(lograte::RateLimit::default()))
            .try_init()
    };
}

/// Logging of `paddock exec`: warnings and errors unless `PADDOCK_LOG` says otherwise, since
/// its stderr carries the command's. `PADDOCK_LOG` is a level or a `target=level,...` list
/// here (no span or field filters): the `paddock` front links no regex engine.
fn init_exec_logging(spec: Option<&str>) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let targets = match exec_log_targets(spec) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("paddock: PADDOCK_LOG ignored ({e}); logging warnings and errors");
            Targets::new().with_default(LevelFilter::WARN)
        }
    };
    let ansi = std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(targets)
        .try_init();
}

/// The filter of `paddock exec` for `PADDOCK_LOG` (unset or empty: warnings).
pub fn exec_log_targets(spec: Option<&str>) -> Result<tracing_subscriber::filter::Targets, String> {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    match spec.map(str::trim) {
        None | Some("") => Ok(Targets::new().with_default(LevelFilter::WARN)),
        Some(s) => s.parse::<Targets>().map_err(|e| format!("{s:?}: {e}")),
    }
}

fn load_config(path: Option<&std::path::Path>) -> Result<config::PaddockConfig, ExitCode> {
    config::load(path, &process_env).map_err(|e| {
        report(
            &e.into(),
            Some("every key is documented in docs/configuration.md"),
        );
        ExitCode::from(EXIT_USAGE)
    })
}

fn tokio_rt() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            report(
                &anyhow::Error::from(e).context("could not start the async runtime"),
                None,
            );
            ExitCode::FAILURE
        })
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

fn custom_mounts(cfg: &config::PaddockConfig) -> Result<Vec<paddock_core::Mount>, ExitCode> {
    paddock_core::mount::validate_custom_mounts(&cfg.mounts.custom, &cfg.mounts.policy()).map_err(|e| {
        eprintln!("error: invalid mounts.custom: {e}");
        eprintln!("\nhint: custom mounts must live under mounts.allowed_host_roots (docs/configuration.md)");
        ExitCode::from(EXIT_USAGE)
    })
}

fn run_serve(args: ServeArgs) -> Result<ExitCode, ExitCode> {
    let mut cfg = load_config(args.config.as_deref())?;
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    let key_on_argv = args.api_key.is_some();
    if let Some(k) = args.api_key {
        cfg.api_key = Some(k);
    }
    if let Some(u) = args.public_url {
        cfg.public_url = Some(u);
    }
    init_logging(&cfg.log.level, cfg.log.format == config::LogFormat::Json);
    if key_on_argv {
        // Sandboxes cannot see it (their init is not a copy of Paddock), but every local
        // user of the host can read a process's argv in /proc/{pid}/cmdline.
        tracing::warn!(
            "--api-key puts the key in the command line, readable by every local user in /proc/{}/cmdline; \
             prefer PADDOCK_API_KEY or api_key_file",
            std::process::id()
        );
    }
    let base_mounts = custom_mounts(&cfg)?;
    let gateway_root = match cfg.deerflow.state_root() {
        None => None,
        Some(root) => match std::fs::canonicalize(&root) {
            Ok(c) if c.is_dir() => Some(c),
            _ => {
                eprintln!(
                    "error: deerflow.host_base_dir (DEER_FLOW_HOST_BASE_DIR) {} is not a directory",
                    root.display()
                );
                eprintln!(
                    "\nhint: point it at the directory DeerFlow's gateway keeps its state in (its DEER_FLOW_HOME as this host sees it)"
                );
                return Err(ExitCode::from(EXIT_USAGE));
            }
        },
    };
    let rt = tokio_rt()?;
    let backend = match cfg.backend {
        config::BackendKind::Local => paddock_server::serve::BackendChoice::Local {
            runtime: cfg.sandbox.clone(),
            local: Box::new(paddock_server::local::LocalConfig {
                public_url: String::new(),
                mount_policy: cfg.mounts.policy(),
                base_mounts,
                // One global heavy-request limit, shared by every sandbox's agent API.
                agent: cfg.agent.agent_config(cfg.agent.global_heavy_limit()),
                tools: cfg.tools.clone(),
                gateway_root,
                max_concurrent_execs_per_user: cfg.server.max_concurrent_execs_per_user,
            }),
        },
        config::BackendKind::Kubernetes => {
            match rt.block_on(paddock_kube::KubeBackend::connect(cfg.kubernetes.clone())) {
                Ok(b) => paddock_server::serve::BackendChoice::External(std::sync::Arc::new(b)),
                Err(e) => {
                    report(
                        &anyhow::anyhow!("kubernetes backend: {e}"),
                        Some(
                            "check the kubernetes: section and K8S_API_SERVER / KUBECONFIG_PATH (docs/kubernetes.md)",
                        ),
                    );
                    return Err(ExitCode::FAILURE);
                }
            }
        }
    };
    let api_key = match (&cfg.api_key, &cfg.api_key_file) {
        (Some(k), _) => paddock_server::serve::ApiKeySource::Value(k.clone()),
        (None, Some(f)) => paddock_server::serve::ApiKeySource::File(f.clone()),
        (None, None) => paddock_server::serve::ApiKeySource::Generated,
    };
    let opts = paddock_server::serve::ServeOptions {
        data_dir: cfg.data_dir.clone(),
        listen: cfg.listen,
        public_url: cfg.public_url.clone(),
        api_key,
        lifecycle: paddock_server::LifecycleConfig {
            max_sandboxes: cfg.server.max_sandboxes,
            max_sandboxes_per_user: cfg.server.max_sandboxes_per_user,
            idle_timeout: std::time::Duration::from_secs(cfg.server.idle_timeout_secs),
            busy_idle_timeout: std::time::Duration::from_secs(cfg.server.busy_idle_timeout_secs),
            max_lifetime: std::time::Duration::from_secs(cfg.server.max_lifetime_secs),
            reap_interval: std::time::Duration::from_secs(cfg.server.reap_interval_secs.max(1)),
        },
        backend,
        listen_limits: cfg.server.listen_config(),
    };
    let result = rt.block_on(paddock_server::serve::serve(opts, |addr, generated| {
        println!("paddock serve listening on http://{addr}");
        if let Some(p) = generated {
            println!(
                "api key generated and stored in {} (mode 0600)",
                p.display()
            );
        }
    }));
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            let hint = match &e {
                paddock_server::serve::ServeError::Runtime(_) => {
                    Some("run `paddock doctor` to see which kernel feature is missing")
                }
                paddock_server::serve::ServeError::Bind { .. } => {
                    Some("pick another address with --listen")
                }
                _ => None,
            };
            report(&e.into(), hint);
            Err(ExitCode::FAILURE)
        }
    }
}

/// `paddock exec`, shared by both binaries.
pub fn run_exec(cmd: ExecCmd) -> Result<ExitCode, ExitCode> {
    Ok(ExitCode::from(run_exec_status(cmd)))
}

/// `paddock exec`, returning the exit status.
pub fn run_exec_status(cmd: ExecCmd) -> u8 {
    let Ok(cfg) = load_config(cmd.config.as_deref()) else {
        return EXIT_USAGE;
    };
    init_exec_logging(std::env::var("PADDOCK_LOG").ok().as_deref());
    // One command: a current-thread runtime, whose thread (this one) also clones the jail.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            report(
                &anyhow::Error::from(e).context("could not start the async runtime"),
                None,
            );
            return 1;
        }
    };
    match rt.block_on(paddock_runtime::cli::run_exec_with(cmd.args, cfg.sandbox)) {
        Ok(code) => u8::try_from(code.clamp(0, 255)).unwrap_or(1),
        Err(e) => {
            report(&e, None);
            1
        }
    }
}

fn run_doctor(cmd: DoctorCmd) -> ExitCode {
    let mut cfg = match load_config(cmd.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(d) = cmd.data_dir {
        cfg.data_dir = d;
    }
    // As `paddock serve` resolves it; a state root that is not a directory yet still
    // means users' data is the gateway's.
    let gateway = cfg
        .deerflow
        .state_root()
        .map(|r| std::fs::canonicalize(&r).unwrap_or(r));
    let ctx = paddock_runtime::cli::DoctorContext {
        opts: cfg.sandbox.clone(),
        layout: paddock_core::DataLayout::new(cfg.data_dir.clone()).with_gateway_root(gateway),
    };
    match paddock_runtime::cli::run_doctor_with(cmd.args, &ctx) {
        Ok(code) => exit_code(code),
        Err(e) => {
            report(&e, None);
            ExitCode::FAILURE
        }
    }
}

fn run_agent(cmd: AgentCmd) -> Result<ExitCode, ExitCode> {
    let cfg = load_config(cmd.config.as_deref())?;
    init_logging(&cfg.log.level, cfg.log.format == config::LogFormat::Json);
    let args = cmd.args;
    let user = paddock_core::UserId::new(&args.user).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_USAGE)
    })?;
    let thread = paddock_core::ThreadId::new(&args.thread).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_USAGE)
    })?;
    let custom = custom_mounts(&cfg)?;
    let mut sandbox_opts = cfg.sandbox.clone();
    // The flags' defaults equal the config defaults; a flag that differs was given.
    if args.isolation != paddock_runtime::Isolation::default() {
        sandbox_opts.isolation = args.isolation;
    }
    if args.network != paddock_runtime::Network::default() {
        sandbox_opts.network = args.network;
    }
    if sandbox_opts.isolation == paddock_runtime::Isolation::None {
        tracing::warn!("isolation: none — commands run as plain host processes");
    }
    let rt = tokio_rt()?;
    let result: anyhow::Result<()> = rt.block_on(async {
        let provider = paddock_runtime::LocalProvider::new(&args.data_dir, sandbox_opts, custom)?;
        let sandbox = provider.acquire(&user, &thread).await?;
        let dyn_sb: std::sync::Arc<dyn paddock_core::Sandbox> = sandbox;
        let limits = paddock_agent::cli::ServeLimits {
            listen: cfg.server.listen_config(),
            max_read_bytes: cfg.agent.max_read_bytes,
            max_heavy_per_sandbox: cfg.agent.max_concurrent_heavy_per_sandbox,
            max_heavy: cfg.agent.max_concurrent_heavy,
        };
        let r = paddock_agent::cli::run_agent_with_limits(&args, dyn_sb, limits).await;
        provider.shutdown();
        r
    });
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            report(&e, None);
            Err(ExitCode::FAILURE)
        }
    }
}

fn run_mcp(args: paddock_mcp::cli::McpArgs) -> Result<ExitCode, ExitCode> {
    // stdout carries the protocol: logs go to stderr only.
    init_logging(
        &std::env::var("PADDOCK_LOG").unwrap_or_else(|_| "warn".into()),
        false,
    );
    let rt = tokio_rt()?;
    match rt.block_on(paddock_mcp::cli::run(args)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            report(&e, None);
            Err(ExitCode::FAILURE)
        }
    }
}

/// The binary's entry point.
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Config(c) => Ok(run_config(c)),
        Command::Serve(a) => run_serve(a),
        Command::Exec(a) => run_exec(a),
        Command::Doctor(a) => Ok(run_doctor(a)),
        Command::Agent(a) => run_agent(a),
        Command::MigrateLayout(a) => match paddock_migrate::cli::run(a) {
            Ok(code) => Ok(exit_code(code)),
            Err(e) => {
                report(&e, None);
                Err(ExitCode::FAILURE)
            }
        },
        Command::Mcp(a) => run_mcp(a),
        Command::Kube(KubeCommand::Manifests) => {
            print!("{}", paddock_kube::manifests());
            Ok(ExitCode::SUCCESS)
        }
    };
    r.unwrap_or_else(|code| code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::filter::LevelFilter;

    #[test]
    fn exec_logging_takes_a_level_or_targets_and_names_what_it_refuses() {
        let t = exec_log_targets(None).unwrap();
        assert!(t.would_enable("paddock_runtime", &tracing::Level::WARN));
        assert!(!t.would_enable("paddock_runtime", &tracing::Level::INFO));
        let t = exec_log_targets(Some("paddock_runtime=debug,error")).unwrap();
        assert!(t.would_enable("paddock_runtime::sandbox", &tracing::Level::DEBUG));
        assert!(!t.would_enable("tokio", &tracing::Level::WARN));
        assert_eq!(
            exec_log_targets(Some("info")).unwrap().default_level(),
            Some(LevelFilter::INFO)
        );
        let e = exec_log_targets(Some("paddock=loud")).unwrap_err();
        assert!(e.starts_with("\"paddock=loud\": "), "{e}");
    }
}
