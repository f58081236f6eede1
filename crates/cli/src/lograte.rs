//! A bound on warning and error lines per call site, so a tenant that can make the server
//! warn once per request (a failing file operation, a refused command) cannot flood the
//! log and the disk it is written to.
//!
//! Invariant: in any window of [`WINDOW`], at most [`PER_WINDOW`] warning or error events of
//! one call site are written; the rest are counted, and the next one written after them is
//! preceded by a line saying how many were left out. Informational lines (one per request)
//! are not limited: their volume follows the request rate, which has its own limits.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::subscriber::Interest;
use tracing::{Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// The window the count of one call site's lines is kept over.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Warning and error lines one call site may write per window.
pub const PER_WINDOW: u32 = 50;

#[derive(Debug)]
struct Site {
    window_start: Instant,
    written: u32,
    suppressed: u64,
}

/// The per-call-site limit, as a `tracing_subscriber` filter.
#[derive(Debug, Default)]
pub struct RateLimit {
    sites: Mutex<HashMap<usize, Site>>,
}

/// What to do with one event.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Write { suppressed_before: u64 },
    Drop,
}

impl RateLimit {
    fn judge(&self, site: usize, now: Instant) -> Verdict {
        let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        let s = sites.entry(site).or_insert(Site {
            window_start: now,
            written: 0,
            suppressed: 0,
        });
        if now.duration_since(s.window_start) >= WINDOW {
            s.window_start = now;
            s.written = 0;
        }
        if s.written >= PER_WINDOW {
            s.suppressed += 1;
            return Verdict::Drop;
        }
        s.written += 1;
        Verdict::Write {
            suppressed_before: std::mem::take(&mut s.suppressed),
        }
    }
}

impl<S> Filter<S> for RateLimit {
    fn enabled(&self, meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        if !meta.is_event() || *meta.level() > Level::WARN || meta.target() == "paddock::lograte" {
            return true;
        }
        // The call site's metadata is static: its address names it.
        let site = std::ptr::from_ref(meta) as usize;
        match self.judge(site, Instant::now()) {
            Verdict::Drop => false,
            Verdict::Write { suppressed_before } => {
                if suppressed_before > 0 {
                    // No lock is held here, so this nested event is filtered like any other.
                    tracing::warn!(
                        target: "paddock::lograte",
                        suppressed = suppressed_before,
                        site = meta.name(),
                        "lines of one call site were left out (more than {PER_WINDOW} per {}s)",
                        WINDOW.as_secs()
                    );
                }
                true
            }
        }
    }

    fn callsite_enabled(&self, _meta: &'static Metadata<'static>) -> Interest {
        // Decided per event, never cached per call site.
        Interest::sometimes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_limit_and_the_gap_is_reported() {
        let r = RateLimit::default();
        let t0 = Instant::now();
        for _ in 0..PER_WINDOW {
            assert_eq!(
                r.judge(1, t0),
                Verdict::Write {
                    suppressed_before: 0
                }
            );
        }
        for _ in 0..1000 {
            assert_eq!(r.judge(1, t0), Verdict::Drop);
        }
        // Another call site has its own budget.
        assert_eq!(
            r.judge(2, t0),
            Verdict::Write {
                suppressed_before: 0
            }
        );
        // The next window writes again, first saying how many were left out.
        assert_eq!(
            r.judge(1, t0 + WINDOW),
            Verdict::Write {
                suppressed_before: 1000
            }
        );
        assert_eq!(
            r.judge(1, t0 + WINDOW),
            Verdict::Write {
                suppressed_before: 0
            }
        );
    }
}
