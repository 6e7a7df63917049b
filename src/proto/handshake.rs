//! The opening handshake (RFC 6455 §4.2): routing a request head to what the
//! gateway will do with it, every reason to refuse, and the 101 itself.

use base64::Engine;

use super::cookie::{CookieSpec, SessionId};
use super::extensions::Deflate;
use super::http::{write_response, KeyField, Request};

/// §1.3: the GUID appended to the client's key before hashing.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(WS_GUID);
    let mut out = [0u8; 28];
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(sha.digest().bytes(), &mut out)
        .expect("20 bytes encode to 28");
    debug_assert_eq!(n, 28);
    out
}

/// The WebSocket endpoints a path can lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `--ws-path`: the pub/sub gateway.
    Gateway,
    /// `--echo-path`: echoes every message (conformance and benchmarks).
    Echo,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'b> {
    /// `GET --health-path`: 200 while serving.
    Health,
    /// `GET /ws-session`: 204 with the cookie, so the first upgrade is pinned too.
    Session,
    /// A valid upgrade to `endpoint` with this client key.
    Upgrade {
        /// Which endpoint.
        endpoint: Endpoint,
        /// The client's `Sec-WebSocket-Key`.
        key: &'b [u8],
    },
}

/// A refusal; each knows its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// 400 with the rule broken.
    BadRequest(&'static str),
    /// 403: the `Origin` is not allowed.
    OriginNotAllowed,
    /// 404: no such path.
    NotFound,
    /// 405: only GET (and HEAD on health) is served.
    MethodNotAllowed,
    /// 426: not a version-13 WebSocket upgrade.
    UpgradeRequired(&'static str),
    /// 431: the head is too large.
    HeadTooLarge,
    /// 408: the head did not arrive within `--handshake-timeout`.
    Timeout,
    /// 503: draining, or at `--max-connections`, or the auth hook failed
    /// (fail closed).
    Unavailable(&'static str),
    /// 401 with `WWW-Authenticate: Bearer error="invalid_token"`: no token or
    /// a token that does not pass; the word says which rule (for the log
    /// line and the body; never token bytes).
    Unauthorized(&'static str),
    /// 403 from the auth hook.
    Forbidden,
}

impl Rejection {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            Rejection::BadRequest(_) => 400,
            Rejection::OriginNotAllowed => 403,
            Rejection::NotFound => 404,
            Rejection::MethodNotAllowed => 405,
            Rejection::Timeout => 408,
            Rejection::UpgradeRequired(_) => 426,
            Rejection::HeadTooLarge => 431,
            Rejection::Unavailable(_) => 503,
            Rejection::Unauthorized(_) => 401,
            Rejection::Forbidden => 403,
        }
    }

    /// A short reason, used as the body and in logs.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::BadRequest(why)
            | Rejection::UpgradeRequired(why)
            | Rejection::Unavailable(why)
            | Rejection::Unauthorized(why) => why,
            Rejection::Forbidden => "forbidden",
            Rejection::OriginNotAllowed => "origin not allowed",
            Rejection::NotFound => "not found",
            Rejection::MethodNotAllowed => "method not allowed",
            Rejection::Timeout => "handshake timeout",
            Rejection::HeadTooLarge => "request head too large",
        }
    }

    /// Appends the complete response.
    pub fn write(self, out: &mut Vec<u8>) {
        let extra: &[(&str, &str)] = match self {
            Rejection::UpgradeRequired(_) => {
                &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
            }
            Rejection::MethodNotAllowed => &[("Allow", "GET")],
            Rejection::Unauthorized(_) => &[("WWW-Authenticate", "Bearer error=\"invalid_token\"")],
            _ => &[],
        };
        let mut body = String::with_capacity(self.reason().len() + 16);
        if let Rejection::Unauthorized(_) = self {
            body.push_str("invalid token: ");
        }
        body.push_str(self.reason());
        body.push('\n');
        write_response(out, self.status(), extra, &body);
    }
}

/// Which browser origins may open a WebSocket (DESIGN §2 `--allowed-origin`).
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    any: bool,
    allowed: Vec<Vec<u8>>,
}

impl OriginPolicy {
    /// Builds the policy from `--allowed-origin` values; `*` allows any.
    /// With none, only same-origin requests (and requests without `Origin`) pass.
    pub fn new(allowed: &[String]) -> OriginPolicy {
        OriginPolicy {
            any: allowed.iter().any(|o| o == "*"),
            allowed: allowed
                .iter()
                .filter(|o| *o != "*")
                .map(|o| normalize_origin(o.as_bytes()))
                .collect(),
        }
    }

