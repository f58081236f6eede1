//! End-to-end tests of `migrate-layout` on generated trees: hundreds of threads with
//! owners in a real SQLite file, conflicts, odd names, symlinks, read-only directories,
//! another filesystem, dry-run exactness and runs killed between two moves.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use paddock_migrate::apply::{ApplyOptions, Status};
use paddock_migrate::cli::{MigrateOptions, run};
use paddock_migrate::plan::{Action, PlanOptions};
use paddock_migrate::{apply, plan, report};

const CHILD_ENV: &str = "PADDOCK_MIGRATE_TEST_CHILD";

/// Every entry under `root` (not following links): kind, mode, owner, size and content
/// hash of files, target of links.
fn digest(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let m = fs::symlink_metadata(p).expect("lstat");
        let rel = p.strip_prefix(root).expect("prefix").to_path_buf();
        let ft = m.file_type();
        let desc = if ft.is_symlink() {
            format!("link {:?}", fs::read_link(p).expect("readlink"))
        } else if ft.is_dir() {
            format!("dir {:o} {}", m.mode(), m.uid())
        } else {
            let mut data = Vec::new();
            fs::File::open(p)
                .expect("open")
                .read_to_end(&mut data)
                .expect("read");
            format!(
                "file {:o} {} {} {:x}",
                m.mode(),
                m.uid(),
                m.len(),
                paddock_migrate::fsutil::hash_file(p).expect("hash")
            )
        };
        out.insert(rel, desc);
        if ft.is_dir() {
            for e in fs::read_dir(p).expect("readdir") {
                walk(root, &e.expect("entry").path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The entries under `prefix`, keyed relative to it.
fn subtree(d: &BTreeMap<PathBuf, String>, prefix: &Path) -> BTreeMap<PathBuf, String> {
    d.iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(prefix)
                .ok()
                .map(|r| (r.to_path_buf(), v.clone()))
        })
        .collect()
}

fn write(p: &Path, content: &str) {
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(p, content).expect("write");
}

fn thread_name(i: usize) -> String {
    format!("t{i:04}")
}

/// A legacy tree: `n` threads (every third owned by alice, every fifth by bob in the
/// database), conflicts, odd names, symlinks, memory, agents and custom skills.
fn build_tree(root: &Path, n: usize) {
    for i in 0..n {
        let t = root.join("threads").join(thread_name(i));
        write(
            &t.join("user-data/workspace/notes.md"),
            &format!("thread {i}\n"),
        );
        write(&t.join("user-data/outputs/report.txt"), &"x".repeat(i));
        fs::create_dir_all(t.join("user-data/uploads")).expect("mkdir");
        fs::create_dir_all(t.join("acp-workspace")).expect("mkdir");
        if i % 7 == 0 {
            symlink("/etc/passwd", t.join("user-data/workspace/passwd-link")).expect("symlink");
            symlink("notes.md", t.join("user-data/workspace/rel-link")).expect("symlink");
            fs::set_permissions(
                t.join("user-data/workspace/notes.md"),
                fs::Permissions::from_mode(0o600),
            )
            .expect("chmod");
        }
    }
    let threads = root.join("threads");
    // Odd names: invalid thread ids are reported and left in place.
    for odd in [
        "with space",
        "ünïcode",
        "..x",
        "...",
        ".hidden",
        &"l".repeat(65),
    ] {
        write(&threads.join(odd).join("user-data/workspace/f"), odd);
    }
    write(&threads.join("stray-file"), "not a thread dir");
    let not_utf8 = std::ffi::OsStr::from_bytes(b"bad-\xff-name");
    write(&threads.join(not_utf8).join("f"), "latin-1 name");
    // Symlinked thread dirs move as links.
    let outside = root.join("outside-thread");
    write(&outside.join("user-data/workspace/f"), "outside");
    symlink(&outside, threads.join("abs-link")).expect("symlink");
    symlink("t0001", threads.join("rel-link")).expect("symlink");
    // Conflicts: a destination that exists already.
    write(
        &root.join("users/default/threads/t0002/user-data/workspace/newer.md"),
        "new layout",
    );
    write(&root.join("memory.json"), "{\"facts\": []}");
    write(&root.join("agents/writer/config.yaml"), "name: writer");
    write(&root.join("agents/coder/config.yaml"), "name: coder");
    write(
        &root.join("users/default/agents/coder/config.yaml"),
        "existing",
    );
    write(&root.join("skills/custom/pdf/SKILL.md"), "# pdf");
    write(&root.join("skills/custom/.history/pdf.json"), "[]");
    write(&root.join("skills/public/web/SKILL.md"), "# public");
    // Owners in DeerFlow's database.
    let db = rusqlite::Connection::open(root.join("deer-flow.db")).expect("db");
    db.execute_batch(
        "CREATE TABLE threads_meta (thread_id TEXT PRIMARY KEY, user_id TEXT, title TEXT);",
    )
    .expect("schema");
    for i in 0..n {
        let owner = if i == 4 {
            Some("../evil")
        } else if i % 3 == 0 {
            Some("alice")
        } else if i % 5 == 0 {
            Some("bob")
        } else {
            None
        };
        db.execute(
            "INSERT INTO threads_meta VALUES (?1, ?2, 'title')",
            rusqlite::params![thread_name(i), owner],
        )
        .expect("insert");
    }
}

fn opts(root: &Path) -> PlanOptions {
    PlanOptions {
        data_dir: root.to_path_buf(),
        user_id: "default".into(),
        owners_db: None,
        allow_copy: false,
    }
}

fn decision_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with("dry run:") && !l.starts_with("done:"))
        .collect()
}

