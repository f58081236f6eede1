//! Semantics of every operation (SPEC section 4, reference section 2.4) over a real thread
//! layout, each checked through the fast path and through the forced walk.

mod common;

use std::io::{Cursor, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::Arc;

use common::{WS, fixture, w};
use paddock_core::SandboxError;
use paddock_core::sandbox::{
    EntryKind, Glob, Grep, List, ReadBytes, ReadText, StrReplace, WriteBytes, WriteText,
};
use paddock_fsops::{FsOps, FsOptions};

fn both(f: &common::Fixture) -> [FsOps; 2] {
    [f.ops(false), f.ops(true)]
}

fn rt(path: &str, start: Option<u64>, end: Option<u64>) -> ReadText {
    ReadText {
        path: path.into(),
        start_line: start,
        end_line: end,
        max_bytes: None,
    }
}

#[test]
fn read_text_ranges_and_refusals() {
    let f = fixture();
    w(&f.ws.join("crlf.txt"), "a\r\nb\r\nc\r\nd");
    std::fs::write(f.ws.join("bin.dat"), b"\x00\x01\xffxx").expect("write");
    w(&f.ws.join("big.txt"), &"x".repeat(2000));
    for ops in both(&f) {
        let t = ops
            .read_text(&ReadText::new(format!("{WS}/crlf.txt")))
            .expect("read");
        assert_eq!(t.content, "a\r\nb\r\nc\r\nd", "verbatim without a range");
        assert_eq!(t.total_lines, 4);
        assert_eq!(t.path, format!("{WS}/crlf.txt"));
        let t = ops
            .read_text(&rt(&format!("{WS}/crlf.txt"), Some(2), Some(3)))
            .expect("range");
        assert_eq!(t.content, "b\nc");
        let t = ops
            .read_text(&rt(&format!("{WS}/crlf.txt"), Some(3), None))
            .expect("range");
        assert_eq!(t.content, "c\nd");
        let t = ops
            .read_text(&rt(&format!("{WS}/crlf.txt"), None, Some(1)))
            .expect("range");
        assert_eq!(t.content, "a");
        let t = ops
            .read_text(&rt(&format!("{WS}/crlf.txt"), Some(10), Some(12)))
            .expect("past end");
        assert_eq!((t.content.as_str(), t.total_lines), ("", 4));
        let e = ops
            .read_text(&rt(&format!("{WS}/crlf.txt"), Some(0), None))
            .expect_err("0");
        assert_eq!(
            e,
            SandboxError::invalid_argument("start_line", "must be >= 1")
        );
        let e = ops
            .read_text(&rt(&format!("{WS}/crlf.txt"), Some(3), Some(2)))
            .expect_err("inv");
        assert_eq!(e.code(), "invalid_argument");
        let e = ops
            .read_text(&ReadText::new(format!("{WS}/bin.dat")))
            .expect_err("binary");
        assert_eq!(
            e,
            SandboxError::NotText {
                path: format!("{WS}/bin.dat")
            }
        );
    }
    let small = FsOps::new(
        f.table.clone(),
        FsOptions {
            text_cap_bytes: 1000,
            ..FsOptions::default()
        },
    );
    let e = small
        .read_text(&ReadText::new(format!("{WS}/big.txt")))
        .expect_err("cap");
    assert_eq!(
        e,
        SandboxError::TooLarge {
            path: format!("{WS}/big.txt"),
            size: 2000,
            limit: 1000
        }
    );
}

#[test]
fn open_read_ranges_and_caps() {
    let f = fixture();
    w(&f.ws.join("digits.txt"), "0123456789");
    for ops in both(&f) {
        let req = |offset, len| ReadBytes {
            path: format!("{WS}/digits.txt"),
            offset,
            len,
        };
        let mut o = ops.open_read(&req(3, Some(4))).expect("range");
        assert_eq!((o.len, o.file_size), (4, 10));
        let mut s = String::new();
        (&mut o.file)
            .take(o.len)
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, "3456");
        let o = ops.open_read(&req(4, None)).expect("to end");
        assert_eq!(o.len, 6);
        assert_eq!(ops.open_read(&req(10, None)).expect("at end").len, 0);
        assert_eq!(
            ops.open_read(&req(11, None)).expect_err("offset").code(),
            "invalid_argument"
        );
        let e = ops.open_read(&req(5, Some(6))).expect_err("len");
        assert!(
            matches!(e, SandboxError::InvalidArgument { ref field, .. } if field == "len"),
            "{e:?}"
        );
        let e = ops
            .open_read(&ReadBytes {
                path: WS.into(),
                ..Default::default()
            })
            .expect_err("dir");
        assert_eq!(e.code(), "is_a_directory");
    }
    let small = FsOps::new(
        f.table.clone(),
        FsOptions {
            download_cap_bytes: 5,
            ..FsOptions::default()
        },
    );
    let e = small
        .open_read(&ReadBytes {
            path: format!("{WS}/digits.txt"),
            ..Default::default()
        })
        .expect_err("cap");
    assert_eq!(
        e,
        SandboxError::TooLarge {
            path: format!("{WS}/digits.txt"),
            size: 10,
            limit: 5
        }
    );
    assert!(
        small
            .open_read(&ReadBytes {
                path: format!("{WS}/digits.txt"),
                offset: 0,
                len: Some(5)
            })
            .is_ok()
    );
}

