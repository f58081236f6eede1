//! The attack table: hostile paths and setups over a real tree and a real mount table,
//! each with the precise refusal expected. Every row runs twice, through the `openat2`
//! fast path and through the forced fd walk, and both must refuse identically. Then the
//! allowed counterparts, the tree operations that must not escape through symlinked
//! directories, and a race that flips a directory and a symlink to outside.

mod common;

use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::{SECRET, WS, fixture};
use paddock_core::SandboxError;
use paddock_core::sandbox::{
    Glob, Grep, List, ReadBytes, ReadText, StrReplace, WriteBytes, WriteText,
};
use paddock_fsops::FsOps;

#[derive(Debug, Clone, Copy)]
enum Op {
    Read,
    Stat,
    Write,
    Upload,
    Replace,
    Download,
    List,
    Glob,
    Grep,
}

fn run(ops: &FsOps, op: Op, path: &str) -> Result<String, SandboxError> {
    match op {
        Op::Read => ops.read_text(&ReadText::new(path)).map(|t| t.content),
        Op::Stat => ops.stat(path).map(|e| e.display()),
        Op::Write => ops
            .write_text(&WriteText {
                path: path.into(),
                content: "pwned".into(),
                append: false,
            })
            .map(|o| o.path),
        Op::Upload => ops
            .write_from_reader(
                &WriteBytes {
                    path: path.into(),
                    ..Default::default()
                },
                &mut Cursor::new(b"pwned".to_vec()),
            )
            .map(|o| o.path),
        Op::Replace => ops
            .str_replace(&StrReplace {
                path: path.into(),
                old: "e".into(),
                new: "X".into(),
                ..Default::default()
            })
            .map(|o| o.replacements.to_string()),
        Op::Download => ops
            .open_read(&ReadBytes {
                path: path.into(),
                ..Default::default()
            })
            .map(|f| f.vpath.to_string()),
        Op::List => ops
            .list(&List::new(path))
            .map(|l| format!("{:?}", l.entries)),
        Op::Glob => ops
            .glob(&Glob::new(path, "**/*"))
            .map(|g| format!("{:?}", g.paths)),
        Op::Grep => ops
            .grep(&Grep::new(path, "secret"))
            .map(|g| format!("{:?}", g.matches)),
    }
}

fn invalid() -> SandboxError {
    SandboxError::invalid_path("", "")
}
fn escape() -> SandboxError {
    SandboxError::Escape {
        path: String::new(),
    }
}
fn unmapped() -> SandboxError {
    SandboxError::Unmapped {
        path: String::new(),
    }
}
fn read_only() -> SandboxError {
    SandboxError::ReadOnly {
        path: String::new(),
    }
}
fn looped() -> SandboxError {
    SandboxError::SymlinkLoop {
        path: String::new(),
    }
}
fn not_found() -> SandboxError {
    SandboxError::NotFound {
        path: String::new(),
    }
}
fn not_dir() -> SandboxError {
    SandboxError::NotADirectory {
        path: String::new(),
    }
}
fn is_dir() -> SandboxError {
    SandboxError::IsADirectory {
        path: String::new(),
    }
}

