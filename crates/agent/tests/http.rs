//! The agent API over HTTP semantics (requests driven through the router with `oneshot`):
//! authentication, the one error shape, shell sessions, NDJSON exec, tools, nesting many
//! sandboxes under capability prefixes. The sandbox is the isolated local runtime's.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use paddock_agent::{AgentConfig, CapabilityRouter, app, routes};
use paddock_core::{Sandbox, ThreadId, UserId};
use serde_json::{Value, json};
use tower::ServiceExt;

/// One tokio runtime for every test in this process: the shared sandbox runtime's
/// children and timers must not live on a per-test tokio runtime that ends early.
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

struct Shared {
    _dir: tempfile::TempDir,
    provider: paddock_runtime::LocalProvider,
}

/// One runtime per test process (it owns process-wide resources), one thread per test.
fn provider() -> &'static paddock_runtime::LocalProvider {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    &SHARED
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let provider = paddock_runtime::LocalProvider::new(
                dir.path(),
                paddock_runtime::RuntimeOptions::default(),
                Vec::new(),
            )
            .expect("the isolated local runtime must start on this machine");
            Shared {
                _dir: dir,
                provider,
            }
        })
        .provider
}

async fn sandbox(thread: &str) -> Arc<dyn Sandbox> {
    provider()
        .acquire(
            &UserId::new("http").expect("user"),
            &ThreadId::new(thread).expect("thread"),
        )
        .await
        .expect("acquire")
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Value, axum::http::HeaderMap) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .expect("body");
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v, headers)
}

fn post(uri: &str, body: Value) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

