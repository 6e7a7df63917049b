//! A core's connection to Redis, the shared engine (`--redis`, DESIGN §10).
//!
//! One connection per core, RESP3, pipelined: the hub's requests are encoded
//! by the engine's pipeline (`engine/queue.rs`) and written in batches;
//! answers come back in order and are matched to the oldest request waiting.
//! The same connection carries the pub/sub channels of the topics this core
//! owns (RESP3 pushes), so a topic's sync (`SUBSCRIBE`, then read seq and
//! history) and the messages published after it arrive in one ordered
//! stream: nothing falls between them.
//!
//! With `--redis-cluster` a core holds one such connection per primary (a
//! *lane*, `serve/redis_cluster.rs` finds them): each request goes to the
//! primary of its key's slot, and a topic's sharded subscription lives on the
//! connection that runs its scripts, so the same order holds per topic.
//!
//! Nothing waits on Redis longer than `--redis-timeout`: a request older than
//! that, an error on the socket or a close takes the connection down; every
//! waiting request then fails (the hub falls back to node-local service),
//! `wsgate_redis_up` drops to 0, and the task reconnects with backoff
//! (100 ms doubling to 2 s) until Redis answers again.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use monoio::time::Instant;

use crate::config::Endpoint;
use crate::config::RedisTarget;
use crate::core::engine_link::EngineLink;
use crate::core::Core;
use crate::engine::queue::{Answer, RETRY_MS};
use crate::engine::schema::{decode_direct_push, decode_push};
use crate::hub::EngineReply;
use crate::net::redis_stream::RedisStream;
use crate::proto::resp::{self, Value};
use crate::serve::redis_cluster;
use crate::serve::redis_lane::{hello, Lane};
use crate::serve::redis_sentinel::{self, Located, Watch};
use crate::sys::log::{self, Level};

