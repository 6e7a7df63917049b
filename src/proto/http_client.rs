//! A small HTTP/1.1 client's wire format, sans-IO: where a backend hook is
//! ([`HookTarget`], from `http://host[:port]/path`), a `POST` head, and a
//! push parser for the response ([`parse_response`], `Ok(None)`: need more
//! bytes; [`parse_response_at_eof`] when the backend closed). Shared by the
//! auth hook (DESIGN §11) and the events hook (§12); [`HookError`] carries
//! no data, so no credential of a request can reach an error.

use std::borrow::Cow;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// The largest response head accepted (with any `1xx` heads before it).
pub const MAX_HEAD: usize = 16 * 1024;
/// The largest response body accepted (decoded).
pub const MAX_BODY: usize = 64 * 1024;
/// A chunked body's framing (sizes, extensions, trailers) may add this much
/// to [`MAX_BODY`] on the wire.
pub(crate) const MAX_CHUNK_OVERHEAD: usize = 16 * 1024;
/// The most header fields in a response head.
pub(crate) const MAX_HEADERS: usize = 32;

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

/// Appends a `POST` of `body` (`content_type`) to `target`, keep-alive.
pub fn write_post(target: &HookTarget, content_type: &str, body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(target.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    target.authority(out);
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\nConnection: keep-alive\r\n\r\n");
    out.extend_from_slice(body);
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