fn migrate_fully(root: &Path) -> String {
    let p = plan(&opts(root)).expect("plan");
    let out = apply(&p, &ApplyOptions::default(), &mut |_| {});
    assert_eq!(out.failed(), 0, "{}", report::text(&p, Some(&out), false));
    report::text(&p, Some(&out), false)
}

#[test]
fn dry_run_is_exact_and_real_run_moves_everything() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    build_tree(root, 300);
    let before = digest(root);

    let p = plan(&opts(root)).expect("plan");
    let dry = report::text(&p, None, true);
    assert_eq!(digest(root), before, "a dry run changed the tree");
    assert!(dry.ends_with("dry run: nothing was changed\n"));

    let p2 = plan(&opts(root)).expect("plan");
    let out = apply(&p2, &ApplyOptions::default(), &mut |_| {});
    let real = report::text(&p2, Some(&out), false);
    assert_eq!(
        decision_lines(&dry),
        decision_lines(&real),
        "dry run and real run differ"
    );
    assert_eq!(out.failed(), 0, "{real}");

    // Every thread is under its owner with identical contents, modes and links.
    let after = digest(root);
    for i in 0..300 {
        let t = thread_name(i);
        let owner = if i == 4 {
            None
        } else if i % 3 == 0 {
            Some("alice")
        } else if i % 5 == 0 {
            Some("bob")
        } else {
            Some("default")
        };
        let legacy_key = PathBuf::from("threads").join(&t);
        match owner {
            None => {
                assert!(
                    root.join(&legacy_key).is_dir(),
                    "{t} with an invalid owner must stay"
                );
                assert!(
                    real.contains("owner \"../evil\" from the database is not a valid user_id")
                );
            }
            Some("default") if i == 2 => {
                // Conflict: the legacy copy went to migration-conflicts/.
                let c = root.join("migration-conflicts/threads/t0002");
                assert!(c.join("user-data/workspace/notes.md").is_file());
                assert_eq!(
                    fs::read_to_string(
                        root.join("users/default/threads/t0002/user-data/workspace/newer.md")
                    )
                    .expect("read"),
                    "new layout"
                );
            }
            Some(u) => {
                let new = PathBuf::from("users").join(u).join("threads").join(&t);
                assert_eq!(subtree(&after, &new), subtree(&before, &legacy_key), "{t}");
                let notes = root.join(&new).join("user-data/workspace/notes.md");
                assert_eq!(
                    fs::read_to_string(notes).expect("notes"),
                    format!("thread {i}\n")
                );
                if i % 7 == 0 {
                    let link = root.join(&new).join("user-data/workspace/passwd-link");
                    assert_eq!(fs::read_link(link).expect("link"), Path::new("/etc/passwd"));
                    let mode = fs::metadata(root.join(&new).join("user-data/workspace/notes.md"))
                        .expect("meta")
                        .mode();
                    assert_eq!(mode & 0o777, 0o600);
                }
            }
        }
    }
    // Odd names stayed; symlinked threads moved as links.
    for odd in [
        "with space",
        "ünïcode",
        "..x",
        "...",
        ".hidden",
        "stray-file",
    ] {
        assert!(
            fs::symlink_metadata(root.join("threads").join(odd)).is_ok(),
            "{odd}"
        );
    }
    assert!(root.join("threads").join("l".repeat(65)).is_dir());
    assert!(
        root.join("threads")
            .join(std::ffi::OsStr::from_bytes(b"bad-\xff-name"))
            .join("f")
            .is_file()
    );
    assert!(real.contains("the name is not valid UTF-8"), "{real}");
    let abs = root.join("users/default/threads/abs-link");
    assert_eq!(
        fs::read_link(&abs).expect("link"),
        root.join("outside-thread")
    );
    assert!(root.join("outside-thread/user-data/workspace/f").is_file());
    assert_eq!(
        fs::read_link(root.join("users/default/threads/rel-link")).expect("link"),
        Path::new("t0001")
    );
    assert!(real.contains("symlink to relative target"));
    // Memory, agents, skills.
    assert!(root.join("users/default/memory.json").is_file());
    assert!(
        root.join("users/default/agents/writer/config.yaml")
            .is_file()
    );
    assert_eq!(
        fs::read_to_string(root.join("users/default/agents/coder/config.yaml")).expect("read"),
        "existing"
    );
    assert!(
        root.join("migration-conflicts/agents/coder/config.yaml")
            .is_file()
    );
    assert!(
        root.join("users/default/skills/custom/pdf/SKILL.md")
            .is_file()
    );
    assert!(
        root.join("users/default/skills/custom/.history/pdf.json")
            .is_file()
    );
    assert!(
        !root.join("skills/custom").exists(),
        "emptied skills/custom is removed"
    );
    assert!(!root.join("agents").exists(), "emptied agents/ is removed");
    assert!(
        root.join("skills/public/web/SKILL.md").is_file(),
        "skills/ is kept"
    );
    assert!(
        root.join("threads").is_dir(),
        "threads/ keeps the odd names"
    );
    // Nothing lost: every file of the original tree exists somewhere with its content.
    let count =
        |d: &BTreeMap<PathBuf, String>| d.values().filter(|v| v.starts_with("file")).count();
    assert_eq!(count(&after), count(&before));

    // A second run has nothing to do.
    let p3 = plan(&opts(root)).expect("plan");
    let again = report::text(&p3, None, true);
    assert_eq!(p3.move_count(), 0, "{again}");
    assert_eq!(p3.count(Action::RemoveEmptyDir), 0, "{again}");
    assert!(
        again.contains("summary: nothing to do (9 entries left in place)"),
        "{again}"
    );
}

