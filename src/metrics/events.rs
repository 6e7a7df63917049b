//! The events hook's counters (`--events-hook`, DESIGN §12): events by
//! type and result, the queue's depth and the requests' latency; one
//! [`EventStats`] per core, summed when scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::hook::{bump, Latency};

/// The `type` label, in the order of [`EventStats::count`]'s `kind`.
pub const TYPES: [&str; 3] = ["connect", "disconnect", "send"];

/// How an event ended: the `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventResult {
    /// The backend answered `200` (for a `send`: with a reply).
    Ok = 0,
    /// A `send` the backend failed (non-`200`, no answer, or a reply that
    /// was an error status): the client got `err <status> send failed`.
    Failed = 1,
    /// A `connect`/`disconnect` given up after `--events-retry`, or one
    /// that found the queue full.
    Dropped = 2,
    /// A `send` refused because the queue was full (`err 503 busy`).
    Busy = 3,
}

const RESULTS: [&str; 4] = ["ok", "failed", "dropped", "busy"];

/// One core's events hook counters.
#[derive(Default, Debug)]
pub struct EventStats {
    counts: [[AtomicU64; RESULTS.len()]; TYPES.len()],
    depth: AtomicU64,
    latency: Latency,
}

impl EventStats {
    /// `n` events of type `kind` (an index into [`TYPES`]) ended with `result`.
    pub fn count(&self, kind: usize, result: EventResult, n: u64) {
        bump(&self.counts[kind][result as usize], n);
    }

    /// Events waiting on this core now.
    pub fn set_depth(&self, n: usize) {
        self.depth.store(n as u64, Relaxed);
    }

    /// One request to the hook and how long it took.
    pub fn request(&self, took: std::time::Duration) {
        self.latency.record(took);
    }

    /// The three families, summed over `all` cores.
    pub fn render(out: &mut String, all: &[&EventStats]) {
        let name = "wsgate_events_total";
        let _ = writeln!(
            out,
            "# HELP {name} Events of the events hook by type and result.\n# TYPE {name} counter"
        );
        for (k, kind) in TYPES.iter().enumerate() {
            for (r, result) in RESULTS.iter().enumerate() {
                let n: u64 = all.iter().map(|s| s.counts[k][r].load(Relaxed)).sum();
                let _ = writeln!(out, "{name}{{type=\"{kind}\",result=\"{result}\"}} {n}");
            }
        }
        let name = "wsgate_events_queue_depth";
        let depth: u64 = all.iter().map(|s| s.depth.load(Relaxed)).sum();
        let _ = writeln!(
            out,
            "# HELP {name} Events waiting for the events hook.\n# TYPE {name} gauge\n{name} {depth}"
        );
        let latencies: Vec<&Latency> = all.iter().map(|s| &s.latency).collect();
        Latency::render(
            out,
            "wsgate_events_hook_seconds",
            "Events hook request latency (one request carries up to 100 events).",
            &latencies,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summed_over_cores_with_every_label() {
        let (a, b) = (EventStats::default(), EventStats::default());
        a.count(2, EventResult::Ok, 3);
        b.count(2, EventResult::Busy, 1);
        b.count(0, EventResult::Dropped, 2);
        a.set_depth(4);
        b.set_depth(5);
        a.request(std::time::Duration::from_millis(3));
        let mut out = String::new();
        EventStats::render(&mut out, &[&a, &b]);
        assert!(out.contains("wsgate_events_total{type=\"send\",result=\"ok\"} 3\n"));
        assert!(out.contains("wsgate_events_total{type=\"send\",result=\"busy\"} 1\n"));
        assert!(out.contains("wsgate_events_total{type=\"connect\",result=\"dropped\"} 2\n"));
        assert!(out.contains("wsgate_events_total{type=\"disconnect\",result=\"ok\"} 0\n"));
        assert!(out.contains("wsgate_events_queue_depth 9\n"));
        assert!(out.contains("wsgate_events_hook_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(out.contains("wsgate_events_hook_seconds_count 1\n"));
    }
}