#[test]
fn write_text_creates_parents_appends_and_chowns() {
    let f = fixture();
    let ops = FsOps::new(
        f.table.clone(),
        FsOptions {
            owner: Some((4242, 4343)),
            ..FsOptions::default()
        },
    );
    let out = ops
        .write_text(&WriteText {
            path: format!("{WS}/n1/n2/file.txt"),
            content: "abc".into(),
            append: false,
        })
        .expect("write");
    assert_eq!(
        (out.path.as_str(), out.bytes_written),
        (format!("{WS}/n1/n2/file.txt").as_str(), 3)
    );
    ops.write_text(&WriteText {
        path: format!("{WS}/n1/n2/file.txt"),
        content: "def".into(),
        append: true,
    })
    .expect("append");
    assert_eq!(
        std::fs::read_to_string(f.ws.join("n1/n2/file.txt")).expect("read"),
        "abcdef"
    );
    ops.write_text(&WriteText {
        path: format!("{WS}/n1/n2/file.txt"),
        content: "z".into(),
        append: false,
    })
    .expect("overwrite");
    assert_eq!(
        std::fs::read_to_string(f.ws.join("n1/n2/file.txt")).expect("read"),
        "z"
    );
    if common::have_root("owner checks") {
        for p in ["n1", "n1/n2", "n1/n2/file.txt"] {
            let md = std::fs::metadata(f.ws.join(p)).expect("md");
            assert_eq!((md.uid(), md.gid()), (4242, 4343), "{p}");
        }
    }
    // Writing through a symlink writes its target, reported by its resolved path.
    let out = f
        .ops(true)
        .write_text(&WriteText {
            path: format!("{WS}/rel_ok"),
            content: "via link".into(),
            append: false,
        })
        .expect("write via symlink");
    assert_eq!(out.path, format!("{WS}/sub/inner.txt"));
    assert!(
        std::fs::symlink_metadata(f.ws.join("rel_ok"))
            .expect("md")
            .file_type()
            .is_symlink()
    );
}

