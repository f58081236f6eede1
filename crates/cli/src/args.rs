//! The command line as clap parses it: one struct per subcommand, nothing resolved yet.
//!
//! A flag that sets a key of `paddock.yaml` is an `Option`, `None` when not given, so that
//! [`crate::settings`] can tell "not given" from "given with the default's value" and let
//! only a given flag win over the file and the environment. Flags that set no key (ids,
//! the agent's own address, switches) may carry a clap default. No flag reads the
//! environment itself: every variable is read by [`crate::settings`] from the one table
//! in [`crate::env`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    Exec(ExecArgs),
    /// Check which kernel features the isolated runtime needs are available here.
    Doctor(DoctorArgs),
    /// Serve one thread's sandbox over the AIO-compatible agent API (as inside a Pod).
    Agent(AgentArgs),
    /// Move data from the legacy layout (threads/{id}) to users/{user}/threads/{id}.
    MigrateLayout(MigrateArgs),
    /// Serve the LLM tool layer of one thread's sandbox over MCP on stdio.
    Mcp(McpArgs),
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

/// Where the configuration comes from.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// The config file (default: $PADDOCK_CONFIG, else built-in defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `paddock serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The config file (default: $PADDOCK_CONFIG, else built-in defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8002; port 0 picks a free one).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
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

/// `paddock exec`. The `paddock` front reads its plain forms without clap
/// ([`crate::fastargs`]) into this same struct.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The config file whose `sandbox:` section applies (flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Paddock's data directory (default: the config's `data_dir`, ./.paddock).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// User id (`^[A-Za-z0-9_-]{1,128}$`).
    #[arg(long, default_value = "default")]
    pub user: String,
    /// Thread id (`^[A-Za-z0-9_-]{1,64}$`).
    #[arg(long)]
    pub thread: String,
    /// Wall-clock timeout in seconds (default: the configured one, 600).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Network of the sandbox.
    #[arg(long, value_enum)]
    pub network: Option<NetworkArg>,
    /// Isolation mode.
    #[arg(long, value_enum)]
    pub isolation: Option<IsolationArg>,
    /// The command. One argument is passed to the shell as is; several are quoted and joined.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `paddock doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// The config file whose `sandbox:` and `deerflow:` sections say which disk quota
    /// applies (default: $PADDOCK_CONFIG, else built-in defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (default: the config's `data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `paddock agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The config file whose `sandbox:`, `mounts:`, `server:` (listener), `agent:` and
    /// `tools:` sections apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// File holding the secret (surrounding whitespace ignored); else $PADDOCK_AGENT_TOKEN.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Serve without any authentication (only behind another authenticating proxy).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Paddock's data directory (default: the config's `data_dir`, ./.paddock).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The user whose thread is served.
    #[arg(long, default_value = "default")]
    pub user: String,
    /// The thread served.
    #[arg(long, default_value = "default")]
    pub thread: String,
    /// Largest JSON request body in bytes (default: the config's `agent.max_body_bytes`,
    /// 64 MiB).
    #[arg(long)]
    pub max_body_bytes: Option<u64>,
    /// Largest upload in bytes (default: the config's `agent.max_upload_bytes`, 1 GiB).
    #[arg(long)]
    pub max_upload_bytes: Option<u64>,
    /// `isolated` (kernel isolation, the default) or `none` (plain host processes: an
    /// explicit opt-in for hosts without namespaces); default: the config's
    /// `sandbox.isolation`.
    #[arg(long, value_enum)]
    pub isolation: Option<IsolationArg>,
    /// `none` (loopback only, the default) or `host`; default: the config's
    /// `sandbox.network`.
    #[arg(long, value_enum)]
    pub network: Option<NetworkArg>,
}

