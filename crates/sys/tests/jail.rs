//! Spawns real jails with `paddock_sys::jail::spawn` and checks what the command sees.
//! Needs user namespaces; skips loudly (or fails under CI=true) without them.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use paddock_sys::jail::{
    JailSpec, NetMode, Rlimit, StatusRecord, cap_last_cap, create_netns, spawn,
};
use paddock_sys::mountplan::{DataBind, HostFacts, MountInputs, plan_mounts};
use paddock_sys::probe::{Action, probe};
use paddock_sys::process::WaitStatus;

fn supported() -> bool {
    match probe(
        libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID,
        Action::PivotRoot,
    ) {
        Ok(()) => true,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "user namespaces with pivot_root are required: {e}"
            );
            eprintln!("SKIPPED: this kernel cannot create the jail's namespaces ({e})");
            false
        }
    }
}

fn blocking(fd: &OwnedFd) {
    // SAFETY: test helper toggling O_NONBLOCK on a valid descriptor.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
    }
}

fn run(cmd: &str, ws: &std::path::Path) -> (String, String, Option<StatusRecord>) {
    run_net(cmd, ws, NetMode::PerExec)
}

fn run_net(
    cmd: &str,
    ws: &std::path::Path,
    net: NetMode,
) -> (String, String, Option<StatusRecord>) {
    let uid = paddock_sys::process::euid();
    let id = if uid == 0 { 951_000 } else { uid };
    let gid = if uid == 0 {
        951_000
    } else {
        paddock_sys::process::egid()
    };
    let locked = paddock_sys::mountplan::locked_flags_from_statvfs(
        paddock_sys::process::statvfs_flags(ws).unwrap(),
    );
    let plan = plan_mounts(&MountInputs {
        facts: HostFacts::gather().unwrap(),
        binds: vec![DataBind {
            host: ws.into(),
            jail: "/mnt/user-data/workspace".into(),
            read_only: false,
            locked,
        }],
        tmp_size_bytes: 1 << 20,
        staging: "/tmp".into(),
    })
    .unwrap();
    let abi = paddock_sys::landlock::kernel_abi();
    let spec = JailSpec {
        landlock: paddock_sys::landlock::plan(abi, &plan.writable_dirs, &plan.device_files),
        mounts: plan,
        seccomp: Arc::new(paddock_sys::seccomp::build_program().unwrap()),
        uid: id,
        gid,
        privileged: uid == 0,
        net,
        hostname: "sandbox".into(),
        program: "/bin/sh".into(),
        argv: vec!["sh".into(), "-c".into(), cmd.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: "/mnt/user-data/workspace".into(),
        rlimits: vec![Rlimit {
            resource: libc::RLIMIT_CORE as i32,
            value: 0,
        }],
        cgroup_procs: vec![],
        cap_last_cap: cap_last_cap(),
    };
    let child = spawn(&spec).unwrap();
    for fd in [&child.stdout, &child.stderr, &child.status] {
        blocking(fd);
    }
    let mut out = String::new();
    std::fs::File::from(child.stdout)
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    std::fs::File::from(child.stderr)
        .read_to_string(&mut err)
        .unwrap();
    let mut rec = [0u8; StatusRecord::LEN];
    let mut f = std::fs::File::from(child.status);
    let status = f
        .read_exact(&mut rec)
        .ok()
        .and_then(|()| StatusRecord::parse(&rec));
    child.init.wait_blocking().unwrap();
    (out, err, status)
}

#[test]
fn runs_a_command_in_a_fresh_root() {
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    if paddock_sys::process::euid() == 0 {
        paddock_sys::process::lchown(&ws, 951_000, 951_000).unwrap();
    }
    let (out, err, st) = run(
        "echo hi > f; cat f; pwd; hostname; ls /; grep -E 'CapEff|NoNewPrivs|Seccomp:' /proc/self/status; echo $$",
        &ws,
    );
    assert_eq!(
        st,
        Some(StatusRecord::ShellExited(WaitStatus::Exited(0))),
        "stderr: {err}"
    );
    assert!(
        out.starts_with("hi\n/mnt/user-data/workspace\nsandbox\n"),
        "{out}"
    );
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert_eq!(std::fs::read_to_string(ws.join("f")).unwrap(), "hi\n");
    let (_, _, st) = run("exit 7", &ws);
    assert_eq!(st, Some(StatusRecord::ShellExited(WaitStatus::Exited(7))));
}

#[test]
fn a_missing_cwd_is_a_setup_error() {
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::remove_dir(&ws).unwrap();
    std::fs::create_dir(&ws).unwrap();
    let (_, _, st) = run("true", &tmp.path().join("ws"));
    assert!(matches!(
        st,
        Some(StatusRecord::ShellExited(_)) | Some(StatusRecord::SetupFailed { .. })
    ));
}

#[test]
fn a_joined_network_namespace_is_shared_across_execs() {
    if !supported() || paddock_sys::process::euid() != 0 {
        eprintln!("SKIPPED: joining a kept network namespace needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    paddock_sys::process::lchown(&ws, 951_000, 951_000).unwrap();
    let ns = Arc::new(create_netns().unwrap());
    let cmd = "readlink /proc/self/ns/net; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '";
    let (a, _, _) = run_net(cmd, &ws, NetMode::Join(ns.clone()));
    let (b, _, _) = run_net(cmd, &ws, NetMode::Join(ns));
    let (c, _, _) = run_net(cmd, &ws, NetMode::PerExec);
    assert!(a.ends_with("\nlo\n"), "{a}");
    assert_eq!(a, b, "two execs joined the same namespace");
    assert_ne!(a.lines().next(), c.lines().next());
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(a.lines().next().unwrap(), host.to_str().unwrap());
}
