//! Point 6: the server's memory is bounded by configuration, not by what tenants send. A
//! `replace_all` that would blow a 1 MB file up to 600 MB, commands whose output is all
//! control characters (six bytes each once JSON-escaped, and named twice by AIO's shell
//! route), reads of files full of them, and many of these at once: the server's peak
//! resident memory stays below a bound set from the configured caps, the blow-up is refused
//! before it is built (413 naming `new`), a file over the read cap gets 413 naming
//! `agent.max_read_bytes`, and heavy requests past their limits get 429 with `Retry-After`
//! naming the limit.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::harness::{Sandbox, Serve, can_run};

const MIB: u64 = 1 << 20;

/// A 4 MiB command output cap, an 8 MiB read cap, 3 heavy requests per sandbox and 5 in all.
const CONFIG: &str = "log:\n  level: warn\n\
sandbox:\n  output_cap_bytes: 4194304\n\
agent:\n  max_read_bytes: 8388608\n  max_concurrent_heavy_per_sandbox: 3\n  max_concurrent_heavy: 5\n";

/// The server may grow by this much over its resting size during the battery: the caps
/// above allow a few tens of MiB per request, five at once.
const GROWTH_BOUND: u64 = 128 * MIB;

/// Sends a JSON POST and reads the response as a stream, keeping only its size and first
/// bytes (a 50 MB response must not cost the test its memory either).
async fn post_counted(srv: &Serve, sb: &Sandbox, route: &str, body: Value) -> (u16, u64, String) {
    let resp = srv
        .client
        .post(format!("{}{route}", sb.url))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let mut stream = resp.bytes_stream();
    let mut total = 0u64;
    let mut head = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        total += chunk.len() as u64;
        if head.len() < 4096 {
            head.extend_from_slice(&chunk[..chunk.len().min(4096 - head.len())]);
        }
    }
    (status, total, String::from_utf8_lossy(&head).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_amplification_battery_stays_within_the_configured_memory() {
    if !can_run() {
        return;
    }
    let srv = Serve::start(CONFIG);
    let mallory = srv.sandbox("mallory", "t1").await;
    let eve = srv.sandbox("eve", "t1").await;
    let bob = srv.sandbox("bob", "t1").await;
    let ws = "/mnt/user-data/workspace";
    // A 1 MB file of one letter; a 7 MB file of control characters (42 MB as JSON); a
    // 20 MB file over the read cap.
    let made = srv
        .run(
            &mallory,
            &format!(
                "cd {ws} && head -c 1000000 /dev/zero | tr '\\0' a > bomb.txt && \
                 head -c 7000000 /dev/zero | tr '\\0' '\\1' > ctl.txt && \
                 head -c 20000000 /dev/zero | tr '\\0' b > big.txt && wc -c < ctl.txt"
            ),
        )
        .await;
    assert_eq!(made.output.trim(), "7000000", "{made:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resting = srv.rss();
    let peak_before = srv.peak_rss();

    // 1. replace_all blow-up: 1,000,000 matches x 600 bytes. Refused before it is built.
    let (s, v) = srv
        .post_json(
            &mallory,
            "/v1/fs/str_replace",
            json!({"path": format!("{ws}/bomb.txt"), "old": "a", "new": "x".repeat(600), "replace_all": true}),
        )
        .await;
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["field"], "new", "{v}");
    assert_eq!(v["code"], "too_large", "{v}");
    assert_eq!(v["error"]["kind"], "result_too_large", "{v}");
    assert_eq!(v["error"]["size"], 600_000_000u64, "{v}");
    // The tool layer is held to the same bound and says nothing changed.
    let (s, v) = srv
        .post_json(
            &mallory,
            "/v1/tools/str_replace",
            json!({"path": format!("{ws}/bomb.txt"), "old_str": "a", "new_str": "y".repeat(600), "replace_all": true}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let out = v["output"].as_str().unwrap_or_default();
    assert!(
        out.contains("600000000 bytes") && out.contains("not changed"),
        "{v}"
    );
    let size = srv.run(&mallory, &format!("wc -c < {ws}/bomb.txt")).await;
    assert_eq!(size.output.trim(), "1000000", "the file is unchanged");

    // 2. Command output of control characters through both AIO exec routes, 4 MiB each
    //    (the cap): 24 MiB per copy once escaped, named twice by /v1/shell/exec.
    let (s, n, head) = post_counted(
        &srv,
        &mallory,
        "/v1/shell/exec",
        json!({"command": "head -c 4194304 /dev/zero", "truncate": false}),
    )
    .await;
    assert_eq!(s, 200, "{head}");
    assert!(
        n > 48 * MIB,
        "both copies of the escaped output arrive: {n}"
    );
    let (s, n, head) = post_counted(
        &srv,
        &mallory,
        "/v1/bash/exec",
        json!({"command": "head -c 4194304 /dev/zero; head -c 4194304 /dev/zero >&2"}),
    )
    .await;
    assert_eq!(s, 200, "{head}");
    assert!(n > 48 * MIB, "stdout and stderr arrive: {n}");

    // 3. Reading a file of control characters (7 MB -> 42 MB of JSON), and one over the cap.
    let (s, n, head) = post_counted(
        &srv,
        &mallory,
        "/v1/file/read",
        json!({"file": format!("{ws}/ctl.txt")}),
    )
    .await;
    assert_eq!(s, 200, "{head}");
    assert!(n > 42_000_000, "{n}");
    let (s, v) = srv
        .post_json(
            &mallory,
            "/v1/file/read",
            json!({"file": format!("{ws}/big.txt")}),
        )
        .await;
    assert_eq!(s, 413, "{v}");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("agent.max_read_bytes") && msg.contains("8388608"),
        "{v}"
    );
    let (s, v) = srv
        .post_json(
            &mallory,
            "/v1/fs/read_text",
            json!({"path": format!("{ws}/big.txt")}),
        )
        .await;
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["field"], "path", "{v}");

    // 4. Several at once, from three tenants. Each sandbox may run 3 heavy requests and the
    //    server 5: the sleepers fill mallory's 3 and eve's 2 of the 5, then whatever comes
    //    is refused at once, naming the limit, while the ones admitted complete.
    let heavy = |sb: Sandbox, body: Value, route: &'static str| {
        let client = srv.client.clone();
        tokio::spawn(async move {
            let resp = client
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
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut total = 0u64;
            let mut head = Vec::new();
            let mut stream = resp.bytes_stream();
            while let Some(c) = stream.next().await {
                let c = c.unwrap();
                total += c.len() as u64;
                if head.len() < 2048 {
                    head.extend_from_slice(&c[..c.len().min(2048 - head.len())]);
                }
            }
            (
                status,
                retry,
                total,
                String::from_utf8_lossy(&head).into_owned(),
            )
        })
    };
    let slow_noise = json!({"command": "sleep 2; head -c 4194304 /dev/zero", "truncate": false});
    let mut admitted = Vec::new();
    for _ in 0..3 {
        admitted.push(heavy(mallory.clone(), slow_noise.clone(), "/v1/shell/exec"));
    }
    for _ in 0..2 {
        admitted.push(heavy(
            eve.clone(),
            json!({"command": "sleep 2; head -c 4194304 /dev/zero >&2"}),
            "/v1/bash/exec",
        ));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let refused_own = heavy(
        mallory.clone(),
        json!({"file": format!("{ws}/ctl.txt")}),
        "/v1/file/read",
    )
    .await
    .unwrap();
    assert_eq!(refused_own.0, 429, "{refused_own:?}");
    assert_eq!(refused_own.1.as_deref(), Some("1"), "Retry-After");
    let body: Value = serde_json::from_str(&refused_own.3).unwrap();
    assert_eq!(
        body["limit"], "agent.max_concurrent_heavy_per_sandbox",
        "{body}"
    );
    assert_eq!(body["max"], 3, "{body}");
    let refused_all = heavy(bob.clone(), json!({"command": "echo hi"}), "/v1/shell/exec")
        .await
        .unwrap();
    assert_eq!(refused_all.0, 429, "{refused_all:?}");
    let body: Value = serde_json::from_str(&refused_all.3).unwrap();
    assert_eq!(body["limit"], "agent.max_concurrent_heavy", "{body}");
    assert_eq!(body["success"], false, "the AIO envelope: {body}");
    // Light requests are not heavy: another tenant's stat and readiness still answer.
    let (s, v) = srv
        .post_json(&bob, "/v1/fs/stat", json!({"path": ws}))
        .await;
    assert_eq!(s, 200, "{v}");
    for h in admitted {
        let (status, _, total, head) = h.await.unwrap();
        assert_eq!(status, 200, "{head}");
        assert!(total > 24 * MIB, "{total}");
    }
    // Once they are done, the slots are free again.
    let ran = srv.run(&bob, "echo after").await;
    assert_eq!(ran.output.trim(), "after");

    let peak = srv.peak_rss();
    let growth = peak.saturating_sub(resting);
    eprintln!(
        "server memory: resting {} MiB, peak before the battery {} MiB, peak during it {} MiB (growth {} MiB, bound {} MiB)",
        resting / MIB,
        peak_before / MIB,
        peak / MIB,
        growth / MIB,
        GROWTH_BOUND / MIB
    );
    assert!(
        growth < GROWTH_BOUND,
        "the server grew by {} MiB (peak {} MiB), beyond the {} MiB bound",
        growth / MIB,
        peak / MIB,
        GROWTH_BOUND / MIB
    );
}
