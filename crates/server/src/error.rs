//! The control plane's one error shape: every 4xx and 5xx is `{"detail": ..., "field"?: ...}`,
//! as DeerFlow's provisioner (FastAPI) answers, so its clients parse Paddock's errors too; a
//! 429 also names the limit it hit (`"limit": "max_sandboxes_per_user"`).
//! Internals are logged where they happen, never returned.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::backend::BackendError;
use crate::limits::Limit;

/// An HTTP error with the shared JSON shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Status code.
    pub status: StatusCode,
    /// Human-readable detail.
    pub detail: String,
    /// The offending field, when one is to blame.
    pub field: Option<String>,
    /// `Retry-After` seconds (429, 503).
    pub retry_after: Option<u64>,
    /// The limit a 429 hit.
    pub limit: Option<Limit>,
}

impl ApiError {
    /// An error with a status and detail.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            field: None,
            retry_after: None,
            limit: None,
        }
    }

    /// 429 naming the limit that was hit, with `Retry-After`.
    pub fn limit_reached(limit: Limit, detail: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            limit: Some(limit),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, detail)
        }
    }

    /// 422 naming `field`.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
        }
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized")
    }

    /// 404 for a sandbox.
    pub fn not_found(id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("Sandbox '{id}' not found"))
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Invalid { field, message } => Self::invalid(field, message),
            BackendError::Conflict(m) => Self::new(StatusCode::CONFLICT, m),
            BackendError::Capacity {
                message,
                retry_after_secs,
            } => Self {
                retry_after: Some(retry_after_secs),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, message)
            },
            BackendError::Unavailable(m) => Self {
                retry_after: Some(5),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("backend unavailable: {m}"),
                )
            },
            BackendError::Internal(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error (see server logs)",
            ),
        }
    }
}

/// Why a request failed, as the request log line shows it (the response carries it in its
/// extensions from [`ApiError`] to the logging middleware).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReason {
    /// The detail sent to the client.
    pub detail: String,
    /// The field it names, if any.
    pub field: Option<String>,
    /// The limit a 429 hit, if any.
    pub limit: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = match &self.field {
            Some(f) => json!({ "detail": self.detail, "field": f }),
            None => json!({ "detail": self.detail }),
        };
        if let Some(l) = self.limit {
            body["limit"] = json!(l.as_str());
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.extensions_mut().insert(ErrorReason {
            detail: self.detail.clone(),
            field: self.field.clone(),
            limit: self.limit.map(Limit::as_str),
        });
        if let Some(v) = self
            .retry_after
            .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