#[allow(clippy::type_complexity)]
fn table(root_real: &str) -> Vec<(&'static str, Op, String, SandboxError)> {
    let ws = |rest: &str| format!("{WS}/{rest}");
    let long_path = format!("{WS}/{}", "a/".repeat(2100));
    let long_seg = format!("{WS}/{}", "x".repeat(256));
    vec![
        (
            "dotdot chain to /etc",
            Op::Read,
            ws("../../../etc/passwd"),
            escape(),
        ),
        (
            "dotdot chain climbing past /",
            Op::Read,
            ws("../../../../../../etc/passwd"),
            escape(),
        ),
        (
            "dotdot from workspace into uploads",
            Op::Read,
            "/mnt/user-data/workspace/../uploads/u.txt".into(),
            escape(),
        ),
        (
            "dotdot from uploads into workspace",
            Op::Write,
            "/mnt/user-data/uploads/../workspace/x".into(),
            escape(),
        ),
        (
            "dotdot out of a subdirectory into a sibling mount",
            Op::Read,
            ws("sub/../../uploads/u.txt"),
            escape(),
        ),
        ("bare /..", Op::Stat, "/..".into(), escape()),
        (
            "/../etc/passwd",
            Op::Read,
            "/../etc/passwd".into(),
            escape(),
        ),
        (
            "absolute host path /etc/passwd",
            Op::Read,
            "/etc/passwd".into(),
            unmapped(),
        ),
        (
            "the temp dir's real path",
            Op::Read,
            format!("{root_real}/outside/secret.txt"),
            unmapped(),
        ),
        ("the virtual root", Op::List, "/".into(), unmapped()),
        ("/mnt itself", Op::List, "/mnt".into(), unmapped()),
        (
            "symlink to /etc (absolute)",
            Op::Read,
            ws("etc_link/passwd"),
            escape(),
        ),
        (
            "symlink to /etc, final component",
            Op::Stat,
            ws("etc_link"),
            escape(),
        ),
        (
            "relative symlink climbing out",
            Op::Read,
            ws("climb/passwd"),
            escape(),
        ),
        (
            "symlink to a host path outside (absolute)",
            Op::Read,
            ws("host_abs"),
            escape(),
        ),
        (
            "symlinked dir to a host path outside",
            Op::Read,
            ws("dirlink/secret.txt"),
            escape(),
        ),
        (
            "relative symlinked dir to outside",
            Op::Read,
            ws("reldirlink/secret.txt"),
            escape(),
        ),
        (
            "symlink to a virtual path in another mount",
            Op::Read,
            ws("to_uploads"),
            escape(),
        ),
        (
            "symlink into /mnt/skills from the workspace",
            Op::Read,
            ws("to_skills"),
            escape(),
        ),
        ("symlink loop a->b->a", Op::Read, ws("loop_a"), looped()),
        ("symlink to itself", Op::Stat, ws("self"), looped()),
        (
            "write through a symlink loop",
            Op::Write,
            ws("loop_a"),
            looped(),
        ),
        (
            "write through a symlink to /etc",
            Op::Write,
            ws("etc_link/passwd"),
            escape(),
        ),
        (
            "upload through a symlinked dir to outside",
            Op::Upload,
            ws("dirlink/new.bin"),
            escape(),
        ),
        (
            "write through a symlink inside a read-only mount",
            Op::Write,
            "/mnt/skills/link_in".into(),
            read_only(),
        ),
        (
            "str_replace through a symlink inside a read-only mount",
            Op::Replace,
            "/mnt/skills/link_in".into(),
            read_only(),
        ),
        (
            "write through a symlink into nested /mnt/skills/custom",
            Op::Write,
            "/mnt/skills/to_custom".into(),
            read_only(),
        ),
        (
            "write via relative symlink into a nested read-only mount",
            Op::Write,
            "/srv/rw/link_ro".into(),
            read_only(),
        ),
        (
            "write via absolute symlink into a nested read-only mount",
            Op::Upload,
            "/srv/rw/abs_link_ro".into(),
            read_only(),
        ),
        (
            "create under a symlinked dir into a nested read-only mount",
            Op::Write,
            "/srv/rw/link_ro_dir/new/x.txt".into(),
            read_only(),
        ),
        (
            "write to /mnt/skills",
            Op::Write,
            "/mnt/skills/new.md".into(),
            read_only(),
        ),
        (
            "upload to /mnt/skills/custom",
            Op::Upload,
            "/mnt/skills/custom/new.md".into(),
            read_only(),
        ),
        (
            "write to /mnt/acp-workspace",
            Op::Write,
            "/mnt/acp-workspace/x.txt".into(),
            read_only(),
        ),
        (
            "mkdir -p inside /mnt/acp-workspace",
            Op::Write,
            "/mnt/acp-workspace/a/b/c.txt".into(),
            read_only(),
        ),
        ("NUL byte", Op::Read, ws("hello.txt\0.png"), invalid()),
        ("empty path", Op::Stat, String::new(), invalid()),
        (
            "relative path",
            Op::Read,
            "mnt/user-data/workspace/hello.txt".into(),
            invalid(),
        ),
        (
            "dot-relative path",
            Op::Read,
            "./hello.txt".into(),
            invalid(),
        ),
        ("very long path", Op::Stat, long_path, invalid()),
        ("very long segment", Op::Write, long_seg, invalid()),
        (
            "unicode hyphen look-alike (U+2010)",
            Op::Read,
            "/mnt/user\u{2010}data/workspace/hello.txt".into(),
            unmapped(),
        ),
        (
            "fullwidth solidus look-alike",
            Op::Read,
            "/mnt\u{FF0F}user-data/workspace/hello.txt".into(),
            unmapped(),
        ),
        (
            "prefix look-alike /mnt/user-data-x",
            Op::Write,
            "/mnt/user-data-x/a".into(),
            unmapped(),
        ),
        (
            "prefix look-alike /mnt/skillsx",
            Op::Read,
            "/mnt/skillsx/public/s1/SKILL.md".into(),
            unmapped(),
        ),
        ("reading a FIFO", Op::Read, ws("fifo"), invalid()),
        ("downloading a FIFO", Op::Download, ws("fifo"), invalid()),
        ("writing a FIFO", Op::Write, ws("fifo"), invalid()),
        (
            "a directory where a file is expected",
            Op::Read,
            ws("sub"),
            is_dir(),
        ),
        (
            "a mount root where a file is expected",
            Op::Upload,
            WS.into(),
            is_dir(),
        ),
        (
            "an intermediate file used as a directory",
            Op::Read,
            ws("hello.txt/x"),
            not_dir(),
        ),
        (
            "mkdir -p through a file",
            Op::Write,
            ws("hello.txt/x/y"),
            not_dir(),
        ),
        ("listing a file", Op::List, ws("hello.txt"), not_dir()),
        (
            "listing through a symlinked dir to outside",
            Op::List,
            ws("dirlink"),
            escape(),
        ),
        (
            "glob rooted at a symlinked dir to outside",
            Op::Glob,
            ws("reldirlink"),
            escape(),
        ),
        (
            "grep rooted at a symlinked dir to outside",
            Op::Grep,
            ws("dirlink"),
            escape(),
        ),
        ("dangling symlink", Op::Read, ws("dangling"), not_found()),
        ("missing file", Op::Download, ws("nope.txt"), not_found()),
        (
            "missing parent without create",
            Op::Replace,
            ws("nope/x.txt"),
            not_found(),
        ),
    ]
}

