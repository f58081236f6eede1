//! Per-thread disk quotas (`paddock_runtime::disk`): a thread's data in an ext4 image on a
//! loop device, full at its quota for commands and for the file API alike, kept across
//! sandboxes, moved in from a plain directory, left alone when it does not fit, grown when
//! the quota is raised, and unmounted when the last sandbox of the thread goes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::run;
use paddock_core::sandbox::WriteText;
use paddock_core::{Sandbox, SandboxError, ThreadId, UserId};
use paddock_runtime::{DiskQuotaMode, LocalProvider, RuntimeOptions};

const MIB: u64 = 1 << 20;

/// Images need root, loop devices and e2fsprogs; CI has them, so there a missing one
/// fails the test instead of skipping it.
fn supported() -> bool {
    if !common::isolated_supported() {
        return false;
    }
    match paddock_runtime::disk::support(None) {
        Ok(_) => true,
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must be able to make disk images: {why}"
            );
            eprintln!("SKIPPED: disk images are not available here: {why}");
            false
        }
    }
}

fn opts(bytes: u64, mode: DiskQuotaMode) -> RuntimeOptions {
    RuntimeOptions {
        disk_quota_bytes: Some(bytes),
        disk_quota_mode: mode,
        ..RuntimeOptions::default()
    }
}

fn provider(data: &Path, o: RuntimeOptions) -> LocalProvider {
    LocalProvider::new(data, o, Vec::new()).expect("provider")
}

fn thread_dir(data: &Path, t: &str) -> PathBuf {
    data.join("users/default/threads").join(t)
}

/// Whether the thread's `user-data` is a mount point now.
fn mounted(data: &Path, t: &str) -> bool {
    let td = thread_dir(data, t);
    let a = std::fs::metadata(&td).unwrap().dev();
    let b = std::fs::metadata(td.join("user-data")).unwrap().dev();
    a != b
}

async fn acquire(
    p: &LocalProvider,
    t: &str,
) -> Result<std::sync::Arc<paddock_runtime::LocalSandbox>, SandboxError> {
    p.acquire(&UserId::default(), &ThreadId::new(t).unwrap())
        .await
}

/// Bytes the host's filesystem holds for every file below `dir` (allocated blocks, not
/// sizes; mounted images are counted as their image files, not again through the mount).
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

#[tokio::test]
async fn a_full_image_is_enospc_for_commands_and_the_file_api() {
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_path_buf();
    let p = provider(&data, opts(16 * MIB, DiskQuotaMode::Image));
    let sb = acquire(&p, "full").await.unwrap();
    assert!(mounted(&data, "full"));
    let o = run(
        &sb,
        "dd if=/dev/zero of=/mnt/user-data/workspace/big bs=1M count=64 2>&1; echo rc=$?; \
         grep ' /mnt/user-data ' /proc/self/mountinfo",
    )
    .await;
    assert!(o.stdout.contains("No space left on device"), "{o:?}");
    assert!(!o.stdout.contains("rc=0"), "{o:?}");
    // Inside, the mount is a loop device's root: no host path.
    let mi = o
        .stdout
        .lines()
        .find(|l| l.contains(" /mnt/user-data ") && l.contains(" - "))
        .unwrap();
    assert!(mi.contains("/dev/loop"), "{mi}");
    assert!(!mi.contains(data.to_str().unwrap()), "{mi}");
    // The server writes as root; `-m 0` leaves it no reserve either.
    let e = sb
        .write_text(WriteText {
            path: "/mnt/user-data/outputs/more.txt".into(),
            content: "x".repeat(4 << 20),
            append: false,
        })
        .await
        .expect_err("the file API cannot write past the quota");
    assert!(e.to_string().contains("No space left"), "{e}");
    let held = allocated(&data);
    assert!(
        held <= 17 * MIB,
        "the host holds {held} bytes for a 16 MiB quota"
    );
    // Room comes back when the tenant deletes.
    let o = run(&sb, "rm /mnt/user-data/workspace/big && head -c 1000000 /dev/zero > /mnt/user-data/workspace/ok && echo ok").await;
    assert!(o.stdout.contains("ok"), "{o:?}");
    drop(sb);
    drop(p);
    assert!(!mounted(&data, "full"), "unmounted with the last sandbox");
}

