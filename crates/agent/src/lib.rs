//! Paddock's in-sandbox agent API (the data plane): the AIO-compatible routes DeerFlow and
//! the `agent-sandbox` SDK use, Paddock's native routes (one per `Sandbox` operation,
//! streamed exec, tools) and `/openapi.json`, served over one `Arc<dyn Sandbox>`.
//!
//! Invariant: every operation goes through the `Sandbox` trait (so through the sandbox's
//! mount table), every error leaves as JSON, and when a token is configured no request
//! reaches a handler without it: the secret is either the capability path prefix
//! `/s/{token}` (so unmodified clients that only know a base URL work) or an
//! `Authorization: Bearer` header, compared in constant time.

pub mod aio;
pub mod auth;
pub mod cli;
pub mod error;
pub mod extract;
pub mod heavy;
pub mod jsonbody;
pub mod listen;
pub mod native;
pub mod openapi;
pub mod shell;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use paddock_core::Sandbox;

pub use auth::{CapabilityRouter, app_with_auth};
pub use error::{ApiError, Surface};
pub use heavy::HeavyLimit;

/// Default cap on a JSON request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Cap on the body of a light route (stat, session create): they take a path or an id.
pub const LIGHT_BODY_BYTES: usize = 64 * 1024;
/// Default cap on a file read whole into memory (`/v1/file/read`, `/v1/fs/read_text`,
/// `str_replace` and the tools): larger files are refused with 413, to be downloaded.
pub const DEFAULT_MAX_READ_BYTES: u64 = 16 * 1024 * 1024;
/// Default cap on one upload (multipart or raw), streamed to disk.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1024 * 1024 * 1024;
/// Default cap on remembered shell sessions per sandbox.
pub const DEFAULT_MAX_SHELL_SESSIONS: usize = 256;

/// How the agent API behaves.
#[derive(Clone)]
pub struct AgentConfig {
    /// The per-sandbox secret; `None` serves without authentication (for a server that
    /// authenticates in front of it, e.g. [`CapabilityRouter`]).
    pub token: Option<String>,
    /// Largest JSON body accepted.
    pub max_body_bytes: usize,
    /// Largest upload accepted.
    pub max_upload_bytes: u64,
    /// Shell sessions kept per sandbox (least recently used forgotten first).
    pub max_shell_sessions: usize,
    /// Largest file read whole into memory (text reads, edits and what an edit produces).
    pub max_read_bytes: u64,
    /// Concurrent heavy requests per sandbox (0: no limit); see [`heavy`].
    pub max_heavy_per_sandbox: usize,
    /// Concurrent heavy requests over every sandbox holding a clone (`None`: no limit).
    pub heavy_global: Option<HeavyLimit>,
    /// The tool layer behind `POST /v1/tools/{name}` (`None` disables it: 404 there).
    pub tools: Option<paddock_tools::ToolsConfig>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("max_shell_sessions", &self.max_shell_sessions)
            .field("max_read_bytes", &self.max_read_bytes)
            .field("max_heavy_per_sandbox", &self.max_heavy_per_sandbox)
            .field("heavy_global", &self.heavy_global)
            .field("tools", &self.tools)
            .finish()
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            max_shell_sessions: DEFAULT_MAX_SHELL_SESSIONS,
            max_read_bytes: DEFAULT_MAX_READ_BYTES,
            max_heavy_per_sandbox: heavy::DEFAULT_MAX_HEAVY_PER_SANDBOX,
            heavy_global: Some(HeavyLimit::global(heavy::DEFAULT_MAX_HEAVY)),
            tools: Some(paddock_tools::ToolsConfig::default()),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The sandbox served.
    pub sandbox: Arc<dyn Sandbox>,
    /// The configuration.
    pub config: AgentConfig,
    /// `/v1/shell/*` sessions.
    pub shells: Arc<shell::Sessions>,
    /// `/v1/bash/*` sessions.
    pub bashes: Arc<shell::Sessions>,
    /// The tool layer, when enabled.
    pub tools: Option<Arc<paddock_tools::Tools>>,
}

async fn tools_call(
    axum::extract::State(st): axum::extract::State<AppState>,
    name: axum::extract::Path<String>,
    extract::Json(args): extract::Json<serde_json::Value>,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::StatusCode;
    let name = native::tool_name(name)?;
    let Some(tools) = &st.tools else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the tool layer is not enabled on this agent",
        ));
    };
    match tools.call(&name, args).await {
        Ok(out) => Ok(native::tool_reply(out.text, out.is_error)),
        Err(e @ paddock_tools::ToolError::UnknownTool { .. }) => {
            Err(
                ApiError::new(StatusCode::NOT_FOUND, "unknown_tool", e.to_string())
                    .with_field("name"),
            )
        }
        Err(e) => {
            let field = e.field().unwrap_or("arguments").to_owned();
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_arguments",
                e.to_string(),
            )
            .with_field(field))
        }
    }
}

