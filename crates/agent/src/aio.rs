//! The AIO sandbox API subset that DeerFlow and the `agent-sandbox` Python SDK (0.0.30)
//! use, with the same routes, request fields and response envelope, so those clients work
//! unchanged against Paddock.
//!
//! Invariant: every request field the SDK can send is known here (requests are
//! `deny_unknown_fields`, and every optional field also accepts `null`, which the SDK
//! sends for an explicit `None`); a field Paddock cannot honour is refused with a 422
//! naming it rather than silently ignored. Every operation goes through the `Sandbox`
//! trait, so the mount table's path rules apply exactly as on the native routes.

use std::collections::BTreeMap;

use axum::Json as AxumJson;
use axum::body::Body;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use paddock_core::mount::WORKSPACE;
use paddock_core::sandbox::{
    EntryKind, Glob, Grep, List, ReadBytes, ReadText, WriteBytes, WriteText,
};
use paddock_core::{SandboxError, VirtualPath};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{AioError, ApiError};
use crate::extract::{AioJson, AioQuery};
use crate::jsonbody::JsonBody;
use crate::shell::{Run, SessionState, random_token, validate_session_id};

type AioResult = Result<Response, AioError>;

/// The AIO success envelope around `data`.
pub fn ok(data: impl Serialize) -> Response {
    AxumJson(json!({ "success": true, "message": "Operation successful", "data": data }))
        .into_response()
}

