//! Point 4: root never operates outside a tenant's tree, however the tenant changes it
//! while root works on it. Inside its own workspace a sandbox exchanges a directory and a
//! symlink to a host directory (`renameat2(RENAME_EXCHANGE)` in a tight loop, so the name
//! is always one or the other; the link's target means nothing inside the jail but is a
//! real path to anything that follows it on the host). Meanwhile the server, as root,
//! writes, uploads, replaces, lists and reads through both names (the file API runs on the
//! host), and a second sandbox of the same thread is created, which hands the whole tree
//! over to its uid (a walk of every entry; the tenant made its data world-readable first,
//! so the walk that makes it private runs whatever the uids). The host directory, the
//! test's own with a marker file, is never chowned, chmodded, written, read back or
//! deleted.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Sandbox, Serve, can_run, thread_dir};

const SECRET: &str = "HOST-MARKER-3e0f";

/// The swapper: exchanges `x` and `y` in the workspace until it is killed (at most 30 s),
/// counting swaps in the jail's `/tmp/swaps`.
const SWAPPER: &str = r#"
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
os.chdir("/mnt/user-data/workspace")
end, n = time.time() + 30, 0
while time.time() < end:
    for _ in range(2000):
        if libc.renameat2(-100, b"x", -100, b"y", 2) == 0:
            n += 1
    with open("/tmp/swaps.part", "w") as f:
        f.write(str(n))
    os.rename("/tmp/swaps.part", "/tmp/swaps")
"#;

/// Every entry below `dir` (links not followed): mode, owner and content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let m = std::fs::symlink_metadata(p).unwrap();
        let content = if m.is_file() {
            std::fs::read_to_string(p).unwrap()
        } else {
            String::new()
        };
        out.insert(
            p.to_path_buf(),
            format!("{:o} {}:{} {content}", m.mode(), m.uid(), m.gid()),
        );
        if m.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

async fn create(srv: &Serve, id: &str, user: &str, thread: &str) -> Sandbox {
    let (s, v) = srv
        .api(
            reqwest::Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": id, "thread_id": thread, "user_id": user})),
        )
        .await;
    assert_eq!(s, 200, "create {id}: {v}");
    Sandbox {
        id: id.to_owned(),
        url: v["sandbox_url"].as_str().unwrap().to_owned(),
    }
}

async fn delete(srv: &Serve, id: &str) {
    let (s, v) = srv
        .api(
            reqwest::Method::DELETE,
            &format!("/api/sandboxes/{id}"),
            None,
        )
        .await;
    assert!(s == 200 || s == 204, "delete {id}: {s} {v}");
}

