//! The admin listener (`--admin-listen`): Prometheus metrics, the publish
//! API and direct messages to a session or a user (DESIGN §12). It is never
//! exposed to the load balancer; requests are small and rare, so each is
//! served with a plain read loop and closed.

use std::rc::Rc;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

use crate::auth::is_valid_user;
use crate::core::Core;
use crate::hub::{DirectCount, DirectTarget};
use crate::proto::command::is_valid_topic;
use crate::proto::cookie::SessionId;
use crate::proto::http::{parse_request, write_response, HeadError, Request, MAX_HEAD};
use crate::sys::log::{self, Level};

const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
const PUBLISH_PREFIX: &str = "/publish/";
const SEND_SESSION_PREFIX: &str = "/send/session/";
const SEND_USER_PREFIX: &str = "/send/user/";

/// Accepts admin connections forever.
pub async fn serve(listener: TcpListener, core: Rc<Core>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                monoio::spawn(handle(stream, core.clone()));
            }
            Err(_) => monoio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Reads more bytes into `buf`; `false` on end of stream, error or timeout.
/// The connection is dropped after a failure, so losing an in-flight read is harmless.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let chunk = Vec::with_capacity(16 * 1024);
    match monoio::time::timeout(ADMIN_TIMEOUT, stream.read(chunk)).await {
        Ok((Ok(n), chunk)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        _ => false,
    }
}

async fn handle(mut stream: TcpStream, core: Rc<Core>) {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let response = loop {
        if !read_more(&mut stream, &mut buf).await {
            return;
        }
        match parse_request(&buf) {
            Ok(None) if buf.len() < MAX_HEAD => continue,
            Ok(None) | Err(HeadError::TooLarge) => {
                break respond(431, "request head too large\n", &[])
            }
            Err(HeadError::Malformed(why)) => break respond(400, &format!("{why}\n"), &[]),
            Ok(Some((req, head_len))) => {
                // Copy what routing needs so the buffer can keep growing with the body.
                let info = Head::from(&req);
                break route(info, head_len, &mut buf, &mut stream, &core).await;
            }
        }
    };
    let _ = monoio::time::timeout(ADMIN_TIMEOUT, stream.write_all(response)).await;
    let _ = stream.shutdown().await;
}

/// The parts of an admin request head that routing uses, owned.
struct Head {
    method: String,
    path: String,
    authorization: Option<Vec<u8>>,
    content_length: Option<Option<usize>>,
    binary: bool,
    chunked: bool,
}

impl From<&Request<'_>> for Head {
    fn from(req: &Request<'_>) -> Head {
        Head {
            method: req.method.to_string(),
            path: req.path.to_string(),
            authorization: req.authorization.map(<[u8]>::to_vec),
            content_length: req.content_length,
            binary: req
                .content_type
                .is_some_and(|t| t.starts_with(b"application/octet-stream")),
            chunked: req.chunked,
        }
    }
}

async fn route(
    head: Head,
    head_len: usize,
    buf: &mut Vec<u8>,
    stream: &mut TcpStream,
    core: &Core,
) -> Vec<u8> {
    let shared = &core.shared;
    if head.path == "/metrics" {
        if head.method != "GET" {
            return respond(405, "method not allowed\n", &[("Allow", "GET")]);
        }
        let body = shared.metrics.render(&shared.node_id, shared.is_draining());
        return respond(200, &body, &[]);
    }
    if let Some(topic) = head.path.strip_prefix(PUBLISH_PREFIX) {
        let topic = topic.to_string();
        return publish(&head, &topic, head_len, buf, stream, core).await;
    }
    if let Some(id) = head.path.strip_prefix(SEND_SESSION_PREFIX) {
        // A session id is a secret: only its shape is checked here, and it
        // is never logged.
        let target = SessionId::parse(id.as_bytes()).map(DirectTarget::Session);
        let bad = "invalid session id (a UUID, as in the cookie)\n";
        return send(&head, target, bad, head_len, buf, stream, core).await;
    }
    if let Some(user) = head.path.strip_prefix(SEND_USER_PREFIX) {
        let target = (is_valid_user(user.as_bytes())).then(|| DirectTarget::User(user.into()));
        let bad = "invalid user: 1-128 bytes of [A-Za-z0-9._:@-]\n";
        return send(&head, target, bad, head_len, buf, stream, core).await;
    }
    respond(404, "not found\n", &[])
}