/// A refused upload may leave unread body bytes on the connection; telling the client to
/// close it keeps a pooled connection from being reused in that state.
async fn close_on_error(mut resp: axum::response::Response) -> axum::response::Response {
    if !resp.status().is_success() {
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// The unauthenticated routes of one sandbox, rooted at `/` (`/v1/...`, `/openapi.json`).
/// Nest them under any prefix; [`app`] adds authentication.
///
/// Routes come in three groups: light ones (readiness, info, stat, sessions) with a small
/// body cap; heavy JSON ones (commands, reads, writes, edits, walks, tools) behind the
/// concurrency gate of [`heavy`]; and uploads, streamed, behind the same gate.
pub fn routes(sandbox: Arc<dyn Sandbox>, config: AgentConfig) -> Router {
    let tools = config.tools.clone().map(|c| {
        Arc::new(
            paddock_tools::Tools::new(sandbox.clone(), c)
                .with_read_limit(Some(config.max_read_bytes)),
        )
    });
    let state = AppState {
        tools,
        sandbox,
        shells: Arc::new(shell::Sessions::new(config.max_shell_sessions)),
        bashes: Arc::new(shell::Sessions::new(config.max_shell_sessions)),
        config: config.clone(),
    };
    let per_sandbox = match config.max_heavy_per_sandbox {
        0 => tokio::sync::Semaphore::MAX_PERMITS,
        n => n,
    };
    let per_sandbox = HeavyLimit::new(per_sandbox, heavy::PER_SANDBOX_KEY);
    let gate = |surface| {
        axum::middleware::from_fn_with_state(
            heavy::Gate {
                per_sandbox: per_sandbox.clone(),
                global: config.heavy_global.clone(),
                surface,
            },
            heavy::gate,
        )
    };
    let light = Router::new()
        .route("/v1/sandbox", get(aio::sandbox_context))
        .route("/v1/shell/sessions/create", post(aio::shell_create_session))
        .route(
            "/v1/shell/sessions/{id}",
            delete(aio::shell_cleanup_session),
        )
        .route("/v1/info", get(native::info))
        .route("/v1/fs/stat", post(native::stat))
        .route("/openapi.json", get(openapi::serve))
        .layer(DefaultBodyLimit::max(
            LIGHT_BODY_BYTES.min(config.max_body_bytes),
        ));
    let heavy_aio = Router::new()
        .route("/v1/shell/exec", post(aio::shell_exec))
        .route("/v1/bash/exec", post(aio::bash_exec))
        .route("/v1/file/read", post(aio::file_read))
        .route("/v1/file/write", post(aio::file_write))
        .route("/v1/file/download", get(aio::file_download))
        .route("/v1/file/find", post(aio::file_find))
        .route("/v1/file/list", post(aio::file_list))
        .route("/v1/file/grep", post(aio::file_grep))
        .route_layer(gate(Surface::Aio))
        .layer(DefaultBodyLimit::max(config.max_body_bytes));
    let heavy_native = Router::new()
        .route("/v1/exec", post(native::exec))
        .route("/v1/fs/read_text", post(native::read_text))
        .route("/v1/fs/read_bytes", get(native::read_bytes))
        .route("/v1/fs/write_text", post(native::write_text))
        .route("/v1/fs/list", post(native::list))
        .route("/v1/fs/glob", post(native::glob))
        .route("/v1/fs/grep", post(native::grep))
        .route("/v1/fs/str_replace", post(native::str_replace))
        .route("/v1/tools/{name}", post(tools_call))
        .route_layer(gate(Surface::Native))
        .layer(DefaultBodyLimit::max(config.max_body_bytes));
    // Uploads are streamed to disk and capped by max_upload_bytes instead.
    let upload = Router::new()
        .route("/v1/file/upload", post(aio::file_upload))
        .route_layer(gate(Surface::Aio))
        .merge(
            Router::new()
                .route("/v1/fs/write_bytes", put(native::write_bytes))
                .route_layer(gate(Surface::Native)),
        )
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::map_response(close_on_error));
    Router::new()
        .merge(light)
        .merge(heavy_aio)
        .merge(heavy_native)
        .merge(upload)
        .fallback(native::not_found)
        .method_not_allowed_fallback(auth::method_not_allowed)
        .with_state(state)
}

/// The agent API for one sandbox, authenticated when `config.token` is set.
pub fn app(sandbox: Arc<dyn Sandbox>, config: AgentConfig) -> Router {
    match config.token.clone() {
        Some(token) => app_with_auth(routes(sandbox, config), token),
        None => routes(sandbox, config),
    }
}
