//! The auth hook's wire format (`--auth-hook URL`, DESIGN.md §11), sans-IO.
//!
//! - [`HookTarget`]: where the backend is, parsed from `http://host[:port]/path`.
//! - [`write_request`]: one `POST` carrying a [`HookRequest`] as JSON.
//! - [`parse_response`]: a push parser for the backend's answer (`Ok(None)`:
//!   need more bytes), [`parse_response_at_eof`] when the backend closed.
//! - [`verdict`]: what the answer means: [`HookVerdict::Grant`], a refusal
//!   passed on (`401` / `403`), or a failure, which the caller answers with
//!   `503` (fail closed).
//!
//! The request carries credentials (the `Cookie` and `Authorization` fields,
//! and the path's query may hold a `token`): none of it ever appears in an
//! error or a `Debug` output. [`HookError`] carries no data.

use std::borrow::Cow;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

use serde::{Deserialize, Serialize};

use super::{is_valid_user, Grants};

/// The largest response head accepted (with any `1xx` heads before it).
pub const MAX_HEAD: usize = 16 * 1024;
/// The largest response body accepted (decoded).
pub const MAX_BODY: usize = 64 * 1024;
/// A chunked body's framing (sizes, extensions, trailers) may add this much
/// to [`MAX_BODY`] on the wire.
const MAX_CHUNK_OVERHEAD: usize = 16 * 1024;
/// The most header fields in a response head.
const MAX_HEADERS: usize = 32;

/// Where the hook is: `http://host[:port]/path` (plain HTTP only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookTarget {
    host: String,
    port: u16,
    path: String,
}

impl HookTarget {
    /// Parses the `--auth-hook` URL: `http://host[:port][/path][?query]`;
    /// the port defaults to 80 and the path to `/`. No userinfo, no
    /// fragment, no `https` (the hook client does not speak TLS).
    pub fn parse(url: &str) -> Result<HookTarget, String> {
        const SHAPE: &str = "expected http://host[:port]/path";
        let scheme_end = url.find("://").ok_or(SHAPE)?;
        let scheme = &url[..scheme_end];
        if scheme.eq_ignore_ascii_case("https") {
            return Err(
                "https is not supported: the auth hook client does not speak TLS \
                 (use http://host[:port]/path, e.g. to a local proxy)"
                    .into(),
            );
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(format!("scheme {scheme:?} is not supported; {SHAPE}"));
        }
        let rest = &url[scheme_end + 3..];
        if rest.contains('#') {
            return Err("a URL fragment (#...) is not allowed in the hook URL".into());
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) if rest.as_bytes()[at] == b'?' => (&rest[..at], format!("/{}", &rest[at..])),
            Some(at) => (&rest[..at], rest[at..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err("user:password@ is not allowed in the hook URL".into());
        }
        let (host, port, v6) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or("unclosed [ in the hook URL's host")?;
            match after {
                "" => (h, None, true),
                _ => (h, Some(after.strip_prefix(':').ok_or(SHAPE)?), true),
            }
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p), false),
                None => (authority, None, false),
            }
        };
        let host_ok = |b: u8| match v6 {
            true => b.is_ascii_hexdigit() || matches!(b, b':' | b'.'),
            false => b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'),
        };
        if host.is_empty() || !host.bytes().all(host_ok) || (v6 && !host.contains(':')) {
            return Err(format!("bad host {host:?} in the hook URL; {SHAPE}"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("port {p:?} is not a port number"))?,
        };
        if !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the hook URL's path has a space or a byte that is not visible ASCII".into(),
            );
        }
        Ok(HookTarget {
            host: host.to_string(),
            port,
            path,
        })
    }

    /// The host name or address (without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The request target: path and query as given.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The address to connect to: the first the resolver gives. Called once
    /// at start (it may block).
    pub fn resolve(&self) -> Result<SocketAddr, String> {
        let what = || format!("auth hook host {}:{}", self.host, self.port);
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("{}: {e}", what()))?
            .next()
            .ok_or_else(|| format!("{}: no address", what()))
    }

    /// `host`, `host:port` or `[v6]:port`, as the `Host` field wants it.
    fn authority(&self, out: &mut Vec<u8>) {
        let v6 = self.host.contains(':');
        if v6 {
            out.push(b'[');
        }
        out.extend_from_slice(self.host.as_bytes());
        if v6 {
            out.push(b']');
        }
        if self.port != 80 {
            out.extend_from_slice(format!(":{}", self.port).as_bytes());
        }
    }
}

impl fmt::Display for HookTarget {
    /// The URL without its query (for logs: it may carry a key).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.split('?').next().unwrap_or("/");
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}{path}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}{path}", self.host, self.port)
        }
    }
}

