//! Every environment variable Paddock reads for configuration, in one place. Each entry of
//! [`OVERRIDES`] maps onto one key of `paddock.yaml`; the environment overrides the file and
//! CLI flags override both. Besides the table: [`CONFIG_PATH`] names the file,
//! [`AGENT_TOKEN`] holds `paddock agent`'s secret, [`LOG`] is also read alone by the
//! commands whose stdout or stderr is not theirs, DeerFlow's provisioner variables
//! (`K8S_NAMESPACE`, ...) are applied by `paddock_kube::KubeConfig::apply_env` from the same
//! lookup. Only [`crate::settings`] and [`crate::config`] look these up, through one
//! lookup function; the one exception is the tool layer's `PADDOCK_WRITE_FILE_MAX_BYTES` /
//! `DEERFLOW_WRITE_FILE_MAX_BYTES`, which `paddock_tools` reads itself with DeerFlow's
//! meaning (a malformed value keeps the default, with a warning). `docs/configuration.md`
//! lists them all.

/// How an environment value is typed before it is placed at its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKind {
    /// Taken as a string.
    Str,
    /// Parsed as an unsigned integer.
    Uint,
    /// Parsed as a number (seconds may be fractional).
    Float,
    /// `true`/`false`/`1`/`0`/`yes`/`no`.
    Bool,
}

/// One environment override.
#[derive(Debug, Clone, Copy)]
pub struct EnvVar {
    /// The variable's name.
    pub name: &'static str,
    /// The config key path it sets (dot-separated).
    pub key: &'static str,
    /// Its type.
    pub kind: EnvKind,
}

/// The config file path (not a key).
pub const CONFIG_PATH: &str = "PADDOCK_CONFIG";

/// `paddock agent`'s token when no `--token-file` is given (a secret, not a key).
pub const AGENT_TOKEN: &str = "PADDOCK_AGENT_TOKEN";

/// The log filter. It sets `log.level`; `paddock exec` and `paddock mcp`, whose stderr or
/// stdout carries the command's output or the protocol, read it alone (default `warn`).
pub const LOG: &str = "PADDOCK_LOG";

/// Overrides, applied in order (a later entry for the same key wins).
pub const OVERRIDES: &[EnvVar] = &[
    EnvVar {
        name: "PADDOCK_DATA_DIR",
        key: "data_dir",
        kind: EnvKind::Str,
    },
    EnvVar {
        name: "PADDOCK_LISTEN",
        key: "listen",
        kind: EnvKind::Str,
    },
    EnvVar {
        name: "PADDOCK_PUBLIC_URL",
        key: "public_url",
        kind: EnvKind::Str,
    },
    EnvVar {
        name: "PROVISIONER_API_KEY",
        key: "api_key",
        kind: EnvKind::Str,
    },
    EnvVar {
        name: "PADDOCK_API_KEY",
        key: "api_key",
        kind: EnvKind::Str,
    },
    EnvVar {
        name: "PADDOCK_API_KEY_FILE",
        key: "api_key_file",
        kind: EnvKind::Str,
    },
    EnvVar {
        name: "PADDOCK_BACKEND",
        key: "backend",
        kind: EnvKind::Str,
    },
    EnvVar {
        name: LOG,
        key: "log.level",
        kind: EnvKind::Str,
    },
    EnvVar {
        name: "PADDOCK_LOG_FORMAT",
        key: "log.format",
        kind: EnvKind::Str,
    },
    EnvVar {
        name: "DEER_FLOW_HOST_BASE_DIR",
        key: "deerflow.host_base_dir",
        kind: EnvKind::Str,
    },
    EnvVar {
        name: "THREADS_HOST_PATH",
        key: "deerflow.threads_host_path",
        kind: EnvKind::Str,
    },
    EnvVar {
        name: "PADDOCK_ISOLATION",
        key: "sandbox.isolation",
        kind: EnvKind::Str,
    },
    EnvVar {
        name: "PADDOCK_NETWORK",
        key: "sandbox.network",
        kind: EnvKind::Str,
    },
    EnvVar {
        name: "PADDOCK_EXEC_TIMEOUT_SECS",
        key: "sandbox.exec_timeout_secs",
        kind: EnvKind::Float,
    },
    EnvVar {
        name: "PADDOCK_MAX_CACHED_SANDBOXES",
        key: "sandbox.max_cached_sandboxes",
        kind: EnvKind::Uint,
    },
    EnvVar {
        name: "PADDOCK_AGENT_MAX_BODY_BYTES",
        key: "agent.max_body_bytes",
        kind: EnvKind::Uint,
    },
    EnvVar {
        name: "PADDOCK_BASH_TIMEOUT_SECS",
        key: "tools.bash_timeout_secs",
        kind: EnvKind::Float,
    },
];

/// Parses `raw` as `kind` into a JSON value, or says why not.
pub fn typed_value(kind: EnvKind, raw: &str) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    match kind {
        EnvKind::Str => Ok(Value::String(raw.to_owned())),
        EnvKind::Uint => raw
            .trim()
            .parse::<u64>()
            .map(Value::from)
            .map_err(|_| format!("expected a non-negative integer, got {raw:?}")),
        EnvKind::Float => raw
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::from)
            .ok_or_else(|| format!("expected a number, got {raw:?}")),
        EnvKind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Value::Bool(true)),
            "0" | "false" | "no" | "off" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, got {raw:?}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing() {
        assert_eq!(
            typed_value(EnvKind::Uint, "12").unwrap(),
            serde_json::json!(12)
        );
        assert!(typed_value(EnvKind::Uint, "-1").is_err());
        assert_eq!(
            typed_value(EnvKind::Float, "1.5").unwrap(),
            serde_json::json!(1.5)
        );
        assert!(typed_value(EnvKind::Float, "inf").is_err());
        assert_eq!(
            typed_value(EnvKind::Bool, "Yes").unwrap(),
            serde_json::json!(true)
        );
        assert!(typed_value(EnvKind::Bool, "maybe").is_err());
    }

    #[test]
    fn names_are_unique_and_upper_case() {
        let mut names: Vec<&str> = OVERRIDES.iter().map(|e| e.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), OVERRIDES.len());
        assert!(
            OVERRIDES
                .iter()
                .all(|e| e.name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        );
    }
}