fn small_tree(root: &Path) {
    for t in ["alpha", "beta", "gamma"] {
        write(
            &root
                .join("threads")
                .join(t)
                .join("user-data/workspace/a.txt"),
            t,
        );
    }
    write(
        &root.join("threads/bad name/user-data/workspace/a.txt"),
        "bad",
    );
    write(
        &root.join("users/default/threads/gamma/user-data/workspace/a.txt"),
        "newer",
    );
    write(
        &root.join("migration-conflicts/threads/gamma/x"),
        "older conflict",
    );
    write(&root.join("memory.json"), "{}");
    write(&root.join("agents/helper/config.yaml"), "x");
    write(&root.join("skills/custom/.history/h.json"), "[]");
    write(&root.join("skills/custom/csv/SKILL.md"), "# csv");
    let db = rusqlite::Connection::open(root.join("deer-flow.db")).expect("db");
    db.execute_batch(
        "CREATE TABLE threads_meta (thread_id TEXT, user_id TEXT);
         INSERT INTO threads_meta VALUES ('alpha', 'alice'), ('beta', NULL);",
    )
    .expect("schema");
}

fn normalise(text: &str, root: &Path) -> String {
    text.replace(&root.display().to_string(), "[DATA]")
}

#[test]
fn text_and_json_reports_snapshot() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    small_tree(root);
    let p = plan(&opts(root)).expect("plan");
    insta::assert_snapshot!(
        "dry_run_report",
        normalise(&report::text(&p, None, true), root)
    );
    let out = apply(&p, &ApplyOptions::default(), &mut |_| {});
    insta::assert_snapshot!(
        "real_run_report",
        normalise(&report::text(&p, Some(&out), false), root)
    );
    let j = report::json(&p, Some(&out), false);
    insta::assert_snapshot!(
        "real_run_json",
        normalise(&serde_json::to_string_pretty(&j).expect("json"), root)
    );
    assert_eq!(j["summary"]["move"], 6);
    assert_eq!(j["summary"]["conflict"], 1);
    assert_eq!(j["summary"]["skip"], 1);
    assert_eq!(j["summary"]["failed"], 0);
    let conflict = j["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .find(|d| d["action"] == "conflict")
        .expect("a conflict");
    // The first conflicts slot was taken by an older run: the next free one is used.
    assert_eq!(conflict["to"], "migration-conflicts/threads/gamma.2");
    assert_eq!(conflict["existing"], "users/default/threads/gamma");
    assert_eq!(conflict["status"], "done");
    assert_eq!(
        fs::read_to_string(root.join("migration-conflicts/threads/gamma/x")).expect("read"),
        "older conflict"
    );
    let alpha = j["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .find(|d| d["name"] == "alpha")
        .expect("alpha");
    assert_eq!(alpha["user"], "alice");
    assert_eq!(alpha["owner_source"], "database");
}

#[test]
fn run_exit_codes_and_bad_arguments() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    small_tree(root);
    let args = |dry_run| MigrateOptions {
        data_dir: root.to_path_buf(),
        user_id: "default".into(),
        owners_db: None,
        dry_run,
        json: true,
        allow_copy: false,
    };
    let before = digest(root);
    assert_eq!(run(args(true)).expect("run"), 0);
    assert_eq!(digest(root), before);
    let mut bad = args(true);
    bad.user_id = "../x".into();
    assert_eq!(run(bad).expect("run"), 2);
    let mut bad = args(true);
    bad.owners_db = Some(root.join("missing.db"));
    assert_eq!(run(bad).expect("run"), 2);
    let mut bad = args(true);
    bad.data_dir = root.join("nope");
    assert_eq!(run(bad).expect("run"), 2);
    // A database without threads_meta is a warning; everything goes to --user-id.
    let db2 = root.join("empty.db");
    rusqlite::Connection::open(&db2)
        .expect("db")
        .execute_batch("CREATE TABLE x (y)")
        .expect("schema");
    let mut o = opts(root);
    o.owners_db = Some(db2);
    o.user_id = "carol".into();
    let p = plan(&o).expect("plan");
    assert!(
        p.warnings[0].contains("no threads_meta table"),
        "{:?}",
        p.warnings
    );
    let alpha = p.items.iter().find(|i| i.name == "alpha").expect("alpha");
    assert_eq!(alpha.to.as_deref(), Some("users/carol/threads/alpha"));
    assert_eq!(run(args(false)).expect("run"), 0);
    assert_eq!(run(args(false)).expect("run"), 0);
}

