//! Races against every host-side tree operation of `paddock_sys::tree`: a thread swaps a
//! directory and a symlink pointing outside the tree (`renameat2(RENAME_EXCHANGE)`, so the
//! name is always one or the other) in a tight loop while the operation runs again and
//! again. The outside target is a directory the test owns, with a marker file; it must
//! never be chowned, chmodded, written, deleted or copied from. Each race is bounded in
//! time (about a second).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use paddock_sys::tree;

const SECRET: &str = "OUTSIDE-MARKER-5d1c";
const RACE_FOR: Duration = Duration::from_millis(1200);

fn is_root() -> bool {
    paddock_sys::process::euid() == 0
}

/// A directory outside the raced tree: `marker` (0644) and `sub/` (0755).
struct Outside {
    dir: PathBuf,
    uid: u32,
}

impl Outside {
    fn new(base: &Path) -> Self {
        let dir = base.join("outside");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("marker"), SECRET).unwrap();
        std::fs::set_permissions(dir.join("marker"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::set_permissions(dir.join("sub"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let uid = std::fs::metadata(&dir).unwrap().uid();
        Self { dir, uid }
    }

    /// Panics when anything of the outside directory changed.
    fn assert_intact(&self, when: &str) {
        let md = |p: &Path| {
            std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{when}: {}: {e}", p.display()))
        };
        for (p, mode) in [
            (self.dir.clone(), 0o755),
            (self.dir.join("marker"), 0o644),
            (self.dir.join("sub"), 0o755),
        ] {
            let m = md(&p);
            assert_eq!(m.uid(), self.uid, "{when}: {} was chowned", p.display());
            assert_eq!(
                m.mode() & 0o7777,
                mode,
                "{when}: {} was chmodded",
                p.display()
            );
        }
        assert_eq!(
            std::fs::read_to_string(self.dir.join("marker")).unwrap(),
            SECRET,
            "{when}: the marker was written"
        );
        let mut names: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["marker", "sub"],
            "{when}: entries were added outside"
        );
        assert_eq!(
            std::fs::read_dir(self.dir.join("sub")).unwrap().count(),
            0,
            "{when}: entries were added outside"
        );
    }
}

/// Exchanges `a` and `b` (by path) until stopped; counts the swaps that happened. It can
/// be paused (for the test to rebuild the tree between two operations).
struct Swapper {
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    idle: Arc<AtomicBool>,
    handle: Option<JoinHandle<u64>>,
}

impl Swapper {
    fn start(a: &Path, b: &Path) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let idle = Arc::new(AtomicBool::new(false));
        let (ca, cb) = (
            CString::new(a.as_os_str().as_bytes()).unwrap(),
            CString::new(b.as_os_str().as_bytes()).unwrap(),
        );
        let (flag, pause, ack) = (stop.clone(), paused.clone(), idle.clone());
        let handle = std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !flag.load(Ordering::Relaxed) {
                if pause.load(Ordering::SeqCst) {
                    ack.store(true, Ordering::SeqCst);
                    std::thread::yield_now();
                    continue;
                }
                // SAFETY: renameat2 with NUL-terminated paths; a failure (one of the names
                // missing while the tree is rebuilt) is retried.
                let r = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        ca.as_ptr(),
                        libc::AT_FDCWD,
                        cb.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                if r == 0 {
                    swaps += 1;
                } else {
                    std::thread::yield_now();
                }
            }
            swaps
        });
        Self {
            stop,
            paused,
            idle,
            handle: Some(handle),
        }
    }

    /// Runs `f` while the swapper stands still.
    fn paused<T>(&self, f: impl FnOnce() -> T) -> T {
        self.idle.store(false, Ordering::SeqCst);
        self.paused.store(true, Ordering::SeqCst);
        while !self.idle.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let out = f();
        self.paused.store(false, Ordering::SeqCst);
        out
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn base() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let p = std::fs::canonicalize(t.path()).unwrap();
    (t, p)
}

/// `root/x/` (a directory with files and a subdirectory) and `root/y` (a symlink to the
/// outside directory): the pair the swapper exchanges. Whichever of the two is missing
/// (an operation removed it) is made again; call it while the swapper is paused.
fn plant(root: &Path, outside: &Path) {
    let kind = |n: &str| {
        std::fs::symlink_metadata(root.join(n))
            .ok()
            .map(|m| m.is_dir())
    };
    let names = ["x", "y"];
    if !names.iter().any(|n| kind(n) == Some(true)) {
        let free = names
            .iter()
            .find(|n| kind(n).is_none())
            .expect("a free name");
        let dir = root.join(free);
        std::fs::create_dir_all(dir.join("deeper")).unwrap();
        for i in 0..8 {
            std::fs::write(dir.join(format!("f{i}")), "inside").unwrap();
        }
        std::fs::write(dir.join("deeper/marker"), "inside").unwrap();
        std::fs::write(dir.join("marker"), "inside").unwrap();
    }
    if !names.iter().any(|n| kind(n) == Some(false)) {
        let free = names
            .iter()
            .find(|n| kind(n).is_none())
            .expect("a free name");
        std::os::unix::fs::symlink(outside, root.join(free)).unwrap();
    }
}

