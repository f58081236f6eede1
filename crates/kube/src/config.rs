//! The `kubernetes:` section of `paddock.yaml` and DeerFlow's provisioner environment
//! variables layered over it.
//!
//! Invariant: a [`KubeConfig`] that passed [`KubeConfig::validate`] yields a [`Resolved`]
//! whose every path is absolute and normalised and whose every value the object builders
//! use is known to be acceptable to Kubernetes (port range, service type, quantities
//! present), so building objects never fails.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How sandbox URLs reach the sandbox Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ServiceType {
    /// `http://{node_host}:{nodePort}` (DeerFlow's default).
    #[default]
    NodePort,
    /// `http://sandbox-{id}-svc.{ns}.svc.cluster.local:{port}` (in-cluster clients only).
    ClusterIP,
}

impl ServiceType {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NodePort => "NodePort",
            Self::ClusterIP => "ClusterIP",
        }
    }
}

/// CPU, memory and ephemeral storage quantities (Kubernetes syntax: `100m`, `256Mi`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    /// What the scheduler reserves.
    pub requests: BTreeMap<String, String>,
    /// The hard caps.
    pub limits: BTreeMap<String, String>,
}

impl Default for Resources {
    fn default() -> Self {
        let map = |cpu: &str, mem: &str, eph: &str| {
            BTreeMap::from([
                ("cpu".to_owned(), cpu.to_owned()),
                ("memory".to_owned(), mem.to_owned()),
                ("ephemeral-storage".to_owned(), eph.to_owned()),
            ])
        };
        Self {
            requests: map("100m", "256Mi", "500Mi"),
            limits: map("1000m", "1Gi", "500Mi"),
        }
    }
}

/// One allowed ingress source of the per-sandbox NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressSource {
    /// Pods in this namespace (by its `kubernetes.io/metadata.name` label).
    pub namespace: Option<String>,
    /// Only pods with these labels (within `namespace`, or the sandbox namespace).
    pub pod_labels: BTreeMap<String, String>,
    /// An address range (`10.0.0.0/8`).
    pub cidr: Option<String>,
}

/// One allowed egress destination.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressRule {
    /// An address range (`0.0.0.0/0` for anywhere).
    pub cidr: String,
    /// TCP ports (empty: every port).
    pub ports: Vec<u16>,
}

/// The per-sandbox NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkPolicyConfig {
    /// Make one per sandbox (default true).
    pub enabled: bool,
    /// Who may reach the agent port. Empty: the namespace Paddock runs in, plus (NodePort
    /// mode) `node_cidrs`.
    pub ingress: Vec<IngressSource>,
    /// Address ranges NodePort traffic arrives from when `ingress` is empty (kube-proxy
    /// rewrites the source to a node address). Default `0.0.0.0/0`: the gateway reaches
    /// NodePorts from outside the cluster, and the URL's secret is what guards the agent.
    pub node_cidrs: Vec<String>,
    /// Where sandboxes may connect. Empty: nowhere.
    pub egress: Vec<EgressRule>,
}

impl Default for NetworkPolicyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ingress: Vec::new(),
            node_cidrs: vec!["0.0.0.0/0".to_owned()],
            egress: Vec::new(),
        }
    }
}

