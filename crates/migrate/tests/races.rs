//! The migration's copy mode against a tree that changes under it: a thread swaps a
//! directory of a legacy thread's workspace and a symlink to a directory outside the data
//! dir (`RENAME_EXCHANGE`, so the name is always one or the other) while the copy, its
//! verification and the removal of the source run again and again, and while a whole
//! `--allow-copy` run moves the thread to another filesystem. The outside directory (the
//! test's own, with a marker file) is never copied from, written or deleted. Bounded in
//! time (about a second per race).

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use paddock_migrate::apply::{ApplyOptions, Status};
use paddock_migrate::fsutil;
use paddock_migrate::plan::{Action, PlanOptions};
use paddock_migrate::{apply, plan};

const SECRET: &str = "OUTSIDE-MARKER-91be";
const RACE_FOR: Duration = Duration::from_millis(1000);

fn outside(base: &Path) -> PathBuf {
    let dir = base.join("outside");
    fs::create_dir_all(dir.join("sub")).expect("mkdir");
    fs::write(dir.join("marker"), SECRET).expect("write");
    fs::write(dir.join("sub/marker"), SECRET).expect("write");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn assert_intact(dir: &Path, when: &str) {
    assert_eq!(
        fs::read_to_string(dir.join("marker")).expect("marker"),
        SECRET,
        "{when}"
    );
    assert_eq!(
        fs::read_to_string(dir.join("sub/marker")).expect("sub marker"),
        SECRET,
        "{when}"
    );
    let mut names: Vec<_> = fs::read_dir(dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["marker", "sub"], "{when}: outside changed");
    assert_eq!(
        fs::read_dir(dir.join("sub")).expect("readdir").count(),
        1,
        "{when}: outside changed"
    );
}

/// No regular file below `dir` (links not followed) holds the outside marker.
fn assert_not_copied_from_outside(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd {
        let p = e.expect("entry").path();
        let md = fs::symlink_metadata(&p).expect("lstat");
        if md.is_dir() {
            assert_not_copied_from_outside(&p);
        } else if md.is_file() {
            assert_ne!(
                fs::read_to_string(&p).expect("read"),
                SECRET,
                "{} was copied from outside",
                p.display()
            );
        }
    }
}

/// Exchanges `{dir}/x` and `{dir}/y` until `stop` (failures, while a name is missing, are
/// retried); returns the number of swaps.
fn swapper(dir: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut swaps = 0;
        while !stop.load(Ordering::Relaxed) {
            match rustix::fs::renameat_with(
                rustix::fs::CWD,
                dir.join("x"),
                rustix::fs::CWD,
                dir.join("y"),
                rustix::fs::RenameFlags::EXCHANGE,
            ) {
                Ok(()) => swaps += 1,
                Err(_) => std::thread::yield_now(),
            }
        }
        swaps
    })
}

/// A legacy thread whose workspace holds `x/` (files) and `y` (a link to `outside`).
fn legacy_thread(root: &Path, name: &str, outside: &Path) -> PathBuf {
    let ws = root.join("threads").join(name).join("user-data/workspace");
    fs::create_dir_all(ws.join("x/deeper")).expect("mkdir");
    for i in 0..16 {
        fs::write(ws.join(format!("x/f{i}")), "inside").expect("write");
    }
    fs::write(ws.join("x/deeper/marker"), "inside").expect("write");
    symlink(outside, ws.join("y")).expect("symlink");
    ws
}

#[test]
fn copy_verify_and_remove_never_leave_the_tree() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = fs::canonicalize(tmp.path()).expect("canonicalize");
    let out = outside(&base);
    let ws = legacy_thread(&base, "alpha", &out);
    let src = base.join("threads/alpha");
    let stop = Arc::new(AtomicBool::new(false));
    let h = swapper(ws.clone(), stop.clone());
    let (mut copied, mut refused, mut differed) = (0u32, 0u32, 0u32);
    let deadline = Instant::now() + RACE_FOR;
    let mut i = 0;
    while Instant::now() < deadline {
        let dst = base.join(format!("copy{i}"));
        i += 1;
        match fsutil::copy_tree(&src, &dst) {
            Ok(()) => {
                copied += 1;
                // The source keeps changing: a verification may find a difference or meet
                // an entry that changed under it (both keep the source in a real run).
                if !matches!(fsutil::verify_copy(&src, &dst), Ok(Ok(()))) {
                    differed += 1;
                }
            }
            Err(_) => refused += 1,
        }
        assert_not_copied_from_outside(&dst);
        if fs::symlink_metadata(&dst).is_ok() {
            fsutil::remove_tree(&dst).expect("remove the copy");
        }
        assert_intact(&out, &format!("copy {i}"));
    }
    // Removing the source while it changes.
    fsutil::remove_tree(&src).expect("remove the source");
    stop.store(true, Ordering::Relaxed);
    let swaps = h.join().expect("swapper");
    assert!(fs::symlink_metadata(&src).is_err());
    assert_intact(&out, "after removing the source");
    eprintln!("{copied} copied ({differed} differed), {refused} refused, {swaps} swaps");
    assert!(copied > 0 && swaps > 100, "{copied} copied, {swaps} swaps");
}

#[test]
fn an_allow_copy_run_never_copies_or_deletes_outside_the_tree() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "needs /dev/shm; CI=true"
        );
        eprintln!("SKIPPED: no /dev/shm");
        return;
    }
    let (mut moved, mut failed, mut swaps) = (0u32, 0u32, 0u64);
    let deadline = Instant::now() + RACE_FOR;
    while Instant::now() < deadline {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = fs::canonicalize(tmp.path()).expect("canonicalize");
        let other = tempfile::tempdir_in(shm).expect("tempdir in /dev/shm");
        symlink(other.path(), root.join("users")).expect("symlink");
        let out = outside(&other.path().join("host"));
        let ws = legacy_thread(&root, "alpha", &out);
        let stop = Arc::new(AtomicBool::new(false));
        let h = swapper(ws, stop.clone());
        let p = plan::plan(&PlanOptions {
            data_dir: root.clone(),
            user_id: "default".into(),
            owners_db: None,
            allow_copy: true,
        })
        .expect("plan");
        let item = p
            .items
            .iter()
            .position(|i| i.name == "alpha")
            .expect("planned");
        assert_eq!(p.items[item].action, Action::Move);
        assert!(p.items[item].copy, "another filesystem: a copy");
        let outcome = apply(&p, &ApplyOptions::default(), &mut |_| {});
        stop.store(true, Ordering::Relaxed);
        swaps += h.join().expect("swapper");
        match outcome.items[item].status {
            Status::Done => {
                moved += 1;
                assert!(fs::symlink_metadata(root.join("threads/alpha")).is_err());
            }
            _ => {
                // Refused mid-swap: the copy failed (the source is kept), or it was in
                // place and the source's removal met an entry that kept changing (the next
                // run finishes it from the marker).
                failed += 1;
            }
        }
        assert_not_copied_from_outside(&other.path().join("default"));
        assert_intact(&out, &format!("run {}", moved + failed));
    }
    eprintln!("allow-copy runs: {moved} moved, {failed} refused mid-swap, {swaps} swaps");
    assert!(moved + failed > 2 && swaps > 100, "{swaps} swaps");
}
