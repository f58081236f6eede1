//! Pure builders of the Kubernetes objects of one sandbox: Secret `sandbox-{id}-token`,
//! Pod `sandbox-{id}`, Service `sandbox-{id}-svc` and NetworkPolicy `sandbox-{id}-net`.
//!
//! Invariant: the same inputs give byte-identical objects (no clock, no randomness; the
//! token is an input), every mountPath in the Pod is distinct, and user data is always
//! user-scoped (`users/{user}/threads/{thread}/user-data`) in hostPath and PVC mode.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, HTTPHeader,
    HostPathVolumeSource, PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec,
    Probe, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecurityContext,
    Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use paddock_core::{SandboxId, ThreadId, UserId};

use crate::config::{Resolved, ServiceType};
use crate::mounts::ExtraMount;

/// `app` label value DeerFlow's provisioner and gateway select on.
pub const APP_LABEL: &str = "deer-flow-sandbox";
/// The label selecting what Paddock manages.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "paddock");
/// The label selector of every object Paddock manages.
pub const MANAGED_SELECTOR: &str = "app=deer-flow-sandbox,app.kubernetes.io/managed-by=paddock";
/// Annotation with the full user id (labels cannot hold every valid id).
pub const USER_ANNOTATION: &str = "paddock.dev/user-id";
/// Annotation with the full thread id.
pub const THREAD_ANNOTATION: &str = "paddock.dev/thread-id";
/// Label with the user id, when it is a valid label value.
pub const USER_LABEL: &str = "paddock.dev/user-id";
/// Label with the thread id, when it is a valid label value.
pub const THREAD_LABEL: &str = "paddock.dev/thread-id";
/// Key of the token in the sandbox Secret.
pub const TOKEN_KEY: &str = "token";
/// Where the agent keeps its data layout inside the container.
pub const AGENT_DATA_DIR: &str = "/var/lib/paddock";
/// The container's name.
pub const CONTAINER: &str = "sandbox";

/// Pod name.
pub fn pod_name(id: &SandboxId) -> String {
    format!("sandbox-{id}")
}
/// Service name.
pub fn service_name(id: &SandboxId) -> String {
    format!("sandbox-{id}-svc")
}
/// Secret name.
pub fn secret_name(id: &SandboxId) -> String {
    format!("sandbox-{id}-token")
}
/// NetworkPolicy name.
pub fn policy_name(id: &SandboxId) -> String {
    format!("sandbox-{id}-net")
}

/// What one sandbox's objects are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec<'a> {
    /// The sandbox.
    pub id: &'a SandboxId,
    /// Its user.
    pub user: &'a UserId,
    /// Its thread.
    pub thread: &'a ThreadId,
    /// The agent's secret.
    pub token: &'a str,
    /// Validated extra mounts.
    pub extra: &'a [ExtraMount],
}

fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_none_or(u8::is_ascii_alphanumeric)
        && b.last().is_none_or(u8::is_ascii_alphanumeric)
}

/// Labels of every object of the sandbox.
pub fn labels(s: &SandboxSpec<'_>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("app".to_owned(), APP_LABEL.to_owned()),
        ("sandbox-id".to_owned(), s.id.to_string()),
        ("app.kubernetes.io/name".to_owned(), "deer-flow".to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            "sandbox".to_owned(),
        ),
        (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
    ]);
    if is_label_value(s.user.as_str()) {
        l.insert(USER_LABEL.to_owned(), s.user.to_string());
    }
    if is_label_value(s.thread.as_str()) {
        l.insert(THREAD_LABEL.to_owned(), s.thread.to_string());
    }
    l
}

fn meta(name: String, cfg: &Resolved, s: &SandboxSpec<'_>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(cfg.cfg.namespace.clone()),
        labels: Some(labels(s)),
        annotations: Some(BTreeMap::from([
            (USER_ANNOTATION.to_owned(), s.user.to_string()),
            (THREAD_ANNOTATION.to_owned(), s.thread.to_string()),
        ])),
        ..ObjectMeta::default()
    }
}

/// The Secret holding the agent's token.
pub fn secret(cfg: &Resolved, s: &SandboxSpec<'_>) -> Secret {
    Secret {
        metadata: meta(secret_name(s.id), cfg, s),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_owned(),
            ByteString(s.token.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

fn host_path_volume(name: &str, path: String, kind: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        host_path: Some(HostPathVolumeSource {
            path,
            type_: Some(kind.to_owned()),
        }),
        ..Volume::default()
    }
}

fn pvc_volume(name: &str, claim: &str, read_only: bool) -> Volume {
    Volume {
        name: name.to_owned(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.to_owned(),
            read_only: read_only.then_some(true),
        }),
        ..Volume::default()
    }
}

fn mount(volume: &str, path: String, read_only: bool, sub_path: Option<String>) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path,
        read_only: read_only.then_some(true),
        sub_path,
        ..VolumeMount::default()
    }
}