#[tokio::test]
async fn data_persists_across_sandboxes_and_providers() {
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_path_buf();
    {
        let p = provider(&data, opts(16 * MIB, DiskQuotaMode::Image));
        let sb = acquire(&p, "keep").await.unwrap();
        let o = run(&sb, "echo kept > /mnt/user-data/outputs/a.txt && echo ok").await;
        assert!(o.stdout.contains("ok"), "{o:?}");
        // A second sandbox of the thread (another provider) shares the mount.
        let p2 = provider(&data, opts(16 * MIB, DiskQuotaMode::Image));
        let sb2 = acquire(&p2, "keep").await.unwrap();
        assert_eq!(sb.disk_dev(), sb2.disk_dev());
        assert!(sb.disk_dev().is_some());
        drop(sb);
        drop(p);
        assert!(mounted(&data, "keep"), "still used by the second sandbox");
        let o = run(&sb2, "cat /mnt/user-data/outputs/a.txt").await;
        assert_eq!(o.stdout.trim(), "kept");
        drop(sb2);
        drop(p2);
    }
    assert!(!mounted(&data, "keep"));
    let td = thread_dir(&data, "keep");
    assert!(td.join("user-data.img").is_file());
    assert!(
        !td.join("user-data/outputs/a.txt").exists(),
        "unmounted: the data is in the image only"
    );
    let p = provider(&data, opts(16 * MIB, DiskQuotaMode::Image));
    let sb = acquire(&p, "keep").await.unwrap();
    let o = run(
        &sb,
        "cat /mnt/user-data/outputs/a.txt; ls -A /mnt/user-data",
    )
    .await;
    assert_eq!(
        o.stdout, "kept\noutputs\nuploads\nworkspace\n",
        "no lost+found"
    );
    // Turning quotas off never hides data that lives in an image.
    drop(sb);
    drop(p);
    let p = provider(&data, opts(0, DiskQuotaMode::Off));
    let sb = acquire(&p, "keep").await.unwrap();
    let o = run(&sb, "cat /mnt/user-data/outputs/a.txt").await;
    assert_eq!(o.stdout.trim(), "kept");
    assert!(mounted(&data, "keep"));
}

#[tokio::test]
async fn plain_data_moves_into_a_new_image() {
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_path_buf();
    {
        let p = provider(&data, opts(0, DiskQuotaMode::Off));
        let sb = acquire(&p, "old").await.unwrap();
        assert!(sb.disk_dev().is_none());
        let o = run(
            &sb,
            "cd /mnt/user-data && mkdir -p workspace/d/e && echo hi > workspace/d/e/f && \
             chmod 640 workspace/d/e/f && ln -s d/e/f workspace/link && echo up > uploads/u && echo ok",
        )
        .await;
        assert!(o.stdout.contains("ok"), "{o:?}");
    }
    let td = thread_dir(&data, "old");
    assert!(!td.join("user-data.img").exists());
    let p = provider(&data, opts(16 * MIB, DiskQuotaMode::Image));
    let sb = acquire(&p, "old").await.unwrap();
    assert!(mounted(&data, "old"));
    let o = run(
        &sb,
        "cd /mnt/user-data && cat workspace/link uploads/u && stat -c '%a %u' workspace/d/e/f && readlink workspace/link && id -u",
    )
    .await;
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[..2], ["hi", "up"], "{o:?}");
    assert_eq!(lines[2].split(' ').next(), Some("640"), "{o:?}");
    assert_eq!(
        lines[2].split(' ').nth(1),
        lines.get(4).copied(),
        "owner kept: {o:?}"
    );
    assert_eq!(lines[3], "d/e/f");
    assert!(!td.join("user-data.migrating").exists());
    assert!(!td.join("user-data.img.new").exists());
    drop(sb);
    drop(p);
    assert!(!mounted(&data, "old"));
    let left: Vec<_> = std::fs::read_dir(td.join("user-data"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "the plain copy is gone: {left:?}");
}

