//! Validation of the extra mounts a create request carries, as DeerFlow's provisioner
//! accepts them and stricter where it is lax: at most `max_extra_mounts`; the host path
//! absolute, lexically normalised and strictly under the host base (and, under
//! `{base}/users/`, only inside the requesting user's own directory); the container path
//! normalised, never `/mnt/user-data` or anything under it, in the allowlist (by default
//! DeerFlow's seven `ALLOWED_EXTRA_MOUNT_PATHS`), and not used twice.
//!
//! Invariant: an [`ExtraMount`] names a host directory under the host base and a
//! container path other than the thread's user data, so the Pod built from it cannot
//! expose another part of the node or shadow user data. A gateway mount at a path
//! Paddock mounts itself (`/mnt/acp-workspace`, `/mnt/skills/custom`) replaces Paddock's
//! mount there ([`crate::objects`]); nested paths (`config` and `config/locks`) are two
//! mounts.

use paddock_core::{MountSpec, UserId};
use paddock_server::BackendError;

use crate::config::{Resolved, normalize_abs};

/// Container paths Paddock owns (with everything under them): the thread's user data is
/// never overridable, whatever the allowlist says.
pub const RESERVED: &[&str] = &[paddock_core::mount::USER_DATA];

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
                    "container_path {container} is reserved ({r} and everything under it belongs to Paddock and is never overridable)"
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
pub(crate) mod tests {
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
    fn user_data_is_reserved_and_unlisted_paths_are_refused() {
        for c in [
            "/mnt/user-data",
            "/mnt/user-data/",
            "/mnt/user-data/workspace",
            "/mnt/user-data/outputs/x",
        ] {
            assert!(err(&[spec("/df/a", c)]).1.contains("reserved"), "{c}");
        }
        for c in [
            "/etc",
            "/mnt/skills",
            "/mnt/skills/legacy",
            "/mnt/skills/public",
            "/mnt/integrations/lark-cli",
            "/mnt/acp-workspace/sub",
        ] {
            let (f, m) = err(&[spec("/df/a", c)]);
            assert_eq!(f, "extra_mounts[0]");
            assert!(m.contains("not allowed"), "{c}: {m}");
        }
        assert!(
            err(&[spec("/df/a", "/mnt/acp-workspace/../user-data")])
                .1
                .contains("..")
        );
        assert!(
            err(&[spec("/df/a", "mnt/acp-workspace")])
                .1
                .contains("absolute")
        );
    }

    /// The seven mounts DeerFlow's gateway sends with every create, with its host paths.
    pub(crate) fn deerflow_payload(base: &str, user: &str, thread: &str) -> Vec<MountSpec> {
        let u = format!("{base}/users/{user}");
        let lark = format!("{u}/integrations/lark-cli");
        [
            (
                format!("{u}/threads/{thread}/acp-workspace"),
                "/mnt/acp-workspace",
                true,
            ),
            (
                format!("{u}/skills_view/custom"),
                "/mnt/skills/custom",
                true,
            ),
            (
                format!("{u}/skills_view/integrations"),
                "/mnt/skills/integrations",
                true,
            ),
            (
                format!("{lark}/config"),
                "/mnt/integrations/lark-cli/config",
                true,
            ),
            (
                format!("{lark}/config/locks"),
                "/mnt/integrations/lark-cli/config/locks",
                false,
            ),
            (
                format!("{lark}/data"),
                "/mnt/integrations/lark-cli/data",
                false,
            ),
            (
                format!("{base}/integrations/lark-cli/sandbox-cli"),
                "/mnt/integrations/lark-cli/runtime",
                true,
            ),
        ]
        .into_iter()
        .map(|(h, c, ro)| MountSpec {
            host_path: h,
            container_path: c.into(),
            read_only: ro,
        })
        .collect()
    }

    #[test]
    fn deerflows_seven_gateway_mounts_are_accepted_as_sent() {
        let specs = deerflow_payload("/df", "user-7", "thread-42");
        let m = validate_extra_mounts(&specs, &user(), &cfg()).expect("DeerFlow's payload");
        assert_eq!(m.len(), 7);
        for (got, sent) in m.iter().zip(&specs) {
            assert_eq!(got.host_path, sent.host_path);
            assert_eq!(got.container_path, sent.container_path);
            assert_eq!(got.read_only, sent.read_only);
        }
        assert_eq!(m[1].rel_to_base, "users/user-7/skills_view/custom");
        assert_eq!(m[6].rel_to_base, "integrations/lark-cli/sandbox-cli");
        // Another user's payload names user-7's directories: refused.
        let other = UserId::new("user-8").expect("valid");
        match validate_extra_mounts(&specs, &other, &cfg()) {
            Err(BackendError::Invalid { field, message }) => {
                assert_eq!(field, "extra_mounts[0]");
                assert!(message.contains("another user"), "{message}");
            }
            r => panic!("expected Invalid, got {r:?}"),
        }
    }

    #[test]
    fn an_operator_allowlist_narrows_the_gateway_paths() {
        let narrow = KubeConfig {
            host_base_dir: "/df".into(),
            allowed_extra_mount_paths: vec!["/mnt/acp-workspace".into()],
            ..KubeConfig::default()
        }
        .validate()
        .expect("valid");
        let specs = deerflow_payload("/df", "user-7", "thread-42");
        validate_extra_mounts(&specs[..1], &user(), &narrow).expect("acp is allowed");
        match validate_extra_mounts(&specs, &user(), &narrow) {
            Err(BackendError::Invalid { field, message }) => {
                assert_eq!(field, "extra_mounts[1]");
                assert!(message.contains("not allowed"), "{message}");
            }
            r => panic!("expected Invalid, got {r:?}"),
        }
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
