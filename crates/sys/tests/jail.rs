//! Spawns real jails with `paddock_sys::jail::spawn` and checks what the command sees.
//! Needs user namespaces; skips loudly (or fails under CI=true) without them.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use paddock_sys::jail::{
    COMMAND_MAX_BYTES, COMMAND_MAX_ENV, JailChild, JailCommand, JailSpec, NetMode, Rlimit,
    SpawnError, StatusRecord, build, cap_last_cap, create_netns, spawn,
};
use paddock_sys::jail::{SHELL_PRELOAD, SHELL_PRELOAD_PATH, takes_preload};
use paddock_sys::mountplan::{DataBind, HostFacts, JailFile, MountInputs, plan_mounts};
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

fn spec_for(ws: &std::path::Path, net: NetMode) -> JailSpec {
    spec_with(ws, net, false)
}

/// A jail whose shell starts before its command (with the preload in its root).
fn waiting_spec(ws: &std::path::Path) -> JailSpec {
    spec_with(ws, NetMode::PerExec, true)
}

fn spec_with(ws: &std::path::Path, net: NetMode, waiting: bool) -> JailSpec {
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
            idmap: None,
        }],
        tmp_size_bytes: 1 << 20,
        staging: "/tmp".into(),
        etc_files: vec![],
        links: vec![],
        files: if waiting {
            vec![JailFile {
                path: SHELL_PRELOAD_PATH.into(),
                data: SHELL_PRELOAD,
                mode: 0o444,
            }]
        } else {
            vec![]
        },
    })
    .unwrap();
    let abi = paddock_sys::landlock::kernel_abi();
    JailSpec {
        landlock: paddock_sys::landlock::plan(abi, &plan.writable_dirs, &plan.device_files),
        mounts: plan,
        seccomp: Arc::new(paddock_sys::seccomp::build_program().unwrap()),
        uid: id,
        gid,
        privileged: uid == 0,
        net,
        hostname: "sandbox".into(),
        program: "/bin/sh".into(),
        rlimits: vec![Rlimit {
            resource: libc::RLIMIT_CORE as i32,
            value: 0,
        }],
        cgroup: Default::default(),
        cap_last_cap: cap_last_cap(),
        waiting_shell: waiting,
        shell_locale: waiting.then(|| "C.UTF-8".into()),
        idmap_userns: vec![],
    }
}

