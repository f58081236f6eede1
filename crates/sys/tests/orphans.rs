//! `leave_orphan` and `orphan_state` against an adopter this test controls: the test
//! process makes itself the child subreaper, so the orphan is adopted by it rather than by
//! pid 1. Its own binary, with one test: a subreaper adopts the orphans of every thread.

#![allow(clippy::unwrap_used, clippy::undocumented_unsafe_blocks)]

use std::time::{Duration, Instant};

use paddock_sys::process::{OrphanState, leave_orphan, orphan_state};

/// Reaps every exited child there is now; how many.
fn reap_all() -> usize {
    let mut n = 0;
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {
        n += 1;
    }
    n
}

/// Waits until `o` is reaped or a zombie (its start time still on record).
fn settled_state(o: &paddock_sys::process::Orphan, zombie_wanted: bool) -> OrphanState {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = orphan_state(o);
        let zombie = std::fs::read_to_string(format!("/proc/{}/stat", o.pid)).is_ok_and(|t| {
            t.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        });
        if st == OrphanState::Reaped || (zombie_wanted && zombie) || Instant::now() > deadline {
            return st;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn an_orphan_tells_an_adopter_that_reaps_from_one_that_never_waits() {
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
    // We adopt it and do not wait: it stays, a zombie.
    let o = leave_orphan().unwrap();
    assert!(o.pid > 0 && o.start_ticks > 0);
    assert_eq!(settled_state(&o, true), OrphanState::Waiting);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(orphan_state(&o), OrphanState::Waiting, "nobody reaped it");
    // The adopter reaps (as an init does): it is gone.
    assert_eq!(reap_all(), 1, "the orphan was adopted by the subreaper");
    assert_eq!(orphan_state(&o), OrphanState::Reaped);
    // And one reaped while we look.
    let o = leave_orphan().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while orphan_state(&o) == OrphanState::Waiting {
        reap_all();
        assert!(Instant::now() < deadline, "the orphan never exited");
        std::thread::sleep(Duration::from_millis(1));
    }
}