/// The AIO success envelope for a streamed document: `fill` writes the members of `data`.
fn ok_streamed(fill: impl FnOnce(&mut JsonBody)) -> Response {
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
fn shared(s: String) -> bytes::Bytes {
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

fn refuse(field: &str, message: &str) -> AioError {
    AioError(ApiError::invalid(field, message))
}

fn flag(v: Option<bool>) -> bool {
    v.unwrap_or(false)
}

fn no_sudo(sudo: Option<bool>) -> Result<(), AioError> {
    if flag(sudo) {
        return Err(refuse(
            "sudo",
            "sudo is not supported: sandboxed commands never gain privileges",
        ));
    }
    Ok(())
}

fn positive(field: &str, v: Option<f64>) -> Result<Option<f64>, AioError> {
    match v {
        Some(t) if !(t.is_finite() && t > 0.0 && t <= 86_400.0) => Err(refuse(
            field,
            "must be a number of seconds greater than 0 and at most 86400",
        )),
        other => Ok(other),
    }
}

fn min_timeout(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

// ---------------------------------------------------------------- GET /v1/sandbox

/// `GET /v1/sandbox`: the sandbox context (`SandboxResponse`: fields at the top level).
pub async fn sandbox_context(State(st): State<AppState>) -> Response {
    // The readiness probe: answers once commands can run (503 with the reason otherwise).
    if let Err(e) = st.sandbox.ready().await {
        let not_ready = paddock_core::SandboxError::Unavailable {
            message: format!("the sandbox is not ready: {e}"),
        };
        return crate::error::AioError::from(not_ready).into_response();
    }
    let info = st.sandbox.info();
    let body = json!({
        "success": true,
        "message": "Operation successful",
        "data": info,
        "home_dir": info.home_dir,
        "workspace": WORKSPACE,
        "version": env!("CARGO_PKG_VERSION"),
        "detail": {
            "system": {
                "os": std::env::consts::OS,
                "os_version": "",
                "arch": std::env::consts::ARCH,
                "user": "sandbox",
                "home_dir": info.home_dir,
                "workspace": WORKSPACE,
                "timezone": "UTC",
                "occupied_ports": [],
            },
            "runtime": { "python": [], "nodejs": [] },
            "utils": [],
        },
    });
    AxumJson(body).into_response()
}

// ---------------------------------------------------------------- shell

/// `POST /v1/shell/exec` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShellExecRequest {
    /// The command.
    pub command: String,
    /// The session (a new one when absent).
    #[serde(default)]
    pub id: Option<String>,
    /// Working directory for this command.
    #[serde(default)]
    pub exec_dir: Option<String>,
    /// Not supported when true.
    #[serde(default)]
    pub async_mode: Option<bool>,
    /// Wall-clock limit (seconds); Paddock stops the command when reached.
    #[serde(default)]
    pub timeout: Option<f64>,
    /// Refuse a missing `exec_dir` instead of falling back.
    #[serde(default)]
    pub strict: Option<bool>,
    /// Stop waiting after this many seconds without output.
    #[serde(default)]
    pub no_change_timeout: Option<i64>,
    /// Wall-clock limit (seconds).
    #[serde(default)]
    pub hard_timeout: Option<f64>,
    /// Accepted; paths are always shown as the command sees them.
    #[serde(default)]
    pub preserve_symlinks: Option<bool>,
    /// Cut output over 30,000 characters (default true).
    #[serde(default)]
    pub truncate: Option<bool>,
}

/// Output longer than this is cut when `truncate` is on (the SDK's documented limit).
pub const SHELL_TRUNCATE_CHARS: usize = 30_000;

fn truncate_chars(s: String, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s,
        Some((cut, _)) => {
            let dropped = s[cut..].chars().count();
            format!(
                "{}\n... [output truncated: {dropped} more characters] ...",
                &s[..cut]
            )
        }
    }
}

async fn checked_dir(st: &AppState, dir: &str, field: &str) -> Result<String, AioError> {
    let entry = st
        .sandbox
        .stat(dir)
        .await
        .map_err(|e| AioError(ApiError::sandbox(e).with_field(field)))?;
    if entry.kind != EntryKind::Dir {
        return Err(AioError(ApiError::sandbox(SandboxError::NotADirectory {
            path: entry.path.to_string(),
        })));
    }
    Ok(entry.path.to_string())
}

/// `POST /v1/shell/exec`.
pub async fn shell_exec(
    State(st): State<AppState>,
    AioJson(req): AioJson<ShellExecRequest>,
) -> AioResult {
    if flag(req.async_mode) {
        return Err(refuse(
            "async_mode",
            "async_mode is not supported: Paddock runs shell commands synchronously",
        ));
    }
    let timeout = min_timeout(
        positive("timeout", req.timeout)?,
        positive("hard_timeout", req.hard_timeout)?,
    );
    let idle = match req.no_change_timeout {
        Some(n) if n <= 0 || n > 86_400 => {
            return Err(refuse(
                "no_change_timeout",
                "must be a number of seconds between 1 and 86400",
            ));
        }
        n => n.map(|n| n as f64),
    };
    let id = match req.id {
        Some(id) => {
            validate_session_id(&id)?;
            id
        }
        None => random_token(),
    };
    let cwd = match &req.exec_dir {
        Some(dir) => match checked_dir(&st, dir, "exec_dir").await {
            Ok(d) => Some(d),
            Err(e) if flag(req.strict) => return Err(e),
            Err(_) => None,
        },
        None => None,
    };
    let run = Run {
        command: req.command.clone(),
        cwd,
        timeout_secs: timeout,
        idle_secs: idle,
        merge_stderr: true,
        ..Run::default()
    };
    let res = st.shells.run(st.sandbox.as_ref(), &id, run).await?;
    let exit = &res.outcome.exit;
    let status = if res.idle_timed_out {
        "no_change_timeout"
    } else if exit.timed_out {
        "hard_timeout"
    } else if exit.signal.is_some() {
        "terminated"
    } else {
        "completed"
    };
    let mut output = res.outcome.stdout;
    if req.truncate.unwrap_or(true) {
        output = truncate_chars(output, SHELL_TRUNCATE_CHARS);
    }
    let exit_code = (!res.idle_timed_out).then(|| exit.shell_status());
    let ps1 = format!("sandbox:{} $", res.cwd.as_deref().unwrap_or(WORKSPACE));
    // The output (and the command) appear twice; both places share one copy, escaped
    // only while the response is sent.
    let output = shared(output);
    let command = shared(req.command);
    let (timed_out, truncated, duration) = (
        exit.timed_out,
        res.outcome.stdout_truncated,
        exit.duration_ms,
    );
    Ok(ok_streamed(|j| {
        j.field("session_id", &id)
            .text_field("command", command.clone())
            .field("status", status)
            .text_field("output", output.clone())
            .key("console")
            .begin_array()
            .begin_object()
            .field("ps1", &ps1)
            .text_field("command", command)
            .text_field("output", output)
            .end_object()
            .end_array()
            .field("exit_code", &exit_code)
            .field("timed_out", &timed_out)
            .field("output_truncated", &truncated)
            .field("duration_ms", &duration);
    }))
}

/// `POST /v1/shell/sessions/create` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// The id (generated when absent).
    #[serde(default)]
    pub id: Option<String>,
    /// Initial working directory.
    #[serde(default)]
    pub exec_dir: Option<String>,
    /// Accepted; per-call `no_change_timeout` governs.
    #[serde(default)]
    pub no_change_timeout: Option<i64>,
    /// Accepted.
    #[serde(default)]
    pub preserve_symlinks: Option<bool>,
}

