//! Property tests: random small trees with random symlinks (relative, absolute virtual,
//! absolute host, with `..`) and random paths. Whatever read/stat/list return must come
//! from beneath a mount's host root (checked on the opened fd through `/proc/self/fd`, and
//! against a sentinel placed outside), every returned virtual path lies under the mount the
//! request started in, the fast path and the walk agree, and the reverse mapping
//! round-trips for symlink-free paths.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use paddock_core::mount::{Mount, MountKind};
use paddock_core::sandbox::{List, ReadBytes, ReadText};
use paddock_core::{MountTable, VirtualPath};
use paddock_fsops::{FsOps, FsOptions};
use proptest::prelude::*;

const SENTINEL: &str = "SENTINEL-outside-the-mounts";
const NAMES: &[&str] = &["a", "b", "c"];
const QUERY_SEGS: &[&str] = &["a", "b", "c", "..", ".", "x"];
/// Mount containers; the second is nested under the first, the third is read-only.
const MOUNTS: &[&str] = &["/mnt/user-data", "/mnt/user-data/workspace", "/mnt/skills"];

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File,
    Link(usize),
}

fn targets(outside: &Path) -> Vec<String> {
    vec![
        "a".into(),
        "b/c".into(),
        "..".into(),
        "../..".into(),
        "../a".into(),
        "a/../b".into(),
        ".".into(),
        "../../../../../../outside/sentinel.txt".into(),
        "/mnt/user-data/workspace/a".into(),
        "/mnt/user-data/a".into(),
        "/mnt/skills/b".into(),
        "/mnt/user-data/workspace/../a".into(),
        format!("{}/sentinel.txt", outside.display()),
        outside.display().to_string(),
    ]
}

fn entry() -> impl Strategy<Value = (usize, Vec<usize>, Kind)> {
    let kind = prop_oneof![
        Just(Kind::Dir),
        Just(Kind::File),
        (0usize..14).prop_map(Kind::Link)
    ];
    (
        0..MOUNTS.len(),
        prop::collection::vec(0..NAMES.len(), 1..4),
        kind,
    )
}

fn query() -> impl Strategy<Value = (usize, Vec<usize>)> {
    (
        0..MOUNTS.len(),
        prop::collection::vec(0..QUERY_SEGS.len(), 0..6),
    )
}

struct World {
    _tmp: tempfile::TempDir,
    hosts: Vec<PathBuf>,
    table: Arc<MountTable>,
}

fn world(entries: &[(usize, Vec<usize>, Kind)]) -> World {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = std::fs::canonicalize(tmp.path()).expect("canonicalize");
    let outside = base.join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("sentinel.txt"), SENTINEL).expect("write");
    let hosts: Vec<PathBuf> = (0..MOUNTS.len())
        .map(|i| base.join(format!("m{i}")))
        .collect();
    let mut mounts = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        std::fs::create_dir_all(h).expect("mkdir");
        mounts.push(Mount {
            container: VirtualPath::parse(MOUNTS[i]).expect("vp"),
            host: h.clone(),
            read_only: i == 2,
            kind: MountKind::Custom,
        });
    }
    let targets = targets(&outside);
    for (m, segs, kind) in entries {
        let rel: PathBuf = segs.iter().map(|&s| NAMES[s]).collect();
        let p = hosts[*m].join(&rel);
        if let Some(parent) = p.parent()
            && std::fs::create_dir_all(parent).is_err()
        {
            continue;
        }
        let _ = match kind {
            Kind::Dir => std::fs::create_dir(&p),
            Kind::File => std::fs::write(&p, format!("file {}", rel.display())),
            Kind::Link(t) => std::os::unix::fs::symlink(&targets[*t], &p),
        };
    }
    let table = Arc::new(MountTable::new(mounts).expect("table"));
    World {
        _tmp: tmp,
        hosts,
        table,
    }
}

