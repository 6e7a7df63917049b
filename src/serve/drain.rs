//! What happens on SIGTERM (DESIGN §7).
//!
//! A signal thread owns SIGTERM and SIGINT (they are blocked everywhere else).
//! The first one flips the process into draining (health and upgrades answer
//! 503 at once) and rings each core's doorbell. Each core then sends close
//! 1001 "draining" to its connections, spread over a window of the drain
//! timeout so the rest of the fleet does not get every reconnect at once,
//! waits for the close replies, cuts whatever is left at the deadline and
//! returns, which ends its runtime; when every core has returned the process
//! exits 0. A second signal exits at once.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::net::UnixStream;
use monoio::time::Instant;

use crate::core::{Core, Shared};
use crate::proto::close::ServerClose;
use crate::sys::log::{self, Level};

/// Exit code after a second signal cut the drain short.
pub const FORCED_EXIT_CODE: i32 = 1;

/// The signals that start a drain.
fn drain_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialize it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Blocks SIGTERM and SIGINT in the calling thread and every thread it
/// spawns afterwards, so only the signal thread receives them.
pub fn block_signals() {
    let set = drain_signals();
    // SAFETY: `set` is initialized; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// A core's doorbell: the signal thread writes a byte, the core wakes up.
pub fn doorbell() -> std::io::Result<(StdUnixStream, StdUnixStream)> {
    let (ring, bell) = StdUnixStream::pair()?;
    bell.set_nonblocking(true)?;
    Ok((ring, bell))
}

/// Starts the thread that turns signals into a drain.
pub fn spawn_signal_thread(shared: Arc<Shared>, rings: Vec<StdUnixStream>) {
    let _ = std::thread::Builder::new()
        .name("wsgate-signals".into())
        .spawn(move || {
            let set = drain_signals();
            let mut rings = rings;
            let mut seen = 0;
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` is initialized and `sig` is writable.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                let name = if sig == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                seen += 1;
                if seen > 1 {
                    log::emit(Level::Warn, "forced_exit", &[("signal", &name)]);
                    std::process::exit(FORCED_EXIT_CODE);
                }
                shared.start_draining();
                log::emit(
                    Level::Info,
                    "drain_start",
                    &[
                        ("signal", &name),
                        ("connections", &shared.active_connections()),
                        (
                            "drain_timeout",
                            &format!("{:?}", shared.config.drain_timeout),
                        ),
                    ],
                );
                for ring in &mut rings {
                    let _ = ring.write_all(&[1]);
                }
            }
        });
}

/// The part of the drain timeout over which closes are spread: 30 %, inside
/// the contract's "at least the first fifth and at most the first half".
pub fn close_window(drain_timeout: Duration) -> Duration {
    drain_timeout * 3 / 10
}

/// How many of `total` closes are due `elapsed` into a `window`.
pub fn closes_due(elapsed: Duration, window: Duration, total: usize) -> usize {
    if window.is_zero() || elapsed >= window {
        return total;
    }
    let due = (total as u128 * elapsed.as_nanos()).div_ceil(window.as_nanos());
    (due as usize).min(total)
}

/// Waits for the doorbell, then drains this core. Returns when the core has
/// no connection left.
pub async fn drain(core: Rc<Core>, bell: StdUnixStream) {
    let bell = match UnixStream::from_std(bell) {
        Ok(bell) => bell,
        Err(_) => return std::future::pending().await,
    };
    while !core.shared.is_draining() {
        if bell.readable(false).await.is_err() {
            return std::future::pending().await;
        }
        let mut byte = [0u8; 8];
        let _ = crate::sys::recv(bell.as_raw_fd(), &mut byte);
    }
    core.start_draining();
    let timeout = core.shared.config.drain_timeout;
    let start = Instant::now();
    let connections = core.conns.len();
    send_closes(&core, start, close_window(timeout)).await;
    let deadline = start + timeout;
    while !core.conns.is_empty() && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    let cut = core.conns.len();
    core.conns.for_each(|c| c.cut(1006));
    // Cut connections end within a turn or two of the loop; bound it anyway.
    let grace = Instant::now() + Duration::from_secs(1);
    while !core.conns.is_empty() && Instant::now() < grace {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    log::emit(
        Level::Info,
        "drain_end",
        &[
            ("core", &core.index),
            ("connections", &connections),
            ("closed", &connections.saturating_sub(cut)),
            ("cut", &cut),
            ("elapsed_ms", &start.elapsed().as_millis()),
        ],
    );
}

/// Sends close 1001 "draining" to every connection open now, spread over
/// `window` from `start`. With the shared engine, a gateway session is saved
/// before its close frame goes out (the hub sends the 1001 when Redis has
/// it, or at once when Redis is away), so the node it reconnects to can
/// resume it.
async fn send_closes(core: &Core, start: Instant, window: Duration) {
    let targets = core.conns.snapshot();
    let mut sent = 0;
    while sent < targets.len() {
        let due = closes_due(start.elapsed(), window, targets.len());
        core.with_hub(|hub| {
            for conn in &targets[sent..due] {
                let saving = (conn.conn_id()).is_some_and(|id| hub.drain_close(id, core.now()));
                if !saving {
                    conn.request_close(ServerClose::Draining, core.now());
                }
            }
        });
        sent = due;
        if sent < targets.len() {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_are_spread_over_the_window() {
        let window = Duration::from_secs(9);
        assert_eq!(closes_due(Duration::ZERO, window, 300), 0);
        assert_eq!(closes_due(Duration::from_millis(10), window, 300), 1);
        assert_eq!(closes_due(Duration::from_millis(4500), window, 300), 150);
        assert_eq!(closes_due(Duration::from_millis(8999), window, 300), 300);
        assert_eq!(closes_due(Duration::from_secs(20), window, 300), 300);
        assert_eq!(closes_due(Duration::from_millis(1), Duration::ZERO, 5), 5);
    }

    #[test]
    fn window_fits_the_contract() {
        for secs in [1, 10, 30, 300] {
            let t = Duration::from_secs(secs);
            let w = close_window(t);
            assert!(w >= t / 5 && w <= t / 2, "{w:?} of {t:?}");
        }
    }
}
