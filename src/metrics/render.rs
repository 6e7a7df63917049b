//! The Prometheus text exposition of [`Metrics`], one function per group of
//! families.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use super::{Metrics, CLOSE_CODES, REJECT_STATUSES};
use crate::sys::{DataPath, Driver};

impl Metrics {
    /// Renders the Prometheus text exposition format.
    pub fn render(&self, node: &str, draining: bool) -> String {
        let mut out = String::with_capacity(4096);
        self.render_connections(&mut out);
        self.render_sessions(&mut out);
        self.render_traffic(&mut out);
        self.render_closes(&mut out);
        self.render_redis(&mut out);
        self.redis_servers.render(&mut out, self.cores.len());
        if self.hook_on {
            let all: Vec<&super::hook::HookStats> = self.cores.iter().map(|c| &*c.hook).collect();
            super::hook::HookStats::render(&mut out, &all);
        }
        if self.events_on {
            let all: Vec<&super::events::EventStats> =
                self.cores.iter().map(|c| &c.events).collect();
            super::events::EventStats::render(&mut out, &all);
        }
        self.render_node(&mut out, node, draining);
        out
    }

    fn render_connections(&self, o: &mut String) {
        family(
            o,
            "wsgate_connections_active",
            "gauge",
            "Open WebSocket connections per core.",
        );
        for (i, c) in self.cores.iter().enumerate() {
            let value = c.connections_active.load(Relaxed);
            sample(
                o,
                "wsgate_connections_active",
                &format!("core=\"{i}\""),
                value,
            );
        }
        family(
            o,
            "wsgate_connections_compressed",
            "gauge",
            "Open WebSocket connections that agreed permessage-deflate, per core.",
        );
        for (i, c) in self.cores.iter().enumerate() {
            let value = c.connections_compressed.load(Relaxed);
            let labels = format!("core=\"{i}\"");
            sample(o, "wsgate_connections_compressed", &labels, value);
        }
        let mut upgrades = vec![("result=\"ok\"".to_string(), self.sum(|c| &c.upgrades_ok))];
        for (i, status) in REJECT_STATUSES.iter().enumerate() {
            upgrades.push((format!("result=\"{status}\""), self.sum(|c| &c.rejects[i])));
        }
        counter(
            o,
            "wsgate_upgrades_total",
            "Upgrade requests by result (ok or the HTTP status sent).",
            &upgrades,
        );
    }

    fn render_sessions(&self, o: &mut String) {
        let events = [
            ("event=\"new\"".to_string(), self.sum(|c| &c.sessions_new)),
            (
                "event=\"resumed\"".into(),
                self.sum(|c| &c.sessions_resumed),
            ),
            ("event=\"ended\"".into(), self.sum(|c| &c.sessions_ended)),
        ];
        counter(
            o,
            "wsgate_sessions_total",
            "Gateway sessions by event (ended: expired or closed with 1000).",
            &events,
        );
        counter(
            o,
            "wsgate_auth_session_mismatch_total",
            "Upgrades whose cookie named another user's session (a new session was started).",
            &[(String::new(), self.sum(|c| &c.auth_mismatches))],
        );
        counter(
            o,
            "wsgate_auth_tokens_expired_total",
            "Connections closed with 1008 \"token expired\" (no refresh before exp + leeway).",
            &[(String::new(), self.sum(|c| &c.tokens_expired))],
        );
        family(
            o,
            "wsgate_topics",
            "gauge",
            "Topics this node holds (forgotten --topic-ttl after their last member and publish).",
        );
        sample(o, "wsgate_topics", "", self.sum(|c| &c.topics));
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
        let hits = self.sum(|c| &c.sticky_hits);
        counter(
            o,
            "wsgate_sticky_hits_total",
            "Upgrades whose cookie named a session this node has.",
            &[(String::new(), hits)],
        );
        let misses = self.sum(|c| &c.sticky_misses);
        counter(
            o,
            "wsgate_sticky_misses_total",
            "Upgrades whose valid cookie named a session this node does not have (routing drift).",
            &[(String::new(), misses)],
        );
    }

    fn render_traffic(&self, o: &mut String) {
        let messages = [
            ("direction=\"in\"".to_string(), self.sum(|c| &c.messages_in)),
            ("direction=\"out\"".into(), self.sum(|c| &c.messages_out)),
        ];
        counter(
            o,
            "wsgate_messages_total",
            "WebSocket messages by direction.",
            &messages,
        );
        let bytes = [
            ("direction=\"in\"".to_string(), self.sum(|c| &c.bytes_in)),
            ("direction=\"out\"".into(), self.sum(|c| &c.bytes_out)),
        ];
        counter(
            o,
            "wsgate_bytes_total",
            "WebSocket payload bytes by direction.",
            &bytes,
        );
        let compression = [
            (
                "direction=\"in\",form=\"wire\"".to_string(),
                self.sum(|c| &c.compression_in_wire),
            ),
            (
                "direction=\"in\",form=\"plain\"".into(),
                self.sum(|c| &c.compression_in_plain),
            ),
            (
                "direction=\"out\",form=\"wire\"".into(),
                self.sum(|c| &c.compression_out_wire),
            ),
            (
                "direction=\"out\",form=\"plain\"".into(),
                self.sum(|c| &c.compression_out_plain),
            ),
        ];
        counter(
            o,
            "wsgate_compression_bytes_total",
            "Data message payload bytes on connections that agreed permessage-deflate, as on the wire and as plain bytes.",
            &compression,
        );
    }

