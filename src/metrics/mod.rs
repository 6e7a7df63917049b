//! Counters, one set per core, summed when scraped (DESIGN §8).
//!
//! Each counter has exactly one writer, its own core, so an increment is a
//! relaxed load and store (no locked instruction); the admin scrape reads them
//! from another thread.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;

use crate::hub::HubStats;
use crate::sys::{DataPath, Driver};

pub mod events;
pub mod hook;
pub mod redis;
mod render;

/// Statuses counted in `wsgate_upgrades_total{result}` besides `ok`.
pub(crate) const REJECT_STATUSES: [u16; 9] = [400, 401, 403, 404, 405, 408, 426, 431, 503];
/// Close codes counted in `wsgate_closes_total{code}`; the last slot is 1006
/// (the connection ended without a close frame).
pub(crate) const CLOSE_CODES: [u16; 8] = [1000, 1001, 1002, 1007, 1008, 1009, 1011, 1006];

/// One core's counters.
#[derive(Default)]
pub struct CoreStats {
    driver: AtomicU8,
    /// The data path of open connections: 1 io_uring, 2 epoll (0: not started).
    data_path: AtomicU8,
    /// Times this core's receive buffer ring ran dry (io_uring data path).
    buffers_exhausted: AtomicU64,
    /// Receive buffers in circulation on this core's ring.
    buffers: AtomicU64,
    /// 0: no `--redis`; 1: this core's Redis connection is down; 2: up.
    redis: AtomicU8,
    redis_failures: AtomicU64,
    /// Redis Cluster redirects followed: `MOVED`, `ASK`.
    redis_moved: AtomicU64,
    redis_ask: AtomicU64,
    /// Connection attempts after the first.
    redis_reconnects: AtomicU64,
    connections_active: AtomicU64,
    /// Open connections that agreed permessage-deflate.
    connections_compressed: AtomicU64,
    /// Data messages' payload bytes on connections that agreed
    /// permessage-deflate: as on the wire and as plain (inflated) bytes,
    /// in and out.
    compression_in_wire: AtomicU64,
    compression_in_plain: AtomicU64,
    compression_out_wire: AtomicU64,
    compression_out_plain: AtomicU64,
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
    /// Direct messages (admin API): sessions reached, sessions that keep
    /// it for a resume, requests that reached nobody.
    direct_delivered: AtomicU64,
    direct_held: AtomicU64,
    direct_none: AtomicU64,
    heartbeat_timeouts: AtomicU64,
    sessions_new: AtomicU64,
    sessions_resumed: AtomicU64,
    sessions_ended: AtomicU64,
    sessions_held: AtomicU64,
    auth_mismatches: AtomicU64,
    tokens_expired: AtomicU64,
    topics: AtomicU64,
    /// The auth hook's requests on this core.
    pub hook: Arc<hook::HookStats>,
    /// The events hook's events and requests on this core.
    pub events: events::EventStats,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

impl CoreStats {
    /// Records the io driver this core runs on.
    pub fn set_driver(&self, driver: Driver) {
        self.driver.store(driver as u8 + 1, Relaxed);
    }

    /// Records the data path of this core's open connections.
    pub fn set_data_path(&self, path: DataPath) {
        self.data_path.store(path as u8 + 1, Relaxed);
    }

