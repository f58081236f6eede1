//! What every AIO route shares: the response envelope (`{success, message, data}`, built
//! whole or streamed) and the small helpers that refuse a request field with a 422.

use axum::Json as AxumJson;
use axum::response::{IntoResponse, Response};
use paddock_core::SandboxError;
use serde::Serialize;
use serde_json::json;

use crate::error::{AioError, ApiError};
use crate::jsonbody::JsonBody;

/// What an AIO handler answers.
pub(crate) type AioResult = Result<Response, AioError>;

/// The AIO success envelope around `data`.
pub fn ok(data: impl Serialize) -> Response {
    AxumJson(json!({ "success": true, "message": "Operation successful", "data": data }))
        .into_response()
}

/// The AIO success envelope for a streamed document: `fill` writes the members of `data`.
pub(crate) fn ok_streamed(fill: impl FnOnce(&mut JsonBody)) -> Response {
    let mut j = JsonBody::new();
    j.begin_object()
        .field("success", &true)
        .field("message", "Operation successful")
        .key("data")
        .begin_object();
    fill(&mut j);
    j.end_object().end_object();
    j.into_response()
}

/// A `String`'s bytes as shared `Bytes`, without a copy.
pub(crate) fn shared(s: String) -> bytes::Bytes {
    bytes::Bytes::from(s.into_bytes())
}

/// A text read over the agent's read cap: 413 naming the limit and what to do instead.
pub(crate) fn read_refusal(e: SandboxError, field: &str) -> ApiError {
    let hint = match &e {
        SandboxError::TooLarge { path, size, limit } => Some(format!(
            "{path} is {size} bytes, over the limit of {limit} bytes on reading a file whole \
             (agent.max_read_bytes); download it (GET /v1/file/download) or read parts of it \
             with a command"
        )),
        _ => None,
    };
    let mut api = ApiError::sandbox(e);
    if let Some(h) = hint {
        api.message = h;
        api.field = Some(field.to_owned());
    }
    api
}

/// A 422 naming `field`.
pub(crate) fn refuse(field: &str, message: &str) -> AioError {
    AioError(ApiError::invalid(field, message))
}

/// An optional flag, off when absent.
pub(crate) fn flag(v: Option<bool>) -> bool {
    v.unwrap_or(false)
}
