//! Point 9: disk. A sandbox that writes without end must hit its own quota, not fill the
//! host's disk for everyone: each thread's `/mnt/user-data` is an ext4 image of
//! `sandbox.disk_quota_bytes` on a loop device (`paddock_runtime::disk`), so writes past it
//! fail inside with `ENOSPC`, whoever makes them (its commands, or the server's file API),
//! while the host holds at most the quota for it and neighbours keep writing. Data within
//! the quota stays across the sandbox's deletion and re-creation, visible on the host, and
//! a server that stops leaves no mount behind.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::harness::{Serve, can_run, thread_dir, wait_for};

const MIB: u64 = 1 << 20;
const QUOTA: u64 = 16 * MIB;

/// Bytes the host's filesystem holds for the files below `dir`: allocated blocks, an image
/// counted as its file (not again through its mount).
fn allocated(dir: &Path) -> u64 {
    let dev = std::fs::metadata(dir).unwrap().dev();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.dev() != dev {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// Free bytes of the filesystem holding `dir`, as `df` reports them.
fn free_bytes(dir: &Path) -> u64 {
    let o = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

/// Mount points below `dir` in this process's mount table.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Unmounts whatever is left below the data directory when the case ends, passed or not,
/// after the server is gone (declared before it, so dropped after it): the loop devices
/// then detach by themselves.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for m in mounts_below(&self.0) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&m)
                .status();
        }
    }
}

fn is_mount_point(dir: &Path) -> bool {
    let parent = dir.parent().unwrap();
    std::fs::metadata(dir).unwrap().dev() != std::fs::metadata(parent).unwrap().dev()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_filling_its_disk_hits_its_quota_and_the_host_keeps_its_space() {
    if !can_run() {
        return;
    }
    let cleanup;
    let srv = {
        let s = Serve::start(&format!(
            "sandbox:\n  disk_quota_bytes: {QUOTA}\n  disk_quota_mode: image\n"
        ));
        cleanup = Cleanup(s.data.clone());
        s
    };
    let data = std::fs::canonicalize(&srv.data).unwrap();
    let hog = srv.sandbox("mallory", "t1").await;
    let neighbour = srv.sandbox("alice", "t1").await;
    let hog_dir = thread_dir(&data, "mallory", "t1");
    assert!(is_mount_point(&hog_dir.join("user-data")));
    let held_before = allocated(&data);
    let free_before = free_bytes(&data);

    // Four times the quota, from a command.
    let r = srv
        .run(
            &hog,
            "dd if=/dev/urandom of=/mnt/user-data/workspace/fill bs=1M count=64 2>&1; echo rc=$?",
        )
        .await;
    assert!(r.output.contains("No space left on device"), "{}", r.output);
    assert!(!r.output.contains("rc=0"), "{}", r.output);
    // And through the server's file API, which writes as root.
    let (status, v) = srv
        .post_json(
            &hog,
            "/v1/file/write",
            json!({"file": "/mnt/user-data/outputs/more.txt", "content": "y".repeat(2 << 20)}),
        )
        .await;
    assert!(
        status >= 400 && v.to_string().contains("No space left"),
        "{status} {v}"
    );

    // The host holds at most the quota for the whole thread.
    let held_hog = allocated(&hog_dir);
    let grown = allocated(&data).saturating_sub(held_before);
    let free_after = free_bytes(&data);
    eprintln!(
        "disk case: quota {QUOTA}, host holds {held_hog} for the thread, data dir grew {grown}, host free space fell {}",
        free_before.saturating_sub(free_after)
    );
    assert!(
        held_hog <= QUOTA,
        "the host holds {held_hog} bytes for a thread with a {QUOTA}-byte quota"
    );
    assert!(grown <= QUOTA, "the data directory grew {grown} bytes");

    // The neighbour writes as before.
    let r = srv
        .run(
            &neighbour,
            "head -c 4000000 /dev/urandom > /mnt/user-data/workspace/n && stat -c %s /mnt/user-data/workspace/n",
        )
        .await;
    assert_eq!(r.output.trim(), "4000000", "{}", r.output);

    // Inside, user-data's mounts are the image's: no host path in mountinfo.
    let r = srv
        .run(&hog, "grep ' /mnt/user-data' /proc/self/mountinfo")
        .await;
    let host = data.to_string_lossy().into_owned();
    assert!(
        !r.output.is_empty() && !r.output.contains(&host),
        "{}",
        r.output
    );

    // Within the quota, data stays across deletion and re-creation of the sandbox.
    let r = srv
        .run(
            &hog,
            "rm /mnt/user-data/workspace/fill && echo kept > /mnt/user-data/outputs/keep.txt && echo ok",
        )
        .await;
    assert_eq!(r.output.trim(), "ok", "{}", r.output);
    let (status, _) = srv
        .api(
            reqwest::Method::DELETE,
            &format!("/api/sandboxes/{}", hog.id),
            None,
        )
        .await;
    assert_eq!(status, 200);
    // As a plain directory's, the data stays visible on the host after the sandbox is
    // gone (its image stays mounted while the server runs, least recently used first out).
    let on_host = hog_dir.join("user-data/outputs/keep.txt");
    let seen = wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(&on_host).ok()
    });
    assert_eq!(seen.as_deref(), Some("kept\n"));
    assert!(hog_dir.join("user-data.img").is_file());
    let again = srv.sandbox("mallory", "t1").await;
    let r = srv.run(&again, "cat /mnt/user-data/outputs/keep.txt").await;
    assert_eq!(r.output.trim(), "kept");

    // A server that stops leaves no mount behind.
    drop(srv);
    assert!(mounts_below(&data).is_empty(), "{:?}", mounts_below(&data));
    drop(cleanup);
}