/// Runs the migration in a child process (this test binary, re-executed).
fn child(root: &Path, pause_after: Option<usize>, uid: Option<u32>) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.args([
        "child_entry",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, root)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(n) = pause_after {
        cmd.env(paddock_migrate::PAUSE_AFTER_ENV, n.to_string());
    }
    if let Some(uid) = uid {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(uid);
    }
    cmd
}

#[test]
#[ignore = "helper re-executed by other tests; does nothing without PADDOCK_MIGRATE_TEST_CHILD"]
fn child_entry() {
    let Some(root) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let code = run(MigrateOptions {
        data_dir: PathBuf::from(root),
        user_id: "default".into(),
        owners_db: None,
        dry_run: false,
        json: false,
        allow_copy: false,
    })
    .expect("run");
    std::process::exit(code);
}

#[test]
fn killed_between_moves_then_rerun_finishes() {
    let reference = tempfile::tempdir().expect("tempdir");
    build_tree(reference.path(), 120);
    migrate_fully(reference.path());
    let expected = digest(reference.path());
    let total = {
        let t = tempfile::tempdir().expect("tempdir");
        build_tree(t.path(), 120);
        plan(&opts(t.path())).expect("plan").move_count()
    };
    assert!(total > 100, "{total}");

    for kill_after in [1, 37, total - 1] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        build_tree(root, 120);
        let mut c = child(root, Some(kill_after), None).spawn().expect("spawn");
        let stderr = c.stderr.take().expect("stderr");
        let mut paused = false;
        for line in BufReader::new(stderr).lines() {
            let line = line.expect("line");
            if line.contains(&format!("paused after {kill_after} moves")) {
                paused = true;
                break;
            }
        }
        assert!(paused, "the child never reached the pause hook");
        c.kill().expect("SIGKILL");
        let status = c.wait().expect("wait");
        assert!(!status.success());
        // Partway: some moves done, some not.
        let mid = plan(&opts(root)).expect("plan");
        assert_eq!(
            mid.move_count(),
            total - kill_after,
            "kill after {kill_after}"
        );
        // The re-run finishes the job: same tree as an uninterrupted run.
        migrate_fully(root);
        let got = digest(root);
        let norm = |d: &BTreeMap<PathBuf, String>, r: &Path| -> BTreeMap<PathBuf, String> {
            d.iter()
                .map(|(k, v)| (k.clone(), v.replace(&r.display().to_string(), "[R]")))
                .collect()
        };
        assert_eq!(
            norm(&got, root),
            norm(&expected, reference.path()),
            "kill after {kill_after}"
        );
        let p = plan(&opts(root)).expect("plan");
        assert_eq!(p.move_count() + p.count(Action::RemoveEmptyDir), 0);
    }
}

