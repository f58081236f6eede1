//! Snapshots (YAML) of the objects the backend sends, one per configuration mode, so any
//! change to what reaches the API server is reviewed by eye (and `tests/kube_validate`
//! validates each against the official schemas).

use paddock_core::{MountSpec, SandboxId, ThreadId, UserId};
use paddock_kube::config::{KubeConfig, Resolved, ServiceType};
use paddock_kube::mounts::validate_extra_mounts;
use paddock_kube::objects::{self, SandboxSpec};

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

fn ids(user: &str) -> (SandboxId, UserId, ThreadId) {
    (
        SandboxId::new("abc123").expect("id"),
        UserId::new(user).expect("user"),
        ThreadId::new("thread-42").expect("thread"),
    )
}

fn resolved(c: KubeConfig) -> Resolved {
    c.validate().expect("valid config")
}

fn all(cfg: &Resolved, user: &str, extra: &[MountSpec]) -> String {
    let (id, u, t) = ids(user);
    let extra = validate_extra_mounts(extra, &u, cfg).expect("valid mounts");
    let s = SandboxSpec {
        id: &id,
        user: &u,
        thread: &t,
        token: TOKEN,
        extra: &extra,
    };
    let docs = [
        serde_norway::to_string(&objects::pod(cfg, &s)).expect("yaml"),
        serde_norway::to_string(&objects::service(cfg, &s)).expect("yaml"),
        serde_norway::to_string(&objects::network_policy(cfg, &s)).expect("yaml"),
    ];
    docs.join("---\n")
}

#[test]
fn host_path_mode() {
    let cfg = resolved(KubeConfig::default());
    insta::assert_snapshot!(all(&cfg, "user-7", &[]));
}

#[test]
fn pvc_mode_user_scoped_subpaths() {
    let cfg = resolved(KubeConfig {
        skills_pvc_name: Some("skills-pvc".into()),
        userdata_pvc_name: Some("deerflow-data".into()),
        ..KubeConfig::default()
    });
    insta::assert_snapshot!(all(&cfg, "user-7", &[]));
}

#[test]
fn default_user() {
    let cfg = resolved(KubeConfig::default());
    insta::assert_snapshot!(all(&cfg, "default", &[]));
}

#[test]
fn extra_mounts_host_path_and_pvc() {
    let extra = [
        MountSpec {
            host_path: "/.deer-flow/users/user-7/acp".into(),
            container_path: "/mnt/acp-workspace".into(),
            read_only: true,
        },
        MountSpec {
            host_path: "/.deer-flow/lark/config/".into(),
            container_path: "/mnt/integrations/lark-cli/config".into(),
            read_only: false,
        },
    ];
    let host = resolved(KubeConfig::default());
    insta::assert_snapshot!("extra_mounts_host_path", all(&host, "user-7", &extra));
    let pvc = resolved(KubeConfig {
        userdata_pvc_name: Some("deerflow-data".into()),
        ..KubeConfig::default()
    });
    insta::assert_snapshot!("extra_mounts_pvc", all(&pvc, "user-7", &extra));
}

/// The seven mounts DeerFlow's gateway sends with every create (its
/// `ALLOWED_EXTRA_MOUNT_PATHS`), with the host paths it uses under its state root.
fn deerflow_payload(user: &str) -> Vec<MountSpec> {
    let u = format!("/.deer-flow/users/{user}");
    let lark = format!("{u}/integrations/lark-cli");
    [
        (
            format!("{u}/threads/thread-42/acp-workspace"),
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
            "/.deer-flow/integrations/lark-cli/sandbox-cli".to_owned(),
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
fn deerflow_gateway_mounts_host_path_and_pvc() {
    let extra = deerflow_payload("user-7");
    let host = resolved(KubeConfig::default());
    insta::assert_snapshot!("deerflow_gateway_host_path", all(&host, "user-7", &extra));
    let pvc = resolved(KubeConfig {
        skills_pvc_name: Some("skills-pvc".into()),
        userdata_pvc_name: Some("deerflow-data".into()),
        ..KubeConfig::default()
    });
    insta::assert_snapshot!("deerflow_gateway_pvc", all(&pvc, "user-7", &extra));
}

#[test]
fn cluster_ip_with_custom_resources_and_policy() {
    let mut c = KubeConfig {
        service_type: ServiceType::ClusterIP,
        namespace: "sandboxes".into(),
        paddock_namespace: Some("paddock".into()),
        ..KubeConfig::default()
    };
    c.resources.requests.insert("cpu".into(), "250m".into());
    c.resources.limits.insert("memory".into(), "4Gi".into());
    c.resources.limits.remove("ephemeral-storage");
    c.network_policy
        .egress
        .push(paddock_kube::config::EgressRule {
            cidr: "10.0.0.0/8".into(),
            ports: vec![443],
        });
    let cfg = resolved(c);
    insta::assert_snapshot!(all(&cfg, "user-7", &[]));
    let (id, _, _) = ids("user-7");
    assert_eq!(
        objects::sandbox_url(&cfg, &id, "ignored", None, TOKEN).as_deref(),
        Some(
            "http://sandbox-abc123-svc.sandboxes.svc.cluster.local:8080/s/0123456789abcdef0123456789abcdef0123456789abcdef"
        )
    );
}

#[test]
fn mount_paths_are_distinct_and_ordered_in_every_mode() {
    for pvc in [false, true] {
        let cfg = resolved(KubeConfig {
            userdata_pvc_name: pvc.then(|| "d".to_owned()),
            ..KubeConfig::default()
        });
        let (id, u, t) = ids("user-7");
        let extra = validate_extra_mounts(&deerflow_payload("user-7"), &u, &cfg).expect("valid");
        let pod = objects::pod(
            &cfg,
            &SandboxSpec {
                id: &id,
                user: &u,
                thread: &t,
                token: TOKEN,
                extra: &extra,
            },
        );
        let spec = pod.spec.expect("spec");
        let mounts = spec.containers[0].volume_mounts.clone().expect("mounts");
        let mut paths: Vec<&str> = mounts.iter().map(|m| m.mount_path.as_str()).collect();
        let n = paths.len();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), n, "duplicate mountPath (pvc={pvc})");
        // A nested mount (config/locks in config) comes after the mount it nests in.
        for (i, m) in mounts.iter().enumerate() {
            assert!(
                mounts[i + 1..]
                    .iter()
                    .all(|later| !m.mount_path.starts_with(&format!("{}/", later.mount_path))),
                "{} before its parent (pvc={pvc})",
                m.mount_path
            );
        }
        let vols: Vec<String> = spec
            .volumes
            .expect("vols")
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert!(
            mounts.iter().all(|m| vols.contains(&m.name)),
            "mount of a missing volume"
        );
    }
}
