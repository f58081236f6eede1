//! Sandbox jails (`jail::build_sandbox` + the init program): one jail for the sandbox's
//! whole life, each command a child of its init. Real namespaces, real mounts; needs root
//! or user namespaces (CI runs as root, where a missing feature fails instead of skipping).
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use paddock_sys::jail::{JailSpec, NetMode, Rlimit, Step, build_sandbox, cap_last_cap};
use paddock_sys::mountplan::{DataBind, HostFacts, MountInputs, plan_mounts};
use paddock_sys::process::WaitStatus;
use paddock_sys::sandbox_jail::{InitRecord, RECORD_LEN, RunCommand, init_program, send};
use tokio::io::AsyncReadExt;

fn root() -> bool {
    let root = paddock_sys::process::euid() == 0;
    if !root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run the sandbox jail tests as root"
        );
        eprintln!("SKIPPED: these tests build jails from host directories as root");
    }
    root
}

const UID: u32 = 951_777;

fn spec(binds: Vec<DataBind>) -> JailSpec {
    let plan = plan_mounts(&MountInputs {
        facts: HostFacts::gather().unwrap(),
        binds,
        tmp_size_bytes: 1 << 20,
        staging: "/tmp".into(),
        etc_files: vec![],
        files: vec![],
        links: vec![],
    })
    .unwrap();
    let abi = paddock_sys::landlock::kernel_abi();
    let idmap_userns = plan
        .idmaps
        .iter()
        .map(|m| Arc::new(paddock_sys::idmap::userns_for((m.uid, m.gid), (UID, UID)).unwrap()))
        .collect();
    JailSpec {
        landlock: paddock_sys::landlock::plan(abi, &plan.writable_dirs, &plan.device_files),
        mounts: plan,
        seccomp: Arc::new(paddock_sys::seccomp::build_program().unwrap()),
        uid: UID,
        gid: UID,
        privileged: true,
        net: NetMode::PerExec,
        hostname: "sandbox".into(),
        program: "/bin/sh".into(),
        rlimits: vec![Rlimit {
            resource: libc::RLIMIT_CORE as i32,
            value: 0,
        }],
        cgroup: Default::default(),
        cap_last_cap: cap_last_cap(),
        waiting_shell: false,
        shell_locale: None,
        idmap_userns,
    }
}

fn bind(host: &Path, jail: &str, read_only: bool) -> DataBind {
    DataBind {
        host: host.into(),
        jail: jail.into(),
        read_only,
        locked: paddock_sys::mountplan::locked_flags_from_statvfs(
            paddock_sys::process::statvfs_flags(host).unwrap(),
        ),
        idmap: None,
    }
}

/// A bind of a directory another program owns, shown to the sandbox as its own.
fn foreign(host: &Path, jail: &str, read_only: bool, owner: u32) -> DataBind {
    DataBind {
        idmap: Some(paddock_sys::mountplan::IdMap {
            uid: owner,
            gid: owner,
        }),
        ..bind(host, jail, read_only)
    }
}

