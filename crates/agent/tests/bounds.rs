//! What one client can make the agent API hold: heavy requests past their per-sandbox or
//! global limit get 429 naming it (permits held until a streamed body ends), text reads
//! and edits are capped by `max_read_bytes` (a `replace_all` blow-up is refused before it
//! is built), large outputs are escaped while sent with an exact length, and the listener
//! ends stalled headers, stalled bodies and unread responses and makes room for new
//! connections at its cap.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use paddock_agent::listen::ListenConfig;
use paddock_agent::{AgentConfig, HeavyLimit, routes};
use paddock_core::{Sandbox, ThreadId, UserId};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

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
            &UserId::new("bounds").expect("user"),
            &ThreadId::new(thread).expect("thread"),
        )
        .await
        .expect("acquire")
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Value, axum::http::HeaderMap) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 256 << 20)
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

const WS: &str = "/mnt/user-data/workspace";

#[test]
fn heavy_requests_past_their_limits_get_429_naming_the_limit() {
    rt().block_on(async {
        let global = HeavyLimit::global(3);
        let config = AgentConfig {
            max_heavy_per_sandbox: 2,
            heavy_global: Some(global.clone()),
            ..AgentConfig::default()
        };
        let a = routes(sandbox("heavy-a").await, config.clone());
        let b = routes(sandbox("heavy-b").await, config);
        // Two streamed execs on a, not read yet: they hold a's two permits.
        let exec = || post("/v1/exec", json!({"command": "sleep 1; echo done"}));
        let s1 = a.clone().oneshot(exec()).await.unwrap();
        let s2 = a.clone().oneshot(exec()).await.unwrap();
        assert_eq!((s1.status(), s2.status()), (StatusCode::OK, StatusCode::OK));
        assert_eq!(global.in_use(), 2);
        let (s, v, h) = call(&a, post("/v1/file/read", json!({"file": "/etc/hostname"}))).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
        assert_eq!(h[header::RETRY_AFTER], "1");
        assert_eq!(v["limit"], "agent.max_concurrent_heavy_per_sandbox");
        assert_eq!(v["max"], 2);
        assert_eq!(v["success"], false, "AIO routes answer in the AIO envelope");
        // Light routes are not counted.
        let (s, v, _) = call(&a, post("/v1/fs/stat", json!({"path": WS}))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        // One more on b fills the global limit; the next on b is refused by it.
        let s3 = b.clone().oneshot(exec()).await.unwrap();
        assert_eq!(s3.status(), StatusCode::OK);
        let (s, v, _) = call(&b, post("/v1/fs/list", json!({"path": WS}))).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
        assert_eq!(v["limit"], "agent.max_concurrent_heavy");
        assert_eq!(
            v["field"], "agent.max_concurrent_heavy",
            "native shape: {v}"
        );
        // Finishing a stream returns its permit.
        let out = axum::body::to_bytes(s1.into_body(), 1 << 20).await.unwrap();
        assert!(String::from_utf8_lossy(&out).contains("done"));
        assert_eq!(global.in_use(), 2);
        let (s, v, _) = call(&b, post("/v1/fs/list", json!({"path": WS}))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        // Dropping an unread one does too.
        drop(s2);
        drop(s3);
        assert_eq!(global.in_use(), 0);
        let (s, _, _) = call(&a, post("/v1/file/read", json!({"file": "/etc/hostname"}))).await;
        assert_ne!(s, StatusCode::TOO_MANY_REQUESTS);
    });
}

#[test]
fn reads_and_edits_are_bounded_by_max_read_bytes() {
    rt().block_on(async {
        let config = AgentConfig {
            max_read_bytes: 10_000,
            ..AgentConfig::default()
        };
        let app = routes(sandbox("reads").await, config);
        let p = format!("{WS}/a.txt");
        let (s, v, _) = call(
            &app,
            post("/v1/fs/write_text", json!({"path": p, "content": "a".repeat(1000)})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        // 1,000 matches x 20 bytes = 20,000 > 10,000: refused, nothing written.
        let (s, v, _) = call(
            &app,
            post(
                "/v1/fs/str_replace",
                json!({"path": p, "old": "a", "new": "b".repeat(20), "replace_all": true}),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
        assert_eq!(v["field"], "new");
        assert_eq!(v["error"]["kind"], "result_too_large");
        assert_eq!((v["error"]["size"].as_u64(), v["error"]["limit"].as_u64()), (Some(20_000), Some(10_000)));
        // A client may only lower the bound.
        let (s, v, _) = call(
            &app,
            post(
                "/v1/fs/str_replace",
                json!({"path": p, "old": "a", "new": "bb", "replace_all": true, "max_bytes": 1_000_000}),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "within the cap: {v}");
        assert_eq!(v["replacements"], 1000);
        let (s, v, _) = call(
            &app,
            post(
                "/v1/tools/str_replace",
                json!({"path": p, "old_str": "b", "new_str": "c".repeat(20), "replace_all": true}),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let out = v["output"].as_str().unwrap();
        assert!(out.contains("40000 bytes") && out.contains("not changed"), "{out}");

        // A file over the cap: 413 naming the key, on both read routes and the tool.
        let big = format!("{WS}/big.txt");
        call(&app, post("/v1/fs/write_text", json!({"path": big, "content": "z".repeat(20_000)}))).await;
        let (s, v, _) = call(&app, post("/v1/file/read", json!({"file": big}))).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
        assert_eq!(v["success"], false);
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains("agent.max_read_bytes") && msg.contains("/v1/file/download"), "{msg}");
        let (s, v, _) = call(&app, post("/v1/fs/read_text", json!({"path": big}))).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
        assert_eq!(v["field"], "path");
        let (_, v, _) = call(&app, post("/v1/tools/read_file", json!({"path": big}))).await;
        assert!(v["output"].as_str().unwrap().contains("10000"), "{v}");
        // Downloads stream and are not bound by it.
        let resp = app
            .clone()
            .oneshot(
                Request::get(format!("/v1/file/download?path={big}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().len(),
            20_000
        );
    });
}

#[test]
fn large_outputs_are_streamed_with_an_exact_length() {
    rt().block_on(async {
        let app = routes(sandbox("escape").await, AgentConfig::default());
        // 300,000 control bytes and quotes: 1.2 MB once escaped, twice in the document.
        let cmd = "head -c 100000 /dev/zero | tr '\\0' '\\1'; head -c 100000 /dev/zero | tr '\\0' '\"'; head -c 100000 /dev/zero | tr '\\0' '\\n'";
        let resp = app
            .clone()
            .oneshot(post("/v1/shell/exec", json!({"command": cmd, "truncate": false})))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let declared: usize = resp.headers()[header::CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20).await.unwrap();
        assert_eq!(bytes.len(), declared);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let out = v["data"]["output"].as_str().unwrap();
        assert_eq!(out.len(), 300_000);
        assert!(out.starts_with('\u{1}') && out.contains('"') && out.ends_with('\n'));
        assert_eq!(v["data"]["console"][0]["output"].as_str().unwrap(), out);
        assert_eq!(v["data"]["command"], cmd);
        assert_eq!(v["data"]["exit_code"], 0);

        let (s, v, _) = call(
            &app,
            post("/v1/bash/exec", json!({"command": "printf 'a\\tb'; printf 'e\\x02' >&2"})),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!((v["data"]["stdout"].as_str(), v["data"]["stderr"].as_str()), (Some("a\tb"), Some("e\u{2}")));
        assert_eq!((v["data"]["offset"].as_u64(), v["data"]["stderr_offset"].as_u64()), (Some(3), Some(2)));

        call(&app, post("/v1/fs/write_text", json!({"path": format!("{WS}/c.txt"), "content": "x\u{1}\ny\n"}))).await;
        let (s, v, _) = call(&app, post("/v1/file/read", json!({"file": format!("{WS}/c.txt")}))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["data"], json!({"content": "x\u{1}\ny\n", "file": format!("{WS}/c.txt"), "total_lines": 2}));
        let (s, v, _) = call(&app, post("/v1/fs/read_text", json!({"path": format!("{WS}/c.txt"), "start_line": 2}))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v, json!({"path": format!("{WS}/c.txt"), "content": "y", "total_lines": 2}));
    });
}

// ---------------------------------------------------------------- the listener

/// Serves `router` with `cfg` on a loopback port; returns the address.
async fn listening(router: Router, cfg: ListenConfig) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(paddock_agent::listen::serve(
        l,
        router,
        cfg,
        std::future::pending(),
    ));
    addr
}

/// Reads until EOF or `limit`; returns what came and how long it took.
async fn read_until_closed(s: &mut tokio::net::TcpStream, limit: Duration) -> (String, Duration) {
    let t = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while t.elapsed() < limit {
        match tokio::time::timeout(limit - t.elapsed(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "still open after {limit:?}: {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), t.elapsed())
}

fn test_router(dropped: Arc<AtomicBool>) -> Router {
    use axum::routing::{get, post};
    struct OnDrop(Arc<AtomicBool>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "slow"
            }),
        )
        .route(
            "/echo",
            post(|body: axum::body::Bytes| async move { format!("{} bytes", body.len()) }),
        )
        .route(
            "/endless",
            get(move || {
                let guard = OnDrop(dropped.clone());
                async move {
                    let chunk = axum::body::Bytes::from(vec![b'x'; 64 * 1024]);
                    let s = futures_util::stream::repeat(chunk).map(move |c| {
                        let _ = &guard;
                        Ok::<_, std::convert::Infallible>(c)
                    });
                    Body::from_stream(s)
                }
            }),
        )
}

use futures_util::StreamExt as _;

#[test]
fn the_listener_ends_stalled_clients() {
    rt().block_on(async {
        let dropped = Arc::new(AtomicBool::new(false));
        let cfg = ListenConfig {
            header_read_timeout: Duration::from_secs(1),
            connection_idle: Duration::from_secs(1),
            max_connections: 100,
        };
        let addr = listening(test_router(dropped.clone()), cfg).await;

        // Half a request head: closed after the header timeout.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let (_, took) = read_until_closed(&mut s, Duration::from_secs(4)).await;
        assert!(took >= Duration::from_millis(900), "{took:?}");

        // A kept-alive connection with nothing more to ask is closed the same way.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let (text, took) = read_until_closed(&mut s, Duration::from_secs(4)).await;
        assert!(
            text.starts_with("HTTP/1.1 200") && text.ends_with("ok"),
            "{text}"
        );
        assert!(took >= Duration::from_millis(900), "{took:?}");

        // A body that stops: the handler's extractor fails, the client gets a 4xx and the
        // connection is closed.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc")
            .await
            .unwrap();
        let (text, took) = read_until_closed(&mut s, Duration::from_secs(4)).await;
        assert!(text.starts_with("HTTP/1.1 4"), "{text}");
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{text}"
        );
        assert!(took >= Duration::from_millis(900), "{took:?}");

        // A response nobody reads: the connection is dropped and the body with it.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /endless HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let dropped_in = {
            let t = Instant::now();
            while !dropped.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(10) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            t.elapsed()
        };
        assert!(
            dropped.load(Ordering::SeqCst),
            "the unread response was never dropped"
        );
        assert!(dropped_in < Duration::from_secs(5), "{dropped_in:?}");
        drop(s);

        // A request that is merely slow to answer is not cut off by either timeout.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let (text, _) = read_until_closed(&mut s, Duration::from_secs(6)).await;
        assert!(text.ends_with("slow"), "{text}");
    });
}

#[test]
fn at_the_connection_cap_idle_connections_make_room_and_busy_ones_do_not() {
    rt().block_on(async {
        let cfg = ListenConfig {
            header_read_timeout: Duration::from_secs(30),
            connection_idle: Duration::from_secs(30),
            max_connections: 3,
        };
        let addr = listening(test_router(Arc::default()), cfg).await;
        // Three idle connections fill the cap; a fourth still gets its answer, and the
        // oldest idle one is closed for it.
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let (text, _) = read_until_closed(&mut s, Duration::from_secs(3)).await;
        assert!(text.ends_with("ok"), "{text}");
        let (_, took) = read_until_closed(&mut idle[0], Duration::from_secs(3)).await;
        assert!(
            took < Duration::from_secs(1),
            "the oldest idle connection was closed"
        );
        drop(idle);
        tokio::time::sleep(Duration::from_millis(100)).await;

        // Three busy connections: a fourth is told 503 at once and closed.
        let mut busy = Vec::new();
        for _ in 0..3 {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            busy.push(c);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (text, took) = read_until_closed(&mut s, Duration::from_secs(2)).await;
        assert!(
            text.starts_with("HTTP/1.1 503") && text.contains("server.max_connections"),
            "{text}"
        );
        assert!(took < Duration::from_secs(1), "{took:?}");
        for mut c in busy {
            let (text, _) = read_until_closed(&mut c, Duration::from_secs(6)).await;
            assert!(
                text.ends_with("slow"),
                "busy connections were not touched: {text}"
            );
        }
    });
}
