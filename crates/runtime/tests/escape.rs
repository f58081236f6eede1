//! The escape suite: every test runs the REAL isolated runtime and attacks it from inside a
//! sandbox, then checks — from the host where it matters — that the attack was stopped.
//! Needs the kernel features `paddock doctor` lists as required; skips loudly without them
//! (and fails under CI=true).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::*;
use paddock_core::sandbox::{ExecRequest, ReadText};
use paddock_core::{Sandbox, ThreadId, UserId};
use paddock_runtime::{Limits, LocalProvider, RuntimeOptions};

/// Runs a raw syscall inside the sandbox with python's ctypes; returns (result, errno).
async fn syscall(sb: &paddock_runtime::LocalSandbox, nr: i64, args: &str) -> (i64, i32) {
    let cmd = format!(
        "python3 -c 'import ctypes; l=ctypes.CDLL(None, use_errno=True); l.syscall.restype=ctypes.c_long; r=l.syscall({nr}{args}); print(r, ctypes.get_errno())'"
    );
    let o = run(sb, &cmd).await;
    let mut it = o.stdout.split_whitespace();
    let r = it.next().and_then(|s| s.parse().ok());
    let e = it.next().and_then(|s| s.parse().ok());
    match (r, e) {
        (Some(r), Some(e)) => (r, e),
        _ => panic!(
            "syscall probe failed: stdout={:?} stderr={:?}",
            o.stdout, o.stderr
        ),
    }
}

