//! Host ids of live sandboxes: with a `uid_range` (the default when Paddock is root), every
//! live sandbox runs as a uid no other live sandbox of this runtime has.
//!
//! Why: the kernel charges per-user counters (inotify instances and watches, pipe buffer
//! pages, epoll watches, `RLIMIT_NPROC`, POSIX message queue bytes, pending signals) to the
//! owning uid. Sandboxes sharing a uid share those budgets, so one tenant could use up
//! another's. A stable hash of `(user, thread)` alone collides (500 live sandboxes in 65,536
//! ids collide with probability ~85%), so the hash only picks the first candidate, which
//! keeps a thread on the same uid across restarts in the common case, and the next free id
//! after it is taken when that one is in use.
//!
//! Invariant: while a [`IdLease`] lives, no other lease of the same allocator holds its id.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Hands out ids from a range, one per live sandbox.
#[derive(Debug)]
pub struct IdAllocator {
    start: u32,
    count: u32,
    used: Arc<Mutex<HashSet<u32>>>,
}

/// One sandbox's id; returned to the allocator when dropped.
#[derive(Debug)]
pub struct IdLease {
    id: u32,
    used: Arc<Mutex<HashSet<u32>>>,
}

impl IdLease {
    /// The host uid (and gid) of the sandbox.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for IdLease {
    fn drop(&mut self) {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// Every id of the range is held by a live sandbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "all {count} ids of sandbox.uid_range ({start}..{end}) belong to live sandboxes; widen the range or lower the number of live sandboxes"
)]
pub struct IdsExhausted {
    /// First id of the range.
    pub start: u32,
    /// Ids in the range.
    pub count: u32,
    /// One past the last id.
    pub end: u64,
}

impl IdAllocator {
    /// An allocator over `start .. start + count` (validated by the options: `start >= 1`,
    /// `count >= 1`, no overflow).
    pub fn new(start: u32, count: u32) -> Self {
        Self {
            start,
            count: count.max(1),
            used: Arc::default(),
        }
    }

    /// The id for a sandbox of `(user, thread)`: its hashed id when free, else the next
    /// free one after it (wrapping around the range).
    pub fn lease(&self, user: &str, thread: &str) -> Result<IdLease, IdsExhausted> {
        let first = self.preferred(user, thread);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.len() as u64 >= u64::from(self.count) {
            return Err(IdsExhausted {
                start: self.start,
                count: self.count,
                end: u64::from(self.start) + u64::from(self.count),
            });
        }
        let mut off = first;
        // Terminates: fewer than `count` ids are used, so a free one exists.
        while used.contains(&(self.start + off)) {
            off = (off + 1) % self.count;
        }
        let id = self.start + off;
        used.insert(id);
        Ok(IdLease {
            id,
            used: self.used.clone(),
        })
    }

    /// Ids held now.
    pub fn in_use(&self) -> usize {
        self.used.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn preferred(&self, user: &str, thread: &str) -> u32 {
        let mut key = Vec::with_capacity(user.len() + thread.len() + 1);
        key.extend_from_slice(user.as_bytes());
        key.push(0);
        key.extend_from_slice(thread.as_bytes());
        // The remainder is below `count`, a u32.
        (paddock_sys::uidmap::fnv1a(&key) % u64::from(self.count)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_free_hashed_id_is_kept_across_allocators() {
        let a = IdAllocator::new(200_000, 1000);
        let b = IdAllocator::new(200_000, 1000);
        let x = a.lease("alice", "t1").unwrap();
        let y = b.lease("alice", "t1").unwrap();
        assert_eq!(x.id(), y.id(), "a restart gives a thread the same id");
        assert!((200_000..201_000).contains(&x.id()));
    }

    #[test]
    fn live_sandboxes_never_share_an_id_and_released_ids_return() {
        let a = IdAllocator::new(10, 3);
        let l1 = a.lease("u", "1").unwrap();
        let l2 = a.lease("u", "2").unwrap();
        let l3 = a.lease("u", "3").unwrap();
        let ids: HashSet<u32> = [l1.id(), l2.id(), l3.id()].into();
        assert_eq!(ids, [10, 11, 12].into());
        let e = a.lease("u", "4").unwrap_err();
        assert_eq!(e.count, 3);
        assert!(e.to_string().contains("sandbox.uid_range"), "{e}");
        let freed = l2.id();
        drop(l2);
        assert_eq!(a.in_use(), 2);
        assert_eq!(a.lease("u", "4").unwrap().id(), freed);
    }

    proptest! {
        #[test]
        fn leases_are_distinct_and_in_range(
            start in 1u32..4_000_000_000,
            count in 1u32..64,
            keys in proptest::collection::vec(("[a-z]{1,8}", "[a-z0-9]{1,8}"), 1..80),
        ) {
            let a = IdAllocator::new(start, count);
            let mut held = Vec::new();
            let mut seen = HashSet::new();
            for (u, t) in &keys {
                match a.lease(u, t) {
                    Ok(l) => {
                        prop_assert!(l.id() >= start && u64::from(l.id()) < u64::from(start) + u64::from(count));
                        prop_assert!(seen.insert(l.id()), "id {} handed out twice", l.id());
                        held.push(l);
                    }
                    Err(_) => prop_assert_eq!(held.len() as u32, count),
                }
            }
        }
    }
}
