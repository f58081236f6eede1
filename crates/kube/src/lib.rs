//! Paddock's Kubernetes backend: each sandbox is a Pod `sandbox-{id}` running
//! `paddock agent`, a Service `sandbox-{id}-svc`, a Secret `sandbox-{id}-token` holding the
//! agent's capability token and a NetworkPolicy `sandbox-{id}-net`, made through kube-rs.
//!
//! Invariant: the objects are built by pure functions ([`objects`]) from a validated
//! configuration ([`config::Resolved`]) and validated extra mounts ([`mounts`]), so what
//! reaches the API server is exactly what the snapshot tests show.

pub mod backend;
pub mod config;
pub mod mounts;
pub mod objects;

pub use backend::KubeBackend;
pub use config::{KubeConfig, KubeConfigError, ServiceType};

const MANIFESTS: &[&str] = &[
    include_str!("../../../deploy/kubernetes/namespace.yaml"),
    include_str!("../../../deploy/kubernetes/rbac.yaml"),
    include_str!("../../../deploy/kubernetes/configmap.yaml"),
    include_str!("../../../deploy/kubernetes/deployment.yaml"),
    include_str!("../../../deploy/kubernetes/service.yaml"),
];

/// The deployment manifests of `deploy/kubernetes/` as one multi-document YAML stream
/// (`paddock kube manifests | kubectl apply -f -`).
pub fn manifests() -> String {
    let mut out = String::new();
    for m in MANIFESTS {
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(m.trim_start_matches("---\n"));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn manifests_hold_every_deployment_object() {
        let m = super::manifests();
        for kind in [
            "Namespace",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ConfigMap",
            "Deployment",
            "Service",
        ] {
            assert!(m.contains(&format!("kind: {kind}\n")), "{kind} missing");
        }
        let docs: Vec<serde_norway::Value> = m
            .split("\n---\n")
            .map(|d| serde_norway::from_str(d).expect("each document parses"))
            .collect();
        assert_eq!(docs.len(), 7, "one document per object");
    }
}
