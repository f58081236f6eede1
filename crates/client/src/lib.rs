//! A typed Rust client for Paddock's agent API, and [`RemoteSandbox`], which implements
//! the `Sandbox` trait over it so a sandbox behind an agent is used exactly like a local
//! one.
//!
//! Invariant: every failure comes back as the `SandboxError` the agent's sandbox produced
//! (native error bodies carry it serialised); only failures of the transport itself
//! become `Unavailable`. Byte transfers stream in both directions, never buffered whole.

pub mod aio;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use paddock_core::Sandbox;
use paddock_core::SandboxError;
use paddock_core::sandbox::{
    ByteStream, Entry, ExecEvent, ExecRequest, ExecStream, FileStream, Glob, GlobOutcome, Grep,
    GrepOutcome, List, Listing, ReadBytes, ReadText, ReplaceOutcome, SandboxInfo, StrReplace,
    TextContent, WriteBytes, WriteOutcome, WriteText,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Errors building a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not an absolute http(s) URL.
    #[error("invalid agent URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why.
        reason: &'static str,
    },
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client: {0}")]
    Http(String),
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
pub fn encode_query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A client of one sandbox's agent API.
#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    base: String,
    bearer: Option<String>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The base URL may hold the capability secret; show only the origin.
        let origin: String = self
            .base
            .splitn(4, '/')
            .take(3)
            .collect::<Vec<_>>()
            .join("/");
        f.debug_struct("AgentClient")
            .field("origin", &origin)
            .finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Unavailable {
        message: format!("agent request failed: {e}"),
    }
}

impl AgentClient {
    /// A client for `base_url` (`http://host:port` or `http://host:port/s/{token}`).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::InvalidUrl {
                url: base_url.to_owned(),
                reason: "must start with http:// or https://",
            });
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        Ok(Self {
            http,
            base,
            bearer: None,
        })
    }

    /// Sends `Authorization: Bearer {token}` on every request.
    pub fn with_bearer(mut self, token: impl Into<String>) -> Self {
        self.bearer = Some(token.into());
        self
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request builder with authentication applied.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, self.url(path));
        match &self.bearer {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Turns a non-2xx response into the `SandboxError` it carries.
    pub async fn error_from(resp: reqwest::Response) -> SandboxError {
        let status = resp.status();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => return unavailable(e),
        };
        error_from_body(status.as_u16(), &text)
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, SandboxError> {
        let resp = rb.send().await.map_err(unavailable)?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(Self::error_from(resp).await)
        }
    }

    /// POSTs JSON and decodes the JSON answer.
    pub async fn post_json<Q: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &Q,
    ) -> Result<R, SandboxError> {
        let bytes = serde_json::to_vec(body).map_err(|e| SandboxError::Internal {
            message: format!("could not encode a request: {e}"),
        })?;
        let rb = self
            .request(reqwest::Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bytes);
        let resp = self.send(rb).await?;
        decode(resp).await
    }

    /// GETs JSON.
    pub async fn get_json<R: DeserializeOwned>(&self, path: &str) -> Result<R, SandboxError> {
        let resp = self.send(self.request(reqwest::Method::GET, path)).await?;
        decode(resp).await
    }

    /// `GET /v1/info`.
    pub async fn info(&self) -> Result<SandboxInfo, SandboxError> {
        self.get_json("/v1/info").await
    }

    /// `POST /v1/exec`, as a stream of events ending with the exit record.
    pub async fn exec_stream(&self, req: &ExecRequest) -> Result<ExecStream, SandboxError> {
        let bytes = serde_json::to_vec(req).map_err(|e| SandboxError::Internal {
            message: format!("could not encode a request: {e}"),
        })?;
        let rb = self
            .request(reqwest::Method::POST, "/v1/exec")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bytes);
        let resp = self.send(rb).await?;
        Ok(ndjson_events(
            resp.bytes_stream().map(|r| r.map_err(unavailable)),
        ))
    }

    /// `POST /v1/fs/read_text`.
    pub async fn read_text(&self, req: &ReadText) -> Result<TextContent, SandboxError> {
        self.post_json("/v1/fs/read_text", req).await
    }

    /// `GET /v1/fs/read_bytes`, streamed.
    pub async fn read_bytes(&self, req: &ReadBytes) -> Result<FileStream, SandboxError> {
        let mut q = format!(
            "/v1/fs/read_bytes?path={}&offset={}",
            encode_query_value(&req.path),
            req.offset
        );
        if let Some(len) = req.len {
            q.push_str(&format!("&len={len}"));
        }
        let resp = self.send(self.request(reqwest::Method::GET, &q)).await?;
        Ok(file_stream(resp))
    }

    /// `POST /v1/fs/write_text`.
    pub async fn write_text(&self, req: &WriteText) -> Result<WriteOutcome, SandboxError> {
        self.post_json("/v1/fs/write_text", req).await
    }

    /// `PUT /v1/fs/write_bytes`, streaming `body`.
    pub async fn write_bytes(
        &self,
        req: &WriteBytes,
        body: ByteStream,
    ) -> Result<WriteOutcome, SandboxError> {
        let mut q = format!(
            "/v1/fs/write_bytes?path={}&append={}",
            encode_query_value(&req.path),
            req.append
        );
        if let Some(m) = req.max_bytes {
            q.push_str(&format!("&max_bytes={m}"));
        }
        // A failure of the caller's own stream aborts the upload; report that failure,
        // not the broken connection it causes.
        let local_err: Arc<Mutex<Option<SandboxError>>> = Arc::default();
        let seen = local_err.clone();
        let body = body.map(move |r| {
            r.inspect_err(|e| {
                if let Ok(mut slot) = seen.lock() {
                    slot.get_or_insert(e.clone());
                }
            })
        });
        let rb = self
            .request(reqwest::Method::PUT, &q)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(body));
        let result = self.send(rb).await;
        if let Some(e) = local_err.lock().ok().and_then(|mut s| s.take()) {
            return Err(e);
        }
        decode(result?).await
    }

    /// `POST /v1/fs/stat`.
    pub async fn stat(&self, path: &str) -> Result<Entry, SandboxError> {
        self.post_json("/v1/fs/stat", &serde_json::json!({ "path": path }))
            .await
    }

    /// `POST /v1/fs/list`.
    pub async fn list(&self, req: &List) -> Result<Listing, SandboxError> {
        self.post_json("/v1/fs/list", req).await
    }

    /// `POST /v1/fs/glob`.
    pub async fn glob(&self, req: &Glob) -> Result<GlobOutcome, SandboxError> {
        self.post_json("/v1/fs/glob", req).await
    }

    /// `POST /v1/fs/grep`.
    pub async fn grep(&self, req: &Grep) -> Result<GrepOutcome, SandboxError> {
        self.post_json("/v1/fs/grep", req).await
    }

    /// `POST /v1/fs/str_replace`.
    pub async fn str_replace(&self, req: &StrReplace) -> Result<ReplaceOutcome, SandboxError> {
        self.post_json("/v1/fs/str_replace", req).await
    }

    /// `POST /v1/tools/{name}`: `(output, is_error)`.
    pub async fn tool(&self, name: &str, args: &Value) -> Result<(String, bool), SandboxError> {
        let v: Value = self
            .post_json(&format!("/v1/tools/{}", encode_query_value(name)), args)
            .await?;
        let output = v["output"].as_str().unwrap_or_default().to_owned();
        Ok((output, v["is_error"].as_bool().unwrap_or(false)))
    }
}

