//! The provisioner HTTP API, wire-compatible with DeerFlow's: `GET /health`,
//! `GET /api/capabilities`, `POST/GET/DELETE /api/sandboxes[/{id}]`, plus `GET /metrics`
//! and `GET /openapi.json`.
//!
//! Invariant: nothing a client sends can produce a 500 — bodies are parsed by hand into
//! typed, validated requests, and every failure leaves as the one JSON error shape.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use paddock_core::{MountSpec, SandboxId, ThreadId, UserId};
use serde_json::{Map, Value, json};

use crate::backend::{CreateFlags, CreateSpec, SandboxRecord};
use crate::error::ApiError;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;

/// Largest control-plane request body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Shared state of the API.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Sandboxes.
    pub lifecycle: Arc<Lifecycle>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The API key every `/api/` route requires.
    pub api_key: Arc<str>,
}

/// The control-plane router. `data_plane` (the local sandboxes' agent routes under
/// `/s/{token}/...`) answers every path the control plane does not.
pub fn app(state: AppState, data_plane: Option<Router>) -> Router {
    let api = Router::new()
        .route("/api/capabilities", get(capabilities))
        .route("/api/sandboxes", get(list).post(create))
        .route(
            "/api/sandboxes/{sandbox_id}",
            get(get_one).delete(delete_one),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    let router = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(api);
    let router = match data_plane {
        Some(dp) => router.fallback_service(dp),
        None => router.fallback(api_not_found),
    };
    router
        .layer(middleware::from_fn_with_state(state.clone(), log_requests))
        .with_state(state)
}

async fn api_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not Found")
}

/// Compares in time that depends only on the lengths, never on where bytes differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k);
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ok = presented_key(req.headers()).is_some_and(|k| {
        !state.api_key.is_empty() && ct_eq(k.as_bytes(), state.api_key.as_bytes())
    });
    if !ok {
        return ApiError::unauthorized().into_response();
    }
    next.run(req).await
}

async fn log_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    // Sandbox URLs carry their secret in the path: never log it.
    let path = req.uri().path().to_owned();
    let shown = if path.starts_with("/s/") {
        let rest: String = path.splitn(4, '/').skip(3).collect();
        format!("/s/…/{rest}")
    } else {
        path
    };
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    if !shown.starts_with("/s/") {
        state.metrics.observe_status(status);
    }
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match resp.extensions().get::<crate::error::ErrorReason>() {
        // Every refusal is logged with why (the detail and field the client got).
        Some(r) if status >= 500 => {
            tracing::error!(%method, path = %shown, status, ms, reason = %r.detail, field = r.field.as_deref().unwrap_or(""), "request")
        }
        Some(r) if r.limit.is_some() => {
            tracing::info!(%method, path = %shown, status, ms, reason = %r.detail, limit = r.limit.unwrap_or(""), "request")
        }
        Some(r) => {
            tracing::info!(%method, path = %shown, status, ms, reason = %r.detail, field = r.field.as_deref().unwrap_or(""), "request")
        }
        None => tracing::info!(%method, path = %shown, status, ms, "request"),
    }
    resp
}

async fn capabilities(State(state): State<AppState>) -> Json<Value> {
    Json(state.lifecycle.backend().capabilities())
}

