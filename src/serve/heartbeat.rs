//! Dead peers and stuck writers: one sweeper task per core walks the
//! registry, pings connections that went quiet and cuts those that stay
//! silent or never take their output. The decision is a pure function of
//! coarse time, tested without sleeping.

use std::rc::Rc;
use std::time::Duration;

use crate::core::Core;
use crate::hub::Hub;
use crate::proto::close::ServerClose;

/// Topics forgotten, or connections' delivery records freed, in one sweep
/// beyond which the heap is trimmed.
const TRIM_AFTER_TOPICS: usize = 256;

/// What the sweeper does with one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Nothing to do.
    Idle,
    /// Quiet for `--ping-interval`: send a ping.
    Ping,
    /// No pong or data (no close frame, after ours) within `--pong-timeout`:
    /// the peer is gone.
    Dead,
    /// Output has waited on the peer for a full ping interval plus pong
    /// timeout: it is not reading (a slow consumer).
    Stuck,
}

/// Decides a connection's heartbeat. Times are coarse milliseconds;
/// `awaiting` is when a ping, or our close frame, went out unanswered. A
/// zero `awaiting` / `out_since` means none.
pub fn beat(
    now: u64,
    last_seen: u64,
    awaiting: u64,
    out_since: u64,
    ping_interval: u64,
    pong_timeout: u64,
) -> Beat {
    if out_since != 0 && now.saturating_sub(out_since) >= ping_interval + pong_timeout {
        return Beat::Stuck;
    }
    if awaiting != 0 {
        return if now.saturating_sub(awaiting) >= pong_timeout {
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

/// Runs the sweeper of one core forever; it also advances the core's
/// coarse clock, closes connections whose token ran out (a deadline in the
/// sweep: no timer per connection) and, about once a second, re-reads a
/// JWKS file that changed and gives a burst's free heap back. It wakes every [`sweep_period`] for the connections, and in
/// between when the hub has a deadline ([`Hub::poll_timeout`]: a session's
/// TTL, a checkpoint), so no session is looked at before it is due.
pub async fn run(core: Rc<Core>) {
    let config = &core.shared.config;
    let period = sweep_period(config.ping_interval, config.pong_timeout);
    let period_ms = period.as_millis() as u64;
    let mut next_sweep = core.tick() + period_ms;
    let mut next_second = next_sweep;
    loop {
        let hub_due = core.read_hub(Hub::poll_timeout);
        let wake = hub_due.map_or(next_sweep, |due| due.min(next_sweep));
        let wake = wake.min(next_second);
        let wait = wake.saturating_sub(core.tick()).max(1);
        monoio::time::sleep(Duration::from_millis(wait)).await;
        let now = core.tick();
        if hub_due.is_some_and(|due| due <= now) {
            // Sessions whose TTL ran out end here (and their `leave`s go out);
            // topics nobody needs any more are forgotten.
            let freed = core.with_hub(|hub| {
                hub.tick(now);
                hub.take_topics_freed()
            });
            if freed >= TRIM_AFTER_TOPICS {
                // Many small allocations went at once: give the pages back
                // (glibc keeps freed memory otherwise, and a container's limit
                // sees RSS).
                crate::sys::trim_heap();
            }
        }
        if now >= next_sweep {
            next_sweep = now + period_ms;
            sweep(&core, now);
        }
        if now >= next_second {
            next_second = now + 1000;
            // A JWKS file that changed is read again (keys rotate without a restart).
            if let Some(auth) = &core.auth {
                auth.reload(core.index);
            }
            // Receive buffers a quiet core no longer needs go back.
            core.reactor.tune(now);
            // Whatever a burst left free (a subscribe storm's presence lines,
            // say) goes back, once there is enough of it to matter.
            core.shrink_idle_queues();
            crate::sys::trim_heap_if_slack();
        }
    }
}

/// Pings quiet connections, cuts dead and stuck ones.
fn sweep(core: &Core, now: u64) {
    if core.is_draining() {
        return; // the drain owns every connection now
    }
    let config = &core.shared.config;
    let ping_interval = config.ping_interval.as_millis() as u64;
    let pong_timeout = config.pong_timeout.as_millis() as u64;
    let now_secs = (now / 1000) as u32;
    let mut trimmed = 0;
    core.conns.for_each(|c| {
        if !c.close_state().is_running() {
            return;
        }
        let deadline = c.token_deadline();
        if deadline != 0 && now_secs >= deadline {
            // The token ran out without an `auth` refresh.
            c.set_token_deadline(0);
            core.stats.token_expired();
            c.request_close(ServerClose::TokenExpired, now);
            return;
        }
        trimmed += usize::from(c.trim_after_burst());
        let (last_seen, awaiting, out_since) = c.clocks(now);
        match beat(
            now,
            last_seen,
            awaiting,
            out_since,
            ping_interval,
            pong_timeout,
        ) {
            Beat::Idle => {}
            Beat::Ping => c.send_ping(now),
            Beat::Dead => {
                core.stats.heartbeat_timeout();
                c.cut(1006);
            }
            Beat::Stuck => {
                core.stats.slow_consumer_close();
                c.cut(1008);
            }
        }
    });
    if trimmed >= TRIM_AFTER_TOPICS {
        // A burst has drained: what its records and buffers held goes back
        // to the system (glibc keeps freed memory otherwise).
        crate::sys::trim_heap();
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