/// `POST /v1/shell/sessions/create`: returns the existing session when `id` is taken.
pub async fn shell_create_session(
    State(st): State<AppState>,
    AioJson(req): AioJson<CreateSessionRequest>,
) -> AioResult {
    let id = match req.id {
        Some(id) => {
            validate_session_id(&id)?;
            id
        }
        None => random_token(),
    };
    let cwd = match &req.exec_dir {
        Some(dir) => Some(checked_dir(&st, dir, "exec_dir").await?),
        None => None,
    };
    let (slot, created) = st.shells.get_or_create(
        &id,
        SessionState {
            cwd: cwd.clone(),
            ..SessionState::default()
        },
    );
    let working_dir = if created {
        cwd
    } else {
        slot.lock().await.cwd.clone()
    };
    let working_dir = working_dir.unwrap_or_else(|| st.sandbox.info().home_dir);
    Ok(ok(json!({ "session_id": id, "working_dir": working_dir })))
}

/// `DELETE /v1/shell/sessions/{id}`.
pub async fn shell_cleanup_session(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> AioResult {
    validate_session_id(&id)?;
    if !st.shells.remove(&id) {
        return Err(AioError(
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no shell session {id}"),
            )
            .with_field("id"),
        ));
    }
    Ok(ok(Value::Null))
}

// ---------------------------------------------------------------- bash

/// `POST /v1/bash/exec` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BashExecRequest {
    /// The command.
    pub command: String,
    /// Keep cwd and env in this session (a fresh one per call when absent).
    #[serde(default)]
    pub session_id: Option<String>,
    /// Working directory.
    #[serde(default)]
    pub exec_dir: Option<String>,
    /// Extra variables; `null` unsets one.
    #[serde(default)]
    pub env: Option<BTreeMap<String, Option<String>>>,
    /// Not supported when true.
    #[serde(default)]
    pub async_mode: Option<bool>,
    /// Wall-clock limit (seconds).
    #[serde(default)]
    pub timeout: Option<f64>,
    /// Wall-clock limit (seconds).
    #[serde(default)]
    pub hard_timeout: Option<f64>,
    /// Per-stream output cap in bytes.
    #[serde(default)]
    pub max_output_length: Option<i64>,
}

/// `POST /v1/bash/exec`: stdout and stderr separately, with the exit code.
pub async fn bash_exec(
    State(st): State<AppState>,
    AioJson(req): AioJson<BashExecRequest>,
) -> AioResult {
    if flag(req.async_mode) {
        return Err(refuse(
            "async_mode",
            "async_mode is not supported: Paddock runs commands synchronously",
        ));
    }
    let timeout = min_timeout(
        positive("timeout", req.timeout)?,
        positive("hard_timeout", req.hard_timeout)?,
    );
    let max_output = match req.max_output_length {
        Some(n) if n <= 0 => return Err(refuse("max_output_length", "must be greater than 0")),
        n => n.map(|n| n as u64),
    };
    let mut env = BTreeMap::new();
    let mut unset = std::collections::BTreeSet::new();
    for (k, v) in req.env.unwrap_or_default() {
        paddock_core::sandbox::validate_env_key(&k)?;
        match v {
            Some(v) if v.contains('\0') => {
                return Err(refuse("env", &format!("value of {k} contains a NUL byte")));
            }
            Some(v) => {
                env.insert(k, v);
            }
            None => {
                unset.insert(k);
            }
        }
    }
    let cwd = match &req.exec_dir {
        Some(dir) => Some(checked_dir(&st, dir, "exec_dir").await?),
        None => None,
    };
    let (id, one_off) = match req.session_id {
        Some(id) => {
            validate_session_id(&id)?;
            (id, false)
        }
        None => (random_token(), true),
    };
    let run = Run {
        command: req.command.clone(),
        cwd,
        env,
        unset,
        timeout_secs: timeout,
        max_output_bytes: max_output,
        ..Run::default()
    };
    let res = st.bashes.run(st.sandbox.as_ref(), &id, run).await;
    if one_off {
        st.bashes.remove(&id);
    }
    let res = res?;
    let exit = &res.outcome.exit;
    let status = if exit.timed_out {
        "timed_out"
    } else if exit.signal.is_some() {
        "killed"
    } else {
        "completed"
    };
    let (exit_code, timed_out, signal, duration) = (
        exit.shell_status(),
        exit.timed_out,
        exit.signal,
        exit.duration_ms,
    );
    let (out_cut, err_cut) = (res.outcome.stdout_truncated, res.outcome.stderr_truncated);
    let stdout = shared(res.outcome.stdout);
    let stderr = shared(res.outcome.stderr);
    Ok(ok_streamed(|j| {
        j.field("session_id", &id)
            .field("command_id", &random_token())
            .text_field("command", shared(req.command))
            .field("status", status)
            .field("offset", &stdout.len())
            .field("stderr_offset", &stderr.len())
            .text_field("stdout", stdout)
            .text_field("stderr", stderr)
            .field("exit_code", &exit_code)
            .field("timed_out", &timed_out)
            .field("signal", &signal)
            .field("stdout_truncated", &out_cut)
            .field("stderr_truncated", &err_cut)
            .field("duration_ms", &duration);
    }))
}