fn owned_dir(p: &Path, uid: u32, mode: u32) {
    std::fs::create_dir_all(p).unwrap();
    paddock_sys::process::lchown(p, uid, uid).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A built jail and a way to run commands in it.
struct Jail {
    init: paddock_sys::PidFd,
    control: tokio::net::UnixStream,
    next: u32,
}

struct Ran {
    out: String,
    err: String,
    status: WaitStatus,
}

impl Jail {
    async fn build(spec: &JailSpec) -> Result<Self, (Step, i32)> {
        let b = build_sandbox(spec, &init_program().unwrap()).unwrap();
        let mut status = tokio::net::unix::pipe::Receiver::from_owned_fd(b.status).unwrap();
        let mut rec = Vec::new();
        status.read_to_end(&mut rec).await.unwrap();
        if !rec.is_empty() {
            let r = paddock_sys::StatusRecord::parse(rec[..12].try_into().unwrap());
            let _ = b.init.kill();
            let _ = b.init.wait_blocking();
            match r {
                Some(paddock_sys::StatusRecord::SetupFailed { step, errno }) => {
                    return Err((step, errno));
                }
                other => panic!("unexpected record {other:?}"),
            }
        }
        let control = std::os::unix::net::UnixStream::from(b.control);
        control.set_nonblocking(true).unwrap();
        Ok(Self {
            init: b.init,
            control: tokio::net::UnixStream::from_std(control).unwrap(),
            next: 1,
        })
    }

    async fn record(&mut self) -> Option<InitRecord> {
        let mut b = [0u8; RECORD_LEN];
        self.control.read_exact(&mut b).await.ok()?;
        InitRecord::parse(&b)
    }

    async fn run(&mut self, cmd: &str) -> Ran {
        let id = self.next;
        self.next += 1;
        let (out_r, out_w) = pipe();
        let (err_r, err_w) = pipe();
        let null = std::fs::File::open("/dev/null").unwrap();
        let argv = vec!["sh".to_owned(), "-c".into(), cmd.into()];
        let env = vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())];
        let fds = [null.as_fd(), out_w.as_fd(), err_w.as_fd()];
        let msg = RunCommand {
            exec_id: id,
            program: "/bin/sh",
            cwd: "/",
            argv: &argv,
            env: &env,
            fds: &fds,
            cgroups: &[],
            clone_into: None,
        }
        .encode()
        .unwrap();
        send(&self.control, msg.bytes(), msg.fds()).await.unwrap();
        drop((out_w, err_w, null));
        match self.record().await.unwrap() {
            InitRecord::Started { exec_id, pid } => {
                assert_eq!(exec_id, id);
                assert!(pid > 1);
            }
            other => panic!("{other:?}"),
        }
        let status = match self.record().await.unwrap() {
            InitRecord::Exited { exec_id, status } if exec_id == id => status,
            other => panic!("{other:?}"),
        };
        Ran {
            out: read_all(out_r),
            err: read_all(err_r),
            status,
        }
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    (r.into(), w.into())
}

fn read_all(fd: OwnedFd) -> String {
    let mut s = String::new();
    // Background processes may hold the write end: read what is there without waiting.
    // SAFETY: fcntl on a live descriptor.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    let _ = std::fs::File::from(fd).read_to_string(&mut s);
    s
}

#[tokio::test]
async fn commands_are_children_of_one_init_and_tmp_lasts_between_them() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    owned_dir(&ws, UID, 0o755);
    let mut j = Jail::build(&spec(vec![bind(&ws, "/mnt/user-data/workspace", false)]))
        .await
        .unwrap();
    let r = j
        .run("id -u; echo $PPID; tr '\\0' ' ' < /proc/1/cmdline; echo; echo kept > /tmp/state; exit 3")
        .await;
    assert_eq!(r.status, WaitStatus::Exited(3), "{}", r.err);
    let lines: Vec<&str> = r.out.lines().collect();
    assert_eq!(lines[0], UID.to_string());
    assert_eq!(lines[1], "1", "the shell's parent is the jail's init");
    assert!(lines[2].starts_with("paddock-init"), "{lines:?}");
    // The next command sees the same /tmp, and a background process of an earlier one.
    let r = j.run("sleep 300 & echo started").await;
    assert_eq!(r.out, "started\n");
    let r = j.run("cat /tmp/state; ls /proc | grep -c '^[0-9]'").await;
    assert_eq!(r.status, WaitStatus::Exited(0), "{}", r.err);
    let lines: Vec<&str> = r.out.lines().collect();
    assert_eq!(lines[0], "kept");
    // init, the background sleep, this shell and its pipeline.
    assert!(lines[1].parse::<u32>().unwrap() >= 3, "{lines:?}");
    // Killing init ends the jail and everything in it.
    let pid = j.init.pid();
    j.init.kill().unwrap();
    j.init.wait_blocking().unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(j.record().await.is_none(), "the control socket closed");
}

