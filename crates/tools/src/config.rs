//! Limits of the tool layer, with the reference's defaults.
//!
//! Invariant: a `ToolsConfig` read from a file has a usable bash timeout (finite, > 0,
//! at most one day), and the `write_file` size cap obeys the environment override only
//! while nobody configured the cap explicitly.

use serde::{Deserialize, Serialize};

/// Default cap on `bash` output, in chars.
pub const DEFAULT_BASH_OUTPUT_MAX_CHARS: usize = 20_000;
/// Default cap on `read_file` output, in chars.
pub const DEFAULT_READ_FILE_OUTPUT_MAX_CHARS: usize = 50_000;
/// Default cap on `ls` output, in chars.
pub const DEFAULT_LS_OUTPUT_MAX_CHARS: usize = 20_000;
/// Default cap on one non-append `write_file` payload, in UTF-8 bytes (80 KiB).
pub const DEFAULT_WRITE_FILE_MAX_BYTES: u64 = 80 * 1024;
/// Default and ceiling of `glob` results.
pub const DEFAULT_GLOB_MAX_RESULTS: usize = 200;
/// Hard ceiling of `glob` results.
pub const MAX_GLOB_MAX_RESULTS: usize = 1000;
/// Default `grep` results.
pub const DEFAULT_GREP_MAX_RESULTS: usize = 100;
/// Hard ceiling of `grep` results.
pub const MAX_GREP_MAX_RESULTS: usize = 500;
/// Default wall-clock timeout of one `bash` call, in seconds.
pub const DEFAULT_BASH_TIMEOUT_SECS: f64 = 600.0;
/// Longest accepted `bash` timeout (the sandbox refuses more).
pub const MAX_BASH_TIMEOUT_SECS: f64 = 86_400.0;

/// Environment variable overriding the `write_file` cap (`<= 0` disables it).
pub const WRITE_FILE_MAX_BYTES_ENV: &str = "PADDOCK_WRITE_FILE_MAX_BYTES";
/// The reference's name for the same override, honoured when Paddock's is unset.
pub const WRITE_FILE_MAX_BYTES_ENV_COMPAT: &str = "DEERFLOW_WRITE_FILE_MAX_BYTES";

/// Limits of the LLM tools.
///
/// Build it with `ToolsConfig::default()` and assign fields, or deserialize it (unknown
/// keys are refused with the key named). Set the `write_file` cap with
/// [`ToolsConfig::set_write_file_max_bytes`] so the environment override steps aside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawToolsConfig")]
pub struct ToolsConfig {
    /// Cap on `bash` output in chars, middle-truncated (0 = off).
    pub bash_output_max_chars: usize,
    /// Cap on `read_file` output in chars, head-truncated (0 = off).
    pub read_file_output_max_chars: usize,
    /// Cap on `ls` output in chars, head-truncated (0 = off).
    pub ls_output_max_chars: usize,
    /// Cap on one non-append `write_file` payload in UTF-8 bytes (`None` = no cap).
    pub write_file_max_bytes: Option<u64>,
    /// Operator cap on `glob` results (`<= 0` means the default; never above 1000).
    pub glob_max_results: usize,
    /// Operator cap on `grep` results (`<= 0` means the default; never above 500).
    pub grep_max_results: usize,
    /// Wall-clock timeout of one `bash` call, in seconds.
    pub bash_timeout_secs: f64,
    /// Whether `write_file_max_bytes` was configured explicitly (then the environment
    /// override is ignored).
    #[serde(skip)]
    write_file_max_bytes_explicit: bool,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            bash_output_max_chars: DEFAULT_BASH_OUTPUT_MAX_CHARS,
            read_file_output_max_chars: DEFAULT_READ_FILE_OUTPUT_MAX_CHARS,
            ls_output_max_chars: DEFAULT_LS_OUTPUT_MAX_CHARS,
            write_file_max_bytes: Some(DEFAULT_WRITE_FILE_MAX_BYTES),
            glob_max_results: DEFAULT_GLOB_MAX_RESULTS,
            grep_max_results: DEFAULT_GREP_MAX_RESULTS,
            bash_timeout_secs: DEFAULT_BASH_TIMEOUT_SECS,
            write_file_max_bytes_explicit: false,
        }
    }
}

/// A rejected configuration value, named by its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tools.{key}: {message}")]
pub struct ToolsConfigError {
    /// The key.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawToolsConfig {
    bash_output_max_chars: usize,
    read_file_output_max_chars: usize,
    ls_output_max_chars: usize,
    /// Absent: not configured; `null`: explicitly disabled; a number: explicit cap.
    #[serde(deserialize_with = "present")]
    write_file_max_bytes: Option<Option<u64>>,
    glob_max_results: usize,
    grep_max_results: usize,
    bash_timeout_secs: f64,
}

