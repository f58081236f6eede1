//! Tenant limits of the control plane: which limit a 429 names, and the per-user cap on
//! concurrent execs through sandbox URLs.
//!
//! Invariant: a user never has more than `max` execs in flight across all of that user's
//! sandboxes. The hot path is one `fetch_add` (and one `fetch_sub` when the exec ends) on
//! a counter shared by that user's sandboxes; the registry lock is taken only when a
//! sandbox starts.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use paddock_core::UserId;

/// A limit a request can hit; its name is the configuration key (`server.{name}`) and the
/// `limit` field of the 429 it causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// Live sandboxes on this server.
    MaxSandboxes,
    /// Live sandboxes of one user.
    MaxSandboxesPerUser,
    /// Execs in flight of one user, across that user's sandboxes.
    MaxConcurrentExecsPerUser,
}

impl Limit {
    /// Every limit, for metrics.
    pub const ALL: [Limit; 3] = [
        Self::MaxSandboxes,
        Self::MaxSandboxesPerUser,
        Self::MaxConcurrentExecsPerUser,
    ];

    /// The configuration key under `server:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxSandboxes => "max_sandboxes",
            Self::MaxSandboxesPerUser => "max_sandboxes_per_user",
            Self::MaxConcurrentExecsPerUser => "max_concurrent_execs_per_user",
        }
    }
}

/// Why the reaper destroyed a sandbox; the name is the metric label, `key()` the setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReapReason {
    /// No API activity for `idle_timeout_secs` and no process running.
    Idle,
    /// No API activity for `busy_idle_timeout_secs`, processes or not.
    BusyIdle,
    /// Older than `max_lifetime_secs`.
    MaxLifetime,
}

impl ReapReason {
    /// Every reason, for metrics.
    pub const ALL: [ReapReason; 3] = [Self::Idle, Self::BusyIdle, Self::MaxLifetime];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::BusyIdle => "busy_idle",
            Self::MaxLifetime => "max_lifetime",
        }
    }

    /// The setting that fired (`server.{key}`).
    pub fn key(self) -> &'static str {
        match self {
            Self::Idle => "idle_timeout_secs",
            Self::BusyIdle => "busy_idle_timeout_secs",
            Self::MaxLifetime => "max_lifetime_secs",
        }
    }
}

/// The agent routes that run a command (`POST`): the native streamed exec, the two AIO
/// shells and the tool layer's `bash`. Paths are as the sandbox's router sees them (the
/// capability prefix already stripped).
pub const EXEC_ROUTES: [&str; 4] = [
    "/v1/exec",
    "/v1/shell/exec",
    "/v1/bash/exec",
    "/v1/tools/bash",
];

/// Whether `path` runs a command.
pub fn is_exec_route(path: &str) -> bool {
    EXEC_ROUTES.contains(&path)
}

/// The per-user exec counters of one server; cloning shares them.
#[derive(Debug, Clone)]
pub struct UserExecLimits {
    max: usize,
    users: Arc<Mutex<HashMap<UserId, Weak<AtomicUsize>>>>,
    refusals: Arc<AtomicU64>,
}

impl UserExecLimits {
    /// Counters with at most `max` execs in flight per user (0: no cap, still counted).
    pub fn new(max: usize) -> Self {
        Self {
            max,
            users: Arc::default(),
            refusals: Arc::default(),
        }
    }

    /// The cap (0: none).
    pub fn max(&self) -> usize {
        self.max
    }

    /// Execs refused so far.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// The counter of `user`, shared by every sandbox of that user that holds it.
    pub fn for_user(&self, user: &UserId) -> UserExecs {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let count = match users.get(user).and_then(Weak::upgrade) {
            Some(c) => c,
            None => {
                if users.len() >= 1024 {
                    users.retain(|_, w| w.strong_count() > 0);
                }
                let c = Arc::new(AtomicUsize::new(0));
                users.insert(user.clone(), Arc::downgrade(&c));
                c
            }
        };
        UserExecs {
            count,
            max: self.max,
            refusals: self.refusals.clone(),
        }
    }
}

