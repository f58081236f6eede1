//! Sandbox lifecycle over a backend: idempotent, race-free create (one async lock per
//! sandbox id, so 200 concurrent creates of one id make one sandbox while different ids
//! never wait on each other), capacity, activity tracking and the idle reaper.
//!
//! Invariant: `live` mirrors what the backend manages; every mutation of one id happens
//! under that id's lock.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use paddock_core::SandboxId;

use crate::backend::{Backend, BackendError, CreateSpec, SandboxRecord};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Lifecycle knobs.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// Most live sandboxes; more creates get 429.
    pub max_sandboxes: usize,
    /// Reap sandboxes idle this long (zero disables reaping).
    pub idle_timeout: Duration,
    /// How often the reaper looks.
    pub reap_interval: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            max_sandboxes: 500,
            idle_timeout: Duration::from_secs(600),
            reap_interval: Duration::from_secs(30),
        }
    }
}

struct Live {
    record: SandboxRecord,
    touched: Instant,
}

/// The control plane's view of every sandbox.
pub struct Lifecycle {
    backend: Arc<dyn Backend>,
    cfg: LifecycleConfig,
    metrics: Arc<Metrics>,
    locks: Mutex<HashMap<SandboxId, Weak<tokio::sync::Mutex<()>>>>,
    live: Mutex<HashMap<SandboxId, Live>>,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("backend", &self.backend.name())
            .finish()
    }
}

fn poisoned() -> ApiError {
    ApiError::from(BackendError::Internal("lock poisoned".into()))
}

