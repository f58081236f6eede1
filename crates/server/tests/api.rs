//! Control-plane API tests over a recording in-memory backend: wire shapes, auth, the
//! bad-request table, idempotent concurrent create, capacity and the reaper.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns: a panic is the failure report

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use paddock_core::SandboxId;
use paddock_server::*;
use serde_json::{Value, json};
use tower::ServiceExt;

#[derive(Default)]
struct MemBackend {
    records: Mutex<HashMap<SandboxId, SandboxRecord>>,
    creates: AtomicUsize,
    busy: Mutex<Vec<SandboxId>>,
    slow_create: Option<Duration>,
}

#[async_trait]
impl Backend for MemBackend {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn capabilities(&self) -> Value {
        json!({"lark_cli_init_image": false, "lark_cli_broker_image": false})
    }
    async fn create(&self, spec: &CreateSpec) -> Result<SandboxRecord, BackendError> {
        if let Some(d) = self.slow_create {
            tokio::time::sleep(d).await;
        }
        for (i, m) in spec.extra_mounts.iter().enumerate() {
            if m.container_path.starts_with("/mnt/user-data") {
                return Err(BackendError::Invalid {
                    field: format!("extra_mounts[{i}].container_path"),
                    message: "reserved".into(),
                });
            }
        }
        self.creates.fetch_add(1, Ordering::SeqCst);
        let r = SandboxRecord {
            sandbox_id: spec.sandbox_id.clone(),
            user_id: spec.user_id.clone(),
            thread_id: spec.thread_id.clone(),
            sandbox_url: format!("http://127.0.0.1:1/s/tok-{}", spec.sandbox_id),
            status: SandboxStatus::Running,
        };
        self.records
            .lock()
            .unwrap()
            .insert(spec.sandbox_id.clone(), r.clone());
        Ok(r)
    }
    async fn get(&self, id: &SandboxId) -> Result<Option<SandboxRecord>, BackendError> {
        Ok(self.records.lock().unwrap().get(id).cloned())
    }
    async fn list(&self) -> Result<Vec<SandboxRecord>, BackendError> {
        Ok(self.records.lock().unwrap().values().cloned().collect())
    }
    async fn destroy(&self, id: &SandboxId) -> Result<bool, BackendError> {
        Ok(self.records.lock().unwrap().remove(id).is_some())
    }
    async fn busy(&self, id: &SandboxId) -> Result<bool, BackendError> {
        Ok(self.busy.lock().unwrap().contains(id))
    }
    async fn shutdown(&self) {}
}

const KEY: &str = "test-key-123";

fn setup(backend: Arc<MemBackend>, cfg: LifecycleConfig) -> (Router, Arc<Lifecycle>) {
    let metrics = Arc::new(metrics::Metrics::default());
    let lifecycle = Arc::new(Lifecycle::new(backend, cfg, metrics.clone()));
    let state = AppState {
        lifecycle: lifecycle.clone(),
        metrics,
        api_key: KEY.into(),
    };
    (app(state, None), lifecycle)
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Value, axum::http::HeaderMap) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v, headers)
}