#[test]
fn uploads_are_atomic_capped_and_keep_mode() {
    let f = fixture();
    w(&f.ws.join("keep.sh"), "old");
    std::fs::set_permissions(f.ws.join("keep.sh"), std::fs::Permissions::from_mode(0o750))
        .expect("chmod");
    for ops in both(&f) {
        let req = |p: &str, append, max| WriteBytes {
            path: format!("{WS}/{p}"),
            append,
            max_bytes: max,
        };
        let out = ops
            .write_from_reader(
                &req("up/new.bin", false, None),
                &mut Cursor::new(vec![7u8; 300_000]),
            )
            .expect("upload");
        assert_eq!(out.bytes_written, 300_000);
        assert_eq!(
            std::fs::read(f.ws.join("up/new.bin")).expect("read"),
            vec![7u8; 300_000]
        );
        ops.write_from_reader(
            &req("keep.sh", false, None),
            &mut Cursor::new(b"#!/bin/sh\n".to_vec()),
        )
        .expect("replace");
        let md = std::fs::metadata(f.ws.join("keep.sh")).expect("md");
        assert_eq!(md.permissions().mode() & 0o7777, 0o750);
        let e = ops
            .write_from_reader(
                &req("keep.sh", false, Some(4)),
                &mut Cursor::new(b"too long".to_vec()),
            )
            .expect_err("cap");
        assert_eq!(e.code(), "too_large");
        assert_eq!(
            std::fs::read_to_string(f.ws.join("keep.sh")).expect("read"),
            "#!/bin/sh\n"
        );
        let e = ops
            .write_from_reader(
                &req("keep.sh", true, Some(4)),
                &mut Cursor::new(b"too long".to_vec()),
            )
            .expect_err("append cap");
        assert_eq!(e.code(), "too_large");
        assert_eq!(
            std::fs::read_to_string(f.ws.join("keep.sh")).expect("read"),
            "#!/bin/sh\n"
        );
        ops.write_from_reader(
            &req("keep.sh", true, None),
            &mut Cursor::new(b"echo\n".to_vec()),
        )
        .expect("append");
        assert_eq!(
            std::fs::read_to_string(f.ws.join("keep.sh")).expect("read"),
            "#!/bin/sh\necho\n"
        );
        std::fs::write(f.ws.join("keep.sh"), "old").expect("reset");
        let leftovers: Vec<_> = std::fs::read_dir(&f.ws)
            .expect("readdir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".part"))
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    }
    let small = FsOps::new(
        f.table.clone(),
        FsOptions {
            upload_cap_bytes: 10,
            ..FsOptions::default()
        },
    );
    let e = small
        .write_from_reader(
            &WriteBytes {
                path: format!("{WS}/x.bin"),
                append: false,
                max_bytes: Some(1000),
            },
            &mut Cursor::new(vec![0u8; 11]),
        )
        .expect_err("server cap wins");
    assert!(
        matches!(e, SandboxError::TooLarge { limit: 10, .. }),
        "{e:?}"
    );
    assert!(!f.ws.join("x.bin").exists());
}

#[test]
fn str_replace_semantics() {
    let f = fixture();
    for ops in both(&f) {
        w(&f.ws.join("r.txt"), "foo bar foo baz foo");
        std::fs::set_permissions(f.ws.join("r.txt"), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let req = |old: &str, new: &str, all, unique| StrReplace {
            path: format!("{WS}/r.txt"),
            old: old.into(),
            new: new.into(),
            replace_all: all,
            expect_unique: unique,
            max_bytes: None,
        };
        assert_eq!(
            ops.str_replace(&req("", "x", false, false))
                .expect("noop")
                .replacements,
            0
        );
        assert_eq!(
            ops.str_replace(&req("nope", "x", false, false))
                .expect_err("missing"),
            SandboxError::NoMatch {
                path: format!("{WS}/r.txt")
            }
        );
        assert_eq!(
            ops.str_replace(&req("foo", "x", false, true))
                .expect_err("ambiguous"),
            SandboxError::Ambiguous {
                path: format!("{WS}/r.txt"),
                count: 3
            }
        );
        assert_eq!(
            ops.str_replace(&req("foo", "X", false, false))
                .expect("first")
                .replacements,
            1
        );
        assert_eq!(
            std::fs::read_to_string(f.ws.join("r.txt")).expect("read"),
            "X bar foo baz foo"
        );
        assert_eq!(
            ops.str_replace(&req("foo", "Y", true, false))
                .expect("all")
                .replacements,
            2
        );
        assert_eq!(
            std::fs::read_to_string(f.ws.join("r.txt")).expect("read"),
            "X bar Y baz Y"
        );
        assert_eq!(
            ops.str_replace(&req("baz", "q", false, true))
                .expect("unique")
                .replacements,
            1
        );
        let md = std::fs::metadata(f.ws.join("r.txt")).expect("md");
        assert_eq!(
            md.permissions().mode() & 0o7777,
            0o600,
            "mode kept across the atomic rewrite"
        );
        if common::have_root("owner preservation checks") {
            let fd = std::fs::File::open(f.ws.join("r.txt")).expect("open");
            let (uid, gid) = (
                rustix::fs::Uid::from_raw(4242),
                rustix::fs::Gid::from_raw(4343),
            );
            rustix::fs::fchown(&fd, Some(uid), Some(gid)).expect("chown");
            let mode = std::fs::Permissions::from_mode(0o2640);
            std::fs::set_permissions(f.ws.join("r.txt"), mode).expect("chmod");
            let out = ops
                .str_replace(&req("q", "Q", false, false))
                .expect("replace");
            assert_eq!(out.replacements, 1);
            let md = std::fs::metadata(f.ws.join("r.txt")).expect("md");
            assert_eq!(
                (md.uid(), md.gid(), md.mode() & 0o7777),
                (4242, 4343, 0o2640),
                "owner and set-id mode kept"
            );
        }
    }
}

#[test]
fn list_depth_ignore_hidden_cap_and_virtual_children() {
    let f = fixture();
    w(&f.ws.join("node_modules/pkg/index.js"), "x");
    w(&f.ws.join(".hidden/h.txt"), "x");
    w(&f.ws.join("debug.log"), "x");
    for ops in both(&f) {
        let mut req = List::new(WS);
        req.max_depth = 1;
        let l = ops.list(&req).expect("list");
        let shown: Vec<String> = l.entries.iter().map(|e| e.display()).collect();
        let mut sorted = shown.clone();
        sorted.sort();
        assert_eq!(shown, sorted);
        assert!(
            shown.contains(&format!("{WS}/sub/")) && shown.contains(&format!("{WS}/hello.txt"))
        );
        assert!(
            !shown.contains(&format!("{WS}/sub/inner.txt")),
            "depth 1 is children only"
        );
        assert!(
            !shown
                .iter()
                .any(|s| s.contains("node_modules") || s.ends_with(".log")),
            "{shown:?}"
        );
        assert!(shown.contains(&format!("{WS}/.hidden/")));
        let entry = l
            .entries
            .iter()
            .find(|e| e.path.as_str().ends_with("/hello.txt"))
            .expect("hello");
        assert_eq!((entry.kind, entry.size), (EntryKind::File, 12));
        let link = l
            .entries
            .iter()
            .find(|e| e.path.as_str().ends_with("/etc_link"))
            .expect("link");
        assert_eq!(link.kind, EntryKind::Symlink);
        let l = ops.list(&List::new(WS)).expect("depth 2");
        assert!(
            l.entries
                .iter()
                .any(|e| e.path.as_str() == format!("{WS}/sub/inner.txt"))
        );
        req.show_hidden = false;
        req.apply_ignore = false;
        let shown: Vec<String> = ops
            .list(&req)
            .expect("list")
            .entries
            .iter()
            .map(|e| e.display())
            .collect();
        assert!(
            shown.contains(&format!("{WS}/node_modules/"))
                && !shown.iter().any(|s| s.contains(".hidden"))
        );
        req.max_entries = 3;
        let l = ops.list(&req).expect("list");
        assert!(l.truncated && l.entries.len() == 3);
        let l = ops.list(&List::new("/mnt/user-data")).expect("user-data");
        let shown: Vec<String> = l.entries.iter().map(|e| e.display()).collect();
        for d in [
            "outputs/",
            "uploads/",
            "uploads/u.txt",
            "workspace/",
            "workspace/hello.txt",
        ] {
            assert!(
                shown.contains(&format!("/mnt/user-data/{d}")),
                "{d} in {shown:?}"
            );
        }
    }
}

#[test]
fn glob_semantics() {
    let f = fixture();
    w(&f.ws.join("a.py"), "");
    w(&f.ws.join("pkg/b.py"), "");
    w(&f.ws.join("pkg/deep/c.py"), "");
    w(&f.ws.join("__pycache__/d.py"), "");
    w(&f.ws.join("pkg/d.txt"), "");
    for ops in both(&f) {
        let g = |pattern: &str, dirs: bool, max: usize| {
            let mut r = Glob::new(WS, pattern);
            r.include_dirs = dirs;
            r.max_results = max;
            ops.glob(&r).expect("glob")
        };
        let names = |o: &paddock_core::sandbox::GlobOutcome| {
            o.paths
                .iter()
                .map(|p| p.as_str().trim_start_matches(WS).to_owned())
                .collect::<Vec<_>>()
        };
        let o = g("*.py", false, 200);
        assert_eq!(names(&o), ["/a.py", "/pkg/b.py", "/pkg/deep/c.py"]);
        assert!(!o.truncated);
        assert_eq!(
            names(&g("**/*.py", false, 200)),
            ["/a.py", "/pkg/b.py", "/pkg/deep/c.py"]
        );
        assert_eq!(names(&g("/*.py", false, 200)), ["/a.py"]);
        assert_eq!(names(&g("pkg/*.py", false, 200)), ["/pkg/b.py"]);
        assert_eq!(names(&g("pkg", false, 200)), Vec::<String>::new());
        assert_eq!(names(&g("pkg", true, 200)), ["/pkg"]);
        let o = g("*.py", false, 3);
        assert!(!o.truncated, "exactly at the cap is not truncated");
        let o = g("*.py", false, 2);
        assert!(o.truncated && o.paths.len() == 2);
        let e = ops
            .glob(&Glob::new(format!("{WS}/nope"), "*"))
            .expect_err("missing root");
        assert_eq!(e.code(), "not_found");
        let e = ops
            .glob(&Glob::new(format!("{WS}/hello.txt"), "*"))
            .expect_err("file root");
        assert_eq!(e.code(), "not_a_directory");
        let e = ops.glob(&Glob::new(WS, "a[")).expect_err("bad glob");
        assert!(matches!(e, SandboxError::InvalidArgument { ref field, .. } if field == "pattern"));
    }
}

#[test]
fn grep_semantics() {
    let f = fixture();
    w(
        &f.ws.join("g/a.rs"),
        "fn main() {}\nlet X = 1;   \nnothing\nFN again\n",
    );
    w(&f.ws.join("g/b.txt"), "a.b literal\naxb not literal\n");
    let mut bin = b"fn hidden\n".to_vec();
    bin.push(0);
    std::fs::write(f.ws.join("g/bin.dat"), bin).expect("write");
    w(
        &f.ws.join("g/big.txt"),
        &format!("fn big\n{}", "y\n".repeat(600_000)),
    );
    w(
        &f.ws.join("g/long.txt"),
        &format!(
            "fn {}\nfn short\n{} fn tail\n",
            "z".repeat(2100),
            "w".repeat(300)
        ),
    );
    w(&f.ws.join("g/target/t.rs"), "fn ignored\n");
    for ops in both(&f) {
        let gd = |pattern: &str| Grep::new(format!("{WS}/g"), pattern);
        let lines = |o: &paddock_core::sandbox::GrepOutcome| {
            o.matches
                .iter()
                .map(|m| {
                    format!(
                        "{}:{}:{}",
                        m.path.as_str().trim_start_matches(WS),
                        m.line_number,
                        m.line
                    )
                })
                .collect::<Vec<_>>()
        };
        let o = ops.grep(&gd("^fn")).expect("grep");
        let expected_tail = format!("{}...", "w".repeat(197));
        assert_eq!(
            lines(&o),
            [
                "/g/a.rs:1:fn main() {}".to_owned(),
                "/g/a.rs:4:FN again".to_owned(),
                "/g/long.txt:2:fn short".to_owned(),
            ],
            "case-insensitive; binary, >1 MB, >2000-char lines and ignored dirs skipped"
        );
        let o = ops.grep(&gd("fn tail")).expect("grep");
        assert_eq!(o.matches.len(), 1);
        assert_eq!(o.matches[0].line, expected_tail);
        let mut r = gd("^fn");
        r.case_sensitive = true;
        assert_eq!(ops.grep(&r).expect("grep").matches.len(), 2);
        let o = ops.grep(&gd("X = 1")).expect("grep");
        assert_eq!(o.matches[0].line, "let X = 1;", "right-trimmed");
        let o = ops.grep(&gd("a.b")).expect("regex");
        assert_eq!(o.matches.len(), 2);
        let mut r = gd("a.b");
        r.literal = true;
        assert_eq!(ops.grep(&r).expect("literal").matches.len(), 1);
        let mut r = gd("fn");
        r.glob = Some("*.rs".into());
        assert!(
            ops.grep(&r)
                .expect("glob")
                .matches
                .iter()
                .all(|m| m.path.as_str().ends_with(".rs"))
        );
        let mut r = gd("fn");
        r.max_results = 2;
        let o = ops.grep(&r).expect("cap");
        assert!(o.truncated && o.matches.len() == 2);
        let e = ops.grep(&gd("(unclosed")).expect_err("bad regex");
        match e {
            SandboxError::InvalidArgument { field, message } => {
                assert_eq!(field, "pattern");
                assert!(message.contains("unclosed"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let o = ops
            .grep(&Grep::new(format!("{WS}/g/a.rs"), "again"))
            .expect("single file");
        assert_eq!(lines(&o), ["/g/a.rs:4:FN again"]);
        let e = ops
            .grep(&Grep::new(format!("{WS}/nope"), "x"))
            .expect_err("missing");
        assert_eq!(e.code(), "not_found");
    }
}

#[test]
fn stat_reports_kind_size_and_resolved_path() {
    let f = fixture();
    for ops in both(&f) {
        let e = ops.stat(&format!("{WS}/hello.txt")).expect("stat");
        assert_eq!((e.kind, e.size), (EntryKind::File, 12));
        assert!(e.modified.is_some());
        let e = ops.stat(WS).expect("mount root");
        assert_eq!((e.kind, e.display()), (EntryKind::Dir, format!("{WS}/")));
        let e = ops.stat(&format!("{WS}/abs_ok")).expect("via symlink");
        assert_eq!(e.path.as_str(), format!("{WS}/hello.txt"));
        let e = ops.stat(&format!("{WS}/fifo")).expect("fifo stat is fine");
        assert_eq!(e.kind, EntryKind::Other);
    }
    let _ = Arc::clone(&f.table);
}
