//! Provisioner mode against a real `paddock serve` started in-process: the first tool
//! call creates the sandbox (`POST /api/sandboxes` with `X-API-Key`, `user_id`,
//! `thread_id`), the tools then run through `RemoteSandbox`, and files land in the
//! user's thread directory. A wrong key or an unreachable provisioner is an `isError`
//! tool result, never a crash.

use std::net::SocketAddr;
use std::path::Path;

use paddock_core::{ThreadId, UserId};
use paddock_mcp::cli::{McpOptions, SandboxSourceOptions, build};
use paddock_mcp::server::PaddockMcp;
use paddock_runtime::{Isolation, RuntimeOptions};
use paddock_server::LifecycleConfig;
use paddock_server::local::LocalConfig;
use paddock_server::serve::{ApiKeySource, BackendChoice, ServeOptions, serve};
use serde_json::{Map, Value, json};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

async fn start_serve(data_dir: &Path) -> SocketAddr {
    let opts = ServeOptions {
        data_dir: data_dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        public_url: None,
        api_key: ApiKeySource::Value("test-key".into()),
        lifecycle: LifecycleConfig::default(),
        backend: BackendChoice::Local {
            runtime: RuntimeOptions {
                isolation: Isolation::Isolated,
                ..RuntimeOptions::default()
            },
            local: Box::new(LocalConfig {
                public_url: String::new(),
                mount_policy: Default::default(),
                base_mounts: Vec::new(),
                agent: Default::default(),
                tools: Default::default(),
                gateway_root: None,
                max_concurrent_execs_per_user: 0,
            }),
        },
        listen_limits: Default::default(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let r = serve(opts, move |addr, _| {
            let _ = tx.send(addr);
        })
        .await;
        if let Err(e) = r {
            eprintln!("paddock serve ended: {e}");
        }
    });
    rx.await.expect("paddock serve did not start")
}

fn args(url: &str, key: &str) -> McpOptions {
    let mut tools = paddock_tools::ToolsConfig::default();
    tools.bash_timeout_secs = 5.0;
    McpOptions {
        user: UserId::new("u7").expect("user"),
        thread: ThreadId::new("thread-42").expect("thread"),
        source: SandboxSourceOptions::Provisioner {
            url: url.to_owned(),
            api_key: key.to_owned(),
            sandbox_id: None,
        },
        tools,
    }
}

async fn call(s: &PaddockMcp, name: &str, a: Value) -> (String, bool) {
    let Value::Object(m) = a else {
        panic!("arguments must be an object")
    };
    let r = s.dispatch(name, Some(m)).await.expect("no protocol error");
    let v = serde_json::to_value(&r).expect("serialise");
    let text = v["content"][0]["text"].as_str().expect("text").to_owned();
    (text, r.is_error == Some(true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_run_in_a_provisioned_sandbox() {
    if !is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "paddock serve's isolated runtime needs root here; CI=true"
        );
        eprintln!("SKIPPED tools_run_in_a_provisioned_sandbox: needs root");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let addr = start_serve(tmp.path()).await;
    let url = format!("http://{addr}");

    let s = build(args(&url, "test-key")).expect("build");
    let (t, err) = call(
        &s,
        "write_file",
        json!({"description": "d", "path": "/mnt/user-data/outputs/r.md", "content": "# remote\n"}),
    )
    .await;
    assert!(!err, "{t}");
    let (t, err) = call(
        &s,
        "bash",
        json!({"description": "d", "command": "cat /mnt/user-data/outputs/r.md"}),
    )
    .await;
    assert!(!err && t.contains("# remote"), "{t}");
    let (t, err) = call(
        &s,
        "read_file",
        json!({"description": "d", "path": "/etc/shadow"}),
    )
    .await;
    assert!(err && t.starts_with("Error:"), "{t}");
    let host = tmp
        .path()
        .join("users/u7/threads/thread-42/user-data/outputs/r.md");
    assert_eq!(
        std::fs::read_to_string(host).expect("host file"),
        "# remote\n"
    );

    // A wrong key: the call reports the provisioner's refusal as a tool error.
    let bad = build(args(&url, "wrong")).expect("build");
    let (t, err) = call(
        &bad,
        "ls",
        json!({"description": "d", "path": "/mnt/user-data"}),
    )
    .await;
    assert!(err, "{t}");
    assert!(
        t.contains("sandbox unavailable") && t.contains("401"),
        "{t}"
    );

    // Nothing listening: also a tool error, and the next call retries.
    let gone = build(args("http://127.0.0.1:9", "k")).expect("build");
    let mut empty = Map::new();
    empty.insert("description".into(), json!("d"));
    empty.insert("path".into(), json!("/mnt/user-data"));
    for _ in 0..2 {
        let r = gone
            .dispatch("ls", Some(empty.clone()))
            .await
            .expect("no protocol error");
        assert_eq!(r.is_error, Some(true));
    }
}
