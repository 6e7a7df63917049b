//! Per Redis server (`server="host:port"`: the one `--redis` names, the
//! primary Sentinel names, or each primary of a cluster): whether every core
//! is connected to it, connections lost, reconnects and cluster redirects.
//! Written on connect, disconnect and redirect only (rare), so one mutex
//! for the process is enough.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Mutex;

#[derive(Default, Clone)]
struct Stats {
    /// Cores connected now.
    connected: u64,
    failures: u64,
    reconnects: u64,
    moved: u64,
    ask: u64,
}

#[derive(Default)]
struct Inner {
    servers: BTreeMap<String, Stats>,
    /// (core, server) pairs that connected once: the next is a reconnect.
    seen: BTreeSet<(usize, String)>,
}

/// Name, type, help, and the samples (`kind` label or none, value) of a
/// server's stats for a process of so many cores.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Stats, usize) -> Vec<(&'static str, u64)>,
);

/// The per-server counters of the process.
#[derive(Default)]
pub struct RedisServers(Mutex<Inner>);

impl RedisServers {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        let mut inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut inner);
    }

    /// Core `core` connected to `server`.
    pub fn connected(&self, core: usize, server: &str) {
        self.with(|i| {
            let again = !i.seen.insert((core, server.to_string()));
            let s = i.servers.entry(server.to_string()).or_default();
            s.connected += 1;
            s.reconnects += u64::from(again);
        });
    }

    /// Core's connection to `server` ended; `failed`: the error was this
    /// server's (not another lane's).
    pub fn disconnected(&self, server: &str, failed: bool) {
        self.with(|i| {
            let s = i.servers.entry(server.to_string()).or_default();
            s.connected = s.connected.saturating_sub(1);
            s.failures += u64::from(failed);
        });
    }

    /// `server` answered with a redirect (`ask`: `ASK`, else `MOVED`).
    pub fn redirect(&self, server: &str, ask: bool) {
        self.with(|i| {
            let s = i.servers.entry(server.to_string()).or_default();
            if ask {
                s.ask += 1;
            } else {
                s.moved += 1;
            }
        });
    }

    /// The families, for a process of `cores` cores (nothing before the
    /// first connection).
    pub fn render(&self, out: &mut String, cores: usize) {
        let servers = {
            let inner = self.0.lock().unwrap_or_else(|e| e.into_inner());
            inner.servers.clone()
        };
        if servers.is_empty() {
            return;
        }
        let families: [Family; 4] = [
            (
                "wsgate_redis_server_up",
                "gauge",
                "1 when every core is connected to this Redis server.",
                |s, cores| vec![("", u64::from(s.connected >= cores as u64))],
            ),
            (
                "wsgate_redis_server_failures_total",
                "counter",
                "Connections to this Redis server lost by its error (close, reset, timeout).",
                |s, _| vec![("", s.failures)],
            ),
            (
                "wsgate_redis_server_reconnects_total",
                "counter",
                "Connections to this Redis server made again by a core that had one before.",
                |s, _| vec![("", s.reconnects)],
            ),
            (
                "wsgate_redis_server_redirects_total",
                "counter",
                "Redis Cluster redirects this server answered, by kind.",
                |s, _| vec![("moved", s.moved), ("ask", s.ask)],
            ),
        ];
        for (name, kind, help, values) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (server, s) in &servers {
                // host:port: no quote, backslash or newline to escape, but
                // a host name comes from the command line: keep it safe.
                let server: String = (server.chars())
                    .filter(|c| !matches!(c, '"' | '\\' | '\n'))
                    .collect();
                for (k, v) in values(s, cores) {
                    if k.is_empty() {
                        let _ = writeln!(out, "{name}{{server=\"{server}\"}} {v}");
                    } else {
                        let _ = writeln!(out, "{name}{{server=\"{server}\",kind=\"{k}\"}} {v}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_server() {
        let r = RedisServers::default();
        let mut out = String::new();
        r.render(&mut out, 2);
        assert!(out.is_empty());
        r.connected(0, "10.0.0.1:6379");
        r.connected(1, "10.0.0.1:6379");
        r.disconnected("10.0.0.1:6379", true);
        r.connected(1, "10.0.0.1:6379");
        r.redirect("10.0.0.1:6379", false);
        r.redirect("10.0.0.1:6379", true);
        r.connected(0, "10.0.0.2:6379");
        r.render(&mut out, 2);
        for line in [
            "wsgate_redis_server_up{server=\"10.0.0.1:6379\"} 1",
            "wsgate_redis_server_up{server=\"10.0.0.2:6379\"} 0",
            "wsgate_redis_server_failures_total{server=\"10.0.0.1:6379\"} 1",
            "wsgate_redis_server_reconnects_total{server=\"10.0.0.1:6379\"} 1",
            "wsgate_redis_server_redirects_total{server=\"10.0.0.1:6379\",kind=\"moved\"} 1",
            "wsgate_redis_server_redirects_total{server=\"10.0.0.1:6379\",kind=\"ask\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in\n{out}");
        }
    }
}