#[test]
fn chown_tree_never_hands_over_the_target_of_a_swapped_link() {
    if !is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs this as root");
        eprintln!("SKIPPED: chown needs root");
        return;
    }
    let (_t, base) = base();
    let outside = Outside::new(&base);
    let root = base.join("data");
    std::fs::create_dir(&root).unwrap();
    plant(&root, &outside.dir);
    for i in 0..50 {
        std::fs::create_dir_all(root.join(format!("wide/d{i}"))).unwrap();
        std::fs::write(root.join(format!("wide/d{i}/f")), "x").unwrap();
    }
    let sw = Swapper::start(&root.join("x"), &root.join("y"));
    let (mut walks, deadline) = (0u32, Instant::now() + RACE_FOR);
    while Instant::now() < deadline {
        // Back to a tree from before (root's, world-readable), so every call walks it all.
        std::os::unix::fs::chown(&root, Some(0), Some(0)).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let uid = 951_200 + walks % 2;
        tree::chown_tree(&root, uid, uid, true).unwrap();
        assert_eq!(std::fs::metadata(&root).unwrap().uid(), uid);
        walks += 1;
        outside.assert_intact(&format!("walk {walks}"));
    }
    let swaps = sw.finish();
    eprintln!("chown_tree: {walks} walks, {swaps} swaps");
    assert!(walks > 3 && swaps > 100, "{walks} walks, {swaps} swaps");
    outside.assert_intact("after the race");
}

#[test]
fn mkdirs_never_create_through_a_swapped_link() {
    let (_t, base) = base();
    let outside = Outside::new(&base);
    let root = base.join("data");
    std::fs::create_dir(&root).unwrap();
    plant(&root, &outside.dir);
    let sw = Swapper::start(&root.join("x"), &root.join("y"));
    let (mut made, mut refused, deadline) = (0u32, 0u32, Instant::now() + RACE_FOR);
    while Instant::now() < deadline {
        let fd = tree::open_dir_no_symlinks(&root).unwrap();
        match tree::mkdirs_at(&fd, "x/new/deeper") {
            Ok(()) => made += 1,
            Err(_) => refused += 1,
        }
        match tree::mkdirs_beneath(&root, "y/new2") {
            Ok(()) => made += 1,
            Err(_) => refused += 1,
        }
        outside.assert_intact(&format!("mkdirs {}", made + refused));
    }
    let swaps = sw.finish();
    eprintln!("mkdirs: {made} made, {refused} refused, {swaps} swaps");
    assert!(made > 0 && refused > 0 && swaps > 100);
}

#[test]
fn remove_tree_never_deletes_through_a_swapped_link() {
    let (_t, base) = base();
    let outside = Outside::new(&base);
    let root = base.join("data");
    std::fs::create_dir(&root).unwrap();
    let parent = tree::open_root(&root).unwrap();
    let sw = Swapper::start(&root.join("x"), &root.join("y"));
    let (mut removed, mut failed, deadline) = (0u32, 0u32, Instant::now() + RACE_FOR);
    while Instant::now() < deadline {
        sw.paused(|| plant(&root, &outside.dir));
        // Whichever of the two names is the directory now, remove it by the other name
        // half of the time: the entry itself may be the link.
        let name = if removed % 2 == 0 { "x" } else { "y" };
        match tree::remove_tree_at(&parent, OsStr::new(name)) {
            Ok(()) => removed += 1,
            Err(_) => failed += 1,
        }
        outside.assert_intact(&format!("removal {}", removed + failed));
    }
    let swaps = sw.finish();
    // The whole tree, links and all.
    plant(&root, &outside.dir);
    tree::remove_tree_beneath(&root).unwrap();
    assert!(std::fs::symlink_metadata(&root).is_err());
    outside.assert_intact("after removing the whole tree");
    eprintln!("remove_tree: {removed} removed, {failed} failed, {swaps} swaps");
    assert!(removed > 10 && swaps > 100);
}

/// Every regular file below `dir` (not following links) and what it holds.
fn files_below(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let md = std::fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            files_below(&p, out);
        } else if md.is_file() {
            out.push((p.clone(), std::fs::read_to_string(&p).unwrap()));
        }
    }
}

#[test]
fn copy_tree_never_copies_from_a_swapped_link() {
    let (_t, base) = base();
    let outside = Outside::new(&base);
    let src = base.join("src");
    std::fs::create_dir(&src).unwrap();
    plant(&src, &outside.dir);
    let copies = base.join("copies");
    std::fs::create_dir(&copies).unwrap();
    let dst_parent = tree::open_root(&copies).unwrap();
    let src_parent = tree::open_root(&base).unwrap();
    let sw = Swapper::start(&src.join("x"), &src.join("y"));
    let (mut copied, mut failed, deadline) = (0u32, 0u32, Instant::now() + RACE_FOR);
    let mut files = Vec::new();
    while Instant::now() < deadline {
        let name = format!("c{}", copied + failed);
        match tree::copy_tree_at(
            &src_parent,
            OsStr::new("src"),
            &dst_parent,
            OsStr::new(&name),
        ) {
            Ok(()) => copied += 1,
            Err(_) => failed += 1,
        }
        files.clear();
        files_below(&copies.join(&name), &mut files);
        for (p, content) in &files {
            assert_ne!(content, SECRET, "{} was copied from outside", p.display());
        }
        tree::remove_tree_at(&dst_parent, OsStr::new(&name)).unwrap();
        outside.assert_intact(&format!("copy {}", copied + failed));
    }
    let swaps = sw.finish();
    eprintln!("copy_tree: {copied} copied, {failed} refused mid-swap, {swaps} swaps");
    assert!(copied > 0 && swaps > 100);
}