fn raw_path(m: usize, segs: &[usize]) -> String {
    let mut s = MOUNTS[m].to_owned();
    for &i in segs {
        s.push('/');
        s.push_str(QUERY_SEGS[i]);
    }
    s
}

fn fd_target(file: &std::fs::File) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("readlink fd")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn resolution_stays_beneath_mount_roots(
        entries in prop::collection::vec(entry(), 0..14),
        queries in prop::collection::vec(query(), 1..12),
    ) {
        let w = world(&entries);
        let fast = FsOps::new(w.table.clone(), FsOptions::default());
        let walk = FsOps::new(w.table.clone(), FsOptions { force_walk: true, ..FsOptions::default() });
        // Random paths, plus every created entry's own path (NAMES and QUERY_SEGS share
        // their first indices), so successful resolutions are well represented.
        let own = entries.iter().map(|(m, segs, _)| (*m, segs.clone()));
        for (m, segs) in queries.iter().cloned().chain(own) {
            let raw = raw_path(m, &segs);
            let start = w.table.locate(&raw).ok().map(|l| l.mount.container.clone());

            let a = fast.stat(&raw);
            let b = walk.stat(&raw);
            prop_assert_eq!(&a, &b, "stat differs between fast path and walk for {}", raw);
            if let Ok(e) = &a {
                let start = start.clone().expect("a successful stat was located");
                prop_assert!(e.path.starts_with(&start), "{} left {}: {:?}", raw, start, e.path);
            }

            let ra = fast.read_text(&ReadText::new(raw.clone()));
            let rb = walk.read_text(&ReadText::new(raw.clone()));
            prop_assert_eq!(&ra, &rb, "read_text differs for {}", raw);
            if let Ok(t) = &ra {
                prop_assert!(!t.content.contains(SENTINEL), "{} read the sentinel", raw);
            }

            for ops in [&fast, &walk] {
                if let Ok(mut o) = ops.open_read(&ReadBytes { path: raw.clone(), ..Default::default() }) {
                    let real = fd_target(&o.file);
                    prop_assert!(w.hosts.iter().any(|h| real.starts_with(h)), "{} opened {:?}", raw, real);
                    let mut s = String::new();
                    let _ = o.file.read_to_string(&mut s);
                    prop_assert!(!s.contains(SENTINEL));
                    let start = start.clone().expect("located");
                    prop_assert!(o.vpath.starts_with(&start));
                }
            }

            let la = fast.list(&List::new(raw.clone()));
            let lb = walk.list(&List::new(raw.clone()));
            prop_assert_eq!(&la, &lb, "list differs for {}", raw);
            if let Ok(l) = &la {
                let start = start.clone().expect("located");
                for e in &l.entries {
                    prop_assert!(e.path.starts_with(&start), "{:?} outside {}", e.path, start);
                }
            }
        }
    }

    #[test]
    fn reverse_mapping_round_trips(entries in prop::collection::vec(entry(), 1..14)) {
        let w = world(&entries);
        for (m, segs, kind) in &entries {
            if matches!(kind, Kind::Link(_)) {
                continue;
            }
            let rel: Vec<&str> = segs.iter().map(|&s| NAMES[s]).collect();
            let host = w.hosts[*m].join(rel.join("/"));
            // Only symlink-free existing paths: the canonical form is the path itself.
            if std::fs::canonicalize(&host).ok().as_deref() != Some(host.as_path()) {
                continue;
            }
            let vpath = VirtualPath::parse(&format!("{}/{}", MOUNTS[*m], rel.join("/"))).expect("vp");
            // A path shadowed by a nested mount maps to the nested mount instead.
            if w.table.mount_for(&vpath).map(|mt| &mt.host) != Some(&w.hosts[*m]) {
                continue;
            }
            prop_assert_eq!(w.table.host_to_virtual(&host), Some(vpath.clone()));
            let host_str = host.to_str().expect("utf8");
            prop_assert_eq!(w.table.mask_host_paths(host_str).into_owned(), vpath.to_string());
        }
    }
}