#[test]
fn attack_table_refuses_precisely_on_both_routes() {
    let f = fixture();
    let root_real = f.root.to_str().expect("utf8").to_owned();
    let rows = table(&root_real);
    assert!(rows.len() >= 35, "the table has {} rows", rows.len());
    for force_walk in [false, true] {
        let ops = f.ops(force_walk);
        for (name, op, path, want) in &rows {
            // Guard against a FIFO hanging the whole table.
            let (tx, rx) = mpsc::channel();
            let (ops2, path2, op2) = (ops.clone(), path.clone(), *op);
            std::thread::spawn(move || {
                let _ = tx.send(run(&ops2, op2, &path2));
            });
            let got = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| {
                    panic!("{name}: {op:?} {path:?} hung (force_walk={force_walk})")
                });
            let err = match got {
                Ok(v) => {
                    panic!("{name}: {op:?} {path:?} succeeded with {v:?} (force_walk={force_walk})")
                }
                Err(e) => e,
            };
            assert_eq!(
                std::mem::discriminant(&err),
                std::mem::discriminant(want),
                "{name}: {op:?} {path:?} gave {err:?}, want {} (force_walk={force_walk})",
                want.code()
            );
            let msg = format!("{err} {err:?}");
            assert!(
                !msg.contains(&root_real) || name.contains("real path"),
                "{name}: host path leaked: {msg}"
            );
            assert!(!msg.contains(SECRET), "{name}: secret leaked: {msg}");
        }
    }
    // Nothing was written outside, and refused writes left nothing behind.
    assert!(!f.outside.join("new.bin").exists());
    assert!(!f.root.join("data/skills/new.md").exists());
    assert_eq!(
        std::fs::read_to_string(f.srv_ro.join("r.txt")).expect("r"),
        "read only\n"
    );
}