#[tokio::test]
async fn data_larger_than_the_quota_is_refused_and_left_where_it_was() {
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_path_buf();
    {
        let p = provider(&data, opts(0, DiskQuotaMode::Off));
        let sb = acquire(&p, "big").await.unwrap();
        let o = run(
            &sb,
            "head -c 20000000 /dev/urandom > /mnt/user-data/workspace/big && echo ok",
        )
        .await;
        assert!(o.stdout.contains("ok"), "{o:?}");
    }
    let td = thread_dir(&data, "big");
    let p = provider(&data, opts(16 * MIB, DiskQuotaMode::Image));
    let e = acquire(&p, "big").await.expect_err("does not fit");
    assert!(
        e.to_string()
            .contains("does not fit in its disk quota of 16777216 bytes"),
        "{e}"
    );
    assert!(
        !e.to_string().contains(data.to_str().unwrap()),
        "no host path: {e}"
    );
    assert!(!mounted(&data, "big"));
    assert_eq!(
        std::fs::metadata(td.join("user-data/workspace/big"))
            .unwrap()
            .len(),
        20_000_000
    );
    for gone in ["user-data.img", "user-data.img.new", "user-data.migrating"] {
        assert!(!td.join(gone).exists(), "{gone}");
    }
    // With room enough it moves.
    drop(p);
    let p = provider(&data, opts(32 * MIB, DiskQuotaMode::Image));
    let sb = acquire(&p, "big").await.unwrap();
    let o = run(&sb, "stat -c %s /mnt/user-data/workspace/big").await;
    assert_eq!(o.stdout.trim(), "20000000");
}

#[tokio::test]
async fn a_raised_quota_grows_the_image() {
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_path_buf();
    let avail = |sb: std::sync::Arc<paddock_runtime::LocalSandbox>| async move {
        let o = run(&sb, "df -k --output=size /mnt/user-data | tail -1").await;
        o.stdout.trim().parse::<u64>().expect("df") * 1024
    };
    {
        let p = provider(&data, opts(16 * MIB, DiskQuotaMode::Image));
        let sb = acquire(&p, "grow").await.unwrap();
        run(&sb, "echo x > /mnt/user-data/workspace/x").await;
        let size = avail(sb).await;
        assert!(size <= 16 * MIB && size > 12 * MIB, "{size}");
    }
    let p = provider(&data, opts(48 * MIB, DiskQuotaMode::Image));
    let sb = acquire(&p, "grow").await.unwrap();
    let size = avail(sb.clone()).await;
    assert!(size > 40 * MIB && size <= 48 * MIB, "{size}");
    assert_eq!(
        std::fs::metadata(thread_dir(&data, "grow").join("user-data.img"))
            .unwrap()
            .len(),
        48 * MIB
    );
    let o = run(&sb, "cat /mnt/user-data/workspace/x").await;
    assert_eq!(o.stdout.trim(), "x");
    // A lower quota never shrinks it (nothing is lost).
    drop(sb);
    drop(p);
    let p = provider(&data, opts(16 * MIB, DiskQuotaMode::Image));
    let sb = acquire(&p, "grow").await.unwrap();
    assert!(avail(sb).await > 40 * MIB);
}

