//! Limits on concurrent heavy requests: commands, file reads and downloads, uploads and
//! writes, edits and tree walks (each may hold megabytes of server memory, a blocking
//! thread or a command's output), per sandbox and over every sandbox of the process.
//!
//! Invariant: a heavy request holds one permit of its sandbox's limit and one of the
//! global limit from before its body is read until its response body is sent or dropped
//! (a streamed exec or download holds them while it streams). A request that finds either
//! limit full is answered at once with 429, a `Retry-After` header and a JSON body naming
//! the configuration key of the limit it hit; nothing of it is read or run.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiError, Surface};

/// Default of `agent.max_concurrent_heavy_per_sandbox`.
pub const DEFAULT_MAX_HEAVY_PER_SANDBOX: usize = 8;
/// Default of `agent.max_concurrent_heavy`.
pub const DEFAULT_MAX_HEAVY: usize = 64;
/// The configuration key of the per-sandbox limit (named in 429 bodies).
pub const PER_SANDBOX_KEY: &str = "agent.max_concurrent_heavy_per_sandbox";
/// The configuration key of the global limit (named in 429 bodies).
pub const GLOBAL_KEY: &str = "agent.max_concurrent_heavy";
/// Seconds a refused client is told to wait.
pub const RETRY_AFTER_SECS: u64 = 1;

/// A cap on concurrent heavy requests. Clones share the count: give every sandbox of a
/// server a clone of one global limit.
#[derive(Clone)]
pub struct HeavyLimit {
    sem: Arc<Semaphore>,
    max: usize,
    key: &'static str,
}

impl std::fmt::Debug for HeavyLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeavyLimit")
            .field("key", &self.key)
            .field("max", &self.max)
            .field("in_use", &self.in_use())
            .finish()
    }
}

impl HeavyLimit {
    /// At most `max` at once (clamped to the semaphore's maximum); `key` is the
    /// configuration key that sets it.
    pub fn new(max: usize, key: &'static str) -> Self {
        let max = max.min(Semaphore::MAX_PERMITS);
        Self {
            sem: Arc::new(Semaphore::new(max)),
            max,
            key,
        }
    }

    /// The global limit (`agent.max_concurrent_heavy`) with `max` permits.
    pub fn global(max: usize) -> Self {
        Self::new(max, GLOBAL_KEY)
    }

    /// The configured maximum.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Requests holding a permit now.
    pub fn in_use(&self) -> usize {
        self.max - self.sem.available_permits().min(self.max)
    }

    fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        self.sem.clone().try_acquire_owned().ok()
    }
}

/// What the gate of one sandbox's heavy routes checks.
#[derive(Clone, Debug)]
pub(crate) struct Gate {
    pub per_sandbox: HeavyLimit,
    pub global: Option<HeavyLimit>,
    pub surface: Surface,
}

/// The 429 for `limit`, in the surface's shape plus `limit` (the key), `max` and
/// `retry_after_secs`.
fn too_busy(limit: &HeavyLimit, surface: Surface) -> Response {
    let scope = if limit.key == PER_SANDBOX_KEY {
        "this sandbox"
    } else {
        "this server"
    };
    let err = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
        format!(
            "too many concurrent heavy requests (commands, file reads, uploads, searches) for {scope}: \
             the limit {} is {}; retry after {RETRY_AFTER_SECS} s",
            limit.key, limit.max
        ),
    )
    .with_field(limit.key)
    .on(surface);
    let mut body = err.body();
    body["limit"] = limit.key.into();
    body["max"] = limit.max.into();
    body["retry_after_secs"] = RETRY_AFTER_SECS.into();
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    // The request's body (an upload) is not read: the connection cannot be reused.
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The middleware in front of heavy routes.
pub(crate) async fn gate(State(g): State<Gate>, req: Request, next: Next) -> Response {
    let Some(mine) = g.per_sandbox.try_take() else {
        tracing::debug!(limit = PER_SANDBOX_KEY, path = %req.uri().path(), "heavy request refused");
        return too_busy(&g.per_sandbox, g.surface);
    };
    let global = match &g.global {
        Some(limit) => match limit.try_take() {
            Some(p) => Some(p),
            None => {
                tracing::debug!(limit = limit.key, path = %req.uri().path(), "heavy request refused");
                return too_busy(limit, g.surface);
            }
        },
        None => None,
    };
    let resp = next.run(req).await;
    resp.map(|body| {
        Body::new(Held {
            inner: body,
            _permits: (mine, global),
        })
    })
}

/// A response body that keeps its request's permits until it is sent or dropped.
struct Held {
    inner: Body,
    _permits: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_shared_by_clones_and_returned_on_drop() {
        let g = HeavyLimit::global(2);
        let other = g.clone();
        let a = g.try_take().unwrap();
        let _b = other.try_take().unwrap();
        assert!(g.try_take().is_none(), "the clones share one count");
        assert_eq!(g.in_use(), 2);
        drop(a);
        assert!(other.try_take().is_some());
    }

    #[test]
    fn the_refusal_names_the_limit() {
        let l = HeavyLimit::new(3, PER_SANDBOX_KEY);
        let resp = too_busy(&l, Surface::Aio);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }
}