async fn metrics(State(state): State<AppState>) -> Response {
    let backend = state.lifecycle.backend();
    let text = state.metrics.render(
        backend.name(),
        &state.lifecycle.counts(),
        backend.exec_count(),
        backend.exec_limit_refusals(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

fn record_json(r: &SandboxRecord) -> Value {
    json!({ "sandbox_id": r.sandbox_id, "sandbox_url": r.sandbox_url, "status": r.status.as_str() })
}

fn parse_id(raw: &str) -> Result<SandboxId, ApiError> {
    SandboxId::new(raw).map_err(|e| ApiError::invalid("sandbox_id", e.to_string()))
}

const KNOWN_FIELDS: &[&str] = &[
    "sandbox_id",
    "thread_id",
    "user_id",
    "extra_mounts",
    "include_legacy_skills",
    "provision_lark_cli_runtime",
    "provision_lark_cli_broker",
];

/// Parses and validates a create body. Unknown fields holding a boolean are accepted
/// (DeerFlow adds feature flags over time); any other unknown field is refused by name.
pub fn parse_create(headers: &HeaderMap, body: &Bytes) -> Result<CreateSpec, ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime != "application/json" && !mime.ends_with("+json") {
        return Err(ApiError::invalid(
            "body",
            format!(
                "expected Content-Type: application/json, got {:?}",
                ctype.chars().take(80).collect::<String>()
            ),
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("body", format!("body is not valid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::invalid("body", "body must be a JSON object"));
    };
    let unknown: Vec<String> = obj
        .keys()
        .filter(|k| !KNOWN_FIELDS.contains(&k.as_str()))
        .cloned()
        .collect();
    for k in unknown {
        match obj.remove(&k) {
            Some(Value::Bool(_)) => tracing::debug!(field = %k, "ignoring unknown boolean flag"),
            _ => return Err(ApiError::invalid(k.clone(), format!("unknown field `{k}`"))),
        }
    }
    let sandbox_id = match obj.get("sandbox_id") {
        Some(Value::String(s)) => parse_id(s)?,
        Some(_) => return Err(ApiError::invalid("sandbox_id", "must be a string")),
        None => return Err(ApiError::invalid("sandbox_id", "field required")),
    };
    let thread_id = match obj.get("thread_id") {
        None | Some(Value::Null) => ThreadId::new(sandbox_id.as_str())
            .map_err(|e| ApiError::invalid("thread_id", e.to_string()))?,
        Some(Value::String(s)) => {
            ThreadId::new(s.as_str()).map_err(|e| ApiError::invalid("thread_id", e.to_string()))?
        }
        Some(_) => return Err(ApiError::invalid("thread_id", "must be a string or null")),
    };
    let user_id = match obj.get("user_id") {
        None | Some(Value::Null) => UserId::default_user(),
        Some(Value::String(s)) => {
            UserId::new(s.as_str()).map_err(|e| ApiError::invalid("user_id", e.to_string()))?
        }
        Some(_) => return Err(ApiError::invalid("user_id", "must be a string")),
    };
    let flag = |obj: &Map<String, Value>, name: &str| -> Result<bool, ApiError> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ApiError::invalid(name, "must be a boolean")),
        }
    };
    let flags = CreateFlags {
        include_legacy_skills: flag(&obj, "include_legacy_skills")?,
        provision_lark_cli_runtime: flag(&obj, "provision_lark_cli_runtime")?,
        provision_lark_cli_broker: flag(&obj, "provision_lark_cli_broker")?,
    };
    let extra_mounts = match obj.remove("extra_mounts") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let m: MountSpec = serde_path_to_error::deserialize(item).map_err(|e| {
                    let inner = e.path().to_string();
                    let field = if inner == "." {
                        format!("extra_mounts[{i}]")
                    } else {
                        format!("extra_mounts[{i}].{inner}")
                    };
                    ApiError::invalid(field, e.into_inner().to_string())
                })?;
                out.push(m);
            }
            out
        }
        Some(_) => return Err(ApiError::invalid("extra_mounts", "must be a list")),
    };
    Ok(CreateSpec {
        sandbox_id,
        thread_id,
        user_id,
        extra_mounts,
        flags,
    })
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {MAX_BODY_BYTES} bytes"),
            )
            .with_field("body")
        })?;
    let spec = parse_create(&headers, &bytes)?;
    let record = state.lifecycle.create(spec).await?;
    Ok(Json(record_json(&record)))
}

type IdPath = Result<Path<String>, axum::extract::rejection::PathRejection>;

fn path_id(p: IdPath) -> Result<SandboxId, ApiError> {
    let Path(raw) = p.map_err(|e| ApiError::invalid("sandbox_id", e.body_text()))?;
    parse_id(&raw)
}

async fn get_one(State(state): State<AppState>, id: IdPath) -> Result<Json<Value>, ApiError> {
    let id = path_id(id)?;
    let record = state.lifecycle.get(&id).await?;
    Ok(Json(record_json(&record)))
}

async fn delete_one(State(state): State<AppState>, id: IdPath) -> Result<Json<Value>, ApiError> {
    let id = path_id(id)?;
    state.lifecycle.delete(&id).await?;
    Ok(Json(json!({"ok": true, "sandbox_id": id})))
}

async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let all = state.lifecycle.list().await?;
    let items: Vec<Value> = all.iter().map(record_json).collect();
    Ok(Json(json!({"count": items.len(), "sandboxes": items})))
}

impl ApiError {
    /// Names the field to blame.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}
