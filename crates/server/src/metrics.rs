//! Prometheus text-format metrics, kept as plain atomics (no metrics framework): create
//! latency histogram, creates/deletes/reaps (also by reason), 429s by the limit they hit,
//! requests by status class. Sandboxes by status and exec counts are read from the backend
//! at scrape time.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::limits::{Limit, ReapReason};

/// Histogram bucket bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Counters of one server.
#[derive(Debug, Default)]
pub struct Metrics {
    create_buckets: [AtomicU64; 12],
    create_count: AtomicU64,
    create_sum_micros: AtomicU64,
    /// Sandboxes created (not idempotent repeats).
    pub created: AtomicU64,
    /// Sandboxes deleted by request.
    pub deleted: AtomicU64,
    /// Sandboxes reaped (every reason).
    pub reaped: AtomicU64,
    /// Sandboxes reaped, by [`ReapReason`] (in `ReapReason::ALL` order).
    pub reaped_by: [AtomicU64; 3],
    /// Creates refused for capacity (every limit).
    pub capacity_refusals: AtomicU64,
    /// Creates refused, by [`Limit`] (in `Limit::ALL` order).
    pub refused_by: [AtomicU64; 3],
    /// Responses by class: 2xx, 4xx, 5xx.
    pub responses: [AtomicU64; 3],
}

impl Metrics {
    /// Records one create call's latency.
    pub fn observe_create(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.create_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.create_count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.create_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Records a reap.
    pub fn observe_reap(&self, reason: ReapReason) {
        self.reaped.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = ReapReason::ALL.iter().position(|r| *r == reason) {
            self.reaped_by[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a create refused at `limit`.
    pub fn observe_refusal(&self, limit: Limit) {
        self.capacity_refusals.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = Limit::ALL.iter().position(|l| *l == limit) {
            self.refused_by[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a response status.
    pub fn observe_status(&self, status: u16) {
        let idx = match status {
            500.. => 2,
            400..=499 => 1,
            _ => 0,
        };
        self.responses[idx].fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the text format. `by_status`, `execs` and `exec_refusals` (execs refused at
    /// `max_concurrent_execs_per_user`) come from the backend.
    pub fn render(
        &self,
        backend: &str,
        by_status: &[(&str, u64)],
        execs: u64,
        exec_refusals: u64,
    ) -> String {
        let mut s = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(s, "# HELP paddock_sandboxes Sandboxes by status.");
        let _ = writeln!(s, "# TYPE paddock_sandboxes gauge");
        for (status, n) in by_status {
            let _ = writeln!(
                s,
                "paddock_sandboxes{{backend=\"{backend}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            s,
            "# HELP paddock_create_duration_seconds Latency of POST /api/sandboxes."
        );
        let _ = writeln!(s, "# TYPE paddock_create_duration_seconds histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "paddock_create_duration_seconds_bucket{{le=\"{b}\"}} {}",
                load(&self.create_buckets[i])
            );
        }
        let count = load(&self.create_count);
        let _ = writeln!(
            s,
            "paddock_create_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = load(&self.create_sum_micros) as f64 / 1e6;
        let _ = writeln!(s, "paddock_create_duration_seconds_sum {sum}");
        let _ = writeln!(s, "paddock_create_duration_seconds_count {count}");
        for (name, help, v) in [
            (
                "paddock_sandboxes_created_total",
                "Sandboxes created.",
                load(&self.created),
            ),
            (
                "paddock_sandboxes_deleted_total",
                "Sandboxes deleted by request.",
                load(&self.deleted),
            ),
            (
                "paddock_sandboxes_reaped_total",
                "Sandboxes reaped (idle, busy-idle or past their lifetime).",
                load(&self.reaped),
            ),
            (
                "paddock_capacity_refusals_total",
                "Creates refused with 429.",
                load(&self.capacity_refusals),
            ),
            (
                "paddock_execs_total",
                "Commands run through sandbox URLs.",
                execs,
            ),
        ] {
            let _ = writeln!(s, "# HELP {name} {help}");
            let _ = writeln!(s, "# TYPE {name} counter");
            let _ = writeln!(s, "{name} {v}");
        }
        let _ = writeln!(
            s,
            "# HELP paddock_sandbox_reaps_total Sandboxes reaped, by the setting that fired."
        );
        let _ = writeln!(s, "# TYPE paddock_sandbox_reaps_total counter");
        for (i, r) in ReapReason::ALL.iter().enumerate() {
            let _ = writeln!(
                s,
                "paddock_sandbox_reaps_total{{reason=\"{}\"}} {}",
                r.as_str(),
                load(&self.reaped_by[i])
            );
        }
        let _ = writeln!(
            s,
            "# HELP paddock_limit_refusals_total Requests refused with 429, by the limit they hit."
        );
        let _ = writeln!(s, "# TYPE paddock_limit_refusals_total counter");
        for (i, l) in Limit::ALL.iter().enumerate() {
            let n = match l {
                Limit::MaxConcurrentExecsPerUser => exec_refusals,
                _ => load(&self.refused_by[i]),
            };
            let _ = writeln!(
                s,
                "paddock_limit_refusals_total{{limit=\"{}\"}} {n}",
                l.as_str()
            );
        }
        let _ = writeln!(
            s,
            "# HELP paddock_http_responses_total Control-plane responses by status class."
        );
        let _ = writeln!(s, "# TYPE paddock_http_responses_total counter");
        for (i, class) in ["2xx", "4xx", "5xx"].iter().enumerate() {
            let _ = writeln!(
                s,
                "paddock_http_responses_total{{class=\"{class}\"}} {}",
                load(&self.responses[i])
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.observe_create(Duration::from_micros(300));
        m.observe_create(Duration::from_millis(30));
        m.observe_reap(ReapReason::BusyIdle);
        m.observe_refusal(Limit::MaxSandboxesPerUser);
        let text = m.render("local", &[("Running", 2)], 7, 3);
        assert!(text.contains("paddock_create_duration_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("paddock_create_duration_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("paddock_create_duration_seconds_count 2"));
        assert!(text.contains("paddock_sandboxes{backend=\"local\",status=\"Running\"} 2"));
        assert!(text.contains("paddock_execs_total 7"));
        assert!(text.contains("paddock_sandboxes_reaped_total 1"));
        assert!(text.contains("paddock_sandbox_reaps_total{reason=\"busy_idle\"} 1"));
        assert!(text.contains("paddock_sandbox_reaps_total{reason=\"idle\"} 0"));
        assert!(text.contains("paddock_capacity_refusals_total 1"));
        assert!(text.contains("paddock_limit_refusals_total{limit=\"max_sandboxes_per_user\"} 1"));
        assert!(
            text.contains(
                "paddock_limit_refusals_total{limit=\"max_concurrent_execs_per_user\"} 3"
            )
        );
    }
}