/// Checks what every write request of the admin API needs (the token, the
/// method, a body within `--max-message-size`, UTF-8 unless binary) and
/// reads the body: `Ok(body range)` or the refusal to answer. `valid`: the
/// path's own check (topic, session, user), answered 400 with `bad`.
async fn admin_body(
    head: &Head,
    valid: bool,
    bad: &str,
    head_len: usize,
    buf: &mut Vec<u8>,
    stream: &mut TcpStream,
    core: &Core,
) -> Result<std::ops::Range<usize>, Vec<u8>> {
    let shared = &core.shared;
    let Some(token) = shared.config.publish_token.as_deref() else {
        return Err(respond(
            404,
            "publish API is off (no --publish-token)\n",
            &[],
        ));
    };
    if head.method != "POST" {
        return Err(respond(405, "method not allowed\n", &[("Allow", "POST")]));
    }
    check_bearer(head, token)?;
    if !valid {
        return Err(respond(400, bad, &[]));
    }
    if head.chunked {
        return Err(respond(411, "send the body with Content-Length\n", &[]));
    }
    let len = match head.content_length {
        None => return Err(respond(411, "Content-Length required\n", &[])),
        Some(None) => return Err(respond(400, "invalid Content-Length\n", &[])),
        Some(Some(len)) => len,
    };
    if len > shared.config.max_message_size {
        return Err(respond(413, "body exceeds --max-message-size\n", &[]));
    }
    while buf.len() < head_len + len {
        if !read_more(stream, buf).await {
            return Err(respond(400, "incomplete body\n", &[]));
        }
    }
    let body = head_len..head_len + len;
    if !head.binary && std::str::from_utf8(&buf[body.clone()]).is_err() {
        return Err(respond(
            400,
            "text body must be UTF-8 (or send application/octet-stream)\n",
            &[],
        ));
    }
    Ok(body)
}

/// `POST /publish/<topic>`: checks the token, the topic and the body, then
/// publishes and answers the sequence number.
async fn publish(
    head: &Head,
    topic: &str,
    head_len: usize,
    buf: &mut Vec<u8>,
    stream: &mut TcpStream,
    core: &Core,
) -> Vec<u8> {
    let valid = is_valid_topic(topic.as_bytes());
    let bad = "invalid topic: 1-128 bytes of [A-Za-z0-9._:-]\n";
    let body = match admin_body(head, valid, bad, head_len, buf, stream, core).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let published = core.admin_publish(topic, &buf[body], head.binary);
    match monoio::time::timeout(ADMIN_TIMEOUT, published).await {
        Ok(seq) => {
            log::emit(
                Level::Debug,
                "published",
                &[("topic", &topic), ("seq", &seq)],
            );
            respond(200, &format!("{seq}\n"), &[])
        }
        Err(_) => respond(503, "publish timed out\n", &[]),
    }
}

/// `POST /send/session/<id>` and `POST /send/user/<user>`: a `direct`
/// message to that session or to every session of that user (with
/// `--redis`, on every node). `200 {"delivered":n,"held":m}` when a
/// connected client got it; `404` (same body, `delivered` 0) when none did
/// (`held`: disconnected sessions that get it if they resume). Nodes that
/// did not answer within `--redis-timeout` are counted as `unconfirmed`.
async fn send(
    head: &Head,
    target: Option<DirectTarget>,
    bad: &str,
    head_len: usize,
    buf: &mut Vec<u8>,
    stream: &mut TcpStream,
    core: &Core,
) -> Vec<u8> {
    let valid = target.is_some();
    let body = match admin_body(head, valid, bad, head_len, buf, stream, core).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let Some(target) = target else {
        return respond(400, bad, &[]);
    };
    // Through the engine: its round trip, then the nodes' answers, each
    // bounded by --redis-timeout.
    let wait = match core.engine() {
        Some(_) => 2 * core.shared.config.redis_timeout,
        None => ADMIN_TIMEOUT,
    };
    let mut sent = core.admin_direct(target, &buf[body], head.binary);
    let (count, unconfirmed) = match monoio::time::timeout(wait, &mut sent).await {
        Ok(count) => (count, 0),
        Err(_) => {
            core.forget_direct(&sent);
            sent.so_far()
        }
    };
    let DirectCount { delivered, held } = count;
    core.stats.direct(delivered, held);
    let status = if delivered > 0 { 200 } else { 404 };
    let body = if unconfirmed > 0 {
        format!("{{\"delivered\":{delivered},\"held\":{held},\"unconfirmed\":{unconfirmed}}}\n")
    } else {
        format!("{{\"delivered\":{delivered},\"held\":{held}}}\n")
    };
    respond_json(status, &body)
}

/// The request's `Authorization: Bearer` must be `token`: else the 401 or
/// 403 to answer.
fn check_bearer(head: &Head, token: &str) -> Result<(), Vec<u8>> {
    let given = head.authorization.as_deref();
    let Some(given) = given.and_then(|a| a.strip_prefix(b"Bearer ")) else {
        let challenge = [("WWW-Authenticate", "Bearer")];
        return Err(respond(401, "bearer token required\n", &challenge));
    };
    if !constant_time_eq(given, token.as_bytes()) {
        return Err(respond(403, "invalid token\n", &[]));
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn respond_json(status: u16, body: &str) -> Vec<u8> {
    respond(status, body, &[("Content-Type", "application/json")])
}

fn respond(status: u16, body: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 200);
    write_response(&mut out, status, headers, body);
    out
}
