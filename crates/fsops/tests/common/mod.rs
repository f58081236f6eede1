//! A hostile fixture shared by the integration tests: a real thread layout with a
//! custom read-only mount and a writable custom mount with a nested read-only one, plus a
//! secret directory outside every mount and many symlinks pointing at it.
#![allow(dead_code)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use paddock_core::mount::{Mount, MountKind};
use paddock_core::{DataLayout, MountTable, ThreadId, UserId, VirtualPath};
use paddock_fsops::{FsOps, FsOptions};

pub const SECRET: &str = "SECRET-OUTSIDE-7f3a";
pub const WS: &str = "/mnt/user-data/workspace";

pub struct Fixture {
    pub tmp: tempfile::TempDir,
    /// Canonical temp root.
    pub root: PathBuf,
    pub table: Arc<MountTable>,
    pub ws: PathBuf,
    pub uploads: PathBuf,
    pub skills: PathBuf,
    pub custom_skills: PathBuf,
    pub outside: PathBuf,
    pub srv: PathBuf,
    pub srv_ro: PathBuf,
}

impl Fixture {
    pub fn ops(&self, force_walk: bool) -> FsOps {
        FsOps::new(
            self.table.clone(),
            FsOptions {
                force_walk,
                ..FsOptions::default()
            },
        )
    }
}

pub fn w(path: &Path, content: &str) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    std::fs::write(path, content).expect("write");
}

pub fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = std::fs::canonicalize(tmp.path()).expect("canonicalize");
    let data = root.join("data");
    let outside = root.join("outside");
    w(&outside.join("secret.txt"), &format!("{SECRET}\n"));
    w(
        &outside.join("sub/secret-OUTSIDE.txt"),
        &format!("{SECRET}\n"),
    );
    let srv = root.join("srv");
    let srv_ro = root.join("ro");
    w(&srv.join("plain.txt"), "plain\n");
    w(&srv_ro.join("r.txt"), "read only\n");
    let layout = DataLayout::new(&data);
    let user = UserId::new("u1").expect("user");
    let thread = ThreadId::new("t1").expect("thread");
    let custom = vec![
        Mount {
            container: VirtualPath::parse("/srv/rw").expect("vp"),
            host: srv.clone(),
            read_only: false,
            kind: MountKind::Custom,
        },
        Mount {
            container: VirtualPath::parse("/srv/rw/ro").expect("vp"),
            host: srv_ro.clone(),
            read_only: true,
            kind: MountKind::Custom,
        },
    ];
    let table = MountTable::for_thread(&layout, &user, &thread, custom).expect("table");
    let dirs = layout.thread_dirs(&user, &thread);
    let ws = std::fs::canonicalize(&dirs.workspace).expect("ws");
    let uploads = std::fs::canonicalize(&dirs.uploads).expect("uploads");
    let skills = std::fs::canonicalize(layout.skills_dir()).expect("skills");
    let custom_skills =
        std::fs::canonicalize(layout.user_custom_skills_dir(&user)).expect("custom");

    w(&ws.join("hello.txt"), "hello\nworld\n");
    w(&ws.join("sub/inner.txt"), "inner line\nsecond Needle\n");
    w(&uploads.join("u.txt"), "upload\n");
    w(&skills.join("public/s1/SKILL.md"), "# skill\n");
    w(&custom_skills.join("cs.md"), "custom skill\n");
    let l = |target: &str, at: &Path| symlink(target, at).expect("symlink");
    l("/etc", &ws.join("etc_link"));
    l("../../../../../../../../../../etc", &ws.join("climb"));
    l(outside.to_str().expect("utf8"), &ws.join("dirlink"));
    l(
        &format!("{}/secret.txt", outside.display()),
        &ws.join("host_abs"),
    );
    l("../../../../../../../outside", &ws.join("reldirlink"));
    l("/mnt/user-data/uploads/u.txt", &ws.join("to_uploads"));
    l("/mnt/skills/public/s1/SKILL.md", &ws.join("to_skills"));
    l("loop_b", &ws.join("loop_a"));
    l("loop_a", &ws.join("loop_b"));
    l("self", &ws.join("self"));
    l("sub/inner.txt", &ws.join("rel_ok"));
    l("/mnt/user-data/workspace/hello.txt", &ws.join("abs_ok"));
    l("sub", &ws.join("subdir_link"));
    l("missing.txt", &ws.join("dangling"));
    l("public/s1/SKILL.md", &skills.join("link_in"));
    l("custom/cs.md", &skills.join("to_custom"));
    l("ro/r.txt", &srv.join("link_ro"));
    l("ro", &srv.join("link_ro_dir"));
    l("/srv/rw/ro/r.txt", &srv.join("abs_link_ro"));
    rustix::fs::mknodat(
        rustix::fs::CWD,
        ws.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    Fixture {
        tmp,
        root,
        table: Arc::new(table),
        ws,
        uploads,
        skills,
        custom_skills,
        outside,
        srv,
        srv_ro,
    }
}

/// Whether root-only checks can run. Without root: a loud skip locally, a failure in CI
/// (`CI=true`), where the checks must run.
pub fn have_root(what: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    let msg = format!("{what} needs root (chown to another uid); not running as root");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}
