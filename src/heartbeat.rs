//! Dead peers and stuck writers: one sweeper task per core walks the
//! registry, pings connections that went quiet and cuts those that stay
//! silent or never take their output. The decision is a pure function of
//! coarse time, tested without sleeping.

use std::rc::Rc;
use std::time::Duration;

use crate::server::Core;

/// What the sweeper does with one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Nothing to do.
    Idle,
    /// Quiet for `--ping-interval`: send a ping.
    Ping,
    /// No pong or data within `--pong-timeout`: the peer is gone.
    Dead,
    /// Output has waited on the peer for a full ping interval plus pong
    /// timeout: it is not reading (a slow consumer).
    Stuck,
}

/// Decides a connection's heartbeat. Times are coarse milliseconds; a zero
/// `ping_sent` / `out_since` means none.
pub fn beat(
    now: u64,
    last_seen: u64,
    ping_sent: u64,
    out_since: u64,
    ping_interval: u64,
    pong_timeout: u64,
) -> Beat {
    if out_since != 0 && now.saturating_sub(out_since) >= ping_interval + pong_timeout {
        return Beat::Stuck;
    }
    if ping_sent != 0 {
        return if now.saturating_sub(ping_sent) >= pong_timeout {
            Beat::Dead
        } else {
            Beat::Idle
        };
    }
    if out_since == 0 && now.saturating_sub(last_seen) >= ping_interval {
        return Beat::Ping;
    }
    Beat::Idle
}

/// How often the sweeper runs: fine enough for the shortest timer, never
/// busier than every 10 ms nor lazier than every second.
pub fn sweep_period(ping_interval: Duration, pong_timeout: Duration) -> Duration {
    (ping_interval.min(pong_timeout) / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Runs the sweeper of one core forever; it also advances the core's coarse clock.
pub async fn run(core: Rc<Core>) {
    let config = &core.shared.config;
    let period = sweep_period(config.ping_interval, config.pong_timeout);
    let ping_interval = config.ping_interval.as_millis() as u64;
    let pong_timeout = config.pong_timeout.as_millis() as u64;
    loop {
        monoio::time::sleep(period).await;
        let now = core.tick();
        // Sessions whose TTL ran out end here (and their `leave`s go out).
        core.hub.borrow_mut().tick(now);
        crate::gateway::flush_hub(&core);
        if core.draining.get() {
            continue; // the drain owns every connection now
        }
        core.conns.for_each(|c| {
            if c.cut.get() || c.close_sent.get() != 0 {
                return;
            }
            match beat(
                now,
                c.last_seen.get(),
                c.ping_sent.get(),
                c.out_since.get(),
                ping_interval,
                pong_timeout,
            ) {
                Beat::Idle => {}
                Beat::Ping => c.send_ping(now),
                Beat::Dead => {
                    core.stats.heartbeat_timeout();
                    c.cut();
                }
                Beat::Stuck => {
                    core.stats.slow_consumer_close();
                    c.cut();
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PI: u64 = 30_000;
    const PT: u64 = 10_000;

    #[test]
    fn quiet_connection_is_pinged_then_cut() {
        assert_eq!(beat(29_999, 0, 0, 0, PI, PT), Beat::Idle);
        assert_eq!(beat(30_000, 0, 0, 0, PI, PT), Beat::Ping);
        // Ping outstanding: wait for the pong timeout.
        assert_eq!(beat(39_999, 0, 30_000, 0, PI, PT), Beat::Idle);
        assert_eq!(beat(40_000, 0, 30_000, 0, PI, PT), Beat::Dead);
    }

    #[test]
    fn traffic_keeps_a_connection_alive() {
        // Inbound bytes reset last_seen and clear the outstanding ping.
        assert_eq!(beat(50_000, 45_000, 0, 0, PI, PT), Beat::Idle);
    }

    #[test]
    fn a_peer_that_never_reads_is_stuck() {
        assert_eq!(beat(39_999, 39_999, 0, 1, PI, PT), Beat::Idle);
        assert_eq!(beat(40_001, 39_999, 0, 1, PI, PT), Beat::Stuck);
        // No ping is queued behind output that is already waiting.
        assert_eq!(beat(35_000, 0, 0, 1, PI, PT), Beat::Idle);
    }

    #[test]
    fn sweep_period_is_bounded() {
        let s = Duration::from_secs;
        assert_eq!(sweep_period(s(30), s(10)), Duration::from_millis(1000));
        assert_eq!(sweep_period(s(1), s(1)), Duration::from_millis(125));
        assert_eq!(
            sweep_period(Duration::from_millis(20), Duration::from_millis(20)),
            Duration::from_millis(10)
        );
    }
}
