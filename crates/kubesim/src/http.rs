//! The simulator's HTTP face: one fallback handler that applies the faults, answers the
//! discovery paths, parses `/api/v1/...` and `/apis/{group}/{version}/...` into a
//! [`Target`] and dispatches by method: list (or watch), get, and the writes of
//! [`crate::writes`].
//!
//! Invariant: every error is a Kubernetes `Status` body ([`status`]).

// Handlers return ready `Response`s as their error type: they are the HTTP answer, built
// once per failed request, so boxing them would only add an allocation.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::select;
use crate::store::{Kind, Sim, kind_of};
use crate::watches::watch;
use crate::writes::{create, delete, patch, replace};

/// The simulator's router.
pub(crate) fn router(sim: Arc<Sim>) -> Router {
    Router::new().fallback(handle).with_state(sim)
}

/// What a request path names: a kind, and the namespace and object name when given.
pub(crate) struct Target {
    pub(crate) kind: Kind,
    pub(crate) ns: Option<String>,
    pub(crate) name: Option<String>,
}

/// Parses `/api/v1/...` or `/apis/{group}/{version}/...`; `None` for a path the
/// simulator does not serve.
fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (gv, rest): (String, &[&str]) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("v1".into(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    match rest {
        ["namespaces"] => Some(Target {
            kind: kind_of(&gv, "namespaces")?,
            ns: None,
            name: None,
        }),
        ["namespaces", ns] => Some(Target {
            kind: kind_of(&gv, "namespaces")?,
            ns: None,
            name: Some((*ns).into()),
        }),
        ["namespaces", ns, plural] => Some(Target {
            kind: kind_of(&gv, plural)?,
            ns: Some((*ns).into()),
            name: None,
        }),
        ["namespaces", ns, plural, name] => Some(Target {
            kind: kind_of(&gv, plural)?,
            ns: Some((*ns).into()),
            name: Some((*name).into()),
        }),
        [plural] => Some(Target {
            kind: kind_of(&gv, plural)?,
            ns: None,
            name: None,
        }),
        [plural, name] => {
            let k = kind_of(&gv, plural)?;
            (!k.namespaced).then(|| Target {
                kind: k,
                ns: None,
                name: Some((*name).into()),
            })
        }
        _ => None,
    }
}

/// Every request: faults, discovery paths, then list/watch, get or a write.
async fn handle(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.requests.fetch_add(1, Ordering::Relaxed);
    let path = uri.path();
    if let Some(fault) = sim.inject_faults(&method, path).await {
        return fault;
    }
    match path {
        "/version" => {
            return axum::Json(json!({"major": "1", "minor": "34", "gitVersion": "v1.34.0-paddock-kubesim", "platform": "linux/amd64"})).into_response();
        }
        "/api" => return axum::Json(
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        )
        .into_response(),
        "/apis" => {
            return axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{"name": "networking.k8s.io", "versions": [{"groupVersion": "networking.k8s.io/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "networking.k8s.io/v1", "version": "v1"}}]})).into_response();
        }
        "/healthz" | "/readyz" | "/livez" => return "ok".into_response(),
        _ => {}
    }
    let Some(t) = parse_path(path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        );
    };
    let q = query_map(&uri);
    if t.kind.namespaced
        && let Some(ns) = &t.ns
        && !sim.exists("namespaces", "", ns)
        && method != Method::GET
    {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("namespaces \"{ns}\" not found"),
        );
    }
    match (method, &t.name) {
        (Method::GET, None) => {
            let labels =
                match select::parse(q.get("labelSelector").map(String::as_str).unwrap_or("")) {
                    Ok(l) => l,
                    Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e),
                };
            let fields =
                match select::parse(q.get("fieldSelector").map(String::as_str).unwrap_or("")) {
                    Ok(l) => l,
                    Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e),
                };
            if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) {
                return watch(sim, t, q, labels, fields);
            }
            let (items, rv) = sim.list_matching(t.kind.plural, t.ns.as_deref(), &labels, &fields);
            axum::Json(json!({
                "kind": format!("{}List", t.kind.kind),
                "apiVersion": t.kind.api_version,
                "metadata": {"resourceVersion": rv.to_string()},
                "items": items,
            }))
            .into_response()
        }
        (Method::GET, Some(name)) => {
            match sim.object(t.kind.plural, t.ns.as_deref().unwrap_or(""), name) {
                Some(o) => axum::Json(o).into_response(),
                None => not_found(&t.kind, name),
            }
        }
        (Method::POST, None) => create(&sim, &t, &body).await,
        (Method::PUT, Some(name)) => replace(&sim, &t, name, &body),
        (Method::PATCH, Some(name)) => patch(&sim, &t, name, &headers, &body, &q).await,
        (Method::DELETE, Some(name)) => delete(&sim, &t, name).await,
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ),
    }
}

/// The query string, percent-decoded.
fn query_map(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    Some((decode(k)?, decode(v)?))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The request body as a JSON object; 400 otherwise.
pub(crate) fn parse_body(body: &Bytes) -> Result<Value, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the body must be a JSON object",
        )),
        Err(e) => Err(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("could not decode the body: {e}"),
        )),
    }
}

/// A Kubernetes `Status` error response.
pub(crate) fn status(code: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message.into(),
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

/// 404 for the object `name` of `kind`.
pub(crate) fn not_found(kind: &Kind, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{} \"{name}\" not found", kind.plural),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = query_map(
            &"/x?labelSelector=a%3Db%2Cc%20in%20(d)&watch=true"
                .parse()
                .expect("uri"),
        );
        assert_eq!(q["labelSelector"], "a=b,c in (d)");
        assert_eq!(q["watch"], "true");
    }
}
