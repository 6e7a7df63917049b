//! The auth hook's counters (`--auth-hook`, DESIGN §11): calls by result and
//! a latency histogram, one [`HookStats`] per core, summed when scraped.
//!
//! Like the other per-core counters, each has one writer (its core's hook
//! client), so recording is relaxed loads and stores, no locked instruction.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// How a hook call ended: the `result` label of
/// `wsgate_auth_hook_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookResult {
    /// `200` with a valid body.
    Granted,
    /// `401`, passed on.
    Unauthorized,
    /// `403`, passed on.
    Forbidden,
    /// No complete answer within `--auth-hook-timeout` (waiting for a slot
    /// included).
    Timeout,
    /// Could not connect, the connection failed, or a status other than
    /// 200/401/403.
    Error,
    /// An answer that is not HTTP, too large, or a `200` whose body is not
    /// the documented JSON.
    Malformed,
}

impl HookResult {
    /// Every result, in the order they are rendered.
    pub const ALL: [HookResult; 6] = [
        HookResult::Granted,
        HookResult::Unauthorized,
        HookResult::Forbidden,
        HookResult::Timeout,
        HookResult::Error,
        HookResult::Malformed,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            HookResult::Granted => "granted",
            HookResult::Unauthorized => "401",
            HookResult::Forbidden => "403",
            HookResult::Timeout => "timeout",
            HookResult::Error => "error",
            HookResult::Malformed => "malformed",
        }
    }
}

/// Upper bounds of the latency buckets, in seconds (as rendered) and in
/// microseconds (as compared); `+Inf` is the extra last slot.
const BOUNDS: [(&str, u64); 12] = [
    ("0.001", 1_000),
    ("0.0025", 2_500),
    ("0.005", 5_000),
    ("0.01", 10_000),
    ("0.025", 25_000),
    ("0.05", 50_000),
    ("0.1", 100_000),
    ("0.25", 250_000),
    ("0.5", 500_000),
    ("1", 1_000_000),
    ("2.5", 2_500_000),
    ("5", 5_000_000),
];

/// One core's hook counters.
#[derive(Default, Debug)]
pub struct HookStats {
    results: [AtomicU64; HookResult::ALL.len()],
    latency: Latency,
}

/// One core's latency histogram of a hook's calls (one writer).
#[derive(Default, Debug)]
pub struct Latency {
    /// Calls per bucket (not cumulative): `buckets[i]` counts latencies in
    /// `(BOUNDS[i-1], BOUNDS[i]]`, the last slot those over 5 s.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

impl Latency {
    /// Counts one call that took `latency`.
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let slot = BOUNDS
            .iter()
            .position(|&(_, le)| micros <= le)
            .unwrap_or(BOUNDS.len());
        bump(&self.buckets[slot], 1);
        bump(&self.sum_micros, micros);
    }