impl Default for RawToolsConfig {
    fn default() -> Self {
        let d = ToolsConfig::default();
        Self {
            bash_output_max_chars: d.bash_output_max_chars,
            read_file_output_max_chars: d.read_file_output_max_chars,
            ls_output_max_chars: d.ls_output_max_chars,
            write_file_max_bytes: None,
            glob_max_results: d.glob_max_results,
            grep_max_results: d.grep_max_results,
            bash_timeout_secs: d.bash_timeout_secs,
        }
    }
}

/// Marks a key that is present (even as `null`) as `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

impl TryFrom<RawToolsConfig> for ToolsConfig {
    type Error = ToolsConfigError;

    fn try_from(raw: RawToolsConfig) -> Result<Self, Self::Error> {
        let t = raw.bash_timeout_secs;
        if !(t.is_finite() && t > 0.0 && t <= MAX_BASH_TIMEOUT_SECS) {
            return Err(ToolsConfigError {
                key: "bash_timeout_secs",
                message: format!(
                    "must be a number of seconds greater than 0 and at most {MAX_BASH_TIMEOUT_SECS}, got {t}"
                ),
            });
        }
        let mut cfg = Self {
            bash_output_max_chars: raw.bash_output_max_chars,
            read_file_output_max_chars: raw.read_file_output_max_chars,
            ls_output_max_chars: raw.ls_output_max_chars,
            glob_max_results: raw.glob_max_results,
            grep_max_results: raw.grep_max_results,
            bash_timeout_secs: t,
            ..Self::default()
        };
        if let Some(limit) = raw.write_file_max_bytes {
            cfg.set_write_file_max_bytes(limit);
        }
        Ok(cfg)
    }
}

impl ToolsConfig {
    /// Sets the `write_file` cap explicitly (`None` disables it); the environment
    /// override no longer applies.
    pub fn set_write_file_max_bytes(&mut self, limit: Option<u64>) {
        self.write_file_max_bytes = limit;
        self.write_file_max_bytes_explicit = true;
    }

    /// Whether the `write_file` cap was set explicitly (by a config file naming the key,
    /// by [`Self::set_write_file_max_bytes`], or by assigning a non-default value).
    pub fn write_file_max_bytes_is_explicit(&self) -> bool {
        self.write_file_max_bytes_explicit
            || self.write_file_max_bytes != Some(DEFAULT_WRITE_FILE_MAX_BYTES)
    }

