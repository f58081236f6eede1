//! Point 1: limits hold for the sandbox, not for each command. Background processes outlive
//! the exec that started them, so a tenant that starts them from many execs must still meet
//! one pids and one memory limit for the whole sandbox, and all sandboxes together meet
//! the global cap beneath Paddock's own cgroup.

use std::time::Duration;

use crate::harness::{Serve, can_run, host_processes};

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_s_processes_and_memory_stay_within_its_limits_however_many_execs() {
    if !can_run() {
        return;
    }
    let srv = Serve::start("sandbox:\n  limits:\n    pids: 40\n    memory_bytes: 201326592\n");
    let sb = srv.sandbox("mallory", "t1").await;
    // Five execs, each leaving 30 sleepers behind: 150 wanted, 40 allowed for the sandbox
    // (its init and waiting shell included). dash reports a failed fork at once, where bash
    // would retry for seconds.
    for _ in 0..5 {
        srv.run(
            &sb,
            "sh -c 'i=0; while [ $i -lt 30 ]; do sleep 7771 & i=$((i+1)); done' >/dev/null 2>&1; echo ok",
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let found = host_processes("sleep 7771");
    let sleepers = found.len();
    assert!(sleepers >= 20, "the sandbox could start some: {sleepers}");
    assert!(
        sleepers <= 40,
        "{sleepers} sleepers beyond the sandbox's 40 pids:\n{}",
        found
            .iter()
            .map(|p| format!(
                "{} {} {}",
                p.pid,
                p.cmdline,
                std::fs::read_to_string(format!("/proc/{}/cgroup", p.pid)).unwrap_or_default()
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The sandbox is at its limit, so this counts with builtins only (no fork).
    let inside = srv
        .run(
            &sb,
            "n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo $n",
        )
        .await
        .output
        .trim()
        .parse::<usize>()
        .unwrap_or(usize::MAX);
    assert!(inside <= 40, "{inside} processes inside");

    // Three execs each leave a 120 MiB writer behind: 360 MiB wanted, 192 MiB allowed.
    srv.run(
        &sb,
        "for p in /proc/[0-9]*; do c=; read -r -d '' c < $p/cmdline; [ \"$c\" = sleep ] && kill ${p#/proc/}; done 2>/dev/null; echo ok",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(host_processes("sleep 7771").is_empty());
    for _ in 0..3 {
        srv.run(
            &sb,
            "python3 -c 'import time; b = b\"x\" * (120 << 20); time.sleep(60)  # m7772' >/dev/null 2>&1 & echo ok",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writers = host_processes("m7772");
    let rss: u64 = writers.iter().map(|p| p.rss).sum();
    assert!(
        rss <= 192 * MIB,
        "the sandbox holds {} MiB in {} writers, beyond its 192 MiB",
        rss / MIB,
        writers.len()
    );
    assert!(
        !writers.is_empty() && writers.len() < 3,
        "one writer fits and the sandbox's OOM killer took the rest: {writers:?}"
    );
    // Another tenant is unaffected.
    let other = srv.sandbox("alice", "t1").await;
    assert_eq!(srv.run(&other, "echo fine").await.output, "fine\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_sandboxes_together_stay_within_the_global_cap() {
    if !can_run() {
        return;
    }
    let srv = Serve::start("sandbox:\n  limits:\n    pids: 40\n  total_limits:\n    pids: 60\n");
    let a = srv.sandbox("mallory", "t1").await;
    let b = srv.sandbox("mallory", "t2").await;
    for sb in [&a, &b] {
        srv.run(
            sb,
            "sh -c 'i=0; while [ $i -lt 45 ]; do sleep 7773 & i=$((i+1)); done' >/dev/null 2>&1; echo ok",
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sleepers = host_processes("sleep 7773").len();
    assert!(sleepers >= 30, "{sleepers}");
    assert!(
        sleepers <= 60,
        "{sleepers} sleepers beyond the 60 pids of all sandboxes together"
    );
}
