//! Network namespaces created concurrently from many threads must all finish, each with
//! loopback up, and leave the creating threads in Paddock's own namespace. (An earlier
//! version forked a child per namespace; two forked at the same moment each held the
//! other's pipe and waited forever.)

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
    use std::os::unix::fs::MetadataExt;
    let ours = || std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
    let (tx, rx) = mpsc::channel();
    for _ in 0..16 {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for _ in 0..5 {
                let before = ours();
                let r = paddock_sys::jail::create_netns()
                    .map_err(|e| e.to_string())
                    .and_then(|fd| {
                        let made = std::fs::File::from(fd).metadata().unwrap().ino();
                        if made == before || ours() != before {
                            Err(format!(
                                "namespaces: ours {before} -> {}, made {made}",
                                ours()
                            ))
                        } else {
                            Ok(())
                        }
                    });
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