#[tokio::test]
async fn an_interrupted_move_is_finished_or_undone() {
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_path_buf();
    {
        let p = provider(&data, opts(0, DiskQuotaMode::Off));
        let sb = acquire(&p, "crash").await.unwrap();
        run(&sb, "echo a > /mnt/user-data/workspace/a").await;
    }
    let td = thread_dir(&data, "crash");
    // As a crash leaves it after moving the data aside and before the image was named.
    std::fs::rename(td.join("user-data"), td.join("user-data.migrating")).unwrap();
    std::fs::create_dir(td.join("user-data")).unwrap();
    std::fs::write(td.join("user-data.img.new"), "half").unwrap();
    // Quotas off: the data goes back.
    {
        let p = provider(&data, opts(0, DiskQuotaMode::Off));
        let sb = acquire(&p, "crash").await.unwrap();
        let o = run(&sb, "cat /mnt/user-data/workspace/a").await;
        assert_eq!(o.stdout.trim(), "a");
        assert!(!td.join("user-data.migrating").exists());
        assert!(!td.join("user-data.img.new").exists());
    }
    // Quotas on after the same crash: the move is done again, from the kept data.
    std::fs::rename(td.join("user-data"), td.join("user-data.migrating")).unwrap();
    std::fs::create_dir(td.join("user-data")).unwrap();
    let p = provider(&data, opts(16 * MIB, DiskQuotaMode::Image));
    let sb = acquire(&p, "crash").await.unwrap();
    let o = run(&sb, "cat /mnt/user-data/workspace/a").await;
    assert_eq!(o.stdout.trim(), "a");
    assert!(!td.join("user-data.migrating").exists());
    drop(sb);
    drop(p);
    // Data written beside an unmounted image is kept aside, never mixed in or lost.
    std::fs::create_dir_all(td.join("user-data/workspace")).unwrap();
    std::fs::write(td.join("user-data/workspace/stray"), "s").unwrap();
    let p = provider(&data, opts(16 * MIB, DiskQuotaMode::Image));
    let sb = acquire(&p, "crash").await.unwrap();
    let o = run(
        &sb,
        "cat /mnt/user-data/workspace/a; ls /mnt/user-data/workspace",
    )
    .await;
    assert_eq!(o.stdout, "a\na\n");
    let aside: Vec<_> = std::fs::read_dir(&td)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("user-data.leftover-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(
        std::fs::read_to_string(aside[0].path().join("workspace/stray")).unwrap(),
        "s"
    );
}

/// Set in the child process of the exit tests: how it ends (`exit` or `kill`) and the data
/// directory it uses.
const CHILD_ENV: &str = "PADDOCK_TEST_DISK_CHILD";

/// The child: mounts the thread's image, writes, and ends without dropping anything.
async fn child(how: &str, dir: &Path) {
    let p = provider(dir, opts(16 * MIB, DiskQuotaMode::Image));
    let sb = acquire(&p, "left").await.unwrap();
    sb.write_text(WriteText {
        path: "/mnt/user-data/workspace/l".into(),
        content: "l".into(),
        append: false,
    })
    .await
    .unwrap();
    std::mem::forget(sb);
    std::mem::forget(p);
    let kill = |pid: u32| {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    };
    if how == "crash" {
        // As a crash that takes the keeper too (the OOM killer, a power cut).
        kill(paddock_runtime::disk::keeper_pid().expect("a keeper was started"));
    }
    if how == "kill" || how == "crash" {
        // As a Paddock killed with SIGKILL: no exit handler runs.
        kill(std::process::id());
        std::thread::sleep(std::time::Duration::from_secs(10));
    }
    std::process::exit(0);
}

/// Runs `test` of this binary in a child process that ends `how`, over `data`.
fn run_child(test: &str, how: &str, data: &Path) {
    let st = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture"])
        .env(CHILD_ENV, format!("{how}:{}", data.display()))
        .status()
        .unwrap();
    assert_eq!(st.success(), how == "exit", "{st}");
}

fn child_env() -> Option<(String, PathBuf)> {
    let v = std::env::var(CHILD_ENV).ok()?;
    let (how, dir) = v.split_once(':')?;
    Some((how.to_owned(), PathBuf::from(dir)))
}