/// `paddock mcp`.
#[derive(Debug, Clone, clap::Args)]
pub struct McpArgs {
    /// The config file whose `data_dir`, `api_key`, `sandbox:`, `mounts:` and `tools:`
    /// apply (default: $PADDOCK_CONFIG, else built-in defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The data directory of the local runtime (default: the config's `data_dir`,
    /// ./.paddock; unused with --provisioner).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The user owning the thread.
    #[arg(long, value_name = "USER", default_value = paddock_core::ids::DEFAULT_USER)]
    pub user: String,
    /// The conversation thread whose sandbox the tools use.
    #[arg(long, value_name = "THREAD")]
    pub thread: String,
    /// Isolation of the local runtime (default: the config's `sandbox.isolation`).
    #[arg(long, value_enum)]
    pub isolation: Option<IsolationArg>,
    /// Use a running `paddock serve` (or DeerFlow-compatible provisioner) at this URL instead of the local runtime.
    #[arg(long, value_name = "URL")]
    pub provisioner: Option<String>,
    /// The provisioner's API key, sent as X-API-Key (default: the config's `api_key`:
    /// $PADDOCK_API_KEY, $PROVISIONER_API_KEY, the file's `api_key` or `api_key_file`).
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// The sandbox id to create or reuse at the provisioner (default: derived from user and thread).
    #[arg(long, value_name = "ID")]
    pub sandbox_id: Option<String>,
    /// Wall-clock timeout of one `bash` call, in seconds (default: the config's
    /// `tools.bash_timeout_secs`).
    #[arg(long, value_name = "SECS")]
    pub bash_timeout_secs: Option<f64>,
}

/// `paddock migrate-layout` (flags only: it reads no config file).
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// The data directory holding the legacy layout (`threads/`, `memory.json`, `agents/`, `skills/custom/`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The user receiving threads with no owner in the database, `memory.json`, agents and custom skills.
    #[arg(long, value_name = "USER", default_value = paddock_core::ids::DEFAULT_USER)]
    pub user_id: String,
    /// DeerFlow's SQLite database with the `threads_meta` table (default: DIR/deer-flow.db when it exists).
    #[arg(long, value_name = "PATH")]
    pub owners_db: Option<PathBuf>,
    /// Print the decisions without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Allow moves across filesystems by copying, verifying and deleting the source.
    #[arg(long)]
    pub allow_copy: bool,
}

/// `--isolation`'s values: [`paddock_runtime::Isolation`] as clap lists them (the runtime
/// does not depend on clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IsolationArg {
    /// Namespaces, pivot_root, uid mapping, no capabilities, seccomp, landlock, cgroups
    /// (the default). Fails loudly when the kernel cannot provide it; never degrades.
    Isolated,
    /// Plain host processes with virtual paths rewritten to host paths (DeerFlow's local
    /// mode). No isolation at all: an explicit, logged opt-in for hosts without namespaces.
    None,
}

impl From<IsolationArg> for paddock_runtime::Isolation {
    fn from(a: IsolationArg) -> Self {
        match a {
            IsolationArg::Isolated => Self::Isolated,
            IsolationArg::None => Self::None,
        }
    }
}

/// `--network`'s values: [`paddock_runtime::Network`] as clap lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkArg {
    /// A private network namespace with only loopback (the default).
    None,
    /// The host's network (no network namespace): an explicit opt-in.
    Host,
}

impl From<NetworkArg> for paddock_runtime::Network {
    fn from(a: NetworkArg) -> Self {
        match a {
            NetworkArg::None => Self::None,
            NetworkArg::Host => Self::Host,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum as _;

    use super::*;

    /// The clap names are the config's names (`sandbox.isolation`, `sandbox.network`), so a
    /// value is spelled the same on the command line and in the file.
    #[test]
    fn flag_values_are_the_config_values() {
        for a in IsolationArg::value_variants() {
            let name = a.to_possible_value().expect("listed").get_name().to_owned();
            let runtime = paddock_runtime::Isolation::from(*a);
            assert_eq!(name, runtime.as_str());
            assert_eq!(serde_json::to_value(runtime).expect("json"), name.as_str());
        }
        for a in NetworkArg::value_variants() {
            let name = a.to_possible_value().expect("listed").get_name().to_owned();
            let runtime = paddock_runtime::Network::from(*a);
            assert_eq!(serde_json::to_value(runtime).expect("json"), name.as_str());
        }
    }
}