fn command(cmd: &str) -> JailCommand {
    JailCommand {
        argv: vec!["sh".into(), "-c".into(), cmd.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: "/mnt/user-data/workspace".into(),
    }
}

fn run_net(
    cmd: &str,
    ws: &std::path::Path,
    net: NetMode,
) -> (String, String, Option<StatusRecord>) {
    collect(spawn(&spec_for(ws, net), &command(cmd)).unwrap())
}

fn collect(child: JailChild) -> (String, String, Option<StatusRecord>) {
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
    // After the shell, init reports that nothing is left and waits to be killed.
    if matches!(status, Some(StatusRecord::ShellExited(_))) {
        let idle = f
            .read_exact(&mut rec)
            .ok()
            .and_then(|()| StatusRecord::parse(&rec));
        assert_eq!(idle, Some(StatusRecord::Idle));
    }
    // An idle init waits for its kill; after a failed step it may be gone already.
    let _ = child.init.kill();
    child.init.wait_blocking().unwrap();
    (out, err, status)
}

fn workspace(tmp: &tempfile::TempDir) -> std::path::PathBuf {
    let ws = tmp.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    if paddock_sys::process::euid() == 0 {
        paddock_sys::process::lchown(&ws, 951_000, 951_000).unwrap();
    }
    ws
}

#[test]
fn a_built_jail_waits_for_its_command_then_runs_it() {
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(&tmp);
    let pending = build(&spec_for(&ws, NetMode::PerExec)).unwrap();
    let pid = pending.init().unwrap().pid();
    std::thread::sleep(std::time::Duration::from_millis(100));
    // Built and idle: init is alive, nothing ran.
    assert!(paddock_sys::process::pid_exists(pid));
    assert_eq!(std::fs::read_dir(&ws).unwrap().count(), 0);
    let mut cmd = command("echo \"$GREETING\" > f; cat f; pwd; echo $$");
    cmd.env.push(("GREETING".into(), "hello later".into()));
    cmd.cwd = "/tmp".into();
    let (out, err, st) = collect(pending.start(&cmd.encode().unwrap()).unwrap());
    assert_eq!(
        st,
        Some(StatusRecord::ShellExited(WaitStatus::Exited(0))),
        "stderr: {err}"
    );
    assert_eq!(out, "hello later\n/tmp\n2\n");
}

#[test]
fn an_abandoned_jail_is_killed_and_reaped() {
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(&tmp);
    let pending = build(&spec_for(&ws, NetMode::PerExec)).unwrap();
    let pid = pending.init().unwrap().pid();
    assert!(paddock_sys::process::pid_exists(pid));
    drop(pending);
    // Reaped, not a zombie: the pid is gone.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn a_command_sent_to_a_dead_jail_is_an_error() {
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(&tmp);
    let pending = build(&spec_for(&ws, NetMode::PerExec)).unwrap();
    pending.init().unwrap().kill().unwrap();
    let msg = command("true").encode().unwrap();
    // The kill lands asynchronously; once init is gone the pipe has no reader.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let e = pending.start(&msg).unwrap_err();
    assert!(e.to_string().contains("send the command"), "{e}");
}

#[test]
fn commands_larger_than_a_pipe_buffer_arrive_whole() {
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(&tmp);
    // 100 KiB of script (execve allows 128 KiB per argument), plus a large environment.
    let filler = "x".repeat(100 * 1024);
    let mut cmd = command(&format!(": {filler}; echo ${{#BIG}}"));
    cmd.env.push(("BIG".into(), "y".repeat(60 * 1024)));
    let (out, err, st) = collect(spawn(&spec_for(&ws, NetMode::PerExec), &cmd).unwrap());
    assert_eq!(
        st,
        Some(StatusRecord::ShellExited(WaitStatus::Exited(0))),
        "{err}"
    );
    assert_eq!(out, "61440\n");
}

#[test]
fn commands_are_checked_before_they_are_sent() {
    let mut c = command("true");
    c.argv.push("a\0b".into());
    assert!(matches!(
        c.encode(),
        Err(SpawnError::Nul { what: "command" })
    ));
    let mut c = command("true");
    c.env.push(("K".into(), "v\0".into()));
    assert!(matches!(
        c.encode(),
        Err(SpawnError::Nul {
            what: "environment"
        })
    ));
    let mut c = command("true");
    c.argv.clear();
    assert!(matches!(c.encode(), Err(SpawnError::TooLarge { .. })));
    let mut c = command("true");
    c.env = (0..=COMMAND_MAX_ENV)
        .map(|i| (format!("K{i}"), String::new()))
        .collect();
    assert!(matches!(c.encode(), Err(SpawnError::TooLarge { .. })));
    let c = command(&"z".repeat(COMMAND_MAX_BYTES));
    assert!(matches!(c.encode(), Err(SpawnError::TooLarge { .. })));
    // The wire form: header then cwd, argv, env, each NUL-terminated.
    let e = command("true").encode().unwrap();
    let b = e.as_bytes();
    let body = b"/mnt/user-data/workspace\0sh\0-c\0true\0PATH=/usr/bin:/bin\0";
    assert_eq!(&b[12..], body);
    assert_eq!(
        u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
        body.len()
    );
    assert_eq!(u32::from_ne_bytes(b[4..8].try_into().unwrap()), 3);
    assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 1);
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

/// Our cgroup v2 directory (the cgroup2 mount point joined with our `0::` path), if this
/// host mounts cgroup2 at all.
fn own_v2_dir() -> Option<std::path::PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let point = mi.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let dash = f.iter().position(|x| *x == "-")?;
        (f.get(dash + 1) == Some(&"cgroup2")).then(|| f[4].to_owned())
    })?;
    let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let ours = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(std::path::Path::new(&point).join(ours.trim_start_matches('/')))
}