#[tokio::test]
async fn a_process_that_exits_without_dropping_its_sandboxes_unmounts_their_images() {
    if let Some((how, dir)) = child_env() {
        return child(&how, &dir).await;
    }
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_path_buf();
    run_child(
        "a_process_that_exits_without_dropping_its_sandboxes_unmounts_their_images",
        "exit",
        &data,
    );
    assert!(!mounted(&data, "left"), "released at exit");
    let p = provider(&data, opts(16 * MIB, DiskQuotaMode::Image));
    let sb = acquire(&p, "left").await.unwrap();
    let o = run(&sb, "cat /mnt/user-data/workspace/l").await;
    assert_eq!(o.stdout.trim(), "l");
}

#[tokio::test]
async fn the_keeper_unmounts_the_images_of_a_process_killed_by_a_signal() {
    if let Some((how, dir)) = child_env() {
        return child(&how, &dir).await;
    }
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_path_buf();
    run_child(
        "the_keeper_unmounts_the_images_of_a_process_killed_by_a_signal",
        "kill",
        &data,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while mounted(&data, "left") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!mounted(&data, "left"), "the keeper unmounted it");
    let p = provider(&data, opts(16 * MIB, DiskQuotaMode::Image));
    let sb = acquire(&p, "left").await.unwrap();
    let o = run(&sb, "cat /mnt/user-data/workspace/l").await;
    assert_eq!(o.stdout.trim(), "l");
}

#[tokio::test]
async fn a_mount_nobody_uses_is_swept_when_a_runtime_starts() {
    if let Some((how, dir)) = child_env() {
        return child(&how, &dir).await;
    }
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_path_buf();
    run_child(
        "a_mount_nobody_uses_is_swept_when_a_runtime_starts",
        "crash",
        &data,
    );
    assert!(mounted(&data, "left"), "the crash left its mount");
    // A runtime starting over the data directory unmounts what nobody uses.
    let p = provider(&data, opts(16 * MIB, DiskQuotaMode::Image));
    assert!(!mounted(&data, "left"));
    let sb = acquire(&p, "left").await.unwrap();
    let o = run(&sb, "cat /mnt/user-data/workspace/l").await;
    assert_eq!(o.stdout.trim(), "l");
    // A mount in use is never swept.
    assert_eq!(paddock_runtime::disk::sweep(p.runtime().layout()), 0);
    assert!(mounted(&data, "left"));
}

#[tokio::test]
async fn idle_images_stay_mounted_up_to_a_bound_least_recently_used_out_first() {
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_path_buf();
    let rt = paddock_runtime::Runtime::new(
        &data,
        RuntimeOptions {
            prebuild_jail: false,
            ..opts(8 * MIB, DiskQuotaMode::Image)
        },
    )
    .unwrap();
    let kept = paddock_runtime::disk::IDLE_IMAGES_KEPT;
    let prepare = |t: String| {
        let rt = rt.clone();
        tokio::task::spawn_blocking(move || {
            paddock_runtime::LocalSandbox::prepare(
                rt,
                &UserId::default(),
                &ThreadId::new(&t).unwrap(),
                Vec::new(),
            )
            .unwrap()
        })
    };
    // One sandbox per thread, each gone at once: the thread's image stays mounted, idle.
    for i in 0..=kept {
        let sb = prepare(format!("t{i}")).await.unwrap();
        assert!(sb.disk_dev().is_some());
        drop(sb);
        assert!(mounted(&data, &format!("t{i}")), "t{i} idle, still mounted");
        if i < kept {
            assert!(mounted(&data, "t0"));
        }
    }
    // One more idle image than kept: the least recently used one went.
    assert!(!mounted(&data, "t0"));
    assert!(mounted(&data, "t1") && mounted(&data, &format!("t{kept}")));
    // Used again, t0 is mounted again and t1 is now the oldest idle one.
    let sb = prepare("t0".into()).await.unwrap();
    assert!(mounted(&data, "t0"));
    drop(sb);
    assert!(!mounted(&data, "t1"));
    drop(rt);
    let left = (0..=kept)
        .filter(|i| mounted(&data, &format!("t{i}")))
        .count();
    assert_eq!(left, 0, "the runtime's end unmounts every image");
}
