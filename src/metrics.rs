//! Counters, one set per core, summed when scraped (DESIGN §8).
//!
//! Each counter has exactly one writer, its own core, so an increment is a
//! relaxed load and store (no locked instruction); the admin scrape reads them
//! from another thread.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;

use crate::server::Driver;

/// Statuses counted in `wsgate_upgrades_total{result}` besides `ok`.
const REJECT_STATUSES: [u16; 8] = [400, 403, 404, 405, 408, 426, 431, 503];
/// Close codes counted in `wsgate_closes_total{code}`; the last slot is 1006
/// (the connection ended without a close frame).
const CLOSE_CODES: [u16; 8] = [1000, 1001, 1002, 1007, 1008, 1009, 1011, 1006];

/// One core's counters.
#[derive(Default)]
pub struct CoreStats {
    driver: AtomicU8,
    connections_active: AtomicU64,
    upgrades_ok: AtomicU64,
    rejects: [AtomicU64; REJECT_STATUSES.len()],
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    closes: [AtomicU64; CLOSE_CODES.len()],
    sticky_hits: AtomicU64,
    sticky_misses: AtomicU64,
    slow_consumer_closes: AtomicU64,
    heartbeat_timeouts: AtomicU64,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

impl CoreStats {
    /// Records the io driver this core runs on.
    pub fn set_driver(&self, driver: Driver) {
        self.driver.store(driver as u8 + 1, Relaxed);
    }

    /// A WebSocket connection opened (+1) or ended (-1).
    pub fn connection_opened(&self) {
        bump(&self.connections_active, 1);
        bump(&self.upgrades_ok, 1);
    }

    /// A WebSocket connection ended.
    pub fn connection_closed(&self) {
        self.connections_active.store(
            self.connections_active.load(Relaxed).saturating_sub(1),
            Relaxed,
        );
    }

    /// A request was answered with an error status.
    pub fn rejected(&self, status: u16) {
        if let Some(i) = REJECT_STATUSES.iter().position(|&s| s == status) {
            bump(&self.rejects[i], 1);
        }
    }

    /// Messages and bytes received.
    pub fn received(&self, messages: u64, bytes: u64) {
        bump(&self.messages_in, messages);
        bump(&self.bytes_in, bytes);
    }

    /// Messages and bytes sent.
    pub fn sent(&self, messages: u64, bytes: u64) {
        bump(&self.messages_out, messages);
        bump(&self.bytes_out, bytes);
    }

    /// A connection ended with this close code (1006: no close frame).
    pub fn closed_with(&self, code: u16) {
        if let Some(i) = CLOSE_CODES.iter().position(|&c| c == code) {
            bump(&self.closes[i], 1);
        }
    }
}

impl CoreStats {
    /// An upgrade carried a valid cookie for a session this node has.
    pub fn sticky_hit(&self) {
        bump(&self.sticky_hits, 1);
    }

    /// An upgrade carried a valid cookie for a session this node does not
    /// know: routing drift, or a session that expired.
    pub fn sticky_miss(&self) {
        bump(&self.sticky_misses, 1);
    }

    /// A peer was closed for not taking its output.
    pub fn slow_consumer_close(&self) {
        bump(&self.slow_consumer_closes, 1);
    }

    /// A peer was cut for not answering a ping.
    pub fn heartbeat_timeout(&self) {
        bump(&self.heartbeat_timeouts, 1);
    }
}

/// All cores' counters.
pub struct Metrics {
    cores: Vec<Arc<CoreStats>>,
}

impl Metrics {
    /// Counters for `cores` cores.
    pub fn new(cores: usize) -> Metrics {
        Metrics {
            cores: (0..cores).map(|_| Arc::new(CoreStats::default())).collect(),
        }
    }

    /// The counters of core `index`.
    pub fn core(&self, index: usize) -> Arc<CoreStats> {
        self.cores[index].clone()
    }

