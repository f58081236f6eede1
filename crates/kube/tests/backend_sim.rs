//! The Kubernetes backend against the in-process simulator: create/get/list/destroy,
//! idempotence and ownership conflicts, recovery by a new backend, 503 without leaks
//! when the API server fails, and (with the `paddock` binary built) exec through the
//! sandbox URL with data persisting under the user-scoped path.

use std::path::PathBuf;
use std::time::Duration;

use paddock_core::{SandboxId, ThreadId, UserId};
use paddock_kube::{KubeBackend, KubeConfig};
use paddock_kubesim::{SimOptions, SimServer};
use paddock_server::backend::CreateFlags;
use paddock_server::{Backend, BackendError, CreateSpec, SandboxStatus};

fn spec(id: &str, user: &str, thread: &str) -> CreateSpec {
    CreateSpec {
        sandbox_id: SandboxId::new(id).expect("id"),
        thread_id: ThreadId::new(thread).expect("thread"),
        user_id: UserId::new(user).expect("user"),
        extra_mounts: Vec::new(),
        flags: CreateFlags::default(),
    }
}

fn config(sim: &SimServer, base: &str) -> KubeConfig {
    KubeConfig {
        api_server: Some(sim.url()),
        node_host: "127.0.0.1".into(),
        host_base_dir: base.into(),
        request_timeout_secs: 2,
        ready_timeout_secs: 20,
        ..KubeConfig::default()
    }
}

async fn sim(opts: SimOptions) -> SimServer {
    SimServer::start("127.0.0.1:0".parse().expect("addr"), opts)
        .await
        .expect("sim starts")
}

