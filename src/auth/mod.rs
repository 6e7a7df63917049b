//! Who a client is, and what it may do (DESIGN.md §11): the sans-IO core.
//! Topic permissions are always built (the hub checks them); tokens, keys
//! and the hook's JSON need feature `auth` (serde_json, jsonwebtoken).
//!
//! - [`Verifier`] checks a JWT (HS256 with a shared secret, RS256 or ES256
//!   with a public key, or a JWKS document whose key the token's `kid`
//!   picks) and returns its [`Claims`], or an [`AuthError`] named after the
//!   rule the token broke. Time is an input (`now_secs`); the only I/O is
//!   reading key files, at construction and in
//!   [`Verifier::reload_if_changed`].
//! - [`Patterns`] are compiled topic patterns (`topic`, `prefix*`, with
//!   `{user}` for the token's `sub`); [`Policy`] holds the flags' patterns,
//!   compiled once and shared by every connection (`Arc<Policy>`), and a
//!   connection keeps only its token's own [`Grants`], if any
//!   (`Option<Box<Grants>>`: one pointer, null for most tokens).
//!
//! The algorithm always follows the configured key, never the token: the
//! token's `alg` is only compared with it. An RSA or EC key can therefore
//! never be used as an HMAC secret.
//!
//! No token byte ever goes into an error, a `Debug` output or a log line:
//! [`AuthError`] carries no data, and [`AuthError::reason`] is a fixed word.

#[cfg(feature = "auth")]
mod hook;
#[cfg(feature = "auth")]
mod jwks;
#[cfg(feature = "auth")]
mod jwt;
#[cfg(feature = "auth")]
mod key;
mod patterns;

use std::fmt;

#[cfg(feature = "auth")]
pub use hook::{
    parse_response, parse_response_at_eof, verdict, write_request, HookError, HookRequest,
    HookResponse, HookTarget, HookVerdict,
};
#[cfg(feature = "auth")]
pub use jwks::Reload;
#[cfg(feature = "auth")]
pub use jwt::{Verifier, VerifyOptions};
#[cfg(feature = "auth")]
pub use key::Alg;
pub use patterns::{Action, Grants, PatternError, Patterns, Policy};

/// Longest token accepted, in bytes (the whole compact serialization).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Longest user id (`sub`), in bytes.
pub const MAX_USER_LEN: usize = 128;

/// Shortest HS256 secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// What a valid token says.
#[derive(Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user id: the token's `sub`, 1–128 bytes of `[A-Za-z0-9._:@-]`.
    pub user: Box<str>,
    /// Expiry, seconds since the epoch (the token's `exp`, required).
    pub exp: u64,
    /// The token's `"wsgate": {"sub": [...], "pub": [...]}` claim, compiled;
    /// `None` when the token has none (or both lists are empty).
    pub grants: Option<Box<Grants>>,
}

impl fmt::Debug for Claims {
    // The user id is not secret (it is in presence lines); the token is not
    // here at all.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("user", &self.user)
            .field("exp", &self.exp)
            .field("grants", &self.grants)
            .finish()
    }
}

/// Why a token was refused: one variant per rule, checked in this order
/// (cheapest first). Carries no data, so no token byte can leak through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthError {
    /// No token at all (empty).
    Missing,
    /// Over [`MAX_TOKEN_LEN`] bytes.
    TooLarge,
    /// Not three base64url parts, a header or payload that is not a JSON
    /// object of the right shape, a `crit` header, a claim of the wrong type.
    Malformed,
    /// `alg` is not the configured key's (`none`, `HS256` against an RSA or
    /// EC key, `RS256` against an EC key, ...).
    Alg,
    /// JWKS: no key with the token's `kid` (or no `kid` and several keys).
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// No `exp` claim (it is required).
    NoExpiry,
    /// `exp` (+ leeway) has passed.
    Expired,
    /// `nbf` (- leeway) is still in the future.
    NotYetValid,
    /// `iss` missing or not the configured issuer.
    Issuer,
    /// `aud` missing or not (containing) the configured audience.
    Audience,
    /// `sub` missing, empty, too long or with a byte outside `[A-Za-z0-9._:@-]`.
    Subject,
    /// The `wsgate` claim is not `{"sub": [PATTERN...], "pub": [PATTERN...]}`
    /// with valid patterns.
    Permissions,
}

impl AuthError {
    /// A fixed word for log lines (`reason=expired`).
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::TooLarge => "too_large",
            AuthError::Malformed => "malformed",
            AuthError::Alg => "alg",
            AuthError::UnknownKey => "unknown_key",
            AuthError::BadSignature => "bad_signature",
            AuthError::NoExpiry => "no_exp",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::Issuer => "issuer",
            AuthError::Audience => "audience",
            AuthError::Subject => "subject",
            AuthError::Permissions => "permissions",
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for AuthError {}

/// A key file or key document that cannot be used; the message names the
/// file and what is wrong, for a start-up error (exit 2) or a reload log line.
/// Never contains key or secret bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyError(pub String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

/// Whether `user` is a valid user id: 1–128 bytes of `[A-Za-z0-9._:@-]`.
pub fn is_valid_user(user: &[u8]) -> bool {
    !user.is_empty()
        && user.len() <= MAX_USER_LEN
        && user
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "auth")]
    #[test]
    fn shareable_across_cores() {
        fn send_sync_clone<T: Send + Sync + Clone>() {}
        send_sync_clone::<Verifier>();
        send_sync_clone::<Policy>();
        send_sync_clone::<Claims>();
        send_sync_clone::<Grants>();
    }

    #[test]
    fn user_ids() {
        assert!(is_valid_user(b"alice@example.com"));
        assert!(is_valid_user(&[b'a'; MAX_USER_LEN]));
        assert!(!is_valid_user(&[b'a'; MAX_USER_LEN + 1]));
        assert!(!is_valid_user(b""));
        assert!(!is_valid_user(b"a b"));
        assert_eq!(std::mem::size_of::<Claims>(), 32);
    }
}
