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

use serde::{Deserialize, Serialize};

use super::{is_valid_user, Grants};

use crate::proto::http_client::write_post;
pub use crate::proto::http_client::{
    parse_response, parse_response_at_eof, HookError, HookResponse, HookTarget,
};

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
    write_post(target, "application/json", &json, out);
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
