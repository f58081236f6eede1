//! Pure builders of the Kubernetes objects of one sandbox: Secret `sandbox-{id}-token`,
//! Pod `sandbox-{id}`, Service `sandbox-{id}-svc` and NetworkPolicy `sandbox-{id}-net`.
//!
//! Invariant: the same inputs give byte-identical objects (no clock, no randomness; the
//! token is an input), every mountPath in the Pod is distinct and comes after the mount
//! it nests in, user data is always user-scoped (`users/{user}/threads/{thread}/user-data`)
//! in hostPath and PVC mode, and the in-Pod agent's mount table holds every mount the
//! container has: each is mirrored into the agent's data-dir layout ([`agent_mirror`]) or
//! described to the agent as a custom mount in its config (a downwardAPI file of the Pod's
//! [`AGENT_CONFIG_ANNOTATION`]).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, HTTPHeader, HostPathVolumeSource, ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, Probe,
    ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use paddock_core::mount::{ACP_WORKSPACE, CUSTOM_SKILLS, LEGACY_SKILLS, SKILLS, USER_DATA};
use paddock_core::{MountSpec, SandboxId, ThreadId, UserId};

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
/// Where the agent's config file is mounted when the Pod has mounts the agent's own layout
/// does not cover (a downwardAPI volume of [`AGENT_CONFIG_ANNOTATION`]).
pub const AGENT_CONFIG_DIR: &str = "/etc/paddock";
/// The agent's config file in [`AGENT_CONFIG_DIR`] (`paddock agent --config`).
pub const AGENT_CONFIG_FILE: &str = "paddock.yaml";
/// Pod annotation holding the agent's config (JSON, which is YAML): the mounts the agent
/// must add to its mount table as custom mounts.
pub const AGENT_CONFIG_ANNOTATION: &str = "paddock.dev/agent-config";
/// The volume of the agent's config file.
pub const AGENT_CONFIG_VOLUME: &str = "agent-config";
/// Where the mountpoint helpers are mounted (see [`mountpoint_helpers`]).
pub const MOUNTPOINTS_DIR: &str = "/run/paddock/mountpoints";

/// Where `paddock agent --data-dir` [`AGENT_DATA_DIR`] keeps the directory its own mount
/// table maps container path `path` to (user data, the ACP workspace, skills and custom
/// skills, and anything under them), or `None` for a path its layout does not cover. A
/// volume mounted at `path` is mounted there too, so the agent's file API and its commands
/// (which it runs with paths rewritten into its layout) see the same directory.
pub fn agent_mirror(path: &str, user: &UserId, thread: &ThreadId) -> Option<String> {
    let (u, t) = (user.as_str(), thread.as_str());
    // Longest prefix first: /mnt/skills/custom is the user's, the rest of /mnt/skills global.
    let layout = [
        (USER_DATA, format!("users/{u}/threads/{t}/user-data")),
        (
            ACP_WORKSPACE,
            format!("users/{u}/threads/{t}/acp-workspace"),
        ),
        (CUSTOM_SKILLS, format!("users/{u}/skills/custom")),
        (SKILLS, "skills".to_owned()),
    ];
    layout.iter().find_map(|(prefix, rel)| {
        let rest = path.strip_prefix(prefix)?;
        (rest.is_empty() || rest.starts_with('/')).then(|| format!("{AGENT_DATA_DIR}/{rel}{rest}"))
    })
}

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

/// One mount of the container before mirroring: a volume (with subPath) at a path.
struct Placed {
    volume: String,
    path: String,
    read_only: bool,
    sub_path: Option<String>,
}

/// What the container mounts and what the agent must be told.
struct Mounts {
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
    /// Mounts the agent's layout does not cover, for its config (identity: the container
    /// path is both the "host" path the agent sees and the virtual path).
    agent_custom: Vec<MountSpec>,
}

