//! The simulator driven by kube-rs itself: CRUD, Status errors, selectors, NodePort
//! allocation, watch and faults.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Api, Client};
use paddock_kubesim::{SimOptions, SimServer};
use serde_json::json;

async fn setup() -> (SimServer, Client) {
    let sim = SimServer::start("127.0.0.1:0".parse().expect("addr"), SimOptions::default())
        .await
        .expect("sim starts");
    let mut cfg = kube::Config::new(sim.url().parse().expect("url"));
    cfg.default_namespace = "deer-flow".into();
    cfg.read_timeout = Some(Duration::from_secs(5));
    let client = Client::try_from(cfg).expect("client");
    (sim, client)
}

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "i"}]}
    }))
    .expect("pod")
}

fn code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn crud_errors_and_selectors() {
    let (_sim, client) = setup().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "deer-flow");
    let made = pods
        .create(
            &PostParams::default(),
            &pod("a", json!({"app": "x", "tier": "web"})),
        )
        .await
        .expect("create");
    assert!(made.metadata.uid.is_some());
    let rv1: u64 = made
        .metadata
        .resource_version
        .clone()
        .expect("rv")
        .parse()
        .expect("num");
    pods.create(&PostParams::default(), &pod("b", json!({"app": "y"})))
        .await
        .expect("create b");
    let (c, r) = code(
        pods.create(&PostParams::default(), &pod("a", json!({})))
            .await
            .expect_err("dup"),
    );
    assert_eq!((c, r.as_str()), (409, "AlreadyExists"));
    let (c, r) = code(pods.get("nope").await.expect_err("missing"));
    assert_eq!((c, r.as_str()), (404, "NotFound"));
    assert!(pods.get_opt("nope").await.expect("get_opt").is_none());
    let (c, r) = code(
        pods.create(&PostParams::default(), &pod("Bad_Name", json!({})))
            .await
            .expect_err("bad name"),
    );
    assert_eq!((c, r.as_str()), (422, "Invalid"));
    let dup: Pod = serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {
        "volumes": [{"name": "v", "emptyDir": {}}],
        "containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "v", "mountPath": "/m"}, {"name": "v", "mountPath": "/m"}]}]}})).expect("pod");
    assert_eq!(
        code(
            pods.create(&PostParams::default(), &dup)
                .await
                .expect_err("dup mount")
        )
        .0,
        422
    );
    let missing: Pod = serde_json::from_value(json!({"metadata": {"name": "e"}, "spec": {
        "containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "v", "mountPath": "/m"}]}]}})).expect("pod");
    assert_eq!(
        code(
            pods.create(&PostParams::default(), &missing)
                .await
                .expect_err("missing vol")
        )
        .0,
        422
    );

    let names = |l: kube::core::ObjectList<Pod>| {
        l.items
            .into_iter()
            .map(|p| p.metadata.name.unwrap_or_default())
            .collect::<Vec<_>>()
    };
    for (sel, want) in [
        ("app=x", vec!["a"]),
        ("app==y", vec!["b"]),
        ("app!=x", vec!["b"]),
        ("app in (x,y)", vec!["a", "b"]),
        ("app notin (x)", vec!["b"]),
        ("tier", vec!["a"]),
        ("!tier", vec!["b"]),
    ] {
        let l = pods
            .list(&ListParams::default().labels(sel))
            .await
            .expect("list");
        let rv: u64 = l
            .metadata
            .resource_version
            .clone()
            .expect("list rv")
            .parse()
            .expect("num");
        assert!(rv > rv1);
        assert_eq!(names(l), want, "{sel}");
    }
    let l = pods
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .expect("list");
    assert_eq!(names(l), vec!["b"]);

    let patched = pods
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": null, "new": "1"}}})),
        )
        .await
        .expect("patch");
    let labels = patched.metadata.labels.expect("labels");
    assert!(!labels.contains_key("tier") && labels["new"] == "1");
    let applied = pods
        .patch(
            "f",
            &PatchParams::apply("test"),
            &Patch::Apply(pod("f", json!({"k": "v"}))),
        )
        .await
        .expect("apply creates");
    assert_eq!(applied.metadata.name.as_deref(), Some("f"));

    pods.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    assert_eq!(
        code(
            pods.delete("a", &DeleteParams::default())
                .await
                .expect_err("gone")
        )
        .0,
        404
    );
}

#[tokio::test]
async fn node_ports_are_allocated_honoured_and_released() {
    let (_sim, client) = setup().await;
    let svcs: Api<Service> = Api::namespaced(client, "deer-flow");
    let svc = |name: &str, port: Option<i32>| -> Service {
        let mut p = json!({"name": "http", "port": 8080});
        if let Some(n) = port {
            p["nodePort"] = json!(n);
        }
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"type": "NodePort", "selector": {"a": "b"}, "ports": [p]}})).expect("svc")
    };
    let a = svcs
        .create(&PostParams::default(), &svc("a", None))
        .await
        .expect("a");
    let np = a.spec.expect("spec").ports.expect("ports")[0]
        .node_port
        .expect("allocated");
    assert!((30000..=32767).contains(&np));
    let b = svcs
        .create(&PostParams::default(), &svc("b", Some(31000)))
        .await
        .expect("b");
    assert_eq!(
        b.spec.expect("spec").ports.expect("ports")[0].node_port,
        Some(31000)
    );
    let (c, _) = code(
        svcs.create(&PostParams::default(), &svc("c", Some(31000)))
            .await
            .expect_err("taken"),
    );
    assert_eq!(c, 422);
    assert_eq!(
        code(
            svcs.create(&PostParams::default(), &svc("d", Some(80)))
                .await
                .expect_err("range")
        )
        .0,
        422
    );
    svcs.delete("b", &DeleteParams::default())
        .await
        .expect("delete");
    svcs.create(&PostParams::default(), &svc("c", Some(31000)))
        .await
        .expect("released port reusable");
}

