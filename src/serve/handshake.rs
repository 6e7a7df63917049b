//! Where a byte arrives first: a client connection up to the 101 (the open
//! WebSocket continues in `websocket.rs`).
//!
//! A connection is one task on its core. It waits for readiness (never with a
//! read in flight, so no buffer is pinned while idle and dropping a wait is
//! safe), reads with non-blocking `recv` into the core's shared buffer, hands
//! the bytes to the sans-IO core (`proto`), and answers. A gateway connection
//! whose session lives on another core is handed over to that core here. Every
//! refusal ends in a lingering close, so the answer is not lost to a reset.
//! After the 101 the socket leaves monoio for the core's epoll set.

use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use monoio::net::TcpStream;
use monoio::time::{timeout_at, Instant};

use super::websocket::{self, Upgraded};
#[cfg(feature = "auth")]
use crate::core::auth::request_token;
use crate::core::Core;
use crate::hub::Identity;
use crate::net::mailbox::{Adoption, CoreMsg};
use crate::net::socket::{self, would_block};
use crate::proto::cookie::{find_session, SessionId};
use crate::proto::extensions::negotiate;
use crate::proto::handshake::{
    write_101, write_101_head, write_session_204, Endpoint, Rejection, Route,
};
use crate::proto::http::{parse_request, write_response, HeadError, Request};
use crate::sys;
use crate::sys::log::{self, Level, Quoted};

/// Serves one accepted TCP connection to the end.
pub async fn serve(stream: TcpStream, peer: SocketAddr, core: Rc<Core>) {
    // TCP_NODELAY is inherited from the listener (app.rs): no syscall here.
    let hs = Handshake {
        fd: stream.as_raw_fd(),
        stream,
        peer,
        core,
    };
    let mut out = Vec::new();
    // Boxed: the handshake's state must not inflate the long-lived part of
    // this task (an idle connection is mostly this future's size).
    let Some(up) = Box::pin(hs.read_head(&mut out)).await else {
        Box::pin(hs.linger_close(out)).await;
        return;
    };
    let owner = up.session.owner(hs.core.shared.cores);
    if up.endpoint == Endpoint::Gateway && owner != hs.core.index {
        // The cookie names a session of another core: hand the socket over,
        // with the bytes already read. The owner decides the session (the
        // cookie's, or a new one if it is another user's) and completes the
        // 101 that `out` begins.
        let core = hs.core.clone();
        core.shared.mailboxes[owner].post(CoreMsg::Adopt(Adoption {
            fd: hs.into_fd(),
            head: out,
            session: up.session,
            identity: up.identity,
            token_deadline: up.token_deadline,
            cookie_present: up.cookie_present,
            client: up.client,
            early: up.early,
            deflate: up.deflate,
        }));
        return;
    }
    // The socket leaves monoio: from here on the core's epoll set watches it.
    let core = hs.core.clone();
    websocket::open(core, hs.into_fd(), up, out).await;
}

/// Runs a connection handed over by another core.
pub async fn adopt(adoption: Adoption, core: Rc<Core>) {
    let up = Upgraded {
        endpoint: Endpoint::Gateway,
        session: adoption.session,
        cookie_present: adoption.cookie_present,
        client: adoption.client,
        early: adoption.early,
        identity: adoption.identity,
        token_deadline: adoption.token_deadline,
        deflate: adoption.deflate,
    };
    websocket::open(core, adoption.fd, up, adoption.head).await;
}

/// A client connection before its 101.
struct Handshake {
    stream: TcpStream,
    fd: RawFd,
    peer: SocketAddr,
    core: Rc<Core>,
}

/// What to do after looking at the bytes of a request head so far.
enum Decision {
    NeedMore,
    /// A response is in the core's write buffer; close after it.
    Respond,
    /// The 101 is in the core's write buffer.
    Upgrade {
        up: Upgraded,
        head_len: usize,
    },
    /// The auth hook decides (nothing written yet).
    #[cfg(feature = "auth")]
    AskHook {
        ask: Box<hook::Ask>,
        head_len: usize,
    },
}