async fn decode<R: DeserializeOwned>(resp: reqwest::Response) -> Result<R, SandboxError> {
    let bytes = resp.bytes().await.map_err(unavailable)?;
    serde_json::from_slice(&bytes).map_err(|e| SandboxError::Unavailable {
        message: format!("the agent sent an unexpected answer: {e}"),
    })
}

/// Rebuilds the error an agent answered with `status` and `body`.
pub fn error_from_body(status: u16, body: &str) -> SandboxError {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if let Some(Ok(e)) = v
        .get("error")
        .filter(|e| !e.is_null())
        .map(|e| serde_json::from_value::<SandboxError>(e.clone()))
    {
        return e;
    }
    let message = v
        .get("detail")
        .and_then(Value::as_str)
        .or_else(|| v.get("message").and_then(Value::as_str))
        .map(str::to_owned)
        .unwrap_or_else(|| body.chars().take(300).collect());
    let field = v
        .get("field")
        .and_then(Value::as_str)
        .unwrap_or("request")
        .to_owned();
    match status {
        400 | 415 | 422 => SandboxError::InvalidArgument { field, message },
        413 => SandboxError::TooLarge {
            path: field,
            size: 0,
            limit: 0,
        },
        _ => SandboxError::Unavailable {
            message: format!("agent answered HTTP {status}: {message}"),
        },
    }
}

fn file_stream(resp: reqwest::Response) -> FileStream {
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let len = header("content-length").unwrap_or(0);
    let file_size = header("x-file-size").unwrap_or(len);
    let stream: ByteStream = Box::pin(resp.bytes_stream().map(|r| r.map_err(unavailable)));
    FileStream {
        len,
        file_size,
        stream,
    }
}

/// Decodes an NDJSON exec stream: events, or an in-band error line.
pub fn ndjson_events<S>(bytes: S) -> ExecStream
where
    S: futures_util::Stream<Item = Result<Bytes, SandboxError>> + Send + 'static,
{
    let state = (Box::pin(bytes), Vec::<u8>::new(), false);
    Box::pin(futures_util::stream::unfold(
        state,
        |(mut src, mut buf, done)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let line = &line[..line.len() - 1];
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let item = parse_event(line);
                    let end = matches!(item, Ok(ExecEvent::Exit(_)) | Err(_));
                    return Some((item, (src, buf, end)));
                }
                match src.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(e), (src, buf, true))),
                    None => {
                        let e = SandboxError::Unavailable {
                            message: "the agent closed the exec stream before the exit record"
                                .into(),
                        };
                        return Some((Err(e), (src, buf, true)));
                    }
                }
            }
        },
    ))
}

