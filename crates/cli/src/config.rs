//! `paddock.yaml`: the one typed configuration, resolved once before any work starts.
//!
//! Precedence: built-in defaults < the YAML file < environment variables (see
//! [`crate::env`]) < command-line flags. Unknown keys are refused with their full key
//! path (`sandbox.limits.memroy`), so a typo never silently does nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::env::{self, EnvVar};

/// Which backend runs sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Isolated process trees on this host (the embedded default).
    #[default]
    Local,
    /// Pods on a Kubernetes cluster.
    Kubernetes,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `log:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter (`info`, `paddock=debug,info`).
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaddockConfig {
    /// Where user data and server state live.
    pub data_dir: PathBuf,
    /// Address of `paddock serve`.
    pub listen: SocketAddr,
    /// Base URL put into `sandbox_url` (default `http://{listen}`).
    pub public_url: Option<String>,
    /// The control-plane API key (generated into the data dir when unset).
    #[serde(skip_serializing)]
    pub api_key: Option<String>,
    /// A file holding the API key.
    pub api_key_file: Option<PathBuf>,
    /// `local` or `kubernetes`.
    pub backend: BackendKind,
    /// Logging.
    pub log: LogConfig,
    /// The local runtime (isolation, network, limits, uids, environment).
    pub sandbox: paddock_runtime::RuntimeOptions,
    /// Custom mounts and the host roots they may come from.
    pub mounts: MountsConfig,
    /// Control-plane lifecycle.
    pub server: ServerConfig,
    /// The in-sandbox agent API.
    pub agent: AgentSection,
    /// The LLM tool layer's limits.
    pub tools: paddock_tools::ToolsConfig,
    /// The Kubernetes backend (used when `backend: kubernetes`); DeerFlow's provisioner
    /// environment variables override it (see docs/kubernetes.md).
    pub kubernetes: paddock_kube::KubeConfig,
    /// DeerFlow's gateway: the state root it shares with the sandboxes (local backend).
    pub deerflow: DeerflowConfig,
}

/// `deerflow:` — where DeerFlow's gateway keeps its state on this host (docs/deerflow.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeerflowConfig {
    /// DeerFlow's state root (`DEER_FLOW_HOST_BASE_DIR`): users' data lives there
    /// (`users/{u}/threads/{t}/user-data`), and the mounts the gateway sends with each
    /// create must come from it.
    pub host_base_dir: Option<PathBuf>,
    /// DeerFlow's legacy threads directory (`THREADS_HOST_PATH`): when `host_base_dir` is
    /// unset or empty and its last segment is `threads`, its parent is the state root (as
    /// DeerFlow's provisioner derives it).
    pub threads_host_path: Option<PathBuf>,
}

impl DeerflowConfig {
    /// The state root, as DeerFlow's provisioner resolves it; `None`: not configured.
    pub fn state_root(&self) -> Option<PathBuf> {
        match &self.host_base_dir {
            Some(b) if !b.as_os_str().is_empty() => Some(b.clone()),
            _ => self
                .threads_host_path
                .as_ref()
                .filter(|t| t.file_name().is_some_and(|n| n == "threads"))
                .and_then(|t| t.parent().map(|p| p.to_path_buf())),
        }
    }
}

/// `mounts:` — operator-configured custom mounts (SPEC section 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MountsConfig {
    /// Host directories custom mounts (from this file or from create requests) may use.
    pub allowed_host_roots: Vec<PathBuf>,
    /// Most custom mounts per sandbox.
    pub max_custom_mounts: usize,
    /// Mounts every sandbox gets.
    pub custom: Vec<paddock_core::MountSpec>,
}

impl Default for MountsConfig {
    fn default() -> Self {
        Self {
            allowed_host_roots: Vec::new(),
            max_custom_mounts: paddock_core::mount::DEFAULT_MAX_CUSTOM_MOUNTS,
            custom: Vec::new(),
        }
    }
}