// ---------------------------------------------------------------- file read/write

/// `POST /v1/file/read` body. Lines are 0-based; `end_line` is exclusive.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileReadRequest {
    /// Absolute path.
    pub file: String,
    /// First line, 0-based.
    #[serde(default)]
    pub start_line: Option<i64>,
    /// End line, 0-based, not inclusive.
    #[serde(default)]
    pub end_line: Option<i64>,
    /// Refused when true.
    #[serde(default)]
    pub sudo: Option<bool>,
}

/// `POST /v1/file/read`.
pub async fn file_read(
    State(st): State<AppState>,
    AioJson(req): AioJson<FileReadRequest>,
) -> AioResult {
    no_sudo(req.sudo)?;
    if req.start_line.is_some_and(|s| s < 0) {
        return Err(refuse("start_line", "must be >= 0"));
    }
    if req.end_line.is_some_and(|e| e < 0) {
        return Err(refuse("end_line", "must be >= 0"));
    }
    let start = req.start_line.unwrap_or(0) as u64;
    if let Some(end) = req.end_line
        && (end as u64) <= start
    {
        // An empty range: the file must still exist and be text.
        let whole = st
            .sandbox
            .read_text(ReadText {
                max_bytes: Some(st.config.max_read_bytes),
                ..ReadText::new(&req.file)
            })
            .await
            .map_err(|e| read_refusal(e, "file"))?;
        return Ok(ok(
            json!({ "content": "", "file": whole.path, "total_lines": whole.total_lines }),
        ));
    }
    let ranged = req.start_line.is_some() || req.end_line.is_some();
    let read = ReadText {
        path: req.file.clone(),
        start_line: ranged.then_some(start + 1),
        end_line: req.end_line.map(|e| e as u64),
        max_bytes: Some(st.config.max_read_bytes),
    };
    let text = st
        .sandbox
        .read_text(read)
        .await
        .map_err(|e| read_refusal(e, "file"))?;
    let total = text.total_lines;
    Ok(ok_streamed(|j| {
        j.text_field("content", shared(text.content))
            .field("file", &text.path)
            .field("total_lines", &total);
    }))
}

/// `POST /v1/file/write` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWriteRequest {
    /// Absolute path.
    pub file: String,
    /// Text, or base64 with `encoding: "base64"`.
    pub content: String,
    /// `utf-8` (default), `raw` (same as utf-8) or `base64`.
    #[serde(default)]
    pub encoding: Option<String>,
    /// Append instead of overwrite.
    #[serde(default)]
    pub append: Option<bool>,
    /// Put a newline before the content.
    #[serde(default)]
    pub leading_newline: Option<bool>,
    /// Put a newline after the content.
    #[serde(default)]
    pub trailing_newline: Option<bool>,
    /// Refused when true.
    #[serde(default)]
    pub sudo: Option<bool>,
}

/// `POST /v1/file/write`.
pub async fn file_write(
    State(st): State<AppState>,
    AioJson(req): AioJson<FileWriteRequest>,
) -> AioResult {
    no_sudo(req.sudo)?;
    let append = flag(req.append);
    let lead: &[u8] = if flag(req.leading_newline) {
        b"\n"
    } else {
        b""
    };
    let trail: &[u8] = if flag(req.trailing_newline) {
        b"\n"
    } else {
        b""
    };
    let outcome = match req.encoding.as_deref().unwrap_or("utf-8") {
        "utf-8" | "utf8" | "raw" => {
            let mut content = req.content;
            if !lead.is_empty() {
                content.insert(0, '\n');
            }
            if !trail.is_empty() {
                content.push('\n');
            }
            st.sandbox
                .write_text(WriteText {
                    path: req.file.clone(),
                    content,
                    append,
                })
                .await?
        }
        "base64" => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(req.content.trim())
                .map_err(|e| refuse("content", &format!("is not valid base64: {e}")))?;
            let mut bytes = Vec::with_capacity(raw.len() + 2);
            bytes.extend_from_slice(lead);
            bytes.extend_from_slice(&raw);
            bytes.extend_from_slice(trail);
            let body: paddock_core::sandbox::ByteStream =
                Box::pin(futures_util::stream::once(async move {
                    Ok(bytes::Bytes::from(bytes))
                }));
            let req = WriteBytes {
                path: req.file.clone(),
                append,
                max_bytes: None,
            };
            st.sandbox.write_bytes(req, body).await?
        }
        _ => return Err(refuse("encoding", "must be one of utf-8, raw, base64")),
    };
    Ok(ok(
        json!({ "file": outcome.path, "bytes_written": outcome.bytes_written }),
    ))
}