    /// Renders histogram `name` summed over `all` cores.
    pub fn render(out: &mut String, name: &str, help: &str, all: &[&Latency]) {
        let sum = |f: &dyn Fn(&Latency) -> &AtomicU64| -> u64 {
            all.iter()
                .map(|s| f(s).load(Relaxed))
                .fold(0, u64::wrapping_add)
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, (le, _)) in BOUNDS.iter().enumerate() {
            cumulative = cumulative.wrapping_add(sum(&|s| &s.buckets[i]));
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = cumulative.wrapping_add(sum(&|s| &s.buckets[BOUNDS.len()]));
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let micros = sum(&|s| &s.sum_micros);
        let _ = writeln!(
            out,
            "{name}_sum {}.{:06}",
            micros / 1_000_000,
            micros % 1_000_000
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

impl HookStats {
    /// Counts one call and how long it took (from the caller's point of
    /// view: waiting for a slot, connecting, writing and reading).
    pub fn record(&self, result: HookResult, latency: Duration) {
        bump(&self.results[result as usize], 1);
        self.latency.record(latency);
    }

    /// Calls that ended with `result` on this core.
    pub fn count(&self, result: HookResult) -> u64 {
        self.results[result as usize].load(Relaxed)
    }

    /// Renders both families, summed over `all` cores, in the Prometheus
    /// text format. Every `result` label is present, zeros included.
    pub fn render(out: &mut String, all: &[&HookStats]) {
        let sum = |f: &dyn Fn(&HookStats) -> &AtomicU64| -> u64 {
            all.iter()
                .map(|s| f(s).load(Relaxed))
                .fold(0, u64::wrapping_add)
        };
        let name = "wsgate_auth_hook_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Auth hook calls by result.\n# TYPE {name} counter"
        );
        for r in HookResult::ALL {
            let n = sum(&|s| &s.results[r as usize]);
            let _ = writeln!(out, "{name}{{result=\"{}\"}} {n}", r.label());
        }

        let latencies: Vec<&Latency> = all.iter().map(|s| &s.latency).collect();
        Latency::render(
            out,
            "wsgate_auth_hook_duration_seconds",
            "Auth hook call latency, waiting for a connection slot included.",
            &latencies,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn empty_renders_every_label_and_bucket() {
        let mut out = String::new();
        HookStats::render(&mut out, &[]);
        let want = "\
# HELP wsgate_auth_hook_requests_total Auth hook calls by result.
# TYPE wsgate_auth_hook_requests_total counter
wsgate_auth_hook_requests_total{result=\"granted\"} 0
wsgate_auth_hook_requests_total{result=\"401\"} 0
wsgate_auth_hook_requests_total{result=\"403\"} 0
wsgate_auth_hook_requests_total{result=\"timeout\"} 0
wsgate_auth_hook_requests_total{result=\"error\"} 0
wsgate_auth_hook_requests_total{result=\"malformed\"} 0
# HELP wsgate_auth_hook_duration_seconds Auth hook call latency, waiting for a connection slot included.
# TYPE wsgate_auth_hook_duration_seconds histogram
wsgate_auth_hook_duration_seconds_bucket{le=\"0.001\"} 0
wsgate_auth_hook_duration_seconds_bucket{le=\"0.0025\"} 0
wsgate_auth_hook_duration_seconds_bucket{le=\"0.005\"} 0
wsgate_auth_hook_duration_seconds_bucket{le=\"0.01\"} 0
wsgate_auth_hook_duration_seconds_bucket{le=\"0.025\"} 0
wsgate_auth_hook_duration_seconds_bucket{le=\"0.05\"} 0
wsgate_auth_hook_duration_seconds_bucket{le=\"0.1\"} 0
wsgate_auth_hook_duration_seconds_bucket{le=\"0.25\"} 0
wsgate_auth_hook_duration_seconds_bucket{le=\"0.5\"} 0
wsgate_auth_hook_duration_seconds_bucket{le=\"1\"} 0
wsgate_auth_hook_duration_seconds_bucket{le=\"2.5\"} 0
wsgate_auth_hook_duration_seconds_bucket{le=\"5\"} 0
wsgate_auth_hook_duration_seconds_bucket{le=\"+Inf\"} 0
wsgate_auth_hook_duration_seconds_sum 0.000000
wsgate_auth_hook_duration_seconds_count 0
";
        assert_eq!(out, want);
        let mut again = String::new();
        HookStats::render(&mut again, &[&HookStats::default(), &HookStats::default()]);
        assert_eq!(again, want);
    }

    #[test]
    fn summed_over_cores_and_cumulative() {
        let (a, b) = (HookStats::default(), HookStats::default());
        a.record(HookResult::Granted, Duration::from_micros(1_000)); // le 0.001 (inclusive)
        a.record(HookResult::Granted, Duration::from_micros(1_001)); // le 0.0025
        b.record(HookResult::Granted, ms(30)); // le 0.05
        b.record(HookResult::Unauthorized, ms(1));
        a.record(HookResult::Forbidden, ms(2));
        b.record(HookResult::Timeout, ms(2_000)); // le 2.5
        a.record(HookResult::Error, ms(7_000)); // +Inf only
        b.record(HookResult::Malformed, ms(0));
        assert_eq!(a.count(HookResult::Granted), 2);
        assert_eq!(b.count(HookResult::Granted), 1);

        let mut out = String::new();
        HookStats::render(&mut out, &[&a, &b]);
        let value = |series: &str| -> String {
            let line = out
                .lines()
                .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
                .unwrap_or_else(|| panic!("{series} missing in\n{out}"));
            line[series.len() + 1..].to_string()
        };
        let requests = "wsgate_auth_hook_requests_total";
        for (label, n) in [
            ("granted", "3"),
            ("401", "1"),
            ("403", "1"),
            ("timeout", "1"),
            ("error", "1"),
            ("malformed", "1"),
        ] {
            assert_eq!(value(&format!("{requests}{{result=\"{label}\"}}")), n);
        }
        let bucket = |le: &str| {
            value(&format!(
                "wsgate_auth_hook_duration_seconds_bucket{{le=\"{le}\"}}"
            ))
        };
        for (le, n) in [
            ("0.001", "3"),
            ("0.0025", "5"),
            ("0.005", "5"),
            ("0.025", "5"),
            ("0.05", "6"),
            ("1", "6"),
            ("2.5", "7"),
            ("5", "7"),
            ("+Inf", "8"),
        ] {
            assert_eq!(bucket(le), n, "le={le}");
        }
        assert_eq!(value("wsgate_auth_hook_duration_seconds_count"), "8");
        // 1 + 1.001 + 30 + 1 + 2 + 2000 + 7000 + 0 ms
        assert_eq!(value("wsgate_auth_hook_duration_seconds_sum"), "9.035001");
    }

    #[test]
    fn huge_latency_saturates() {
        let s = HookStats::default();
        s.record(HookResult::Timeout, Duration::MAX);
        let mut out = String::new();
        HookStats::render(&mut out, &[&s]);
        assert!(out.contains("_bucket{le=\"5\"} 0\n"));
        assert!(out.contains("_bucket{le=\"+Inf\"} 1\n"));
    }
}