impl MountsConfig {
    /// The policy for validation.
    pub fn policy(&self) -> paddock_core::MountPolicy {
        paddock_core::MountPolicy {
            allowed_host_roots: self.allowed_host_roots.clone(),
            max_mounts: self.max_custom_mounts,
        }
    }
}

/// `server:` — lifecycle of `paddock serve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Most live sandboxes; further creates get 429 with Retry-After.
    pub max_sandboxes: usize,
    /// Most live sandboxes of one user (0: only `max_sandboxes` applies).
    pub max_sandboxes_per_user: usize,
    /// Most commands in flight of one user across all of the user's sandboxes (0: no cap;
    /// local backend only: with Kubernetes, execs do not pass through the server).
    pub max_concurrent_execs_per_user: usize,
    /// Seconds without activity after which a sandbox with no running process is reaped
    /// (0 disables reaping). User data always stays.
    pub idle_timeout_secs: u64,
    /// Seconds without API activity after which a sandbox is reaped even while processes
    /// run in it (they are killed; data stays). 0 disables.
    pub busy_idle_timeout_secs: u64,
    /// Seconds after its creation after which a sandbox is reaped whatever it does
    /// (processes killed, data kept). 0 disables.
    pub max_lifetime_secs: u64,
    /// Seconds between reaper passes.
    pub reap_interval_secs: u64,
    /// Seconds a client may take to send a request's headers; also how long a kept-alive
    /// connection may wait for its next request.
    pub header_read_timeout_secs: u64,
    /// Seconds a request body or a response may make no progress while the server waits
    /// on the client (a stalled upload, a response nobody reads) before the connection is
    /// closed. A long-running command is not affected.
    pub connection_idle_secs: u64,
    /// Most open connections (lowered to half the open-file limit when that is smaller).
    /// At the cap a new connection closes the longest-idle one; when all are busy it gets 503.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_sandboxes: 500,
            max_sandboxes_per_user: 100,
            max_concurrent_execs_per_user: 64,
            idle_timeout_secs: 600,
            busy_idle_timeout_secs: 4 * 3600,
            max_lifetime_secs: 24 * 3600,
            reap_interval_secs: 30,
            header_read_timeout_secs: paddock_agent::listen::DEFAULT_HEADER_READ_TIMEOUT_SECS,
            connection_idle_secs: paddock_agent::listen::DEFAULT_CONNECTION_IDLE_SECS,
            max_connections: paddock_agent::listen::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl ServerConfig {
    /// Checks the combinations the types cannot: a busy-idle bound shorter than the idle
    /// timeout would reap every sandbox at it, running processes or not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.busy_idle_timeout_secs != 0
            && self.idle_timeout_secs != 0
            && self.busy_idle_timeout_secs < self.idle_timeout_secs
        {
            return Err(ConfigError::Invalid {
                key: "server.busy_idle_timeout_secs".into(),
                message: format!(
                    "must be 0 (off) or at least server.idle_timeout_secs ({}), got {}",
                    self.idle_timeout_secs, self.busy_idle_timeout_secs
                ),
            });
        }
        Ok(())
    }
}

/// `agent:` — limits of the in-sandbox HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    /// Largest JSON request body, bytes.
    pub max_body_bytes: u64,
    /// Largest upload, bytes (streamed to disk, never buffered whole).
    pub max_upload_bytes: u64,
    /// Largest file read whole into server memory, bytes: `/v1/file/read`,
    /// `/v1/fs/read_text`, `str_replace` (source and result) and the read/edit tools.
    /// Larger files are refused with 413; downloads stream and are not affected.
    pub max_read_bytes: u64,
    /// Heavy requests (commands, reads, downloads, uploads, writes, edits, walks, tools)
    /// one sandbox may have in progress at once; more get 429 with Retry-After. 0: no limit.
    pub max_concurrent_heavy_per_sandbox: usize,
    /// Heavy requests in progress at once over all sandboxes of the server. 0: no limit.
    pub max_concurrent_heavy: usize,
}