/// The `kubernetes:` section of `paddock.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeConfig {
    /// Namespace of sandbox objects (`K8S_NAMESPACE`, default `deer-flow`).
    pub namespace: String,
    /// Namespace Paddock itself runs in, the default NetworkPolicy ingress source
    /// (default: `POD_NAMESPACE`, else `namespace`).
    pub paddock_namespace: Option<String>,
    /// Sandbox image; it must contain the `paddock` binary (`SANDBOX_IMAGE`).
    pub image: String,
    /// `IfNotPresent`, `Always` or `Never`.
    pub image_pull_policy: String,
    /// `NodePort` or `ClusterIP` (`SANDBOX_SERVICE_TYPE`).
    pub service_type: ServiceType,
    /// Host in NodePort URLs (`NODE_HOST`, default `host.docker.internal`; empty: the
    /// first node's InternalIP).
    pub node_host: String,
    /// The agent's port in the container (`SANDBOX_CONTAINER_PORT`, default 8080).
    pub container_port: u16,
    /// API server URL overriding the kubeconfig's (`K8S_API_SERVER`).
    pub api_server: Option<String>,
    /// Kubeconfig file (`KUBECONFIG_PATH`); absent or missing: in-cluster config.
    pub kubeconfig_path: Option<PathBuf>,
    /// Skip TLS verification of the API server (DeerFlow does so whenever
    /// `K8S_API_SERVER` is set; Paddock only when asked).
    pub insecure_skip_tls_verify: bool,
    /// Host directory shared by the gateway and the nodes (`DEER_FLOW_HOST_BASE_DIR`,
    /// default `/.deer-flow`); user data lives at `{base}/users/{u}/threads/{t}/user-data`
    /// and extra mounts must lie under it.
    pub host_base_dir: String,
    /// Global skills directory on the nodes, mounted at `/mnt/skills` (`SKILLS_HOST_PATH`,
    /// default `{base}/skills_view`: the gateway's global projection, holding `public/`).
    pub skills_host_path: Option<String>,
    /// DeerFlow's legacy threads directory (`THREADS_HOST_PATH`); only used to derive the
    /// host base when `host_base_dir` is empty and its last segment is `threads`.
    pub threads_host_path: Option<String>,
    /// PVC holding skills (`SKILLS_PVC_NAME`); set: skills come from it, read-only.
    pub skills_pvc_name: Option<String>,
    /// PVC holding DeerFlow's data dir under `deer-flow/` (`USERDATA_PVC_NAME`); set: user
    /// data is its subPath `deer-flow/users/{u}/threads/{t}/user-data`.
    pub userdata_pvc_name: Option<String>,
    /// Container resources.
    pub resources: Resources,
    /// The per-sandbox NetworkPolicy.
    pub network_policy: NetworkPolicyConfig,
    /// UID the sandbox runs as (non-root).
    pub run_as_user: i64,
    /// GID the sandbox runs as.
    pub run_as_group: i64,
    /// Container paths extra mounts may target (default: DeerFlow's
    /// `ALLOWED_EXTRA_MOUNT_PATHS`, all seven; list fewer to refuse some). `/mnt/user-data`
    /// and everything under it can never be allowed.
    pub allowed_extra_mount_paths: Vec<String>,
    /// Most extra mounts per sandbox (DeerFlow: 10).
    pub max_extra_mounts: usize,
    /// Bound on every API call, in seconds.
    pub request_timeout_secs: u64,
    /// How long create waits for the Pod to be Ready before answering `Pending`.
    pub ready_timeout_secs: u64,
}

/// The container paths DeerFlow's gateway forwards as extra mounts with every create,
/// exactly the set its own provisioner accepts (`ALLOWED_EXTRA_MOUNT_PATHS`): a gateway
/// mount at a path Paddock also mounts (`/mnt/acp-workspace`, `/mnt/skills/custom`)
/// replaces Paddock's (see [`crate::objects`]).
pub const DEFAULT_EXTRA_MOUNT_PATHS: &[&str] = paddock_core::mount::GATEWAY_MOUNT_PATHS;

/// Container paths no extra mount may take or nest under: the thread's user data (never
/// overridable), the agent's data-dir layout, its config directory and the mountpoint
/// helpers.
pub const NEVER_ALLOWED: &[&str] = &[
    paddock_core::mount::USER_DATA,
    crate::objects::AGENT_DATA_DIR,
    crate::objects::AGENT_CONFIG_DIR,
    crate::objects::MOUNTPOINTS_DIR,
];

