//! Authentication of the agent API by a per-sandbox secret.
//!
//! Invariant: without the secret a request learns nothing: a wrong capability prefix
//! gets the same JSON 404 as any unknown route, a missing or wrong bearer token a 401,
//! and the comparison takes time independent of where the strings differ. The inner
//! router only ever sees requests that passed, with the prefix stripped.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

use crate::error::ApiError;

/// Compares two secrets in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

fn unknown() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "not found").into_response()
}

fn unauthorized() -> Response {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or invalid credentials",
    )
    .into_response()
}

/// The JSON 405.
pub async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// Splits `/s/{seg}/rest?q` into `seg` and the rewritten URI `/rest?q`.
fn split_capability(uri: &Uri) -> Option<(String, Uri)> {
    let rest = uri.path().strip_prefix("/s/")?;
    let (seg, tail) = match rest.split_once('/') {
        Some((s, t)) => (s, format!("/{t}")),
        None => (rest, "/".to_owned()),
    };
    let pq = match uri.query() {
        Some(q) => format!("{tail}?{q}"),
        None => tail,
    };
    let new: Uri = pq.parse().ok()?;
    Some((seg.to_owned(), new))
}

async fn forward(inner: Router, mut req: Request, uri: Option<Uri>) -> Response {
    if let Some(uri) = uri {
        *req.uri_mut() = uri;
    }
    match inner.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// Wraps `inner` so it needs `token` as `/s/{token}/...` or `Authorization: Bearer`.
pub fn app_with_auth(inner: Router, token: String) -> Router {
    let token = Arc::new(token);
    Router::new().fallback(move |req: Request| {
        let inner = inner.clone();
        let token = token.clone();
        async move {
            if let Some((seg, uri)) = split_capability(req.uri()) {
                if ct_eq(seg.as_bytes(), token.as_bytes()) {
                    return forward(inner, req, Some(uri)).await;
                }
                return unknown();
            }
            let bearer = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            match bearer {
                Some(b) if ct_eq(b.as_bytes(), token.as_bytes()) => forward(inner, req, None).await,
                _ => unauthorized(),
            }
        }
    })
}

/// Many sandboxes' routers behind one listener, each under its own capability prefix
/// `/s/{token}/...` (the control plane mounts one per sandbox). Cloning shares the table.
#[derive(Clone, Default)]
pub struct CapabilityRouter {
    table: Arc<RwLock<HashMap<String, Router>>>,
}

impl std::fmt::Debug for CapabilityRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapabilityRouter")
            .field("len", &self.len())
            .finish()
    }
}

impl CapabilityRouter {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Router>> {
        // Every write is a single insert/remove, so a poisoned lock is still consistent.
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Serves `router` (from [`crate::routes`]) under `/s/{token}`.
    pub fn insert(&self, token: impl Into<String>, router: Router) {
        self.table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(token.into(), router);
    }

    /// Stops serving `token`; returns whether it was served.
    pub fn remove(&self, token: &str) -> bool {
        self.table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(token)
            .is_some()
    }

    /// How many sandboxes are served.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether none is served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dispatching router: `/s/{token}/...` goes to that sandbox, anything else is a
    /// JSON 404. Merge it into the server's router.
    pub fn router(&self) -> Router {
        let this = self.clone();
        Router::new().fallback(move |req: Request| {
            let this = this.clone();
            async move {
                let Some((seg, uri)) = split_capability(req.uri()) else {
                    return unknown();
                };
                // The map is keyed by the secret; the final comparison is constant-time.
                let hit = this
                    .read()
                    .iter()
                    .find(|(k, _)| ct_eq(k.as_bytes(), seg.as_bytes()))
                    .map(|(_, r)| r.clone());
                match hit {
                    Some(inner) => forward(inner, req, Some(uri)).await,
                    None => unknown(),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(!ct_eq(b"", b"a"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn capability_split() {
        let (s, u) =
            split_capability(&"/s/tok/v1/file/download?path=%2Fa".parse().unwrap()).unwrap();
        assert_eq!(s, "tok");
        assert_eq!(u.to_string(), "/v1/file/download?path=%2Fa");
        let (s, u) = split_capability(&"/s/tok".parse().unwrap()).unwrap();
        assert_eq!((s.as_str(), u.path()), ("tok", "/"));
        assert!(split_capability(&"/v1/sandbox".parse().unwrap()).is_none());
    }
}