    /// The receive buffer ring's exhaustions so far (the reactor's count)
    /// and the buffers in circulation now.
    pub fn set_ring_buffers(&self, exhausted: u64, live: u16) {
        self.buffers_exhausted.store(exhausted, Relaxed);
        self.buffers.store(u64::from(live), Relaxed);
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

    /// A connection that agreed permessage-deflate opened (`true`) or ended.
    pub fn compressed_connection(&self, opened: bool) {
        let n = self.connections_compressed.load(Relaxed);
        let n = if opened { n + 1 } else { n.saturating_sub(1) };
        self.connections_compressed.store(n, Relaxed);
    }

    /// A data message received on a connection that agreed
    /// permessage-deflate: its payload's bytes as they arrived and inflated.
    pub fn compression_in(&self, wire: u64, plain: u64) {
        bump(&self.compression_in_wire, wire);
        bump(&self.compression_in_plain, plain);
    }

    /// A data message sent on a connection that agreed permessage-deflate:
    /// its payload's bytes as sent (compressed or not) and as plain bytes.
    pub fn compression_out(&self, wire: u64, plain: u64) {
        bump(&self.compression_out_wire, wire);
        bump(&self.compression_out_plain, plain);
    }

    /// A request was answered with an error status.
    pub fn rejected(&self, status: u16) {
        if let Some(i) = REJECT_STATUSES.iter().position(|&s| s == status) {
            bump(&self.rejects[i], 1);
        }
    }

    /// One direct-message request: sessions it reached and sessions that
    /// keep it (neither: it reached nobody).
    pub fn direct(&self, delivered: u64, held: u64) {
        bump(&self.direct_delivered, delivered);
        bump(&self.direct_held, held);
        if delivered == 0 && held == 0 {
            bump(&self.direct_none, 1);
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
    pub fn set_sessions(&self, stats: HubStats, held: usize, topics: usize) {
        self.topics.store(topics as u64, Relaxed);
        self.sessions_new.store(stats.sessions_new, Relaxed);
        self.sessions_resumed.store(stats.sessions_resumed, Relaxed);
        self.sessions_ended.store(stats.sessions_ended, Relaxed);
        self.sessions_held.store(held as u64, Relaxed);
        self.auth_mismatches.store(stats.auth_mismatches, Relaxed);
    }

    /// This core's Redis connection came up (`true`) or went down.
    pub fn set_redis_up(&self, up: bool) {
        if !up && self.redis.load(Relaxed) == 2 {
            bump(&self.redis_failures, 1);
        }
        self.redis.store(if up { 2 } else { 1 }, Relaxed);
    }

    /// A cluster redirect was followed (`ask`: `ASK`, else `MOVED`).
    pub fn redis_redirect(&self, ask: bool) {
        bump(
            if ask {
                &self.redis_ask
            } else {
                &self.redis_moved
            },
            1,
        );
    }

    /// The core tries to connect to Redis again.
    pub fn redis_reconnect(&self) {
        bump(&self.redis_reconnects, 1);
    }

    /// A connection was closed because its token ran out.
    pub fn token_expired(&self) {
        bump(&self.tokens_expired, 1);
    }

    /// A peer was cut for not answering a ping.
    pub fn heartbeat_timeout(&self) {
        bump(&self.heartbeat_timeouts, 1);
    }
}

/// All cores' counters.
pub struct Metrics {
    cores: Vec<Arc<CoreStats>>,
    /// Per Redis server (`--redis`).
    pub redis_servers: redis::RedisServers,
    /// Whether the auth hook's families are exported.
    hook_on: bool,
    /// Whether the events hook's families are exported.
    pub(crate) events_on: bool,
}

impl Metrics {
    /// Counters for `cores` cores; `hook_on` exports the auth hook's.
    pub fn new(cores: usize, hook_on: bool) -> Metrics {
        Metrics {
            cores: (0..cores).map(|_| Arc::new(CoreStats::default())).collect(),
            redis_servers: redis::RedisServers::default(),
            hook_on,
            events_on: false,
        }
    }

    /// Exports the events hook's families too (`--events-hook`).
    pub fn with_events(mut self) -> Metrics {
        self.events_on = true;
        self
    }

    /// The counters of core `index`.
    pub fn core(&self, index: usize) -> Arc<CoreStats> {
        self.cores[index].clone()
    }

    /// A counter summed over every core.
    fn sum(&self, f: impl Fn(&CoreStats) -> &AtomicU64) -> u64 {
        self.cores.iter().map(|c| f(c).load(Relaxed)).sum()
    }
}
