//! A tenant's tree must not decide how many descriptors the server holds: list, glob and
//! grep over a 3,000-directory-wide and a 300-level-deep tree stay within a small fixed
//! number of descriptors, shown two ways: by sampling `/proc/self/fd` while they run, and
//! by running them under an `RLIMIT_NOFILE` that leaves room for only that many, where
//! they must still return everything and report nothing unreadable. At the tightest limit
//! that lets the root be opened at all, what cannot be opened is reported, not skipped.
//! (Alone in its binary, one test, so nothing else opens descriptors or feels the limit.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{WS, fixture, w};
use paddock_core::sandbox::{Glob, Grep, List};
use paddock_fsops::{FsOps, GREP_MAX_FDS, WALK_MAX_FDS};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

const WIDE: usize = 3_000;
const DEEP: usize = 300;
/// Descriptors an operation holds besides its walk: the resolved parent directory, and
/// what `available_parallelism` opens to read cgroup limits before grep's walk starts.
const OUTSIDE_WALK: usize = 3;

fn fds() -> Vec<u32> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Every operation over `root`, each expected to see the whole tree; `files` files, each
/// holding one `needle` line, and `dirs` directories.
fn run_all(ops: &FsOps, root: &str, files: usize, dirs: usize) {
    let mut list = List::new(root);
    list.max_depth = u32::MAX;
    list.max_entries = 100_000;
    let l = ops.list(&list).expect("list");
    assert_eq!(
        (l.entries.len(), l.truncated, l.unreadable.len()),
        (files + dirs, false, 0),
        "list {root}: {:?}",
        l.unreadable
    );
    let mut glob = Glob::new(root, "**/*.txt");
    glob.max_results = 100_000;
    let g = ops.glob(&glob).expect("glob");
    assert_eq!(
        (g.paths.len(), g.truncated, g.unreadable.len()),
        (files, false, 0),
        "glob {root}: {:?}",
        g.unreadable
    );
    let mut grep = Grep::new(root, "needle");
    grep.max_results = 100_000;
    let m = ops.grep(&grep).expect("grep");
    assert_eq!(
        (m.matches.len(), m.truncated, m.unreadable.len()),
        (files, false, 0),
        "grep {root}: {:?}",
        m.unreadable
    );
}

#[test]
fn walks_hold_a_bounded_number_of_descriptors() {
    let f = fixture();
    for i in 0..WIDE {
        w(&f.ws.join(format!("wide/d{i:04}/f.txt")), "a needle\n");
    }
    let mut deep = f.ws.join("deep");
    for _ in 0..DEEP {
        deep.push("d");
        w(&deep.join("f.txt"), "a needle\n");
    }
    let wide_root = format!("{WS}/wide");
    let deep_root = format!("{WS}/deep");
    let both = [f.ops(false), f.ops(true)];
    let bound = GREP_MAX_FDS + OUTSIDE_WALK;
    assert!(WALK_MAX_FDS < GREP_MAX_FDS && bound < DEEP / 4);

    // 1. Sampled while running: the peak stays within the bound.
    let before = fds().len();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // The sampler's own directory handle is one of the entries counted.
                peak.fetch_max(fds().len().saturating_sub(1), Ordering::Relaxed);
            }
        })
    };
    for ops in &both {
        run_all(ops, &wide_root, WIDE, WIDE);
        run_all(ops, &deep_root, DEEP, DEEP);
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let after = fds().len();
    let peak = peak.load(Ordering::Relaxed);
    assert_eq!(after, before, "descriptors leaked");
    assert!(
        peak <= before + bound,
        "peak {peak} descriptors, {before} before the walks, bound {bound}"
    );

    // 2. Under a limit that leaves room for the bound only (fd numbers are allocated
    // lowest first, so the limit is the highest one in use plus the room): still all
    // there, nothing unreadable. One descriptor per pending or nested directory would
    // need thousands (wide) or hundreds (deep).
    let saved = getrlimit(Resource::Nofile);
    let set_limit = |limit: u64| {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(limit),
                maximum: saved.maximum,
            },
        )
        .expect("setrlimit");
    };
    // How many more descriptors can be opened now (at most `up_to`).
    let room_now = |up_to: usize| {
        let held: Vec<_> = (0..up_to)
            .map_while(|_| std::fs::File::open("/dev/null").ok())
            .collect();
        held.len()
    };
    let limit_with_room = |room: usize| {
        // A first guess from the highest fd in use (the listing's own handle and any
        // holes below make it generous), then down until the room is exactly `room`.
        setrlimit(Resource::Nofile, saved).expect("restore the limit");
        let mut limit = fds().into_iter().max().unwrap_or(2) as u64 + 1 + room as u64;
        loop {
            set_limit(limit);
            let free = room_now(room + 8);
            assert!(free >= room, "{free} free at limit {limit}, wanted {room}");
            if free == room {
                break;
            }
            limit -= (free - room) as u64;
        }
    };
    limit_with_room(bound);
    assert_eq!(room_now(bound + 1), bound, "the limit bites");
    for ops in &both {
        run_all(ops, &wide_root, WIDE, WIDE);
        run_all(ops, &deep_root, DEEP, DEEP);
    }

    // 3. At the tightest limit that lets the walk's root be opened, no child directory
    // can be: each is reported with why, and the call itself succeeds.
    let mut list = List::new(&wide_root);
    list.max_entries = 100_000;
    let mut reported = None;
    for room in 0..=bound {
        limit_with_room(room);
        if let Ok(l) = both[0].list(&list) {
            reported = Some(l);
            break;
        }
    }
    setrlimit(Resource::Nofile, saved).expect("restore the limit");
    let l = reported.expect("list succeeds within the bound");
    assert_eq!(
        l.entries
            .iter()
            .filter(|e| e.display().ends_with('/'))
            .count(),
        WIDE
    );
    assert!(l.truncated, "more unreadable directories than are reported");
    assert_eq!(
        l.unreadable.len(),
        paddock_core::sandbox::MAX_UNREADABLE_REPORTED
    );
    assert!(
        l.unreadable
            .iter()
            .all(|u| u.reason == "too many open files" && u.path.as_str().starts_with(&wide_root)),
        "{:?}",
        &l.unreadable[..3]
    );
}
