//! The HTTP/1.1 request head (RFC 9112) and plain responses.
//!
//! [`parse_request`] is a push parser: `Ok(None)` means "need more bytes".
//! httparse does the grammar; this module adds what httparse is lenient about
//! (bare CR or LF line endings, which enable request smuggling through proxies
//! that disagree) and the 16 KiB cap on the head.

/// The largest request head accepted; beyond it the answer is 431.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most header fields accepted; beyond it the answer is 431.
pub const MAX_HEADERS: usize = 64;
/// The most `Cookie` header fields remembered.
const MAX_COOKIE_HEADERS: usize = 8;
/// The most `Sec-WebSocket-Extensions` fields looked at (browsers send one).
const MAX_EXTENSION_HEADERS: usize = 4;

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// 400: the head is not valid HTTP/1.x; the text says which rule.
    Malformed(&'static str),
    /// 431: the head is larger than [`MAX_HEAD`] or has too many fields.
    TooLarge,
}

/// A `Sec-WebSocket-Key` field as seen: missing, once, or repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyField<'b> {
    /// No key field.
    Missing,
    /// Exactly one key field with this value.
    One(&'b [u8]),
    /// More than one key field.
    Repeated,
}

/// The parts of a request head the gateway acts on, borrowed from the buffer.
#[derive(Debug, Clone)]
pub struct Request<'b> {
    /// The method, e.g. `GET`.
    pub method: &'b str,
    /// The path of the request target, without the query.
    pub path: &'b str,
    /// The query of the request target (after `?`), if any. It may carry a
    /// credential (a `token`): it is never logged.
    pub query: Option<&'b str>,
    /// The authority of an absolute-form target (`GET http://host/ws`):
    /// then it, not `Host`, names the target (RFC 9112 §3.3).
    pub authority: Option<&'b [u8]>,
    /// Minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor_version: u8,
    /// The `Host` field; `None` if absent.
    pub host: Option<&'b [u8]>,
    /// `Host` appeared more than once (RFC 9112 §3.2: answer 400).
    pub host_repeated: bool,
    /// The `Upgrade` field lists the `websocket` protocol.
    pub upgrade_websocket: bool,
    /// The `Connection` field lists the `upgrade` option.
    pub connection_upgrade: bool,
    /// The `Sec-WebSocket-Key` field.
    pub key: KeyField<'b>,
    /// The `Sec-WebSocket-Version` field; `Some(b"")` marks a repeated field.
    pub ws_version: Option<&'b [u8]>,
    /// The `Origin` field.
    pub origin: Option<&'b [u8]>,
    /// The first `X-Forwarded-For` field (the balancer's view of the client).
    pub forwarded_for: Option<&'b [u8]>,
    /// The `Authorization` field (admin API; a bearer token on the gateway path).
    pub authorization: Option<&'b [u8]>,
    /// The `User-Agent` field (for the auth hook).
    pub user_agent: Option<&'b [u8]>,
    /// The `Content-Length` field; `Some(None)` if unparsable or repeated with another value.
    pub content_length: Option<Option<usize>>,
    /// The `Content-Type` field.
    pub content_type: Option<&'b [u8]>,
    /// A `Transfer-Encoding` field is present.
    pub chunked: bool,
    cookies: [&'b [u8]; MAX_COOKIE_HEADERS],
    cookie_count: usize,
    extensions: [&'b [u8]; MAX_EXTENSION_HEADERS],
    extension_count: usize,
}

impl<'b> Request<'b> {
    /// The values of the `Cookie` fields, in order.
    pub fn cookie_headers(&self) -> impl Iterator<Item = &'b [u8]> + '_ {
        self.cookies[..self.cookie_count].iter().copied()
    }

    /// The values of the `Sec-WebSocket-Extensions` fields, in order (the
    /// first few: offers are read in order, and a client lists its
    /// preferred ones first).
    pub fn extension_headers(&self) -> impl Iterator<Item = &'b [u8]> + '_ {
        self.extensions[..self.extension_count].iter().copied()
    }
}

/// Finds the end of the head (just past the empty line) and rejects bare CR or LF.
fn head_end(buf: &[u8]) -> Result<Option<usize>, HeadError> {
    let mut i = 0;
    while i < buf.len() {
        match buf[i] {
            // Every valid LF is consumed together with its CR below.
            b'\n' => return Err(HeadError::Malformed("bare LF in request head")),
            b'\r' => match buf.get(i + 1) {
                None => return Ok(None),
                Some(b'\n') => {
                    if buf.get(i + 2) == Some(&b'\r') {
                        match buf.get(i + 3) {
                            Some(b'\n') => return Ok(Some(i + 4)),
                            Some(_) => return Err(HeadError::Malformed("bare CR in request head")),
                            None => return Ok(None),
                        }
                    }
                    i += 2;
                }
                Some(_) => return Err(HeadError::Malformed("bare CR in request head")),
            },
            _ => i += 1,
        }
    }
    Ok(None)
}

/// Parses a request head from the start of `buf`.
///
/// Returns the request and the head's length; bytes after it belong to
/// whatever follows the head (for an upgrade: the WebSocket stream).
// Long by design: one pass over the head, each rule (bare CR/LF, the size
// cap, repeated fields) next to the header it guards.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request<'_>, usize)>, HeadError> {
    // Only the first MAX_HEAD bytes can hold the head: bytes past the cap
    // must not change the answer (431), however the reads split them.
    let end = match head_end(&buf[..buf.len().min(MAX_HEAD)])? {
        Some(end) => end,
        None if buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
        None => return Ok(None),
    };
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HeadError::Malformed("incomplete request head"))
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::HeaderName) => {
            return Err(HeadError::Malformed("invalid header name"))
        }
        Err(httparse::Error::HeaderValue) => {
            return Err(HeadError::Malformed("invalid header value"))
        }
        Err(httparse::Error::Version) => return Err(HeadError::Malformed("invalid HTTP version")),
        Err(httparse::Error::Token) => return Err(HeadError::Malformed("invalid method")),
        Err(_) => return Err(HeadError::Malformed("invalid request line")),
    }
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err(HeadError::Malformed("invalid request line"));
    };
    let (authority, path, query) = split_target(target)?;
    let mut out = Request {
        method,
        path,
        query,
        authority,
        minor_version,
        host: None,
        host_repeated: false,
        upgrade_websocket: false,
        connection_upgrade: false,
        key: KeyField::Missing,
        ws_version: None,
        origin: None,
        forwarded_for: None,
        authorization: None,
        user_agent: None,
        content_length: None,
        content_type: None,
        chunked: false,
        cookies: [&[]; MAX_COOKIE_HEADERS],
        cookie_count: 0,
        extensions: [&[]; MAX_EXTENSION_HEADERS],
        extension_count: 0,
    };
    for field in req.headers.iter() {
        let name = field.name;
        let value = trim(field.value);
        if name.eq_ignore_ascii_case("host") {
            out.host_repeated |= out.host.is_some();
            out.host = Some(value);
        } else if name.eq_ignore_ascii_case("upgrade") {
            out.upgrade_websocket |= has_token(value, b"websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            out.connection_upgrade |= has_token(value, b"upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            out.key = match out.key {
                KeyField::Missing => KeyField::One(value),
                _ => KeyField::Repeated,
            };
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            out.ws_version = Some(if out.ws_version.is_some() { b"" } else { value });
        } else if name.eq_ignore_ascii_case("origin") {
            out.origin = Some(value);
        } else if name.eq_ignore_ascii_case("cookie") {
            if out.cookie_count < MAX_COOKIE_HEADERS {
                out.cookies[out.cookie_count] = value;
                out.cookie_count += 1;
            }
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            if out.extension_count < MAX_EXTENSION_HEADERS {
                out.extensions[out.extension_count] = value;
                out.extension_count += 1;
            }
        } else if name.eq_ignore_ascii_case("x-forwarded-for") && out.forwarded_for.is_none() {
            out.forwarded_for = Some(value);
        } else if name.eq_ignore_ascii_case("user-agent") {
            out.user_agent = Some(value);
        } else if name.eq_ignore_ascii_case("authorization") {
            out.authorization = Some(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            let parsed = std::str::from_utf8(value)
                .ok()
                .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok());
            out.content_length = match out.content_length {
                None => Some(parsed),
                Some(prev) if prev == parsed => Some(prev),
                Some(_) => Some(None),
            };
        } else if name.eq_ignore_ascii_case("content-type") {
            out.content_type = Some(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            out.chunked = true;
        }
    }
    Ok(Some((out, end)))
}

/// A request target's authority (absolute-form only), path and query.
type Target<'b> = (Option<&'b [u8]>, &'b str, Option<&'b str>);

