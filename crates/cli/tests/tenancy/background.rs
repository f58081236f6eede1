//! Point 11 (background output): a background writer's output, once the command that
//! started it has returned and nobody listens, is read by the server at a bounded rate with
//! a small buffer, so a tenant cannot make the server spend unbounded CPU discarding it.

use std::time::Duration;

use crate::harness::{Serve, can_run, host_processes};

fn written(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_output_nobody_reads_is_drained_at_a_bounded_rate() {
    if !can_run() {
        return;
    }
    let srv = Serve::start("log:\n  level: warn\n");
    let sb = srv.sandbox("mallory", "t1").await;
    // Four commands each leave a writer behind that floods the command's stdout.
    for _ in 0..4 {
        // The flood starts once the command has returned (after its short drain window).
        let o = srv
            .run(
                &sb,
                "(sleep 0.5; exec yes m7791-flood-of-output) & echo started",
            )
            .await;
        assert_eq!(o.output, "started\n", "exit {:?}", o.exit_code);
    }
    let writers = crate::harness::wait_for(Duration::from_secs(5), || {
        let w = host_processes("m7791-flood");
        (w.len() == 4).then_some(w)
    })
    .expect("four writers");
    let before: u64 = writers.iter().map(|p| written(p.pid)).sum();
    let window = Duration::from_secs(2);
    tokio::time::sleep(window).await;
    let after: u64 = writers.iter().map(|p| written(p.pid)).sum();
    let rate = (after - before) as f64 / window.as_secs_f64();
    // The sandbox's drains read 256 KiB/s together (one second of burst); unbounded, `yes`
    // writes hundreds of MiB/s into a pipe that is read as fast.
    assert!(
        rate < 1024.0 * 1024.0,
        "background output drained at {:.0} KiB/s",
        rate / 1024.0
    );
    // The writers are blocked, not killed: they still run.
    assert_eq!(host_processes("m7791-flood").len(), 4);
    // And the sandbox still answers.
    assert_eq!(srv.run(&sb, "echo fine").await.output, "fine\n");
}