impl Handshake {
    /// Gives the socket up (monoio no longer owns it).
    fn into_fd(self) -> OwnedFd {
        // SAFETY: into_raw_fd gives up ownership of a valid, open descriptor
        // (the readiness waits have completed, so nothing else holds it).
        unsafe { OwnedFd::from_raw_fd(self.stream.into_raw_fd()) }
    }

    /// Reads the request head and answers it. Returns the upgraded connection,
    /// or `None` with any response left in `out` for [`Handshake::linger_close`].
    async fn read_head(&self, out: &mut Vec<u8>) -> Option<Upgraded> {
        let deadline = Instant::now() + self.core.shared.config.handshake_timeout;
        let mut head: Vec<u8> = Vec::new();
        // Clients send the head right behind the connect, so it has usually
        // arrived by the time the accept completes: read first, wait after.
        let mut wait = false;
        loop {
            if wait {
                match timeout_at(deadline, self.stream.readable(false)).await {
                    Err(_) => {
                        self.reject(Rejection::Timeout, None);
                        self.take_output(out);
                        return None;
                    }
                    Ok(Err(_)) => return None,
                    Ok(Ok(())) => {}
                }
            }
            wait = true;
            match self.read_once(&mut head)? {
                Decision::NeedMore => continue,
                Decision::Respond => {
                    self.take_output(out);
                    return None;
                }
                Decision::Upgrade { up, .. } => {
                    self.take_upgrade_output(&up, out);
                    return Some(up);
                }
                #[cfg(feature = "auth")]
                Decision::AskHook { ask, .. } => {
                    // Boxed: the hook's state must not grow this future,
                    // which every handshake allocates.
                    let up = Box::pin(self.ask_hook(*ask)).await;
                    match &up {
                        Some(up) => self.take_upgrade_output(up, out),
                        None => self.take_output(out),
                    }
                    return up;
                }
            }
        }
    }