/// Keeps this core's Redis connection up, forever (without `--redis`, returns).
pub async fn run(core: Rc<Core>) {
    let (Some(link), Some(target)) = (core.engine(), core.shared.config.redis_target()) else {
        return;
    };
    let mut backoff = Duration::from_millis(100);
    let mut last_error = String::new();
    // Cluster nodes seen: where to ask for the slot map next time.
    let mut known = Vec::new();
    loop {
        let err = match session(&core, link, &target, &mut known).await {
            Ok(()) => io::Error::new(io::ErrorKind::ConnectionAborted, "closed"),
            Err(e) => e,
        };
        let up_before = link.pipeline().is_up();
        go_down(&core, link);
        if up_before {
            backoff = Duration::from_millis(100);
        }
        let text = err.to_string();
        if up_before || text != last_error {
            log::emit(
                Level::Warn,
                "redis_down",
                &[
                    ("core", &core.index),
                    ("redis", &target),
                    ("error", &text),
                    ("retry_ms", &backoff.as_millis()),
                ],
            );
        }
        last_error = text;
        monoio::time::sleep(backoff).await;
        core.stats.redis_reconnect();
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Marks the connection down and fails every waiting request.
fn go_down(core: &Core, link: &EngineLink) {
    let waiting = link.pipeline().disconnected();
    core.stats.set_redis_up(false);
    let now = core.now();
    core.with_hub(|hub| {
        // Down first, so the failures below fall back to local service.
        hub.engine_status(false, now);
        for id in waiting {
            hub.engine_reply(id, EngineReply::Failed, now);
        }
    });
}

fn invalid(what: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Finds the server (with Sentinel: asks for the primary; with a cluster:
/// reads the slot map), connects, says hello, loads the scripts, then
/// serves until a connection fails.
async fn session(
    core: &Core,
    link: &EngineLink,
    target: &RedisTarget,
    known: &mut Vec<Endpoint>,
) -> io::Result<()> {
    let config = &core.shared.config;
    let timeout = config.redis_timeout;
    let deadline = Instant::now() + timeout;
    if config.redis_cluster {
        let (lanes, map) = redis_cluster::connect(core, link, target, known, timeout).await?;
        *known = map.nodes();
        let servers: Vec<String> = lanes.iter().map(|l| l.server.clone()).collect();
        link.pipeline().connected_cluster(Some(map), lanes.len());
        return up_and_serve(core, link, target, &servers.join(","), lanes, None).await;
    }
    let sentinels = config.redis_sentinels();
    let master = config.redis_sentinel_master.as_deref().unwrap_or("");
    let located = if sentinels.is_empty() {
        Located {
            addr: target.resolve()?,
            host: target.host.clone(),
            sentinel: None,
        }
    } else {
        redis_sentinel::locate(&sentinels, master, core.index, deadline).await?
    };
    let mut inbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let tls = core.shared.redis_tls.as_ref();
    let mut stream =
        RedisStream::connect(located.addr, &located.host, tls, &mut inbuf, deadline).await?;
    hello(&mut stream, &mut inbuf, link, target, deadline).await?;
    let mut watch = None;
    if let Some(sentinel) = &located.sentinel {
        redis_sentinel::check_primary(&mut stream, &mut inbuf, deadline).await?;
        // Without the watch a failover is still followed, on the next error.
        match Watch::open(sentinel, master, Instant::now() + timeout).await {
            Ok(w) => watch = Some(w),
            Err(e) => log::emit(
                Level::Warn,
                "redis_sentinel_unwatched",
                &[("core", &core.index), ("sentinel", sentinel), ("error", &e)],
            ),
        }
    }
    link.pipeline().connected();
    let server = located.addr.to_string();
    let lane = Lane {
        stream,
        inbuf,
        server: server.clone(),
    };
    up_and_serve(core, link, target, &server, vec![lane], watch).await
}

/// Says the connections are up, then serves.
async fn up_and_serve(
    core: &Core,
    link: &EngineLink,
    target: &RedisTarget,
    server: &str,
    lanes: Vec<Lane>,
    watch: Option<Watch>,
) -> io::Result<()> {
    core.stats.set_redis_up(true);
    log::emit(
        Level::Info,
        "redis_up",
        &[
            ("core", &core.index),
            ("redis", target),
            ("server", &server),
        ],
    );
    core.with_hub(|hub| hub.engine_status(true, core.now()));
    let servers: Vec<String> = lanes.iter().map(|l| l.server.clone()).collect();
    let registry = &core.shared.metrics.redis_servers;
    for s in &servers {
        registry.connected(core.index, s);
    }
    let err = match serve(core, link, lanes, watch).await {
        Ok(()) => io::Error::new(io::ErrorKind::ConnectionAborted, "closed"),
        Err(e) => e,
    };
    // Whose error it was: the one lane, or the lane the error names.
    let text = err.to_string();
    for s in &servers {
        let failed = servers.len() == 1 || text.starts_with(&format!("{s}: "));
        registry.disconnected(s, failed);
    }
    Err(err)
}

/// Writes what the pipeline has, reads what Redis says, until an error.
async fn serve(
    core: &Core,
    link: &EngineLink,
    mut lanes: Vec<Lane>,
    mut watch: Option<Watch>,
) -> io::Result<()> {
    let timeout = core.shared.config.redis_timeout;
    let check = (timeout / 4).max(Duration::from_millis(5));
    let mut writing = vec![false; lanes.len()];
    loop {
        let mut wait = check;
        {
            let mut pipeline = link.pipeline();
            pipeline.resend_due(core.tick());
            if pipeline.has_later() {
                wait = wait.min(Duration::from_millis(RETRY_MS));
            }
            for (i, lane) in lanes.iter_mut().enumerate() {
                let n = lane.stream.send_some(pipeline.output(i))?;
                pipeline.written(i, n);
                writing[i] = !pipeline.output(i).is_empty() || lane.stream.wants_write();
            }
            // Has anything waited too long?
            if pipeline.timed_out(core.tick(), timeout.as_millis() as u64) {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "request timed out"));
            }
        }
        let mut sentinel_spoke = false;
        monoio::select! {
            r = ready(&lanes, &writing) => r?,
            _ = link.woken() => {},
            _ = monoio::time::sleep(wait) => {},
            _ = redis_sentinel::watch_readable(&watch) => sentinel_spoke = true,
        }
        if let (true, Some(w)) = (sentinel_spoke, &mut watch) {
            match w.switched() {
                Ok(None) => {}
                Ok(Some(primary)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        format!("sentinel: +switch-master to {primary}"),
                    ))
                }
                // The sentinel went away: the next reconnect asks another.
                Err(_) => watch = None,
            }
        }
        // Read everything there is and hand it to the hub.
        for (i, lane) in lanes.iter_mut().enumerate() {
            lane.stream
                .recv_all(&mut lane.inbuf)
                .map_err(|e| in_lane(e, lane))?;
            let used = feed_hub(core, link, (i, &lane.server), &lane.inbuf)
                .map_err(|e| in_lane(e, lane))?;
            lane.inbuf.drain(..used);
        }
    }
}

