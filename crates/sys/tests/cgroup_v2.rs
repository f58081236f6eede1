//! cgroup v2's "no internal processes" rule, on the real kernel: with another process beside
//! it, Paddock moves nothing and says why; alone in its cgroup, it moves itself one level
//! down, and the cgroup can then enable a controller for its children; given back, the
//! cgroup takes processes again. It uses the hugetlb controller, the one every cgroup2 mount
//! of our CI hosts offers (memory, pids and cpu are bound to v1 there). This file is its own
//! test binary because the test moves this process between cgroups.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use paddock_sys::cgroup::{
    CgroupError, delegate_v2, supervisor_name, undelegate_v2, without_supervisor,
};

/// The cgroup2 mount point and our directory below it.
fn v2() -> Option<(PathBuf, PathBuf)> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let point = mi.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let dash = f.iter().position(|x| *x == "-")?;
        (f.get(dash + 1) == Some(&"cgroup2")).then(|| PathBuf::from(f[4]))
    })?;
    let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let ours = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = point.join(ours.trim_start_matches('/'));
    Some((point, dir))
}

fn has(file: &Path, word: &str) -> bool {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .split_whitespace()
        .any(|w| w == word)
}

#[test]
fn paddock_alone_moves_down_and_can_delegate_and_never_moves_others() {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    if paddock_sys::process::euid() != 0 {
        assert!(!ci, "CI must run this test as root");
        eprintln!("SKIPPED: moving processes between cgroups needs root");
        return;
    }
    let Some((point, start)) = v2() else {
        assert!(!ci, "CI hosts mount cgroup2");
        eprintln!("SKIPPED: no cgroup2 mount");
        return;
    };
    if !has(&start.join("cgroup.controllers"), "hugetlb") {
        assert!(!ci, "CI hosts offer hugetlb on cgroup2");
        eprintln!("SKIPPED: no hugetlb controller on cgroup2 here");
        return;
    }
    let pid = std::process::id();
    // A test cgroup below ours that may use hugetlb. Enabling it in ours is allowed only
    // because ours is the root of the mount (exempt from the rule); anywhere else skip.
    let enabled_here = !has(&start.join("cgroup.subtree_control"), "hugetlb");
    if enabled_here {
        if start != point {
            assert!(!ci, "CI runs tests in the root of the cgroup2 mount");
            eprintln!("SKIPPED: hugetlb is not delegated below our cgroup");
            return;
        }
        std::fs::write(start.join("cgroup.subtree_control"), "+hugetlb").unwrap();
    }
    let x = start.join(format!("paddock-v2-test-{pid}"));
    std::fs::create_dir(&x).unwrap();
    std::fs::write(x.join("cgroup.procs"), pid.to_string()).unwrap();
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    std::fs::write(x.join("cgroup.procs"), other.id().to_string()).unwrap();

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // The kernel's rule: a cgroup with processes cannot enable a controller for children.
        assert!(std::fs::write(x.join("cgroup.subtree_control"), "+hugetlb").is_err());
        // Another process beside Paddock: nothing is moved.
        let e = delegate_v2(&x, pid).unwrap_err();
        assert!(matches!(e, CgroupError::Shared { others: 1, .. }), "{e}");
        assert!(!x.join(supervisor_name(pid)).exists());
        let _ = other.kill();
        let _ = other.wait();
        // Alone: Paddock moves itself into its leaf, and the cgroup can delegate.
        delegate_v2(&x, pid).unwrap();
        let leaf = x.join(supervisor_name(pid));
        assert!(has(&leaf.join("cgroup.procs"), &pid.to_string()));
        std::fs::write(x.join("cgroup.subtree_control"), "+hugetlb").unwrap();
        std::fs::create_dir(x.join("child")).unwrap();
        assert!(has(&x.join("child/cgroup.controllers"), "hugetlb"));
        // Paddock still works in the cgroup it was in: the leaf is not taken for it.
        let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = without_supervisor(&cg, pid);
        assert!(
            rel.lines()
                .any(|l| l.starts_with("0::") && l.ends_with(&format!("/paddock-v2-test-{pid}"))),
            "{rel}"
        );
        // Delegating again is a no-op: nobody is left in the cgroup itself.
        delegate_v2(&x, pid).unwrap();
        // While the cgroup delegates, nobody can join it; a child still there keeps it so.
        let mut later = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(std::fs::write(x.join("cgroup.procs"), later.id().to_string()).is_err());
        undelegate_v2(&x, &["hugetlb"], pid);
        assert!(has(&x.join("cgroup.subtree_control"), "hugetlb"));
        // Given back once only Paddock's leaf is left: the cgroup takes processes again.
        std::fs::remove_dir(x.join("child")).unwrap();
        undelegate_v2(&x, &["hugetlb"], pid);
        assert!(!has(&x.join("cgroup.subtree_control"), "hugetlb"));
        std::fs::write(x.join("cgroup.procs"), later.id().to_string()).unwrap();
        let _ = later.kill();
        let _ = later.wait();
    }));

    let _ = other.kill();
    let _ = other.wait();
    std::fs::write(start.join("cgroup.procs"), pid.to_string()).unwrap();
    let _ = std::fs::remove_dir(x.join("child"));
    let _ = std::fs::write(x.join("cgroup.subtree_control"), "-hugetlb");
    let _ = std::fs::remove_dir(x.join(supervisor_name(pid)));
    std::fs::remove_dir(&x).unwrap();
    if enabled_here {
        std::fs::write(start.join("cgroup.subtree_control"), "-hugetlb").unwrap();
    }
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