fn parse_event(line: &[u8]) -> Result<ExecEvent, SandboxError> {
    let v: Value = serde_json::from_slice(line).map_err(|e| SandboxError::Unavailable {
        message: format!("the agent sent a malformed exec event: {e}"),
    })?;
    if v.get("type").and_then(Value::as_str) == Some("error") {
        return Err(v
            .get("error")
            .and_then(|e| serde_json::from_value::<SandboxError>(e.clone()).ok())
            .unwrap_or_else(|| SandboxError::Unavailable {
                message: "the exec stream failed".into(),
            }));
    }
    serde_json::from_value(v).map_err(|e| SandboxError::Unavailable {
        message: format!("the agent sent an unknown exec event: {e}"),
    })
}

/// A sandbox behind an agent, used through the `Sandbox` trait.
#[derive(Debug, Clone)]
pub struct RemoteSandbox {
    client: AgentClient,
    info: SandboxInfo,
}

impl RemoteSandbox {
    /// Connects (fetching the sandbox's facts once).
    pub async fn connect(client: AgentClient) -> Result<Self, SandboxError> {
        let mut info = client.info().await?;
        info.backend = "remote".to_owned();
        Ok(Self { client, info })
    }

    /// The underlying client.
    pub fn client(&self) -> &AgentClient {
        &self.client
    }
}

#[async_trait]
impl Sandbox for RemoteSandbox {
    fn info(&self) -> SandboxInfo {
        self.info.clone()
    }

    async fn exec_stream(&self, req: ExecRequest) -> Result<ExecStream, SandboxError> {
        req.validate()?;
        self.client.exec_stream(&req).await
    }

    async fn read_text(&self, req: ReadText) -> Result<TextContent, SandboxError> {
        self.client.read_text(&req).await
    }

    async fn read_bytes(&self, req: ReadBytes) -> Result<FileStream, SandboxError> {
        self.client.read_bytes(&req).await
    }

    async fn write_text(&self, req: WriteText) -> Result<WriteOutcome, SandboxError> {
        self.client.write_text(&req).await
    }

    async fn write_bytes(
        &self,
        req: WriteBytes,
        body: ByteStream,
    ) -> Result<WriteOutcome, SandboxError> {
        self.client.write_bytes(&req, body).await
    }

    async fn stat(&self, path: &str) -> Result<Entry, SandboxError> {
        self.client.stat(path).await
    }

    async fn list(&self, req: List) -> Result<Listing, SandboxError> {
        self.client.list(&req).await
    }

    async fn glob(&self, req: Glob) -> Result<GlobOutcome, SandboxError> {
        self.client.glob(&req).await
    }

    async fn grep(&self, req: Grep) -> Result<GrepOutcome, SandboxError> {
        self.client.grep(&req).await
    }

    async fn str_replace(&self, req: StrReplace) -> Result<ReplaceOutcome, SandboxError> {
        self.client.str_replace(&req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_round_trip() {
        let e = SandboxError::Escape {
            path: "/mnt/user-data/../x".into(),
        };
        let body = serde_json::json!({ "detail": e.to_string(), "error": e }).to_string();
        assert_eq!(error_from_body(403, &body), e);
        let e = error_from_body(422, r#"{"detail":"invalid bogus","field":"bogus"}"#);
        assert_eq!(
            e,
            SandboxError::InvalidArgument {
                field: "bogus".into(),
                message: "invalid bogus".into()
            }
        );
        assert_eq!(error_from_body(502, "gateway").code(), "unavailable");
    }

    #[test]
    fn query_encoding() {
        assert_eq!(
            encode_query_value("/mnt/a b&c=ü"),
            "/mnt/a%20b%26c%3D%C3%BC"
        );
    }

    #[tokio::test]
    async fn ndjson_parsing() {
        let chunks: Vec<Result<Bytes, SandboxError>> = vec![
            Ok(Bytes::from_static(b"{\"type\":\"stdout\",\"data\":\"h")),
            Ok(Bytes::from_static(
                b"i\"}\n{\"type\":\"exit\",\"exit_code\":0,\"signal\":null,\"timed_out\":false,",
            )),
            Ok(Bytes::from_static(
                b"\"stdout_dropped\":0,\"stderr_dropped\":0,\"duration_ms\":1}\n",
            )),
        ];
        let s = ndjson_events(futures_util::stream::iter(chunks));
        let out = paddock_core::sandbox::ExecOutcome::collect(s)
            .await
            .unwrap();
        assert_eq!(out.stdout, "hi");
        assert_eq!(out.exit.exit_code, Some(0));
        let chunks: Vec<Result<Bytes, SandboxError>> = vec![Ok(Bytes::from_static(
            b"{\"type\":\"error\",\"error\":{\"kind\":\"not_found\",\"path\":\"/x\"}}\n",
        ))];
        let e = paddock_core::sandbox::ExecOutcome::collect(ndjson_events(
            futures_util::stream::iter(chunks),
        ))
        .await
        .unwrap_err();
        assert_eq!(e, SandboxError::NotFound { path: "/x".into() });
    }
}
