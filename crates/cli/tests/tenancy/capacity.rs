//! Capacity cannot be starved (issue 16, point 8): one user cannot hold every sandbox slot
//! or every exec slot, and a sandbox kept alive by a background process, or by constant
//! use, is reaped at the busy-idle bound or at its maximum lifetime. Every refusal is a 429
//! that names its limit and carries `Retry-After`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Sandbox, Serve, can_run, thread_dir, wait_for};

/// A create of `user`'s `thread` with the response's status, body and `Retry-After`.
async fn create(serve: &Serve, user: &str, thread: &str) -> (u16, Value, Option<String>) {
    let resp = serve
        .client
        .post(format!("{}/api/sandboxes", serve.base))
        .header("X-API-Key", &serve.key)
        .header("content-type", "application/json")
        .body(
            json!({"sandbox_id": format!("{user}-{thread}"), "thread_id": thread, "user_id": user})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    (status, body, retry)
}

/// A POST to a sandbox route with the status, body and `Retry-After`.
async fn post(
    serve: &Serve,
    sb: &Sandbox,
    route: &str,
    body: Value,
) -> (u16, Value, Option<String>) {
    let resp = serve
        .client
        .post(format!("{}{route}", sb.url))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, retry)
}

async fn exists(serve: &Serve, id: &str) -> bool {
    let (s, v) = serve
        .api(reqwest::Method::GET, &format!("/api/sandboxes/{id}"), None)
        .await;
    assert!(s == 200 || s == 404, "{s}: {v}");
    s == 200
}

fn reaped_line(serve: &Serve, id: &str) -> Option<String> {
    serve
        .log()
        .into_iter()
        .find(|l| l.contains("sandbox reaped") && l.contains(id))
}