/// Volumes and mounts, laid out as DeerFlow's provisioner lays them out (hostPath mode):
///
/// | container path | hostPath mode | `USERDATA_PVC_NAME` (subPath of the claim) |
/// | --- | --- | --- |
/// | `/mnt/skills` (ro) | `SKILLS_HOST_PATH` or `{base}/skills_view` (or `SKILLS_PVC_NAME`) | same |
/// | `/mnt/skills/custom` (ro) | `{base}/users/{u}/skills_view/custom` | `deer-flow/users/{u}/skills_view/custom` |
/// | `/mnt/skills/legacy` (ro) | `{base}/users/{u}/skills_view/legacy` | `deer-flow/users/{u}/skills_view/legacy` |
/// | `/mnt/user-data` | `{base}/users/{u}/threads/{t}/user-data` | `deer-flow/users/{u}/threads/{t}/user-data` |
/// | `/mnt/acp-workspace` (ro) | `{base}/users/{u}/threads/{t}/acp-workspace` | `deer-flow/users/{u}/threads/{t}/acp-workspace` |
///
/// then the validated extra mounts (`extra-{i}`); an extra mount at a built-in's path
/// replaces it (its volume goes when nothing else uses it). Every mount is mirrored at
/// [`agent_mirror`] or given to the agent as a custom mount; mounts are sorted by path, so
/// a mount always follows the one it nests in.
fn volumes(cfg: &Resolved, s: &SandboxSpec<'_>) -> Mounts {
    let (u, t) = (s.user.as_str(), s.thread.as_str());
    let user_rel = format!("users/{u}/threads/{t}/user-data");
    let acp_rel = format!("users/{u}/threads/{t}/acp-workspace");
    let custom_rel = format!("users/{u}/skills_view/custom");
    let legacy_rel = format!("users/{u}/skills_view/legacy");
    let place = |volume: &str, path: &str, read_only: bool, sub_path: Option<String>| Placed {
        volume: volume.to_owned(),
        path: path.to_owned(),
        read_only,
        sub_path,
    };
    let mut vols = Vec::new();
    let mut placed = Vec::new();
    match &cfg.cfg.skills_pvc_name {
        Some(claim) => vols.push(pvc_volume("skills", claim, true)),
        None => vols.push(host_path_volume(
            "skills",
            cfg.skills_host_path.clone(),
            "DirectoryOrCreate",
        )),
    }
    placed.push(place("skills", SKILLS, true, None));
    match &cfg.cfg.userdata_pvc_name {
        Some(claim) => {
            vols.push(pvc_volume("user-data", claim, false));
            let sub = |rel: &str| Some(format!("deer-flow/{rel}"));
            placed.push(place("user-data", USER_DATA, false, sub(&user_rel)));
            placed.push(place("user-data", ACP_WORKSPACE, true, sub(&acp_rel)));
            placed.push(place("user-data", CUSTOM_SKILLS, true, sub(&custom_rel)));
            placed.push(place("user-data", LEGACY_SKILLS, true, sub(&legacy_rel)));
        }
        None => {
            let base = &cfg.host_base;
            for (name, path, rel, read_only) in [
                ("user-data", USER_DATA, &user_rel, false),
                ("acp-workspace", ACP_WORKSPACE, &acp_rel, true),
                ("skills-custom", CUSTOM_SKILLS, &custom_rel, true),
                ("skills-legacy", LEGACY_SKILLS, &legacy_rel, true),
            ] {
                vols.push(host_path_volume(
                    name,
                    format!("{base}/{rel}"),
                    "DirectoryOrCreate",
                ));
                placed.push(place(name, path, read_only, None));
            }
        }
    }
    // A mount the gateway manages replaces Paddock's at the same path: the gateway knows
    // the directory it means (its projection of the user's skills, the ACP workspace it
    // writes). User data is never replaced (validation refuses those paths).
    placed.retain(|b| !s.extra.iter().any(|e| e.container_path == b.path));
    for (i, e) in s.extra.iter().enumerate() {
        let name = format!("extra-{i}");
        match &cfg.cfg.userdata_pvc_name {
            Some(claim) => {
                vols.push(pvc_volume(&name, claim, e.read_only));
                placed.push(place(
                    &name,
                    &e.container_path,
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
                placed.push(place(&name, &e.container_path, e.read_only, None));
            }
        }
    }
    let mut mounts = Vec::new();
    let mut agent_custom = Vec::new();
    for p in &placed {
        mounts.push(mount(
            &p.volume,
            p.path.clone(),
            p.read_only,
            p.sub_path.clone(),
        ));
        match agent_mirror(&p.path, s.user, s.thread) {
            Some(m) => mounts.push(mount(&p.volume, m, p.read_only, p.sub_path.clone())),
            None => agent_custom.push(MountSpec {
                host_path: p.path.clone(),
                container_path: p.path.clone(),
                read_only: p.read_only,
            }),
        }
    }
    if !agent_custom.is_empty() {
        vols.push(Volume {
            name: AGENT_CONFIG_VOLUME.to_owned(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: AGENT_CONFIG_FILE.to_owned(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: format!("metadata.annotations['{AGENT_CONFIG_ANNOTATION}']"),
                        ..ObjectFieldSelector::default()
                    }),
                    ..DownwardAPIVolumeFile::default()
                }]),
                ..DownwardAPIVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(mount(
            AGENT_CONFIG_VOLUME,
            AGENT_CONFIG_DIR.to_owned(),
            true,
            None,
        ));
    }
    vols.retain(|v| mounts.iter().any(|m| m.name == v.name));
    let helpers = mountpoint_helpers(&vols, &mounts);
    mounts.extend(helpers);
    // Byte order puts a path before every path under it (a prefix sorts first), so a nested
    // mount (`config/locks` in `config`) is made after its parent.
    mounts.sort_by(|a, b| a.mount_path.cmp(&b.mount_path));
    Mounts {
        volumes: vols,
        mounts,
        agent_custom,
    }
}

/// The directory behind a mount as the node sees it (`hostPath` path or `pvc:{claim}`,
/// plus the subPath), for the volume kinds Paddock uses.
fn source_of(vols: &[Volume], m: &VolumeMount) -> Option<String> {
    let v = vols.iter().find(|v| v.name == m.name)?;
    let base = match (&v.host_path, &v.persistent_volume_claim) {
        (Some(h), _) => h.path.clone(),
        (None, Some(c)) => format!("pvc:{}", c.claim_name),
        _ => return None,
    };
    Some(match &m.sub_path {
        Some(sub) => format!("{base}/{sub}"),
        None => base,
    })
}

/// Mounts that make the kubelet create the mountpoints nested mounts need inside a
/// read-only hostPath parent. The container runtime mounts a read-only parent
/// (`/mnt/skills`, from the gateway's `skills_view`) before its children and then has to
/// make each child's mountpoint in it, which fails (`mkdir ...: read-only file system`)
/// when the parent's directory lacks it: DeerFlow's global `skills_view` holds only
/// `public/`. For each such child this mounts the parent's volume with subPath
/// `{child's path below the parent}` (read-only) under [`MOUNTPOINTS_DIR`], and the
/// kubelet creates a missing subPath directory on the node before the container starts.
/// A child whose own directory is the parent's subdirectory (`config/locks` in `config`)
/// needs none, and PVC parents are left alone (a read-only claim cannot be written; the
/// skills PVC must hold the mountpoints).
fn mountpoint_helpers(vols: &[Volume], mounts: &[VolumeMount]) -> Vec<VolumeMount> {
    let mut needed: Vec<(String, String)> = Vec::new();
    for m in mounts {
        let parent = mounts
            .iter()
            .filter(|p| {
                m.mount_path
                    .strip_prefix(&p.mount_path)
                    .is_some_and(|r| r.starts_with('/'))
            })
            .max_by_key(|p| p.mount_path.len());
        let Some(parent) = parent.filter(|p| p.read_only == Some(true)) else {
            continue;
        };
        let is_host_path = vols
            .iter()
            .any(|v| v.name == parent.name && v.host_path.is_some());
        let (Some(ps), Some(ms)) = (source_of(vols, parent), source_of(vols, m)) else {
            continue;
        };
        let rel = &m.mount_path[parent.mount_path.len() + 1..];
        if !is_host_path || ms == format!("{ps}/{rel}") {
            continue;
        }
        let sub = match &parent.sub_path {
            Some(s) => format!("{s}/{rel}"),
            None => rel.to_owned(),
        };
        needed.push((parent.name.clone(), sub));
    }
    // Numbered in a fixed order, whatever order the mounts came in.
    needed.sort();
    needed.dedup();
    needed
        .into_iter()
        .enumerate()
        .map(|(i, (volume, sub))| mount(&volume, format!("{MOUNTPOINTS_DIR}/{i}"), true, Some(sub)))
        .collect()
}

/// The agent's config (JSON, which its YAML loader reads) when it must learn of mounts
/// its layout does not cover: each as a custom mount whose host path is its own container
/// path, allowed as its own root.
fn agent_config(custom: &[MountSpec]) -> Option<String> {
    if custom.is_empty() {
        return None;
    }
    let roots: Vec<&str> = custom.iter().map(|m| m.host_path.as_str()).collect();
    Some(
        serde_json::json!({
            "mounts": {
                "allowed_host_roots": roots,
                "custom": custom,
            }
        })
        .to_string(),
    )
}

/// The sandbox Pod: one container running `paddock agent` under the restricted profile.
pub fn pod(cfg: &Resolved, s: &SandboxSpec<'_>) -> Pod {
    let c = &cfg.cfg;
    let Mounts {
        volumes: vols,
        mounts,
        agent_custom,
    } = volumes(cfg, s);
    let agent_cfg = agent_config(&agent_custom);
    let mut args: Vec<String> = vec!["agent".into()];
    if agent_cfg.is_some() {
        args.push("--config".into());
        args.push(format!("{AGENT_CONFIG_DIR}/{AGENT_CONFIG_FILE}"));
    }
    let mut metadata = meta(pod_name(s.id), cfg, s);
    if let (Some(text), Some(a)) = (agent_cfg, metadata.annotations.as_mut()) {
        a.insert(AGENT_CONFIG_ANNOTATION.to_owned(), text);
    }
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(c.image.clone()),
        image_pull_policy: Some(c.image_pull_policy.clone()),
        command: Some(vec!["paddock".to_owned()]),
        args: Some(
            args.into_iter()
                .chain([
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
                ])
                .collect(),
        ),
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
        metadata,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KubeConfig;
    use crate::mounts::tests::deerflow_payload;
    use crate::mounts::validate_extra_mounts;

    fn ids() -> (SandboxId, UserId, ThreadId) {
        (
            SandboxId::new("abc123").expect("id"),
            UserId::new("user-7").expect("user"),
            ThreadId::new("thread-42").expect("thread"),
        )
    }

    fn cfg(pvc: bool) -> Resolved {
        KubeConfig {
            host_base_dir: "/df".into(),
            userdata_pvc_name: pvc.then(|| "data".to_owned()),
            ..KubeConfig::default()
        }
        .validate()
        .expect("valid")
    }

    fn build(cfg: &Resolved, extra: &[MountSpec]) -> Pod {
        let (id, u, t) = ids();
        let extra = validate_extra_mounts(extra, &u, cfg).expect("valid");
        pod(
            cfg,
            &SandboxSpec {
                id: &id,
                user: &u,
                thread: &t,
                token: "tok",
                extra: &extra,
            },
        )
    }

    /// `(mountPath, volume, readOnly, subPath)` in order.
    fn mounts_of(p: &Pod) -> Vec<(String, String, bool, Option<String>)> {
        p.spec.as_ref().expect("spec").containers[0]
            .volume_mounts
            .as_ref()
            .expect("mounts")
            .iter()
            .map(|m| {
                (
                    m.mount_path.clone(),
                    m.name.clone(),
                    m.read_only == Some(true),
                    m.sub_path.clone(),
                )
            })
            .collect()
    }

    fn volume<'a>(p: &'a Pod, name: &str) -> Option<&'a Volume> {
        p.spec
            .as_ref()?
            .volumes
            .as_ref()?
            .iter()
            .find(|v| v.name == name)
    }

    fn at<'a>(
        m: &'a [(String, String, bool, Option<String>)],
        path: &str,
    ) -> &'a (String, String, bool, Option<String>) {
        m.iter()
            .find(|x| x.0 == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}: {m:?}"))
    }

    #[test]
    fn mirrors_follow_the_agents_layout() {
        let (_, u, t) = ids();
        let m = |p: &str| agent_mirror(p, &u, &t);
        assert_eq!(
            m("/mnt/user-data").as_deref(),
            Some("/var/lib/paddock/users/user-7/threads/thread-42/user-data")
        );
        assert_eq!(
            m("/mnt/acp-workspace").as_deref(),
            Some("/var/lib/paddock/users/user-7/threads/thread-42/acp-workspace")
        );
        assert_eq!(
            m("/mnt/skills/custom").as_deref(),
            Some("/var/lib/paddock/users/user-7/skills/custom")
        );
        assert_eq!(m("/mnt/skills").as_deref(), Some("/var/lib/paddock/skills"));
        assert_eq!(
            m("/mnt/skills/integrations").as_deref(),
            Some("/var/lib/paddock/skills/integrations")
        );
        assert_eq!(m("/mnt/skills-x"), None);
        assert_eq!(m("/mnt/integrations/lark-cli/config"), None);
    }

    #[test]
    fn built_in_layout_without_gateway_mounts() {
        let p = build(&cfg(false), &[]);
        let m = mounts_of(&p);
        let host = |name: &str| {
            volume(&p, name)
                .and_then(|v| v.host_path.as_ref())
                .map(|h| h.path.clone())
        };
        assert_eq!(host("skills").as_deref(), Some("/df/skills_view"));
        assert_eq!(
            host("skills-custom").as_deref(),
            Some("/df/users/user-7/skills_view/custom")
        );
        assert_eq!(
            host("skills-legacy").as_deref(),
            Some("/df/users/user-7/skills_view/legacy")
        );
        assert_eq!(
            host("acp-workspace").as_deref(),
            Some("/df/users/user-7/threads/thread-42/acp-workspace")
        );
        for (path, vol, ro) in [
            ("/mnt/skills", "skills", true),
            ("/mnt/skills/custom", "skills-custom", true),
            ("/mnt/skills/legacy", "skills-legacy", true),
            ("/mnt/acp-workspace", "acp-workspace", true),
            ("/mnt/user-data", "user-data", false),
            ("/var/lib/paddock/skills/legacy", "skills-legacy", true),
            (
                "/var/lib/paddock/users/user-7/skills/custom",
                "skills-custom",
                true,
            ),
            (
                "/var/lib/paddock/users/user-7/threads/thread-42/acp-workspace",
                "acp-workspace",
                true,
            ),
        ] {
            let x = at(&m, path);
            assert_eq!((x.1.as_str(), x.2), (vol, ro), "{path}");
        }
        // custom and legacy are mounted in the read-only /mnt/skills: the kubelet makes their
        // mountpoints in the skills directory (subPath mounts of the skills volume).
        for (i, sub) in ["custom", "legacy"].iter().enumerate() {
            let x = at(&m, &format!("/run/paddock/mountpoints/{i}"));
            assert_eq!(
                (x.1.as_str(), x.2, x.3.as_deref()),
                ("skills", true, Some(*sub))
            );
        }
        assert!(
            !m.iter().any(|x| x.0 == "/run/paddock/mountpoints/2"),
            "one helper per mountpoint: {m:?}"
        );
        // Nothing for the agent's config: its layout covers every mount.
        assert!(volume(&p, AGENT_CONFIG_VOLUME).is_none());
        assert!(
            p.metadata
                .annotations
                .as_ref()
                .expect("annotations")
                .get(AGENT_CONFIG_ANNOTATION)
                .is_none()
        );
        let args = p.spec.as_ref().expect("spec").containers[0]
            .args
            .clone()
            .expect("args");
        assert!(!args.contains(&"--config".to_owned()), "{args:?}");
    }

    #[test]
    fn gateway_mounts_replace_built_ins_and_their_mirrors() {
        let p = build(&cfg(false), &deerflow_payload("/df", "user-7", "thread-42"));
        let m = mounts_of(&p);
        // The built-in custom skills and ACP volumes are gone; the gateway's are used at
        // both the DeerFlow path and the agent's mirror.
        assert!(volume(&p, "skills-custom").is_none());
        assert!(volume(&p, "acp-workspace").is_none());
        for (path, vol) in [
            ("/mnt/acp-workspace", "extra-0"),
            (
                "/var/lib/paddock/users/user-7/threads/thread-42/acp-workspace",
                "extra-0",
            ),
            ("/mnt/skills/custom", "extra-1"),
            ("/var/lib/paddock/users/user-7/skills/custom", "extra-1"),
            ("/mnt/skills/integrations", "extra-2"),
            ("/var/lib/paddock/skills/integrations", "extra-2"),
            ("/mnt/integrations/lark-cli/config", "extra-3"),
            ("/mnt/integrations/lark-cli/config/locks", "extra-4"),
            ("/mnt/integrations/lark-cli/data", "extra-5"),
            ("/mnt/integrations/lark-cli/runtime", "extra-6"),
            ("/mnt/skills/legacy", "skills-legacy"),
            ("/mnt/skills", "skills"),
        ] {
            assert_eq!(at(&m, path).1, vol, "{path}");
        }
        let custom = volume(&p, "extra-1")
            .and_then(|v| v.host_path.as_ref())
            .expect("hostPath");
        assert_eq!(custom.path, "/df/users/user-7/skills_view/custom");
        assert_eq!(custom.type_.as_deref(), Some("Directory"));
        let locks = volume(&p, "extra-4")
            .and_then(|v| v.host_path.as_ref())
            .expect("hostPath");
        assert_eq!(locks.type_.as_deref(), Some("DirectoryOrCreate"));
        assert!(
            at(&m, "/mnt/integrations/lark-cli/config").2,
            "config read-only"
        );
        assert!(
            !at(&m, "/mnt/integrations/lark-cli/config/locks").2,
            "locks writable"
        );
        // Mountpoints in the read-only skills directory; none for config/locks, whose own
        // directory is config's subdirectory.
        let helpers: Vec<Option<&str>> = m
            .iter()
            .filter(|x| x.0.starts_with(MOUNTPOINTS_DIR))
            .map(|x| {
                assert_eq!(x.1, "skills", "{x:?}");
                x.3.as_deref()
            })
            .collect();
        assert_eq!(
            helpers,
            [Some("custom"), Some("integrations"), Some("legacy")]
        );
        // Each path once, and every mount after the one it nests in.
        let paths: Vec<&str> = m.iter().map(|x| x.0.as_str()).collect();
        for (i, a) in paths.iter().enumerate() {
            for b in &paths[i + 1..] {
                assert_ne!(a, b, "duplicate mountPath");
                assert!(
                    !a.starts_with(&format!("{b}/")),
                    "{a} is mounted before its parent {b}"
                );
            }
        }
        // The four lark-cli paths are not in the agent's layout: its config names them.
        let args = p.spec.as_ref().expect("spec").containers[0]
            .args
            .clone()
            .expect("args");
        assert_eq!(
            args[..3],
            ["agent", "--config", "/etc/paddock/paddock.yaml"]
        );
        assert_eq!(at(&m, "/etc/paddock").1, AGENT_CONFIG_VOLUME);
        let text = &p.metadata.annotations.as_ref().expect("annotations")[AGENT_CONFIG_ANNOTATION];
        let conf: serde_json::Value = serde_json::from_str(text).expect("json");
        let custom: Vec<(&str, &str, bool)> = conf["mounts"]["custom"]
            .as_array()
            .expect("custom")
            .iter()
            .map(|c| {
                (
                    c["host_path"].as_str().expect("host"),
                    c["container_path"].as_str().expect("container"),
                    c["read_only"].as_bool().expect("ro"),
                )
            })
            .collect();
        assert_eq!(
            custom,
            [
                (
                    "/mnt/integrations/lark-cli/config",
                    "/mnt/integrations/lark-cli/config",
                    true
                ),
                (
                    "/mnt/integrations/lark-cli/config/locks",
                    "/mnt/integrations/lark-cli/config/locks",
                    false
                ),
                (
                    "/mnt/integrations/lark-cli/data",
                    "/mnt/integrations/lark-cli/data",
                    false
                ),
                (
                    "/mnt/integrations/lark-cli/runtime",
                    "/mnt/integrations/lark-cli/runtime",
                    true
                ),
            ]
        );
        assert_eq!(
            conf["mounts"]["allowed_host_roots"]
                .as_array()
                .expect("roots")
                .len(),
            4
        );
        let dapi = volume(&p, AGENT_CONFIG_VOLUME)
            .and_then(|v| v.downward_api.as_ref())
            .expect("downwardAPI");
        let item = &dapi.items.as_ref().expect("items")[0];
        assert_eq!(item.path, "paddock.yaml");
        assert_eq!(
            item.field_ref.as_ref().expect("fieldRef").field_path,
            "metadata.annotations['paddock.dev/agent-config']"
        );
    }

    #[test]
    fn pvc_mode_uses_subpaths_and_keeps_a_shared_volume() {
        let p = build(
            &cfg(true),
            &deerflow_payload("/df", "user-7", "thread-42")[1..2],
        );
        let m = mounts_of(&p);
        let sub = |path: &str| at(&m, path).3.clone();
        assert_eq!(
            sub("/mnt/skills/custom").as_deref(),
            Some("deer-flow/users/user-7/skills_view/custom")
        );
        assert_eq!(at(&m, "/mnt/skills/custom").1, "extra-0");
        assert_eq!(
            sub("/var/lib/paddock/users/user-7/skills/custom").as_deref(),
            Some("deer-flow/users/user-7/skills_view/custom")
        );
        assert_eq!(
            sub("/mnt/skills/legacy").as_deref(),
            Some("deer-flow/users/user-7/skills_view/legacy")
        );
        assert_eq!(
            sub("/mnt/acp-workspace").as_deref(),
            Some("deer-flow/users/user-7/threads/thread-42/acp-workspace")
        );
        assert_eq!(at(&m, "/mnt/acp-workspace").1, "user-data");
        // The user-data volume still backs user data, the ACP workspace and legacy skills.
        assert!(volume(&p, "user-data").is_some());
        assert!(volume(&p, "skills-custom").is_none());
        // The skills hostPath still gets its mountpoints; the claim needs none.
        assert_eq!(
            m.iter()
                .filter(|x| x.0.starts_with(MOUNTPOINTS_DIR))
                .map(|x| (x.1.as_str(), x.3.as_deref()))
                .collect::<Vec<_>>(),
            [("skills", Some("custom")), ("skills", Some("legacy"))]
        );
        let claim = volume(&p, "extra-0")
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .expect("pvc");
        assert_eq!(
            (claim.claim_name.as_str(), claim.read_only),
            ("data", Some(true))
        );
    }
}