/// Why `path` (normalised, absolute) may not be an extra mount's container path, or
/// `None` when it may. The same rules `paddock agent` applies to the custom mounts it is
/// told about, so an allowed path never makes a Pod whose agent refuses to start.
pub fn refused_container_path(path: &str) -> Option<String> {
    if path == "/" || path == "/mnt" {
        return Some(format!("{path} is too broad"));
    }
    if let Some(r) = NEVER_ALLOWED
        .iter()
        .find(|r| path == **r || path.strip_prefix(**r).is_some_and(|x| x.starts_with('/')))
    {
        return Some(format!(
            "{r} and everything under it belong to Paddock and are never overridable"
        ));
    }
    let top = path.split('/').nth(1).unwrap_or_default();
    if paddock_core::mount::SYSTEM_DIRS.contains(&format!("/{top}").as_str())
        || top.starts_with("lib")
    {
        return Some(format!("/{top} is a system directory"));
    }
    None
}

impl Default for KubeConfig {
    fn default() -> Self {
        Self {
            namespace: "deer-flow".to_owned(),
            paddock_namespace: None,
            image: "paddock-sandbox:latest".to_owned(),
            image_pull_policy: "IfNotPresent".to_owned(),
            service_type: ServiceType::NodePort,
            node_host: "host.docker.internal".to_owned(),
            container_port: 8080,
            api_server: None,
            kubeconfig_path: None,
            insecure_skip_tls_verify: false,
            host_base_dir: "/.deer-flow".to_owned(),
            skills_host_path: None,
            threads_host_path: None,
            skills_pvc_name: None,
            userdata_pvc_name: None,
            resources: Resources::default(),
            network_policy: NetworkPolicyConfig::default(),
            run_as_user: 1000,
            run_as_group: 1000,
            allowed_extra_mount_paths: DEFAULT_EXTRA_MOUNT_PATHS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            max_extra_mounts: 10,
            request_timeout_secs: 10,
            ready_timeout_secs: 60,
        }
    }
}