fn post(body: impl Into<Body>) -> Request<Body> {
    Request::post("/api/sandboxes")
        .header("x-api-key", KEY)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

#[tokio::test]
async fn deerflow_sequence() {
    let (app, _) = setup(Arc::new(MemBackend::default()), LifecycleConfig::default());
    let (s, v, _) = call(&app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"status": "ok"})));
    let body = json!({"sandbox_id": "0123456789abcdef", "thread_id": "thread-42", "user_id": "user-7",
        "include_legacy_skills": false, "provision_lark_cli_runtime": false, "provision_lark_cli_broker": false,
        "extra_mounts": []});
    let (s, v, _) = call(&app, post(body.to_string())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["sandbox_id"], "0123456789abcdef");
    assert_eq!(v["status"], "Running");
    let url = v["sandbox_url"].as_str().unwrap().to_owned();
    // Bearer works as well as X-API-Key.
    let get = Request::get("/api/sandboxes/0123456789abcdef")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Body::empty())
        .unwrap();
    let (s, v, _) = call(&app, get).await;
    assert_eq!(
        (s, v["sandbox_url"].as_str().unwrap()),
        (StatusCode::OK, url.as_str())
    );
    let list = Request::get("/api/sandboxes")
        .header("x-api-key", KEY)
        .body(Body::empty())
        .unwrap();
    let (_, v, _) = call(&app, list).await;
    assert_eq!(v["count"], 1);
    let del = || {
        Request::delete("/api/sandboxes/0123456789abcdef")
            .header("x-api-key", KEY)
            .body(Body::empty())
            .unwrap()
    };
    let (s, v, _) = call(&app, del()).await;
    assert_eq!(
        (s, v),
        (
            StatusCode::OK,
            json!({"ok": true, "sandbox_id": "0123456789abcdef"})
        )
    );
    // Deleting what is gone is not an error.
    let (s, _, _) = call(&app, del()).await;
    assert_eq!(s, StatusCode::OK);
    let get = Request::get("/api/sandboxes/0123456789abcdef")
        .header("x-api-key", KEY)
        .body(Body::empty())
        .unwrap();
    let (s, v, _) = call(&app, get).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["detail"].as_str().unwrap().contains("not found"));
}