// ---------------------------------------------------------------- download / upload

/// `GET /v1/file/download` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadQuery {
    /// Absolute path.
    pub path: String,
}

/// Streams a file as an attachment (shared with the native byte route).
pub fn file_response(path: &str, fs: paddock_core::sandbox::FileStream) -> Response {
    let name = path.rsplit('/').next().unwrap_or("download");
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut resp = Response::new(Body::from_stream(fs.stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(fs.len));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{ascii}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert("x-file-size", HeaderValue::from(fs.file_size));
    resp
}

/// `GET /v1/file/download?path=`: the file's bytes, streamed.
pub async fn file_download(
    State(st): State<AppState>,
    AioQuery(q): AioQuery<DownloadQuery>,
) -> AioResult {
    let fs = st
        .sandbox
        .read_bytes(ReadBytes {
            path: q.path.clone(),
            offset: 0,
            len: None,
        })
        .await?;
    Ok(file_response(&q.path, fs))
}

fn upload_target(path: Option<String>, filename: Option<&str>) -> Result<String, AioError> {
    let clean_name = || -> Result<String, AioError> {
        let name = filename
            .and_then(|f| f.rsplit(['/', '\\']).next())
            .unwrap_or_default();
        if name.is_empty() || name == "." || name == ".." || name.contains('\0') {
            return Err(refuse(
                "file",
                "the uploaded file has no usable file name; give a path",
            ));
        }
        Ok(name.to_owned())
    };
    match path {
        Some(p) if p.ends_with('/') => Ok(format!("{p}{}", clean_name()?)),
        Some(p) => Ok(p),
        None => Ok(format!(
            "{}/{}",
            paddock_core::mount::UPLOADS,
            clean_name()?
        )),
    }
}

/// `POST /v1/file/upload` (multipart: optional `path` field, then the `file` part),
/// streamed to disk through `Sandbox::write_bytes` with the configured cap.
pub async fn file_upload(State(st): State<AppState>, req: axum::extract::Request) -> AioResult {
    use axum::extract::FromRequest as _;
    // Built here rather than as an extractor so a malformed body gets our JSON error.
    let mut mp = Multipart::from_request(req, &()).await.map_err(|r| {
        AioError(
            ApiError::new(
                r.status(),
                "invalid_multipart",
                format!("invalid multipart body: {}", r.body_text()),
            )
            .with_field("content-type"),
        )
    })?;
    let bad = |e: axum::extract::multipart::MultipartError| {
        AioError(ApiError::new(
            e.status(),
            "invalid_multipart",
            format!("invalid multipart body: {}", e.body_text()),
        ))
    };
    let mut path: Option<String> = None;
    loop {
        let Some(field) = mp.next_field().await.map_err(bad)? else {
            return Err(refuse("file", "the multipart body has no file part"));
        };
        match field.name() {
            Some("path") => {
                // Read the field in chunks so an oversized one is refused, not buffered.
                let mut field = field;
                let mut raw = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    raw.extend_from_slice(&chunk);
                    if raw.len() > paddock_core::vpath::MAX_PATH_LEN {
                        return Err(refuse("path", "is too long"));
                    }
                }
                let text = String::from_utf8(raw).map_err(|_| refuse("path", "is not UTF-8"))?;
                path = (!text.is_empty()).then_some(text);
            }
            Some("file") => {
                let target = upload_target(path.take(), field.file_name())?;
                let cap = st.config.max_upload_bytes;
                // The field borrows the multipart reader, so the bytes are handed to the
                // writer over a small channel polled in this same task.
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, SandboxError>>(4);
                let body: paddock_core::sandbox::ByteStream =
                    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|item| (item, rx))
                    }));
                let write = st.sandbox.write_bytes(
                    WriteBytes {
                        path: target.clone(),
                        append: false,
                        max_bytes: Some(cap),
                    },
                    body,
                );
                let pump = async move {
                    let mut field = field;
                    loop {
                        match field.chunk().await {
                            Ok(Some(chunk)) => {
                                if tx.send(Ok(chunk)).await.is_err() {
                                    return None;
                                }
                            }
                            Ok(None) => return None,
                            Err(e) => {
                                let msg = format!("upload interrupted: {}", e.body_text());
                                let _ = tx
                                    .send(Err(SandboxError::invalid_argument("file", msg.clone())))
                                    .await;
                                return Some(e);
                            }
                        }
                    }
                };
                let (written, pump_err) = tokio::join!(write, pump);
                if let Some(e) = pump_err {
                    return Err(bad(e));
                }
                let out = written?;
                return Ok(ok(
                    json!({ "file_path": out.path, "file_size": out.bytes_written, "success": true }),
                ));
            }
            Some(other) => {
                return Err(refuse(
                    other,
                    "unknown multipart field (expected path and file)",
                ));
            }
            None => return Err(refuse("file", "a multipart part has no name")),
        }
    }
}