#[tokio::test]
async fn watch_sees_every_change_in_order_and_pods_turn_ready() {
    let (_sim, client) = setup().await;
    let pods: Api<Pod> = Api::namespaced(client, "deer-flow");
    let list = pods.list(&ListParams::default()).await.expect("list");
    let rv = list.metadata.resource_version.expect("rv");
    let mut stream = pods
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .expect("watch")
        .boxed();
    pods.create(&PostParams::default(), &pod("w", json!({})))
        .await
        .expect("create");
    let mut seen = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .expect("event in time")
        .expect("ok")
    {
        match ev {
            WatchEvent::Added(p) => seen.push(("ADDED", p.status.and_then(|s| s.phase))),
            WatchEvent::Modified(p) => {
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                seen.push(("MODIFIED", p.status.and_then(|s| s.phase)));
                if ready {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![
            ("ADDED", Some("Pending".into())),
            ("MODIFIED", Some("Running".into()))
        ]
    );
    pods.delete("w", &DeleteParams::default())
        .await
        .expect("delete");
    let ev = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .expect("in time")
        .expect("ok");
    assert!(matches!(ev, Some(WatchEvent::Deleted(_))), "{ev:?}");
}

#[tokio::test]
async fn too_old_versions_expire() {
    let sim = SimServer::start(
        "127.0.0.1:0".parse().expect("addr"),
        SimOptions {
            event_log: 2,
            ..SimOptions::default()
        },
    )
    .await
    .expect("sim");
    let client =
        Client::try_from(kube::Config::new(sim.url().parse().expect("url"))).expect("client");
    let pods: Api<Pod> = Api::namespaced(client, "deer-flow");
    for i in 0..5 {
        pods.create(&PostParams::default(), &pod(&format!("p{i}"), json!({})))
            .await
            .expect("create");
    }
    let mut s = pods
        .watch(&WatchParams::default(), "1")
        .await
        .expect("watch")
        .boxed();
    match s.try_next().await.expect("ok") {
        Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn faults_latency_errors_and_refused_connections() {
    let (mut sim, client) = setup().await;
    let pods: Api<Pod> = Api::namespaced(client, "deer-flow");
    sim.sim.set_latency(Duration::from_millis(200));
    let t = std::time::Instant::now();
    pods.list(&ListParams::default()).await.expect("slow list");
    assert!(t.elapsed() >= Duration::from_millis(200));
    sim.sim.set_latency(Duration::ZERO);
    sim.sim.set_error_rate(1.0);
    assert_eq!(
        code(pods.list(&ListParams::default()).await.expect_err("500")).0,
        500
    );
    sim.sim.set_error_rate(0.0);
    sim.refuse_connections(true).await.expect("close");
    let e = tokio::time::timeout(Duration::from_secs(10), pods.list(&ListParams::default()))
        .await
        .expect("no hang")
        .expect_err("refused");
    assert!(!matches!(e, kube::Error::Api(_)), "{e:?}");
    sim.refuse_connections(false).await.expect("reopen");
    pods.list(&ListParams::default())
        .await
        .expect("works again");
}
