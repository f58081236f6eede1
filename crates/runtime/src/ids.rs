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
//! Two sandbox objects of one thread (an evicted one whose last command still runs, and
//! its successor) share that thread's id, so neither takes the thread's files from the
//! other.
//!
//! Invariant: while an [`IdLease`] lives, no lease of another `(user, thread)` from the
//! same allocator holds its id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Leases held: by id, the thread holding it and how many leases it has.
#[derive(Debug, Default)]
struct Held {
    by_id: HashMap<u32, (String, usize)>,
    by_key: HashMap<String, u32>,
}

/// Hands out ids from a range, one per live sandbox.
#[derive(Debug)]
pub struct IdAllocator {
    start: u32,
    count: u32,
    held: Arc<Mutex<Held>>,
}

/// One sandbox's id; returned to the allocator when the thread's last lease is dropped.
#[derive(Debug)]
pub struct IdLease {
    id: u32,
    held: Arc<Mutex<Held>>,
}

impl IdLease {
    /// The host uid (and gid) of the sandbox.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for IdLease {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let gone = match held.by_id.get_mut(&self.id) {
            Some((_, n)) if *n > 1 => {
                *n -= 1;
                None
            }
            Some(_) => held.by_id.remove(&self.id).map(|(key, _)| key),
            None => None,
        };
        if let Some(key) = gone {
            held.by_key.remove(&key);
        }
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
            held: Arc::default(),
        }
    }

    /// The id for a sandbox of `(user, thread)`: its hashed id when free, else the next
    /// free one after it (wrapping around the range).
    pub fn lease(&self, user: &str, thread: &str) -> Result<IdLease, IdsExhausted> {
        let key = format!("{user}\0{thread}");
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&id) = held.by_key.get(&key) {
            if let Some((_, n)) = held.by_id.get_mut(&id) {
                *n += 1;
            }
            return Ok(IdLease {
                id,
                held: self.held.clone(),
            });
        }
        if held.by_id.len() as u64 >= u64::from(self.count) {
            return Err(IdsExhausted {
                start: self.start,
                count: self.count,
                end: u64::from(self.start) + u64::from(self.count),
            });
        }
        // The remainder is below `count`, a u32.
        let mut off = (paddock_sys::uidmap::fnv1a(key.as_bytes()) % u64::from(self.count)) as u32;
        // Terminates: fewer than `count` ids are held, so a free one exists.
        while held.by_id.contains_key(&(self.start + off)) {
            off = (off + 1) % self.count;
        }
        let id = self.start + off;
        held.by_id.insert(id, (key.clone(), 1));
        held.by_key.insert(key, id);
        Ok(IdLease {
            id,
            held: self.held.clone(),
        })
    }

    /// Ids held now.
    pub fn in_use(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

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

    #[test]
    fn two_sandbox_objects_of_one_thread_share_its_id() {
        let a = IdAllocator::new(10, 100);
        let first = a.lease("u", "t").unwrap();
        let second = a.lease("u", "t").unwrap();
        assert_eq!(first.id(), second.id());
        assert_eq!(a.in_use(), 1);
        drop(first);
        // Still held by the second: another thread cannot get it.
        assert_eq!(a.in_use(), 1);
        let other = a.lease("v", "t").unwrap();
        assert_ne!(other.id(), second.id());
        drop(second);
        assert_eq!(a.in_use(), 1);
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
            let mut owner: HashMap<u32, (String, String)> = HashMap::new();
            for (u, t) in &keys {
                match a.lease(u, t) {
                    Ok(l) => {
                        prop_assert!(l.id() >= start && u64::from(l.id()) < u64::from(start) + u64::from(count));
                        let o = owner.entry(l.id()).or_insert_with(|| (u.clone(), t.clone()));
                        prop_assert_eq!(o, &(u.clone(), t.clone()), "id {} handed to two threads", l.id());
                        held.push(l);
                    }
                    Err(_) => prop_assert_eq!(owner.len() as u32, count),
                }
            }
        }
    }
}
