//! The admin listener (`--admin-listen`): Prometheus metrics and the publish
//! API. It is never exposed to the load balancer; requests are small and
//! rare, so each is served with a plain read loop and closed.

use std::rc::Rc;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

use crate::core::Core;
use crate::proto::command::is_valid_topic;
use crate::proto::http::{parse_request, write_response, HeadError, Request, MAX_HEAD};
use crate::sys::log::{self, Level};

const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
const PUBLISH_PREFIX: &str = "/publish/";

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
    let Some(topic) = head.path.strip_prefix(PUBLISH_PREFIX) else {
        return respond(404, "not found\n", &[]);
    };
    publish(&head, topic, head_len, buf, stream, core).await
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
    let shared = &core.shared;
    let Some(token) = shared.config.publish_token.as_deref() else {
        return respond(404, "publish API is off (no --publish-token)\n", &[]);
    };
    if head.method != "POST" {
        return respond(405, "method not allowed\n", &[("Allow", "POST")]);
    }
    if let Err(refusal) = check_bearer(head, token) {
        return refusal;
    }
    if !is_valid_topic(topic.as_bytes()) {
        return respond(400, "invalid topic: 1-128 bytes of [A-Za-z0-9._:-]\n", &[]);
    }
    if head.chunked {
        return respond(411, "send the body with Content-Length\n", &[]);
    }
    let len = match head.content_length {
        None => return respond(411, "Content-Length required\n", &[]),
        Some(None) => return respond(400, "invalid Content-Length\n", &[]),
        Some(Some(len)) => len,
    };
    if len > shared.config.max_message_size {
        return respond(413, "body exceeds --max-message-size\n", &[]);
    }
    while buf.len() < head_len + len {
        if !read_more(stream, buf).await {
            return respond(400, "incomplete body\n", &[]);
        }
    }
    let body = &buf[head_len..head_len + len];
    if !head.binary && std::str::from_utf8(body).is_err() {
        return respond(
            400,
            "text body must be UTF-8 (or send application/octet-stream)\n",
            &[],
        );
    }
    let published = core.admin_publish(topic, body, head.binary);
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

fn respond(status: u16, body: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 200);
    write_response(&mut out, status, headers, body);
    out
}