#[test]
fn allowed_counterparts_work_identically_on_both_routes() {
    let f = fixture();
    let mut results = Vec::new();
    for force_walk in [false, true] {
        let ops = f.ops(force_walk);
        let read = |p: &str| {
            ops.read_text(&ReadText::new(p))
                .map(|t| (t.path, t.content))
        };
        let got = vec![
            read(&format!("{WS}/rel_ok")),
            read(&format!("{WS}/abs_ok")),
            read(&format!("{WS}/subdir_link/inner.txt")),
            read(&format!("{WS}/sub/../hello.txt")),
            read("/mnt/skills/link_in"),
            read("/mnt/skills/to_custom"),
            read("/srv/rw/link_ro"),
            read("/srv/rw/abs_link_ro"),
            read("/mnt/user-data/uploads/u.txt"),
        ];
        let got: Vec<_> = got.into_iter().map(|r| r.expect("allowed read")).collect();
        assert_eq!(
            got[0],
            (
                format!("{WS}/sub/inner.txt"),
                "inner line\nsecond Needle\n".into()
            )
        );
        assert_eq!(got[1].0, format!("{WS}/hello.txt"));
        assert_eq!(
            got[4],
            ("/mnt/skills/public/s1/SKILL.md".into(), "# skill\n".into())
        );
        assert_eq!(
            got[5],
            ("/mnt/skills/custom/cs.md".into(), "custom skill\n".into())
        );
        assert_eq!(got[6].0, "/srv/rw/ro/r.txt");
        let st = ops.stat(&format!("{WS}/subdir_link")).expect("stat");
        assert_eq!(st.display(), format!("{WS}/sub/"));
        // A write that stays in the writable mount through a symlink.
        ops.write_text(&WriteText {
            path: format!("{WS}/subdir_link/w{force_walk}.txt"),
            content: "ok".into(),
            append: false,
        })
        .expect("write via symlinked dir");
        assert!(f.ws.join(format!("sub/w{force_walk}.txt")).is_file());
        results.push(got);
    }
    assert_eq!(results[0], results[1], "fast path and walk disagree");
}

#[test]
fn tree_operations_do_not_escape_through_symlinked_dirs() {
    let f = fixture();
    for force_walk in [false, true] {
        let ops = f.ops(force_walk);
        let mut req = List::new(WS);
        req.max_depth = 10;
        let l = ops.list(&req).expect("list");
        let shown: Vec<String> = l.entries.iter().map(|e| e.display()).collect();
        assert!(
            shown.contains(&format!("{WS}/dirlink")),
            "symlink listed: {shown:?}"
        );
        assert!(shown.contains(&format!("{WS}/sub/")), "{shown:?}");
        assert!(
            shown.iter().all(|s| !s.contains("secret")),
            "escaped: {shown:?}"
        );
        let g = ops.glob(&Glob::new(WS, "**/*secret*")).expect("glob");
        assert!(g.paths.is_empty(), "{:?}", g.paths);
        let mut gr = Grep::new(WS, SECRET);
        gr.literal = true;
        assert!(ops.grep(&gr).expect("grep").matches.is_empty());
        let gr = ops.grep(&Grep::new(WS, "needle")).expect("grep");
        assert_eq!(gr.matches.len(), 1);
        assert_eq!(gr.matches[0].path.as_str(), format!("{WS}/sub/inner.txt"));
        // Listing /mnt/user-data shows its nested mounts; /mnt/skills shows custom/.
        let l = ops.list(&List::new("/mnt/skills")).expect("list skills");
        let shown: Vec<String> = l.entries.iter().map(|e| e.display()).collect();
        assert!(
            shown.contains(&"/mnt/skills/custom/".to_owned()),
            "{shown:?}"
        );
        assert!(
            shown.contains(&"/mnt/skills/custom/cs.md".to_owned()),
            "{shown:?}"
        );
        let l = ops.list(&List::new("/srv/rw")).expect("list srv");
        let shown: Vec<String> = l.entries.iter().map(|e| e.display()).collect();
        assert!(shown.contains(&"/srv/rw/ro/r.txt".to_owned()), "{shown:?}");
    }
}

