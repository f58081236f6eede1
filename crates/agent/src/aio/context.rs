//! `GET /v1/sandbox`: the sandbox context, which doubles as the readiness probe.

use axum::Json as AxumJson;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use paddock_core::mount::WORKSPACE;
use serde_json::json;

use crate::AppState;

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
