//! What a create must satisfy before it is stored, as the API server checks it: object
//! names (RFC 1123), the namespace of the body against the request's, Pod specs
//! (volumes, containers, mounts); and the defaults filled in on the way (Pod and PVC
//! status, Service addresses through [`crate::ports`]).
//!
//! Invariant: a refused object is answered with a `Status` naming the problem (a 422
//! `Invalid` lists every problem found in a Pod spec) and nothing is stored.

// Handlers return ready `Response`s as their error type: they are the HTTP answer, built
// once per failed request, so boxing them would only add an allocation.
#![allow(clippy::result_large_err)]

use std::collections::BTreeSet;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::http::{Target, status};
use crate::ports::allocate_ports;
use crate::select;
use crate::store::{Kind, Sim};

/// Checks a new object of `t`'s kind in `ns` and fills in what the server sets on create.
pub(crate) fn validate(sim: &Sim, t: &Target, obj: &mut Value, ns: &str) -> Result<(), Response> {
    let name = select::field(obj, "metadata.name").unwrap_or_default();
    let name_ok = match t.kind.plural {
        "services" | "namespaces" => is_dns_label(&name, 63),
        _ => is_dns_subdomain(&name) && !name.is_empty(),
    };
    if !name_ok {
        return Err(invalid(
            &t.kind,
            &name,
            &[format!(
                "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 name must consist of lower case alphanumeric characters, '-' or '.'"
            )],
        ));
    }
    if let Some(body_ns) = select::field(obj, "metadata.namespace")
        && t.kind.namespaced
        && body_ns != ns
    {
        return Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if t.kind.plural == "pods" {
        let causes = pod_causes(obj);
        if !causes.is_empty() {
            return Err(invalid(&t.kind, &name, &causes));
        }
        obj["status"] = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}], "qosClass": "Burstable"});
    }
    if t.kind.plural == "persistentvolumeclaims" {
        obj["status"] = json!({"phase": "Bound"});
    }
    if t.kind.plural == "services" {
        allocate_ports(sim, &t.kind, &name, obj)?;
    }
    Ok(())
}

/// A 422 `Invalid` status listing `causes`.
pub(crate) fn invalid(kind: &Kind, name: &str, causes: &[String]) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("{} \"{name}\" is invalid: {}", kind.kind, causes.join(", ")),
        "reason": "Invalid",
        "details": {"name": name, "kind": kind.plural, "causes": causes.iter().map(|c| json!({"message": c})).collect::<Vec<_>>()},
        "code": 422,
    });
    (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response()
}

fn is_dns_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    (1..=max).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|l| is_dns_label(l, 63))
}

fn pod_causes(obj: &Value) -> Vec<String> {
    let mut causes = Vec::new();
    let spec = &obj["spec"];
    let volumes: Vec<String> = spec["volumes"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|v| v["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut seen_vol = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        if !is_dns_label(v, 63) {
            causes.push(format!("spec.volumes[{i}].name: Invalid value: {v:?}"));
        }
        if !seen_vol.insert(v.clone()) {
            causes.push(format!("spec.volumes[{i}].name: Duplicate value: {v:?}"));
        }
    }
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        causes.push("spec.containers: Required value".into());
    }
    for (ci, c) in containers.iter().enumerate() {
        if c["name"].as_str().is_none_or(|n| !is_dns_label(n, 63)) {
            causes.push(format!("spec.containers[{ci}].name: Invalid value"));
        }
        if c["image"].as_str().is_none_or(str::is_empty) {
            causes.push(format!("spec.containers[{ci}].image: Required value"));
        }
        let mut paths = BTreeSet::new();
        for (mi, m) in c["volumeMounts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let name = m["name"].as_str().unwrap_or_default();
            let path = m["mountPath"].as_str().unwrap_or_default();
            if !volumes.iter().any(|v| v == name) {
                causes.push(format!(
                    "spec.containers[{ci}].volumeMounts[{mi}].name: Not found: {name:?}"
                ));
            }
            if !path.starts_with('/') {
                causes.push(format!(
                    "spec.containers[{ci}].volumeMounts[{mi}].mountPath: Invalid value: {path:?}"
                ));
            }
            if !paths.insert(path.trim_end_matches('/').to_owned()) {
                causes.push(format!("spec.containers[{ci}].volumeMounts[{mi}].mountPath: Invalid value: {path:?}: must be unique"));
            }
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_validation_names_every_problem() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "volumes": [{"name": "a"}],
            "containers": [{"name": "c", "image": "i", "volumeMounts": [
                {"name": "a", "mountPath": "/x"}, {"name": "a", "mountPath": "/x/"}, {"name": "b", "mountPath": "/y"}]}]}});
        let causes = pod_causes(&pod);
        assert_eq!(causes.len(), 2, "{causes:?}");
        assert!(causes[0].contains("must be unique"));
        assert!(causes[1].contains("Not found: \"b\""));
    }
}
