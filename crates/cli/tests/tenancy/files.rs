//! Point 11 (files): what the server writes into a tenant's directory belongs to the
//! tenant, and a tenant's data is not readable by other users of the host. An upload in
//! progress leaves no root-owned temp file in the tenant's directory; the thread's data
//! directories are 0700, what the API creates there 0600, and a file a command creates
//! (with the usual umask, 0644) cannot be read by another host user; data left
//! world-readable (by an older version, or by the tenant) is made private again when the
//! sandbox is next prepared. DeerFlow's gateway directories keep the modes the gateway gave
//! them, and what the API writes there belongs to the gateway's user, whom the sandbox's
//! idmapped view shows as itself.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::harness::{Sandbox, Serve, can_run, thread_dir};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o777
}

/// Whether `nobody` (65534) can read `path` on the host.
fn nobody_can_read(path: &Path) -> bool {
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(path)
        .output()
        .expect("setpriv (util-linux) runs");
    out.status.success()
}

/// Entries of `dir` not owned by `uid`.
fn not_owned_by(dir: &Path, uid: u32) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.metadata().unwrap().uid() != uid)
        .map(|e| {
            format!(
                "{} (uid {})",
                e.file_name().to_string_lossy(),
                e.metadata().unwrap().uid()
            )
        })
        .collect()
}

/// A `PUT /v1/fs/write_bytes` whose body arrives in two parts with a pause between them;
/// `during` runs in the pause. Returns the status and body.
async fn slow_upload(
    srv: &Serve,
    sb: &Sandbox,
    path: &str,
    during: impl FnOnce(),
) -> (u16, String) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let req = srv
        .client
        .put(format!("{}/v1/fs/write_bytes?path={path}", sb.url))
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let upload = tokio::spawn(req);
    tx.send(Ok(vec![b'a'; 64 * 1024])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    during();
    tx.send(Ok(vec![b'b'; 64 * 1024])).await.unwrap();
    drop(tx);
    let resp = upload.await.unwrap().unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_files_belong_to_the_tenant_and_are_private_on_the_host() {
    if !can_run() {
        return;
    }
    let srv = Serve::start("log:\n  level: warn\n");
    let sb = srv.sandbox("alice", "t1").await;
    let data = thread_dir(&srv.data, "alice", "t1").join("user-data");
    let uid = std::fs::metadata(&data).unwrap().uid();
    assert_ne!(uid, 0, "the thread's data is the sandbox's");

    // An upload in progress: nothing in the tenant's directory is root's.
    let uploads = data.join("uploads");
    let mut seen = Vec::new();
    let (status, body) = slow_upload(&srv, &sb, "/mnt/user-data/uploads/big.bin", || {
        seen = not_owned_by(&uploads, uid);
    })
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(seen.is_empty(), "during the upload: {seen:?}");
    let big = uploads.join("big.bin");
    assert_eq!(std::fs::metadata(&big).unwrap().len(), 128 * 1024);
    assert_eq!(std::fs::metadata(&big).unwrap().uid(), uid);
    assert!(not_owned_by(&uploads, uid).is_empty());

    // Private: the data directories, what the API creates, what a command creates.
    for d in ["", "workspace", "uploads", "outputs"] {
        assert_eq!(mode(&data.join(d)), 0o700, "user-data/{d}");
    }
    assert_eq!(mode(&big), 0o600);
    let (s, v) = srv
        .post_json(
            &sb,
            "/v1/fs/write_text",
            json!({"path": "/mnt/user-data/workspace/api/new.txt", "content": "api"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(mode(&data.join("workspace/api")), 0o700);
    assert_eq!(mode(&data.join("workspace/api/new.txt")), 0o600);
    let ran = srv
        .run(
            &sb,
            "umask 022 && echo tenant > /mnt/user-data/workspace/cmd.txt && stat -c %a /mnt/user-data/workspace/cmd.txt",
        )
        .await;
    assert_eq!(ran.output.trim(), "644", "{ran:?}");
    let cmd = data.join("workspace/cmd.txt");
    assert!(
        !nobody_can_read(&cmd),
        "another host user read a tenant's file"
    );
    assert!(!nobody_can_read(&big));

    // Opened up (by the tenant, or left so by an older version): private again once the
    // sandbox is prepared again.
    let ran = srv
        .run(
            &sb,
            "chmod 755 /mnt/user-data /mnt/user-data/workspace /mnt/user-data/workspace/api && chmod 644 /mnt/user-data/workspace/api/new.txt",
        )
        .await;
    assert_eq!(ran.exit_code, Some(0), "{ran:?}");
    assert!(nobody_can_read(&data.join("workspace/api/new.txt")));
    let (s, v) = srv
        .api(
            reqwest::Method::DELETE,
            &format!("/api/sandboxes/{}", sb.id),
            None,
        )
        .await;
    assert!(s == 200 || s == 204, "{s} {v}");
    let sb = srv.sandbox("alice", "t1").await;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("workspace")), 0o700);
    assert_eq!(mode(&data.join("workspace/api")), 0o700);
    assert_eq!(mode(&data.join("workspace/api/new.txt")), 0o600);
    assert_eq!(mode(&cmd), 0o600);
    assert!(!nobody_can_read(&data.join("workspace/api/new.txt")));
    // The tenant still has its files.
    let ran = srv
        .run(&sb, "cat /mnt/user-data/workspace/api/new.txt")
        .await;
    assert_eq!(ran.output.trim(), "api", "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_s_directories_keep_their_modes() {
    if !can_run() {
        return;
    }
    let gw = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(gw.path()).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The gateway's own user, as on a real host (not root, not a sandbox's uid).
    std::os::unix::fs::chown(&base, Some(4242), Some(4242)).unwrap();
    let srv = Serve::start(&format!(
        "log:\n  level: warn\ndeerflow:\n  host_base_dir: {}\n",
        base.display()
    ));
    let sb = srv.sandbox("alice", "t1").await;
    let data = thread_dir(&base, "alice", "t1").join("user-data");
    // As the gateway makes them (containers of other uids write there), never chowned.
    for d in ["", "workspace", "uploads", "outputs"] {
        let md = std::fs::metadata(data.join(d)).unwrap();
        assert_eq!(md.mode() & 0o777, 0o777, "user-data/{d}");
        assert_eq!(md.uid(), std::fs::metadata(&base).unwrap().uid());
    }
    let (s, v) = srv
        .post_json(
            &sb,
            "/v1/fs/write_text",
            json!({"path": "/mnt/user-data/outputs/report.md", "content": "# done"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // The gateway serves outputs: what the API writes there is readable as it was, and
    // it belongs to the gateway's user on disk, as what the sandbox's commands write there
    // does, so the sandbox (which sees that user as itself) can change it.
    let report = data.join("outputs/report.md");
    assert_eq!(mode(&report) & 0o044, 0o044, "{:o}", mode(&report));
    assert_eq!(std::fs::metadata(&report).unwrap().uid(), 4242);
    let ran = srv
        .run(
            &sb,
            "[ \"$(stat -c %u /mnt/user-data/outputs/report.md)\" = \"$(id -u)\" ] && echo more >> /mnt/user-data/outputs/report.md && echo appended",
        )
        .await;
    assert_eq!(ran.output.trim(), "appended", "{ran:?}");
}
