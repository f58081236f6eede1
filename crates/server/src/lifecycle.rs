//! Sandbox lifecycle over a backend: idempotent, race-free create (one async lock per
//! sandbox id, so 200 concurrent creates of one id make one sandbox while different ids
//! never wait on each other), global and per-user capacity, activity tracking and the
//! reaper (idle, busy-idle, maximum lifetime).
//!
//! Invariants: `live` mirrors what the backend manages; every mutation of one id happens
//! under that id's lock; a create holds a reservation (counted with the live sandboxes)
//! from its capacity check until its sandbox is live, so concurrent creates of different
//! ids never take more than `max_sandboxes` in all or `max_sandboxes_per_user` for one user.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use paddock_core::{SandboxId, UserId};

use crate::backend::{Backend, BackendError, CreateSpec, SandboxRecord};
use crate::error::ApiError;
use crate::limits::{Limit, ReapReason};
use crate::metrics::Metrics;

/// Lifecycle knobs.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// Most live sandboxes; more creates get 429 naming `max_sandboxes`.
    pub max_sandboxes: usize,
    /// Most live sandboxes of one user (0: only `max_sandboxes` applies); more creates of
    /// that user get 429 naming `max_sandboxes_per_user`.
    pub max_sandboxes_per_user: usize,
    /// Reap sandboxes with no API activity this long that run no process (zero: never).
    pub idle_timeout: Duration,
    /// Reap sandboxes with no API activity this long even while processes run, killing
    /// them (zero: never).
    pub busy_idle_timeout: Duration,
    /// Reap sandboxes this long after their creation whatever they do (zero: never).
    pub max_lifetime: Duration,
    /// How often the reaper looks.
    pub reap_interval: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            max_sandboxes: 500,
            max_sandboxes_per_user: 100,
            idle_timeout: Duration::from_secs(600),
            busy_idle_timeout: Duration::from_secs(4 * 3600),
            max_lifetime: Duration::from_secs(24 * 3600),
            reap_interval: Duration::from_secs(30),
        }
    }
}

struct Live {
    record: SandboxRecord,
    touched: Instant,
    created: Instant,
}

/// A create's place in the capacity count until its sandbox is live (or the create fails).
struct Reservation<'a> {
    creating: &'a Mutex<HashMap<UserId, usize>>,
    user: UserId,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut creating = self.creating.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = creating.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                creating.remove(&self.user);
            }
        }
    }
}

/// The control plane's view of every sandbox.
pub struct Lifecycle {
    backend: Arc<dyn Backend>,
    cfg: LifecycleConfig,
    metrics: Arc<Metrics>,
    locks: Mutex<HashMap<SandboxId, Weak<tokio::sync::Mutex<()>>>>,
    live: Mutex<HashMap<SandboxId, Live>>,
    /// Creates past their capacity check whose sandbox is not live yet, per user. Locked
    /// only while `live` is held or alone (never the other way round).
    creating: Mutex<HashMap<UserId, usize>>,
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
            creating: Mutex::default(),
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
                    created: Instant::now(),
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

    /// Counts a create of `user` against the global and per-user caps, or refuses it with
    /// a 429 naming the cap.
    fn reserve(&self, user: &UserId) -> Result<Reservation<'_>, ApiError> {
        let live = self.live.lock().map_err(|_| poisoned())?;
        let mut creating = self.creating.lock().map_err(|_| poisoned())?;
        // The user's own cap first: it is the one to name when both are reached.
        let per_user = self.cfg.max_sandboxes_per_user;
        if per_user > 0 {
            let mine = live.values().filter(|e| e.record.user_id == *user).count()
                + creating.get(user).copied().unwrap_or(0);
            if mine >= per_user {
                self.metrics.observe_refusal(Limit::MaxSandboxesPerUser);
                return Err(ApiError::limit_reached(
                    Limit::MaxSandboxesPerUser,
                    format!(
                        "user '{user}' has {mine} live sandboxes (max_sandboxes_per_user = \
                         {per_user}); delete one or wait until one is reaped"
                    ),
                    5,
                ));
            }
        }
        let total = live.len() + creating.values().sum::<usize>();
        if total >= self.cfg.max_sandboxes {
            self.metrics.observe_refusal(Limit::MaxSandboxes);
            return Err(ApiError::limit_reached(
                Limit::MaxSandboxes,
                format!(
                    "capacity reached: {total} sandboxes are live (max_sandboxes = {})",
                    self.cfg.max_sandboxes
                ),
                5,
            ));
        }
        *creating.entry(user.clone()).or_default() += 1;
        Ok(Reservation {
            creating: &self.creating,
            user: user.clone(),
        })
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
        let reservation = self.reserve(&spec.user_id)?;
        let record = self.backend.create(&spec).await?;
        self.live.lock().map_err(|_| poisoned())?.insert(
            record.sandbox_id.clone(),
            Live {
                record: record.clone(),
                touched: Instant::now(),
                created: Instant::now(),
            },
        );
        drop(reservation);
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

