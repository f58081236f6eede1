//! `RuntimeOptions`: the `sandbox:` section of `paddock.yaml` as far as the local runtime is
//! concerned. Every key is optional; [`RuntimeOptions::default`] holds the documented
//! defaults, and unknown keys are refused so a typo never silently weakens a sandbox.
//! Invariant: a value accepted by [`RuntimeOptions::validate`] can be applied as is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How commands are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Namespaces, pivot_root, uid mapping, no capabilities, seccomp, landlock, cgroups
    /// (the default). Fails loudly when the kernel cannot provide it; never degrades.
    #[default]
    Isolated,
    /// Plain host processes with virtual paths rewritten to host paths (DeerFlow's local
    /// mode). No isolation at all: an explicit, logged opt-in for hosts without namespaces.
    None,
}

impl Isolation {
    /// The name used in `SandboxInfo.isolation`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Isolated => "isolated",
            Self::None => "none",
        }
    }
}

/// Network access of sandboxed commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// A private network namespace with only loopback (the default).
    #[default]
    None,
    /// The host's network (no network namespace): an explicit opt-in.
    Host,
}

/// Resource limits of one sandbox: all its commands and their background processes
/// together, for as long as the sandbox lives. `0` disables a limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Memory in bytes (default 2 GiB). cgroup `memory` where available (the kernel
    /// OOM-kills and the exec reports `oom_killed`), else `RLIMIT_AS`.
    pub memory_bytes: u64,
    /// Processes and threads (default 512). cgroup `pids` where available, else
    /// `RLIMIT_NPROC` (which counts per host uid: use `uid_range` for per-sandbox counts).
    pub pids: u64,
    /// CPUs (default 2.0; fractions allowed). cgroup `cpu` quota; no fallback.
    pub cpus: f64,
    /// Size of the sandbox's private `/tmp` (and `/dev/shm`) tmpfs (default 256 MiB).
    pub tmp_size_bytes: u64,
    /// Open files per process, `RLIMIT_NOFILE` (default 1024; capped at Paddock's own hard limit).
    pub nofile: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 2 << 30,
            pids: 512,
            cpus: 2.0,
            tmp_size_bytes: 256 << 20,
            nofile: 1024,
        }
    }
}

/// Caps on all sandboxes of the process together (the cgroup subtree Paddock makes beneath
/// its own cgroup). Unset: automatic (see [`TotalLimits::effective`]); `0` disables a cap.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TotalLimits {
    /// Memory of every sandbox together, bytes (unset: three quarters of the host's).
    pub memory_bytes: Option<u64>,
    /// Processes and threads of every sandbox together (unset: half the host's pid space,
    /// `kernel.pid_max` or `kernel.threads-max`, whichever is lower).
    pub pids: Option<u64>,
}

impl TotalLimits {
    /// The caps in force on this host: (memory bytes, pids); 0 is no cap.
    pub fn effective(&self) -> (u64, u64) {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let memory = self.memory_bytes.unwrap_or_else(|| {
            read("/proc/meminfo")
                .and_then(|m| {
                    m.lines()
                        .find_map(|l| l.strip_prefix("MemTotal:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                })
                .map_or(0, |kb| kb * 1024 / 4 * 3)
        });
        let pids = self.pids.unwrap_or_else(|| {
            let num = |p: &str| read(p).and_then(|v| v.trim().parse::<u64>().ok());
            match (
                num("/proc/sys/kernel/pid_max"),
                num("/proc/sys/kernel/threads-max"),
            ) {
                (Some(a), Some(b)) => a.min(b) / 2,
                (Some(a), None) | (None, Some(a)) => a / 2,
                (None, None) => 0,
            }
        });
        (memory, pids)
    }
}

/// How a thread's writable data (`/mnt/user-data`) is capped on the host's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskQuotaMode {
    /// `image` where the host can provide it (root, loop devices, `mkfs.ext4`) and users'
    /// data is Paddock's own (not under DeerFlow's state root); otherwise no quota, which
    /// is refused at start when `disk_quota_bytes` is set explicitly.
    #[default]
    Auto,
    /// Each thread's data in an ext4 image file of `disk_quota_bytes`, loop-mounted by
    /// root at its `user-data` directory; Paddock refuses to start when it cannot.
    Image,
    /// No new images. A thread whose data is already in an image keeps it there (its image
    /// is still mounted), so turning quotas off never hides data.
    Off,
}

impl DiskQuotaMode {
    /// The name used in config and in `paddock doctor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Image => "image",
            Self::Off => "off",
        }
    }
}

/// The quota a thread gets when `disk_quota_bytes` is unset (10 GiB).
pub const DEFAULT_DISK_QUOTA_BYTES: u64 = 10 << 30;

/// The smallest quota accepted (8 MiB): the filesystem's own metadata needs room.
pub const MIN_DISK_QUOTA_BYTES: u64 = 8 << 20;

/// A range of host uids/gids: each live sandbox gets one no other live sandbox has (the
/// hash of `(user, thread)` picks the first candidate, so a thread usually keeps its id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UidRange {
    /// First id (must not be 0).
    pub start: u32,
    /// Number of ids.
    pub count: u32,
}

