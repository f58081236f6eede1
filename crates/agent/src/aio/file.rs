//! One file's content: `POST /v1/file/read` (a line range), `POST /v1/file/write` (text
//! or base64), `GET /v1/file/download` (streamed) and `POST /v1/file/upload` (multipart,
//! streamed to disk under the upload cap).

use axum::body::Body;
use axum::extract::{Multipart, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use base64::Engine as _;
use paddock_core::SandboxError;
use paddock_core::sandbox::{ReadBytes, ReadText, WriteBytes, WriteText};
use serde::Deserialize;
use serde_json::json;

use super::envelope::{AioResult, flag, ok, ok_streamed, read_refusal, refuse, shared};
use crate::AppState;
use crate::error::{AioError, ApiError};
use crate::extract::{AioJson, AioQuery};

/// Refuses `sudo: true`.
fn no_sudo(sudo: Option<bool>) -> Result<(), AioError> {
    if flag(sudo) {
        return Err(refuse(
            "sudo",
            "sudo is not supported: sandboxed commands never gain privileges",
        ));
    }
    Ok(())
}

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

/// Where an upload goes: `path`, or `path` + the file's name when `path` ends in `/`, or
/// the uploads directory + the file's name when there is no `path`.
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

#[cfg(test)]
mod tests {
    use super::*;

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
