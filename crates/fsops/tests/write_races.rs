//! Writes against a tree that changes under them. The file API runs as root on the host
//! while the tenant's commands change the same tree, so every write (text, upload,
//! str_replace, append, parents created on the way) races a thread exchanging a directory
//! of the workspace with a symlink to a directory outside every mount
//! (`RENAME_EXCHANGE`, so the name is always one or the other). The outside directory must
//! never gain, lose or change an entry. And a thread's data directory itself swapped for a
//! symlink (what the nested mounts of the jail prevent; here the layer below is tested
//! alone) is refused, never followed. Bounded in time (about a second).

mod common;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{SECRET, WS, fixture};
use paddock_core::sandbox::{List, ReadText, StrReplace, WriteBytes, WriteText};
use paddock_fsops::{FsOps, FsOptions};

/// Every entry below `dir` (links not followed): kind, mode, owner and content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let m = std::fs::symlink_metadata(p).expect("lstat");
        let what = if m.is_dir() {
            "dir".to_owned()
        } else if m.is_file() {
            std::fs::read_to_string(p).unwrap_or_default()
        } else {
            "other".to_owned()
        };
        out.insert(
            p.to_path_buf(),
            format!("{:o} {}:{} {what}", m.mode(), m.uid(), m.gid()),
        );
        if m.is_dir() {
            for e in std::fs::read_dir(p).expect("readdir") {
                walk(&e.expect("entry").path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

fn ops_with_owner(f: &common::Fixture, force_walk: bool) -> FsOps {
    let owner = rustix::process::geteuid()
        .is_root()
        .then_some((951_321, 951_321));
    FsOps::new(
        f.table.clone(),
        FsOptions {
            force_walk,
            owner,
            ..FsOptions::default()
        },
    )
}

#[test]
fn writes_never_land_outside_through_a_swapped_link() {
    let f = fixture();
    common::w(&f.ws.join("x/f"), "one e two e\n");
    std::os::unix::fs::symlink(&f.outside, f.ws.join("y")).expect("symlink");
    let before = snapshot(&f.outside);
    let stop = Arc::new(AtomicBool::new(false));
    let (a, b) = (f.ws.join("x"), f.ws.join("y"));
    let flag = stop.clone();
    let swapper = std::thread::spawn(move || {
        let mut swaps = 0u64;
        while !flag.load(Ordering::Relaxed) {
            match rustix::fs::renameat_with(
                rustix::fs::CWD,
                &a,
                rustix::fs::CWD,
                &b,
                rustix::fs::RenameFlags::EXCHANGE,
            ) {
                Ok(()) => swaps += 1,
                Err(_) => std::thread::yield_now(),
            }
        }
        swaps
    });
    let (mut ok, mut refused, mut i) = (0u32, 0u32, 0u32);
    let deadline = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < deadline {
        let ops = ops_with_owner(&f, i % 2 == 0);
        let r = match i % 5 {
            0 => ops
                .write_text(&WriteText {
                    path: format!("{WS}/x/new{i}.txt"),
                    content: "written".into(),
                    append: false,
                })
                .map(drop),
            1 => ops
                .write_text(&WriteText {
                    path: format!("{WS}/y/made{i}/deeper/file.txt"),
                    content: "written".into(),
                    append: false,
                })
                .map(drop),
            2 => ops
                .write_from_reader(
                    &WriteBytes {
                        path: format!("{WS}/x/f"),
                        ..Default::default()
                    },
                    &mut Cursor::new(b"one e two e\n".to_vec()),
                )
                .map(drop),
            3 => ops
                .str_replace(&StrReplace {
                    path: format!("{WS}/y/f"),
                    old: "e".into(),
                    new: "e".into(),
                    replace_all: true,
                    ..Default::default()
                })
                .map(drop),
            _ => ops
                .write_text(&WriteText {
                    path: format!("{WS}/x/f"),
                    content: String::new(),
                    append: true,
                })
                .map(drop),
        };
        match r {
            Ok(()) => ok += 1,
            Err(_) => refused += 1,
        }
        i += 1;
        if i % 50 == 0 {
            assert_eq!(snapshot(&f.outside), before, "after {i} writes");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().expect("swapper");
    assert_eq!(snapshot(&f.outside), before, "after the race");
    eprintln!("writes: {ok} done, {refused} refused, {swaps} swaps");
    assert!(
        ok > 50 && refused > 0 && swaps > 100,
        "{ok} done, {refused} refused, {swaps} swaps"
    );
}

#[test]
fn a_thread_data_root_swapped_for_a_symlink_is_refused_not_followed() {
    let f = fixture();
    let before = snapshot(&f.outside);
    // What a command could do if its workspace were not a mount point of its own.
    let aside = f.ws.with_file_name("workspace.real");
    std::fs::rename(&f.ws, &aside).expect("rename");
    std::os::unix::fs::symlink(&f.outside, &f.ws).expect("symlink");
    for force_walk in [false, true] {
        let ops = ops_with_owner(&f, force_walk);
        let read = ops.read_text(&ReadText::new(format!("{WS}/secret.txt")));
        assert!(read.is_err(), "read through a swapped root: {read:?}");
        let listed = ops.list(&List::new(WS));
        assert!(
            listed
                .iter()
                .flat_map(|l| l.entries.iter())
                .all(|e| !e.path.as_str().contains("secret")),
            "{listed:?}"
        );
        let wrote = ops.write_text(&WriteText {
            path: format!("{WS}/planted.txt"),
            content: SECRET.into(),
            append: false,
        });
        assert!(wrote.is_err(), "write through a swapped root: {wrote:?}");
    }
    assert_eq!(snapshot(&f.outside), before);
}
