//! The real `paddock` binary (`paddock serve` with `PADDOCK_BACKEND=kubernetes` and
//! DeerFlow's provisioner environment variables) against the simulator running Pods as
//! agent processes: DeerFlow's create → exec → delete → create → read-back sequence.
//!
//! Skips loudly when `target/debug/paddock` is missing (fails under CI=true) or when the
//! build does not include the Kubernetes backend yet.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use paddock_kubesim::{SimOptions, SimServer};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

const KEY: &str = "serve-test-key";

fn paddock_bin() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/paddock");
    p.is_file().then_some(p)
}

async fn post(base: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/sandboxes"))
        .header("X-API-Key", KEY)
        .json(&body)
        .send()
        .await
        .expect("create");
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.expect("json")
}

async fn exec(url: &str, cmd: &str) -> String {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/shell/exec"))
        .json(&json!({ "command": cmd }))
        .send()
        .await
        .expect("exec");
    assert!(r.status().is_success(), "exec status {}", r.status());
    r.text().await.expect("body")
}

#[tokio::test]
async fn paddock_serve_with_the_kubernetes_backend() {
    let Some(bin) = paddock_bin() else {
        let msg = "target/debug/paddock is not built (cargo build -p paddock-cli)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let base = tmp.path().join("deer-flow");
    std::fs::create_dir_all(&base).expect("base");
    let sim = SimServer::start(
        "127.0.0.1:0".parse().expect("addr"),
        SimOptions {
            run_pods: true,
            paddock_bin: bin.clone(),
            ..SimOptions::default()
        },
    )
    .await
    .expect("sim");
    let mut child = tokio::process::Command::new(&bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            KEY,
            "--data-dir",
        ])
        .arg(tmp.path().join("paddock-data"))
        .env("PADDOCK_BACKEND", "kubernetes")
        .env("K8S_API_SERVER", sim.url())
        .env("NODE_HOST", "127.0.0.1")
        .env("DEER_FLOW_HOST_BASE_DIR", &base)
        .env("KUBECONFIG_PATH", tmp.path().join("no-kubeconfig"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn paddock serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("paddock serve answers within 30 s")
        .expect("read stdout");
    let Some(line) = first else {
        let out = child.wait_with_output().await.expect("output");
        let err = String::from_utf8_lossy(&out.stderr);

        panic!("paddock serve exited before listening: {err}");
    };
    let addr = line
        .rsplit("http://")
        .next()
        .expect("address")
        .trim()
        .to_owned();
    let api = format!("http://{addr}");
    let req = json!({"sandbox_id": "serve-1", "thread_id": "thread-42", "user_id": "user-7"});
    let created = post(&api, req.clone()).await;
    assert_eq!(created["status"], "Running", "{created}");
    let url = created["sandbox_url"].as_str().expect("url").to_owned();
    let out = exec(
        &url,
        "echo from-a-pod > /mnt/user-data/workspace/f.txt && cat /mnt/user-data/workspace/f.txt",
    )
    .await;
    assert!(out.contains("from-a-pod"), "{out}");
    let host_file = base.join("users/user-7/threads/thread-42/user-data/workspace/f.txt");
    assert_eq!(
        std::fs::read_to_string(&host_file).expect("on the host"),
        "from-a-pod\n"
    );
    let r = reqwest::Client::new()
        .delete(format!("{api}/api/sandboxes/serve-1"))
        .header("X-API-Key", KEY)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 200);
    assert!(sim.sim.names("pods", "deer-flow").is_empty());
    let again = post(&api, req).await;
    let out = exec(
        again["sandbox_url"].as_str().expect("url"),
        "cat /mnt/user-data/workspace/f.txt",
    )
    .await;
    assert!(out.contains("from-a-pod"), "{out}");
    child.kill().await.expect("stop paddock serve");
    sim.shutdown().await;
}
