//! The events hook's sender, one task per core (`--events-hook`, DESIGN
//! §12). It waits for the core's queue, POSTs up to 100 events at once
//! (whatever gathered while the previous request was out: no fixed delay),
//! one request at a time, so the backend sees each session's events in
//! order. On a `200` each `send` gets its `reply`; on a failure each `send`
//! of the batch gets `err <status> send failed` at once, while `connect` and
//! `disconnect` are tried again, first in line, with a growing pause,
//! until `--events-retry` has passed since they were queued (then dropped
//! and counted). The core never waits for the backend: this task does.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::backend::{encode_batch, parse_replies, Reply, What};
use crate::core::events::Queued;
use crate::core::Core;
use crate::metrics::events::EventResult;
use crate::proto::frame::{encode_frame, OpCode};
use crate::sys::log::{self, Level};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs forever on a core with an events hook; returns at once without.
pub async fn run(core: Rc<Core>) {
    let Some(events) = &core.events else {
        return;
    };
    let mut backoff = BACKOFF_MIN;
    loop {
        events.ready().await;
        let batch = events.take_batch();
        core.stats.events.set_depth(events.depth());
        let body = encode_batch(&core.shared.node_id, batch.iter().map(|q| &q.event));
        let started = Instant::now();
        events.in_flight.set(true);
        let answer = events.client.post("application/json", &body).await;
        events.in_flight.set(false);
        core.stats.events.request(started.elapsed());
        match answer {
            Ok((200, body)) => {
                hook_state(&core, true, "ok");
                backoff = BACKOFF_MIN;
                let replies = parse_replies(&body, batch.len());
                core.hub_batch(|| {
                    for (q, reply) in batch.into_iter().zip(replies) {
                        answered(&core, q, reply);
                    }
                });
            }
            failed => {
                let (status, why) = match failed {
                    Ok((status, _)) => (status, "status"),
                    Err("timeout") => (504, "timeout"),
                    Err(why) => (502, why),
                };
                hook_state(&core, false, why);
                let now = core.now();
                let mut again = Vec::new();
                core.hub_batch(|| {
                    for q in batch {
                        let kind = q.event.kind() as usize;
                        match q.event.what {
                            What::Send { conn, .. } => {
                                let line = format!("err {status} send failed");
                                core.push_to(conn, &text(line.as_bytes()));
                                core.stats.events.count(kind, EventResult::Failed, 1);
                            }
                            _ if now.saturating_sub(q.at) < events.retry_ms => again.push(q),
                            _ => core.stats.events.count(kind, EventResult::Dropped, 1),
                        }
                    }
                });
                events.put_back(again);
                core.stats.events.set_depth(events.depth());
                monoio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Waits (at most `limit`) until every queued event has been sent: at the
/// end of a drain, so that its `disconnect`s reach the backend. A backend
/// that is down is not waited for.
pub async fn flush(core: &Core, limit: Duration) {
    let Some(events) = &core.events else {
        return;
    };
    let deadline = Instant::now() + limit;
    while (events.depth() > 0 || events.in_flight.get()) && events.up.get() {
        if Instant::now() >= deadline {
            log::emit(
                Level::Warn,
                "events_not_sent",
                &[("core", &core.index), ("events", &events.depth())],
            );
            return;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One event of a batch the backend answered with `200`.
fn answered(core: &Core, q: Queued, reply: Reply) {
    let kind = q.event.kind() as usize;
    let What::Send { conn, .. } = q.event.what else {
        core.stats.events.count(kind, EventResult::Ok, 1);
        return;
    };
    let (frame, result) = match reply {
        Reply::Text(t) => {
            let mut line = b"reply ".to_vec();
            line.extend_from_slice(t.as_bytes());
            (text(&line), EventResult::Ok)
        }
        Reply::Binary(bytes) => {
            let mut line = b"reply\n".to_vec();
            line.extend_from_slice(&bytes);
            let mut frame = Vec::with_capacity(line.len() + 10);
            encode_frame(&mut frame, OpCode::Binary, &line);
            (frame, EventResult::Ok)
        }
        Reply::Status(s) => (
            text(format!("err {s} send failed").as_bytes()),
            EventResult::Failed,
        ),
        Reply::Missing => (text(b"err 502 send failed"), EventResult::Failed),
    };
    core.push_to(conn, &frame);
    core.stats.events.count(kind, result, 1);
}

fn text(line: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(line.len() + 10);
    encode_frame(&mut frame, OpCode::Text, line);
    frame
}

/// Logs `events_hook_down` / `events_hook_up` when the hook's state
/// changes (not per request).
fn hook_state(core: &Core, up: bool, why: &str) {
    let Some(events) = &core.events else {
        return;
    };
    if events.up.replace(up) == up {
        return;
    }
    let target = core.shared.events.as_ref().map(|s| s.target.to_string());
    let target = target.unwrap_or_default();
    if up {
        log::emit(
            Level::Info,
            "events_hook_up",
            &[("core", &core.index), ("hook", &target)],
        );
    } else {
        log::emit(
            Level::Warn,
            "events_hook_down",
            &[("core", &core.index), ("hook", &target), ("reason", &why)],
        );
    }
}