impl Default for AgentSection {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 << 20,
            max_upload_bytes: 1 << 30,
            max_read_bytes: paddock_agent::DEFAULT_MAX_READ_BYTES,
            max_concurrent_heavy_per_sandbox: paddock_agent::heavy::DEFAULT_MAX_HEAVY_PER_SANDBOX,
            max_concurrent_heavy: paddock_agent::heavy::DEFAULT_MAX_HEAVY,
        }
    }
}

impl AgentSection {
    /// The agent API's configuration these keys describe (`global` is the one limit every
    /// sandbox of the process shares; build it once).
    pub fn agent_config(
        &self,
        global: Option<paddock_agent::HeavyLimit>,
    ) -> paddock_agent::AgentConfig {
        paddock_agent::AgentConfig {
            max_body_bytes: usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX),
            max_upload_bytes: self.max_upload_bytes,
            max_read_bytes: self.max_read_bytes,
            max_heavy_per_sandbox: self.max_concurrent_heavy_per_sandbox,
            heavy_global: global,
            ..paddock_agent::AgentConfig::default()
        }
    }

    /// The global heavy-request limit (`None` when `max_concurrent_heavy` is 0).
    pub fn global_heavy_limit(&self) -> Option<paddock_agent::HeavyLimit> {
        (self.max_concurrent_heavy > 0)
            .then(|| paddock_agent::HeavyLimit::global(self.max_concurrent_heavy))
    }
}

impl ServerConfig {
    /// The listener's limits these keys describe.
    pub fn listen_config(&self) -> paddock_agent::listen::ListenConfig {
        paddock_agent::listen::ListenConfig {
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_secs),
            connection_idle: std::time::Duration::from_secs(self.connection_idle_secs),
            max_connections: self.max_connections,
        }
    }

    /// Checks the listener's keys: a zero timeout or cap would refuse every client.
    pub fn validate_listener(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            (
                "server.header_read_timeout_secs",
                self.header_read_timeout_secs,
            ),
            ("server.connection_idle_secs", self.connection_idle_secs),
            ("server.max_connections", self.max_connections as u64),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    key: key.into(),
                    message: "must be at least 1".into(),
                });
            }
        }
        Ok(())
    }
}

impl Default for PaddockConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./.paddock"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8002)),
            public_url: None,
            api_key: None,
            api_key_file: None,
            backend: BackendKind::Local,
            log: LogConfig::default(),
            sandbox: paddock_runtime::RuntimeOptions::default(),
            mounts: MountsConfig::default(),
            server: ServerConfig::default(),
            agent: AgentSection::default(),
            tools: paddock_tools::ToolsConfig::default(),
            kubernetes: paddock_kube::KubeConfig::default(),
            deerflow: DeerflowConfig::default(),
        }
    }
}

