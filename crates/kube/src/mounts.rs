//! Validation of the extra mounts a create request carries, as the provisioner review
//! settled them: at most `max_extra_mounts`; the host path absolute, lexically
//! normalised and strictly under the host base (and, under `{base}/users/`, only inside
//! the requesting user's own directory); the container path normalised, never
//! `/mnt/user-data`, `/mnt/skills` or anything under them, in the allowlist, and not
//! used twice.
//!
//! Invariant: an [`ExtraMount`] names a host directory under the host base and a
//! container path no built-in mount uses, so the Pod built from it cannot expose another
//! part of the node or shadow user data or skills.

use paddock_core::{MountSpec, UserId};
use paddock_server::BackendError;

use crate::config::{Resolved, normalize_abs};

/// Container paths Paddock owns (with everything under them).
pub const RESERVED: &[&str] = &["/mnt/user-data", "/mnt/skills"];

/// One validated extra mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraMount {
    /// Normalised host path on the node.
    pub host_path: String,
    /// The host path relative to the host base (for the PVC subPath in PVC mode).
    pub rel_to_base: String,
    /// Normalised container path.
    pub container_path: String,
    /// Mounted read-only.
    pub read_only: bool,
}

fn invalid(i: usize, message: String) -> BackendError {
    BackendError::Invalid {
        field: format!("extra_mounts[{i}]"),
        message,
    }
}

fn under(path: &str, base: &str) -> bool {
    path.strip_prefix(base).is_some_and(|r| r.starts_with('/'))
}

/// Validates `specs` for `user` under `cfg`.
pub fn validate_extra_mounts(
    specs: &[MountSpec],
    user: &UserId,
    cfg: &Resolved,
) -> Result<Vec<ExtraMount>, BackendError> {
    let max = cfg.cfg.max_extra_mounts;
    if specs.len() > max {
        return Err(BackendError::Invalid {
            field: "extra_mounts".into(),
            message: format!("too many extra mounts: {} (at most {max})", specs.len()),
        });
    }
    let users_dir = format!("{}/users", cfg.host_base);
    let own_dir = format!("{users_dir}/{user}");
    let mut out: Vec<ExtraMount> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        if spec.host_path.is_empty() {
            return Err(invalid(i, "host_path must not be empty".into()));
        }
        let host = normalize_abs(&spec.host_path)
            .ok_or_else(|| invalid(i, "host_path must be an absolute path".into()))?;
        if !under(&host, &cfg.host_base) {
            return Err(invalid(
                i,
                "host_path must be inside the DeerFlow host base directory (DEER_FLOW_HOST_BASE_DIR)".into(),
            ));
        }
        if (host == users_dir || under(&host, &users_dir))
            && host != own_dir
            && !under(&host, &own_dir)
        {
            return Err(invalid(
                i,
                "host_path is inside another user's directory".into(),
            ));
        }
        if spec.container_path.split('/').any(|s| s == "..") {
            return Err(invalid(i, "container_path may not contain '..'".into()));
        }
        let container = normalize_abs(&spec.container_path)
            .ok_or_else(|| invalid(i, "container_path must be an absolute path".into()))?;
        if let Some(r) = RESERVED
            .iter()
            .find(|r| container == **r || under(&container, r))
        {
            return Err(invalid(
                i,
                format!(
                    "container_path {container} is reserved ({r} and everything under it belongs to Paddock)"
                ),
            ));
        }
        if !cfg.allowed_extra_mount_paths.contains(&container) {
            return Err(invalid(
                i,
                format!(
                    "container_path {container} is not allowed (allowed: {})",
                    cfg.allowed_extra_mount_paths.join(", ")
                ),
            ));
        }
        if out.iter().any(|m| m.container_path == container) {
            return Err(invalid(
                i,
                format!("container_path {container} is used by another extra mount"),
            ));
        }
        let rel_to_base = host[cfg.host_base.len() + 1..].to_owned();
        out.push(ExtraMount {
            host_path: host,
            rel_to_base,
            container_path: container,
            read_only: spec.read_only,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KubeConfig;

    fn cfg() -> Resolved {
        KubeConfig {
            host_base_dir: "/df".into(),
            ..KubeConfig::default()
        }
        .validate()
        .expect("valid")
    }

    fn spec(h: &str, c: &str) -> MountSpec {
        MountSpec {
            host_path: h.into(),
            container_path: c.into(),
            read_only: false,
        }
    }

    fn user() -> UserId {
        UserId::new("user-7").expect("valid")
    }

    fn err(specs: &[MountSpec]) -> (String, String) {
        match validate_extra_mounts(specs, &user(), &cfg()) {
            Err(BackendError::Invalid { field, message }) => (field, message),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn accepted_mounts_are_normalised() {
        let m = validate_extra_mounts(
            &[spec("/df/shared/./acp/", "/mnt/acp-workspace/")],
            &user(),
            &cfg(),
        )
        .expect("valid");
        assert_eq!(m[0].host_path, "/df/shared/acp");
        assert_eq!(m[0].rel_to_base, "shared/acp");
        assert_eq!(m[0].container_path, "/mnt/acp-workspace");
    }

    #[test]
    fn host_path_must_stay_under_the_base() {
        assert!(
            err(&[spec("/df/../etc", "/mnt/acp-workspace")])
                .1
                .contains("host base")
        );
        assert!(
            err(&[spec("/df", "/mnt/acp-workspace")])
                .1
                .contains("host base")
        );
        assert!(
            err(&[spec("/dfx/a", "/mnt/acp-workspace")])
                .1
                .contains("host base")
        );
        assert!(
            err(&[spec("relative", "/mnt/acp-workspace")])
                .1
                .contains("absolute")
        );
        assert!(err(&[spec("", "/mnt/acp-workspace")]).1.contains("empty"));
    }

    #[test]
    fn other_users_directories_are_refused() {
        let (f, m) = err(&[spec("/df/users/user-8/x", "/mnt/acp-workspace")]);
        assert_eq!(f, "extra_mounts[0]");
        assert!(m.contains("another user"));
        assert!(
            err(&[spec("/df/users", "/mnt/acp-workspace")])
                .1
                .contains("another user")
        );
        validate_extra_mounts(
            &[spec("/df/users/user-7/x", "/mnt/acp-workspace")],
            &user(),
            &cfg(),
        )
        .expect("own directory is fine");
    }

    #[test]
    fn reserved_and_unlisted_container_paths_are_refused() {
        for c in [
            "/mnt/user-data",
            "/mnt/user-data/workspace",
            "/mnt/skills",
            "/mnt/skills/custom",
            "/mnt/skills/x/",
        ] {
            assert!(err(&[spec("/df/a", c)]).1.contains("reserved"), "{c}");
        }
        assert!(err(&[spec("/df/a", "/etc")]).1.contains("not allowed"));
        assert!(
            err(&[spec("/df/a", "/mnt/acp-workspace/../user-data")])
                .1
                .contains("..")
        );
    }

    #[test]
    fn duplicates_and_too_many_are_refused() {
        let (f, m) = err(&[
            spec("/df/a", "/mnt/acp-workspace"),
            spec("/df/b", "/mnt/acp-workspace/"),
        ]);
        assert_eq!(f, "extra_mounts[1]");
        assert!(m.contains("another extra mount"));
        let many: Vec<MountSpec> = (0..11)
            .map(|i| spec(&format!("/df/{i}"), "/mnt/acp-workspace"))
            .collect();
        let (f, m) = err(&many);
        assert_eq!(f, "extra_mounts");
        assert!(m.contains("at most 10"));
    }
}