    /// Whether a request with this `Origin` and `Host` may upgrade.
    pub fn allows(&self, origin: Option<&[u8]>, host: &[u8]) -> bool {
        let Some(origin) = origin else { return true }; // non-browser clients send none
        if self.any {
            return true;
        }
        let origin = normalize_origin(origin);
        if self.allowed.contains(&origin) {
            return true;
        }
        same_origin(&origin, host)
    }
}

/// Lowercases an origin and drops the scheme's default port and a trailing slash.
fn normalize_origin(origin: &[u8]) -> Vec<u8> {
    let mut o = origin.to_ascii_lowercase();
    if o.last() == Some(&b'/') {
        o.pop();
    }
    for (scheme, port) in [
        (&b"http://"[..], &b":80"[..]),
        (b"https://", b":443"),
        (b"ws://", b":80"),
        (b"wss://", b":443"),
    ] {
        if o.starts_with(scheme) && o.ends_with(port) {
            o.truncate(o.len() - port.len());
        }
    }
    o
}

/// A normalized origin's host[:port] equals the `Host` field (default port elided).
fn same_origin(origin: &[u8], host: &[u8]) -> bool {
    let Some(sep) = origin.windows(3).position(|w| w == b"://") else {
        return false;
    };
    let (scheme, authority) = (&origin[..sep], &origin[sep + 3..]);
    let host = host.to_ascii_lowercase();
    let default_port: &[u8] = if scheme == b"https" || scheme == b"wss" {
        b":443"
    } else {
        b":80"
    };
    let host = host.strip_suffix(default_port).unwrap_or(&host);
    authority == host
}

/// The paths the traffic port serves.
#[derive(Debug, Clone)]
pub struct Routes {
    /// `--ws-path`.
    pub ws_path: String,
    /// `--echo-path`, if enabled.
    pub echo_path: Option<String>,
    /// `--health-path`.
    pub health_path: String,
    /// The cookie-only route.
    pub session_path: String,
    /// `--allowed-origin`.
    pub origins: OriginPolicy,
}

impl Routes {
    /// Decides what a request gets. Drain and connection limits are the
    /// caller's (they are state, not request properties).
    // Long by design: RFC 6455 §4.2.1 checks in the order the RFC lists them,
    // each next to the refusal it earns; split up, the order would be hidden.
    pub fn route<'b>(&self, req: &Request<'b>) -> Result<Route<'b>, Rejection> {
        if req.path == self.health_path {
            return match req.method {
                "GET" | "HEAD" => Ok(Route::Health),
                _ => Err(Rejection::MethodNotAllowed),
            };
        }
        if req.path == self.session_path {
            return match req.method {
                "GET" => Ok(Route::Session),
                _ => Err(Rejection::MethodNotAllowed),
            };
        }
        let endpoint = if req.path == self.ws_path {
            Endpoint::Gateway
        } else if self.echo_path.as_deref() == Some(req.path) {
            Endpoint::Echo
        } else {
            return Err(Rejection::NotFound);
        };
        // §4.2.1: "An HTTP/1.1 or higher GET request".
        if req.method != "GET" {
            return Err(Rejection::MethodNotAllowed);
        }
        if req.minor_version < 1 {
            return Err(Rejection::BadRequest("upgrade requires HTTP/1.1"));
        }
        // §4.2.1 item 2: a |Host| header field.
        let host = match (req.host, req.host_repeated) {
            (Some(host), false) if !host.is_empty() => host,
            (_, true) => return Err(Rejection::BadRequest("repeated Host")),
            _ => return Err(Rejection::BadRequest("missing Host")),
        };
        // §4.2.1 items 3 and 4: Upgrade: websocket, Connection: Upgrade.
        if !req.upgrade_websocket {
            return Err(Rejection::UpgradeRequired("WebSocket upgrade required"));
        }
        if !req.connection_upgrade {
            return Err(Rejection::BadRequest("Connection must include Upgrade"));
        }
        // §4.2.2: a version we do not speak gets 426 with the one we do.
        match req.ws_version {
            Some(b"13") => {}
            Some(b"") => return Err(Rejection::BadRequest("repeated Sec-WebSocket-Version")),
            _ => {
                return Err(Rejection::UpgradeRequired(
                    "Sec-WebSocket-Version 13 required",
                ))
            }
        }
        // §4.2.1 item 5: a key that decodes to 16 bytes.
        let key = match req.key {
            KeyField::One(key) if is_valid_key(key) => key,
            KeyField::One(_) => return Err(Rejection::BadRequest("malformed Sec-WebSocket-Key")),
            KeyField::Missing => return Err(Rejection::BadRequest("missing Sec-WebSocket-Key")),
            KeyField::Repeated => return Err(Rejection::BadRequest("repeated Sec-WebSocket-Key")),
        };
        // §10.2: servers may refuse origins they do not trust. An
        // absolute-form target names the host itself (RFC 9112 §3.3).
        let host = req.authority.unwrap_or(host);
        if !self.origins.allows(req.origin, host) {
            return Err(Rejection::OriginNotAllowed);
        }
        Ok(Route::Upgrade { endpoint, key })
    }
}

