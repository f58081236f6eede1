//! The one error type of the agent API and the two JSON shapes it renders to.
//!
//! Invariant: every failure a handler or an extractor can produce becomes an [`ApiError`],
//! and an `ApiError` only ever leaves the server as JSON: the AIO envelope
//! (`success: false`, `message`, FastAPI-style `detail` list for 422s) on the AIO routes,
//! `{"detail", "field", "code", "error"}` on the native routes. A client error is a 4xx;
//! only a failure of the sandbox itself is a 5xx, and its body never carries a host path
//! (the `SandboxError` variants only hold virtual paths).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use paddock_core::SandboxError;
use serde_json::{Value, json};

/// Which JSON shape an error is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The AIO envelope: `{"success": false, "message": ..., "data": null, ...}`.
    Aio,
    /// Paddock's native shape: `{"detail": ..., "field": ..., "code": ..., "error": ...}`.
    Native,
}

/// An error on its way to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code (`not_found`, `invalid_body`, ...).
    pub code: String,
    /// The human-readable message.
    pub message: String,
    /// The request field (or path) the error is about.
    pub field: Option<String>,
    /// The sandbox error, carried whole so a remote client rebuilds the same variant.
    pub sandbox: Option<Box<SandboxError>>,
    /// Which shape to render.
    pub surface: Surface,
}

/// The HTTP status of a sandbox error (the one place this mapping lives).
pub fn status_for(e: &SandboxError) -> StatusCode {
    use SandboxError as E;
    match e {
        E::InvalidPath { .. } | E::InvalidArgument { .. } | E::InvalidId { .. } => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        E::Unmapped { .. } | E::Escape { .. } | E::ReadOnly { .. } => StatusCode::FORBIDDEN,
        E::NotFound { .. } => StatusCode::NOT_FOUND,
        E::NotADirectory { .. }
        | E::IsADirectory { .. }
        | E::NotText { .. }
        | E::SymlinkLoop { .. } => StatusCode::BAD_REQUEST,
        E::NoMatch { .. } | E::Ambiguous { .. } => StatusCode::CONFLICT,
        E::TooLarge { .. } | E::ResultTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        E::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        other if other.is_client_error() => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// A client error that is not a sandbox error (bad body, bad header, ...).
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            field: None,
            sandbox: None,
            surface: Surface::Native,
        }
    }

    /// An invalid request field (422).
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self::sandbox(SandboxError::invalid_argument(field, message))
    }

    /// A sandbox error with its mapped status.
    pub fn sandbox(e: SandboxError) -> Self {
        let status = status_for(&e);
        if status.is_server_error() {
            tracing::warn!(error = %e, code = e.code(), "sandbox operation failed");
        }
        let field = match &e {
            SandboxError::InvalidArgument { field, .. }
            | SandboxError::InvalidId { field, .. }
            | SandboxError::ResultTooLarge { field, .. } => Some(field.clone()),
            other => other.path().map(str::to_owned),
        };
        Self {
            status,
            code: e.code().to_owned(),
            message: e.to_string(),
            field,
            sandbox: Some(Box::new(e)),
            surface: Surface::Native,
        }
    }

    /// Names the field the error is about.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Renders in the given shape.
    pub fn on(mut self, surface: Surface) -> Self {
        self.surface = surface;
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let error = self
            .sandbox
            .as_ref()
            .and_then(|e| serde_json::to_value(e).ok());
        match self.surface {
            Surface::Native => json!({
                "detail": self.message,
                "field": self.field,
                "code": self.code,
                "error": error,
            }),
            Surface::Aio => {
                let mut body = json!({
                    "success": false,
                    "message": self.message,
                    "data": null,
                    "code": self.code,
                    "error": error,
                });
                // The SDK parses a 422 body as FastAPI's HTTPValidationError, whose
                // `detail` must be a list of {loc, msg, type}.
                if self.status == StatusCode::UNPROCESSABLE_ENTITY {
                    let loc: Vec<&str> = match &self.field {
                        Some(f) => vec!["body", f.as_str()],
                        None => vec!["body"],
                    };
                    body["detail"] =
                        json!([{ "loc": loc, "msg": self.message, "type": self.code }]);
                }
                body
            }
        }
    }
}

impl From<SandboxError> for ApiError {
    fn from(e: SandboxError) -> Self {
        Self::sandbox(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// An error rendered as the AIO envelope (the return type of AIO handlers).
#[derive(Debug)]
pub struct AioError(pub ApiError);

impl<E: Into<ApiError>> From<E> for AioError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for AioError {
    fn into_response(self) -> Response {
        self.0.on(Surface::Aio).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            status_for(&SandboxError::NotFound { path: "/x".into() }),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status_for(&SandboxError::Escape { path: "/x".into() }),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status_for(&SandboxError::TooLarge {
                path: "/x".into(),
                size: 2,
                limit: 1
            }),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status_for(&SandboxError::Unavailable {
                message: "down".into()
            }),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_for(&SandboxError::invalid_argument("x", "y")),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn aio_422_has_fastapi_detail() {
        let e = ApiError::invalid("start_line", "must be >= 0").on(Surface::Aio);
        let b = e.body();
        assert_eq!(b["success"], false);
        assert_eq!(b["detail"][0]["loc"][1], "start_line");
        assert_eq!(b["error"]["kind"], "invalid_argument");
    }

    #[test]
    fn native_shape() {
        let e = ApiError::sandbox(SandboxError::ReadOnly {
            path: "/mnt/skills/a".into(),
        });
        let b = e.body();
        assert_eq!(b["field"], "/mnt/skills/a");
        assert_eq!(b["code"], "read_only");
        let back: SandboxError = serde_json::from_value(b["error"].clone()).unwrap();
        assert_eq!(
            back,
            SandboxError::ReadOnly {
                path: "/mnt/skills/a".into()
            }
        );
    }
}