// ---------------------------------------------------------------- find / list / grep

/// `POST /v1/file/find` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindRequest {
    /// Directory to search.
    pub path: String,
    /// A file-name pattern (`*.py`, matched at any depth) or a relative path pattern
    /// (containing `/`, `**` recursive).
    pub glob: String,
}

/// Result cap of `find` (the SDK offers no parameter).
pub const FIND_MAX_RESULTS: usize = 10_000;

/// `POST /v1/file/find`.
pub async fn file_find(
    State(st): State<AppState>,
    AioJson(req): AioJson<FindRequest>,
) -> AioResult {
    if req.glob.is_empty() {
        return Err(refuse("glob", "must not be empty"));
    }
    let pattern = if req.glob.contains('/') {
        req.glob.clone()
    } else {
        format!("**/{}", req.glob)
    };
    let mut g = Glob::new(&req.path, pattern);
    g.max_results = FIND_MAX_RESULTS;
    let out = st
        .sandbox
        .glob(g)
        .await
        .map_err(|e| AioError(ApiError::sandbox(e)))?;
    let root = VirtualPath::parse(&req.path)
        .map(|p| p.to_string())
        .unwrap_or(req.path);
    let files: Vec<String> = out.paths.iter().map(ToString::to_string).collect();
    // Paths with a name that is not UTF-8: their index in `files` and the exact path
    // escaped (as in `/v1/file/list`); absent when there are none.
    let mut body = json!({ "path": root, "files": files, "truncated": out.truncated });
    if !out.escaped_paths.is_empty() {
        body["escaped_paths"] = json!(
            out.escaped_paths
                .iter()
                .map(|(i, p)| (i.to_string(), Value::String(p.clone())))
                .collect::<serde_json::Map<String, Value>>()
        );
    }
    Ok(ok(body))
}

/// `POST /v1/file/list` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    /// Directory.
    pub path: String,
    /// Descend (to `max_depth`, default unlimited up to 64 levels).
    #[serde(default)]
    pub recursive: Option<bool>,
    /// Include dot files (default false).
    #[serde(default)]
    pub show_hidden: Option<bool>,
    /// Only files with these extensions (directories are kept).
    #[serde(default)]
    pub file_types: Option<Vec<String>>,
    /// Depth when recursive.
    #[serde(default)]
    pub max_depth: Option<i64>,
    /// Report sizes (default true).
    #[serde(default)]
    pub include_size: Option<bool>,
    /// Refused when true (Paddock does not expose host permissions).
    #[serde(default)]
    pub include_permissions: Option<bool>,
    /// `name` (default), `size`, `modified` or `type`.
    #[serde(default)]
    pub sort_by: Option<String>,
    /// Descending order.
    #[serde(default)]
    pub sort_desc: Option<bool>,
}

/// Deepest recursive listing.
pub const LIST_MAX_DEPTH: u32 = 64;

pub use paddock_core::time::iso8601;