#[tokio::test]
async fn lifecycle_idempotence_conflict_and_recovery() {
    let sim = sim(SimOptions::default()).await;
    let b = KubeBackend::connect(config(&sim, "/df"))
        .await
        .expect("connect");
    let s = spec("sbx-1", "user-7", "thread-42");
    let r = b.create(&s).await.expect("create");
    assert_eq!(r.status, SandboxStatus::Running);
    assert!(
        r.sandbox_url.starts_with("http://127.0.0.1:3"),
        "{}",
        r.sandbox_url
    );
    assert!(r.sandbox_url.contains("/s/"));
    for kind in ["pods", "services", "secrets", "networkpolicies"] {
        assert_eq!(sim.sim.names(kind, "deer-flow").len(), 1, "{kind}");
    }
    let pod = sim
        .sim
        .object("pods", "deer-flow", "sandbox-sbx-1")
        .expect("pod");
    assert_eq!(pod["metadata"]["labels"]["app"], "deer-flow-sandbox");
    assert_eq!(
        pod["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "paddock"
    );
    let again = b.create(&s).await.expect("idempotent");
    assert_eq!(again.sandbox_url, r.sandbox_url);
    match b.create(&spec("sbx-1", "user-8", "thread-42")).await {
        Err(BackendError::Conflict(_)) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    let got = b.get(&s.sandbox_id).await.expect("get").expect("exists");
    assert_eq!(got, r);
    // A new backend (a restarted Paddock) recovers the sandbox from labels.
    let b2 = KubeBackend::connect(config(&sim, "/df"))
        .await
        .expect("connect");
    assert_eq!(b2.list().await.expect("list"), vec![r.clone()]);
    assert!(b2.destroy(&s.sandbox_id).await.expect("destroy"));
    assert!(!b2.destroy(&s.sandbox_id).await.expect("destroy again"));
    assert!(b.get(&s.sandbox_id).await.expect("get").is_none());
    for kind in ["pods", "services", "secrets", "networkpolicies"] {
        assert!(
            sim.sim.names(kind, "deer-flow").is_empty(),
            "{kind} left behind"
        );
    }
}

#[tokio::test]
async fn invalid_extra_mounts_are_422_and_make_nothing() {
    let sim = sim(SimOptions::default()).await;
    let b = KubeBackend::connect(config(&sim, "/df"))
        .await
        .expect("connect");
    let mut s = spec("sbx-2", "user-7", "t");
    s.extra_mounts.push(paddock_core::MountSpec {
        host_path: "/etc".into(),
        container_path: "/mnt/acp-workspace".into(),
        read_only: true,
    });
    match b.create(&s).await {
        Err(BackendError::Invalid { field, .. }) => assert_eq!(field, "extra_mounts[0]"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(sim.sim.names("secrets", "deer-flow").is_empty());
}

#[tokio::test]
async fn api_server_failures_are_503_without_leaks() {
    let mut sim = sim(SimOptions::default()).await;
    let b = KubeBackend::connect(config(&sim, "/df"))
        .await
        .expect("connect");
    // Every request fails: nothing can be made, and the error is "unavailable".
    sim.sim.set_error_rate(1.0);
    let e = b.create(&spec("sbx-3", "u", "t")).await.expect_err("fails");
    assert!(matches!(e, BackendError::Unavailable(_)), "{e:?}");
    sim.sim.set_error_rate(0.0);
    // One step fails: everything made before it is deleted again.
    for (step, made_before) in [
        ("/secrets", 0),
        ("/pods", 1),
        ("/services", 2),
        ("/networkpolicies", 3),
    ] {
        sim.sim.fail_next("POST", step, 1);
        let e = b
            .create(&spec("sbx-4", "u", "t"))
            .await
            .expect_err("step fails");
        assert!(matches!(e, BackendError::Unavailable(_)), "{step}: {e:?}");
        for kind in ["pods", "services", "secrets", "networkpolicies"] {
            assert!(
                sim.sim.names(kind, "deer-flow").is_empty(),
                "{kind} leaked after {step} failed ({made_before} made before)"
            );
        }
    }
    // The rollback's own first delete fails too: the retry still cleans up.
    sim.sim.fail_next("POST", "/networkpolicies", 1);
    sim.sim.fail_next("DELETE", "/pods/", 1);
    b.create(&spec("sbx-5", "u", "t")).await.expect_err("fails");
    for kind in ["pods", "services", "secrets", "networkpolicies"] {
        assert!(sim.sim.names(kind, "deer-flow").is_empty(), "{kind} leaked");
    }
    // Random 500s: every create either works or is a 503.
    sim.sim.set_error_rate(0.3);
    for i in 0..10 {
        let id = format!("flaky-{i}");
        let r = b.create(&spec(&id, "u", "t")).await;
        assert!(
            matches!(r, Ok(_) | Err(BackendError::Unavailable(_))),
            "{r:?}"
        );
    }
    sim.sim.set_error_rate(0.0);
    // Slow API server: bounded, 503, no hang.
    sim.sim.set_latency(Duration::from_secs(5));
    let t = std::time::Instant::now();
    let e = b
        .get(&SandboxId::new("x").expect("id"))
        .await
        .expect_err("times out");
    assert!(matches!(e, BackendError::Unavailable(_)), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(4));
    sim.sim.set_latency(Duration::ZERO);
    // Refused connections: 503.
    sim.refuse_connections(true).await.expect("close");
    let e = b.list().await.expect_err("refused");
    assert!(matches!(e, BackendError::Unavailable(_)), "{e:?}");
    let e = KubeBackend::connect(config(&sim, "/df"))
        .await
        .expect_err("cannot connect");
    assert!(matches!(e, BackendError::Unavailable(_)), "{e:?}");
}

/// The debug `paddock` binary the run-pods tests start as agents; without it they skip,
/// loudly, and fail under CI=true.
fn paddock_bin() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/paddock");
    if p.is_file() {
        return Some(p);
    }
    let msg = "target/debug/paddock is not built (cargo build -p paddock-cli)";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    None
}

async fn exec(url: &str, cmd: &str) -> serde_json::Value {
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{url}/v1/shell/exec"))
        .json(&serde_json::json!({"command": cmd}))
        .send()
        .await
        .expect("exec request");
    assert!(r.status().is_success(), "exec status {}", r.status());
    r.json().await.expect("json")
}

#[tokio::test]
async fn run_pods_exec_persist_and_isolate_users() {
    let Some(bin) = paddock_bin() else {
        return;
    };
    let base = tempfile::tempdir().expect("tmp");
    let sim = sim(SimOptions {
        run_pods: true,
        paddock_bin: bin,
        pv_root: base.path().join("pv"),
        ..SimOptions::default()
    })
    .await;
    let base_s = base.path().to_string_lossy().into_owned();
    let b = KubeBackend::connect(config(&sim, &base_s))
        .await
        .expect("connect");
    let s = spec("e2e-1", "user-7", "thread-42");
    let r = b.create(&s).await.expect("create");
    assert_eq!(r.status, SandboxStatus::Running);
    let out = exec(
        &r.sandbox_url,
        "echo hello > /mnt/user-data/workspace/note.txt && cat /mnt/user-data/workspace/note.txt",
    )
    .await;
    assert!(out.to_string().contains("hello"), "{out}");
    let on_host = base
        .path()
        .join("users/user-7/threads/thread-42/user-data/workspace/note.txt");
    assert_eq!(
        std::fs::read_to_string(&on_host).expect("persisted on the user-scoped path"),
        "hello\n"
    );
    assert!(b.destroy(&s.sandbox_id).await.expect("destroy"));
    // The Pod's agent process is gone with the Pod, and so is its NodePort.
    let gone = reqwest::Client::new()
        .get(format!("{}/v1/sandbox", r.sandbox_url))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(gone.is_err(), "the deleted sandbox still answers: {gone:?}");
    let r2 = b.create(&s).await.expect("create again");
    let out = exec(&r2.sandbox_url, "cat /mnt/user-data/workspace/note.txt").await;
    assert!(out.to_string().contains("hello"), "{out}");
    // Another user's sandbox of the same thread id sees nothing of user-7's.
    let other = b
        .create(&spec("e2e-2", "user-8", "thread-42"))
        .await
        .expect("create");
    let out = exec(
        &other.sandbox_url,
        "ls /mnt/user-data/workspace; cat /mnt/user-data/workspace/note.txt 2>&1 || true",
    )
    .await;
    assert!(!out.to_string().contains("hello"), "{out}");
    b.destroy(&s.sandbox_id).await.expect("destroy");
    b.destroy(&other.sandbox_id).await.expect("destroy");
    sim.shutdown().await;
}

#[tokio::test]
async fn slow_pods_answer_pending_and_failed_pods_are_rolled_back() {
    let sim_slow = sim(SimOptions {
        pod_start: Duration::from_secs(3),
        ..SimOptions::default()
    })
    .await;
    let b = KubeBackend::connect(KubeConfig {
        ready_timeout_secs: 1,
        ..config(&sim_slow, "/df")
    })
    .await
    .expect("connect");
    let s = spec("slow-1", "u", "t");
    let t = std::time::Instant::now();
    let r = b.create(&s).await.expect("create");
    assert_eq!(r.status, SandboxStatus::Pending);
    assert!(t.elapsed() < Duration::from_secs(3));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = b.get(&s.sandbox_id).await.expect("get").expect("exists");
    assert_eq!(later.status, SandboxStatus::Running);
    assert_eq!(later.sandbox_url, r.sandbox_url);

    // A Pod the kubelet cannot start (no such binary) fails: create answers 500 and
    // removes what it made.
    let sim_bad = sim(SimOptions {
        run_pods: true,
        paddock_bin: PathBuf::from("/nonexistent/paddock"),
        ..SimOptions::default()
    })
    .await;
    let base = tempfile::tempdir().expect("tmp");
    let b = KubeBackend::connect(config(&sim_bad, &base.path().to_string_lossy()))
        .await
        .expect("connect");
    let e = b.create(&spec("bad-1", "u", "t")).await.expect_err("fails");
    assert!(matches!(e, BackendError::Internal(_)), "{e:?}");
    for kind in ["pods", "services", "secrets", "networkpolicies"] {
        assert!(
            sim_bad.sim.names(kind, "deer-flow").is_empty(),
            "{kind} left behind"
        );
    }
}

#[tokio::test]
async fn run_pods_pvc_mode_lands_under_the_claims_user_scoped_subpath() {
    let Some(bin) = paddock_bin() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let sim = sim(SimOptions {
        run_pods: true,
        paddock_bin: bin,
        pv_root: tmp.path().join("pv"),
        ..SimOptions::default()
    })
    .await;
    let b = KubeBackend::connect(KubeConfig {
        userdata_pvc_name: Some("deerflow-data".into()),
        // Skills stay a hostPath (no SKILLS_PVC_NAME), which the kubelet creates.
        skills_host_path: Some(tmp.path().join("skills").to_string_lossy().into_owned()),
        ..config(&sim, "/unused-in-pvc-mode")
    })
    .await
    .expect("connect");
    let r = b
        .create(&spec("pvc-1", "user-7", "thread-42"))
        .await
        .expect("create");
    exec(&r.sandbox_url, "echo pvc > /mnt/user-data/outputs/o.txt").await;
    let f = tmp
        .path()
        .join("pv/deerflow-data/deer-flow/users/user-7/threads/thread-42/user-data/outputs/o.txt");
    assert_eq!(
        std::fs::read_to_string(&f).expect("in the PVC subPath"),
        "pvc\n"
    );
    b.destroy(&r.sandbox_id).await.expect("destroy");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_pod_left_by_a_partial_delete_is_replaced() {
    let sim = sim(SimOptions::default()).await;
    let b = KubeBackend::connect(config(&sim, "/df"))
        .await
        .expect("connect");
    let s = spec("partial-1", "u", "t");
    let first = b.create(&s).await.expect("create");
    let uid = |sim: &SimServer| {
        sim.sim
            .object("pods", "deer-flow", "sandbox-partial-1")
            .map(|p| p["metadata"]["uid"].clone())
    };
    let old_uid = uid(&sim);
    // Everything but the Pod is gone (a destroy interrupted after its first deletes).
    for (kind, name) in [
        ("networkpolicies", "sandbox-partial-1-net"),
        ("services", "sandbox-partial-1-svc"),
        ("secrets", "sandbox-partial-1-token"),
    ] {
        let url = match kind {
            "networkpolicies" => format!(
                "{}/apis/networking.k8s.io/v1/namespaces/deer-flow/{kind}/{name}",
                sim.url()
            ),
            _ => format!("{}/api/v1/namespaces/deer-flow/{kind}/{name}", sim.url()),
        };
        let r = reqwest::Client::new()
            .delete(url)
            .send()
            .await
            .expect("delete");
        assert!(r.status().is_success());
    }
    let second = b.create(&s).await.expect("create again");
    assert_ne!(second.sandbox_url, first.sandbox_url, "a new token");
    assert_ne!(uid(&sim), old_uid, "the stale pod was replaced");
    let pod = sim
        .sim
        .object("pods", "deer-flow", "sandbox-partial-1")
        .expect("pod");
    let token = second.sandbox_url.rsplit('/').next().expect("token");
    assert!(
        pod.to_string().contains(&format!("Bearer {token}")),
        "probe uses the new token"
    );
}

/// Pids of processes whose command line mentions `needle`.
fn pids_mentioning(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            out.push(pid);
        }
    }
    out
}

#[tokio::test]
async fn a_dropped_simulator_ends_its_agents() {
    let Some(bin) = paddock_bin() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let host_base = tmp.path().join("hostbase");
    let sim = sim(SimOptions {
        run_pods: true,
        paddock_bin: bin,
        ..SimOptions::default()
    })
    .await;
    let b = KubeBackend::connect(config(&sim, &host_base.to_string_lossy()))
        .await
        .expect("connect");
    let r = b
        .create(&spec("dropped-1", "user-d", "thread-dropped-sim-1"))
        .await
        .expect("create");
    exec(&r.sandbox_url, "true").await;
    // The agent runs with `--thread thread-dropped-sim-1` (its data dir is the kubelet's).
    let needle = "thread-dropped-sim-1".to_owned();
    let agents = pids_mentioning(&needle);
    assert_eq!(agents.len(), 1, "one agent for the pod: {agents:?}");
    // Dropped without shutdown (as a test's guard is): the agent goes with it.
    drop(b);
    drop(sim);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !pids_mentioning(&needle).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "agents outlived the simulator: {:?}",
            pids_mentioning(&needle)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