    /// One `recv` and a decision on the head so far (`None`: the peer is
    /// gone). A head that arrives in one read is never copied.
    fn read_once(&self, head: &mut Vec<u8>) -> Option<Decision> {
        let rbuf = &mut *self.core.read_buf().borrow_mut();
        let n = match sys::recv(self.fd, rbuf) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) if would_block(&e) => return Some(Decision::NeedMore),
            Err(_) => return None,
        };
        let fresh = head.is_empty();
        if !fresh {
            head.extend_from_slice(&rbuf[..n]);
        }
        let data: &[u8] = if fresh { &rbuf[..n] } else { head };
        let mut decision = self.decide(data);
        match &mut decision {
            Decision::Upgrade { up, head_len } if *head_len < data.len() => {
                up.early = data[*head_len..].to_vec();
            }
            #[cfg(feature = "auth")]
            Decision::AskHook { ask, head_len } if *head_len < data.len() => {
                ask.up.early = data[*head_len..].to_vec();
            }
            Decision::NeedMore if fresh => head.extend_from_slice(&rbuf[..n]),
            _ => {}
        }
        Some(decision)
    }

    /// After the 101 was written: the echo path's goes out now; a gateway
    /// connection's is incomplete (its session's core adds the cookie), so
    /// it moves to `out` unsent.
    fn take_upgrade_output(&self, up: &Upgraded, out: &mut Vec<u8>) {
        if up.endpoint == Endpoint::Echo {
            return self.take_output(out);
        }
        let mut wbuf = self.core.write_buf().borrow_mut();
        out.extend_from_slice(&wbuf);
        self.core.shrink_write_buf(&mut wbuf);
    }

    /// Sends what is in the core's write buffer now; keeps the rest in `out`.
    fn take_output(&self, out: &mut Vec<u8>) {
        let mut wbuf = self.core.write_buf().borrow_mut();
        if let Err(e) = socket::send_behind(self.fd, out, &wbuf) {
            log::emit(
                Level::Debug,
                "send_failed",
                &[("peer", &self.peer), ("error", &e)],
            );
        }
        self.core.shrink_write_buf(&mut wbuf);
    }

    /// Decides on a request head and writes the response into the core's buffer.
    fn decide(&self, data: &[u8]) -> Decision {
        let shared = &self.core.shared;
        let (req, head_len) = match parse_request(data) {
            Ok(None) => return Decision::NeedMore,
            Ok(Some(parsed)) => parsed,
            Err(HeadError::TooLarge) => return self.reject(Rejection::HeadTooLarge, None),
            Err(HeadError::Malformed(why)) => return self.reject(Rejection::BadRequest(why), None),
        };
        let route = match shared.routes.route(&req) {
            Ok(route) => route,
            Err(rejection) => return self.reject(rejection, req.forwarded_for),
        };
        let mut wbuf = self.core.write_buf().borrow_mut();
        match route {
            Route::Health if shared.is_draining() => {
                write_response(&mut wbuf, 503, &[], "draining");
                Decision::Respond
            }
            Route::Health => {
                write_response(&mut wbuf, 200, &[], "ok");
                Decision::Respond
            }
            Route::Session => {
                let id = find_session(req.cookie_headers(), &shared.config.cookie_name)
                    .unwrap_or_else(SessionId::random);
                write_session_204(&mut wbuf, &shared.cookie, id);
                Decision::Respond
            }
            Route::Upgrade { endpoint, key } => {
                drop(wbuf);
                self.upgrade(&req, endpoint, key, head_len)
            }
        }
    }

    /// A valid upgrade request: 503 while draining, 401 without a token
    /// that passes (auth on), else — after the auth hook, if one is set —
    /// [`Handshake::admit`].
    fn upgrade(
        &self,
        req: &Request<'_>,
        endpoint: Endpoint,
        key: &[u8],
        head_len: usize,
    ) -> Decision {
        let shared = &self.core.shared;
        if shared.is_draining() {
            return self.reject(Rejection::Unavailable("draining"), req.forwarded_for);
        }
        let (identity, token_deadline) = if endpoint == Endpoint::Gateway {
            match self.authenticate(req) {
                Ok(who) => who,
                Err(rejection) => return self.reject(rejection, req.forwarded_for),
            }
        } else {
            (None, 0)
        };
        let known = find_session(req.cookie_headers(), &shared.config.cookie_name);
        let session = match known {
            Some(id) => id,
            // A new session is minted on this core, so it needs no hand-over.
            None => SessionId::random_owned_by(self.core.index, shared.cores),
        };
        // RFC 7692: the first permessage-deflate offer that can be honoured.
        let deflate = shared
            .config
            .compression_on()
            .then(|| negotiate(req.extension_headers()))
            .flatten();
        let up = Upgraded {
            endpoint,
            session,
            cookie_present: known.is_some(),
            client: ClientAddr(self.peer, req.forwarded_for).to_string(),
            early: Vec::new(),
            identity,
            token_deadline,
            deflate,
        };
        #[cfg(feature = "auth")]
        if endpoint == Endpoint::Gateway
            && self.core.auth.as_ref().is_some_and(|a| a.hook.is_some())
        {
            let ask = hook::Ask::new(req, key, up);
            return Decision::AskHook {
                ask: Box::new(ask),
                head_len,
            };
        }
        self.admit(up, key, head_len)
    }

    /// Lets an authenticated upgrade in: 503 at `--max-connections` (or if
    /// draining began meanwhile), else the 101 — whole on the echo path, up
    /// to its cookie on the gateway path (the session's core completes it).
    fn admit(&self, up: Upgraded, key: &[u8], head_len: usize) -> Decision {
        let shared = &self.core.shared;
        if shared.is_draining() {
            return self.refuse(Rejection::Unavailable("draining"), &up.client);
        }
        if !shared.try_acquire_connection() {
            let full = Rejection::Unavailable("connection limit reached");
            return self.refuse(full, &up.client);
        }
        if up.cookie_present && up.endpoint == Endpoint::Echo {
            // The echo path keeps no sessions: its cookie never finds one.
            self.core.stats.sticky_miss();
        }
        let mut wbuf = self.core.write_buf().borrow_mut();
        match up.endpoint {
            Endpoint::Gateway => write_101_head(&mut wbuf, key),
            Endpoint::Echo => write_101(&mut wbuf, key, up.deflate, &shared.cookie, up.session),
        }
        drop(wbuf);
        self.core.stats.upgraded();
        log::emit(
            Level::Debug,
            "upgrade",
            &[
                ("core", &self.core.index),
                // Never the session id: it is the resume credential.
                ("cookie", &if up.cookie_present { "kept" } else { "minted" }),
                ("client", &up.client),
            ],
        );
        Decision::Upgrade { up, head_len }
    }

    /// With authentication on, who the request is: its token must pass
    /// (401 otherwise). Returns the identity and when the token stops being
    /// accepted (seconds since the epoch); `(None, 0)` with auth off.
    fn authenticate(&self, req: &Request<'_>) -> Result<(Option<Identity>, u64), Rejection> {
        let Some(auth) = &self.core.auth else {
            return Ok((None, 0));
        };
        if !auth.checks_tokens() {
            return Ok((None, 0));
        }
        #[cfg(feature = "auth")]
        {
            let token = request_token(req.authorization, req.query);
            let token = token.as_deref().unwrap_or(b"");
            match auth.verify(token) {
                Ok(passed) => Ok((Some(passed.identity), passed.deadline)),
                Err(e) => Err(Rejection::Unauthorized(e.reason())),
            }
        }
        #[cfg(not(feature = "auth"))]
        {
            let _ = req;
            Err(Rejection::Unavailable("authentication not built"))
        }
    }

    /// Writes a refusal into the core's buffer, counts and logs it.
    fn reject(&self, rejection: Rejection, forwarded_for: Option<&[u8]>) -> Decision {
        self.refuse(rejection, &ClientAddr(self.peer, forwarded_for))
    }

    /// [`Handshake::reject`] with the client address already formatted.
    fn refuse(&self, rejection: Rejection, client: &dyn std::fmt::Display) -> Decision {
        rejection.write(&mut self.core.write_buf().borrow_mut());
        self.core.stats.rejected(rejection.status());
        let level = if matches!(rejection, Rejection::NotFound | Rejection::Timeout) {
            Level::Debug
        } else {
            Level::Info
        };
        log::emit(
            level,
            "rejected",
            &[
                ("status", &rejection.status()),
                ("reason", &rejection.reason()),
                ("client", client),
            ],
        );
        Decision::Respond
    }

    /// The lingering close (see [`socket::linger_close`]), then a shutdown:
    /// on io_uring a dropped socket is closed only when the ring is next
    /// entered, and shutting it down first ends the TCP connection now.
    async fn linger_close(&self, out: Vec<u8>) {
        socket::linger_close(self.fd, &self.stream, out, self.core.read_buf()).await;
        sys::shutdown(self.fd, Shutdown::Both);
    }
}