/// Why configuration could not be resolved. Always names the file, key or variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("config file {path} is not valid YAML: {message}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// Parser message with line and column.
        message: String,
    },
    /// The file's top level is not a mapping.
    #[error("config file {path} must be a mapping of keys to values")]
    NotAMapping {
        /// The file.
        path: PathBuf,
    },
    /// An environment variable has the wrong type.
    #[error("environment variable {name} (sets {key}): {message}")]
    Env {
        /// The variable.
        name: &'static str,
        /// The key it sets.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A key is unknown or has the wrong type.
    #[error("invalid configuration at {key}: {message}")]
    Invalid {
        /// Full key path (`.` for the root).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Loads the configuration: the file (`path`, else `$PADDOCK_CONFIG`, else none), then
/// the environment from `vars`.
pub fn load(
    path: Option<&Path>,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<PaddockConfig, ConfigError> {
    let from_env = vars(env::CONFIG_PATH)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let path = path.map(Path::to_path_buf).or(from_env);
    let mut tree = match &path {
        Some(p) => read_file(p)?,
        None => Value::Object(serde_json::Map::new()),
    };
    apply_env(&mut tree, vars)?;
    let mut cfg = from_tree(tree)?;
    if cfg.api_key.as_deref() == Some("") {
        cfg.api_key = None;
    }
    // DeerFlow's provisioner variables (K8S_NAMESPACE, SANDBOX_IMAGE, ...) override the file.
    cfg.kubernetes
        .apply_env(vars)
        .map_err(|e| ConfigError::Invalid {
            key: format!("kubernetes ({})", e.field),
            message: e.message,
        })?;
    cfg.sandbox.validate().map_err(|e| ConfigError::Invalid {
        key: format!("sandbox.{}", e.key),
        message: e.message,
    })?;
    cfg.server.validate()?;
    cfg.server.validate_listener()?;
    if cfg.agent.max_read_bytes == 0 {
        return Err(ConfigError::Invalid {
            key: "agent.max_read_bytes".into(),
            message: "must be at least 1".into(),
        });
    }
    Ok(cfg)
}

fn read_file(path: &Path) -> Result<Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if text.trim().is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    let value: Value = serde_norway::from_str(&text).map_err(|e| ConfigError::Yaml {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Ok(Value::Object(serde_json::Map::new())),
        _ => Err(ConfigError::NotAMapping {
            path: path.to_path_buf(),
        }),
    }
}

fn apply_env(tree: &mut Value, vars: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    for EnvVar { name, key, kind } in env::OVERRIDES {
        let Some(raw) = vars(name) else { continue };
        let value = env::typed_value(*kind, &raw).map_err(|message| ConfigError::Env {
            name,
            key,
            message,
        })?;
        set_key(tree, key, value).map_err(|message| ConfigError::Env { name, key, message })?;
    }
    Ok(())
}

fn set_key(tree: &mut Value, key: &str, value: Value) -> Result<(), String> {
    let mut node = tree;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let Value::Object(map) = node else {
            return Err(format!(
                "the file sets {} to a non-mapping value",
                parts[..i].join(".")
            ));
        };
        if i + 1 == parts.len() {
            map.insert((*part).to_owned(), value);
            return Ok(());
        }
        node = map
            .entry((*part).to_owned())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
    Ok(())
}

fn from_tree(tree: Value) -> Result<PaddockConfig, ConfigError> {
    serde_path_to_error::deserialize(tree).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Invalid {
            key,
            message: e.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_without_a_file() {
        let c = load(None, &no_env).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./.paddock"));
        assert_eq!(c.listen.to_string(), "127.0.0.1:8002");
        assert_eq!(c.backend, BackendKind::Local);
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("paddock.yaml");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn file_then_env() {
        let (_d, p) = file("data_dir: /srv/p\nlisten: 0.0.0.0:9000\nlog:\n  level: debug\n");
        let env: HashMap<&str, &str> = [("PADDOCK_LISTEN", "127.0.0.1:7000")].into();
        let c = load(Some(&p), &|k| env.get(k).map(|v| (*v).to_owned())).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/p"));
        assert_eq!(c.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(c.log.level, "debug");
    }

    #[test]
    fn config_path_from_env() {
        let (_d, p) = file("backend: kubernetes\n");
        let ps = p.to_string_lossy().into_owned();
        let c = load(None, &|k| (k == "PADDOCK_CONFIG").then(|| ps.clone())).unwrap();
        assert_eq!(c.backend, BackendKind::Kubernetes);
    }

    #[test]
    fn unknown_keys_are_named() {
        let (_d, p) = file("data_dri: x\n");
        let e = load(Some(&p), &no_env).unwrap_err().to_string();
        assert!(e.contains("unknown field `data_dri`"), "{e}");
        let (_d, p) = file("log:\n  levle: x\n");
        let e = load(Some(&p), &no_env).unwrap_err().to_string();
        assert!(
            e.starts_with("invalid configuration at log:") || e.contains("log"),
            "{e}"
        );
        assert!(e.contains("levle"), "{e}");
        let (_d, p) = file("tools:\n  bash_output_max_chars: lots\n");
        let e = load(Some(&p), &no_env).unwrap_err().to_string();
        assert!(e.contains("tools"), "{e}");
    }

    #[test]
    fn bad_inputs_say_where() {
        let (_d, p) = file("listen: [1, 2\n");
        assert!(matches!(
            load(Some(&p), &no_env),
            Err(ConfigError::Yaml { .. })
        ));
        let (_d, p) = file("- a\n- b\n");
        assert!(matches!(
            load(Some(&p), &no_env),
            Err(ConfigError::NotAMapping { .. })
        ));
        let e = load(Some(Path::new("/nonexistent/paddock.yaml")), &no_env).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/paddock.yaml"));
        let e = load(None, &|k| {
            (k == "PADDOCK_BASH_TIMEOUT_SECS").then(|| "soon".to_owned())
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("PADDOCK_BASH_TIMEOUT_SECS") && e.contains("tools.bash_timeout_secs"),
            "{e}"
        );
        let (_d, p) = file("sandbox:\n  limits:\n    memroy: 1\n");
        let e = load(Some(&p), &no_env).unwrap_err().to_string();
        assert!(e.contains("sandbox.limits") && e.contains("memroy"), "{e}");
        let (_d, p) = file("sandbox:\n  sandbox_uid: 0\n");
        let e = load(Some(&p), &no_env).unwrap_err().to_string();
        assert!(e.contains("sandbox.sandbox_uid"), "{e}");
        let e = load(None, &|k| {
            (k == "PADDOCK_ISOLATION").then(|| "maybe".to_owned())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("sandbox.isolation"), "{e}");
        let (_d, p) = file("backend: docker\n");
        let e = load(Some(&p), &no_env).unwrap_err().to_string();
        assert!(e.contains("backend") && e.contains("docker"), "{e}");
    }

    #[test]
    fn deerflow_provisioner_env_configures_kubernetes() {
        let env: HashMap<&str, &str> = [
            ("PADDOCK_BACKEND", "kubernetes"),
            ("K8S_NAMESPACE", "sandboxes"),
            ("K8S_API_SERVER", "http://127.0.0.1:6443"),
            ("SANDBOX_SERVICE_TYPE", "ClusterIP"),
        ]
        .into();
        let c = load(None, &|k| env.get(k).map(|v| (*v).to_owned())).unwrap();
        assert_eq!(c.backend, BackendKind::Kubernetes);
        assert_eq!(c.kubernetes.namespace, "sandboxes");
        assert_eq!(
            c.kubernetes.api_server.as_deref(),
            Some("http://127.0.0.1:6443")
        );
        let e = load(None, &|k| {
            (k == "SANDBOX_SERVICE_TYPE").then(|| "LoadBalancer".to_owned())
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("SANDBOX_SERVICE_TYPE") || e.contains("service_type"),
            "{e}"
        );
    }

    #[test]
    fn server_limits_are_read_and_checked() {
        let (_d, p) = file(
            "server:\n  max_sandboxes_per_user: 3\n  max_concurrent_execs_per_user: 2\n  \
             idle_timeout_secs: 60\n  busy_idle_timeout_secs: 120\n  max_lifetime_secs: 0\n",
        );
        let c = load(Some(&p), &no_env).unwrap();
        assert_eq!(c.server.max_sandboxes_per_user, 3);
        assert_eq!(c.server.max_concurrent_execs_per_user, 2);
        assert_eq!(c.server.busy_idle_timeout_secs, 120);
        assert_eq!(c.server.max_lifetime_secs, 0);
        let (_d, p) = file("server:\n  idle_timeout_secs: 600\n  busy_idle_timeout_secs: 60\n");
        let e = load(Some(&p), &no_env).unwrap_err().to_string();
        assert!(e.contains("server.busy_idle_timeout_secs"), "{e}");
        // Off is always allowed.
        let (_d, p) = file("server:\n  idle_timeout_secs: 600\n  busy_idle_timeout_secs: 0\n");
        assert_eq!(
            load(Some(&p), &no_env)
                .unwrap()
                .server
                .busy_idle_timeout_secs,
            0
        );
    }

    #[test]
    fn api_key_sources() {
        let c = load(None, &|k| {
            (k == "PROVISIONER_API_KEY").then(|| "deer".to_owned())
        })
        .unwrap();
        assert_eq!(c.api_key.as_deref(), Some("deer"));
        // PADDOCK_API_KEY wins over DeerFlow's name.
        let c = load(None, &|k| match k {
            "PROVISIONER_API_KEY" => Some("deer".into()),
            "PADDOCK_API_KEY" => Some("pad".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.api_key.as_deref(), Some("pad"));
    }

    #[test]
    fn listener_and_memory_keys_are_read_and_checked() {
        let (_d, p) = file(
            "server:\n  header_read_timeout_secs: 5\n  connection_idle_secs: 7\n  \
             max_connections: 100\nagent:\n  max_read_bytes: 1024\n  \
             max_concurrent_heavy_per_sandbox: 2\n  max_concurrent_heavy: 0\n",
        );
        let c = load(Some(&p), &no_env).unwrap();
        let l = c.server.listen_config();
        assert_eq!(
            (l.header_read_timeout, l.connection_idle, l.max_connections),
            (
                std::time::Duration::from_secs(5),
                std::time::Duration::from_secs(7),
                100
            )
        );
        let a = c.agent.agent_config(c.agent.global_heavy_limit());
        assert_eq!((a.max_read_bytes, a.max_heavy_per_sandbox), (1024, 2));
        assert!(a.heavy_global.is_none(), "0 turns the global limit off");
        for (yaml, key) in [
            (
                "server:\n  header_read_timeout_secs: 0\n",
                "server.header_read_timeout_secs",
            ),
            (
                "server:\n  connection_idle_secs: 0\n",
                "server.connection_idle_secs",
            ),
            ("server:\n  max_connections: 0\n", "server.max_connections"),
            ("agent:\n  max_read_bytes: 0\n", "agent.max_read_bytes"),
        ] {
            let (_d, p) = file(yaml);
            let e = load(Some(&p), &no_env).unwrap_err().to_string();
            assert!(e.contains(key), "{yaml}: {e}");
        }
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    /// docs/configuration.md shows every key with its default: the block must parse with
    /// `deny_unknown_fields` and equal the built-in defaults, so the doc cannot drift.
    #[test]
    fn documented_defaults_match_the_code() {
        let doc = include_str!("../../../docs/configuration.md");
        let start = doc.find("```yaml\n").expect("yaml block") + "```yaml\n".len();
        let end = start + doc[start..].find("```").expect("end of block");
        let block = &doc[start..end];
        let from_doc: Value = serde_norway::from_str(block).expect("doc yaml parses");
        let cfg = from_tree(from_doc.clone()).expect("doc yaml is a valid config");
        let shown = serde_json::to_value(&cfg).expect("serialise");
        let defaults = serde_json::to_value(PaddockConfig::default()).expect("serialise");
        assert_eq!(
            shown, defaults,
            "docs/configuration.md defaults differ from the code"
        );
        // Every documented top-level key exists, and every key of the code is documented.
        let Value::Object(doc_keys) = &from_doc else {
            panic!("mapping")
        };
        let Value::Object(code_keys) = &defaults else {
            panic!("mapping")
        };
        for k in code_keys.keys() {
            assert!(doc_keys.contains_key(k), "{k} is not documented");
        }
        for var in crate::env::OVERRIDES {
            assert!(doc.contains(var.name), "{} is not documented", var.name);
        }
    }
}
