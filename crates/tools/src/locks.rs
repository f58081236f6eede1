//! Per-file locks that serialise read-modify-write edits.
//!
//! `str_replace` reads a file, edits it and writes it back; two concurrent edits of one
//! file would otherwise lose one of them. Every `write_file` and `str_replace` on the
//! same (sandbox id, normalised virtual path) takes the same async mutex.
//!
//! Invariant: the map holds only weak references, and dead entries are pruned as it
//! grows, so it stays proportional to the number of files being edited right now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use paddock_core::VirtualPath;
use tokio::sync::OwnedMutexGuard;

type Key = (String, String);

/// A map from (sandbox id, path) to a shared async mutex.
#[derive(Debug, Default)]
pub struct FileLocks {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, Weak<tokio::sync::Mutex<()>>>,
    /// Size after the last prune; the next prune happens at twice this.
    pruned_at: usize,
}

/// Entries tolerated before the first prune.
const PRUNE_FLOOR: usize = 64;

impl FileLocks {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide map, shared by every `Tools` so that two tool instances over the
    /// same sandbox (one per HTTP request, say) still exclude each other.
    pub fn global() -> Arc<Self> {
        static GLOBAL: OnceLock<Arc<FileLocks>> = OnceLock::new();
        GLOBAL.get_or_init(|| Arc::new(Self::new())).clone()
    }

    /// Waits for and takes the lock of `path` in sandbox `sandbox_id`. Paths are
    /// normalised first, so `/a/./b` and `/a/b` share a lock.
    pub async fn lock(&self, sandbox_id: &str, path: &str) -> OwnedMutexGuard<()> {
        self.entry(sandbox_id, path).lock_owned().await
    }

    fn entry(&self, sandbox_id: &str, path: &str) -> Arc<tokio::sync::Mutex<()>> {
        let normalised =
            VirtualPath::parse(path).map_or_else(|_| path.to_owned(), |p| p.to_string());
        let key = (sandbox_id.to_owned(), normalised);
        // A poisoned map only means another thread panicked while holding it; the map
        // itself is always consistent, so keep using it.
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = inner.map.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let fresh = Arc::new(tokio::sync::Mutex::new(()));
        inner.map.insert(key, Arc::downgrade(&fresh));
        if inner.map.len() >= PRUNE_FLOOR.max(inner.pruned_at * 2) {
            inner.map.retain(|_, w| w.strong_count() > 0);
            inner.pruned_at = inner.map.len();
        }
        fresh
    }

    /// Entries currently in the map (live or not yet pruned).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map
            .len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_path_same_lock_other_path_free() {
        let locks = FileLocks::new();
        let g = locks.lock("sb", "/mnt/user-data/workspace/a").await;
        // The same file, spelled differently, is busy.
        assert!(
            locks
                .entry("sb", "/mnt/user-data/workspace/./a")
                .try_lock()
                .is_err()
        );
        // Another file, or the same path in another sandbox, is free.
        assert!(
            locks
                .entry("sb", "/mnt/user-data/workspace/b")
                .try_lock()
                .is_ok()
        );
        assert!(
            locks
                .entry("other", "/mnt/user-data/workspace/a")
                .try_lock()
                .is_ok()
        );
        drop(g);
        assert!(
            locks
                .entry("sb", "/mnt/user-data/workspace/a")
                .try_lock()
                .is_ok()
        );
    }

    #[tokio::test]
    async fn map_does_not_grow_without_bound() {
        let locks = FileLocks::new();
        for i in 0..10_000 {
            let _g = locks.lock("sb", &format!("/f{i}")).await;
        }
        assert!(locks.len() <= 2 * PRUNE_FLOOR, "{}", locks.len());
    }
}