impl UidRange {
    /// The default: 65,536 ids from 951000 (above the ids distributions hand to users and
    /// system services; the first is the shared `sandbox_uid`'s default).
    pub const DEFAULT: UidRange = UidRange {
        start: paddock_sys::uidmap::DEFAULT_SANDBOX_ID,
        count: 65_536,
    };
}

/// Options of the local runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeOptions {
    /// `isolated` (default) or `none`.
    pub isolation: Isolation,
    /// `none` (default: loopback only) or `host`.
    pub network: Network,
    /// Resource limits of each sandbox.
    pub limits: Limits,
    /// Caps on all sandboxes together.
    pub total_limits: TotalLimits,
    /// Default wall-clock timeout of a command, seconds (600). A request may ask for another.
    pub exec_timeout_secs: f64,
    /// Cap on each of stdout and stderr, bytes (10 MiB); a request may only lower it.
    pub output_cap_bytes: u64,
    /// Host uid sandboxes run as when Paddock is root and `uid_range` is `None` (951000).
    /// Ignored when Paddock is not root: then sandboxes run as Paddock's own uid, the only
    /// one it can map.
    pub sandbox_uid: u32,
    /// Host gid sandboxes run as when Paddock is root (951000).
    pub sandbox_gid: u32,
    /// When set (and Paddock is root; the default is [`UidRange::DEFAULT`]), each live
    /// sandbox gets its own uid = gid from this range; `None` (`uid_range: null`) runs every
    /// sandbox as `sandbox_uid`/`sandbox_gid`, sharing their per-user kernel counters.
    pub uid_range: Option<UidRange>,
    /// Extra environment for every command (secret-looking names are dropped, see
    /// `paddock_core::envpolicy`); request variables are layered on top.
    pub environment: BTreeMap<String, String>,
    /// Sandboxes kept in memory by the provider (256); eviction loses nothing on disk.
    pub max_cached_sandboxes: usize,
    /// Build a sandbox's jail (namespaces, root, cgroup, its init) as soon as the sandbox
    /// is created, so its first command finds it ready (default true); false: on its first
    /// command. A jail lives as long as its sandbox either way. One-shot `paddock exec`
    /// builds one jail for its one command.
    pub prebuild_jail: bool,
    /// Keep a shell started ahead of the next command in each sandbox's jail (default true):
    /// the shell's `execve` and dynamic loading then happen before the command comes, and
    /// the command is handed to the waiting shell, which runs it exactly as `bash -c
    /// COMMAND` would. Off, or with a statically linked shell, the shell starts when the
    /// command comes.
    pub prebuild_shell: bool,
    /// Most bytes one thread's data (`/mnt/user-data`) may take on the host's disk. Unset:
    /// [`DEFAULT_DISK_QUOTA_BYTES`] where the host can enforce it, else none (with a
    /// warning); set: enforced, or Paddock refuses to start. `0`: no quota.
    pub disk_quota_bytes: Option<u64>,
    /// How the quota is enforced: `auto` (default), `image` or `off`.
    pub disk_quota_mode: DiskQuotaMode,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            isolation: Isolation::Isolated,
            network: Network::None,
            limits: Limits::default(),
            exec_timeout_secs: paddock_core::sandbox::DEFAULT_EXEC_TIMEOUT_SECS,
            output_cap_bytes: paddock_core::sandbox::DEFAULT_OUTPUT_CAP_BYTES,
            sandbox_uid: paddock_sys::uidmap::DEFAULT_SANDBOX_ID,
            sandbox_gid: paddock_sys::uidmap::DEFAULT_SANDBOX_ID,
            uid_range: Some(UidRange::DEFAULT),
            environment: BTreeMap::new(),
            max_cached_sandboxes: 256,
            total_limits: TotalLimits::default(),
            prebuild_jail: true,
            prebuild_shell: true,
            disk_quota_bytes: None,
            disk_quota_mode: DiskQuotaMode::Auto,
        }
    }
}