async fn metrics(serve: &Serve) -> String {
    serve
        .client
        .get(format!("{}/metrics", serve.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_take_all_capacity() {
    if !can_run() {
        return;
    }
    let serve = Serve::start("server:\n  max_sandboxes: 4\n  max_sandboxes_per_user: 2\n");
    // The hostile user asks for every slot of the server.
    let mut granted = 0;
    let mut refusal = None;
    for t in 0..4 {
        let (s, v, retry) = create(&serve, "mallory", &format!("t{t}")).await;
        match s {
            200 => granted += 1,
            429 => refusal = Some((v, retry)),
            other => panic!("create: {other} {v}"),
        }
    }
    assert_eq!(granted, 2, "mallory got only her share");
    let (v, retry) = refusal.expect("a refusal");
    assert_eq!(v["limit"], "max_sandboxes_per_user", "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("max_sandboxes_per_user = 2"),
        "{v}"
    );
    assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|n| n > 0)));
    // Another user still gets a sandbox, and it works.
    let alice = serve.sandbox("alice", "t0").await;
    assert_eq!(serve.run(&alice, "echo fine").await.output.trim(), "fine");
    // The refusal is in the request log with its limit.
    assert!(
        serve
            .log()
            .iter()
            .any(|l| l.contains("429") && l.contains("max_sandboxes_per_user")),
        "the refusal is logged with its limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_exec_concurrency_is_capped_and_named() {
    if !can_run() {
        return;
    }
    let serve = Serve::start("server:\n  max_concurrent_execs_per_user: 2\n");
    let (a1, a2) = (
        serve.sandbox("mallory", "t1").await,
        serve.sandbox("mallory", "t2").await,
    );
    let bob = serve.sandbox("bob", "t1").await;
    // Two long commands, one in each of mallory's sandboxes: her whole allowance. Each
    // says when it runs and ends when the test lets it.
    let ws = |t: &str| thread_dir(&serve.data, "mallory", t).join("user-data/workspace");
    let mut long = Vec::new();
    for sb in [&a1, &a2] {
        let (client, url) = (serve.client.clone(), sb.url.clone());
        long.push(tokio::spawn(async move {
            let cmd = "touch running; while [ ! -e stop ]; do sleep 0.1; done; echo done";
            client
                .post(format!("{url}/v1/shell/exec"))
                .header("content-type", "application/json")
                .body(json!({"command": cmd}).to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let both_run = || ws("t1").join("running").exists() && ws("t2").join("running").exists();
    assert!(
        wait_for(Duration::from_secs(20), || both_run().then_some(())).is_some(),
        "the long commands did not start"
    );
    // A third command of hers, on either sandbox, is refused.
    let (s, v, retry) = post(&serve, &a2, "/v1/shell/exec", json!({"command": "true"})).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["limit"], "max_concurrent_execs_per_user", "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("max_concurrent_execs_per_user = 2"),
        "{v}"
    );
    assert_eq!(v["success"], false, "the AIO envelope: {v}");
    assert_eq!(retry.as_deref(), Some("1"));
    // The native streamed exec and the tool layer are the same budget.
    let (s, v, _) = post(&serve, &a1, "/v1/exec", json!({"command": "true"})).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["limit"], "max_concurrent_execs_per_user", "{v}");
    let (s, v, _) = post(&serve, &a1, "/v1/tools/bash", json!({"command": "true"})).await;
    assert_eq!(s, 429, "{v}");
    // Other users are not affected (run asserts a 200).
    assert_eq!(serve.run(&bob, "echo ok").await.output.trim(), "ok");
    // Her slots come back when her commands end.
    for t in ["t1", "t2"] {
        std::fs::write(ws(t).join("stop"), b"").unwrap();
    }
    for h in long {
        assert_eq!(h.await.unwrap(), 200);
    }
    assert_eq!(serve.run(&a1, "echo again").await.output.trim(), "again");
    let m = metrics(&serve).await;
    assert!(
        m.lines().any(|l| l
            .starts_with("paddock_limit_refusals_total{limit=\"max_concurrent_execs_per_user\"}")
            && !l.ends_with(" 0")),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_sandbox_is_reaped_after_the_busy_idle_bound() {
    if !can_run() {
        return;
    }
    let serve = Serve::start(
        "server:\n  idle_timeout_secs: 1\n  busy_idle_timeout_secs: 3\n  max_lifetime_secs: 0\n  reap_interval_secs: 1\n",
    );
    let sb = serve.sandbox("mallory", "bg").await;
    // A background process that outlives its exec and leaves a heartbeat in the workspace.
    serve
        .run(
            &sb,
            "nohup sh -c 'while true; do date +%s%N > /mnt/user-data/workspace/beat; sleep 0.2; done' >/dev/null 2>&1 &",
        )
        .await;
    let beat = thread_dir(&serve.data, "mallory", "bg").join("user-data/workspace/beat");
    let read = || std::fs::read_to_string(&beat).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(3), || (!read().is_empty())
            .then_some(()))
        .is_some()
    );
    let touched = Instant::now();
    // Past the idle timeout it is kept: processes run in it.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        exists(&serve, &sb.id).await,
        "kept while busy, before the bound"
    );
    // Past the busy-idle bound (3 s) it is reaped anyway (a reaper pass every second).
    let deadline = Instant::now() + Duration::from_secs(6);
    while exists(&serve, &sb.id).await {
        assert!(Instant::now() < deadline, "never reaped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(touched.elapsed() >= Duration::from_secs(2));
    let line = reaped_line(&serve, &sb.id).expect("the reap is logged");
    assert!(line.contains("busy_idle"), "{line}");
    // Its processes are gone (the heartbeat stops), its data stays.
    let last = read();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(read(), last, "the background process was killed");
    assert!(beat.exists(), "its data stays");
    let m = metrics(&serve).await;
    assert!(
        m.contains("paddock_sandbox_reaps_total{reason=\"busy_idle\"} 1"),
        "{m}"
    );
    // The same thread gets a sandbox again, over the same data.
    let again = serve.sandbox("mallory", "bg").await;
    assert_eq!(
        serve
            .run(&again, "test -s /mnt/user-data/workspace/beat && echo kept")
            .await
            .output
            .trim(),
        "kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_lifetime_reaps_a_sandbox_in_constant_use() {
    if !can_run() {
        return;
    }
    let serve = Serve::start(
        "server:\n  idle_timeout_secs: 0\n  busy_idle_timeout_secs: 0\n  max_lifetime_secs: 3\n  reap_interval_secs: 1\n",
    );
    let sb = serve.sandbox("mallory", "forever").await;
    serve
        .run(
            &sb,
            "nohup sleep 300 >/dev/null 2>&1 & echo started > /mnt/user-data/workspace/mark",
        )
        .await;
    let created = Instant::now();
    // Used every 200 ms: never idle, always busy. Only the lifetime can end it.
    loop {
        let (s, _, _) = post(&serve, &sb, "/v1/shell/exec", json!({"command": "true"})).await;
        if s != 200 || !exists(&serve, &sb.id).await {
            break;
        }
        assert!(created.elapsed() < Duration::from_secs(8), "never reaped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        created.elapsed() >= Duration::from_secs(2),
        "reaped too early: {:?}",
        created.elapsed()
    );
    let line = wait_for(Duration::from_secs(2), || reaped_line(&serve, &sb.id))
        .expect("the reap is logged");
    assert!(line.contains("max_lifetime"), "{line}");
    assert!(
        thread_dir(&serve.data, "mallory", "forever")
            .join("user-data/workspace/mark")
            .exists(),
        "its data stays"
    );
}
