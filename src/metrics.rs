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
    /// 0: no `--redis`; 1: this core's Redis connection is down; 2: up.
    redis: AtomicU8,
    redis_failures: AtomicU64,
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
    sessions_new: AtomicU64,
    sessions_resumed: AtomicU64,
    sessions_ended: AtomicU64,
    sessions_held: AtomicU64,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

impl CoreStats {
    /// Records the io driver this core runs on.
    pub fn set_driver(&self, driver: Driver) {
        self.driver.store(driver as u8 + 1, Relaxed);
    }

    /// An upgrade was answered with 101.
    pub fn upgraded(&self) {
        bump(&self.upgrades_ok, 1);
    }

    /// A WebSocket connection started running on this core.
    pub fn connection_opened(&self) {
        bump(&self.connections_active, 1);
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

    /// Copies the hub's session counters.
    pub fn set_sessions(&self, hub: &crate::hub::Hub) {
        self.sessions_new.store(hub.stats.sessions_new, Relaxed);
        self.sessions_resumed
            .store(hub.stats.sessions_resumed, Relaxed);
        self.sessions_ended.store(hub.stats.sessions_ended, Relaxed);
        self.sessions_held
            .store(hub.session_count() as u64, Relaxed);
    }

    /// This core's Redis connection came up (`true`) or went down.
    pub fn set_redis_up(&self, up: bool) {
        if !up && self.redis.load(Relaxed) == 2 {
            bump(&self.redis_failures, 1);
        }
        self.redis.store(if up { 2 } else { 1 }, Relaxed);
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
        let o = &mut out;
        family(
            o,
            "wsgate_connections_active",
            "gauge",
            "Open WebSocket connections per core.",
        );
        for (i, c) in self.cores.iter().enumerate() {
            let _ = writeln!(
                o,
                "wsgate_connections_active{{core=\"{i}\"}} {}",
                c.connections_active.load(Relaxed)
            );
        }
        family(
            o,
            "wsgate_upgrades_total",
            "counter",
            "Upgrade requests by result (ok or the HTTP status sent).",
        );
        sample(
            o,
            "wsgate_upgrades_total",
            "result=\"ok\"",
            self.sum(|c| &c.upgrades_ok),
        );
        for (i, status) in REJECT_STATUSES.iter().enumerate() {
            sample(
                o,
                "wsgate_upgrades_total",
                &format!("result=\"{status}\""),
                self.sum(|c| &c.rejects[i]),
            );
        }
        family(
            o,
            "wsgate_sessions_total",
            "counter",
            "Gateway sessions by event (ended: expired or closed with 1000).",
        );
        sample(
            o,
            "wsgate_sessions_total",
            "event=\"new\"",
            self.sum(|c| &c.sessions_new),
        );
        sample(
            o,
            "wsgate_sessions_total",
            "event=\"resumed\"",
            self.sum(|c| &c.sessions_resumed),
        );
        sample(
            o,
            "wsgate_sessions_total",
            "event=\"ended\"",
            self.sum(|c| &c.sessions_ended),
        );
        family(
            o,
            "wsgate_sessions_held",
            "gauge",
            "Sessions held, connected or waiting for a resume.",
        );
        sample(
            o,
            "wsgate_sessions_held",
            "",
            self.sum(|c| &c.sessions_held),
        );
        family(
            o,
            "wsgate_sticky_hits_total",
            "counter",
            "Upgrades whose cookie named a session this node has.",
        );
        sample(
            o,
            "wsgate_sticky_hits_total",
            "",
            self.sum(|c| &c.sticky_hits),
        );
        family(
            o,
            "wsgate_sticky_misses_total",
            "counter",
            "Upgrades whose valid cookie named a session this node does not have (routing drift).",
        );
        sample(
            o,
            "wsgate_sticky_misses_total",
            "",
            self.sum(|c| &c.sticky_misses),
        );
        family(
            o,
            "wsgate_messages_total",
            "counter",
            "WebSocket messages by direction.",
        );
        sample(
            o,
            "wsgate_messages_total",
            "direction=\"in\"",
            self.sum(|c| &c.messages_in),
        );
        sample(
            o,
            "wsgate_messages_total",
            "direction=\"out\"",
            self.sum(|c| &c.messages_out),
        );
        family(
            o,
            "wsgate_bytes_total",
            "counter",
            "WebSocket payload bytes by direction.",
        );
        sample(
            o,
            "wsgate_bytes_total",
            "direction=\"in\"",
            self.sum(|c| &c.bytes_in),
        );
        sample(
            o,
            "wsgate_bytes_total",
            "direction=\"out\"",
            self.sum(|c| &c.bytes_out),
        );
        family(
            o,
            "wsgate_closes_total",
            "counter",
            "Ended WebSocket connections by close code (1006: no close frame).",
        );
        for (i, code) in CLOSE_CODES.iter().enumerate() {
            sample(
                o,
                "wsgate_closes_total",
                &format!("code=\"{code}\""),
                self.sum(|c| &c.closes[i]),
            );
        }
        family(
            o,
            "wsgate_slow_consumer_closes_total",
            "counter",
            "Connections closed for not reading their output.",
        );
        sample(
            o,
            "wsgate_slow_consumer_closes_total",
            "",
            self.sum(|c| &c.slow_consumer_closes),
        );
        family(
            o,
            "wsgate_heartbeat_timeouts_total",
            "counter",
            "Connections cut for not answering a ping in time.",
        );
        sample(
            o,
            "wsgate_heartbeat_timeouts_total",
            "",
            self.sum(|c| &c.heartbeat_timeouts),
        );
        let redis: Vec<u8> = self.cores.iter().map(|c| c.redis.load(Relaxed)).collect();
        if redis.iter().any(|&r| r != 0) {
            family(
                o,
                "wsgate_redis_up",
                "gauge",
                "1 when every core's Redis connection is up.",
            );
            sample(
                o,
                "wsgate_redis_up",
                "",
                u64::from(redis.iter().all(|&r| r == 2)),
            );
            family(
                o,
                "wsgate_redis_connection_failures_total",
                "counter",
                "Redis connections lost (errors, timeouts, closes).",
            );
            sample(
                o,
                "wsgate_redis_connection_failures_total",
                "",
                self.sum(|c| &c.redis_failures),
            );
        }
        family(o, "wsgate_draining", "gauge", "1 from SIGTERM until exit.");
        sample(o, "wsgate_draining", "", u64::from(draining));
        family(
            o,
            "wsgate_io_driver",
            "gauge",
            "The io driver in use (1 for the active one).",
        );
        let uring = self
            .cores
            .iter()
            .filter(|c| c.driver.load(Relaxed) == Driver::IoUring as u8 + 1)
            .count();
        sample(
            o,
            "wsgate_io_driver",
            "driver=\"io_uring\"",
            u64::from(uring > 0),
        );
        sample(
            o,
            "wsgate_io_driver",
            "driver=\"epoll\"",
            u64::from(uring < self.cores.len()),
        );
        family(o, "wsgate_info", "gauge", "Static facts about this node.");
        let labels = format!("node=\"{node}\",version=\"{}\"", env!("CARGO_PKG_VERSION"));
        sample(o, "wsgate_info", &labels, 1);
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: u64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}
