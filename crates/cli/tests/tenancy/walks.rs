//! Point 5: the server's file descriptors do not scale with a tenant's tree. Recursive
//! list, find, glob and grep over a wide tree use a bounded number of descriptors, while
//! another tenant's creates and commands keep working.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Serve, can_run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_walks_keep_the_server_s_descriptors_bounded() {
    if !can_run() {
        return;
    }
    let srv = Serve::start("log:\n  level: warn\n");
    let sb = srv.sandbox("mallory", "t1").await;
    // 120 directories of 100 subdirectories each (12,120 directories), one file in each
    // leaf that grep will find.
    let made = srv
        .run(
            &sb,
            "cd /mnt/user-data/workspace && python3 -c '
import os
for i in range(120):
    for j in range(100):
        d = f\"w/d{i}/e{j}\"
        os.makedirs(d)
        open(d + \"/f.txt\", \"w\").write(\"needle\\n\")
' && find w -type d | wc -l",
        )
        .await;
    assert_eq!(made.output.trim(), "12121", "{made:?}");
    let baseline = srv.fds();

    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, stop, pid) = (peak.clone(), stop.clone(), srv.pid());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .map(|d| d.count())
                    .unwrap_or(0);
                peak.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let dir = "/mnt/user-data/workspace/w";
    let walks = [
        ("/v1/file/list", json!({"path": dir, "recursive": true})),
        ("/v1/file/find", json!({"path": dir, "glob": "**/f.txt"})),
        (
            "/v1/file/grep",
            json!({"path": dir, "pattern": "needle", "max_results": 5}),
        ),
        ("/v1/fs/glob", json!({"path": dir, "pattern": "**/*.txt"})),
        ("/v1/fs/grep", json!({"path": dir, "pattern": "needle"})),
        ("/v1/tools/ls", json!({"path": dir})),
        (
            "/v1/tools/glob",
            json!({"path": dir, "pattern": "**/*.txt"}),
        ),
        ("/v1/tools/grep", json!({"path": dir, "pattern": "needle"})),
    ];
    // Two rounds, the walks of a round concurrently.
    for _ in 0..2 {
        let futs = walks
            .iter()
            .map(|(route, body)| srv.post_json(&sb, route, body.clone()));
        for (i, (status, v)) in futures_util::future::join_all(futs)
            .await
            .into_iter()
            .enumerate()
        {
            assert!(
                status == 200 || status == 429,
                "{}: {status} {v}",
                walks[i].0
            );
        }
    }
    // Meanwhile another tenant is served.
    let other = srv.sandbox("alice", "t1").await;
    assert_eq!(srv.run(&other, "echo fine").await.output, "fine\n");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    // Each walk holds at most a handful of descriptors (ten in the walker), so eight
    // concurrent walks add well under 200, against one per pending directory (12,000)
    // without the bound.
    assert!(
        peak < baseline + 200,
        "server fds peaked at {peak} (baseline {baseline})"
    );
}