impl Lifecycle {
    /// A lifecycle over `backend`.
    pub fn new(backend: Arc<dyn Backend>, cfg: LifecycleConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            backend,
            cfg,
            metrics,
            locks: Mutex::default(),
            live: Mutex::default(),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Loads what the backend already manages (after a restart).
    pub async fn recover(&self) -> Result<usize, BackendError> {
        let records = self.backend.list().await?;
        let n = records.len();
        let mut live = self
            .live
            .lock()
            .map_err(|_| BackendError::Internal("lock poisoned".into()))?;
        for record in records {
            live.insert(
                record.sandbox_id.clone(),
                Live {
                    record,
                    touched: Instant::now(),
                },
            );
        }
        Ok(n)
    }

    fn id_lock(&self, id: &SandboxId) -> Result<Arc<tokio::sync::Mutex<()>>, ApiError> {
        let mut locks = self.locks.lock().map_err(|_| poisoned())?;
        if let Some(l) = locks.get(id).and_then(Weak::upgrade) {
            return Ok(l);
        }
        if locks.len() > 1024 {
            locks.retain(|_, w| w.strong_count() > 0);
        }
        let l = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(id.clone(), Arc::downgrade(&l));
        Ok(l)
    }

    fn cached(&self, spec: &CreateSpec) -> Result<Option<SandboxRecord>, ApiError> {
        let mut live = self.live.lock().map_err(|_| poisoned())?;
        let Some(entry) = live.get_mut(&spec.sandbox_id) else {
            return Ok(None);
        };
        if entry.record.user_id != spec.user_id || entry.record.thread_id != spec.thread_id {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                format!(
                    "sandbox '{}' already belongs to another user or thread",
                    spec.sandbox_id
                ),
            ));
        }
        entry.touched = Instant::now();
        Ok(Some(entry.record.clone()))
    }

    /// Creates the sandbox, or returns it when it exists for the same user and thread.
    pub async fn create(&self, spec: CreateSpec) -> Result<SandboxRecord, ApiError> {
        let started = Instant::now();
        if let Some(r) = self.cached(&spec)? {
            self.metrics.observe_create(started.elapsed());
            return Ok(r);
        }
        let lock = self.id_lock(&spec.sandbox_id)?;
        let _guard = lock.lock().await;
        if let Some(r) = self.cached(&spec)? {
            self.metrics.observe_create(started.elapsed());
            return Ok(r);
        }
        let count = self.live.lock().map_err(|_| poisoned())?.len();
        if count >= self.cfg.max_sandboxes {
            self.metrics
                .capacity_refusals
                .fetch_add(1, Ordering::Relaxed);
            return Err(BackendError::Capacity {
                message: format!(
                    "capacity reached: {count} sandboxes are live (max_sandboxes = {})",
                    self.cfg.max_sandboxes
                ),
                retry_after_secs: 5,
            }
            .into());
        }
        let record = self.backend.create(&spec).await?;
        self.live.lock().map_err(|_| poisoned())?.insert(
            record.sandbox_id.clone(),
            Live {
                record: record.clone(),
                touched: Instant::now(),
            },
        );
        self.metrics.created.fetch_add(1, Ordering::Relaxed);
        self.metrics.observe_create(started.elapsed());
        tracing::info!(sandbox_id = %record.sandbox_id, user_id = %record.user_id, thread_id = %record.thread_id, "sandbox created");
        Ok(record)
    }

    /// The sandbox with its current status (does not count as activity).
    pub async fn get(&self, id: &SandboxId) -> Result<SandboxRecord, ApiError> {
        let record = self.backend.get(id).await?;
        let mut live = self.live.lock().map_err(|_| poisoned())?;
        match record {
            Some(r) => {
                // A status probe is monitoring, not use: it does not postpone reaping.
                if let Some(e) = live.get_mut(id) {
                    e.record = r.clone();
                }
                Ok(r)
            }
            None => {
                live.remove(id);
                Err(ApiError::not_found(id.as_str()))
            }
        }
    }

    /// Every sandbox.
    pub async fn list(&self) -> Result<Vec<SandboxRecord>, ApiError> {
        let mut all = self.backend.list().await?;
        all.sort_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
        Ok(all)
    }

    /// Destroys the sandbox (not an error when it is gone); user data stays.
    pub async fn delete(&self, id: &SandboxId) -> Result<bool, ApiError> {
        let lock = self.id_lock(id)?;
        let _guard = lock.lock().await;
        let existed = self.backend.destroy(id).await?;
        self.live.lock().map_err(|_| poisoned())?.remove(id);
        if existed {
            self.metrics.deleted.fetch_add(1, Ordering::Relaxed);
            tracing::info!(sandbox_id = %id, "sandbox deleted");
        }
        Ok(existed)
    }

    /// Live sandbox count by status.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        let live = match self.live.lock() {
            Ok(l) => l,
            Err(_) => return Vec::new(),
        };
        crate::backend::SandboxStatus::ALL
            .iter()
            .map(|s| {
                (
                    s.as_str(),
                    live.values().filter(|e| e.record.status == *s).count() as u64,
                )
            })
            .collect()
    }

    fn idle_for(&self, id: &SandboxId, touched: Instant) -> Duration {
        let ours = touched.elapsed();
        match self.backend.idle_secs(id) {
            Some(s) => ours.min(Duration::from_secs(s)),
            None => ours,
        }
    }

    /// One reaper pass: destroys sandboxes idle past the timeout that run no process.
    pub async fn reap_once(&self) -> usize {
        if self.cfg.idle_timeout.is_zero() {
            return 0;
        }
        let candidates: Vec<SandboxId> = match self.live.lock() {
            Ok(live) => live
                .iter()
                .filter(|(id, e)| self.idle_for(id, e.touched) >= self.cfg.idle_timeout)
                .map(|(id, _)| id.clone())
                .collect(),
            Err(_) => return 0,
        };
        let mut reaped = 0;
        for id in candidates {
            let Ok(lock) = self.id_lock(&id) else {
                continue;
            };
            let _guard = lock.lock().await;
            let still_idle = match self.live.lock() {
                Ok(live) => live
                    .get(&id)
                    .is_some_and(|e| self.idle_for(&id, e.touched) >= self.cfg.idle_timeout),
                Err(_) => false,
            };
            if !still_idle {
                continue;
            }
            match self.backend.busy(&id).await {
                Ok(true) => {
                    tracing::debug!(sandbox_id = %id, "idle but running processes; kept");
                    continue;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(sandbox_id = %id, error = %e, "could not tell whether busy; kept");
                    continue;
                }
            }
            match self.backend.destroy(&id).await {
                Ok(_) => {
                    if let Ok(mut live) = self.live.lock() {
                        live.remove(&id);
                    }
                    self.metrics.reaped.fetch_add(1, Ordering::Relaxed);
                    reaped += 1;
                    tracing::info!(sandbox_id = %id, "idle sandbox reaped");
                }
                Err(e) => tracing::warn!(sandbox_id = %id, error = %e, "reap failed"),
            }
        }
        reaped
    }

    /// Runs the reaper until the task is aborted.
    pub async fn reaper(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.reap_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.reap_once().await;
        }
    }
}