/// An invalid option, named by its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sandbox.{key}: {message}")]
pub struct OptionsError {
    /// The key (`limits.cpus`, `environment`, …).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl RuntimeOptions {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), OptionsError> {
        let err = |key: &str, message: String| {
            Err(OptionsError {
                key: key.into(),
                message,
            })
        };
        if !(self.exec_timeout_secs.is_finite()
            && self.exec_timeout_secs > 0.0
            && self.exec_timeout_secs <= 86_400.0)
        {
            return err(
                "exec_timeout_secs",
                "must be greater than 0 and at most 86400".into(),
            );
        }
        if self.output_cap_bytes == 0 {
            return err("output_cap_bytes", "must be at least 1".into());
        }
        if !(self.limits.cpus.is_finite() && self.limits.cpus >= 0.0) {
            return err(
                "limits.cpus",
                "must be a number >= 0 (0 disables the limit)".into(),
            );
        }
        if self.sandbox_uid == 0 {
            return err("sandbox_uid", "must not be 0 (host root)".into());
        }
        if self.sandbox_gid == 0 {
            return err("sandbox_gid", "must not be 0 (host root)".into());
        }
        let shared = paddock_sys::uidmap::DEFAULT_SANDBOX_ID;
        if self.uid_range.is_some() && (self.sandbox_uid != shared || self.sandbox_gid != shared) {
            return err(
                if self.sandbox_uid != shared {
                    "sandbox_uid"
                } else {
                    "sandbox_gid"
                },
                "applies only with `uid_range: null` (every sandbox sharing one uid); set that, \
                 or remove sandbox_uid/sandbox_gid to give each sandbox its own uid from uid_range"
                    .into(),
            );
        }
        if let Some(r) = self.uid_range
            && (r.start == 0 || r.count == 0 || r.start.checked_add(r.count).is_none())
        {
            return err(
                "uid_range",
                "needs start >= 1, count >= 1 and start + count < 2^32".into(),
            );
        }
        for (k, v) in &self.environment {
            if let Err(e) = paddock_core::sandbox::validate_env_key(k) {
                return err("environment", e.to_string());
            }
            if v.contains('\0') {
                return err("environment", format!("value of {k} contains a NUL byte"));
            }
        }
        if let Some(b) = self.disk_quota_bytes
            && b != 0
            && b < MIN_DISK_QUOTA_BYTES
        {
            return err(
                "disk_quota_bytes",
                format!(
                    "must be 0 (no quota) or at least {MIN_DISK_QUOTA_BYTES} bytes (8 MiB): the filesystem's own metadata needs room"
                ),
            );
        }
        if self.max_cached_sandboxes == 0 {
            return err("max_cached_sandboxes", "must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let o = RuntimeOptions::default();
        assert_eq!(o.isolation, Isolation::Isolated);
        assert_eq!(o.network, Network::None);
        assert_eq!(o.limits.memory_bytes, 2 * 1024 * 1024 * 1024);
        assert_eq!(o.limits.pids, 512);
        assert_eq!(o.limits.cpus, 2.0);
        assert_eq!(o.limits.tmp_size_bytes, 256 * 1024 * 1024);
        assert_eq!(o.output_cap_bytes, 10 * 1024 * 1024);
        assert_eq!(o.exec_timeout_secs, 600.0);
        assert_eq!(o.sandbox_uid, 951_000);
        assert_eq!(o.max_cached_sandboxes, 256);
        assert!(o.validate().is_ok());
    }

    #[test]
    fn parses_yaml_and_refuses_unknown_keys() {
        let o: RuntimeOptions = serde_json::from_str(
            r#"{"isolation":"none","network":"host","limits":{"pids":64},"uid_range":{"start":100000,"count":1000}}"#,
        )
        .unwrap();
        assert_eq!(o.isolation, Isolation::None);
        assert_eq!(o.network, Network::Host);
        assert_eq!(o.limits.pids, 64);
        assert_eq!(
            o.limits.memory_bytes,
            2 << 30,
            "other limits keep their defaults"
        );
        let e = serde_json::from_str::<RuntimeOptions>(r#"{"isolaton":"none"}"#).unwrap_err();
        assert!(e.to_string().contains("isolaton"), "{e}");
        let e = serde_json::from_str::<RuntimeOptions>(r#"{"limits":{"memory":1}}"#).unwrap_err();
        assert!(e.to_string().contains("memory"), "{e}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut o = RuntimeOptions::default();
        o.environment.insert("BAD-KEY".into(), "x".into());
        assert_eq!(o.validate().unwrap_err().key, "environment");
        let o = RuntimeOptions {
            sandbox_uid: 0,
            ..RuntimeOptions::default()
        };
        assert_eq!(o.validate().unwrap_err().key, "sandbox_uid");
        let o = RuntimeOptions {
            exec_timeout_secs: -1.0,
            ..RuntimeOptions::default()
        };
        assert_eq!(o.validate().unwrap_err().key, "exec_timeout_secs");
        let mut o = RuntimeOptions::default();
        o.limits.cpus = f64::NAN;
        assert!(
            o.validate()
                .unwrap_err()
                .to_string()
                .starts_with("invalid sandbox.limits.cpus")
        );
        let o = RuntimeOptions {
            uid_range: Some(UidRange { start: 1, count: 0 }),
            ..RuntimeOptions::default()
        };
        assert_eq!(o.validate().unwrap_err().key, "uid_range");
        // A shared uid set beside the per-sandbox range would be silently unused: refused.
        let o = RuntimeOptions {
            sandbox_uid: 960_000,
            ..RuntimeOptions::default()
        };
        let e = o.validate().unwrap_err();
        assert_eq!(e.key, "sandbox_uid");
        assert!(e.message.contains("uid_range: null"), "{e}");
        let o = RuntimeOptions {
            sandbox_uid: 960_000,
            sandbox_gid: 960_000,
            uid_range: None,
            ..RuntimeOptions::default()
        };
        assert!(o.validate().is_ok());
        assert_eq!(
            RuntimeOptions::default().uid_range,
            Some(UidRange::DEFAULT),
            "each sandbox gets its own uid by default"
        );
        let o: RuntimeOptions = serde_json::from_str(r#"{"uid_range":null}"#).unwrap();
        assert_eq!(o.uid_range, None, "null chooses the shared uid");
    }

    #[test]
    fn disk_quota_keys_parse_and_validate() {
        let o: RuntimeOptions =
            serde_json::from_str(r#"{"disk_quota_bytes":16777216,"disk_quota_mode":"image"}"#)
                .unwrap();
        assert_eq!(o.disk_quota_bytes, Some(16 << 20));
        assert_eq!(o.disk_quota_mode, DiskQuotaMode::Image);
        let o = RuntimeOptions::default();
        assert_eq!(
            o.disk_quota_bytes, None,
            "unset: the default, where enforceable"
        );
        assert_eq!(o.disk_quota_mode, DiskQuotaMode::Auto);
        assert_eq!(DEFAULT_DISK_QUOTA_BYTES, 10 * 1024 * 1024 * 1024);
        let e =
            serde_json::from_str::<RuntimeOptions>(r#"{"disk_quota_mode":"project"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
        let o = RuntimeOptions {
            disk_quota_bytes: Some(1 << 20),
            ..RuntimeOptions::default()
        };
        let e = o.validate().unwrap_err();
        assert_eq!(e.key, "disk_quota_bytes");
        assert!(e.message.contains("8 MiB"), "{e}");
        for ok in [0, MIN_DISK_QUOTA_BYTES, 16 << 20] {
            let o = RuntimeOptions {
                disk_quota_bytes: Some(ok),
                ..RuntimeOptions::default()
            };
            assert!(o.validate().is_ok(), "{ok}");
        }
    }
}