    fn sum(&self, f: impl Fn(&CoreStats) -> &AtomicU64) -> u64 {
        self.cores.iter().map(|c| f(c).load(Relaxed)).sum()
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self, node: &str, draining: bool) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(out, "# HELP wsgate_connections_active Open WebSocket connections per core.\n# TYPE wsgate_connections_active gauge");
        for (i, c) in self.cores.iter().enumerate() {
            let _ = writeln!(
                out,
                "wsgate_connections_active{{core=\"{i}\"}} {}",
                c.connections_active.load(Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP wsgate_upgrades_total Upgrade requests by result (ok or the HTTP status sent).\n# TYPE wsgate_upgrades_total counter");
        let _ = writeln!(
            out,
            "wsgate_upgrades_total{{result=\"ok\"}} {}",
            self.sum(|c| &c.upgrades_ok)
        );
        for (i, status) in REJECT_STATUSES.iter().enumerate() {
            let _ = writeln!(
                out,
                "wsgate_upgrades_total{{result=\"{status}\"}} {}",
                self.sum(|c| &c.rejects[i])
            );
        }
        let _ = writeln!(out, "# HELP wsgate_messages_total WebSocket messages by direction.\n# TYPE wsgate_messages_total counter");
        let _ = writeln!(
            out,
            "wsgate_messages_total{{direction=\"in\"}} {}",
            self.sum(|c| &c.messages_in)
        );
        let _ = writeln!(
            out,
            "wsgate_messages_total{{direction=\"out\"}} {}",
            self.sum(|c| &c.messages_out)
        );
        let _ = writeln!(out, "# HELP wsgate_bytes_total WebSocket payload bytes by direction.\n# TYPE wsgate_bytes_total counter");
        let _ = writeln!(
            out,
            "wsgate_bytes_total{{direction=\"in\"}} {}",
            self.sum(|c| &c.bytes_in)
        );
        let _ = writeln!(
            out,
            "wsgate_bytes_total{{direction=\"out\"}} {}",
            self.sum(|c| &c.bytes_out)
        );
        let _ = writeln!(out, "# HELP wsgate_closes_total Ended WebSocket connections by close code (1006: no close frame).\n# TYPE wsgate_closes_total counter");
        for (i, code) in CLOSE_CODES.iter().enumerate() {
            let _ = writeln!(
                out,
                "wsgate_closes_total{{code=\"{code}\"}} {}",
                self.sum(|c| &c.closes[i])
            );
        }
        let _ = writeln!(out, "# HELP wsgate_sticky_hits_total Upgrades whose cookie named a session this node has.\n# TYPE wsgate_sticky_hits_total counter");
        let _ = writeln!(
            out,
            "wsgate_sticky_hits_total {}",
            self.sum(|c| &c.sticky_hits)
        );
        let _ = writeln!(out, "# HELP wsgate_sticky_misses_total Upgrades whose valid cookie named a session this node does not have (routing drift).\n# TYPE wsgate_sticky_misses_total counter");
        let _ = writeln!(
            out,
            "wsgate_sticky_misses_total {}",
            self.sum(|c| &c.sticky_misses)
        );
        let _ = writeln!(out, "# HELP wsgate_slow_consumer_closes_total Connections closed for not reading their output.\n# TYPE wsgate_slow_consumer_closes_total counter");
        let _ = writeln!(
            out,
            "wsgate_slow_consumer_closes_total {}",
            self.sum(|c| &c.slow_consumer_closes)
        );
        let _ = writeln!(out, "# HELP wsgate_heartbeat_timeouts_total Connections cut for not answering a ping in time.\n# TYPE wsgate_heartbeat_timeouts_total counter");
        let _ = writeln!(
            out,
            "wsgate_heartbeat_timeouts_total {}",
            self.sum(|c| &c.heartbeat_timeouts)
        );
        let _ = writeln!(
            out,
            "# HELP wsgate_draining 1 from SIGTERM until exit.\n# TYPE wsgate_draining gauge"
        );
        let _ = writeln!(out, "wsgate_draining {}", u8::from(draining));
        let _ = writeln!(out, "# HELP wsgate_io_driver The io driver in use (1 for the active one).\n# TYPE wsgate_io_driver gauge");
        let uring = self
            .cores
            .iter()
            .filter(|c| c.driver.load(Relaxed) == Driver::IoUring as u8 + 1)
            .count();
        let _ = writeln!(
            out,
            "wsgate_io_driver{{driver=\"io_uring\"}} {}",
            u8::from(uring > 0)
        );
        let _ = writeln!(
            out,
            "wsgate_io_driver{{driver=\"epoll\"}} {}",
            u8::from(uring < self.cores.len())
        );
        let _ = writeln!(
            out,
            "# HELP wsgate_info Static facts about this node.\n# TYPE wsgate_info gauge"
        );
        let _ = writeln!(
            out,
            "wsgate_info{{node=\"{node}\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}