#[test]
fn auth_capability_and_bearer() {
    rt().block_on(async {
        let config = AgentConfig {
            token: Some("s3cret".into()),
            ..AgentConfig::default()
        };
        let app = app(sandbox("auth").await, config);
        let (s, v, _) = call(&app, get("/s/s3cret/v1/sandbox")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["home_dir"], "/mnt/user-data/workspace");
        let (s, v, _) = call(&app, get("/s/s3cre7/v1/sandbox")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(v["code"], "not_found");
        let (s, v, h) = call(&app, get("/v1/sandbox")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(v["code"], "unauthorized");
        assert_eq!(
            h.get(header::WWW_AUTHENTICATE).map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
        let req = Request::get("/v1/sandbox")
            .header(header::AUTHORIZATION, "Bearer s3cret")
            .body(Body::empty())
            .expect("request");
        assert_eq!(call(&app, req).await.0, StatusCode::OK);
        let req = Request::get("/v1/sandbox")
            .header(header::AUTHORIZATION, "Bearer s3cre")
            .body(Body::empty())
            .expect("request");
        assert_eq!(call(&app, req).await.0, StatusCode::UNAUTHORIZED);
        // Query strings survive the prefix strip.
        let (s, v, _) = call(
            &app,
            get("/s/s3cret/v1/file/download?path=%2Fmnt%2Fuser-data%2Fworkspace%2Fnone"),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(v["success"], false);
        assert_eq!(v["error"]["kind"], "not_found");
    });
}

#[test]
fn many_sandboxes_under_capability_prefixes() {
    rt().block_on(async {
        let caps = CapabilityRouter::new();
        caps.insert(
            "tok-a",
            routes(sandbox("cap-a").await, AgentConfig::default()),
        );
        caps.insert(
            "tok-b",
            routes(sandbox("cap-b").await, AgentConfig::default()),
        );
        let app = caps.router();
        let w = json!({ "file": "/mnt/user-data/workspace/who.txt", "content": "a" });
        assert_eq!(
            call(&app, post("/s/tok-a/v1/file/write", w)).await.0,
            StatusCode::OK
        );
        let r = json!({ "file": "/mnt/user-data/workspace/who.txt" });
        let (s, v, _) = call(&app, post("/s/tok-a/v1/file/read", r.clone())).await;
        assert_eq!(
            (s, v["data"]["content"].as_str()),
            (StatusCode::OK, Some("a"))
        );
        let (s, _, _) = call(&app, post("/s/tok-b/v1/file/read", r)).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "sandboxes are separate");
        assert_eq!(
            call(&app, get("/s/tok-c/v1/sandbox")).await.0,
            StatusCode::NOT_FOUND
        );
        assert!(caps.remove("tok-a"));
        assert_eq!(
            call(&app, get("/s/tok-a/v1/sandbox")).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(caps.len(), 1);
    });
}

#[test]
fn one_error_shape() {
    rt().block_on(async {
        let config = AgentConfig {
            max_body_bytes: 1024,
            ..AgentConfig::default()
        };
        let app = app(sandbox("errors").await, config);
        // Unknown field, named (AIO envelope + FastAPI detail).
        let (s, v, _) = call(
            &app,
            post("/v1/file/read", json!({ "file": "/x", "bogus": 1 })),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(v["success"], false);
        assert_eq!(v["detail"][0]["loc"], json!(["body", "bogus"]));
        // Native shape for native routes.
        let (s, v, _) = call(&app, post("/v1/fs/read_text", json!({ "path": 3 }))).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(v["field"], "path");
        assert!(
            v["detail"].as_str().is_some_and(|d| d.contains("path")),
            "{v}"
        );
        // Missing field.
        let (s, v, _) = call(
            &app,
            post("/v1/fs/glob", json!({ "path": "/mnt/user-data" })),
        )
        .await;
        assert_eq!(
            (s, v["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("pattern"))
        );
        // Not JSON, wrong content type, oversize.
        let req = Request::post("/v1/fs/stat")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{"))
            .expect("request");
        assert_eq!(call(&app, req).await.0, StatusCode::BAD_REQUEST);
        let req = Request::post("/v1/fs/stat")
            .body(Body::from("{}"))
            .expect("request");
        let (s, v, _) = call(&app, req).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Some("unsupported_media_type")
            )
        );
        let big = json!({ "path": "x".repeat(4000) });
        let (s, v, _) = call(&app, post("/v1/fs/stat", big)).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large"))
        );
        // Unknown route and method: JSON too.
        let (s, v, _) = call(&app, get("/v2/nothing")).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
        let (s, v, _) = call(&app, get("/v1/file/read")).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
        );
        // Sandbox errors keep virtual paths and their variant.
        let (s, v, _) = call(
            &app,
            post(
                "/v1/fs/stat",
                json!({ "path": "/mnt/user-data/workspace/../../etc" }),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert_eq!(v["error"]["kind"], "escape");
        let (s, v, _) = call(
            &app,
            post(
                "/v1/fs/write_text",
                json!({ "path": "/mnt/skills/x", "content": "" }),
            ),
        )
        .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("read_only"))
        );
    });
}

#[test]
fn shell_sessions_keep_state_and_stay_apart() {
    rt().block_on(async {
        let app = app(sandbox("shells").await, AgentConfig::default());
        let run = |id: &str, cmd: &str| post("/v1/shell/exec", json!({ "id": id, "command": cmd }));
        let (s, v, _) = call(
            &app,
            run("one", "mkdir -p d1 && cd d1 && export X=1 && unset HOME"),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let (_, v, _) = call(&app, run("one", "pwd; echo \"x=$X home=${HOME-unset}\"")).await;
        assert_eq!(
            v["data"]["output"], "/mnt/user-data/workspace/d1\nx=1 home=unset\n",
            "{v}"
        );
        let (_, v, _) = call(&app, run("two", "pwd; echo \"x=${X-none}\"")).await;
        assert_eq!(v["data"]["output"], "/mnt/user-data/workspace\nx=none\n");
        // A broken call (exec replaces stdout) keeps the previous state.
        let (_, v, _) = call(&app, run("one", "cd /; exec >/dev/null; echo gone")).await;
        assert_eq!(v["data"]["status"], "completed");
        let (_, v, _) = call(&app, run("one", "pwd")).await;
        assert_eq!(v["data"]["output"], "/mnt/user-data/workspace/d1\n");
        // Concurrent sessions run in parallel (serialised, three would take at least 6 s).
        let started = std::time::Instant::now();
        let calls: Vec<_> = (0..3)
            .map(|i| {
                let app = app.clone();
                tokio::spawn(
                    async move { call(&app, run(&format!("p{i}"), "sleep 2; echo ok")).await },
                )
            })
            .collect();
        for c in calls {
            let (_, v, _) = c.await.expect("join");
            assert_eq!(v["data"]["output"], "ok\n");
        }
        assert!(
            started.elapsed().as_secs_f64() < 5.0,
            "took {:?}",
            started.elapsed()
        );
        // Idle limit.
        let (_, v, _) = call(
            &app,
            post(
                "/v1/shell/exec",
                json!({ "command": "sleep 20", "no_change_timeout": 1 }),
            ),
        )
        .await;
        assert_eq!(v["data"]["status"], "no_change_timeout");
        // Cleanup.
        let req = Request::delete("/v1/shell/sessions/one")
            .body(Body::empty())
            .expect("request");
        assert_eq!(call(&app, req).await.0, StatusCode::OK);
        let req = Request::delete("/v1/shell/sessions/one")
            .body(Body::empty())
            .expect("request");
        assert_eq!(call(&app, req).await.0, StatusCode::NOT_FOUND);
        let (s, _, _) = call(
            &app,
            post(
                "/v1/shell/exec",
                json!({ "command": "true", "async_mode": true }),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    });
}

#[test]
fn bash_exec_env_and_streams() {
    rt().block_on(async {
        let app = app(sandbox("bash").await, AgentConfig::default());
        let body = json!({
            "command": "echo \"$A-${HOME-nohome}\"; echo e >&2; exit 2",
            "env": { "A": "va", "HOME": null },
        });
        let (s, v, _) = call(&app, post("/v1/bash/exec", body)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["data"]["stdout"], "va-nohome\n");
        assert_eq!(v["data"]["stderr"], "e\n");
        assert_eq!(v["data"]["exit_code"], 2);
        let (s, v, _) = call(
            &app,
            post(
                "/v1/bash/exec",
                json!({ "command": "true", "env": { "1X": "v" } }),
            ),
        )
        .await;
        assert_eq!(
            (s, v["detail"][0]["loc"][1].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("env"))
        );
    });
}

#[test]
fn exec_streams_ndjson_and_sse() {
    rt().block_on(async {
        let app = app(sandbox("ndjson").await, AgentConfig::default());
        let (s, v, h) = call(
            &app,
            post(
                "/v1/exec",
                json!({ "command": "echo a; echo b >&2; exit 3" }),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            h.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/x-ndjson"[..])
        );
        let text = v.as_str().expect("ndjson is not one JSON value");
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("line"))
            .collect();
        let last = events.last().expect("events");
        assert_eq!(last["type"], "exit");
        assert_eq!(last["exit_code"], 3);
        assert!(
            events
                .iter()
                .any(|e| e["type"] == "stdout" && e["data"] == "a\n")
        );
        assert!(
            events
                .iter()
                .any(|e| e["type"] == "stderr" && e["data"] == "b\n")
        );
        let req = Request::post("/v1/exec")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "text/event-stream")
            .body(Body::from(json!({ "command": "echo sse" }).to_string()))
            .expect("request");
        let (_, v, h) = call(&app, req).await;
        assert_eq!(
            h.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"text/event-stream"[..])
        );
        assert!(
            v.as_str()
                .is_some_and(|t| t.starts_with("data: {") && t.contains("\"exit\"")),
            "{v}"
        );
        let (s, v, _) = call(
            &app,
            post(
                "/v1/exec",
                json!({ "command": "true", "cwd": "/mnt/user-data/workspace/nope" }),
            ),
        )
        .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
        let (s, v, _) = call(
            &app,
            post("/v1/exec", json!({ "command": "true", "timeout_secs": -1 })),
        )
        .await;
        assert_eq!(
            (s, v["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("timeout"))
        );
    });
}

#[test]
fn tools_route() {
    rt().block_on(async {
        let app = app(sandbox("tools").await, AgentConfig::default());
        let (s, v, _) = call(
            &app,
            post("/v1/tools/write_file", json!({ "description": "d", "path": "/mnt/user-data/workspace/t.txt", "content": "hey" })),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["is_error"], false);
        let (s, v, _) = call(
            &app,
            post(
                "/v1/tools/read_file",
                json!({ "description": "d", "path": "/mnt/user-data/workspace/t.txt" }),
            ),
        )
        .await;
        assert_eq!(
            (s, v["output"].as_str()),
            (StatusCode::OK, Some("hey")),
            "{v}"
        );
        let (s, v, _) = call(
            &app,
            post(
                "/v1/tools/read_file",
                json!({ "description": "d", "path": "/etc/passwd" }),
            ),
        )
        .await;
        assert_eq!(
            (s, v["is_error"].as_bool()),
            (StatusCode::OK, Some(true)),
            "{v}"
        );
        let (s, v, _) = call(&app, post("/v1/tools/nope", json!({}))).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("unknown_tool"))
        );
        let (s, v, _) = call(&app, post("/v1/tools/read_file", json!({ "bogus": 1 }))).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        let off = paddock_agent::app(
            sandbox("tools-off").await,
            AgentConfig {
                tools: None,
                ..AgentConfig::default()
            },
        );
        assert_eq!(
            call(&off, post("/v1/tools/read_file", json!({}))).await.0,
            StatusCode::NOT_FOUND
        );
    });
}

#[test]
fn upload_is_capped() {
    rt().block_on(async {
        let config = AgentConfig {
            max_upload_bytes: 1000,
            ..AgentConfig::default()
        };
        let app = app(sandbox("upload").await, config);
        let boundary = "XyZ";
        let mk = |size: usize| {
            let mut body = format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\n/mnt/user-data/uploads/u.bin\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"u.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .into_bytes();
            body.extend(std::iter::repeat_n(b'z', size));
            body.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
            Request::post("/v1/file/upload")
                .header(
                    header::CONTENT_TYPE,
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(Body::from(body))
                .expect("request")
        };
        let (s, v, _) = call(&app, mk(500)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["data"]["file_size"], 500);
        let (s, v, h) = call(&app, mk(5000)).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large")),
            "{v}"
        );
        assert_eq!(
            h.get(header::CONNECTION).map(|v| v.as_bytes()),
            Some(&b"close"[..])
        );
        // The refused upload left the earlier file intact (writes are atomic).
        let (_, v, _) = call(
            &app,
            post(
                "/v1/fs/stat",
                json!({ "path": "/mnt/user-data/uploads/u.bin" }),
            ),
        )
        .await;
        assert_eq!(v["size"], 500);
    });
}