/// `POST /v1/file/list`.
pub async fn file_list(
    State(st): State<AppState>,
    AioJson(req): AioJson<ListRequest>,
) -> AioResult {
    if flag(req.include_permissions) {
        return Err(refuse(
            "include_permissions",
            "permissions are not exposed by Paddock",
        ));
    }
    let depth = if flag(req.recursive) {
        match req.max_depth {
            Some(d) if d < 1 => return Err(refuse("max_depth", "must be >= 1")),
            Some(d) => u32::try_from(d)
                .unwrap_or(LIST_MAX_DEPTH)
                .min(LIST_MAX_DEPTH),
            None => LIST_MAX_DEPTH,
        }
    } else {
        1
    };
    let sort_by = req.sort_by.as_deref().unwrap_or("name");
    if !matches!(sort_by, "name" | "size" | "modified" | "type") {
        return Err(refuse(
            "sort_by",
            "must be one of name, size, modified, type",
        ));
    }
    let mut list = List::new(&req.path);
    list.max_depth = depth;
    list.show_hidden = flag(req.show_hidden);
    list.apply_ignore = false;
    let listing = st.sandbox.list(list).await?;
    let types: Option<Vec<String>> = req.file_types.map(|ts| {
        ts.iter()
            .map(|t| t.trim_start_matches('.').to_ascii_lowercase())
            .collect()
    });
    let include_size = req.include_size.unwrap_or(true);
    let mut files: Vec<(Value, &paddock_core::sandbox::Entry)> = Vec::new();
    for e in &listing.entries {
        let name = e.path.file_name().unwrap_or_default().to_owned();
        let is_dir = e.kind == EntryKind::Dir;
        let extension = (!is_dir)
            .then(|| name.rsplit_once('.').map(|(_, x)| x.to_owned()))
            .flatten();
        if let Some(ts) = &types
            && !is_dir
            && !extension
                .as_ref()
                .is_some_and(|x| ts.contains(&x.to_ascii_lowercase()))
        {
            continue;
        }
        let mut v = json!({
            "name": name,
            "path": e.path.to_string(),
            "is_directory": is_dir,
            "size": if include_size { Some(e.size) } else { None },
            "modified_time": e.modified.map(iso8601),
            "permissions": null,
            "extension": extension,
        });
        // A name that is not UTF-8 is listed with a lossy stand-in in `name` and `path`
        // (the schema's strings) and, beside them, the exact path escaped, so two such
        // names never read as one and the file can still be addressed.
        if let Some(exact) = &e.escaped_path {
            v["escaped_path"] = json!(exact);
        }
        files.push((v, e));
    }
    files.sort_by(|(_, a), (_, b)| match sort_by {
        "size" => a.size.cmp(&b.size).then(a.path.cmp(&b.path)),
        "modified" => a.modified.cmp(&b.modified).then(a.path.cmp(&b.path)),
        "type" => (a.kind != EntryKind::Dir)
            .cmp(&(b.kind != EntryKind::Dir))
            .then(a.path.cmp(&b.path)),
        _ => a.path.cmp(&b.path),
    });
    if flag(req.sort_desc) {
        files.reverse();
    }
    let dirs = files
        .iter()
        .filter(|(_, e)| e.kind == EntryKind::Dir)
        .count();
    let total = files.len();
    let root = VirtualPath::parse(&req.path)
        .map(|p| p.to_string())
        .unwrap_or(req.path);
    Ok(ok(json!({
        "path": root,
        "files": files.into_iter().map(|(v, _)| v).collect::<Vec<_>>(),
        "total_count": total,
        "directory_count": dirs,
        "file_count": total - dirs,
        "truncated": listing.truncated,
    })))
}

/// `POST /v1/file/grep` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrepRequest {
    /// File or directory.
    pub path: String,
    /// Regex (or literal with `fixed_strings`).
    pub pattern: String,
    /// Only files matching one of these globs (relative path or file name).
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// Skip files matching one of these globs.
    #[serde(default)]
    pub exclude: Option<Vec<String>>,
    /// Ignore case (default false).
    #[serde(default)]
    pub case_insensitive: Option<bool>,
    /// Literal pattern.
    #[serde(default)]
    pub fixed_strings: Option<bool>,
    /// Refused when > 0.
    #[serde(default)]
    pub context_before: Option<i64>,
    /// Refused when > 0.
    #[serde(default)]
    pub context_after: Option<i64>,
    /// Result cap (default 100).
    #[serde(default)]
    pub max_results: Option<i64>,
    /// Skip larger files (`1M`, `500K`, bytes); Paddock never searches files over 1 MB.
    #[serde(default)]
    pub max_file_size: Option<String>,
    /// Refused when true.
    #[serde(default)]
    pub multiline: Option<bool>,
    /// Skip this many matches (paging).
    #[serde(default)]
    pub offset: Option<i64>,
    /// Refused when set (no file-type database).
    #[serde(default)]
    pub r#type: Option<String>,
    /// Search subdirectories (default true).
    #[serde(default)]
    pub recursive: Option<bool>,
}

/// Largest `max_results` + `offset` accepted.
pub const GREP_MAX_RESULTS: usize = 10_000;