#[test]
fn init_is_created_inside_its_v2_cgroup() {
    if !supported() {
        return;
    }
    let Some(own) = own_v2_dir() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI hosts mount cgroup2"
        );
        eprintln!("SKIPPED: no cgroup2 mount");
        return;
    };
    if paddock_sys::process::euid() != 0 {
        eprintln!("SKIPPED: creating a cgroup here needs root");
        return;
    }
    // No controller is needed to observe membership, so this runs on hybrid hosts too.
    let dir = own.join(format!("paddock-test-into-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(&tmp);
    let mut spec = spec_for(&ws, NetMode::PerExec);
    spec.cgroup.clone_into = Some(dir.clone());
    let child = spawn(&spec, &command("sleep 0.2; echo done")).unwrap();
    let init = child.init.pid();
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    let own_rel = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    let (out, _, st) = collect(child);
    assert_eq!(st, Some(StatusRecord::ShellExited(WaitStatus::Exited(0))));
    assert_eq!(out, "done\n");
    assert!(
        paddock_sys::cgroup::parse_procs(&procs).contains(&(init as u32)),
        "init {init} not in {}: {procs:?}",
        dir.display()
    );
    assert!(
        own_rel.lines().any(|l| l.starts_with("0::")
            && l.ends_with(&format!("/paddock-test-into-{}", std::process::id()))),
        "{own_rel}"
    );
    std::fs::remove_dir(&dir).unwrap();
}

/// Pids of `pid`'s children (from the host's view).
fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The pid of the shell waiting in the jail of `init` (its child running the placeholder).
fn waiting_shell_of(init: i32) -> i32 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if let Some(&k) = children_of(init).first() {
            let cmdline = std::fs::read(format!("/proc/{k}/cmdline")).unwrap_or_default();
            if cmdline.windows(14).any(|w| w == b"PADDOCK-ZYGOTE") {
                return k;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no waiting shell");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// What a command prints about the shell it runs in; the last line says whether the shell
/// preload is mapped into it.
const SHELL_PROBE: &str = "echo \"$0|$#|$GREETING|$(pwd)|$$\"; \
    tr '\\0' '\\n' < /proc/$$/cmdline | grep -c .; tr '\\0' '\\n' < /proc/$$/cmdline | head -3; \
    env | sort; ls /proc/$$/fd > /tmp/fds; tr '\\n' ' ' < /tmp/fds; echo; \
    grep -c shell-preload /proc/$$/maps || true";

fn split_probe(out: &str) -> (String, u32) {
    let (body, last) = out.trim_end().rsplit_once('\n').unwrap();
    (body.to_owned(), last.parse().unwrap())
}

#[test]
fn a_waiting_shell_runs_its_command_as_a_fresh_shell_would() {
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(&tmp);
    let pending = build(&waiting_spec(&ws)).unwrap();
    // The shell is up before the command, with the placeholder as its script.
    let shell = waiting_shell_of(pending.init().unwrap().pid());
    let mut cmd = command(SHELL_PROBE);
    cmd.env.push(("GREETING".into(), "hello later".into()));
    cmd.cwd = "/tmp".into();
    let (out, err, st) = collect(pending.start(&cmd.encode().unwrap()).unwrap());
    assert_eq!(
        st,
        Some(StatusRecord::ShellExited(WaitStatus::Exited(0))),
        "stderr: {err}"
    );
    assert!(!std::path::Path::new(&format!("/proc/{shell}")).exists());
    let (waiting, mapped) = split_probe(&out);
    assert!(
        mapped > 0,
        "the command did not run in the waiting shell: {out}"
    );
    // The same command in a jail that starts its shell on demand sees the same.
    let (out, err, _) = collect(spawn(&spec_for(&ws, NetMode::PerExec), &cmd).unwrap());
    let (fresh, mapped) = split_probe(&out);
    assert_eq!(mapped, 0, "{err}");
    assert_eq!(waiting, fresh);
    assert!(
        waiting.starts_with("sh|0|hello later|/tmp|2\n3\nsh\n-c\necho "),
        "{waiting}"
    );
    assert!(waiting.contains("\nGREETING=hello later\n"), "{waiting}");
    assert!(!waiting.contains("PADDOCK"), "{waiting}");
    assert!(!waiting.contains("LD_PRELOAD"), "{waiting}");
    // The preload's descriptors are closed before the shell's main.
    let fds = waiting.lines().last().unwrap();
    assert!(
        fds.starts_with("0 1 ") && !fds.split(' ').any(|f| f == "3" || f == "4"),
        "{fds}"
    );
}

#[test]
fn a_waiting_shell_execs_commands_that_do_not_fit_it() {
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(&tmp);
    let big = format!(": {}; {SHELL_PROBE}", "x".repeat(40 * 1024));
    let mut cases: Vec<(&str, JailCommand)> = Vec::new();
    let mut c = command(SHELL_PROBE);
    c.env.push(("LD_LIBRARY_PATH".into(), "/nowhere".into()));
    cases.push(("a variable the loader reads", c));
    let mut c = command(SHELL_PROBE);
    c.env
        .push(("GLIBC_TUNABLES".into(), "glibc.malloc.check=0".into()));
    cases.push(("a tunable", c));
    cases.push(("a command larger than the placeholder", command(&big)));
    let mut c = command(SHELL_PROBE);
    c.env
        .extend((0..200).map(|i| (format!("V{i}"), "v".into())));
    cases.push(("more variables than slots", c));
    let mut c = command(SHELL_PROBE);
    c.env.push(("HUGE".into(), "h".repeat(32 * 1024)));
    cases.push(("more environment than the padding", c));
    let mut c = command(SHELL_PROBE);
    c.argv.extend(["name".into(), "arg".into()]);
    cases.push(("more arguments", c));
    for (what, cmd) in cases {
        let (out, err, st) = collect(
            build(&waiting_spec(&ws))
                .unwrap()
                .start(&cmd.encode().unwrap())
                .unwrap(),
        );
        assert_eq!(
            st,
            Some(StatusRecord::ShellExited(WaitStatus::Exited(0))),
            "{what}: {err}"
        );
        let (waiting, mapped) = split_probe(&out);
        assert_eq!(mapped, 0, "{what}: the preload stayed in the shell");
        let (out, _, _) = collect(spawn(&spec_for(&ws, NetMode::PerExec), &cmd).unwrap());
        assert_eq!(waiting, split_probe(&out).0, "{what}");
    }
}

#[test]
fn a_waiting_shell_reports_a_missing_cwd_as_a_setup_error() {
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(&tmp);
    let mut cmd = command("echo ran");
    cmd.cwd = "/mnt/user-data/workspace/missing".into();
    let want = Some(StatusRecord::SetupFailed {
        step: paddock_sys::jail::Step::Cwd,
        errno: libc::ENOENT,
    });
    let (out, _, st) = collect(
        build(&waiting_spec(&ws))
            .unwrap()
            .start(&cmd.encode().unwrap())
            .unwrap(),
    );
    assert_eq!((out.as_str(), st), ("", want));
    let (out, _, st) = collect(spawn(&spec_for(&ws, NetMode::PerExec), &cmd).unwrap());
    assert_eq!((out.as_str(), st), ("", want));
}

#[test]
fn an_abandoned_waiting_jail_is_killed_with_its_shell() {
    if !supported() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(&tmp);
    let pending = build(&waiting_spec(&ws)).unwrap();
    let init = pending.init().unwrap().pid();
    let shell = waiting_shell_of(init);
    drop(pending);
    assert!(!std::path::Path::new(&format!("/proc/{init}")).exists());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{shell}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the shell outlived its jail"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn only_dynamically_linked_programs_take_the_preload() {
    assert!(takes_preload(std::path::Path::new("/bin/sh")));
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("script");
    std::fs::write(&script, "#!/bin/sh\ntrue\n").unwrap();
    assert!(!takes_preload(&script));
    assert!(!takes_preload(&tmp.path().join("missing")));
    // A static executable ignores LD_PRELOAD (Debian's ldconfig is one).
    let ldconfig = std::path::Path::new("/sbin/ldconfig");
    if ldconfig.exists() {
        assert!(!takes_preload(ldconfig));
    }
}