/// A bad value, naming the setting (the environment variable when it came from one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct KubeConfigError {
    /// `kubernetes.container_port` or `SANDBOX_CONTAINER_PORT`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn bad(field: &str, message: impl Into<String>) -> KubeConfigError {
    KubeConfigError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Lexically normalises an absolute path (`.` dropped, `..` pops, no symlink
/// resolution: the path names a directory on a node, not here). `None` when relative or
/// containing NUL.
pub fn normalize_abs(raw: &str) -> Option<String> {
    if !raw.starts_with('/') || raw.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in raw.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A validated configuration with derived values filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The configuration as given (with environment overrides).
    pub cfg: KubeConfig,
    /// Normalised host base.
    pub host_base: String,
    /// Normalised skills host path.
    pub skills_host_path: String,
    /// Namespace allowed to reach sandboxes by default.
    pub paddock_namespace: String,
    /// Normalised extra-mount container allowlist.
    pub allowed_extra_mount_paths: Vec<String>,
}

impl KubeConfig {
    /// Applies DeerFlow's provisioner environment variables read through `vars` (empty
    /// values count as unset, as DeerFlow treats them, except where noted).
    pub fn apply_env(
        &mut self,
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), KubeConfigError> {
        let get = |k: &str| {
            vars(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if let Some(v) = get("K8S_NAMESPACE") {
            self.namespace = v;
        }
        if let Some(v) = get("POD_NAMESPACE") {
            self.paddock_namespace = Some(v);
        }
        if let Some(v) = get("SANDBOX_IMAGE") {
            self.image = v;
        }
        if let Some(v) = get("SKILLS_HOST_PATH") {
            self.skills_host_path = Some(v);
        }
        if let Some(v) = get("THREADS_HOST_PATH") {
            self.threads_host_path = Some(v);
        }
        if let Some(v) = get("SKILLS_PVC_NAME") {
            self.skills_pvc_name = Some(v);
        }
        if let Some(v) = get("USERDATA_PVC_NAME") {
            self.userdata_pvc_name = Some(v);
        }
        if let Some(v) = get("KUBECONFIG_PATH") {
            self.kubeconfig_path = Some(PathBuf::from(v));
        }
        if let Some(v) = get("NODE_HOST") {
            self.node_host = v;
        }
        if let Some(v) = get("K8S_API_SERVER") {
            self.api_server = Some(v);
        }
        if let Some(v) = get("SANDBOX_SERVICE_TYPE") {
            self.service_type = match v.as_str() {
                "NodePort" => ServiceType::NodePort,
                "ClusterIP" => ServiceType::ClusterIP,
                other => {
                    return Err(bad(
                        "SANDBOX_SERVICE_TYPE",
                        format!("must be NodePort or ClusterIP, got {other:?}"),
                    ));
                }
            };
        }
        // DeerFlow lets an explicitly empty DEER_FLOW_HOST_BASE_DIR fall back to the
        // parent of THREADS_HOST_PATH, so "set but empty" is meaningful here.
        if let Some(v) = vars("DEER_FLOW_HOST_BASE_DIR") {
            self.host_base_dir = v.trim().to_owned();
        }
        if let Some(v) = get("SANDBOX_CONTAINER_PORT") {
            self.container_port = match v.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => {
                    return Err(bad(
                        "SANDBOX_CONTAINER_PORT",
                        format!("must be a port number 1-65535, got {v:?}"),
                    ));
                }
            };
        }
        Ok(())
    }

    /// Checks every value and derives the host base, skills path and defaults.
    pub fn validate(&self) -> Result<Resolved, KubeConfigError> {
        let f = |k: &str| format!("kubernetes.{k}");
        if !is_dns_label(&self.namespace) {
            return Err(bad(
                &f("namespace"),
                "must be a DNS-1123 label (lower-case letters, digits, '-')",
            ));
        }
        let paddock_namespace = self
            .paddock_namespace
            .clone()
            .unwrap_or_else(|| self.namespace.clone());
        if !is_dns_label(&paddock_namespace) {
            return Err(bad(&f("paddock_namespace"), "must be a DNS-1123 label"));
        }
        if self.image.trim().is_empty() {
            return Err(bad(&f("image"), "must not be empty"));
        }
        if !["IfNotPresent", "Always", "Never"].contains(&self.image_pull_policy.as_str()) {
            return Err(bad(
                &f("image_pull_policy"),
                "must be IfNotPresent, Always or Never",
            ));
        }
        if self.container_port == 0 {
            return Err(bad(&f("container_port"), "must be 1-65535"));
        }
        if self.run_as_user <= 0 {
            return Err(bad(&f("run_as_user"), "must be a non-root uid (> 0)"));
        }
        if self.run_as_group < 0 {
            return Err(bad(&f("run_as_group"), "must be >= 0"));
        }
        if self.request_timeout_secs == 0 {
            return Err(bad(&f("request_timeout_secs"), "must be at least 1"));
        }
        if let Some(u) = &self.api_server
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(bad(&f("api_server"), "must be an http:// or https:// URL"));
        }
        for (k, v) in [
            ("skills_pvc_name", &self.skills_pvc_name),
            ("userdata_pvc_name", &self.userdata_pvc_name),
        ] {
            if let Some(n) = v
                && !is_dns_subdomain(n)
            {
                return Err(bad(&f(k), "must be a DNS-1123 subdomain (a PVC name)"));
            }
        }
        let host_base = if self.host_base_dir.is_empty() {
            let threads = self.threads_host_path.as_deref().and_then(normalize_abs);
            match threads {
                Some(t) if t.ends_with("/threads") && t != "/threads" => {
                    t[..t.len() - "/threads".len()].to_owned()
                }
                _ => {
                    return Err(bad(
                        &f("host_base_dir"),
                        "is empty and threads_host_path does not end in /threads, so the host base cannot be derived",
                    ));
                }
            }
        } else {
            normalize_abs(&self.host_base_dir)
                .ok_or_else(|| bad(&f("host_base_dir"), "must be an absolute path"))?
        };
        if host_base == "/" {
            return Err(bad(
                &f("host_base_dir"),
                "may not be / (extra mounts would reach the whole node)",
            ));
        }
        let skills_host_path = match &self.skills_host_path {
            Some(p) => normalize_abs(p)
                .ok_or_else(|| bad(&f("skills_host_path"), "must be an absolute path"))?,
            None => format!("{host_base}/skills_view"),
        };
        for (k, q) in self
            .resources
            .requests
            .iter()
            .chain(self.resources.limits.iter())
        {
            if q.trim().is_empty() || k.trim().is_empty() {
                return Err(bad(&f("resources"), format!("{k:?} needs a quantity")));
            }
        }
        let mut allowed = Vec::new();
        for (i, p) in self.allowed_extra_mount_paths.iter().enumerate() {
            let key = f(&format!("allowed_extra_mount_paths[{i}]"));
            if p.split('/').any(|s| s == "..") {
                return Err(bad(&key, "may not contain '..'"));
            }
            let n = normalize_abs(p).ok_or_else(|| bad(&key, "must be an absolute path"))?;
            if let Some(why) = refused_container_path(&n) {
                return Err(bad(&key, why));
            }
            if !allowed.contains(&n) {
                allowed.push(n);
            }
        }
        for (i, e) in self.network_policy.egress.iter().enumerate() {
            if !e.cidr.contains('/') {
                return Err(bad(
                    &f(&format!("network_policy.egress[{i}].cidr")),
                    "must be a CIDR (a.b.c.d/n)",
                ));
            }
        }
        for (i, s) in self.network_policy.ingress.iter().enumerate() {
            if s.namespace.is_none() && s.pod_labels.is_empty() && s.cidr.is_none() {
                return Err(bad(
                    &f(&format!("network_policy.ingress[{i}]")),
                    "needs a namespace, pod_labels or a cidr",
                ));
            }
        }
        Ok(Resolved {
            cfg: self.clone(),
            host_base,
            skills_host_path,
            paddock_namespace,
            allowed_extra_mount_paths: allowed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn deerflow_env_vars_override_the_file() {
        let mut c = KubeConfig::default();
        c.apply_env(&env(&[
            ("K8S_NAMESPACE", "sbx"),
            ("SANDBOX_IMAGE", "reg/img:1"),
            ("SKILLS_HOST_PATH", "/data/skills"),
            ("THREADS_HOST_PATH", "/data/threads"),
            ("SKILLS_PVC_NAME", "skills-pvc"),
            ("USERDATA_PVC_NAME", "ud-pvc"),
            ("KUBECONFIG_PATH", "/kube/config"),
            ("NODE_HOST", "10.0.0.5"),
            ("K8S_API_SERVER", "https://api:6443"),
            ("SANDBOX_SERVICE_TYPE", "ClusterIP"),
            ("DEER_FLOW_HOST_BASE_DIR", "/data"),
            ("SANDBOX_CONTAINER_PORT", "9000"),
        ]))
        .expect("valid env");
        assert_eq!(c.namespace, "sbx");
        assert_eq!(c.image, "reg/img:1");
        assert_eq!(c.skills_host_path.as_deref(), Some("/data/skills"));
        assert_eq!(c.threads_host_path.as_deref(), Some("/data/threads"));
        assert_eq!(c.skills_pvc_name.as_deref(), Some("skills-pvc"));
        assert_eq!(c.userdata_pvc_name.as_deref(), Some("ud-pvc"));
        assert_eq!(c.kubeconfig_path, Some(PathBuf::from("/kube/config")));
        assert_eq!(c.node_host, "10.0.0.5");
        assert_eq!(c.api_server.as_deref(), Some("https://api:6443"));
        assert_eq!(c.service_type, ServiceType::ClusterIP);
        assert_eq!(c.host_base_dir, "/data");
        assert_eq!(c.container_port, 9000);
        let r = c.validate().expect("valid");
        assert_eq!(r.host_base, "/data");
        assert_eq!(r.skills_host_path, "/data/skills");
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let mut c = KubeConfig::default();
        let e = c
            .apply_env(&env(&[("SANDBOX_SERVICE_TYPE", "LoadBalancer")]))
            .expect_err("refused");
        assert_eq!(e.field, "SANDBOX_SERVICE_TYPE");
        let e = c
            .apply_env(&env(&[("SANDBOX_CONTAINER_PORT", "70000")]))
            .expect_err("refused");
        assert_eq!(e.field, "SANDBOX_CONTAINER_PORT");
    }

    #[test]
    fn empty_host_base_falls_back_to_the_threads_parent() {
        let mut c = KubeConfig::default();
        c.apply_env(&env(&[
            ("DEER_FLOW_HOST_BASE_DIR", ""),
            ("THREADS_HOST_PATH", "/srv/df/threads/"),
        ]))
        .expect("valid");
        assert_eq!(c.validate().expect("valid").host_base, "/srv/df");
        c.threads_host_path = Some("/srv/df/data".into());
        assert_eq!(
            c.validate().expect_err("refused").field,
            "kubernetes.host_base_dir"
        );
    }

    #[test]
    fn yaml_section_rejects_unknown_keys() {
        let c: KubeConfig =
            serde_norway::from_str("namespace: x\nservice_type: ClusterIP\n").expect("parses");
        assert_eq!(c.service_type, ServiceType::ClusterIP);
        assert!(serde_norway::from_str::<KubeConfig>("namespce: x\n").is_err());
    }

    #[test]
    fn normalisation_is_lexical() {
        assert_eq!(normalize_abs("/a/./b/../c/").as_deref(), Some("/a/c"));
        assert_eq!(normalize_abs("/../..").as_deref(), Some("/"));
        assert_eq!(normalize_abs("rel/x"), None);
    }

    #[test]
    fn defaults_follow_deerflows_provisioner() {
        let r = KubeConfig {
            host_base_dir: "/df".into(),
            ..KubeConfig::default()
        }
        .validate()
        .expect("valid");
        assert_eq!(r.skills_host_path, "/df/skills_view");
        assert_eq!(
            r.allowed_extra_mount_paths,
            paddock_core::mount::GATEWAY_MOUNT_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect::<Vec<_>>()
        );
        let mut c = KubeConfig::default();
        c.apply_env(&env(&[("SKILLS_HOST_PATH", "/srv/skills/")]))
            .expect("valid");
        assert_eq!(c.validate().expect("valid").skills_host_path, "/srv/skills");
    }

    #[test]
    fn allowed_extra_mount_paths_never_reach_user_data_or_the_agent() {
        for (p, why) in [
            ("/mnt/user-data", "never overridable"),
            ("/mnt/user-data/outputs/", "never overridable"),
            ("/var/lib/paddock/skills", "never overridable"),
            ("/etc/paddock", "never overridable"),
            ("/etc/ssl", "system directory"),
            ("/lib64/x", "system directory"),
            ("/", "too broad"),
            ("/mnt/", "too broad"),
            ("/mnt/x/../user-data", "'..'"),
            ("relative", "absolute"),
        ] {
            let c = KubeConfig {
                allowed_extra_mount_paths: vec!["/mnt/acp-workspace".into(), p.into()],
                ..KubeConfig::default()
            };
            let e = c.validate().expect_err(p);
            assert_eq!(e.field, "kubernetes.allowed_extra_mount_paths[1]", "{p}");
            assert!(e.message.contains(why), "{p}: {e}");
        }
        let c = KubeConfig {
            allowed_extra_mount_paths: vec!["/mnt/skills/custom/".into(), "/opt/data".into()],
            ..KubeConfig::default()
        };
        assert_eq!(
            c.validate().expect("valid").allowed_extra_mount_paths,
            ["/mnt/skills/custom", "/opt/data"]
        );
    }

    #[test]
    fn invalid_values_are_refused_with_their_key() {
        let mut c = KubeConfig {
            namespace: "Bad_NS".into(),
            ..KubeConfig::default()
        };
        assert_eq!(c.validate().expect_err("bad").field, "kubernetes.namespace");
        c.namespace = "ok".into();
        c.host_base_dir = "/".into();
        assert_eq!(
            c.validate().expect_err("bad").field,
            "kubernetes.host_base_dir"
        );
        c.host_base_dir = "/b".into();
        c.run_as_user = 0;
        assert_eq!(
            c.validate().expect_err("bad").field,
            "kubernetes.run_as_user"
        );
    }
}