#[cfg(feature = "auth")]
mod hook {
    //! An upgrade the auth hook decides: what it needs from the request,
    //! owned (the request head's buffer is reused while the hook answers).

    use super::Upgraded;
    use crate::auth::HookRequest;
    use crate::proto::http::Request;

    /// An upgrade waiting for the hook.
    pub struct Ask {
        pub up: Upgraded,
        /// `Sec-WebSocket-Key`, for the 101.
        pub key: Vec<u8>,
        /// The request target (path and query).
        pub target: Vec<u8>,
        /// The `Cookie` fields, joined with `; `.
        pub cookie: Option<Vec<u8>>,
        pub authorization: Option<Vec<u8>>,
        pub origin: Option<Vec<u8>>,
        pub forwarded_for: Option<Vec<u8>>,
        pub user_agent: Option<Vec<u8>>,
        /// The session id as text.
        pub session: String,
    }

    impl Ask {
        pub fn new(req: &Request<'_>, key: &[u8], up: Upgraded) -> Ask {
            let mut target = req.path.as_bytes().to_vec();
            if let Some(q) = req.query {
                target.push(b'?');
                target.extend_from_slice(q.as_bytes());
            }
            let mut cookie: Option<Vec<u8>> = None;
            for field in req.cookie_headers() {
                let c = cookie.get_or_insert_with(Vec::new);
                if !c.is_empty() {
                    c.extend_from_slice(b"; ");
                }
                c.extend_from_slice(field);
            }
            Ask {
                key: key.to_vec(),
                target,
                cookie,
                authorization: req.authorization.map(<[u8]>::to_vec),
                origin: req.origin.map(<[u8]>::to_vec),
                forwarded_for: req.forwarded_for.map(<[u8]>::to_vec),
                user_agent: req.user_agent.map(<[u8]>::to_vec),
                session: up.session.to_string(),
                up,
            }
        }

