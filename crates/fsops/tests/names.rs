//! Hostile names a tenant can create are neither dropped nor left ambiguous: a name that is
//! not UTF-8 (and everything beneath a directory so named) is listed, globbed and grepped
//! under a lossy stand-in with its exact path escaped; names with newlines or escape
//! sequences are kept as they are, and what is shown of them is escaped. And walks stopped
//! at a result cap return exactly the first results in path order.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use common::{WS, fixture, w};
use paddock_core::sandbox::{Glob, Grep, List};

#[test]
fn names_that_are_not_utf8_or_hold_controls_are_found_and_shown_exactly() {
    let f = fixture();
    let dir = f.ws.join("enc");
    let raw = |name: &[u8]| dir.join(OsStr::from_bytes(name));
    w(&raw(b"bad\xff.txt"), "a needle\n");
    w(&raw(b"d\xfe/inner.txt"), "a needle\n");
    // Printed raw, this path would put a line of its own, `/mnt/user-data/outputs/x`,
    // into a listing.
    w(&raw(b"a\n/mnt/user-data/outputs/x"), "");
    w(&raw(b"\x1b[31mred.txt"), "a needle\n");
    let root = format!("{WS}/enc");
    for ops in [f.ops(false), f.ops(true)] {
        let mut req = List::new(&root);
        req.max_depth = 5;
        let l = ops.list(&req).expect("list");
        let shown: Vec<String> = l.entries.iter().map(|e| e.shown()).collect();
        assert_eq!(
            shown,
            [
                format!("{root}/\\x1b[31mred.txt"),
                format!("{root}/a\\n/"),
                format!("{root}/a\\n/mnt/"),
                format!("{root}/a\\n/mnt/user-data/"),
                format!("{root}/a\\n/mnt/user-data/outputs/"),
                format!("{root}/a\\n/mnt/user-data/outputs/x"),
                format!("{root}/bad\\xff.txt"),
                format!("{root}/d\\xfe/"),
                format!("{root}/d\\xfe/inner.txt"),
            ],
            "{l:#?}"
        );
        assert!(l.unreadable.is_empty() && !l.truncated);
        // The API carries the lossy path plus the exact escaped one, only where needed.
        let bad = l
            .entries
            .iter()
            .find(|e| e.path.as_str().contains("bad"))
            .expect("bad");
        assert_eq!(bad.path.as_str(), format!("{root}/bad\u{fffd}.txt"));
        assert_eq!(
            bad.escaped_path.as_deref(),
            Some(format!("{root}/bad\\xff.txt").as_str())
        );
        let esc = &l.entries[0];
        assert_eq!(esc.path.as_str(), format!("{root}/\x1b[31mred.txt"));
        assert_eq!(esc.escaped_path, None, "valid UTF-8 keeps its exact path");

        let mut g = Glob::new(&root, "**/*.txt");
        g.max_results = 100;
        let g = ops.glob(&g).expect("glob");
        let shown: Vec<String> = (0..g.paths.len())
            .map(|i| g.shown(i).into_owned())
            .collect();
        assert_eq!(
            shown,
            [
                format!("{root}/\\x1b[31mred.txt"),
                format!("{root}/bad\\xff.txt"),
                format!("{root}/d\\xfe/inner.txt"),
            ]
        );

        let m = ops.grep(&Grep::new(&root, "needle")).expect("grep");
        let shown: Vec<String> = m.matches.iter().map(|m| m.shown().into_owned()).collect();
        assert_eq!(
            shown,
            [
                format!("{root}/\\x1b[31mred.txt"),
                format!("{root}/bad\\xff.txt"),
                format!("{root}/d\\xfe/inner.txt"),
            ]
        );
    }
}

#[test]
fn capped_walks_return_exactly_the_first_results_in_path_order() {
    let f = fixture();
    // Names that sort differently as names and as paths (`-` and `.` sort before `/`).
    for d in ["a", "a-b", "a.c", "b", "ab"] {
        for n in ["x.txt", "y-z.txt", "y.txt"] {
            w(&f.ws.join(format!("cap/{d}/{n}")), "needle\nneedle\n");
        }
        w(&f.ws.join(format!("cap/{d}.txt")), "needle\n");
    }
    let root = format!("{WS}/cap");
    for ops in [f.ops(false), f.ops(true)] {
        for include_dirs in [false, true] {
            let mut all = Glob::new(&root, "*");
            all.include_dirs = include_dirs;
            all.max_results = 1000;
            let all = ops.glob(&all).expect("glob");
            assert!(!all.truncated);
            for cap in 0..all.paths.len() {
                let mut req = Glob::new(&root, "*");
                req.include_dirs = include_dirs;
                req.max_results = cap;
                let got = ops.glob(&req).expect("glob");
                assert_eq!(got.paths, all.paths[..cap], "cap {cap}");
                assert!(got.truncated);
            }
        }
        let mut all = Grep::new(&root, "needle");
        all.max_results = 1000;
        let all = ops.grep(&all).expect("grep");
        for cap in 0..all.matches.len() {
            let mut req = Grep::new(&root, "needle");
            req.max_results = cap;
            let got = ops.grep(&req).expect("grep");
            assert_eq!(got.matches, all.matches[..cap], "cap {cap}");
            assert!(got.truncated);
        }
        let mut all = List::new(&root);
        all.max_entries = 1000;
        let all = ops.list(&all).expect("list");
        for cap in 0..all.entries.len() {
            let mut req = List::new(&root);
            req.max_entries = cap;
            let got = ops.list(&req).expect("list");
            assert_eq!(got.entries, all.entries[..cap], "cap {cap}");
            assert!(got.truncated);
        }
    }
}