/// A request through the sandbox's URL; the status and the body as text.
async fn call(
    srv: &Serve,
    sb: &Sandbox,
    method: reqwest::Method,
    route: &str,
    body: Value,
) -> (u16, String) {
    let mut req = srv.client.request(method, format!("{}{route}", sb.url));
    req = match body {
        Value::String(raw) => req.body(raw),
        v => req
            .header("content-type", "application/json")
            .body(v.to_string()),
    };
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// One round of host-side file operations through both swapped names.
async fn file_ops(srv: &Serve, sb: &Sandbox, i: usize) -> (u32, u32) {
    let ws = "/mnt/user-data/workspace";
    let post = reqwest::Method::POST;
    let calls = [
        (
            reqwest::Method::PUT,
            format!("/v1/fs/write_bytes?path={ws}/y/up{i}.bin"),
            Value::String("uploaded".into()),
        ),
        (
            post.clone(),
            "/v1/fs/write_text".into(),
            json!({"path": format!("{ws}/y/w{i}.txt"), "content": "written"}),
        ),
        (
            post.clone(),
            "/v1/fs/write_text".into(),
            json!({"path": format!("{ws}/x/d{i}/deeper/w.txt"), "content": "written"}),
        ),
        (
            post.clone(),
            "/v1/fs/str_replace".into(),
            json!({"path": format!("{ws}/y/f1"), "old": "inside", "new": "inside!"}),
        ),
        (
            post.clone(),
            "/v1/fs/read_text".into(),
            json!({"path": format!("{ws}/y/host-marker")}),
        ),
        (
            post.clone(),
            "/v1/fs/list".into(),
            json!({"path": ws, "max_depth": 3}),
        ),
        (
            post.clone(),
            "/v1/fs/grep".into(),
            json!({"path": ws, "pattern": "MARKER-3e0"}),
        ),
    ];
    let (mut done, mut refused) = (0, 0);
    for (method, route, body) in calls {
        let (status, text) = call(srv, sb, method, &route, body).await;
        assert!(!text.contains(SECRET), "{route}: read from outside: {text}");
        assert!(status < 500, "{route}: {status} {text}");
        if status == 200 {
            done += 1;
        } else {
            refused += 1;
        }
    }
    (done, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_never_follows_a_tenant_s_swapped_link_out_of_its_tree() {
    if !can_run() {
        return;
    }
    let srv = Serve::start("log:\n  level: warn\n");
    let host = tempfile::tempdir().unwrap();
    let target = std::fs::canonicalize(host.path()).unwrap().join("host-dir");
    std::fs::create_dir_all(target.join("sub")).unwrap();
    std::fs::write(target.join("host-marker"), SECRET).unwrap();
    std::fs::write(target.join("f1"), format!("{SECRET} inside")).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        target.join("host-marker"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let before = snapshot(&target);

    let (mut done, mut refused, mut swaps, mut handovers) = (0u32, 0u32, 0u64, 0u32);
    for round in 0..3 {
        let thread = format!("t{round}");
        let sb = create(&srv, &format!("mallory-{thread}"), "mallory", &thread).await;
        let setup = srv
            .run(
                &sb,
                &format!(
                    "cd /mnt/user-data/workspace && mkdir -p x/sub bulk && \
                     for i in $(seq 0 199); do echo inside > x/f$i; done && \
                     python3 -c 'import os
for i in range(1500): open(f\"bulk/b{{i}}\", \"w\").write(\"bulk\")' && \
                     ln -s {target} y && cat > /tmp/swap.py <<'EOF'\n{SWAPPER}\nEOF\n\
                     (python3 /tmp/swap.py >/dev/null 2>&1 &) && sleep 0.5 && cat /tmp/swaps",
                    target = target.display()
                ),
            )
            .await;
        assert_eq!(setup.exit_code, Some(0), "{setup:?}");

        // The file API, as root on the host, through both names while they swap.
        let deadline = Instant::now() + Duration::from_millis(800);
        let mut i = 0;
        while Instant::now() < deadline {
            let (d, r) = file_ops(&srv, &sb, round * 1000 + i).await;
            done += d;
            refused += r;
            i += 1;
        }
        swaps += srv
            .run(&sb, "cat /tmp/swaps")
            .await
            .output
            .trim()
            .parse::<u64>()
            .unwrap();
        assert_eq!(snapshot(&target), before, "round {round}: file API");

        // A second sandbox of the thread: its preparation walks the whole tree (handing it
        // to its uid, making it private again) while the swapper runs.
        let data = thread_dir(&srv.data, "mallory", &thread).join("user-data");
        let opened = srv
            .run(&sb, "chmod 755 /mnt/user-data /mnt/user-data/workspace")
            .await;
        assert_eq!(opened.exit_code, Some(0), "{opened:?}");
        assert_eq!(std::fs::metadata(&data).unwrap().mode() & 0o777, 0o755);
        let again = format!("mallory-{thread}-again");
        create(&srv, &again, "mallory", &thread).await;
        let mode = std::fs::metadata(&data).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "round {round}: the handover walk ran");
        handovers += 1;
        assert_eq!(snapshot(&target), before, "round {round}: handover");
        delete(&srv, &again).await;
        delete(&srv, &sb.id).await;
    }
    assert_eq!(snapshot(&target), before);
    eprintln!(
        "races: {done} file operations done, {refused} refused, {swaps} swaps, {handovers} handovers"
    );
    assert!(done > 20 && swaps > 1000, "{done} done, {swaps} swaps");
}