        /// The hook's request, borrowed from this.
        pub fn request(&self) -> HookRequest<'_> {
            HookRequest {
                session: &self.session,
                resumed: self.up.cookie_present,
                path: &self.target,
                cookie: self.cookie.as_deref(),
                authorization: self.authorization.as_deref(),
                origin: self.origin.as_deref(),
                forwarded_for: self.forwarded_for.as_deref(),
                user_agent: self.user_agent.as_deref(),
                user: self.up.identity.as_ref().map(|w| &*w.user),
            }
        }
    }
}

#[cfg(feature = "auth")]
impl Handshake {
    /// Asks the auth hook about an upgrade (the socket waits, the core does
    /// not) and admits it, or writes the refusal: the hook's 401/403 passed
    /// on, 503 for anything else (fail closed).
    async fn ask_hook(&self, mut ask: hook::Ask) -> Option<Upgraded> {
        use crate::auth::{Grants, HookVerdict};
        let client = self.core.auth.as_ref()?.hook.as_ref()?;
        let verdict = client.call(&ask.request()).await;
        let leeway = self.core.auth.as_ref().map_or(0, |a| a.leeway_secs);
        let refusal = match verdict {
            HookVerdict::Grant {
                user,
                grants,
                expires_in,
            } => {
                let token = ask.up.identity.take();
                if token.as_ref().is_some_and(|t| *t.user != *user) {
                    // The hook names another user than the token's `sub`.
                    Rejection::Unavailable("auth hook: another user than the token's")
                } else {
                    let grants = match (token.and_then(|t| t.grants), grants) {
                        (Some(a), Some(b)) => merge(&a, &b).map(Box::new),
                        (a, b) => a.or(b),
                    };
                    ask.up.identity = Some(Identity {
                        user: user.into(),
                        grants,
                    });
                    if let Some(secs) = expires_in {
                        let until = crate::core::auth::unix_now()
                            .saturating_add(secs)
                            .saturating_add(leeway);
                        let d = ask.up.token_deadline;
                        ask.up.token_deadline = if d == 0 { until } else { d.min(until) };
                    }
                    let key = std::mem::take(&mut ask.key);
                    return match self.admit(ask.up, &key, 0) {
                        Decision::Upgrade { up, .. } => Some(up),
                        _ => None,
                    };
                }
            }
            HookVerdict::Refuse(403) => Rejection::Forbidden,
            HookVerdict::Refuse(_) => Rejection::Unauthorized("hook"),
            HookVerdict::Fail(why) => Rejection::Unavailable(hook_failure(why)),
        };
        self.refuse(refusal, &ask.up.client);
        return None;

        /// A token's grants plus the hook's.
        fn merge(a: &Grants, b: &Grants) -> Option<Grants> {
            let sub: Vec<&str> = a.sub.iter().chain(b.sub.iter()).collect();
            let publish: Vec<&str> = a.publish.iter().chain(b.publish.iter()).collect();
            Grants::compile(&sub, &publish).ok()
        }
    }
}

/// The 503 reason for a hook that failed (a fixed phrase per cause).
#[cfg(feature = "auth")]
fn hook_failure(why: &str) -> &'static str {
    match why {
        "timeout" => "auth hook unavailable: timeout",
        "connect" => "auth hook unavailable: connect",
        "closed" => "auth hook unavailable: closed",
        "status" => "auth hook unavailable: status",
        _ => "auth hook unavailable: malformed answer",
    }
}

/// The client address for logs: `X-Forwarded-For` when present, quoted.
struct ClientAddr<'a>(SocketAddr, Option<&'a [u8]>);

impl std::fmt::Display for ClientAddr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Some(xff) => write!(f, "{}", Quoted(xff)),
            None => write!(f, "{}", self.0),
        }
    }
}