/// With several lanes, an error names the server.
fn in_lane(e: io::Error, lane: &Lane) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", lane.server))
}

/// Resolves when any lane may be read (or written, where `writing`).
async fn ready(lanes: &[Lane], writing: &[bool]) -> io::Result<()> {
    if let [lane] = lanes {
        monoio::select! {
            r = lane.stream.readable() => return r,
            w = lane.stream.writable(), if writing[0] => return w,
        }
    }
    type Wait<'a> = Pin<Box<dyn Future<Output = io::Result<()>> + 'a>>;
    let mut waits: Vec<Wait<'_>> = Vec::with_capacity(lanes.len() * 2);
    for (lane, &w) in lanes.iter().zip(writing) {
        waits.push(Box::pin(lane.stream.readable()));
        if w {
            waits.push(Box::pin(lane.stream.writable()));
        }
    }
    std::future::poll_fn(|cx| {
        for w in waits.iter_mut() {
            if let Poll::Ready(r) = w.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    })
    .await
}

/// Hands every complete value in `inbuf` (of `lane`) to the hub; returns
/// the bytes used.
fn feed_hub(
    core: &Core,
    link: &EngineLink,
    (lane, server): (usize, &str),
    inbuf: &[u8],
) -> io::Result<usize> {
    let now = core.tick();
    let mut used = 0;
    let mut values = Vec::new();
    while let Some((value, n)) = resp::parse(&inbuf[used..]).map_err(invalid)? {
        used += n;
        values.push(value);
    }
    if values.is_empty() {
        return Ok(0);
    }
    core.with_hub(|hub| {
        for value in values {
            match value {
                Value::Push(items) => {
                    if let Some((topic, event)) = decode_push(&items) {
                        hub.engine_event(topic, event);
                    } else if let Some(push) = decode_direct_push(&items) {
                        hub.engine_direct(push, now);
                    } else if let Some(channel) = link.pipeline().dropped_subscription(&items) {
                        // A cluster moved a topic's slot away: its sharded
                        // subscription is gone; mirror it again from the map.
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            format!("cluster: {channel} moved (unsubscribed by the server)"),
                        ));
                    }
                }
                // A demoted primary (a failover under us): find the new one.
                Value::Error(e) if e.starts_with("READONLY") => {
                    return Err(io::Error::new(io::ErrorKind::ConnectionReset, e));
                }
                value => {
                    let answer = link
                        .pipeline()
                        .answer(lane, value, now)
                        .map_err(|_| invalid("an answer nobody asked for"))?;
                    match answer {
                        Answer::Reply(id, reply) => hub.engine_reply(id, reply, now),
                        Answer::Skip | Answer::Retried => {}
                        Answer::Redirected { ask } => {
                            core.stats.redis_redirect(ask);
                            core.shared.metrics.redis_servers.redirect(server, ask);
                        }
                        Answer::Rediscover(why) => {
                            return Err(io::Error::new(
                                io::ErrorKind::ConnectionReset,
                                format!("cluster: {why}"),
                            ))
                        }
                    }
                }
            }
        }
        Ok(used)
    })
}
