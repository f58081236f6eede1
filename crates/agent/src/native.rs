//! Paddock's native routes: one route per `Sandbox` operation with the core request and
//! outcome types as bodies, structured exec streamed as NDJSON (or SSE), and the tool
//! layer. `paddock-client`'s `RemoteSandbox` speaks exactly this surface.
//!
//! Invariant: a native error body carries the serialised `SandboxError` next to its
//! message, so a remote caller rebuilds the very variant the sandbox returned; an error
//! after a stream started is sent in-band as a final `{"type":"error"}` line.

use axum::Json as AxumJson;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use paddock_core::SandboxError;
use paddock_core::sandbox::{
    ByteStream, ExecRequest, Glob, Grep, List, ReadBytes, ReadText, StrReplace, WriteBytes,
    WriteText,
};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Json, Query};

type NativeResult = Result<Response, ApiError>;

fn json_ok(v: impl serde::Serialize) -> Response {
    AxumJson(v).into_response()
}

/// `GET /v1/info`.
pub async fn info(State(st): State<AppState>) -> Response {
    json_ok(st.sandbox.info())
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"))
}

/// One in-band error line of a stream.
pub fn stream_error_line(e: &SandboxError) -> serde_json::Value {
    json!({ "type": "error", "detail": e.to_string(), "code": e.code(), "error": e })
}

/// `POST /v1/exec`: NDJSON (default) or SSE with `Accept: text/event-stream`; one event
/// per stdout/stderr chunk, then the exit record.
pub async fn exec(
    State(st): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<ExecRequest>,
) -> NativeResult {
    req.validate()?;
    if let Some(cwd) = &req.cwd {
        // A missing working directory is the caller's mistake: answer 404 rather than
        // letting it surface as a failure to start the command.
        let entry = st.sandbox.stat(cwd).await?;
        if entry.kind != paddock_core::sandbox::EntryKind::Dir {
            return Err(SandboxError::NotADirectory {
                path: entry.path.to_string(),
            }
            .into());
        }
    }
    let sse = wants_sse(&headers);
    let stream = st.sandbox.exec_stream(req).await?;
    let lines = stream.map(move |item| {
        let value = match item {
            Ok(ev) => serde_json::to_value(&ev).unwrap_or_else(|e| {
                stream_error_line(&SandboxError::Internal {
                    message: format!("could not encode an event: {e}"),
                })
            }),
            Err(e) => stream_error_line(&e),
        };
        let mut line = if sse { b"data: ".to_vec() } else { Vec::new() };
        // Serialising a Value to a Vec cannot fail.
        line.extend(serde_json::to_vec(&value).unwrap_or_default());
        line.extend_from_slice(if sse { b"\n\n" } else { b"\n" });
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(line))
    });
    let mut resp = Response::new(Body::from_stream(lines));
    let ct = if sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// A request's own byte bound, lowered to the agent's cap.
fn within(asked: Option<u64>, cap: u64) -> Option<u64> {
    Some(asked.map_or(cap, |m| m.min(cap)))
}

/// `POST /v1/fs/read_text`: at most `agent.max_read_bytes` is read; the text is escaped
/// while it is sent.
pub async fn read_text(State(st): State<AppState>, Json(mut req): Json<ReadText>) -> NativeResult {
    req.validate()?;
    req.max_bytes = within(req.max_bytes, st.config.max_read_bytes);
    let text = st
        .sandbox
        .read_text(req)
        .await
        .map_err(|e| crate::aio::read_refusal(e, "path"))?;
    let mut j = crate::jsonbody::JsonBody::new();
    j.begin_object()
        .field("path", &text.path)
        .text_field("content", bytes::Bytes::from(text.content.into_bytes()))
        .field("total_lines", &text.total_lines)
        .end_object();
    Ok(j.into_response())
}

/// `GET /v1/fs/read_bytes?path=&offset=&len=`: streamed, with `x-file-size`.
pub async fn read_bytes(State(st): State<AppState>, Query(req): Query<ReadBytes>) -> NativeResult {
    let path = req.path.clone();
    let fs = st.sandbox.read_bytes(req).await?;
    Ok(crate::aio::file_response(&path, fs))
}

/// `POST /v1/fs/write_text`.
pub async fn write_text(State(st): State<AppState>, Json(req): Json<WriteText>) -> NativeResult {
    Ok(json_ok(st.sandbox.write_text(req).await?))
}

/// `PUT /v1/fs/write_bytes?path=&append=&max_bytes=` with the raw bytes as the body,
/// streamed to the sandbox (never buffered whole).
pub async fn write_bytes(
    State(st): State<AppState>,
    Query(mut req): Query<WriteBytes>,
    body: Request,
) -> NativeResult {
    let cap = st.config.max_upload_bytes;
    req.max_bytes = Some(req.max_bytes.map_or(cap, |m| m.min(cap)));
    // A body that fails (the client went away, or stalled past the listener's idle limit)
    // is the client's doing: 422 naming the body, never a 5xx.
    let stream: ByteStream = Box::pin(body.into_body().into_data_stream().map(move |r| {
        r.map_err(|e| SandboxError::invalid_argument("body", format!("upload interrupted: {e}")))
    }));
    Ok(json_ok(st.sandbox.write_bytes(req, stream).await?))
}

/// `POST /v1/fs/stat` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatRequest {
    /// Virtual path.
    pub path: String,
}

/// `POST /v1/fs/stat`.
pub async fn stat(State(st): State<AppState>, Json(req): Json<StatRequest>) -> NativeResult {
    Ok(json_ok(st.sandbox.stat(&req.path).await?))
}

/// `POST /v1/fs/list`.
pub async fn list(State(st): State<AppState>, Json(req): Json<List>) -> NativeResult {
    Ok(json_ok(st.sandbox.list(req).await?))
}

/// `POST /v1/fs/glob`.
pub async fn glob(State(st): State<AppState>, Json(req): Json<Glob>) -> NativeResult {
    Ok(json_ok(st.sandbox.glob(req).await?))
}

/// `POST /v1/fs/grep`.
pub async fn grep(State(st): State<AppState>, Json(req): Json<Grep>) -> NativeResult {
    Ok(json_ok(st.sandbox.grep(req).await?))
}

/// `POST /v1/fs/str_replace`: the file and the text it would become are both bounded by
/// `agent.max_read_bytes` (a result over it is refused before it is built: 413 naming
/// `new`).
pub async fn str_replace(
    State(st): State<AppState>,
    Json(mut req): Json<StrReplace>,
) -> NativeResult {
    req.max_bytes = within(req.max_bytes, st.config.max_read_bytes);
    Ok(json_ok(
        st.sandbox
            .str_replace(req)
            .await
            .map_err(|e| crate::aio::read_refusal(e, "path"))?,
    ))
}

/// The fallback: an unknown route is a JSON 404.
pub async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

/// `POST /v1/tools/{name}` response shape.
pub fn tool_reply(output: String, is_error: bool) -> Response {
    json_ok(json!({ "output": output, "is_error": is_error }))
}

/// Validates a tool name from the path.
pub fn tool_name(Path(name): Path<String>) -> Result<String, ApiError> {
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(ApiError::invalid(
            "name",
            "a tool name is 1-64 letters, digits or '_'",
        ));
    }
    Ok(name)
}