/// What the gateway tells the hook about an upgrade, borrowed from the
/// request. Header fields absent from the upgrade are `None` (JSON `null`);
/// bytes that are not UTF-8 are converted lossily.
#[derive(Clone, Copy, Default)]
pub struct HookRequest<'a> {
    /// The session id (new or resumed).
    pub session: &'a str,
    /// Whether the session was resumed.
    pub resumed: bool,
    /// The request target's path, plus `?query` when there is one.
    pub path: &'a [u8],
    /// The `Cookie` field.
    pub cookie: Option<&'a [u8]>,
    /// The `Authorization` field.
    pub authorization: Option<&'a [u8]>,
    /// The `Origin` field.
    pub origin: Option<&'a [u8]>,
    /// The `X-Forwarded-For` field.
    pub forwarded_for: Option<&'a [u8]>,
    /// The `User-Agent` field.
    pub user_agent: Option<&'a [u8]>,
    /// The user a JWT already established (`sub`), if any.
    pub user: Option<&'a str>,
}

impl fmt::Debug for HookRequest<'_> {
    /// Credentials stay out: the cookie and authorization only as present or
    /// not, the path without its query.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.split(|&b| b == b'?').next().unwrap_or(b"");
        let redacted = |v: Option<&[u8]>| v.map(|_| "<redacted>");
        f.debug_struct("HookRequest")
            .field("session", &self.session)
            .field("resumed", &self.resumed)
            .field("path", &String::from_utf8_lossy(path))
            .field("cookie", &redacted(self.cookie))
            .field("authorization", &redacted(self.authorization))
            .field("origin", &self.origin.map(String::from_utf8_lossy))
            .field(
                "forwarded_for",
                &self.forwarded_for.map(String::from_utf8_lossy),
            )
            .field("user_agent", &self.user_agent.map(String::from_utf8_lossy))
            .field("user", &self.user)
            .finish()
    }
}

#[derive(Serialize)]
struct Body<'a> {
    session: &'a str,
    resumed: bool,
    path: Cow<'a, str>,
    headers: Headers<'a>,
    user: Option<&'a str>,
}

#[derive(Serialize)]
struct Headers<'a> {
    cookie: Option<Cow<'a, str>>,
    authorization: Option<Cow<'a, str>>,
    origin: Option<Cow<'a, str>>,
    #[serde(rename = "x-forwarded-for")]
    forwarded_for: Option<Cow<'a, str>>,
    #[serde(rename = "user-agent")]
    user_agent: Option<Cow<'a, str>>,
}

/// Appends one complete HTTP/1.1 request to `out`: `POST <path>` with
/// `Host`, `Content-Type: application/json`, `Content-Length` and
/// `Connection: keep-alive`, and `req` as the JSON body.
pub fn write_request(target: &HookTarget, req: &HookRequest<'_>, out: &mut Vec<u8>) {
    fn lossy(v: Option<&[u8]>) -> Option<Cow<'_, str>> {
        v.map(String::from_utf8_lossy)
    }
    let body = Body {
        session: req.session,
        resumed: req.resumed,
        path: String::from_utf8_lossy(req.path),
        headers: Headers {
            cookie: lossy(req.cookie),
            authorization: lossy(req.authorization),
            origin: lossy(req.origin),
            forwarded_for: lossy(req.forwarded_for),
            user_agent: lossy(req.user_agent),
        },
        user: req.user,
    };
    // Serializing strings and bools into a Vec cannot fail.
    let json = serde_json::to_vec(&body).unwrap_or_default();
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(target.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    target.authority(out);
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\nContent-Length: ");
    out.extend_from_slice(json.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\nConnection: keep-alive\r\n\r\n");
    out.extend_from_slice(&json);
}

/// Why a response could not be read. Carries no data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookError {
    /// Not a valid HTTP/1.x response head, a status under 100, or a `101`
    /// (nothing was upgraded).
    Head,
    /// The head (with any `1xx` heads before it) is over [`MAX_HEAD`] bytes.
    HeadTooLarge,
    /// The body is over [`MAX_BODY`] bytes (or its chunked framing is huge).
    BodyTooLarge,
    /// `Content-Length` is not a number, or repeated with another value.
    ContentLength,
    /// `Transfer-Encoding` is something other than exactly `chunked`.
    TransferEncoding,
    /// Bad chunked framing (size line, missing CRLF after the data, trailer).
    Chunk,
    /// The connection ended before the response did.
    Truncated,
}

impl HookError {
    /// A fixed word for log lines (`reason=...`).
    pub fn reason(self) -> &'static str {
        match self {
            HookError::Head => "malformed",
            HookError::HeadTooLarge | HookError::BodyTooLarge => "too_large",
            HookError::ContentLength => "content_length",
            HookError::TransferEncoding => "transfer_encoding",
            HookError::Chunk => "chunk",
            HookError::Truncated => "closed",
        }
    }
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for HookError {}

