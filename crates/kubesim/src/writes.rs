//! The writes: create (with `generateName`), replace (with its `resourceVersion`
//! precondition), patch (JSON merge, strategic merge as merge, server-side apply as
//! create-or-merge) and delete, each telling the kubelet about Pods and Services.
//!
//! Invariant: the server-owned metadata (`uid`, `creationTimestamp`, `namespace`, `name`)
//! survives every replace and patch.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::http::{Target, not_found, parse_body, status};
use crate::ports::release_ports;
use crate::select;
use crate::store::Sim;
use crate::validate::validate;

/// `POST` to a collection: 201 with the stored object, 409 when the name is taken.
pub(crate) async fn create(sim: &Arc<Sim>, t: &Target, body: &Bytes) -> Response {
    let mut obj = match parse_body(body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let ns = t.ns.clone().unwrap_or_default();
    if obj["metadata"].is_null() {
        obj["metadata"] = json!({});
    }
    if select::field(&obj, "metadata.name").is_none()
        && let Some(prefix) = select::field(&obj, "metadata.generateName")
    {
        let suffix: String = (0..5)
            .map(|_| {
                let c = b"bcdfghjklmnpqrstvwxz2456789"[(sim.roll() % 27) as usize];
                c as char
            })
            .collect();
        obj["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
    }
    let name = select::field(&obj, "metadata.name").unwrap_or_default();
    if sim.exists(t.kind.plural, &ns, &name) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", t.kind.plural),
        );
    }
    if let Err(r) = validate(sim, t, &mut obj, &ns) {
        return r;
    }
    // Re-check under the store lock: two creates of one name race only here.
    let stored = {
        let taken = sim.contains(t.kind.plural, &ns, &name).unwrap_or(true);
        if taken {
            if t.kind.plural == "services" {
                release_ports(sim, &obj);
            }
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", t.kind.plural),
            );
        }
        sim.insert_new(&t.kind, t.kind.namespaced.then_some(ns.as_str()), obj)
    };
    match t.kind.plural {
        "pods" => crate::kubelet::pod_created(sim.clone(), &ns, &stored),
        "services" => crate::kubelet::service_created(sim.clone(), &ns, &stored).await,
        _ => {}
    }
    (StatusCode::CREATED, axum::Json(stored)).into_response()
}

/// `PUT` of an object: the body replaces it (its `status` kept when the body has none);
/// 409 when the body's `resourceVersion` is not the current one.
pub(crate) fn replace(sim: &Sim, t: &Target, name: &str, body: &Bytes) -> Response {
    let obj = match parse_body(body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let ns = t.ns.clone().unwrap_or_default();
    let Some(current) = sim.object(t.kind.plural, &ns, name) else {
        return not_found(&t.kind, name);
    };
    if let Some(rv) = select::field(&obj, "metadata.resourceVersion")
        && select::field(&current, "metadata.resourceVersion").as_deref() != Some(rv.as_str())
    {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                t.kind.plural
            ),
        );
    }
    let keep = current["metadata"].clone();
    match sim.modify(t.kind.plural, &ns, name, None, |o| {
        let status_keep = o["status"].clone();
        *o = obj;
        o["metadata"]["uid"] = keep["uid"].clone();
        o["metadata"]["creationTimestamp"] = keep["creationTimestamp"].clone();
        o["metadata"]["namespace"] = keep["namespace"].clone();
        o["metadata"]["name"] = json!(name);
        o["kind"] = json!(t.kind.kind);
        o["apiVersion"] = json!(t.kind.api_version);
        if o["status"].is_null() {
            o["status"] = status_keep;
        }
    }) {
        Some(o) => axum::Json(o).into_response(),
        None => not_found(&t.kind, name),
    }
}

/// `PATCH` of an object by its content type; an apply patch of a missing object creates it.
pub(crate) async fn patch(
    sim: &Arc<Sim>,
    t: &Target,
    name: &str,
    headers: &HeaderMap,
    body: &Bytes,
    q: &BTreeMap<String, String>,
) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ns = t.ns.clone().unwrap_or_default();
    let patch = if ct.starts_with("application/apply-patch") {
        // kube-rs and kubectl send apply patches as JSON (a YAML subset).
        match parse_body(body) {
            Ok(p) => p,
            Err(r) => return r,
        }
    } else if ct.starts_with("application/merge-patch+json")
        || ct.starts_with("application/strategic-merge-patch+json")
    {
        match serde_json::from_slice::<Value>(body) {
            Ok(p) => p,
            Err(e) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("could not decode the patch: {e}"),
                );
            }
        }
    } else {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {ct:?})"
            ),
        );
    };
    if !sim.exists(t.kind.plural, &ns, name) {
        if ct.starts_with("application/apply-patch") {
            if q.get("fieldManager").is_none_or(String::is_empty) {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                );
            }
            let mut obj = patch;
            obj["metadata"]["name"] = json!(name);
            return create(sim, t, &Bytes::from(obj.to_string())).await;
        }
        return not_found(&t.kind, name);
    }
    match sim.modify(t.kind.plural, &ns, name, None, |o| {
        let keep = o["metadata"].clone();
        merge_patch(o, &patch);
        for k in ["uid", "creationTimestamp", "namespace", "name"] {
            o["metadata"][k] = keep[k].clone();
        }
    }) {
        Some(o) => axum::Json(o).into_response(),
        None => not_found(&t.kind, name),
    }
}

/// `DELETE` of an object: answers the object as deleted.
pub(crate) async fn delete(sim: &Arc<Sim>, t: &Target, name: &str) -> Response {
    let ns = t.ns.clone().unwrap_or_default();
    let Ok(removed) = sim.remove(t.kind.plural, &ns, name) else {
        return status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "state lock poisoned",
        );
    };
    let Some(obj) = removed else {
        return not_found(&t.kind, name);
    };
    match t.kind.plural {
        "services" => {
            release_ports(sim, &obj);
            sim.kubelet.service_deleted(&ns, name);
        }
        "pods" => sim.kubelet.pod_deleted(&ns, name).await,
        _ => {}
    }
    axum::Json(obj).into_response()
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut t, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(t, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }
}