/// Parses `1M`, `500K`, `2G`, `123` into bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let (num, mult) = match t.chars().last()?.to_ascii_uppercase() {
        'K' => (&t[..t.len() - 1], 1024u64),
        'M' => (&t[..t.len() - 1], 1024 * 1024),
        'G' => (&t[..t.len() - 1], 1024 * 1024 * 1024),
        _ => (t, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

fn globset(field: &str, pats: &[String]) -> Result<globset::GlobSet, AioError> {
    let mut b = globset::GlobSetBuilder::new();
    for p in pats {
        let g = globset::GlobBuilder::new(p)
            .literal_separator(false)
            .build()
            .map_err(|e| refuse(field, &format!("invalid glob {p:?}: {e}")))?;
        b.add(g);
    }
    b.build()
        .map_err(|e| refuse(field, &format!("invalid globs: {e}")))
}

/// `POST /v1/file/grep`.
pub async fn file_grep(
    State(st): State<AppState>,
    AioJson(req): AioJson<GrepRequest>,
) -> AioResult {
    if req.context_before.is_some_and(|n| n != 0) {
        return Err(refuse("context_before", "context lines are not supported"));
    }
    if req.context_after.is_some_and(|n| n != 0) {
        return Err(refuse("context_after", "context lines are not supported"));
    }
    if flag(req.multiline) {
        return Err(refuse("multiline", "multiline search is not supported"));
    }
    if req.r#type.is_some() {
        return Err(refuse(
            "type",
            "file types are not supported; use include globs",
        ));
    }
    let max = match req.max_results {
        Some(n) if n < 1 => return Err(refuse("max_results", "must be >= 1")),
        Some(n) => usize::try_from(n)
            .unwrap_or(GREP_MAX_RESULTS)
            .min(GREP_MAX_RESULTS),
        None => paddock_core::sandbox::DEFAULT_GREP_MAX_RESULTS,
    };
    let offset = match req.offset {
        Some(n) if n < 0 => return Err(refuse("offset", "must be >= 0")),
        Some(n) => usize::try_from(n)
            .unwrap_or(GREP_MAX_RESULTS)
            .min(GREP_MAX_RESULTS),
        None => 0,
    };
    let size_cap =
        match &req.max_file_size {
            Some(s) => Some(parse_size(s).ok_or_else(|| {
                refuse("max_file_size", "must be a size such as 1M, 500K or 1024")
            })?),
            None => None,
        };
    let include = req
        .include
        .as_deref()
        .map(|p| globset("include", p))
        .transpose()?;
    let exclude = req
        .exclude
        .as_deref()
        .map(|p| globset("exclude", p))
        .transpose()?;
    let recursive = req.recursive.unwrap_or(true);
    let mut g = Grep::new(&req.path, &req.pattern);
    g.literal = flag(req.fixed_strings);
    g.case_sensitive = !flag(req.case_insensitive);
    let filtering = include.is_some() || exclude.is_some() || !recursive || size_cap.is_some();
    // With client-side filters, ask for more so the filtered page can still fill up.
    g.max_results = if filtering {
        GREP_MAX_RESULTS
    } else {
        (max + offset).min(GREP_MAX_RESULTS)
    };
    let out = st.sandbox.grep(g).await?;
    let root = VirtualPath::parse(&req.path).map_err(|e| AioError(ApiError::sandbox(e)))?;
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    let mut kept = Vec::new();
    for m in &out.matches {
        let rel = m
            .path
            .strip_prefix(&root)
            .unwrap_or(m.path.file_name().unwrap_or_default())
            .to_owned();
        let name = m.path.file_name().unwrap_or_default();
        let rel = if rel.is_empty() { name.to_owned() } else { rel };
        if !recursive && rel.contains('/') {
            continue;
        }
        if let Some(inc) = &include
            && !(inc.is_match(&rel) || inc.is_match(name))
        {
            continue;
        }
        if let Some(exc) = &exclude
            && (exc.is_match(&rel) || exc.is_match(name))
        {
            continue;
        }
        if let Some(cap) = size_cap {
            let key = m.path.to_string();
            let size = match sizes.get(&key) {
                Some(s) => *s,
                None => {
                    let s = st
                        .sandbox
                        .stat(&key)
                        .await
                        .map(|e| e.size)
                        .unwrap_or(u64::MAX);
                    sizes.insert(key, s);
                    s
                }
            };
            if size > cap {
                continue;
            }
        }
        kept.push(m);
    }
    let available = kept.len();
    let page: Vec<Value> = kept
        .into_iter()
        .skip(offset)
        .take(max)
        .map(|m| json!({ "file": m.path.to_string(), "line_number": m.line_number, "line_content": m.line }))
        .collect();
    let files_matched = {
        let mut f: Vec<&str> = page.iter().filter_map(|v| v["file"].as_str()).collect();
        f.dedup();
        f.len()
    };
    let truncated = out.truncated || available > offset + page.len();
    Ok(ok(json!({
        "path": root.to_string(),
        "pattern": req.pattern,
        "matches": page,
        "match_count": page.len(),
        "files_matched": files_matched,
        "truncated": truncated,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1M"), Some(1024 * 1024));
        assert_eq!(parse_size("500k"), Some(500 * 1024));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn truncation() {
        assert_eq!(truncate_chars("abc".into(), 5), "abc");
        assert!(
            truncate_chars("abcdef".into(), 3).starts_with("abc\n... [output truncated: 3 more")
        );
    }

    #[test]
    fn upload_targets() {
        assert_eq!(
            upload_target(None, Some("a.txt")).unwrap(),
            "/mnt/user-data/uploads/a.txt"
        );
        assert_eq!(
            upload_target(Some("/mnt/user-data/x/".into()), Some("../a")).unwrap(),
            "/mnt/user-data/x/a"
        );
        assert_eq!(
            upload_target(Some("/mnt/user-data/y".into()), None).unwrap(),
            "/mnt/user-data/y"
        );
        assert!(upload_target(None, None).is_err());
    }
}
