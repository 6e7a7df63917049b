//! A core's connections to a Redis Cluster (`--redis-cluster`): read the
//! slot map from any node it knows (`CLUSTER SHARDS`, or `CLUSTER SLOTS`
//! before Redis 7), then connect to every primary, one lane each. The map
//! and the redirects are `engine/cluster.rs`; serving the lanes is
//! `serve/redis.rs`.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use monoio::time::Instant;

use crate::config::Endpoint;
use crate::config::RedisTarget;
use crate::core::engine_link::EngineLink;
use crate::core::Core;
use crate::engine::cluster::SlotMap;
use crate::net::redis_stream::RedisStream;
use crate::proto::resp::{encode_command, Value};
use crate::serve::redis_lane::{hello, Lane};

fn resolve(e: &Endpoint) -> io::Result<SocketAddr> {
    (e.host.as_str(), e.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{e}: no address")))
}

/// A connection to `e` that has said hello and loaded the scripts.
async fn open(
    core: &Core,
    link: &EngineLink,
    target: &RedisTarget,
    e: &Endpoint,
    deadline: Instant,
) -> io::Result<Lane> {
    let mut inbuf = Vec::with_capacity(16 * 1024);
    let tls = core.shared.redis_tls.as_ref();
    let mut stream = RedisStream::connect(resolve(e)?, &e.host, tls, &mut inbuf, deadline).await?;
    hello(&mut stream, &mut inbuf, link, target, deadline).await?;
    Ok(Lane {
        stream,
        inbuf,
        server: e.to_string(),
    })
}

/// The slot map, as `lane`'s server sees it.
async fn read_map(lane: &mut Lane, tls: bool, deadline: Instant) -> io::Result<SlotMap> {
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
    let mut out = Vec::new();
    encode_command(&mut out, &["CLUSTER", "SHARDS"]);
    lane.stream.write_all(&mut out, deadline).await?;
    let answer = (lane.stream)
        .read_value(&mut lane.inbuf, deadline, "no answer to CLUSTER SHARDS")
        .await?;
    match answer {
        // Before Redis 7.0.
        Value::Error(e) if e.contains("unknown subcommand") || e.contains("Unknown subcommand") => {
            encode_command(&mut out, &["CLUSTER", "SLOTS"]);
            lane.stream.write_all(&mut out, deadline).await?;
            let answer = (lane.stream)
                .read_value(&mut lane.inbuf, deadline, "no answer to CLUSTER SLOTS")
                .await?;
            SlotMap::from_slots(&answer).map_err(invalid)
        }
        Value::Error(e) => Err(invalid(format!("CLUSTER SHARDS: {e}"))),
        answer => SlotMap::from_shards(&answer, tls).map_err(invalid),
    }
}

/// Nodes asked for the map per attempt, at most.
const SEEDS: usize = 4;

/// Reads the map from the first node that answers (the one `--redis` names
/// first: a configuration endpoint resolves to live nodes; then those seen
/// last time), each within its own `timeout`, then connects to every
/// primary, all within another.
pub async fn connect(
    core: &Core,
    link: &EngineLink,
    target: &RedisTarget,
    known: &[Endpoint],
    timeout: Duration,
) -> io::Result<(Vec<Lane>, SlotMap)> {
    let seed = Endpoint {
        host: target.host.clone(),
        port: target.port,
    };
    let mut seeds = vec![&seed];
    seeds.extend(known.iter().filter(|e| **e != seed));
    let mut errors = Vec::new();
    let mut found = None;
    for e in seeds.into_iter().take(SEEDS) {
        let deadline = Instant::now() + timeout;
        let attempt = async {
            let mut lane = open(core, link, target, e, deadline).await?;
            let map = read_map(&mut lane, target.tls, deadline).await?;
            Ok::<_, io::Error>((lane, map))
        };
        match attempt.await {
            Ok(ok) => {
                found = Some(ok);
                break;
            }
            Err(err) => errors.push(format!("{e}: {err}")),
        }
    }
    let Some((first, map)) = found else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("cluster: no node gave the slot map ({})", errors.join("; ")),
        ));
    };
    // The node asked is usually a primary: keep its connection as its lane.
    let deadline = Instant::now() + timeout;
    let mut first = Some(first);
    let mut lanes = Vec::with_capacity(map.primaries().len());
    for p in map.primaries() {
        let lane = match first.take_if(|l| l.server == p.to_string()) {
            Some(l) => l,
            None => open(core, link, target, p, deadline).await?,
        };
        lanes.push(lane);
    }
    Ok((lanes, map))
}