#[test]
fn race_dir_symlink_flip_never_leaks_outside() {
    let f = fixture();
    common::w(&f.ws.join("race/f"), "inside\n");
    std::os::unix::fs::symlink(&f.outside, f.ws.join("race_other")).expect("symlink");
    std::fs::write(f.outside.join("f"), format!("{SECRET}\n")).expect("write");
    let stop = AtomicBool::new(false);
    let ws_dir = std::fs::File::open(&f.ws).expect("open ws");
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    &ws_dir,
                    "race",
                    &ws_dir,
                    "race_other",
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .expect("exchange");
                flips += 1;
            }
            assert!(flips > 0);
        });
        // (reads that saw the directory, reads refused while it was the symlink)
        let mut seen = (0u32, 0u32);
        // 2,000 operations, rotating through read, list, grep and glob, half of them
        // through the fast path and half through the forced walk.
        for i in 0..2000 {
            let ops = f.ops(i % 8 < 4);
            match i % 4 {
                0 => match ops.read_text(&ReadText::new(format!("{WS}/race/f"))) {
                    Ok(t) => {
                        assert_eq!(t.content, "inside\n", "iteration {i}");
                        seen.0 += 1;
                    }
                    Err(_) => seen.1 += 1,
                },
                1 => {
                    if let Ok(l) = ops.list(&List::new(format!("{WS}/race"))) {
                        assert!(
                            l.entries
                                .iter()
                                .all(|e| !e.path.as_str().contains("secret")),
                            "iteration {i}"
                        );
                    }
                    let mut req = List::new(WS);
                    req.max_depth = 5;
                    let l = ops.list(&req).expect("list ws");
                    assert!(
                        l.entries
                            .iter()
                            .all(|e| !e.path.as_str().contains("secret")),
                        "iteration {i}"
                    );
                }
                2 => {
                    let mut g = Grep::new(WS, SECRET);
                    g.literal = true;
                    let g = ops.grep(&g).expect("grep ws");
                    assert!(g.matches.is_empty(), "iteration {i}: {:?}", g.matches);
                    if let Ok(g) = ops.grep(&Grep::new(format!("{WS}/race"), "SECRET")) {
                        assert!(g.matches.is_empty(), "iteration {i}: {:?}", g.matches);
                    }
                }
                _ => {
                    let g = ops.glob(&Glob::new(WS, "**/*secret*")).expect("glob ws");
                    assert!(g.paths.is_empty(), "iteration {i}: {:?}", g.paths);
                    if let Ok(b) = ops.open_read(&ReadBytes {
                        path: format!("{WS}/race/f"),
                        ..Default::default()
                    }) {
                        assert_eq!(b.file_size, 7, "iteration {i}");
                    }
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        eprintln!(
            "race: {} reads inside, {} refused while flipped",
            seen.0, seen.1
        );
    });
    assert_eq!(
        std::fs::read_to_string(f.outside.join("f")).expect("read"),
        format!("{SECRET}\n")
    );
}