#[tokio::test]
async fn thread_id_defaults_to_sandbox_id_and_unknown_booleans_pass() {
    let backend = Arc::new(MemBackend::default());
    let (app, _) = setup(backend.clone(), LifecycleConfig::default());
    let (s, v, _) = call(
        &app,
        post(json!({"sandbox_id": "abc", "future_flag": true}).to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = backend
        .records
        .lock()
        .unwrap()
        .values()
        .next()
        .cloned()
        .unwrap();
    assert_eq!(r.thread_id.as_str(), "abc");
    assert_eq!(r.user_id.as_str(), "default");
}

#[tokio::test]
async fn auth_is_required_on_api_routes() {
    let (app, _) = setup(Arc::new(MemBackend::default()), LifecycleConfig::default());
    for req in [
        Request::get("/api/sandboxes").body(Body::empty()).unwrap(),
        Request::get("/api/sandboxes")
            .header("x-api-key", "wrong")
            .body(Body::empty())
            .unwrap(),
        Request::get("/api/sandboxes")
            .header("x-api-key", "test-key-12")
            .body(Body::empty())
            .unwrap(),
        Request::get("/api/capabilities")
            .header("authorization", "Bearer nope")
            .body(Body::empty())
            .unwrap(),
        Request::post("/api/sandboxes")
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap(),
        Request::delete("/api/sandboxes/x")
            .body(Body::empty())
            .unwrap(),
    ] {
        let (s, v, _) = call(&app, req).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(v, json!({"detail": "Unauthorized"}));
    }
    let caps = Request::get("/api/capabilities")
        .header("x-api-key", KEY)
        .body(Body::empty())
        .unwrap();
    let (s, v, _) = call(&app, caps).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["lark_cli_init_image"], false);
}

#[tokio::test]
async fn bad_requests_table() {
    let (app, _) = setup(Arc::new(MemBackend::default()), LifecycleConfig::default());
    let big = format!(
        "{{\"sandbox_id\":\"a\",\"pad\":\"{}\"}}",
        "x".repeat(300_000)
    );
    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        // (label, body, content type, status, field)
        ("empty body", "".into(), "application/json", 422, "body"),
        ("not json", "sandbox_id=a".into(), "application/json", 422, "body"),
        ("json array", "[]".into(), "application/json", 422, "body"),
        ("json string", "\"a\"".into(), "application/json", 422, "body"),
        ("json null", "null".into(), "application/json", 422, "body"),
        ("truncated json", "{\"sandbox_id\": \"a\"".into(), "application/json", 422, "body"),
        ("form content type", json!({"sandbox_id": "a"}).to_string(), "application/x-www-form-urlencoded", 422, "body"),
        ("text content type", json!({"sandbox_id": "a"}).to_string(), "text/plain", 422, "body"),
        ("no content type", json!({"sandbox_id": "a"}).to_string(), "", 422, "body"),
        ("missing sandbox_id", json!({}).to_string(), "application/json", 422, "sandbox_id"),
        ("sandbox_id number", json!({"sandbox_id": 5}).to_string(), "application/json", 422, "sandbox_id"),
        ("sandbox_id null", json!({"sandbox_id": null}).to_string(), "application/json", 422, "sandbox_id"),
        ("sandbox_id empty", json!({"sandbox_id": ""}).to_string(), "application/json", 422, "sandbox_id"),
        ("sandbox_id upper", json!({"sandbox_id": "ABC"}).to_string(), "application/json", 422, "sandbox_id"),
        ("sandbox_id traversal", json!({"sandbox_id": "../etc"}).to_string(), "application/json", 422, "sandbox_id"),
        ("sandbox_id slash", json!({"sandbox_id": "a/b"}).to_string(), "application/json", 422, "sandbox_id"),
        ("sandbox_id leading dash", json!({"sandbox_id": "-a"}).to_string(), "application/json", 422, "sandbox_id"),
        ("sandbox_id too long", json!({"sandbox_id": "a".repeat(54)}).to_string(), "application/json", 422, "sandbox_id"),
        ("sandbox_id nul", json!({"sandbox_id": "a\u{0}b"}).to_string(), "application/json", 422, "sandbox_id"),
        ("sandbox_id unicode", json!({"sandbox_id": "ａ"}).to_string(), "application/json", 422, "sandbox_id"),
        ("thread_id traversal", json!({"sandbox_id": "a", "thread_id": "../../x"}).to_string(), "application/json", 422, "thread_id"),
        ("thread_id too long", json!({"sandbox_id": "a", "thread_id": "t".repeat(65)}).to_string(), "application/json", 422, "thread_id"),
        ("thread_id number", json!({"sandbox_id": "a", "thread_id": 1}).to_string(), "application/json", 422, "thread_id"),
        ("thread_id space", json!({"sandbox_id": "a", "thread_id": "a b"}).to_string(), "application/json", 422, "thread_id"),
        ("user_id traversal", json!({"sandbox_id": "a", "user_id": ".."}).to_string(), "application/json", 422, "user_id"),
        ("user_id slash", json!({"sandbox_id": "a", "user_id": "a/b"}).to_string(), "application/json", 422, "user_id"),
        ("user_id empty", json!({"sandbox_id": "a", "user_id": ""}).to_string(), "application/json", 422, "user_id"),
        ("user_id object", json!({"sandbox_id": "a", "user_id": {}}).to_string(), "application/json", 422, "user_id"),
        ("flag string", json!({"sandbox_id": "a", "include_legacy_skills": "yes"}).to_string(), "application/json", 422, "include_legacy_skills"),
        ("flag number", json!({"sandbox_id": "a", "provision_lark_cli_broker": 1}).to_string(), "application/json", 422, "provision_lark_cli_broker"),
        ("unknown string field", json!({"sandbox_id": "a", "image": "evil"}).to_string(), "application/json", 422, "image"),
        ("unknown object field", json!({"sandbox_id": "a", "spec": {}}).to_string(), "application/json", 422, "spec"),
        ("mounts not list", json!({"sandbox_id": "a", "extra_mounts": {}}).to_string(), "application/json", 422, "extra_mounts"),
        ("mount not object", json!({"sandbox_id": "a", "extra_mounts": ["x"]}).to_string(), "application/json", 422, "extra_mounts[0]"),
        ("mount missing host", json!({"sandbox_id": "a", "extra_mounts": [{"container_path": "/mnt/x"}]}).to_string(), "application/json", 422, "extra_mounts[0]"),
        ("mount unknown key", json!({"sandbox_id": "a", "extra_mounts": [{"host_path": "/x", "container_path": "/mnt/x", "rw": true}]}).to_string(), "application/json", 422, "extra_mounts[0].rw"),
        ("mount read_only string", json!({"sandbox_id": "a", "extra_mounts": [{"host_path": "/x", "container_path": "/mnt/x", "read_only": "no"}]}).to_string(), "application/json", 422, "extra_mounts[0].read_only"),
        ("mount reserved (backend)", json!({"sandbox_id": "a", "extra_mounts": [{"host_path": "/x", "container_path": "/mnt/user-data/x"}]}).to_string(), "application/json", 422, "extra_mounts[0].container_path"),
        ("oversize body", big, "application/json", 413, "body"),
    ];
    assert!(cases.len() >= 39);
    for (label, body, ctype, status, field) in &cases {
        let mut b = Request::post("/api/sandboxes").header("x-api-key", KEY);
        if !ctype.is_empty() {
            b = b.header("content-type", *ctype);
        }
        let resp = app
            .clone()
            .oneshot(b.body(Body::from(body.clone())).unwrap())
            .await
            .unwrap();
        // The refusal carries its reason to the request log (the detail and field the
        // client gets), so every 4xx is logged with why.
        let reason = resp
            .extensions()
            .get::<paddock_server::error::ErrorReason>()
            .cloned()
            .unwrap_or_else(|| panic!("{label}: no reason for the log"));
        let s = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(s.as_u16(), *status, "{label}: {v}");
        assert_eq!(v["field"], *field, "{label}: {v}");
        assert!(v["detail"].is_string(), "{label}: {v}");
        assert_eq!(reason.detail, v["detail"].as_str().unwrap(), "{label}");
        assert_eq!(reason.field.as_deref(), Some(*field), "{label}");
    }
    // Bad ids in the path.
    for raw in ["..", "%2e%2e", "A", "a_b", "a%2Fb", "x%00", &"a".repeat(60)] {
        for method in ["GET", "DELETE"] {
            let req = Request::builder()
                .method(method)
                .uri(format!("/api/sandboxes/{raw}"))
                .header("x-api-key", KEY)
                .body(Body::empty())
                .unwrap();
            let (s, v, _) = call(&app, req).await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{method} {raw}: {v}");
            assert_eq!(v["field"], "sandbox_id");
        }
    }
    // Unknown routes and methods answer JSON too, and the server is still healthy.
    let (s, v, _) = call(&app, Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["detail"].is_string());
    let (s, _, _) = call(&app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_make_one_sandbox() {
    let backend = Arc::new(MemBackend {
        slow_create: Some(Duration::from_millis(50)),
        ..Default::default()
    });
    let (app, _) = setup(backend.clone(), LifecycleConfig::default());
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            call(
                &app,
                post(json!({"sandbox_id": "same", "thread_id": "t"}).to_string()),
            )
            .await
        }));
    }
    let mut urls = std::collections::HashSet::new();
    for t in tasks {
        let (s, v, _) = t.await.unwrap();
        assert_eq!(s, StatusCode::OK);
        urls.insert(v["sandbox_url"].as_str().unwrap().to_owned());
    }
    assert_eq!(urls.len(), 1);
    assert_eq!(backend.creates.load(Ordering::SeqCst), 1);
    // Different ids in parallel do not serialise on each other: 20 slow creates finish in
    // far less than 20 x 50 ms.
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            call(
                &app,
                post(json!({"sandbox_id": format!("p{i}")}).to_string()),
            )
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().0, StatusCode::OK);
    }
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn same_id_for_another_thread_is_a_conflict() {
    let (app, _) = setup(Arc::new(MemBackend::default()), LifecycleConfig::default());
    assert_eq!(
        call(
            &app,
            post(json!({"sandbox_id": "s", "thread_id": "t1"}).to_string())
        )
        .await
        .0,
        StatusCode::OK
    );
    let (s, v, _) = call(
        &app,
        post(json!({"sandbox_id": "s", "thread_id": "t2"}).to_string()),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
}

#[tokio::test]
async fn capacity_gives_429_with_retry_after() {
    let cfg = LifecycleConfig {
        max_sandboxes: 2,
        ..Default::default()
    };
    let (app, _) = setup(Arc::new(MemBackend::default()), cfg);
    for id in ["a", "b"] {
        assert_eq!(
            call(&app, post(json!({"sandbox_id": id}).to_string()))
                .await
                .0,
            StatusCode::OK
        );
    }
    let (s, v, h) = call(&app, post(json!({"sandbox_id": "c"}).to_string())).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(h.get("retry-after").unwrap(), "5");
    assert_eq!(v["limit"], "max_sandboxes", "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("max_sandboxes = 2"),
        "{v}"
    );
    // A repeat of a live id still works at capacity.
    assert_eq!(
        call(&app, post(json!({"sandbox_id": "a"}).to_string()))
            .await
            .0,
        StatusCode::OK
    );
    let metrics = call(&app, Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .1;
    let text = metrics.as_str().unwrap();
    assert!(text.contains("paddock_capacity_refusals_total 1"), "{text}");
    assert!(
        text.contains("paddock_sandboxes{backend=\"memory\",status=\"Running\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn reaper_skips_busy_sandboxes() {
    let backend = Arc::new(MemBackend::default());
    let cfg = LifecycleConfig {
        idle_timeout: Duration::from_millis(50),
        ..Default::default()
    };
    let (app, lifecycle) = setup(backend.clone(), cfg);
    for id in ["idle", "busy"] {
        assert_eq!(
            call(&app, post(json!({"sandbox_id": id}).to_string()))
                .await
                .0,
            StatusCode::OK
        );
    }
    backend
        .busy
        .lock()
        .unwrap()
        .push(SandboxId::new("busy").unwrap());
    assert_eq!(lifecycle.reap_once().await, 0, "nothing is idle yet");
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(lifecycle.reap_once().await, 1);
    let left: Vec<String> = backend
        .records
        .lock()
        .unwrap()
        .keys()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(left, vec!["busy".to_string()]);
}

#[tokio::test]
async fn openapi_document_is_served() {
    let (app, _) = setup(Arc::new(MemBackend::default()), LifecycleConfig::default());
    let (s, v, _) = call(
        &app,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["openapi"], "3.0.3");
    assert!(v["paths"]["/api/sandboxes/{sandbox_id}"]["delete"].is_object());
}

fn create_as(user: &str, id: &str) -> Request<Body> {
    post(json!({"sandbox_id": id, "thread_id": id, "user_id": user}).to_string())
}

async fn metrics_text(app: &Router) -> String {
    let v = call(app, Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .1;
    v.as_str().unwrap().to_owned()
}

#[tokio::test]
async fn one_user_cannot_take_all_capacity() {
    let cfg = LifecycleConfig {
        max_sandboxes: 5,
        max_sandboxes_per_user: 2,
        ..Default::default()
    };
    let (app, _) = setup(Arc::new(MemBackend::default()), cfg);
    for id in ["a1", "a2"] {
        let (s, v, _) = call(&app, create_as("alice", id)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v, h) = call(&app, create_as("alice", "a3")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["limit"], "max_sandboxes_per_user", "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("max_sandboxes_per_user = 2"),
        "{v}"
    );
    assert_eq!(h.get("retry-after").unwrap(), "5");
    // Her live sandboxes still answer, and another user still creates.
    assert_eq!(call(&app, create_as("alice", "a1")).await.0, StatusCode::OK);
    for id in ["b1", "b2"] {
        assert_eq!(call(&app, create_as("bob", id)).await.0, StatusCode::OK);
    }
    assert_eq!(call(&app, create_as("carol", "c1")).await.0, StatusCode::OK);
    // Now the server is full: the global limit is named.
    let (s, v, _) = call(&app, create_as("dave", "d1")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["limit"], "max_sandboxes", "{v}");
    let text = metrics_text(&app).await;
    assert!(text.contains("paddock_capacity_refusals_total 2"), "{text}");
    assert!(
        text.contains("paddock_limit_refusals_total{limit=\"max_sandboxes_per_user\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("paddock_limit_refusals_total{limit=\"max_sandboxes\"} 1"),
        "{text}"
    );
    // A deleted sandbox frees its user's slot.
    let del = Request::delete("/api/sandboxes/a1")
        .header("x-api-key", KEY)
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, del).await.0, StatusCode::OK);
    assert_eq!(call(&app, create_as("alice", "a3")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn concurrent_creates_of_one_user_stop_at_the_cap() {
    // Creates of different ids do not wait on each other; a slow backend keeps them all in
    // flight together, so only the reservation keeps the count.
    let backend = Arc::new(MemBackend {
        slow_create: Some(Duration::from_millis(50)),
        ..Default::default()
    });
    let cfg = LifecycleConfig {
        max_sandboxes: 100,
        max_sandboxes_per_user: 3,
        ..Default::default()
    };
    let (app, _) = setup(backend.clone(), cfg);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..12 {
        let app = app.clone();
        set.spawn(async move { call(&app, create_as("alice", &format!("s{i}"))).await });
    }
    let results = set.join_all().await;
    let ok = results.iter().filter(|r| r.0 == StatusCode::OK).count();
    let limited: Vec<&Value> = results
        .iter()
        .filter(|r| r.0 == StatusCode::TOO_MANY_REQUESTS)
        .map(|r| &r.1)
        .collect();
    assert_eq!(ok, 3, "{results:?}");
    assert_eq!(limited.len(), 9, "{results:?}");
    assert!(
        limited
            .iter()
            .all(|v| v["limit"] == "max_sandboxes_per_user")
    );
    assert_eq!(backend.creates.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn busy_sandboxes_are_reaped_after_the_busy_idle_bound() {
    let backend = Arc::new(MemBackend::default());
    let cfg = LifecycleConfig {
        idle_timeout: Duration::from_millis(50),
        busy_idle_timeout: Duration::from_millis(250),
        max_lifetime: Duration::ZERO,
        ..Default::default()
    };
    let (app, lifecycle) = setup(backend.clone(), cfg);
    for id in ["idle", "busy"] {
        assert_eq!(
            call(&app, post(json!({"sandbox_id": id}).to_string()))
                .await
                .0,
            StatusCode::OK
        );
    }
    backend
        .busy
        .lock()
        .unwrap()
        .push(SandboxId::new("busy").unwrap());
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(lifecycle.reap_once().await, 1, "only the idle one");
    assert!(
        backend
            .records
            .lock()
            .unwrap()
            .contains_key(&SandboxId::new("busy").unwrap())
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        lifecycle.reap_once().await,
        1,
        "the busy one, past the bound"
    );
    assert!(backend.records.lock().unwrap().is_empty());
    let text = metrics_text(&app).await;
    assert!(text.contains("paddock_sandboxes_reaped_total 2"), "{text}");
    assert!(
        text.contains("paddock_sandbox_reaps_total{reason=\"idle\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("paddock_sandbox_reaps_total{reason=\"busy_idle\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn activity_postpones_the_busy_idle_bound_but_not_the_lifetime() {
    let backend = Arc::new(MemBackend::default());
    let cfg = LifecycleConfig {
        idle_timeout: Duration::ZERO,
        busy_idle_timeout: Duration::from_millis(150),
        max_lifetime: Duration::from_millis(400),
        ..Default::default()
    };
    let (app, lifecycle) = setup(backend.clone(), cfg);
    let body = json!({"sandbox_id": "kept", "user_id": "alice"}).to_string();
    assert_eq!(call(&app, post(body.clone())).await.0, StatusCode::OK);
    backend
        .busy
        .lock()
        .unwrap()
        .push(SandboxId::new("kept").unwrap());
    // Used every 50 ms (a repeated create is use): never busy-idle, but it ages.
    let started = std::time::Instant::now();
    let mut reaped_at = None;
    while started.elapsed() < Duration::from_secs(2) {
        assert_eq!(call(&app, post(body.clone())).await.0, StatusCode::OK);
        if lifecycle.reap_once().await == 1 {
            reaped_at = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at = reaped_at.expect("reaped at its lifetime");
    assert!(at >= Duration::from_millis(400), "{at:?}");
    let text = metrics_text(&app).await;
    assert!(
        text.contains("paddock_sandbox_reaps_total{reason=\"max_lifetime\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("paddock_sandbox_reaps_total{reason=\"busy_idle\"} 0"),
        "{text}"
    );
}