fn quantities(m: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!m.is_empty()).then(|| {
        m.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect()
    })
}

fn probe(path_token: &str, initial: i32, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/v1/sandbox".to_owned()),
            port: IntOrString::String("http".to_owned()),
            http_headers: Some(vec![HTTPHeader {
                name: "Authorization".to_owned(),
                value: format!("Bearer {path_token}"),
            }]),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// Volumes and mounts: user data and skills at DeerFlow's `/mnt/...` paths and again at
/// the agent's data-dir layout (`/var/lib/paddock/users/{u}/threads/{t}/user-data`,
/// `/var/lib/paddock/skills`, `/var/lib/paddock/users/{u}/skills/custom`), so the agent
/// resolves virtual paths to the same volumes a DeerFlow sandbox would see.
fn volumes(cfg: &Resolved, s: &SandboxSpec<'_>) -> (Vec<Volume>, Vec<VolumeMount>) {
    let (u, t) = (s.user.as_str(), s.thread.as_str());
    let user_rel = format!("users/{u}/threads/{t}/user-data");
    let custom_rel = format!("users/{u}/skills/custom");
    let mut vols = Vec::new();
    let mut mounts = Vec::new();
    match &cfg.cfg.skills_pvc_name {
        Some(claim) => vols.push(pvc_volume("skills", claim, true)),
        None => vols.push(host_path_volume(
            "skills",
            cfg.skills_host_path.clone(),
            "DirectoryOrCreate",
        )),
    }
    mounts.push(mount("skills", "/mnt/skills".into(), true, None));
    mounts.push(mount(
        "skills",
        format!("{AGENT_DATA_DIR}/skills"),
        true,
        None,
    ));
    match &cfg.cfg.userdata_pvc_name {
        Some(claim) => {
            vols.push(pvc_volume("user-data", claim, false));
            let ud = Some(format!("deer-flow/{user_rel}"));
            let cs = Some(format!("deer-flow/{custom_rel}"));
            mounts.push(mount(
                "user-data",
                "/mnt/user-data".into(),
                false,
                ud.clone(),
            ));
            mounts.push(mount(
                "user-data",
                format!("{AGENT_DATA_DIR}/{user_rel}"),
                false,
                ud,
            ));
            mounts.push(mount(
                "user-data",
                "/mnt/skills/custom".into(),
                true,
                cs.clone(),
            ));
            mounts.push(mount(
                "user-data",
                format!("{AGENT_DATA_DIR}/{custom_rel}"),
                true,
                cs,
            ));
        }
        None => {
            let base = &cfg.host_base;
            vols.push(host_path_volume(
                "user-data",
                format!("{base}/{user_rel}"),
                "DirectoryOrCreate",
            ));
            vols.push(host_path_volume(
                "skills-custom",
                format!("{base}/{custom_rel}"),
                "DirectoryOrCreate",
            ));
            mounts.push(mount("user-data", "/mnt/user-data".into(), false, None));
            mounts.push(mount(
                "user-data",
                format!("{AGENT_DATA_DIR}/{user_rel}"),
                false,
                None,
            ));
            mounts.push(mount(
                "skills-custom",
                "/mnt/skills/custom".into(),
                true,
                None,
            ));
            mounts.push(mount(
                "skills-custom",
                format!("{AGENT_DATA_DIR}/{custom_rel}"),
                true,
                None,
            ));
        }
    }
    for (i, e) in s.extra.iter().enumerate() {
        // Validation already refused reserved and duplicate paths; this keeps the
        // invariant even if a built-in path ever joins the allowlist.
        if mounts.iter().any(|m| m.mount_path == e.container_path) {
            continue;
        }
        let name = format!("extra-{i}");
        match &cfg.cfg.userdata_pvc_name {
            Some(claim) => {
                vols.push(pvc_volume(&name, claim, e.read_only));
                mounts.push(mount(
                    &name,
                    e.container_path.clone(),
                    e.read_only,
                    Some(format!("deer-flow/{}", e.rel_to_base)),
                ));
            }
            None => {
                let kind = if e.read_only {
                    "Directory"
                } else {
                    "DirectoryOrCreate"
                };
                vols.push(host_path_volume(&name, e.host_path.clone(), kind));
                mounts.push(mount(&name, e.container_path.clone(), e.read_only, None));
            }
        }
    }
    (vols, mounts)
}

/// The sandbox Pod: one container running `paddock agent` under the restricted profile.
pub fn pod(cfg: &Resolved, s: &SandboxSpec<'_>) -> Pod {
    let c = &cfg.cfg;
    let (vols, mounts) = volumes(cfg, s);
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(c.image.clone()),
        image_pull_policy: Some(c.image_pull_policy.clone()),
        command: Some(vec!["paddock".to_owned()]),
        args: Some(vec![
            "agent".into(),
            "--listen".into(),
            format!("0.0.0.0:{}", c.container_port),
            "--data-dir".into(),
            AGENT_DATA_DIR.into(),
            "--user".into(),
            s.user.to_string(),
            "--thread".into(),
            s.thread.to_string(),
            // The Pod is the isolation boundary: the restricted profile forbids the
            // namespaces the local runtime would create.
            "--isolation".into(),
            "none".into(),
        ]),
        env: Some(vec![EnvVar {
            name: "PADDOCK_AGENT_TOKEN".to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret_name(s.id),
                    key: TOKEN_KEY.to_owned(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some("http".to_owned()),
            container_port: i32::from(c.container_port),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe(s.token, 1, 2)),
        liveness_probe: Some(probe(s.token, 10, 10)),
        resources: Some(ResourceRequirements {
            requests: quantities(&c.resources.requests),
            limits: quantities(&c.resources.limits),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            run_as_non_root: Some(true),
            run_as_user: Some(c.run_as_user),
            run_as_group: Some(c.run_as_group),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    Pod {
        metadata: meta(pod_name(s.id), cfg, s),
        spec: Some(PodSpec {
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            restart_policy: Some("Always".to_owned()),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(c.run_as_user),
                run_as_group: Some(c.run_as_group),
                fs_group: Some(c.run_as_group),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            containers: vec![container],
            volumes: Some(vols),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// The Service exposing the agent port.
pub fn service(cfg: &Resolved, s: &SandboxSpec<'_>) -> Service {
    let port = i32::from(cfg.cfg.container_port);
    Service {
        metadata: meta(service_name(s.id), cfg, s),
        spec: Some(ServiceSpec {
            type_: Some(cfg.cfg.service_type.as_str().to_owned()),
            selector: Some(BTreeMap::from([(
                "sandbox-id".to_owned(),
                s.id.to_string(),
            )])),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port,
                target_port: Some(IntOrString::Int(port)),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The NetworkPolicy: ingress to the agent port only from the configured sources,
/// egress only to the configured destinations (none by default).
pub fn network_policy(cfg: &Resolved, s: &SandboxSpec<'_>) -> NetworkPolicy {
    let np = &cfg.cfg.network_policy;
    let peers: Vec<NetworkPolicyPeer> = if np.ingress.is_empty() {
        let mut p = vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_owned(),
                    cfg.paddock_namespace.clone(),
                )])),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        }];
        if cfg.cfg.service_type == ServiceType::NodePort {
            p.extend(np.node_cidrs.iter().map(|c| NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: c.clone(),
                    except: None,
                }),
                ..NetworkPolicyPeer::default()
            }));
        }
        p
    } else {
        np.ingress
            .iter()
            .map(|src| NetworkPolicyPeer {
                namespace_selector: src.namespace.as_ref().map(|n| LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "kubernetes.io/metadata.name".to_owned(),
                        n.clone(),
                    )])),
                    ..LabelSelector::default()
                }),
                pod_selector: (!src.pod_labels.is_empty()).then(|| LabelSelector {
                    match_labels: Some(src.pod_labels.clone()),
                    ..LabelSelector::default()
                }),
                ip_block: src.cidr.as_ref().map(|c| IPBlock {
                    cidr: c.clone(),
                    except: None,
                }),
            })
            .collect()
    };
    let tcp = |p: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(p)),
        protocol: Some("TCP".to_owned()),
        ..NetworkPolicyPort::default()
    };
    let egress: Vec<NetworkPolicyEgressRule> = np
        .egress
        .iter()
        .map(|e| NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: e.cidr.clone(),
                    except: None,
                }),
                ..NetworkPolicyPeer::default()
            }]),
            ports: (!e.ports.is_empty())
                .then(|| e.ports.iter().map(|p| tcp(i32::from(*p))).collect()),
        })
        .collect();
    NetworkPolicy {
        metadata: meta(policy_name(s.id), cfg, s),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "sandbox-id".to_owned(),
                    s.id.to_string(),
                )])),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(peers),
                ports: Some(vec![tcp(i32::from(cfg.cfg.container_port))]),
            }]),
            egress: Some(egress),
        }),
    }
}

/// The URL a client uses: the Service address plus the capability path `/s/{token}`.
pub fn sandbox_url(
    cfg: &Resolved,
    id: &SandboxId,
    node_host: &str,
    node_port: Option<i32>,
    token: &str,
) -> Option<String> {
    match cfg.cfg.service_type {
        ServiceType::NodePort => node_port.map(|p| format!("http://{node_host}:{p}/s/{token}")),
        ServiceType::ClusterIP => Some(format!(
            "http://{}.{}.svc.cluster.local:{}/s/{token}",
            service_name(id),
            cfg.cfg.namespace,
            cfg.cfg.container_port
        )),
    }
}