/// A key is base64 of exactly 16 bytes: 24 characters ending in `==`.
fn is_valid_key(key: &[u8]) -> bool {
    let mut decoded = [0u8; 18];
    key.len() == 24
        && matches!(
            base64::engine::general_purpose::STANDARD.decode_slice(key, &mut decoded),
            Ok(16)
        )
}

/// Appends the 101 response: one buffer, fixed order, the extension
/// agreed (if any) and the cookie included.
pub fn write_101(
    out: &mut Vec<u8>,
    key: &[u8],
    deflate: Option<Deflate>,
    cookie: &CookieSpec,
    id: SessionId,
) {
    write_101_head(out, key);
    finish_101(out, deflate, cookie, id);
}

/// The length of what [`write_101_head`] appends.
pub const HEAD_101_LEN: usize = HEAD_101.len() + 28 + 2;

const HEAD_101: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ";

/// Appends the 101 up to its cookie ([`HEAD_101_LEN`] bytes). A gateway
/// connection's session (and so its cookie) is decided by the core that
/// owns it, possibly after asking the shared engine whose session the
/// cookie names; [`finish_101`] completes the response then.
pub fn write_101_head(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(HEAD_101);
    out.extend_from_slice(&accept_key(key));
    out.extend_from_slice(b"\r\n");
}

/// Appends the rest of the 101: `Sec-WebSocket-Extensions` when
/// permessage-deflate was agreed, the cookie line and the empty line.
pub fn finish_101(out: &mut Vec<u8>, deflate: Option<Deflate>, cookie: &CookieSpec, id: SessionId) {
    if let Some(d) = deflate {
        d.write_response(out);
    }
    cookie.write(out, id);
    out.extend_from_slice(b"\r\n");
}