fn chown_tree(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).expect("chown");
    if fs::symlink_metadata(p).expect("lstat").is_dir() {
        for e in fs::read_dir(p).expect("readdir") {
            chown_tree(&e.expect("entry").path(), uid);
        }
    }
}

fn require_root(what: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} needs root (to chown the tree and run the migration as another user); CI=true"
    );
    eprintln!("SKIPPED {what}: needs root");
    false
}

#[test]
fn read_only_directories_are_refused_clearly_without_data_loss() {
    if !require_root("read_only_directories_are_refused_clearly_without_data_loss") {
        return;
    }
    const NOBODY: u32 = 65534;
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("data");
    fs::create_dir(&root).expect("mkdir");
    small_tree(&root);
    chown_tree(tmp.path(), NOBODY);
    // threads/ not writable: nothing can leave it.
    fs::set_permissions(root.join("threads"), fs::Permissions::from_mode(0o555)).expect("chmod");
    // An agent directory without write permission cannot change parent.
    fs::set_permissions(
        root.join("agents/helper"),
        fs::Permissions::from_mode(0o555),
    )
    .expect("chmod");
    let before = digest(&root);
    let out = child(&root, None, Some(NOBODY))
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("refuse    thread        threads/alpha: not moved -- cannot remove entries from threads/: Permission denied"),
        "{stdout}"
    );
    assert!(
        stdout.contains("agents/helper/ is not writable (Permission denied"),
        "{stdout}"
    );
    // The movable entries moved; the refused ones are intact.
    let after = digest(&root);
    for (k, v) in &before {
        if k.starts_with("threads") || k.starts_with("agents") {
            assert_eq!(after.get(k), Some(v), "{}", k.display());
        }
    }
    assert!(root.join("users/default/memory.json").is_file());
    assert!(
        root.join("users/default/skills/custom/csv/SKILL.md")
            .is_file()
    );
    fs::set_permissions(root.join("threads"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(
        root.join("agents/helper"),
        fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
}

#[test]
fn another_filesystem_is_refused_unless_allow_copy() {
    let shm = Path::new("/dev/shm");
    let same = paddock_migrate::fsutil::fs_id(shm)
        .ok()
        .zip(paddock_migrate::fsutil::fs_id(&std::env::temp_dir()).ok())
        .is_some_and(|(a, b)| a.same_fs(&b));
    if same || !shm.is_dir() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "needs /dev/shm on another filesystem than the temp dir; CI=true"
        );
        eprintln!("SKIPPED another_filesystem_is_refused_unless_allow_copy: no second filesystem");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let other = tempfile::tempdir_in(shm).expect("tempdir in /dev/shm");
    // `users/` of the new layout lives on the other filesystem.
    symlink(other.path(), root.join("users")).expect("symlink");
    small_tree(root);
    let before = digest(root);

    let p = plan(&opts(root)).expect("plan");
    let text = report::text(&p, None, true);
    assert!(p.count(Action::Refuse) > 0, "{text}");
    assert!(text.contains("are on different filesystems"), "{text}");
    assert_eq!(report::exit_code(&p, None), 1);
    let out = apply(&p, &ApplyOptions::default(), &mut |_| {});
    assert_eq!(out.failed(), 0);
    // gamma's destination exists, so it goes to migration-conflicts/ on this filesystem;
    // the moves into users/ (the other filesystem) are refused and touch nothing.
    assert!(
        root.join("migration-conflicts/threads/gamma.2").is_dir()
            || root.join("migration-conflicts/threads/gamma").is_dir()
    );
    let threads_before: BTreeMap<_, _> = before
        .iter()
        .filter(|(k, _)| k.starts_with("threads") && !k.starts_with("threads/gamma"))
        .collect();
    let after = digest(root);
    let threads_after: BTreeMap<_, _> = after
        .iter()
        .filter(|(k, _)| k.starts_with("threads"))
        .collect();
    assert_eq!(
        threads_before, threads_after,
        "refused moves must not touch anything"
    );

    let mut o = opts(root);
    o.allow_copy = true;
    let p = plan(&o).expect("plan");
    assert_eq!(
        p.count(Action::Refuse),
        0,
        "{}",
        report::text(&p, None, true)
    );
    assert!(p.items.iter().any(|i| i.copy));
    let out = apply(&p, &ApplyOptions::default(), &mut |_| {});
    assert_eq!(out.failed(), 0, "{}", report::text(&p, Some(&out), false));
    assert!(out.items.iter().all(|o| o.status != Status::Failed));
    assert_eq!(
        fs::read_to_string(
            other
                .path()
                .join("alice/threads/alpha/user-data/workspace/a.txt")
        )
        .expect("copied"),
        "alpha"
    );
    assert!(
        !root.join("threads/alpha").exists(),
        "the source is deleted after the copy"
    );
    // No partial copies left behind.
    let leftovers: Vec<_> = digest(other.path())
        .into_keys()
        .filter(|k| k.to_string_lossy().contains("paddock-migrate-partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The states a cross-filesystem copy can be killed in, rebuilt by hand: each re-run
/// finishes without a duplicate in migration-conflicts/ and without losing data.
#[test]
fn interrupted_copies_are_finished_by_the_next_run() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "needs /dev/shm; CI=true"
        );
        eprintln!("SKIPPED interrupted_copies_are_finished_by_the_next_run: no /dev/shm");
        return;
    }
    for state in ["copied", "source-half-deleted", "marker-only"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let other = tempfile::tempdir_in(shm).expect("tempdir in /dev/shm");
        symlink(other.path(), root.join("users")).expect("symlink");
        small_tree(root);
        write(
            &root.join("threads/alpha/user-data/outputs/big.bin"),
            &"b".repeat(100_000),
        );
        let src = root.join("threads/alpha");
        let dst = other.path().join("alice/threads/alpha");
        let want = subtree(&digest(root), Path::new("threads/alpha"));
        fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
        let marker = root.join("threads/.alpha.paddock-migrate-copied");
        match state {
            "copied" => {
                paddock_migrate::fsutil::copy_tree(&src, &dst).expect("copy");
            }
            "source-half-deleted" => {
                paddock_migrate::fsutil::copy_tree(&src, &dst).expect("copy");
                fs::remove_dir_all(src.join("user-data/outputs")).expect("partial delete");
            }
            _ => {
                // Killed after writing the marker, before the rename: the partial copy
                // is complete but not in place.
                let partial = dst.with_file_name(".alpha.paddock-migrate-partial");
                paddock_migrate::fsutil::copy_tree(&src, &partial).expect("copy");
            }
        }
        fs::write(&marker, "users/alice/threads/alpha").expect("marker");

        let mut o = opts(root);
        o.allow_copy = true;
        let p = plan(&o).expect("plan");
        let text = report::text(&p, None, true);
        let alpha: Vec<_> = p.items.iter().filter(|i| i.name == "alpha").collect();
        if state == "marker-only" {
            assert_eq!(alpha.len(), 2, "{text}");
            assert_eq!(alpha[0].action, Action::DropMarker, "{text}");
            assert_eq!(alpha[1].action, Action::Move, "{text}");
            assert!(
                text.contains("cleanup   thread        threads/.alpha.paddock-migrate-copied"),
                "{text}"
            );
        } else {
            assert_eq!(alpha.len(), 1, "{text}");
            assert_eq!(alpha[0].action, Action::FinishCopy, "{text}");
            assert!(
                text.contains("finish    thread        threads/alpha -> users/alice/threads/alpha"),
                "{text}"
            );
        }
        assert_eq!(p.count(Action::Conflict), 1, "only gamma conflicts: {text}");
        let out = apply(&p, &ApplyOptions::default(), &mut |_| {});
        assert_eq!(out.failed(), 0, "{}", report::text(&p, Some(&out), false));
        assert!(fs::symlink_metadata(&src).is_err(), "{state}: source left");
        assert!(
            fs::symlink_metadata(&marker).is_err(),
            "{state}: marker left"
        );
        let got = subtree(&digest(other.path()), Path::new("alice/threads/alpha"));
        assert_eq!(
            got, want,
            "{state}: destination differs from the original source"
        );
        assert!(
            !root.join("migration-conflicts/threads/alpha").exists(),
            "{state}: no duplicate filed"
        );
        let leftovers: Vec<_> = digest(other.path())
            .into_keys()
            .filter(|k| k.to_string_lossy().contains("paddock-migrate"))
            .collect();
        assert!(leftovers.is_empty(), "{state}: {leftovers:?}");
        let again = plan(&o).expect("plan");
        assert!(
            !again.has_work(),
            "{state}: {}",
            report::text(&again, None, true)
        );
    }
}

/// With stderr not a terminal, a big run prints plain progress lines there (stdout keeps
/// only the report).
#[test]
fn plain_progress_lines_when_stderr_is_not_a_terminal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    build_tree(root, 80);
    let total = plan(&opts(root)).expect("plan").move_count();
    let out = child(root, None, None).output().expect("run child");
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("paddock migrate-layout: ") && l.ends_with(" moves done"))
        .collect();
    assert!(lines.len() >= 10, "{stderr}");
    assert_eq!(
        lines.last().copied(),
        Some(format!("paddock migrate-layout: {total}/{total} moves done").as_str())
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("moves done"), "{stdout}");
    assert!(
        stdout.contains(&format!("done: {total} moved, 0 failed")),
        "{stdout}"
    );
}
