//! The `paddock-kubesim` program: it announces its address, answers kube-rs, injects the
//! configured faults, and exits cleanly on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

async fn start(extra: &[&str]) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_paddock-kubesim"))
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let out = child.stdout.take().expect("stdout");
    let line = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::BufReader::new(out).lines().next_line(),
    )
    .await
    .expect("in time")
    .expect("read")
    .expect("a line");
    let url = line
        .strip_prefix("listening on ")
        .expect("announcement")
        .to_owned();
    (child, url)
}

fn client(url: &str) -> kube::Client {
    let mut cfg = kube::Config::new(url.parse().expect("url"));
    cfg.connect_timeout = Some(Duration::from_secs(2));
    cfg.read_timeout = Some(Duration::from_secs(5));
    kube::Client::try_from(cfg).expect("client")
}

async fn sigterm(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    let pid = child.id().expect("pid").to_string();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(st.success());
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits")
        .expect("status")
}

#[tokio::test]
async fn serves_kube_rs_and_stops_on_sigterm() {
    let (mut child, url) = start(&[]).await;
    let v = client(&url).apiserver_version().await.expect("version");
    assert!(v.git_version.contains("kubesim"));
    assert!(sigterm(&mut child).await.success());
}

#[tokio::test]
async fn fault_flags() {
    let (mut child, url) = start(&["--error-rate", "1"]).await;
    match client(&url).apiserver_version().await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 500),
        other => panic!("expected a 500, got {other:?}"),
    }
    assert!(sigterm(&mut child).await.success());
    let (mut child, url) = start(&["--refuse-connections"]).await;
    let e = client(&url).apiserver_version().await.expect_err("refused");
    assert!(!matches!(e, kube::Error::Api(_)), "{e:?}");
    assert!(sigterm(&mut child).await.success());
    let (mut child, url) = start(&["--latency-ms", "300"]).await;
    let t = std::time::Instant::now();
    client(&url)
        .apiserver_version()
        .await
        .expect("slow but fine");
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(sigterm(&mut child).await.success());
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

#[tokio::test]
async fn run_pods_agents_die_with_the_simulator() {
    use k8s_openapi::api::core::v1::{Pod, Secret};
    use kube::api::{Api, PostParams};
    let bin =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/paddock");
    if !bin.is_file() {
        let msg = "target/debug/paddock is not built (cargo build -p paddock-cli)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let bin_s = bin.to_string_lossy().into_owned();
    let (mut child, url) = start(&["--run-pods", "--paddock-bin", &bin_s]).await;
    let c = client(&url);
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "deer-flow");
    let s: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "tok"}, "data": {"token": "c2VjcmV0LXRva2Vu"}}))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &s)
        .await
        .expect("secret");
    let ud = tmp.path().join("users/u1/threads/t1/user-data");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p1", "labels": {"sandbox-id": "p1"}},
        "spec": {
            "volumes": [{"name": "ud", "hostPath": {"path": ud, "type": "DirectoryOrCreate"}}],
            "containers": [{"name": "sandbox", "image": "x", "command": ["paddock"],
                "args": ["agent", "--listen", "0.0.0.0:8080", "--data-dir", "/var/lib/paddock", "--user", "u1", "--thread", "t1", "--isolation", "none"],
                "env": [{"name": "PADDOCK_AGENT_TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "token"}}}],
                "readinessProbe": {"httpGet": {"path": "/v1/sandbox", "port": 8080, "httpHeaders": [{"name": "Authorization", "value": "Bearer secret-token"}]}},
                "volumeMounts": [{"name": "ud", "mountPath": "/var/lib/paddock/users/u1/threads/t1/user-data"}]}]
        }})).expect("pod");
    let pods: Api<Pod> = Api::namespaced(c, "deer-flow");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    let ready = kube::runtime::wait::await_condition(
        pods.clone(),
        "p1",
        kube::runtime::conditions::is_pod_running(),
    );
    tokio::time::timeout(Duration::from_secs(30), ready)
        .await
        .expect("running in time")
        .expect("watch");
    let sim_pid = child.id().expect("pid");
    let agents = children(sim_pid);
    assert_eq!(agents.len(), 1, "one agent process: {agents:?}");
    assert!(
        ud.join("workspace").is_dir(),
        "the agent prepared the user-data volume"
    );
    assert!(sigterm(&mut child).await.success());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !std::path::Path::new(&format!("/proc/{}", agents[0])).exists(),
        "agent {} outlived the simulator",
        agents[0]
    );
}
