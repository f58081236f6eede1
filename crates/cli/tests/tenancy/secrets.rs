//! Point 3: nothing of the server is visible inside a sandbox: not its argv (where an
//! `--api-key` would be), not its environment or config, not its pid, and no counter that
//! would let one tenant count another's commands.

use crate::harness::{Serve, can_run};

const ARGV_KEY: &str = "argv-secret-5b1d0c7e9f";
const ENV_SECRET: &str = "env-secret-0a8e44c2d1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_s_argv_environment_and_pid_are_not_visible_inside() {
    if !can_run() {
        return;
    }
    let srv = Serve::start_with(
        "log:\n  level: info\n",
        &["--api-key", ARGV_KEY],
        &[("PADDOCK_TEST_SECRET", ENV_SECRET)],
    );
    // The server says why argv is the wrong place for the key.
    let warned = crate::harness::wait_for(std::time::Duration::from_secs(5), || {
        srv.log()
            .iter()
            .any(|l| l.contains("--api-key puts the key in the command line"))
            .then_some(())
    });
    assert!(warned.is_some(), "{:?}", srv.log());
    let sb = srv.sandbox("mallory", "t1").await;
    let other = srv.sandbox("alice", "t1").await;
    for _ in 0..5 {
        srv.run(&other, "true").await;
    }
    let seen = srv
        .run(
            &sb,
            "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; tr '\\0' '\\n' < $p/environ; done 2>/dev/null; \
             cat /proc/self/cgroup /proc/1/cgroup; env; ls -la / /tmp; cat /proc/self/mountinfo",
        )
        .await
        .output;
    assert!(!seen.contains(ARGV_KEY), "the API key is visible inside");
    assert!(
        !seen.contains(ENV_SECRET),
        "the server's environment is visible inside"
    );
    assert!(
        !seen.contains("paddock.yaml"),
        "the server's config path is visible"
    );
    let cgroups = srv.run(&sb, "cat /proc/self/cgroup").await.output;
    let pid = srv.pid().to_string();
    for line in cgroups.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or_default();
        assert!(
            !path.split(|c: char| !c.is_ascii_digit()).any(|n| n == pid),
            "the server's pid shows in /proc/self/cgroup: {line}"
        );
        // Inside its cgroup namespace a command sees its own slot, named by a counter of
        // its sandbox alone (x0, x1, …), never a count of every tenant's commands.
        assert!(
            path.len() <= 8,
            "more than the sandbox's own cgroup shows: {line}"
        );
    }
}