    fn render_closes(&self, o: &mut String) {
        let closes: Vec<_> = (CLOSE_CODES.iter().enumerate())
            .map(|(i, code)| (format!("code=\"{code}\""), self.sum(|c| &c.closes[i])))
            .collect();
        counter(
            o,
            "wsgate_closes_total",
            "Ended WebSocket connections by close code (1006: no close frame).",
            &closes,
        );
        counter(
            o,
            "wsgate_direct_total",
            "Direct messages of the admin API: sessions reached (delivered), kept for a disconnected session's resume (held), requests that found no session (none).",
            &[
                (
                    "result=\"delivered\"".into(),
                    self.sum(|c| &c.direct_delivered),
                ),
                ("result=\"held\"".into(), self.sum(|c| &c.direct_held)),
                ("result=\"none\"".into(), self.sum(|c| &c.direct_none)),
            ],
        );
        let slow = self.sum(|c| &c.slow_consumer_closes);
        counter(
            o,
            "wsgate_slow_consumer_closes_total",
            "Connections closed for not reading their output.",
            &[(String::new(), slow)],
        );
        let dead = self.sum(|c| &c.heartbeat_timeouts);
        counter(
            o,
            "wsgate_heartbeat_timeouts_total",
            "Connections cut for not answering a ping in time.",
            &[(String::new(), dead)],
        );
    }

    /// Only with `--redis` (a core's state is 0 without it).
    fn render_redis(&self, o: &mut String) {
        let redis: Vec<u8> = self.cores.iter().map(|c| c.redis.load(Relaxed)).collect();
        if redis.iter().all(|&r| r == 0) {
            return;
        }
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
        let failures = self.sum(|c| &c.redis_failures);
        counter(
            o,
            "wsgate_redis_connection_failures_total",
            "Redis connections lost (errors, timeouts, closes).",
            &[(String::new(), failures)],
        );
        let reconnects = self.sum(|c| &c.redis_reconnects);
        counter(
            o,
            "wsgate_redis_reconnects_total",
            "Attempts to connect to Redis again after a loss or a failed attempt.",
            &[(String::new(), reconnects)],
        );
        let moved = self.sum(|c| &c.redis_moved);
        let ask = self.sum(|c| &c.redis_ask);
        counter(
            o,
            "wsgate_redis_redirects_total",
            "Redis Cluster redirects followed, by kind.",
            &[
                ("kind=\"moved\"".to_string(), moved),
                ("kind=\"ask\"".to_string(), ask),
            ],
        );
    }

    fn render_node(&self, o: &mut String, node: &str, draining: bool) {
        family(o, "wsgate_draining", "gauge", "1 from SIGTERM until exit.");
        sample(o, "wsgate_draining", "", u64::from(draining));
        family(
            o,
            "wsgate_io_driver",
            "gauge",
            "The io driver in use (1 for the active one).",
        );
        let uring = (self.cores.iter())
            .filter(|c| c.driver.load(Relaxed) == Driver::IoUring as u8 + 1)
            .count();
        let on_epoll = uring < self.cores.len();
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
            u64::from(on_epoll),
        );
        let on_uring =
            (self.cores.iter()).any(|c| c.data_path.load(Relaxed) == DataPath::Uring as u8 + 1);
        let path = if on_uring {
            DataPath::Uring
        } else {
            DataPath::Epoll
        };
        family(o, "wsgate_info", "gauge", "Static facts about this node.");
        let labels = format!(
            "node=\"{node}\",version=\"{}\",driver=\"{}\"",
            env!("CARGO_PKG_VERSION"),
            path.name()
        );
        sample(o, "wsgate_info", &labels, 1);
        let exhausted = (self.cores.iter())
            .map(|c| c.buffers_exhausted.load(Relaxed))
            .sum();
        counter(
            o,
            "wsgate_uring_buffers_exhausted_total",
            "Times a core's io_uring receive buffer ring ran dry (receives re-armed, no data lost).",
            &[(String::new(), exhausted)],
        );
        let buffers = (self.cores.iter()).map(|c| c.buffers.load(Relaxed)).sum();
        family(
            o,
            "wsgate_uring_buffers",
            "gauge",
            "16 KiB receive buffers circulating in the cores' io_uring buffer rings (doubled when dry, halved after 10 s without).",
        );
        sample(o, "wsgate_uring_buffers", "", buffers);
    }
}

/// A counter family with its samples (label set, value).
fn counter(out: &mut String, name: &str, help: &str, samples: &[(String, u64)]) {
    family(out, name, "counter", help);
    for (labels, value) in samples {
        sample(out, name, labels, *value);
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
