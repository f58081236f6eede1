//! DeerFlow's provisioner calls against Paddock's control plane (`paddock_server::app`)
//! with the Kubernetes backend over the simulator: create, get, list, delete, the 409
//! for another user's id, and 503 with a JSON detail when the API server is gone.

use std::sync::Arc;

use paddock_kube::{KubeBackend, KubeConfig};
use paddock_kubesim::{SimOptions, SimServer};
use paddock_server::metrics::Metrics;
use paddock_server::{AppState, Backend, Lifecycle, LifecycleConfig, app};
use serde_json::{Value, json};

const KEY: &str = "test-key";

async fn serve(backend: Arc<dyn Backend>) -> String {
    let metrics = Arc::new(Metrics::default());
    let lifecycle = Arc::new(Lifecycle::new(
        backend,
        LifecycleConfig::default(),
        metrics.clone(),
    ));
    lifecycle.recover().await.expect("recover");
    let state = AppState {
        lifecycle,
        metrics,
        api_key: KEY.into(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app(state, None)).await;
    });
    format!("http://{addr}")
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let c = reqwest::Client::new();
    let mut req = c.request(method, url).header("X-API-Key", KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn deerflow_provisioner_sequence() {
    let mut sim = SimServer::start("127.0.0.1:0".parse().expect("addr"), SimOptions::default())
        .await
        .expect("sim");
    let backend = KubeBackend::connect(KubeConfig {
        api_server: Some(sim.url()),
        node_host: "127.0.0.1".into(),
        request_timeout_secs: 2,
        ..KubeConfig::default()
    })
    .await
    .expect("connect");
    let base = serve(Arc::new(backend)).await;
    let body = json!({"sandbox_id": "df-1", "thread_id": "thread-42", "user_id": "user-7"});
    let (s, created) = call(
        reqwest::Method::POST,
        format!("{base}/api/sandboxes"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, 200, "{created}");
    assert_eq!(created["status"], "Running");
    assert!(
        created["sandbox_url"]
            .as_str()
            .expect("url")
            .contains("/s/")
    );
    let (s, again) = call(
        reqwest::Method::POST,
        format!("{base}/api/sandboxes"),
        Some(body),
    )
    .await;
    assert_eq!((s, &again), (200, &created));
    let (s, other) = call(
        reqwest::Method::POST,
        format!("{base}/api/sandboxes"),
        Some(json!({"sandbox_id": "df-1", "thread_id": "thread-42", "user_id": "user-8"})),
    )
    .await;
    assert_eq!(s, 409, "{other}");
    let (s, bad) = call(
        reqwest::Method::POST,
        format!("{base}/api/sandboxes"),
        Some(json!({"sandbox_id": "df-2", "extra_mounts": [{"host_path": "/etc", "container_path": "/mnt/acp-workspace"}]})),
    )
    .await;
    assert_eq!(s, 422, "{bad}");
    assert_eq!(bad["field"], "extra_mounts[0]");
    let (s, got) = call(
        reqwest::Method::GET,
        format!("{base}/api/sandboxes/df-1"),
        None,
    )
    .await;
    assert_eq!((s, &got), (200, &created));
    let (s, list) = call(reqwest::Method::GET, format!("{base}/api/sandboxes"), None).await;
    assert_eq!(s, 200);
    assert_eq!(list["count"], 1, "{list}");
    let (s, _) = call(
        reqwest::Method::DELETE,
        format!("{base}/api/sandboxes/df-1"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(
        reqwest::Method::GET,
        format!("{base}/api/sandboxes/df-1"),
        None,
    )
    .await;
    assert_eq!(s, 404);
    sim.refuse_connections(true).await.expect("close");
    let t = std::time::Instant::now();
    let (s, err) = call(
        reqwest::Method::POST,
        format!("{base}/api/sandboxes"),
        Some(json!({"sandbox_id": "df-3"})),
    )
    .await;
    assert_eq!(s, 503, "{err}");
    assert!(
        err["detail"]
            .as_str()
            .expect("detail")
            .contains("Kubernetes API server"),
        "{err}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
}
