//! Fuzz target `vpath_resolve`: arbitrary bytes as a virtual path through
//! `VirtualPath::parse`, `MountTable::locate` on a fixed table, and `FsOps::stat` /
//! `read_text` / `open_read` on a small hostile tree (fast path and forced walk).
//!
//! Invariants checked: nothing panics; normalisation is idempotent and yields a clean
//! absolute path; a located path lies under its mount; whatever is read comes from beneath
//! a mount's host root (the opened fd is checked through `/proc/self/fd`) and never holds
//! the sentinel placed outside; the fast path and the walk give identical results.
#![no_main]

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use paddock_core::mount::{Mount, MountKind};
use paddock_core::sandbox::{ReadBytes, ReadText};
use paddock_core::{MountTable, VirtualPath};
use paddock_fsops::{FsOps, FsOptions};

const SENTINEL: &str = "FUZZ-SENTINEL-OUTSIDE";
const MOUNTS: &[(&str, bool)] = &[
    ("/mnt/user-data", false),
    ("/mnt/user-data/workspace", false),
    ("/mnt/skills", true),
    ("/srv/data", false),
];

struct Fixture {
    hosts: Vec<PathBuf>,
    fast: FsOps,
    walk: FsOps,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("paddock-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("outside")).expect("mkdir");
        let base = std::fs::canonicalize(&base).expect("canonicalize");
        std::fs::write(base.join("outside/secret"), SENTINEL).expect("write");
        let mut mounts = Vec::new();
        let mut hosts = Vec::new();
        for (i, (c, ro)) in MOUNTS.iter().enumerate() {
            let h = base.join(format!("m{i}"));
            std::fs::create_dir_all(h.join("d/e")).expect("mkdir");
            std::fs::write(h.join("f"), "file\n").expect("write");
            std::fs::write(h.join("d/g"), "nested\n").expect("write");
            let link = |t: &str, n: &str| {
                let _ = std::os::unix::fs::symlink(t, h.join(n));
            };
            link("d", "ld");
            link("../../outside/secret", "up");
            link(&format!("{}/outside/secret", base.display()), "abs_host");
            link("/mnt/user-data/workspace/f", "abs_virtual");
            link("/mnt/skills/f", "to_skills");
            link("loop", "loop");
            link("..", "d/parent");
            hosts.push(h.clone());
            mounts.push(Mount {
                container: VirtualPath::parse(c).expect("vp"),
                host: h,
                read_only: *ro,
                kind: MountKind::Custom,
            });
        }
        let table = Arc::new(MountTable::new(mounts).expect("table"));
        let fast = FsOps::new(table.clone(), FsOptions::default());
        let walk = FsOps::new(
            table,
            FsOptions {
                force_walk: true,
                ..FsOptions::default()
            },
        );
        Fixture { hosts, fast, walk }
    })
}

fn check(f: &Fixture, raw: &str) {
    if let Ok(v) = VirtualPath::parse(raw) {
        let again = VirtualPath::parse(v.as_str()).expect("a normalised path parses");
        assert_eq!(again, v, "normalisation is idempotent");
        let s = v.as_str();
        assert!(s.starts_with('/'));
        assert!(
            !s.contains("//") && !s.contains("/./") && !s.contains("/../") && !s.ends_with("/..")
        );
        assert!(v.is_root() || !s.ends_with('/'));
        assert!(!s.contains('\0'));
    }
    let table = f.fast.table();
    let start = match table.locate(raw) {
        Ok(l) => {
            assert!(
                l.vpath.starts_with(&l.mount.container),
                "{raw:?} located outside its mount"
            );
            assert_eq!(
                l.vpath.strip_prefix(&l.mount.container),
                Some(l.rel.as_str())
            );
            Some(l.mount.container.clone())
        }
        Err(_) => None,
    };
    let a = f.fast.stat(raw);
    let b = f.walk.stat(raw);
    assert_eq!(a, b, "stat: fast path and walk disagree on {raw:?}");
    if let Ok(e) = &a {
        let start = start.as_ref().expect("stat succeeded on an unlocated path");
        assert!(
            e.path.starts_with(start),
            "{raw:?} resolved outside {start}"
        );
    }
    let a = f.fast.read_text(&ReadText::new(raw));
    let b = f.walk.read_text(&ReadText::new(raw));
    assert_eq!(a, b, "read_text: fast path and walk disagree on {raw:?}");
    if let Ok(t) = &a {
        assert!(
            !t.content.contains(SENTINEL),
            "{raw:?} read outside the mounts"
        );
    }
    if let Ok(mut o) = f.walk.open_read(&ReadBytes {
        path: raw.to_owned(),
        ..Default::default()
    }) {
        let real =
            std::fs::read_link(format!("/proc/self/fd/{}", o.file.as_raw_fd())).expect("fd link");
        assert!(
            f.hosts.iter().any(|h| real.starts_with(h)),
            "{raw:?} opened {real:?}"
        );
        let mut buf = Vec::new();
        let _ = o.file.read_to_end(&mut buf);
        assert!(!String::from_utf8_lossy(&buf).contains(SENTINEL));
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let raw = String::from_utf8_lossy(data);
    check(f, &raw);
    // Also below each mount, where most of the interesting resolution happens.
    for (c, _) in MOUNTS {
        check(f, &format!("{c}/{raw}"));
    }
});