/// Appends the 204 of the cookie-only route.
pub fn write_session_204(out: &mut Vec<u8>, cookie: &CookieSpec, id: SessionId) {
    out.extend_from_slice(b"HTTP/1.1 204 No Content\r\n");
    cookie.write(out, id);
    out.extend_from_slice(b"Cache-Control: no-store\r\nConnection: close\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::parse_request;

    fn routes(origins: &[&str]) -> Routes {
        Routes {
            ws_path: "/ws".into(),
            echo_path: Some("/echo".into()),
            health_path: "/ws-health".into(),
            session_path: "/ws-session".into(),
            origins: OriginPolicy::new(&origins.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        }
    }

    fn head(lines: &[&str]) -> Vec<u8> {
        let mut h = lines.join("\r\n");
        h.push_str("\r\n\r\n");
        h.into_bytes()
    }

    const BASE: [&str; 6] = [
        "GET /ws HTTP/1.1",
        "Host: example.com",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ];

    fn route_of(lines: &[&str], origins: &[&str]) -> Result<(), u16> {
        let bytes = head(lines);
        let (req, _) = parse_request(&bytes).unwrap().unwrap();
        routes(origins)
            .route(&req)
            .map(|_| ())
            .map_err(|r| r.status())
    }

    fn with(replace: usize, line: &str) -> Vec<&str> {
        let mut v = BASE.to_vec();
        v[replace] = line;
        v
    }

    #[test]
    fn rfc_accept_key() {
        // RFC 6455 §1.3.
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn valid_upgrade_routes_to_its_endpoint() {
        let bytes = head(&BASE);
        let (req, _) = parse_request(&bytes).unwrap().unwrap();
        assert_eq!(
            routes(&[]).route(&req),
            Ok(Route::Upgrade {
                endpoint: Endpoint::Gateway,
                key: b"dGhlIHNhbXBsZSBub25jZQ=="
            })
        );
    }

    #[test]
    fn each_refusal_has_its_status() {
        let cases: Vec<(Vec<&str>, u16)> = vec![
            (with(0, "GET /nope HTTP/1.1"), 404),
            (with(0, "POST /ws HTTP/1.1"), 405),
            (with(0, "GET /ws HTTP/1.0"), 400),
            (with(1, "X-No-Host: 1"), 400),
            (with(2, "Upgrade: h2c"), 426),
            (with(3, "Connection: keep-alive"), 400),
            (with(4, "Sec-WebSocket-Key: short"), 400),
            (with(4, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ"), 400),
            (with(4, "X-No-Key: 1"), 400),
            (with(5, "Sec-WebSocket-Version: 8"), 426),
            (with(5, "X-No-Version: 1"), 426),
            (
                [&BASE[..], &["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]].concat(),
                400,
            ),
            ([&BASE[..], &["Origin: https://evil.example"]].concat(), 403),
            ([&BASE[..], &["Origin: null"]].concat(), 403),
        ];
        for (lines, status) in cases {
            assert_eq!(route_of(&lines, &[]), Err(status), "{lines:?}");
        }
    }

    #[test]
    fn absolute_form_targets_route_by_their_path_and_name_the_host() {
        // RFC 9112 §3.2.2: a server MUST accept the absolute-form.
        let absolute = with(0, "GET http://example.com/ws?token=t HTTP/1.1");
        assert_eq!(route_of(&absolute, &[]), Ok(()));
        let echo = with(0, "GET https://example.com:443/echo HTTP/1.1");
        assert_eq!(route_of(&echo, &[]), Ok(()));
        assert_eq!(
            route_of(&with(0, "GET http://example.com/nope HTTP/1.1"), &[]),
            Err(404)
        );
        // The target's authority, not Host, is what the origin must match.
        let mut lines = with(0, "GET http://gw.example/ws HTTP/1.1");
        lines.push("Origin: http://gw.example");
        assert_eq!(route_of(&lines, &[]), Ok(()), "Host says example.com");
        let mut lines = with(0, "GET http://other.example/ws HTTP/1.1");
        lines.push("Origin: http://example.com");
        assert_eq!(route_of(&lines, &[]), Err(403));
        // Host is still required (RFC 9112 §3.2).
        let mut no_host = absolute.clone();
        no_host.remove(1);
        assert_eq!(route_of(&no_host, &[]), Err(400));
    }

    #[test]
    fn origin_rules() {
        let ok = |origin: &str, host: &str, allowed: &[&str]| {
            let o = format!("Origin: {origin}");
            let h = format!("Host: {host}");
            let mut lines = with(1, &h);
            lines.push(&o);
            route_of(&lines, allowed).is_ok()
        };
        assert!(ok("https://example.com", "example.com", &[]));
        assert!(ok("https://EXAMPLE.com", "example.com:443", &[]));
        assert!(ok("http://localhost:8080", "localhost:8080", &[]));
        assert!(!ok("http://localhost:8081", "localhost:8080", &[]));
        assert!(!ok("https://app.example.com", "gw.example.com", &[]));
        assert!(ok(
            "https://app.example.com",
            "gw.example.com",
            &["https://app.example.com"]
        ));
        assert!(ok("https://other.example", "gw.example.com", &["*"]));
        assert!(
            route_of(&BASE, &[]).is_ok(),
            "no Origin: non-browser client passes"
        );
    }

    #[test]
    fn health_and_session_routes() {
        assert_eq!(
            route_of(&["GET /ws-health HTTP/1.1", "Host: a"], &[]),
            Ok(())
        );
        assert_eq!(route_of(&["GET /ws-health HTTP/1.0"], &[]), Ok(()));
        assert_eq!(
            route_of(&["DELETE /ws-health HTTP/1.1", "Host: a"], &[]),
            Err(405)
        );
        assert_eq!(
            route_of(&["GET /ws-session HTTP/1.1", "Host: a"], &[]),
            Ok(())
        );
    }

    #[test]
    fn response_101_is_byte_exact() {
        let id = SessionId::parse(b"0f8fad5b-d9cb-469f-a165-70867728950e").unwrap();
        let mut out = Vec::new();
        write_101(
            &mut out,
            b"dGhlIHNhbXBsZSBub25jZQ==",
            None,
            &CookieSpec::new("WS_SESSION_ID", 86400, true),
            id,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
Set-Cookie: WS_SESSION_ID=0f8fad5b-d9cb-469f-a165-70867728950e; Path=/; Max-Age=86400; SameSite=None; Secure; HttpOnly\r\n\r\n"
        );
        // With permessage-deflate agreed, its line goes after the accept key.
        let mut out = Vec::new();
        let deflate = Some(Deflate {
            server_max_window_bits: Some(10),
        });
        write_101(
            &mut out,
            b"dGhlIHNhbXBsZSBub25jZQ==",
            deflate,
            &CookieSpec::new("WS_SESSION_ID", 86400, false),
            id,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10\r\n\
Set-Cookie: WS_SESSION_ID=0f8fad5b-d9cb-469f-a165-70867728950e; Path=/; Max-Age=86400; HttpOnly\r\n\r\n"
        );
    }
}
