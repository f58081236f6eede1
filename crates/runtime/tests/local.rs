//! The isolated runtime end to end: exec semantics, streaming, limits, provider behaviour.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use paddock_core::sandbox::{ExecEvent, ExecRequest, ReadText, WriteText};
use paddock_core::{Sandbox, ThreadId, UserId};
use paddock_runtime::{LocalProvider, RuntimeOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_exec() {
    if !isolated_supported() {
        return;
    }
    let e = env();
    let sb = e.sandbox("t1").await;
    let o = run(&sb, "echo out; echo err >&2; pwd; exit 3").await;
    assert_eq!(o.stdout, "out\n/mnt/user-data/workspace\n");
    assert_eq!(o.stderr, "err\n");
    assert_eq!(o.exit.exit_code, Some(3));
    assert!(!o.exit.timed_out);
    let o = run(&sb, "kill -9 $$").await;
    assert_eq!(o.exit.signal, Some(9));
    assert_eq!(o.exit.shell_status(), 137);
    let mut r = ExecRequest::new("echo $FOO; echo $HOME; env | grep -c . ");
    r.env.insert("FOO".into(), "bar".into());
    let o = sb.exec(r).await.unwrap();
    assert!(
        o.stdout.starts_with("bar\n/mnt/user-data/workspace\n"),
        "{}",
        o.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_get_the_default_sigpipe() {
    if !isolated_supported() {
        return;
    }
    let e = env();
    let sb = e.sandbox("pipes").await;
    // A writer to a closed pipe dies of SIGPIPE, quietly, as outside any sandbox.
    let o = run(&sb, "yes | head -1; grep SigIgn /proc/self/status").await;
    let (first, ignored) = o.stdout.split_once("SigIgn:").expect("status line");
    assert_eq!(first, "y\n", "{o:?}");
    let mask = u64::from_str_radix(ignored.trim(), 16).unwrap();
    assert_eq!(
        mask & (1 << (libc::SIGPIPE - 1)),
        0,
        "SIGPIPE ignored: {mask:x}"
    );
    assert_eq!(o.stderr, "");
    assert_eq!(o.exit.exit_code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_with_nothing_running_is_not_busy() {
    if !isolated_supported() {
        return;
    }
    let e = env();
    let sb = e.sandbox("idle").await;
    let o = run(&sb, "echo done").await;
    assert_eq!(o.stdout, "done\n");
    // The jail stays (its init, a waiting shell), but nothing runs in it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sb.running().is_empty() {
        assert!(
            Instant::now() < deadline,
            "still running: {:?}",
            sb.running()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_written_by_commands_and_the_api_agree() {
    if !isolated_supported() {
        return;
    }
    let e = env();
    let sb = e.sandbox("t2").await;
    let o = run(
        &sb,
        "mkdir -p sub && echo from-shell > sub/a.txt && echo ok",
    )
    .await;
    assert_eq!(o.stdout, "ok\n", "{}", o.stderr);
    let t = sb
        .read_text(ReadText::new("/mnt/user-data/workspace/sub/a.txt"))
        .await
        .unwrap();
    assert_eq!(t.content, "from-shell\n");
    sb.write_text(WriteText {
        path: "/mnt/user-data/outputs/b.txt".into(),
        content: "api".into(),
        append: false,
    })
    .await
    .unwrap();
    let o = run(&sb, "cat /mnt/user-data/outputs/b.txt && echo more >> /mnt/user-data/outputs/b.txt && echo done").await;
    assert_eq!(o.stdout, "apidone\n", "{}", o.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_output_as_it_comes() {
    if !isolated_supported() {
        return;
    }
    let e = env();
    let sb = e.sandbox("t3").await;
    let start = Instant::now();
    let mut s = sb
        .exec_stream(ExecRequest::new("echo first; sleep 1; echo second"))
        .await
        .unwrap();
    let first = s.next().await.unwrap().unwrap();
    assert_eq!(
        first,
        ExecEvent::Stdout {
            data: "first\n".into()
        }
    );
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "first chunk arrived after {:?}",
        start.elapsed()
    );
    let mut rest = Vec::new();
    while let Some(ev) = s.next().await {
        rest.push(ev.unwrap());
    }
    assert!(matches!(rest.last(), Some(ExecEvent::Exit(x)) if x.exit_code == Some(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_namespace() {
    if !isolated_supported() {
        return;
    }
    let e = env();
    let sb = e.sandbox("t4").await;
    let start = Instant::now();
    let o = run_t(
        &sb,
        "setsid sleep 612300 & (sleep 612301 &) ; sleep 612302",
        1.0,
    )
    .await;
    assert!(o.exit.timed_out);
    assert_eq!(o.exit.shell_status(), 124);
    assert!(start.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sb.running().is_empty(), "init still registered");
    assert!(
        !sleepers(&["612300", "612301", "612302"]),
        "a sleep survived the timeout"
    );
}

fn sleepers(args: &[&str]) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| {
                let s = String::from_utf8_lossy(&c).replace('\0', " ");
                args.iter().any(|a| s.trim() == format!("sleep {a}"))
            })
            .unwrap_or(false)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_returns_promptly_and_dies_on_reset() {
    if !isolated_supported() {
        return;
    }
    let e = env();
    let sb = e.sandbox("t5").await;
    let start = Instant::now();
    let o = run(&sb, "sleep 612303 & echo started").await;
    assert_eq!(o.stdout, "started\n");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert!(sleepers(&["612303"]));
    // The jail's init and the background process.
    assert!(sb.running().len() >= 2, "{:?}", sb.running());
    drop(sb);
    e.provider.reset();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!sleepers(&["612303"]), "background process survived reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_capped_with_a_marker() {
    if !isolated_supported() {
        return;
    }
    let e = env();
    let sb = e.sandbox("t6").await;
    let mut r = ExecRequest::new("head -c 3000000 /dev/zero | tr '\\0' a");
    r.max_output_bytes = Some(1000);
    let o = sb.exec(r).await.unwrap();
    assert!(o.stdout_truncated);
    assert_eq!(o.exit.stdout_dropped, 3_000_000 - 1000);
    assert!(o.stdout.ends_with(
        "[output truncated after 1000 of 3000000 bytes; remaining output discarded] ..."
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_acquire_gives_one_sandbox() {
    if !isolated_supported() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let inits = Arc::new(AtomicUsize::new(0));
    let counter = inits.clone();
    let provider = Arc::new(
        LocalProvider::new(dir.path(), RuntimeOptions::default(), Vec::new())
            .unwrap()
            .with_init_hook(Arc::new(move |_, _| {
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(300));
            })),
    );
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let p = provider.clone();
        tasks.push(tokio::spawn(async move {
            p.acquire(&UserId::default(), &ThreadId::new("same").unwrap())
                .await
                .unwrap()
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await.unwrap());
    }
    assert_eq!(inits.load(Ordering::SeqCst), 1);
    assert!(all.iter().all(|s| Arc::ptr_eq(s, &all[0])));
    assert!(Arc::ptr_eq(
        &provider.get("local:default:same").unwrap(),
        &all[0]
    ));
    assert!(provider.get("local:default:other").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lru_evicts_without_losing_files() {
    if !isolated_supported() {
        return;
    }
    let opts = RuntimeOptions {
        max_cached_sandboxes: 2,
        ..RuntimeOptions::default()
    };
    let e = env_with(opts);
    let a = e.sandbox("a").await;
    run(&a, "echo keep > k").await;
    drop(a);
    e.sandbox("b").await;
    e.sandbox("c").await;
    assert_eq!(e.provider.cached(), 2);
    assert!(e.provider.get("local:default:a").is_none());
    let a = e.sandbox("a").await;
    assert_eq!(run(&a, "cat k").await.stdout, "keep\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_server_is_reachable_from_the_next_exec() {
    if !isolated_supported() {
        return;
    }
    if paddock_sys::process::euid() != 0 {
        eprintln!(
            "SKIPPED: a kept per-sandbox network needs root (each exec gets its own otherwise)"
        );
        return;
    }
    let e = env();
    let sb = e.sandbox("server").await;
    let o = run(
        &sb,
        "echo hello-from-server > index.html; python3 -m http.server 18080 --bind 127.0.0.1 >/dev/null 2>&1 & sleep 1; echo up",
    )
    .await;
    assert_eq!(o.stdout, "up\n");
    let o = run(&sb, "python3 -c 'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:18080/index.html\").read().decode().strip())'").await;
    assert_eq!(o.stdout, "hello-from-server\n", "{o:?}");
    // Another sandbox has its own loopback: the server is not there.
    let other = e.sandbox("client").await;
    let o = run(&other, "echo > /dev/tcp/127.0.0.1/18080; echo rc=$?").await;
    assert!(o.stdout.contains("rc=1"), "{o:?}");
    sb.kill_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_none_rewrites_and_masks_paths() {
    let opts = RuntimeOptions {
        isolation: paddock_runtime::Isolation::None,
        ..RuntimeOptions::default()
    };
    let e = env_with(opts);
    let sb = e.sandbox("hostmode").await;
    assert_eq!(sb.info().isolation, "none");
    let o = run(
        &sb,
        "echo hi > /mnt/user-data/workspace/f.txt; cat /mnt/user-data/workspace/f.txt; pwd",
    )
    .await;
    assert_eq!(o.stdout, "hi\n/mnt/user-data/workspace\n", "{o:?}");
    let host = e
        .dir
        .path()
        .join("users/default/threads/hostmode/user-data/workspace/f.txt");
    assert_eq!(std::fs::read_to_string(host).unwrap(), "hi\n");
    let o = run_t(&sb, "sleep 30", 0.5).await;
    assert!(o.exit.timed_out);
}

/// Host processes running as `uid` (the jails of one test's dedicated sandbox uid).
fn processes_of_uid(uid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let real = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next().map(str::to_owned));
        let zombie = status.lines().any(|l| l.starts_with("State:\tZ"));
        if real.as_deref() == Some(uid.to_string().as_str()) && !zombie {
            out.push(pid);
        }
    }
    out
}

/// How many clock ticks ago the jail's init started (measured against a process the
/// command starts): a prebuilt jail's init was waiting long before its command came.
const INIT_AGE: &str =
    "echo $(( $(cut -d' ' -f22 /proc/self/stat) - $(cut -d' ' -f22 /proc/1/stat) ))";
/// The same for the shell running the command (`prebuild_shell`).
const SHELL_AGE: &str =
    "echo $(( $(cut -d' ' -f22 /proc/self/stat) - $(cut -d' ' -f22 /proc/$$/stat) ))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jail_is_built_ahead_and_lives_as_long_as_the_sandbox() {
    if !isolated_supported() || paddock_sys::process::euid() != 0 {
        eprintln!("SKIPPED: needs root to run the sandbox as a dedicated uid");
        return;
    }
    let uid = 951_777;
    let e = env_with(RuntimeOptions {
        sandbox_uid: uid,
        sandbox_gid: uid,
        uid_range: None,
        ..RuntimeOptions::default()
    });
    let sb = e.sandbox("prebuilt").await;
    // Built when the sandbox was made: its init and a shell waiting for the first command,
    // neither of them a running command.
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_of_uid(uid).len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        processes_of_uid(uid).len(),
        2,
        "{:?}",
        processes_of_uid(uid)
    );
    assert!(sb.running().is_empty());
    let o = run(&sb, &format!("{INIT_AGE}; {SHELL_AGE}")).await;
    let ages: Vec<i64> = o.stdout.lines().map(|l| l.parse().unwrap()).collect();
    assert!(
        ages[0] >= 30 && ages[1] >= 30,
        "init and shell were {ages:?} ticks old: the jail was not built ahead"
    );
    // The environment, cwd and exit code are still the command's own.
    let mut r = ExecRequest::new("echo $FOO; pwd; exit 7");
    r.env.insert("FOO".into(), "per-exec".into());
    r.cwd = Some("/mnt/user-data/outputs".into());
    let o = sb.exec(r).await.unwrap();
    assert_eq!(o.stdout, "per-exec\n/mnt/user-data/outputs\n");
    assert_eq!(o.exit.exit_code, Some(7));
    // A command larger than a pipe buffer reaches the waiting shell whole; the jail's init
    // is the one built at the start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let filler = "x".repeat(100 * 1024);
    let o = run(&sb, &format!(": {filler}; {INIT_AGE}")).await;
    let age: i64 = o.stdout.trim().parse().unwrap();
    assert!(
        age >= 60,
        "init was {age} ticks old: not the sandbox's first"
    );
    // Reset kills the jail and everything in it.
    sb.kill_all();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_of_uid(uid).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(processes_of_uid(uid), Vec::<i32>::new());
    // The next command builds a fresh one.
    let age: i64 = run(&sb, INIT_AGE).await.stdout.trim().parse().unwrap();
    assert!(age < 30, "init was {age} ticks old after a reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_prebuilding_the_jail_is_built_by_the_first_command() {
    if !isolated_supported() {
        return;
    }
    let e = env_with(RuntimeOptions {
        prebuild_jail: false,
        ..RuntimeOptions::default()
    });
    let sb = e.sandbox("cold").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sb.init_pid().is_none(), "no jail before the first command");
    let age: i64 = run(&sb, INIT_AGE).await.stdout.trim().parse().unwrap();
    assert!(age < 30, "init was {age} ticks old");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let age: i64 = run(&sb, INIT_AGE).await.stdout.trim().parse().unwrap();
    assert!(age >= 40, "init was {age} ticks old: the jail did not last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmp_and_dev_shm_last_as_long_as_the_sandbox() {
    if !isolated_supported() {
        return;
    }
    let e = env();
    let sb = e.sandbox("tmp").await;
    let o = run(
        &sb,
        "echo kept > /tmp/warm_state.txt; echo shm > /dev/shm/s; echo ok",
    )
    .await;
    assert_eq!(o.stdout, "ok\n", "{o:?}");
    let o = run(&sb, "cat /tmp/warm_state.txt /dev/shm/s").await;
    assert_eq!(o.stdout, "kept\nshm\n", "{o:?}");
    // Another sandbox has its own.
    let other = e.sandbox("tmp-other").await;
    let o = run(&other, "cat /tmp/warm_state.txt 2>&1; echo rc=$?").await;
    assert!(o.stdout.contains("rc=1"), "{o:?}");
    // A reset gives a fresh /tmp.
    sb.kill_all();
    let o = run(&sb, "ls /tmp | wc -l").await;
    assert_eq!(o.stdout.trim(), "0", "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_pip_are_there_where_the_root_has_python3() {
    if !isolated_supported() {
        return;
    }
    if !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("SKIPPED: this host has no /usr/bin/python3");
        return;
    }
    let e = env();
    let sb = e.sandbox("py").await;
    let o = run(
        &sb,
        "python -c 'print(sum(range(100000)))'; command -v python",
    )
    .await;
    assert_eq!(o.exit.exit_code, Some(0), "{o:?}");
    let mut lines = o.stdout.lines();
    assert_eq!(lines.next(), Some("4999950000"));
    let found = lines.next().unwrap_or_default();
    assert!(
        found == "/.paddock/bin/python" || !found.starts_with("/.paddock"),
        "{found}"
    );
    let o = run(
        &sb,
        "command -v pip >/dev/null && echo has-pip || echo no-pip",
    )
    .await;
    let has_module = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import pip"])
        .status()
        .is_ok_and(|s| s.success());
    if has_module {
        assert_eq!(o.stdout, "has-pip\n", "{o:?}");
    }
}

/// What a command sees of the shell running it; the last line says whether the shell
/// preload is mapped into it (it is only in a prebuilt shell).
const SHELL_PROBE: &str = "echo \"$0|$#|$-|$BASH_EXECUTION_STRING|$PWD|$SHLVL|$PPID\"; \
    x=é; echo \"${#x} characters in $LANG\"; \
    tr '\\0' '\\n' < /proc/$$/cmdline | grep -c .; env | sort; \
    sh -c 'test $PPID = '$$' && echo the shell is its parent'; \
    grep -c shell-preload /proc/$$/maps || true";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prebuilt_shell_runs_commands_as_a_fresh_bash_would() {
    if !isolated_supported() {
        return;
    }
    let prebuilt = env();
    let fresh = env_with(RuntimeOptions {
        prebuild_shell: false,
        ..RuntimeOptions::default()
    });
    let (a, b) = (
        prebuilt.sandbox("shell-a").await,
        fresh.sandbox("shell-b").await,
    );
    // The first exec of a sandbox builds its jail on demand.
    run(&a, "true").await;
    run(&b, "true").await;
    let age: i64 = run(&a, SHELL_AGE).await.stdout.trim().parse().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let prebuilt_age: i64 = run(&a, SHELL_AGE).await.stdout.trim().parse().unwrap();
    let fresh_age: i64 = run(&b, SHELL_AGE).await.stdout.trim().parse().unwrap();
    assert!(
        prebuilt_age >= 30,
        "shell {prebuilt_age} ticks old (then {age})"
    );
    assert!(
        fresh_age < 30,
        "shell {fresh_age} ticks old without prebuild_shell"
    );
    let requests = || {
        let mut v = Vec::new();
        v.push(("plain", ExecRequest::new(SHELL_PROBE), true));
        let mut r = ExecRequest::new(SHELL_PROBE);
        r.env.insert("FOO".into(), "bar baz".into());
        r.cwd = Some("/mnt/user-data/outputs".into());
        v.push(("env and cwd", r, true));
        let mut r = ExecRequest::new(SHELL_PROBE);
        r.env.insert("LANG".into(), "C".into());
        v.push(("another locale", r, true));
        let mut r = ExecRequest::new(SHELL_PROBE);
        r.env.insert("LD_LIBRARY_PATH".into(), "/nowhere".into());
        v.push(("a loader variable", r, false));
        let mut r = ExecRequest::new(format!(": {}; {SHELL_PROBE}", "x".repeat(20 * 1024)));
        r.timeout_secs = Some(30.0);
        v.push(("a long command", r, false));
        v.push(("a syntax error", ExecRequest::new("echo ok; if then"), true));
        v.push(("a signal", ExecRequest::new("kill -9 $$"), true));
        v.push(("an exit code", ExecRequest::new("exit 42"), true));
        v
    };
    for (what, req, in_place) in requests() {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let x = a.exec(req.clone()).await.unwrap();
        let y = b.exec(req).await.unwrap();
        let strip = |s: &str| -> (String, Option<u32>) {
            match s.trim_end().rsplit_once('\n') {
                Some((body, last)) if last.parse::<u32>().is_ok() => {
                    (body.to_owned(), last.parse().ok())
                }
                _ => (s.to_owned(), None),
            }
        };
        let (xo, xm) = strip(&x.stdout);
        let (yo, ym) = strip(&y.stdout);
        assert_eq!(xo, yo, "{what}: stdout");
        assert_eq!(x.stderr, y.stderr, "{what}: stderr");
        assert_eq!(x.exit.exit_code, y.exit.exit_code, "{what}: exit code");
        assert_eq!(x.exit.signal, y.exit.signal, "{what}: signal");
        if let (Some(xm), Some(ym)) = (xm, ym) {
            assert_eq!(ym, 0, "{what}");
            assert_eq!(xm > 0, in_place, "{what}: ran in the prebuilt shell: {xm}");
        }
    }
    // bash itself runs in the command's locale (loaded ahead or not).
    let o = run(&a, SHELL_PROBE).await;
    assert!(
        o.stdout.contains("\n1 characters in C.UTF-8\n"),
        "{}",
        o.stdout
    );
    // bash's own `-c` behaviour survives: a lone command replaces the shell.
    let o = run(&a, "sh -c 'echo $PPID'").await;
    assert_eq!(o.stdout, "1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_can_signal_the_background_processes_an_earlier_one_left() {
    if !isolated_supported() {
        return;
    }
    let e = env();
    let sb = e.sandbox("signals").await;
    let o = run(&sb, "sleep 4711 >/dev/null 2>&1 & echo $!").await;
    let pid = o.stdout.trim().to_owned();
    assert!(pid.parse::<u32>().is_ok(), "{o:?}");
    // As in a container: the commands of one sandbox share one landlock domain, so the
    // next command may `kill` it (a domain per command would refuse with EPERM).
    let o = run(
        &sb,
        &format!("kill {pid} && echo killed; sleep 0.2; kill -0 {pid} 2>/dev/null || echo gone"),
    )
    .await;
    assert_eq!(o.stdout, "killed\ngone\n", "{o:?}");
}