/// One user's exec counter, as one of the user's sandboxes holds it.
#[derive(Debug, Clone)]
pub struct UserExecs {
    count: Arc<AtomicUsize>,
    max: usize,
    refusals: Arc<AtomicU64>,
}

impl UserExecs {
    /// A permit for one exec, or the number already in flight when the cap is reached.
    pub fn try_acquire(&self) -> Result<ExecPermit, usize> {
        let before = self.count.fetch_add(1, Ordering::AcqRel);
        if self.max != 0 && before >= self.max {
            self.count.fetch_sub(1, Ordering::AcqRel);
            self.refusals.fetch_add(1, Ordering::Relaxed);
            return Err(before);
        }
        Ok(ExecPermit {
            count: self.count.clone(),
        })
    }

    /// Execs of this user in flight now.
    pub fn in_flight(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// The cap (0: none).
    pub fn max(&self) -> usize {
        self.max
    }
}

/// One exec in flight; dropping it (when the response body ends or is dropped) frees the slot.
#[derive(Debug)]
pub struct ExecPermit {
    count: Arc<AtomicUsize>,
}

impl Drop for ExecPermit {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps `guard` alive until the body is finished or dropped, so what
/// the guard stands for (an exec permit, a request in flight) lasts as long as a streamed
/// response does. Frames and the size hint pass through unchanged.
#[derive(Debug)]
pub struct Guarded<G> {
    inner: Body,
    guard: Option<G>,
}

impl<G: Send + Unpin + 'static> Guarded<G> {
    /// Wraps `inner`.
    pub fn wrap(inner: Body, guard: G) -> Body {
        Body::new(Self {
            inner,
            guard: Some(guard),
        })
    }
}

impl<G: Unpin> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            // Finished: release now rather than when hyper drops the body.
            this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn per_user_cap_is_shared_across_sandboxes_and_freed_on_drop() {
        let limits = UserExecLimits::new(2);
        let (a1, a2, b) = (
            limits.for_user(&user("alice")),
            limits.for_user(&user("alice")),
            limits.for_user(&user("bob")),
        );
        let p1 = a1.try_acquire().expect("first");
        let _p2 = a2.try_acquire().expect("second, other sandbox");
        assert_eq!(a1.try_acquire().err(), Some(2), "alice is at her cap");
        assert_eq!(a2.try_acquire().err(), Some(2), "on every sandbox of hers");
        let _pb = b.try_acquire().expect("bob is not");
        drop(p1);
        assert!(a2.try_acquire().is_ok(), "a finished exec frees its slot");
        assert_eq!(limits.refusals(), 2);
    }

    #[test]
    fn zero_means_no_cap_but_still_counts() {
        let limits = UserExecLimits::new(0);
        let a = limits.for_user(&user("alice"));
        let permits: Vec<_> = (0..100).map(|_| a.try_acquire().expect("no cap")).collect();
        assert_eq!(a.in_flight(), 100);
        drop(permits);
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    fn exec_routes() {
        assert!(is_exec_route("/v1/exec"));
        assert!(is_exec_route("/v1/shell/exec"));
        assert!(is_exec_route("/v1/tools/bash"));
        assert!(!is_exec_route("/v1/file/read"));
        assert!(!is_exec_route("/v1/tools/read_file"));
    }

    #[tokio::test]
    async fn guarded_body_holds_its_guard_until_the_end() {
        let limits = UserExecLimits::new(1);
        let a = limits.for_user(&user("alice"));
        let permit = a.try_acquire().expect("first");
        let body = Guarded::wrap(Body::from("hello"), permit);
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(5));
        assert!(a.try_acquire().is_err(), "held while the body is unread");
        let bytes = axum::body::to_bytes(body, 1024).await.expect("read");
        assert_eq!(&bytes[..], b"hello");
        assert!(a.try_acquire().is_ok(), "released once read");
    }
}