/// A complete response.
#[derive(Clone, PartialEq, Eq)]
pub struct HookResponse<'b> {
    /// The status code (never `1xx`: those are skipped).
    pub status: u16,
    /// The body (decoded when it came chunked).
    pub body: Cow<'b, [u8]>,
    /// Whether the connection may carry the next request: HTTP/1.1, no
    /// `Connection: close`, and a body whose end was marked.
    pub keep_alive: bool,
    /// Bytes of the buffer this response used.
    pub consumed: usize,
}

impl fmt::Debug for HookResponse<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookResponse")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .field("keep_alive", &self.keep_alive)
            .field("consumed", &self.consumed)
            .finish()
    }
}

/// Parses a response from the start of `buf`: `Ok(None)` needs more bytes.
/// A response with neither `Content-Length` nor `Transfer-Encoding` ends at
/// end of stream: it stays `Ok(None)` until [`parse_response_at_eof`].
pub fn parse_response(buf: &[u8]) -> Result<Option<HookResponse<'_>>, HookError> {
    parse(buf, false)
}

/// [`parse_response`] once the backend closed the connection: the response
/// is complete now or never ([`HookError::Truncated`]).
pub fn parse_response_at_eof(buf: &[u8]) -> Result<HookResponse<'_>, HookError> {
    parse(buf, true)?.ok_or(HookError::Truncated)
}

/// How the body's end is marked.
enum Framing {
    Length(usize),
    Chunked,
    Eof,
}

fn parse(buf: &[u8], eof: bool) -> Result<Option<HookResponse<'_>>, HookError> {
    // Only the first MAX_HEAD bytes can hold the heads, so bytes past the cap
    // never change the answer, however the reads split them.
    let capped = &buf[..buf.len().min(MAX_HEAD)];
    let mut start = 0;
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut fields);
        let head_len = match resp.parse(&capped[start..]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                return Err(HookError::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) if eof => return Err(HookError::Truncated),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(HookError::Head),
        };
        let (Some(status), Some(minor)) = (resp.code, resp.version) else {
            return Err(HookError::Head);
        };
        let end = start + head_len;
        match status {
            0..=99 | 101 => return Err(HookError::Head),
            100..=199 => {
                start = end;
                continue;
            }
            _ => {}
        }
        let mut length = None;
        let mut chunked = false;
        let mut close = minor == 0;
        for field in resp.headers.iter() {
            let value = field.value.trim_ascii();
            if field.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(value)
                    .ok()
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .ok_or(HookError::ContentLength)?;
                if length.is_some_and(|m| m != n) {
                    return Err(HookError::ContentLength);
                }
                length = Some(n);
            } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
                if chunked || !value.eq_ignore_ascii_case(b"chunked") {
                    return Err(HookError::TransferEncoding);
                }
                chunked = true;
            } else if field.name.eq_ignore_ascii_case("connection") {
                close |= value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
            }
        }
        // RFC 9112 §6.3: 204 and 304 have no body; Transfer-Encoding overrides
        // Content-Length, and the connection must then be closed after.
        let framing = match (status, chunked, length) {
            (204 | 304, _, _) => Framing::Length(0),
            (_, true, l) => {
                close |= l.is_some();
                Framing::Chunked
            }
            (_, false, Some(n)) => Framing::Length(n),
            (_, false, None) => Framing::Eof,
        };
        let rest = &buf[end..];
        let (body, used, keep_alive) = match framing {
            Framing::Length(n) if n > MAX_BODY => return Err(HookError::BodyTooLarge),
            Framing::Length(n) if rest.len() >= n => (Cow::Borrowed(&rest[..n]), n, !close),
            Framing::Length(_) if eof => return Err(HookError::Truncated),
            Framing::Length(_) => return Ok(None),
            Framing::Chunked => match dechunk(rest)? {
                Some((body, used)) => (Cow::Owned(body), used, !close),
                None if eof => return Err(HookError::Truncated),
                None => return Ok(None),
            },
            Framing::Eof if rest.len() > MAX_BODY => return Err(HookError::BodyTooLarge),
            Framing::Eof if eof => (Cow::Borrowed(rest), rest.len(), false),
            Framing::Eof => return Ok(None),
        };
        return Ok(Some(HookResponse {
            status,
            body,
            keep_alive,
            consumed: end + used,
        }));
    }
}

/// One CRLF-terminated line at the start of `buf`, without its CRLF, and
/// the bytes it used. A bare CR or LF is an error.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, HookError> {
    match buf.iter().position(|&b| b == b'\r' || b == b'\n') {
        None => Ok(None),
        Some(i) => match (buf[i], buf.get(i + 1)) {
            (b'\r', Some(b'\n')) => Ok(Some((&buf[..i], i + 2))),
            (b'\r', None) => Ok(None),
            _ => Err(HookError::Chunk),
        },
    }
}

