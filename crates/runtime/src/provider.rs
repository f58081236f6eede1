//! `LocalProvider`: hands out one [`LocalSandbox`] per (user, thread), the reference's
//! provider semantics. Concurrent `acquire`s of one thread share a single initialisation
//! (a per-key `OnceCell`), the cache is an LRU bounded by `max_cached_sandboxes`, eviction
//! only drops the in-memory object (files stay on disk; its running commands are killed when
//! the last handle goes), `release` keeps the sandbox warm, `reset`/`shutdown` kill every
//! running command and empty the cache.
//!
//! Invariant: at most one initialised sandbox per key is in the cache at any time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use paddock_core::mount::Mount;
use paddock_core::{SandboxError, ThreadId, UserId};
use tokio::sync::OnceCell;

use crate::options::RuntimeOptions;
use crate::runtime::{Runtime, RuntimeError};
use crate::sandbox::{LocalSandbox, parse_sandbox_id};

type Key = (UserId, ThreadId);
type Hook = Arc<dyn Fn(&UserId, &ThreadId) + Send + Sync>;

struct Slot {
    cell: Arc<OnceCell<Arc<LocalSandbox>>>,
    last_used: u64,
}

#[derive(Default)]
struct Cache {
    slots: HashMap<Key, Slot>,
    tick: u64,
}

/// The per-thread sandbox provider of the local runtime.
pub struct LocalProvider {
    rt: Arc<Runtime>,
    custom: Vec<Mount>,
    cache: Mutex<Cache>,
    init_hook: Option<Hook>,
}

impl std::fmt::Debug for LocalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProvider")
            .field("isolation", &self.rt.isolation())
            .finish()
    }
}

impl LocalProvider {
    /// A provider over `data_dir` with `opts` and the operator's (already validated) custom
    /// mounts. Probes the kernel when `isolation: isolated`.
    pub fn new(
        data_dir: impl Into<PathBuf>,
        opts: RuntimeOptions,
        custom: Vec<Mount>,
    ) -> Result<Self, RuntimeError> {
        Ok(Self::over(Runtime::new(data_dir, opts)?, custom))
    }

    /// A provider over an existing runtime (one a server shares with other parts).
    pub fn over_runtime(rt: Arc<Runtime>, custom: Vec<Mount>) -> Self {
        Self::over(rt, custom)
    }

    /// A provider for a process that runs one command and exits (`paddock exec`); see
    /// [`Runtime::one_shot`].
    pub fn one_shot(
        data_dir: impl Into<PathBuf>,
        opts: RuntimeOptions,
        custom: Vec<Mount>,
    ) -> Result<Self, RuntimeError> {
        Ok(Self::over(Runtime::one_shot(data_dir, opts)?, custom))
    }

    fn over(rt: Arc<Runtime>, custom: Vec<Mount>) -> Self {
        Self {
            rt,
            custom,
            cache: Mutex::new(Cache::default()),
            init_hook: None,
        }
    }

    /// Runs `hook` (blocking, on a worker thread) inside every sandbox initialisation — used
    /// by tests to widen the race window between concurrent `acquire`s.
    pub fn with_init_hook(mut self, hook: Hook) -> Self {
        self.init_hook = Some(hook);
        self
    }

    /// The shared runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The thread's sandbox, created on first use; concurrent callers get the same one.
    pub async fn acquire(
        &self,
        user: &UserId,
        thread: &ThreadId,
    ) -> Result<Arc<LocalSandbox>, SandboxError> {
        let key = (user.clone(), thread.clone());
        let cell = {
            let mut c = self.lock();
            c.tick += 1;
            let tick = c.tick;
            let slot = c.slots.entry(key.clone()).or_insert_with(|| Slot {
                cell: Arc::new(OnceCell::new()),
                last_used: tick,
            });
            slot.last_used = tick;
            slot.cell.clone()
        };
        let sb = cell
            .get_or_try_init(|| async {
                let rt = self.rt.clone();
                let custom = self.custom.clone();
                let hook = self.init_hook.clone();
                let (u, t) = (user.clone(), thread.clone());
                tokio::task::spawn_blocking(move || {
                    if let Some(h) = hook {
                        h(&u, &t);
                    }
                    LocalSandbox::prepare(rt, &u, &t, custom).map(Arc::new)
                })
                .await
                .map_err(|e| SandboxError::Internal {
                    message: format!("sandbox preparation failed: {e}"),
                })?
            })
            .await;
        let sb = match sb {
            Ok(sb) => sb.clone(),
            Err(e) => {
                // Forget a failed slot so a later acquire retries.
                let mut c = self.lock();
                if c.slots
                    .get(&key)
                    .is_some_and(|s| Arc::ptr_eq(&s.cell, &cell) && !s.cell.initialized())
                {
                    c.slots.remove(&key);
                }
                return Err(e);
            }
        };
        self.evict(&key);
        sb.start_jail();
        Ok(sb)
    }

    /// Drops least-recently-used initialised sandboxes beyond the cap (never `keep`).
    fn evict(&self, keep: &Key) {
        let cap = self.rt.options().max_cached_sandboxes;
        let mut evicted = Vec::new();
        {
            let mut c = self.lock();
            while c.slots.len() > cap {
                let victim = c
                    .slots
                    .iter()
                    .filter(|(k, s)| *k != keep && s.cell.initialized())
                    .min_by_key(|(_, s)| s.last_used)
                    .map(|(k, _)| k.clone());
                let Some(v) = victim else { break };
                if let Some(s) = c.slots.remove(&v) {
                    evicted.push(s);
                }
            }
        }
        // Dropped outside the lock: the last handle's drop kills the sandbox's processes.
        drop(evicted);
    }

    /// The cached sandbox with this id (`local:{user}:{thread}`), if any; marks it used.
    pub fn get(&self, id: &str) -> Option<Arc<LocalSandbox>> {
        let key = parse_sandbox_id(id)?;
        let mut c = self.lock();
        c.tick += 1;
        let tick = c.tick;
        let slot = c.slots.get_mut(&key)?;
        slot.last_used = tick;
        slot.cell.get().cloned()
    }

    /// Number of cached sandboxes.
    pub fn cached(&self) -> usize {
        self.lock().slots.len()
    }

    /// Keeps the sandbox warm (the reference's release is a no-op too).
    pub fn release(&self, _id: &str) {}

    /// Kills every running command of every cached sandbox and empties the cache.
    pub fn reset(&self) {
        let slots = std::mem::take(&mut self.lock().slots);
        for (_, s) in slots {
            if let Some(sb) = s.cell.get() {
                sb.kill_all();
            }
        }
    }

    /// Same as [`reset`](Self::reset); the provider stays usable.
    pub fn shutdown(&self) {
        self.reset();
    }
}

impl Drop for LocalProvider {
    fn drop(&mut self) {
        self.reset();
    }
}