#[tokio::test]
async fn a_dropped_control_socket_ends_the_jail() {
    if !root() {
        return;
    }
    let mut j = Jail::build(&spec(vec![])).await.unwrap();
    let r = j.run("sleep 300 >/dev/null 2>&1 & echo ok").await;
    assert_eq!(r.out, "ok\n");
    let Jail { init, control, .. } = j;
    drop(control);
    let st = tokio::task::spawn_blocking(move || init.wait_blocking())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st, WaitStatus::Exited(0), "init left on its own");
}

#[tokio::test]
async fn nested_mounts_work_whatever_the_host_directories_modes() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // DeerFlow's lark-cli layout: a read-only `config` of mode 0700 owned by someone else,
    // with a writable `config/locks` inside it; and a read-only parent with a writable child
    // owned by the sandbox.
    let config = tmp.path().join("config");
    owned_dir(&config, 4242, 0o700);
    owned_dir(&config.join("locks"), 4242, 0o700);
    std::fs::write(config.join("app.json"), "{}").unwrap();
    std::fs::set_permissions(
        config.join("app.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let ro = tmp.path().join("ro");
    owned_dir(&ro, 0, 0o755);
    owned_dir(&ro.join("rw"), UID, 0o755);
    let mut j = Jail::build(&spec(vec![
        foreign(&config, "/mnt/integrations/lark-cli/config", true, 4242),
        foreign(
            &config.join("locks"),
            "/mnt/integrations/lark-cli/config/locks",
            false,
            4242,
        ),
        bind(&ro, "/mnt/ro", true),
        bind(&ro.join("rw"), "/mnt/ro/rw", false),
    ]))
    .await
    .unwrap();
    let r = j
        .run(
            "c=/mnt/integrations/lark-cli/config; \
             cat $c/app.json && echo; \
             touch $c/locks/l && echo locks-writable; \
             touch $c/x 2>/dev/null || echo config-read-only; \
             touch /mnt/ro/rw/f && echo child-writable; \
             touch /mnt/ro/f 2>/dev/null || echo parent-read-only",
        )
        .await;
    assert_eq!(
        r.out, "{}\nlocks-writable\nconfig-read-only\nchild-writable\nparent-read-only\n",
        "{}",
        r.err
    );
    // What the sandbox made there belongs to the directory's owner on disk.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(config.join("locks/l")).unwrap().uid(),
        4242
    );
    assert_eq!(std::fs::metadata(ro.join("rw/f")).unwrap().uid(), UID);
}

#[tokio::test]
async fn a_symlinked_host_path_is_refused() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    owned_dir(&real, UID, 0o755);
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = Jail::build(&spec(vec![bind(&link, "/mnt/user-data/workspace", false)]))
        .await
        .err()
        .unwrap();
    assert_eq!(err, (Step::OpenSource, libc::ELOOP));
    // A symlink higher up in the path is refused as well.
    let inner = real.join("inner");
    owned_dir(&inner, UID, 0o755);
    let err = Jail::build(&spec(vec![bind(
        &link.join("inner"),
        "/mnt/user-data/workspace",
        false,
    )]))
    .await
    .err()
    .unwrap();
    assert_eq!(err, (Step::OpenSource, libc::ELOOP));
}

#[tokio::test]
async fn the_servers_argv_and_environment_are_not_visible() {
    if !root() {
        return;
    }
    let mut j = Jail::build(&spec(vec![])).await.unwrap();
    let r = j
        .run("cat /proc/1/cmdline | tr '\\0' ' '; echo; cat /proc/1/environ 2>&1 | wc -c")
        .await;
    let lines: Vec<&str> = r.out.lines().collect();
    let me = std::env::args().next().unwrap();
    assert!(!lines[0].contains(&me), "{lines:?}");
    assert!(lines[0].starts_with("paddock-init"), "{lines:?}");
}
