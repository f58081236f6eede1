//! Point 2: per-user kernel counters. The kernel charges inotify instances and watches,
//! pipe buffers, epoll watches and more to the uid that owns a process. A sandbox must not
//! be able to use up host root's budget or another tenant's: each live sandbox runs as a
//! host uid of its own (the default `sandbox.uid_range`), and never as root.

use std::time::Duration;

use crate::harness::{Serve, can_run};

/// Holds inotify instances until the kernel refuses one, reports how many, and keeps them.
const HOG: &str = "python3 -c '
import ctypes, time
libc = ctypes.CDLL(None, use_errno=True)
held = []
while len(held) < 4000:
    fd = libc.inotify_init()
    if fd < 0:
        break
    held.append(fd)
open(\"/tmp/held\", \"w\").write(str(len(held)))
time.sleep(60)  # m7781
' >/dev/null 2>&1 &
echo started";

/// How many inotify instances a fresh process can open now (up to 20).
const PROBE: &str = "import ctypes; l = ctypes.CDLL(None); print(sum(1 for _ in range(20) if l.inotify_init() >= 0))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_holding_every_inotify_instance_it_can_leaves_others_theirs() {
    if !can_run() {
        return;
    }
    let srv = Serve::start("sandbox:\n  limits:\n    nofile: 4096\n");
    let hog = srv.sandbox("mallory", "t1").await;
    let same_user_other_thread = srv.sandbox("mallory", "t2").await;
    let neighbour = srv.sandbox("alice", "t1").await;

    let uid = |out: String| out.trim().parse::<u32>().unwrap();
    let ids = [
        uid(srv.run(&hog, "id -u").await.output),
        uid(srv.run(&same_user_other_thread, "id -u").await.output),
        uid(srv.run(&neighbour, "id -u").await.output),
    ];
    assert!(ids.iter().all(|&i| i != 0), "{ids:?}");
    assert!(
        ids[0] != ids[1] && ids[0] != ids[2] && ids[1] != ids[2],
        "each live sandbox has a host uid of its own: {ids:?}"
    );

    let host_probe = || {
        let o = std::process::Command::new("python3")
            .args(["-c", PROBE])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    let host_before = host_probe();
    assert_ne!(host_before, "0", "host root has inotify instances to spare");

    srv.run(&hog, HOG).await;
    // Read the count from inside: the sandbox's /tmp is its own.
    let mut count = 0;
    for _ in 0..200 {
        let o = srv.run(&hog, "cat /tmp/held 2>/dev/null").await.output;
        if let Ok(n) = o.trim().parse::<u32>() {
            count = n;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let limit: u32 = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        count >= limit.min(4000) - 2,
        "the hog took what its uid may hold: {count} of {limit}"
    );

    // Host root still can.
    assert_eq!(
        host_probe(),
        host_before,
        "host root can create inotify instances while a sandbox holds all it can"
    );
    // So can the other tenants, and the same tenant's other thread.
    for sb in [&neighbour, &same_user_other_thread] {
        let o = srv.run(sb, &format!("python3 -c '{PROBE}'")).await;
        assert_eq!(o.output.trim(), "20", "{sb:?}: {o:?}");
    }
}