macro_rules! need {
    () => {
        if !isolated_supported() {
            return;
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etc_shadow_is_unreadable() {
    need!();
    let e = env();
    let sb = e.sandbox("shadow").await;
    let host = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    let o = run(&sb, "cat /etc/shadow; echo rc=$?").await;
    assert!(o.stdout.ends_with("rc=1\n"), "{o:?}");
    assert!(o.stderr.contains("Permission denied"), "{o:?}");
    if let Some(line) = host.lines().next() {
        assert!(!o.stdout.contains(line));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_root_home_is_absent() {
    need!();
    let e = env();
    let sb = e.sandbox("roothome").await;
    let o = run(&sb, "ls -a /root; ls /; echo rc=$?").await;
    assert!(o.stderr.contains("No such file"), "{o:?}");
    for name in ["root", "home", "var", "work", "boot", "srv", "sys"] {
        assert!(
            !o.stdout.lines().any(|l| l == name),
            "/{name} visible: {}",
            o.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_threads_data_by_host_path_and_by_guessing() {
    need!();
    let e = env();
    let victim = e.sandbox("victim").await;
    run(&victim, "echo TOP-SECRET-42 > secret.txt").await;
    let host_path = e
        .dir
        .path()
        .join("users/default/threads/victim/user-data/workspace/secret.txt");
    assert!(host_path.exists());
    let attacker = e.sandbox("attacker").await;
    let cmd = format!(
        "cat {p}; cat /mnt/user-data/../../users/default/threads/victim/user-data/workspace/secret.txt; \
         ls /mnt; grep -rs TOP-SECRET / --exclude-dir=proc 2>/dev/null; echo done",
        p = host_path.display()
    );
    let o = run_t(&attacker, &cmd, 60.0).await;
    assert!(!o.stdout.contains("TOP-SECRET-42"), "{o:?}");
    assert!(o.stdout.ends_with("done\n"));
    let mnt: Vec<&str> = o
        .stdout
        .lines()
        .filter(|l| ["acp-workspace", "skills", "user-data"].contains(l))
        .collect();
    assert_eq!(mnt, ["acp-workspace", "skills", "user-data"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_environment_of_pid1_does_not_leak() {
    need!();
    let e = env();
    let sb = e.sandbox("environ").await;
    let o = run(&sb, "cat /proc/1/environ; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; cat /proc/1/maps | head -1; echo end").await;
    // The test binary runs under cargo, which exports CARGO_* to it; none may show up.
    assert!(!o.stdout.contains("CARGO"), "{}", o.stdout);
    assert!(o.stderr.contains("Permission denied"), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_directories_are_read_only() {
    need!();
    let e = env();
    let sb = e.sandbox("rosys").await;
    let before = std::fs::read("/etc/passwd").unwrap();
    for target in ["/usr/pwned", "/etc/pwned", "/pwned", "/bin/pwned"] {
        let o = run(&sb, &format!("echo x > {target}; echo rc=$?")).await;
        assert!(o.stdout.contains("rc=1"), "{target}: {o:?}");
        assert!(
            o.stderr.contains("Read-only file system"),
            "{target}: {o:?}"
        );
        assert!(!std::path::Path::new(target).exists());
    }
    let o = run(&sb, "echo evil::0:0::/:/bin/sh >> /etc/passwd; echo rc=$?").await;
    assert!(o.stdout.contains("rc=1"));
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_mounts_refuse_writes() {
    need!();
    let e = env();
    let sb = e.sandbox("romounts").await;
    for target in [
        "/mnt/skills/x",
        "/mnt/skills/custom/x",
        "/mnt/acp-workspace/x",
    ] {
        let o = run(&sb, &format!("touch {target}; echo rc=$?")).await;
        assert!(o.stdout.contains("rc=1"), "{target}: {o:?}");
    }
    assert!(!e.dir.path().join("skills/x").exists());
    assert!(
        !e.dir
            .path()
            .join("users/default/threads/romounts/acp-workspace/x")
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_cannot_reach_the_host() {
    need!();
    let e = env();
    let victim = e.sandbox("symvictim").await;
    run(&victim, "echo SYMLINK-SECRET > s").await;
    let victim_dir = e
        .dir
        .path()
        .join("users/default/threads/symvictim/user-data/workspace");
    let sb = e.sandbox("symattacker").await;
    let cmd = format!(
        "ln -s {v} v; ln -s /etc/shadow shadow; ln -s / root; cat v/s; cat shadow; ls root/ | head -50; echo end",
        v = victim_dir.display()
    );
    let o = run(&sb, &cmd).await;
    assert!(!o.stdout.contains("SYMLINK-SECRET"), "{o:?}");
    // The file API interprets the links in the virtual namespace and refuses to follow them out.
    for p in [
        "/mnt/user-data/workspace/shadow",
        "/mnt/user-data/workspace/v/s",
    ] {
        let r = sb.read_text(ReadText::new(p)).await;
        assert!(r.is_err(), "{p} was readable through a symlink: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounted_directories_cannot_be_swapped_for_symlinks() {
    // The thread's directories are mount points inside the jail, so the agent cannot
    // remove or rename them: were /mnt/user-data/workspace a symlink on the host, the next
    // sandbox's mount table would follow it, and its target would become the root the
    // host-side file API resolves beneath.
    need!();
    let e = env();
    let victim = e.sandbox("swapvictim").await;
    run(&victim, "echo SWAP-SECRET > secret.txt").await;
    let victim_ws = e
        .dir
        .path()
        .join("users/default/threads/swapvictim/user-data/workspace");
    let sb = e.sandbox("swapper").await;
    let cmd = format!(
        "cd /; for d in workspace uploads outputs; do \
           rm -rf /mnt/user-data/$d; mv /mnt/user-data/$d /mnt/user-data/$d.old; \
           ln -sfn {v} /mnt/user-data/$d; done; echo end",
        v = victim_ws.display()
    );
    let o = run(&sb, &cmd).await;
    assert!(o.stdout.ends_with("end\n"), "{o:?}");
    let user_data = e.dir.path().join("users/default/threads/swapper/user-data");
    for d in ["workspace", "uploads", "outputs"] {
        let md = std::fs::symlink_metadata(user_data.join(d)).unwrap();
        assert!(md.is_dir(), "{d} was replaced: {md:?} ({o:?})");
        assert!(
            !user_data.join(format!("{d}.old")).exists(),
            "{d} was renamed"
        );
    }
    // A fresh sandbox of the same thread (a new provider prepares it anew) still sees its own.
    drop(sb);
    let again = LocalProvider::new(e.dir.path(), RuntimeOptions::default(), Vec::new()).unwrap();
    let sb = again
        .acquire(&UserId::default(), &ThreadId::new("swapper").unwrap())
        .await
        .unwrap();
    let o = run(
        &sb,
        "cat /mnt/user-data/workspace/secret.txt; ls /mnt/user-data/workspace",
    )
    .await;
    assert!(!o.stdout.contains("SWAP-SECRET"), "{o:?}");
    let r = sb
        .read_text(ReadText::new("/mnt/user-data/workspace/secret.txt"))
        .await;
    assert!(r.is_err(), "the file API reached another thread: {r:?}");
    again.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_loopback_is_unreachable() {
    need!();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let e = env();
    let sb = e.sandbox("net").await;
    let o = run(
        &sb,
        &format!("echo hi > /dev/tcp/127.0.0.1/{port}; echo rc=$?"),
    )
    .await;
    assert!(o.stdout.contains("rc=1"), "{o:?}");
    assert!(o.stderr.contains("Connection refused"), "{o:?}");
    assert!(
        listener.accept().is_err(),
        "the host listener got a connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_loopback_exists() {
    need!();
    let e = env();
    let sb = e.sandbox("ifaces").await;
    let o = run(&sb, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").await;
    assert_eq!(o.stdout, "lo\n", "{o:?}");
    // And loopback works inside.
    let o = run(&sb, "python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\",0)); s.listen(); c=socket.create_connection(s.getsockname()); print(\"ok\")'").await;
    assert_eq!(o.stdout, "ok\n", "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_processes_cannot_be_killed_or_traced() {
    need!();
    let mut victim = std::process::Command::new("sleep")
        .arg("120")
        .spawn()
        .unwrap();
    let pid = victim.id();
    let e = env();
    let sb = e.sandbox("killer").await;
    let o = run(
        &sb,
        &format!("kill -9 {pid}; echo rc=$?; ls /proc | grep -c '^[0-9]'"),
    )
    .await;
    assert!(o.stdout.starts_with("rc=1"), "{o:?}");
    let (r, errno) = syscall(&sb, 101, &format!(", 16, {pid}, 0, 0")).await; // PTRACE_ATTACH
    assert_eq!((r, errno), (-1, libc::EPERM));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the host process died"
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_and_namespace_syscalls_are_refused() {
    need!();
    let e = env();
    let sb = e.sandbox("mount").await;
    let o = run(
        &sb,
        "mkdir -p /tmp/m; mount -t tmpfs none /tmp/m; echo rc=$?",
    )
    .await;
    assert!(
        o.stdout.contains("rc=32") || o.stdout.contains("rc=1"),
        "{o:?}"
    );
    let o = run(
        &sb,
        "unshare -U true; echo rc=$?; unshare -Ur id; echo rc=$?",
    )
    .await;
    assert!(!o.stdout.contains("rc=0"), "{o:?}");
    // Raw: mount(2), unshare(CLONE_NEWUSER), setns, pivot_root.
    assert_eq!(
        syscall(
            &sb,
            libc::SYS_mount,
            ", b\"none\", b\"/tmp\", b\"tmpfs\", 0, 0"
        )
        .await,
        (-1, libc::EPERM)
    );
    assert_eq!(
        syscall(
            &sb,
            libc::SYS_unshare,
            &format!(", {}", libc::CLONE_NEWUSER)
        )
        .await,
        (-1, libc::EPERM)
    );
    assert_eq!(
        syscall(&sb, libc::SYS_setns, ", 0, 0").await,
        (-1, libc::EPERM)
    );
    assert_eq!(
        syscall(&sb, libc::SYS_pivot_root, ", b\"/tmp\", b\"/tmp\"").await,
        (-1, libc::EPERM)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_attack_surface_syscalls_are_refused() {
    need!();
    let e = env();
    let sb = e.sandbox("syscalls").await;
    for (name, nr, args) in [
        ("bpf", libc::SYS_bpf, ", 0, 0, 0"),
        ("keyctl", libc::SYS_keyctl, ", 0, 0, 0, 0, 0"),
        ("userfaultfd", libc::SYS_userfaultfd, ", 0"),
        ("io_uring_setup", libc::SYS_io_uring_setup, ", 1, 0"),
        (
            "perf_event_open",
            libc::SYS_perf_event_open,
            ", 0, 0, -1, -1, 0",
        ),
        ("init_module", libc::SYS_init_module, ", 0, 0, 0"),
        (
            "open_by_handle_at",
            libc::SYS_open_by_handle_at,
            ", 0, 0, 0",
        ),
    ] {
        assert_eq!(syscall(&sb, nr, args).await, (-1, libc::EPERM), "{name}");
    }
    // clone3 answers ENOSYS (libc falls back to clone); the x32 ABI is refused outright.
    assert_eq!(
        syscall(&sb, libc::SYS_clone3, ", 0, 0").await,
        (-1, libc::ENOSYS)
    );
    assert_eq!(syscall(&sb, 0x4000_0000 + 39, "").await, (-1, libc::ENOSYS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_nodes_cannot_be_made() {
    need!();
    let e = env();
    let sb = e.sandbox("mknod").await;
    let o = run(&sb, "mknod /tmp/mem c 1 1; echo rc=$?; ls /dev").await;
    assert!(o.stdout.contains("rc=1"), "{o:?}");
    for forbidden in ["mem", "kmem", "sda", "vda", "kmsg"] {
        assert!(
            !o.stdout.lines().any(|l| l == forbidden),
            "/dev/{forbidden} exists"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_is_contained() {
    need!();
    let opts = RuntimeOptions {
        limits: Limits {
            pids: 64,
            ..Limits::default()
        },
        ..RuntimeOptions::default()
    };
    let e = env_with(opts);
    let sb = e.sandbox("bomb").await;
    let start = Instant::now();
    let o = run_t(&sb, "bomb() { bomb | bomb & }; bomb; sleep 3", 5.0).await;
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
    assert!(o.exit.timed_out || o.exit.exit_code.is_some());
    // The bomb lives on as background jobs of the sandbox, but never beyond the pids limit.
    let init = sb.running()[0];
    let ns = paddock_sys::process::pid_namespace_inode(init).unwrap();
    let count = paddock_sys::process::pids_in_pid_namespace(ns).len();
    // The jail's init is Paddock's, not the command's: it is not counted against the limit.
    assert!(count <= 64 + 1, "{count} processes in the sandbox");
    // The host is responsive.
    let t = Instant::now();
    assert!(
        std::process::Command::new("true")
            .status()
            .unwrap()
            .success()
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    // And a reset kills every one of them.
    sb.kill_all();
    let gone = Instant::now();
    while !paddock_sys::process::pids_in_pid_namespace(ns).is_empty()
        && gone.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        paddock_sys::process::pids_in_pid_namespace(ns).is_empty(),
        "the bomb survived kill_all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_is_oom_killed_and_reported() {
    need!();
    let opts = RuntimeOptions {
        limits: Limits {
            memory_bytes: 64 << 20,
            ..Limits::default()
        },
        ..RuntimeOptions::default()
    };
    let e = env_with(opts);
    let sb = e.sandbox("hog").await;
    let o = run_t(
        &sb,
        "python3 -c 'x = bytearray(400 * 1024 * 1024); print(len(x))'",
        60.0,
    )
    .await;
    assert!(!o.stdout.contains("419430400"), "{o:?}");
    let memory_cgroup =
        paddock_sys::probe::probe_cgroup(paddock_sys::cgroup::Controller::Memory).is_ok();
    if memory_cgroup {
        assert!(o.exit.oom_killed, "{o:?}");
        assert_eq!(o.exit.shell_status(), 137, "{o:?}");
    } else {
        assert!(o.stderr.contains("MemoryError"), "{o:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmp_fills_up_without_touching_the_host() {
    need!();
    let opts = RuntimeOptions {
        limits: Limits {
            tmp_size_bytes: 16 << 20,
            ..Limits::default()
        },
        ..RuntimeOptions::default()
    };
    let e = env_with(opts);
    let sb = e.sandbox("diskfill").await;
    let o = run_t(
        &sb,
        "dd if=/dev/zero of=/tmp/fill bs=1M count=64; echo rc=$?; du -sm /tmp",
        60.0,
    )
    .await;
    assert!(o.stderr.contains("No space left on device"), "{o:?}");
    assert!(!std::path::Path::new("/tmp/fill").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_of_output_is_capped_in_bounded_time() {
    need!();
    let e = env();
    let sb = e.sandbox("flood").await;
    let start = Instant::now();
    let o = run_t(&sb, "head -c 1073741824 /dev/zero", 120.0).await;
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(o.exit.exit_code, Some(0));
    assert!(o.stdout_truncated);
    assert_eq!(o.exit.stdout_dropped, (1 << 30) - (10 << 20));
    assert!(o.stdout.ends_with(
        "[output truncated after 10485760 of 1073741824 bytes; remaining output discarded] ..."
    ));
}

fn processes_with_cmdline(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let mut s = String::new();
            std::fs::File::open(e.path().join("cmdline"))
                .ok()?
                .read_to_string(&mut s)
                .ok()?;
            (s.replace('\0', " ").trim() == needle).then_some(pid)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setsid_children_die_at_the_timeout() {
    need!();
    let e = env();
    let sb = e.sandbox("setsid").await;
    let o = run_t(
        &sb,
        "setsid sleep 4101 & setsid -f sleep 4102; nohup sleep 4103 >/dev/null 2>&1 & sleep 60",
        1.0,
    )
    .await;
    assert!(o.exit.timed_out);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in ["sleep 4101", "sleep 4102", "sleep 4103"] {
        assert!(processes_with_cmdline(n).is_empty(), "{n} survived");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_job_returns_promptly() {
    need!();
    let e = env();
    let sb = e.sandbox("bg").await;
    let start = Instant::now();
    let o = run(&sb, "sleep 4201 & echo started").await;
    assert_eq!(o.stdout, "started\n");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(processes_with_cmdline("sleep 4201").len(), 1);
    sb.kill_all();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(processes_with_cmdline("sleep 4201").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_is_reported() {
    need!();
    let e = env();
    let sb = e.sandbox("timeout").await;
    let o = run_t(&sb, "echo before; sleep 30", 0.5).await;
    assert!(o.exit.timed_out);
    assert_eq!(o.exit.signal, Some(9));
    assert_eq!(o.exit.exit_code, None);
    assert_eq!(o.exit.shell_status(), 124);
    assert_eq!(o.stdout, "before\n");
    assert!(
        o.exit.duration_ms >= 500 && o.exit.duration_ms < 5000,
        "{}",
        o.exit.duration_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_is_isolated() {
    need!();
    let e = env();
    let sb = e.sandbox("uts").await;
    let o = run(&sb, "hostname; hostname evil; echo rc=$?").await;
    assert!(o.stdout.starts_with("sandbox\n"), "{o:?}");
    assert!(o.stdout.contains("rc=1"), "{o:?}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(host.trim(), "evil");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_are_all_zero() {
    need!();
    let e = env();
    let sb = e.sandbox("caps").await;
    let o = run(&sb, "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status").await;
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{o:?}");
    for l in lines {
        assert!(l.ends_with("0000000000000000"), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_new_privs_is_set() {
    need!();
    let e = env();
    let sb = e.sandbox("nnp").await;
    let o = run(&sb, "grep NoNewPrivs /proc/self/status").await;
    assert_eq!(o.stdout, "NoNewPrivs:\t1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seccomp_filter_is_active() {
    need!();
    let e = env();
    let sb = e.sandbox("seccomp").await;
    let o = run(&sb, "grep -E '^Seccomp:' /proc/self/status").await;
    assert_eq!(o.stdout, "Seccomp:\t2\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landlock_denies_writes_outside_the_writable_mounts() {
    need!();
    if paddock_sys::landlock::kernel_abi() < 1 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "landlock is expected in CI"
        );
        eprintln!("SKIPPED: no landlock on this kernel");
        return;
    }
    let e = env();
    let sb = e.sandbox("landlock").await;
    // /proc/self/comm is writable by its owner as far as DAC and mount flags go; only the
    // landlock ruleset (read-only beneath /) refuses it.
    let o = run(&sb, "echo renamed > /proc/self/comm; echo rc=$?; echo ok > /mnt/user-data/workspace/w; echo rc=$?").await;
    assert!(o.stdout.starts_with("rc=1\nrc=0\n"), "{o:?}");
    assert!(o.stderr.contains("Permission denied"), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_cannot_kill_or_stop_the_jail_s_init() {
    need!();
    let e = env();
    let sb = e.sandbox("init-signals").await;
    // The commands share init's landlock domain (so they may signal each other), but init
    // is pid 1 of the sandbox's pid namespace: the kernel drops signals from inside the
    // namespace that init has no handler for, SIGKILL and SIGSTOP included.
    let o = run(
        &sb,
        "echo kept > /tmp/mark; for s in KILL STOP TERM INT HUP QUIT SEGV USR1; do kill -$s 1; done; sleep 0.2; echo sent",
    )
    .await;
    assert_eq!(o.stdout, "sent\n", "{o:?}");
    // The same jail (its /tmp) still serves the next command.
    let o = run(&sb, "cat /tmp/mark; grep -E '^State:' /proc/1/status").await;
    assert!(o.stdout.starts_with("kept\nState:\tS"), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_as_an_unprivileged_host_uid() {
    need!();
    let e = env();
    let sb = e.sandbox("uid").await;
    let o = run(&sb, "id -u; sleep 30 & echo $!; sleep 0.2").await;
    let mut lines = o.stdout.lines();
    let inner: u32 = lines.next().unwrap().parse().unwrap();
    let (uid, _) = sb.host_ids();
    assert_eq!(inner, uid);
    assert_ne!(uid, 0);
    // Seen from the host, every process of the sandbox runs as that uid.
    let init = sb.running()[0];
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|x| x == uid.to_string()),
        "{uid_line}"
    );
    sb.kill_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cwd_outside_the_mounts_is_refused() {
    need!();
    let e = env();
    let sb = e.sandbox("cwd").await;
    let mut r = ExecRequest::new("pwd");
    r.cwd = Some("/etc".into());
    let err = sb.exec(r).await.unwrap_err();
    assert_eq!(err.code(), "invalid_argument");
    let mut r = ExecRequest::new("pwd");
    r.cwd = Some("/mnt/user-data/../../etc".into());
    assert!(sb.exec(r).await.is_err());
    let mut r = ExecRequest::new("pwd");
    r.env.insert("BAD-NAME".into(), "x".into());
    assert_eq!(sb.exec(r).await.unwrap_err().code(), "invalid_argument");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_of_different_threads_do_not_see_each_other() {
    need!();
    let e = env();
    let a = e.sandbox("pa").await;
    let b = e
        .provider
        .acquire(
            &UserId::new("other-user").unwrap(),
            &ThreadId::new("pb").unwrap(),
        )
        .await
        .unwrap();
    let o = run(&b, "sleep 4301 & sleep 0.1; echo up").await;
    assert_eq!(o.stdout, "up\n");
    let o = run(&a, "ps -eo args 2>/dev/null || ls /proc").await;
    assert!(!o.stdout.contains("4301"), "{o:?}");
    b.kill_all();
}
