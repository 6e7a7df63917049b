//! One connection of a core to a Redis server, made ready for service:
//! `HELLO 3` with the credentials, the database, the scripts loaded. Used
//! for the one server (`serve/redis.rs`) and for each primary of a cluster
//! (`serve/redis_cluster.rs`).

use std::io;

use monoio::time::Instant;

use crate::config::RedisTarget;
use crate::core::engine_link::EngineLink;
use crate::net::redis_stream::RedisStream;
use crate::proto::resp::{encode_command, Value};

/// One connection of a core: to the server, or to one primary of a cluster.
pub struct Lane {
    /// The connection.
    pub stream: RedisStream,
    /// Bytes read and not yet parsed.
    pub inbuf: Vec<u8>,
    /// Where it goes (for logs).
    pub server: String,
}

/// HELLO 3 (with AUTH), SELECT (not in a cluster), SCRIPT LOAD: all
/// answered before service.
pub async fn hello(
    stream: &mut RedisStream,
    inbuf: &mut Vec<u8>,
    link: &EngineLink,
    target: &RedisTarget,
    deadline: Instant,
) -> io::Result<()> {
    let mut hello = Vec::new();
    let mut args: Vec<&str> = vec!["HELLO", "3"];
    if let Some(pw) = &target.password {
        args.extend(["AUTH", target.user.as_deref().unwrap_or("default"), pw]);
    }
    args.extend(["SETNAME", "wsgate"]);
    encode_command(&mut hello, &args);
    let mut answers = 1;
    if target.db != 0 {
        encode_command(&mut hello, &["SELECT", &target.db.to_string()]);
        answers += 1;
    }
    let scripts: Vec<String> = (link.pipeline().schema().scripts.all().iter())
        .map(|s| s.source.clone())
        .collect();
    for source in &scripts {
        encode_command(&mut hello, &["SCRIPT", "LOAD", source]);
    }
    stream.write_all(&mut hello, deadline).await?;
    for _ in 0..answers + scripts.len() {
        if let Value::Error(e) = stream
            .read_value(inbuf, deadline, "no answer to HELLO")
            .await?
        {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, e));
        }
    }
    Ok(())
}
