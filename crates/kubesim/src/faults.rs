//! Fault injection: latency added to every request, a random share of requests answered
//! 500, and targeted rules failing the next N requests of one method and path.
//!
//! Invariant: a fault is decided before the request touches the store, so an injected 500
//! never leaves a change behind.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::Response;

use crate::http::status;
use crate::store::{Sim, SimOptions};

/// The faults in force.
pub(crate) struct Faults {
    latency_ms: AtomicU64,
    error_ppm: AtomicU64,
    rules: Mutex<Vec<FaultRule>>,
}

/// A targeted fault: the next `count` requests with this method whose path contains
/// `path_contains` get a 500.
#[derive(Debug, Clone)]
struct FaultRule {
    method: Method,
    path_contains: String,
    count: usize,
}

impl Faults {
    /// The faults `opts` asks for from the start.
    pub(crate) fn new(opts: &SimOptions) -> Self {
        Self {
            latency_ms: AtomicU64::new(opts.latency.as_millis() as u64),
            error_ppm: AtomicU64::new((opts.error_rate.clamp(0.0, 1.0) * 1e6) as u64),
            rules: Mutex::new(Vec::new()),
        }
    }
}

impl Sim {
    /// Sets the added latency.
    pub fn set_latency(&self, d: Duration) {
        self.faults
            .latency_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Sets the fraction of requests answered 500.
    pub fn set_error_rate(&self, rate: f64) {
        self.faults
            .error_ppm
            .store((rate.clamp(0.0, 1.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// Answers the next `count` requests of `method` whose path contains `path_contains`
    /// with a 500 (for testing what a client does when one step of a sequence fails).
    pub fn fail_next(&self, method: &str, path_contains: &str, count: usize) {
        if let (Ok(m), Ok(mut r)) = (
            Method::from_bytes(method.as_bytes()),
            self.faults.rules.lock(),
        ) {
            r.push(FaultRule {
                method: m,
                path_contains: path_contains.to_owned(),
                count,
            });
        }
    }

    fn targeted_fault(&self, method: &Method, path: &str) -> bool {
        let Ok(mut rules) = self.faults.rules.lock() else {
            return false;
        };
        let hit = rules
            .iter_mut()
            .find(|r| r.count > 0 && r.method == *method && path.contains(&r.path_contains));
        match hit {
            Some(r) => {
                r.count -= 1;
                true
            }
            None => false,
        }
    }

    /// Applies the faults to one request: waits the added latency, then answers a 500 when
    /// the error rate or a targeted rule says so.
    pub(crate) async fn inject_faults(&self, method: &Method, path: &str) -> Option<Response> {
        let lat = self.faults.latency_ms.load(Ordering::Relaxed);
        if lat > 0 {
            tokio::time::sleep(Duration::from_millis(lat)).await;
        }
        let ppm = self.faults.error_ppm.load(Ordering::Relaxed);
        if (ppm > 0 && self.roll() < ppm) || self.targeted_fault(method, path) {
            return Some(status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "injected fault",
            ));
        }
        None
    }
}