/// Splits a request target into authority (absolute-form only), path and
/// query. RFC 9112 §3.2.2: "a server MUST accept the absolute-form in
/// requests", so `GET http://host/ws?q` routes as `GET /ws?q` would. Other
/// forms keep their text as the path (and route nowhere).
fn split_target(target: &str) -> Result<Target<'_>, HeadError> {
    let (before_query, query) = match target.split_once('?') {
        Some((t, q)) => (t, Some(q)),
        None => (target, None),
    };
    let Some((scheme, rest)) = before_query.split_once("://") else {
        return Ok((None, before_query, query));
    };
    let known = ["http", "https", "ws", "wss"];
    if before_query.starts_with('/') || !known.iter().any(|k| scheme.eq_ignore_ascii_case(k)) {
        return Ok((None, before_query, query));
    }
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        // `http://host` and `http://host?q`: the path is `/` (§3.2.2).
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(HeadError::Malformed("absolute-form target without a host"));
    }
    // RFC 9110 §4.2.4: a recipient should treat userinfo as an error.
    if authority.contains('@') {
        return Err(HeadError::Malformed("userinfo in the request target"));
    }
    Ok((Some(authority.as_bytes()), path, query))
}

/// Whether a comma-separated field value lists `token` (case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token))
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// Appends a complete response that ends the connection (plain text
/// unless `extra_headers` names another `Content-Type`).
pub fn write_response(out: &mut Vec<u8>, status: u16, extra_headers: &[(&str, &str)], body: &str) {
    use std::io::Write;
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (name, value) in extra_headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if status != 204 {
        let typed = (extra_headers.iter()).any(|(n, _)| n.eq_ignore_ascii_case("Content-Type"));
        if !typed {
            out.extend_from_slice(b"Content-Type: text/plain\r\n");
        }
        let _ = write!(out, "Content-Length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"Cache-Control: no-store\r\nConnection: close\r\n\r\n");
    if status != 204 {
        out.extend_from_slice(body.as_bytes());
    }
}

/// The reason phrase for the statuses the gateway sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /ws?x=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nOrigin: http://example.com\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n";

    #[test]
    fn request_targets_in_origin_and_absolute_form() {
        // (target, authority, path, query)
        let cases: [(&str, Option<&str>, &str, Option<&str>); 9] = [
            ("/ws", None, "/ws", None),
            ("/ws?token=a.b.c&x=1", None, "/ws", Some("token=a.b.c&x=1")),
            ("http://gw.example/ws", Some("gw.example"), "/ws", None),
            (
                "HTTPS://gw.example:8443/ws?t=1",
                Some("gw.example:8443"),
                "/ws",
                Some("t=1"),
            ),
            (
                "ws://127.0.0.1:8080/ws",
                Some("127.0.0.1:8080"),
                "/ws",
                None,
            ),
            ("http://gw.example", Some("gw.example"), "/", None),
            ("http://gw.example?q", Some("gw.example"), "/", Some("q")),
            ("/a://b", None, "/a://b", None),
            ("*", None, "*", None),
        ];
        for (target, authority, path, query) in cases {
            let head = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let (req, _) = parse_request(head.as_bytes()).unwrap().unwrap();
            assert_eq!(req.authority, authority.map(str::as_bytes), "{target}");
            assert_eq!((req.path, req.query), (path, query), "{target}");
        }
        for bad in ["http:///ws", "http://user@gw.example/ws"] {
            let head = format!("GET {bad} HTTP/1.1\r\nHost: h\r\n\r\n");
            assert!(
                matches!(parse_request(head.as_bytes()), Err(HeadError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_an_upgrade_request() {
        let (req, len) = parse_request(UPGRADE).unwrap().unwrap();
        assert_eq!(len, UPGRADE.len());
        assert_eq!((req.method, req.path, req.minor_version), ("GET", "/ws", 1));
        assert_eq!(req.host, Some(&b"example.com"[..]));
        assert!(req.upgrade_websocket && req.connection_upgrade);
        assert_eq!(req.key, KeyField::One(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(req.ws_version, Some(&b"13"[..]));
        assert_eq!(req.origin, Some(&b"http://example.com"[..]));
        assert_eq!(
            req.cookie_headers().collect::<Vec<_>>(),
            [&b"a=1"[..], b"b=2"]
        );
    }

    #[test]
    fn every_prefix_needs_more_and_trailing_bytes_are_not_consumed() {
        for end in 0..UPGRADE.len() {
            assert!(
                parse_request(&UPGRADE[..end]).unwrap().is_none(),
                "end={end}"
            );
        }
        let mut with_frame = UPGRADE.to_vec();
        with_frame.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
        assert_eq!(
            parse_request(&with_frame).unwrap().unwrap().1,
            UPGRADE.len()
        );
    }

    #[test]
    fn malformed_heads_are_400() {
        let cases: [&[u8]; 6] = [
            b"GET / HTTP/1.1\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/9.1\r\nHost: a\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for case in cases {
            assert!(
                matches!(parse_request(case), Err(HeadError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn oversized_heads_are_431() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 1, b'a');
        assert_eq!(parse_request(&big).unwrap_err(), HeadError::TooLarge);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_request(&many).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn past_the_cap_the_answer_is_431_however_the_bytes_arrive() {
        // Found by fuzz/http_head: 16 KiB without the head's end, then a bare
        // CR at byte 18321 (the crash input's shape; its other bytes do not
        // matter). Read at once it was a 400 for that CR, read in two pieces a
        // 431: the answer depended on how the bytes were split into reads.
        let mut head = b"GET/ws  HTTP/1.1\r\nHost:: l\t\t\t\t".to_vec();
        head.resize(18321, b'a');
        head.extend_from_slice(b"\rff");
        for cut in [MAX_HEAD, MAX_HEAD + 1, head.len()] {
            assert_eq!(
                parse_request(&head[..cut]).unwrap_err(),
                HeadError::TooLarge,
                "cut={cut}"
            );
        }
        // A bare CR or LF inside the cap is still a 400.
        head[MAX_HEAD - 2] = b'\n';
        assert!(matches!(
            parse_request(&head),
            Err(HeadError::Malformed("bare LF in request head"))
        ));
    }

    #[test]
    fn repeated_fields_are_flagged() {
        let head = b"GET /ws HTTP/1.1\r\nHost: a\r\nHost: b\r\nSec-WebSocket-Key: x\r\n\
sec-websocket-key: y\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let (req, _) = parse_request(head).unwrap().unwrap();
        assert!(req.host_repeated);
        assert_eq!(req.key, KeyField::Repeated);
        assert_eq!(req.ws_version, Some(&b""[..]));
    }

    #[test]
    fn responses_are_byte_exact() {
        let mut out = Vec::new();
        write_response(&mut out, 200, &[], "ok");
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nCache-Control: no-store\r\nConnection: close\r\n\r\nok"
        );
    }
}
