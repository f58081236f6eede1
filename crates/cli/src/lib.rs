//! The `paddock` command line. `main` only calls [`main_entry`]; every subcommand parses
//! its flags with clap ([`args`]), resolves its settings once ([`settings`]: defaults <
//! file < environment < flags), and hands them, as plain typed values, to the library
//! crate that owns the work. Data goes to stdout, logs to stderr.

pub mod args;
pub mod config;
pub mod env;
pub mod fastargs;
pub mod front;
pub mod lograte;
pub mod settings;

use std::process::ExitCode;

use clap::Parser as _;

use crate::args::{Cli, Command, ConfigCommand, KubeCommand};
use crate::settings::SettingsError;

/// Exit code for bad usage or configuration.
pub const EXIT_USAGE: u8 = 2;

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

/// Prints a settings error with its hint; returns the usage exit status.
fn settings_failed(e: SettingsError) -> ExitCode {
    let hint = e.hint();
    report(&e.into(), hint);
    ExitCode::from(EXIT_USAGE)
}

fn run_config(cmd: ConfigCommand) -> ExitCode {
    let (args, show) = match cmd {
        ConfigCommand::Show(a) => (a, true),
        ConfigCommand::Check(a) => (a, false),
    };
    let cfg = match settings::config(&args, &process_env) {
        Ok(cfg) => cfg,
        Err(e) => return settings_failed(e),
    };
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

fn run_serve(args: args::ServeArgs) -> Result<ExitCode, ExitCode> {
    let settings::ServeSettings {
        config: cfg,
        base_mounts,
        gateway_root,
        api_key_on_argv,
    } = settings::serve(args, &process_env).map_err(settings_failed)?;
    init_logging(&cfg.log.level, cfg.log.format == config::LogFormat::Json);
    if api_key_on_argv {
        // Sandboxes cannot see it (their init is not a copy of Paddock), but every local
        // user of the host can read a process's argv in /proc/{pid}/cmdline.
        tracing::warn!(
            "--api-key puts the key in the command line, readable by every local user in /proc/{}/cmdline; \
             prefer PADDOCK_API_KEY or api_key_file",
            std::process::id()
        );
    }
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

/// `paddock exec`, shared by both binaries: resolves the settings and runs the command;
/// returns the exit status.
pub fn run_exec(args: args::ExecArgs) -> u8 {
    match settings::exec(args, &process_env) {
        Ok(s) => exec_with(s),
        Err(e) => {
            let hint = e.hint();
            report(&e.into(), hint);
            EXIT_USAGE
        }
    }
}

fn exec_with(s: settings::ExecSettings) -> u8 {
    init_exec_logging(s.log.as_deref());
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
    match rt.block_on(paddock_runtime::cli::run_exec(s.job, s.sandbox)) {
        Ok(code) => u8::try_from(code.clamp(0, 255)).unwrap_or(1),
        Err(e) => {
            report(&e, None);
            1
        }
    }
}

fn run_doctor(args: args::DoctorArgs) -> ExitCode {
    let s = match settings::doctor(args, &process_env) {
        Ok(s) => s,
        Err(e) => return settings_failed(e),
    };
    match paddock_runtime::cli::run_doctor(s.json, &s.context) {
        Ok(code) => exit_code(code),
        Err(e) => {
            report(&e, None);
            ExitCode::FAILURE
        }
    }
}

fn run_agent(args: args::AgentArgs) -> Result<ExitCode, ExitCode> {
    let s = settings::agent(args, &process_env).map_err(settings_failed)?;
    init_logging(&s.log.level, s.log.format == config::LogFormat::Json);
    if s.sandbox.isolation == paddock_runtime::Isolation::None {
        tracing::warn!("isolation: none — commands run as plain host processes");
    }
    let config = paddock_agent::AgentConfig {
        token: s.token,
        tools: Some(s.tools),
        ..s.agent.agent_config(s.agent.global_heavy_limit())
    };
    let agent = paddock_agent::cli::LocalAgent {
        data_dir: s.data_dir,
        user: s.user,
        thread: s.thread,
        runtime: s.sandbox,
        mounts: s.mounts,
        serve: paddock_agent::cli::ServeOptions {
            listen: s.listen,
            config,
            limits: s.listen_limits,
        },
    };
    let rt = tokio_rt()?;
    match rt.block_on(paddock_agent::cli::run_local(agent)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            report(&e, None);
            Err(ExitCode::FAILURE)
        }
    }
}

fn run_mcp(args: args::McpArgs) -> Result<ExitCode, ExitCode> {
    let s = settings::mcp(args, &process_env).map_err(settings_failed)?;
    // stdout carries the protocol: logs go to stderr only.
    init_logging(&s.log, false);
    let rt = tokio_rt()?;
    match rt.block_on(paddock_mcp::cli::run(s.options)) {
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
        Command::Exec(a) => Ok(ExitCode::from(run_exec(a))),
        Command::Doctor(a) => Ok(run_doctor(a)),
        Command::Agent(a) => run_agent(a),
        Command::MigrateLayout(a) => match paddock_migrate::cli::run(settings::migrate(a)) {
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