    fn age(&self, id: &SandboxId, created: Instant) -> Duration {
        match self.backend.age_secs(id) {
            Some(s) => Duration::from_secs(s),
            None => created.elapsed(),
        }
    }

    /// Which bound a sandbox is past, if any, before asking whether it runs processes:
    /// its lifetime first, then the busy-idle bound, then the idle timeout.
    fn due(&self, id: &SandboxId, e: &Live) -> Option<ReapReason> {
        let c = &self.cfg;
        if !c.max_lifetime.is_zero() && self.age(id, e.created) >= c.max_lifetime {
            return Some(ReapReason::MaxLifetime);
        }
        let idle = self.idle_for(id, e.touched);
        if !c.busy_idle_timeout.is_zero() && idle >= c.busy_idle_timeout {
            return Some(ReapReason::BusyIdle);
        }
        if !c.idle_timeout.is_zero() && idle >= c.idle_timeout {
            return Some(ReapReason::Idle);
        }
        None
    }

    /// One reaper pass. Destroys (killing their processes, keeping their data) sandboxes
    /// older than `max_lifetime`, sandboxes without API activity for `busy_idle_timeout`
    /// whether or not processes run, and sandboxes idle for `idle_timeout` that run no
    /// process. Each reap is logged with the setting that fired and counted by reason.
    pub async fn reap_once(&self) -> usize {
        let c = &self.cfg;
        if c.idle_timeout.is_zero() && c.busy_idle_timeout.is_zero() && c.max_lifetime.is_zero() {
            return 0;
        }
        let candidates: Vec<SandboxId> = match self.live.lock() {
            Ok(live) => live
                .iter()
                .filter(|(id, e)| self.due(id, e).is_some())
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
            let found = match self.live.lock() {
                Ok(live) => live.get(&id).and_then(|e| {
                    self.due(&id, e).map(|r| {
                        (
                            r,
                            e.record.user_id.clone(),
                            self.idle_for(&id, e.touched),
                            self.age(&id, e.created),
                        )
                    })
                }),
                Err(_) => None,
            };
            let Some((due, user_id, idle, age)) = found else {
                continue;
            };
            let busy = match self.backend.busy(&id).await {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!(sandbox_id = %id, error = %e, "could not tell whether busy");
                    None
                }
            };
            let idle_ok = !c.idle_timeout.is_zero() && idle >= c.idle_timeout;
            let reason = match (due, busy) {
                (ReapReason::MaxLifetime, _) => ReapReason::MaxLifetime,
                // Past the busy-idle bound but running nothing: an ordinary idle reap.
                (ReapReason::BusyIdle, Some(false)) if idle_ok => ReapReason::Idle,
                (ReapReason::BusyIdle, _) => ReapReason::BusyIdle,
                (ReapReason::Idle, Some(false)) => ReapReason::Idle,
                (ReapReason::Idle, Some(true)) => {
                    tracing::debug!(sandbox_id = %id, "idle but running processes; kept");
                    continue;
                }
                (ReapReason::Idle, None) => continue,
            };
            match self.backend.destroy(&id).await {
                Ok(_) => {
                    if let Ok(mut live) = self.live.lock() {
                        live.remove(&id);
                    }
                    self.metrics.observe_reap(reason);
                    reaped += 1;
                    tracing::info!(
                        sandbox_id = %id,
                        user_id = %user_id,
                        reason = reason.as_str(),
                        setting = reason.key(),
                        idle_secs = idle.as_secs(),
                        age_secs = age.as_secs(),
                        processes_killed = busy.unwrap_or(false),
                        "sandbox reaped"
                    );
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