    /// The `write_file` cap in force, given an environment lookup. While the cap is not
    /// explicit, `PADDOCK_WRITE_FILE_MAX_BYTES` (else `DEERFLOW_WRITE_FILE_MAX_BYTES`)
    /// overrides it: an integer `<= 0` disables the cap, a malformed value keeps the
    /// default.
    pub fn effective_write_file_max_bytes(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Option<u64> {
        if self.write_file_max_bytes_is_explicit() {
            return self.write_file_max_bytes;
        }
        let Some((name, raw)) = [WRITE_FILE_MAX_BYTES_ENV, WRITE_FILE_MAX_BYTES_ENV_COMPAT]
            .into_iter()
            .find_map(|name| env(name).map(|v| (name, v)))
        else {
            return self.write_file_max_bytes;
        };
        match parse_env_int(&raw) {
            Some(n) if n <= 0 => None,
            Some(n) => Some(u64::try_from(n).unwrap_or(u64::MAX)),
            None => {
                tracing::warn!(
                    variable = name,
                    value = %raw.chars().take(64).collect::<String>(),
                    "malformed write_file size cap in the environment; using the default of {DEFAULT_WRITE_FILE_MAX_BYTES} bytes"
                );
                Some(DEFAULT_WRITE_FILE_MAX_BYTES)
            }
        }
    }
}

/// Parses an integer the way an operator writes one: surrounding spaces, an optional
/// sign, `_` between digits. Huge values saturate.
fn parse_env_int(raw: &str) -> Option<i128> {
    let s = raw.trim();
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
        || !digits.chars().all(|c| c.is_ascii_digit() || c == '_')
    {
        return None;
    }
    let mut n: i128 = 0;
    for c in digits.chars().filter(char::is_ascii_digit) {
        n = n
            .saturating_mul(10)
            .saturating_add(i128::from(c as u8 - b'0'));
    }
    Some(if neg { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn defaults_match_the_reference() {
        let c = ToolsConfig::default();
        assert_eq!(c.bash_output_max_chars, 20_000);
        assert_eq!(c.read_file_output_max_chars, 50_000);
        assert_eq!(c.ls_output_max_chars, 20_000);
        assert_eq!(c.write_file_max_bytes, Some(81_920));
        assert_eq!(c.glob_max_results, 200);
        assert_eq!(c.grep_max_results, 100);
        assert_eq!(c.bash_timeout_secs, 600.0);
        let parsed: ToolsConfig = serde_json::from_str("{}").expect("must succeed");
        assert_eq!(parsed, c);
    }

    #[test]
    fn serialises_every_key() {
        let json = serde_json::to_value(ToolsConfig::default()).expect("must succeed");
        assert_eq!(
            json,
            serde_json::json!({
                "bash_output_max_chars": 20000, "read_file_output_max_chars": 50000,
                "ls_output_max_chars": 20000, "write_file_max_bytes": 81920,
                "glob_max_results": 200, "grep_max_results": 100, "bash_timeout_secs": 600.0
            })
        );
        let back: ToolsConfig = serde_json::from_value(json).expect("must succeed");
        assert_eq!(back.write_file_max_bytes, Some(81_920));
        assert!(back.write_file_max_bytes_is_explicit());
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = serde_json::from_str::<ToolsConfig>(r#"{"bash_output_max_char": 5}"#)
            .expect_err("must fail");
        assert!(
            e.to_string()
                .contains("unknown field `bash_output_max_char`"),
            "{e}"
        );
    }

    #[test]
    fn bad_timeout_is_refused() {
        for bad in ["0", "-1", "100000"] {
            let e =
                serde_json::from_str::<ToolsConfig>(&format!(r#"{{"bash_timeout_secs": {bad}}}"#))
                    .expect_err("must fail");
            assert!(
                e.to_string().contains("invalid tools.bash_timeout_secs"),
                "{e}"
            );
        }
    }

    #[test]
    fn env_override_applies_only_when_not_explicit() {
        let c = ToolsConfig::default();
        assert_eq!(c.effective_write_file_max_bytes(env(&[])), Some(81_920));
        assert_eq!(
            c.effective_write_file_max_bytes(env(&[(WRITE_FILE_MAX_BYTES_ENV, "100")])),
            Some(100)
        );
        assert_eq!(
            c.effective_write_file_max_bytes(env(&[(WRITE_FILE_MAX_BYTES_ENV_COMPAT, " 1_000 ")])),
            Some(1000)
        );
        assert_eq!(
            c.effective_write_file_max_bytes(env(&[(WRITE_FILE_MAX_BYTES_ENV, "0")])),
            None
        );
        assert_eq!(
            c.effective_write_file_max_bytes(env(&[(WRITE_FILE_MAX_BYTES_ENV, "-5")])),
            None
        );
        assert_eq!(
            c.effective_write_file_max_bytes(env(&[(WRITE_FILE_MAX_BYTES_ENV, "12kb")])),
            Some(81_920)
        );
        assert_eq!(
            c.effective_write_file_max_bytes(env(&[(WRITE_FILE_MAX_BYTES_ENV, "")])),
            Some(81_920)
        );
        // Paddock's name wins over the compatibility name.
        let both = env(&[
            (WRITE_FILE_MAX_BYTES_ENV, "7"),
            (WRITE_FILE_MAX_BYTES_ENV_COMPAT, "9"),
        ]);
        assert_eq!(c.effective_write_file_max_bytes(both), Some(7));

        let from_file: ToolsConfig =
            serde_json::from_str(r#"{"write_file_max_bytes": 81920}"#).expect("must succeed");
        assert_eq!(
            from_file.effective_write_file_max_bytes(env(&[(WRITE_FILE_MAX_BYTES_ENV, "5")])),
            Some(81_920)
        );
        let disabled: ToolsConfig =
            serde_json::from_str(r#"{"write_file_max_bytes": null}"#).expect("must succeed");
        assert_eq!(
            disabled.effective_write_file_max_bytes(env(&[(WRITE_FILE_MAX_BYTES_ENV, "5")])),
            None
        );
        let mut set = ToolsConfig::default();
        set.set_write_file_max_bytes(Some(81_920));
        assert_eq!(
            set.effective_write_file_max_bytes(env(&[(WRITE_FILE_MAX_BYTES_ENV, "5")])),
            Some(81_920)
        );
        let assigned = ToolsConfig {
            write_file_max_bytes: Some(10),
            ..ToolsConfig::default()
        };
        assert_eq!(
            assigned.effective_write_file_max_bytes(env(&[(WRITE_FILE_MAX_BYTES_ENV, "5")])),
            Some(10)
        );
    }

    #[test]
    fn env_ints() {
        assert_eq!(parse_env_int("+12"), Some(12));
        assert_eq!(parse_env_int("-0"), Some(0));
        assert_eq!(parse_env_int("1__0"), None);
        assert_eq!(parse_env_int("_1"), None);
        assert_eq!(parse_env_int("1.5"), None);
        assert_eq!(parse_env_int(&"9".repeat(60)), Some(i128::MAX));
    }
}
