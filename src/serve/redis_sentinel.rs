//! A core's conversations with Redis Sentinel (`--redis-sentinel`): where
//! the primary is, whether the server reached is it, and a watch on
//! `+switch-master` while connected. The questions and answers are
//! `engine/sentinel.rs`; this file only moves them.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use monoio::time::Instant;

use crate::engine::sentinel::{self, Endpoint, SWITCH_MASTER};
use crate::net::redis_stream::RedisStream;
use crate::proto::resp::{self, encode_command, Value};

/// Where to connect, and who said so.
pub struct Located {
    /// The primary's address.
    pub addr: SocketAddr,
    /// Its host as named (for TLS).
    pub host: String,
    /// The sentinel that named it (watched while connected).
    pub sentinel: Option<Endpoint>,
}

fn resolve(e: &Endpoint) -> io::Result<SocketAddr> {
    (e.host.as_str(), e.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{e}: no address")))
}

/// One question to one sentinel (plain TCP, RESP2).
async fn ask(e: &Endpoint, args: &[&str], deadline: Instant) -> io::Result<(RedisStream, Value)> {
    let mut inbuf = Vec::new();
    let mut stream = RedisStream::connect(resolve(e)?, &e.host, None, &mut inbuf, deadline).await?;
    let mut out = Vec::new();
    encode_command(&mut out, args);
    stream.write_all(&mut out, deadline).await?;
    let v = (stream.read_value(&mut inbuf, deadline, "no answer from the sentinel")).await?;
    Ok((stream, v))
}

/// Asks the sentinels in turn (starting at `first`, so the cores spread
/// over them) for the primary of `master`; the first that knows answers.
pub async fn locate(
    sentinels: &[Endpoint],
    master: &str,
    first: usize,
    deadline: Instant,
) -> io::Result<Located> {
    let mut errors = Vec::new();
    for i in 0..sentinels.len() {
        let e = &sentinels[(first + i) % sentinels.len()];
        match ask(e, &sentinel::ask_primary(master), deadline).await {
            Ok((_, answer)) => match sentinel::primary_of(&answer) {
                Some(primary) => {
                    return Ok(Located {
                        addr: resolve(&primary)?,
                        host: primary.host,
                        sentinel: Some(e.clone()),
                    })
                }
                None => errors.push(format!("{e}: does not know {master:?}")),
            },
            Err(err) => errors.push(format!("{e}: {err}")),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "sentinel: no primary for {master:?} ({})",
            errors.join("; ")
        ),
    ))
}

/// `ROLE` on a fresh connection: an error unless it is the primary (a
/// sentinel's answer can be stale for a moment around a failover).
pub async fn check_primary(
    stream: &mut RedisStream,
    inbuf: &mut Vec<u8>,
    deadline: Instant,
) -> io::Result<()> {
    let mut out = Vec::new();
    encode_command(&mut out, &["ROLE"]);
    stream.write_all(&mut out, deadline).await?;
    let role = stream
        .read_value(inbuf, deadline, "no answer to ROLE")
        .await?;
    if sentinel::is_primary(&role) {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::ConnectionRefused,
        format!(
            "sentinel named a server whose role is {}, not the primary",
            sentinel::role_name(&role)
        ),
    ))
}

/// A sentinel connection subscribed to `+switch-master`.
pub struct Watch {
    stream: RedisStream,
    inbuf: Vec<u8>,
    master: String,
}

impl Watch {
    /// Subscribes at sentinel `e`.
    pub async fn open(e: &Endpoint, master: &str, deadline: Instant) -> io::Result<Watch> {
        let (stream, confirm) = ask(e, &["SUBSCRIBE", SWITCH_MASTER], deadline).await?;
        if let Value::Error(err) = confirm {
            return Err(io::Error::new(io::ErrorKind::InvalidData, err));
        }
        Ok(Watch {
            stream,
            inbuf: Vec::new(),
            master: master.to_string(),
        })
    }

    /// Resolves when the sentinel may have said something.
    pub async fn readable(&self) -> io::Result<()> {
        self.stream.readable().await
    }

    /// Reads what the sentinel said: the new primary if it announced a
    /// failover of ours.
    pub fn switched(&mut self) -> io::Result<Option<Endpoint>> {
        self.stream.recv_all(&mut self.inbuf)?;
        let mut switched = None;
        let mut used = 0;
        while let Some((v, n)) = resp::parse(&self.inbuf[used..])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
        {
            used += n;
            switched = switched.or_else(|| sentinel::switched(&v, &self.master));
        }
        self.inbuf.drain(..used);
        Ok(switched)
    }
}

/// Waits on `watch` if there is one, forever otherwise.
pub async fn watch_readable(watch: &Option<Watch>) -> io::Result<()> {
    match watch {
        Some(w) => w.readable().await,
        None => std::future::pending().await,
    }
}
