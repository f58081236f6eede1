//! Regression: network namespaces created concurrently from many threads must all finish.
//! Each creation forks a child that waits for EOF on its own pipe; a sibling forked at the
//! same moment inherits that pipe's write end unless the child closes what it inherited,
//! and then both wait forever.

use std::sync::mpsc;
use std::time::Duration;

#[test]
fn concurrent_create_netns_does_not_deadlock() {
    if paddock_sys::process::euid() != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run this test as root"
        );
        eprintln!("skipping: creating a joinable network namespace needs root");
        return;
    }
    let (tx, rx) = mpsc::channel();
    for _ in 0..16 {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for _ in 0..5 {
                let r = paddock_sys::jail::create_netns()
                    .map(drop)
                    .map_err(|e| e.to_string());
                let _ = tx.send(r);
            }
        });
    }
    drop(tx);
    for i in 0..80 {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(r) => assert!(r.is_ok(), "create_netns failed: {r:?}"),
            Err(_) => panic!("create_netns deadlocked after {i} of 80 creations"),
        }
    }
}