/// Decodes a chunked body (RFC 9112 §7.1) from the start of `wire`: the
/// data and the bytes used, or `None` when more is needed.
fn dechunk(wire: &[u8]) -> Result<Option<(Vec<u8>, usize)>, HookError> {
    let limit = MAX_BODY + MAX_CHUNK_OVERHEAD;
    let incomplete = || {
        if wire.len() >= limit {
            Err(HookError::BodyTooLarge)
        } else {
            Ok(None)
        }
    };
    let wire_capped = &wire[..wire.len().min(limit)];
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some((size_line, n)) = line(&wire_capped[at..])? else {
            return incomplete();
        };
        at += n;
        let digits = size_line
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        let after = &size_line[digits..];
        // chunk-ext: `;` after optional whitespace; the extensions are ignored.
        let after = after.trim_ascii_start();
        if digits == 0 || !(after.is_empty() || after[0] == b';') {
            return Err(HookError::Chunk);
        }
        let mut size: usize = 0;
        for &d in &size_line[..digits] {
            let v = (d as char).to_digit(16).unwrap_or(0) as usize;
            size = size.saturating_mul(16).saturating_add(v);
        }
        if size > MAX_BODY - body.len() {
            return Err(HookError::BodyTooLarge);
        }
        if size == 0 {
            // The trailer section: fields up to an empty line, ignored.
            loop {
                let Some((trailer, n)) = line(&wire_capped[at..])? else {
                    return incomplete();
                };
                at += n;
                if trailer.is_empty() {
                    return Ok(Some((body, at)));
                }
            }
        }
        let Some(data) = wire_capped.get(at..at + size + 2) else {
            // A wrong byte where the CRLF belongs is an error right away.
            let have = &wire_capped[(at + size).min(wire_capped.len())..];
            if !b"\r\n".starts_with(&have[..have.len().min(2)]) {
                return Err(HookError::Chunk);
            }
            return incomplete();
        };
        if &data[size..] != b"\r\n" {
            return Err(HookError::Chunk);
        }
        body.extend_from_slice(&data[..size]);
        at += size + 2;
    }
}

/// What the hook decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookVerdict {
    /// `200` with a valid body: the user, their own topic patterns (`None`
    /// when both lists are empty) and, if given, how long the grant lasts.
    Grant {
        user: Box<str>,
        grants: Option<Box<Grants>>,
        expires_in: Option<u64>,
    },
    /// `401` or `403`: passed on to the client.
    Refuse(u16),
    /// Anything else: the caller answers `503` (fail closed). A fixed word
    /// for logs: `timeout`, `connect`, `closed` (reset or closed before a
    /// complete answer), `status` (not 200/401/403), `json`, `user`,
    /// `patterns`, `expires_in` (a bad 200 body), or a [`HookError::reason`].
    Fail(&'static str),
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    sub: Option<Vec<String>>,
    #[serde(default, rename = "pub")]
    publish: Option<Vec<String>>,
    #[serde(default)]
    expires_in: Option<serde_json::Number>,
}

/// The verdict on a complete response: `200` with
/// `{"user": ID, "sub": [PATTERN...], "pub": [PATTERN...], "expires_in": N}`
/// (`sub`, `pub` and `expires_in` optional, other fields ignored) grants;
/// `401` / `403` refuse; anything else fails.
pub fn verdict(status: u16, body: &[u8]) -> HookVerdict {
    match status {
        200 => {}
        401 | 403 => return HookVerdict::Refuse(status),
        _ => return HookVerdict::Fail("status"),
    }
    // Two passes over at most 64 KiB: the first checks the whole document
    // (the typed pass skips unknown fields without checking their strings:
    // bad UTF-8, lone surrogates); the second refuses duplicate fields and
    // wrong types. An object only: serde would also fill the struct from an
    // array.
    let valid = serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.is_object());
    let answer = match serde_json::from_slice::<Answer>(body) {
        Ok(answer) if valid => answer,
        _ => return HookVerdict::Fail("json"),
    };
    let Some(user) = answer.user.filter(|u| is_valid_user(u.as_bytes())) else {
        return HookVerdict::Fail("user");
    };
    let expires_in = match answer.expires_in {
        None => None,
        Some(n) => match n.as_u64() {
            Some(n) => Some(n),
            None => return HookVerdict::Fail("expires_in"),
        },
    };
    let sub = answer.sub.unwrap_or_default();
    let publish = answer.publish.unwrap_or_default();
    let Ok(grants) = Grants::boxed(&sub, &publish) else {
        return HookVerdict::Fail("patterns");
    };
    HookVerdict::Grant {
        user: user.into_boxed_str(),
        grants,
        expires_in,
    }
}

#[cfg(test)]
#[path = "hook_tests.rs"]
mod tests;
