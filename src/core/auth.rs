//! Who a client is (DESIGN §11), as the serving layer asks it: the
//! process-wide [`Gate`] built from the flags at start (keys loaded, patterns
//! compiled: a bad one stops the start with exit code 2), and each core's
//! [`CoreAuth`] (its own copy of the verifier, so a JWKS reload needs no
//! lock, and its own auth-hook client).
//!
//! The token comes from `Authorization: Bearer` or the `token` query
//! parameter; it is looked at here and nowhere else, and never logged.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::Policy;
use crate::config::Config;

#[cfg(feature = "auth")]
use crate::auth::{AuthError, HookTarget, Reload, Verifier, VerifyOptions};
#[cfg(feature = "auth")]
use crate::hub::Identity;
#[cfg(feature = "auth")]
use crate::metrics::CoreStats;
#[cfg(feature = "auth")]
use crate::net::hook_client::HookClient;
#[cfg(feature = "auth")]
use crate::sys::log::{self, Level};
#[cfg(feature = "auth")]
use std::cell::RefCell;
#[cfg(feature = "auth")]
use std::net::SocketAddr;
#[cfg(feature = "auth")]
use std::time::Duration;

/// Authentication as configured: `None` in [`super::Shared`] means off.
pub struct Gate {
    /// The flags' topic patterns, shared by every hub.
    pub policy: Arc<Policy>,
    /// Token verification (a key flag was given).
    #[cfg(feature = "auth")]
    pub verifier: Option<Verifier>,
    /// The auth hook (`--auth-hook`), resolved at start.
    #[cfg(feature = "auth")]
    pub hook: Option<HookSetup>,
    /// `--jwt-leeway` in seconds (also applied to a hook's `expires_in`).
    pub leeway_secs: u64,
}

/// Where the auth hook is and how it is asked.
#[cfg(feature = "auth")]
pub struct HookSetup {
    /// The URL.
    pub target: HookTarget,
    /// Its address, resolved once at start.
    pub addr: SocketAddr,
    /// `--auth-hook-timeout`.
    pub timeout: Duration,
    /// `--auth-hook-concurrency`, per core.
    pub concurrency: usize,
}

impl Gate {
    /// From the flags; `Ok(None)` when authentication is off. Reads the
    /// key files now (errors name the file, never key bytes).
    pub fn from_config(config: &Config) -> Result<Option<Gate>, String> {
        if !config.auth_on() {
            return Ok(None);
        }
        let policy = Policy::from_flags(&config.allow_sub, &config.allow_pub)
            .map_err(|e| format!("--allow-sub/--allow-pub: {e}"))?;
        Ok(Some(Gate {
            policy: Arc::new(policy),
            #[cfg(feature = "auth")]
            verifier: verifier(config)?,
            #[cfg(feature = "auth")]
            hook: hook(config)?,
            leeway_secs: config.jwt_leeway().as_secs(),
        }))
    }

    /// For the start-up log line: which checks run (no key material).
    pub fn describe(&self) -> String {
        #[allow(unused_mut)]
        let mut checks: Vec<String> = Vec::new();
        #[cfg(feature = "auth")]
        {
            if let Some(v) = &self.verifier {
                checks.push(format!("jwt {}", v.describe()));
            }
            if let Some(h) = &self.hook {
                checks.push(format!("hook {}", h.addr));
            }
        }
        checks.join(", ")
    }
}

#[cfg(feature = "auth")]
fn hook(config: &Config) -> Result<Option<HookSetup>, String> {
    let Some(url) = &config.auth_hook else {
        return Ok(None);
    };
    let target = HookTarget::parse(url).map_err(|e| format!("--auth-hook: {e}"))?;
    let addr = target.resolve().map_err(|e| format!("--auth-hook: {e}"))?;
    Ok(Some(HookSetup {
        target,
        addr,
        timeout: config.auth_hook_timeout(),
        concurrency: config.auth_hook_concurrency(),
    }))
}

#[cfg(feature = "auth")]
fn verifier(config: &Config) -> Result<Option<Verifier>, String> {
    let opts = VerifyOptions {
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
        leeway_secs: config.jwt_leeway().as_secs(),
    };
    let made = if let Some(path) = &config.jwt_secret_file {
        Verifier::hs256_file(path, opts)
    } else if let Some(path) = &config.jwt_public_key_file {
        Verifier::public_key_file(path, opts)
    } else if let Some(path) = &config.jwt_jwks_file {
        Verifier::jwks_file(path, opts)
    } else {
        return Ok(None);
    };
    made.map(Some).map_err(|e| e.to_string())
}

/// Seconds since the epoch (token times are in these).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The token of an upgrade request: `Authorization: Bearer <jwt>` first,
/// else the `token` query parameter (percent-decoded). `None`: neither.
pub fn request_token<'a>(
    authorization: Option<&'a [u8]>,
    query: Option<&'a str>,
) -> Option<Cow<'a, [u8]>> {
    if let Some(value) = authorization {
        let value = value.trim_ascii();
        if value.len() > 7 && value[..7].eq_ignore_ascii_case(b"bearer ") {
            return Some(Cow::Borrowed(value[7..].trim_ascii()));
        }
    }
    let query = query?;
    let raw = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))?;
    Some(percent_decode(raw.as_bytes()))
}

/// `%XX` escapes decoded; anything malformed is kept as it is (the token
/// check then refuses it).
fn percent_decode(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'%') {
        return Cow::Borrowed(raw);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// A token that passed: who it is and until when (seconds since the epoch,
/// leeway included).
#[cfg(feature = "auth")]
pub struct Passed {
    /// The user and the token's own patterns.
    pub identity: Identity,
    /// The token's `exp`.
    pub exp: u64,
    /// When it stops being accepted: `exp` + leeway.
    pub deadline: u64,
}

/// One core's side of authentication.
pub struct CoreAuth {
    #[cfg(feature = "auth")]
    verifier: Option<RefCell<Verifier>>,
    /// This core's client of the auth hook.
    #[cfg(feature = "auth")]
    pub hook: Option<HookClient>,
    /// `--jwt-leeway` in seconds.
    pub leeway_secs: u64,
}

impl CoreAuth {
    /// This core's copy of the gate's verifier, and its own hook client
    /// (counted in `stats`).
    #[cfg(feature = "auth")]
    pub fn new(gate: &Gate, stats: &CoreStats) -> CoreAuth {
        CoreAuth {
            verifier: gate.verifier.clone().map(RefCell::new),
            hook: gate.hook.as_ref().map(|h| {
                let stats = stats.hook.clone();
                HookClient::new(h.target.clone(), h.addr, h.timeout, h.concurrency, stats)
            }),
            leeway_secs: gate.leeway_secs,
        }
    }

    /// A lean build never has a gate (its flags are refused at start).
    #[cfg(not(feature = "auth"))]
    pub fn new(gate: &Gate, _stats: &crate::metrics::CoreStats) -> CoreAuth {
        CoreAuth {
            leeway_secs: gate.leeway_secs,
        }
    }

    /// Whether tokens are checked (else only the hook decides).
    pub fn checks_tokens(&self) -> bool {
        #[cfg(feature = "auth")]
        return self.verifier.is_some();
        #[cfg(not(feature = "auth"))]
        false
    }

    /// Checks a token now.
    #[cfg(feature = "auth")]
    pub fn verify(&self, token: &[u8]) -> Result<Passed, AuthError> {
        let Some(v) = &self.verifier else {
            return Err(AuthError::Missing);
        };
        let v = v.borrow();
        let claims = v.verify(token, unix_now())?;
        Ok(Passed {
            deadline: v.deadline(claims.exp),
            exp: claims.exp,
            identity: Identity {
                user: Arc::from(claims.user),
                grants: claims.grants,
            },
        })
    }

    /// Re-reads a JWKS file that changed (the heartbeat calls this about
    /// once a second); logs what happened, on core 0 only.
    pub fn reload(&self, core: usize) {
        #[cfg(feature = "auth")]
        if let Some(v) = &self.verifier {
            let outcome = v.borrow_mut().reload_if_changed();
            if core != 0 {
                return;
            }
            match outcome {
                Reload::Unchanged => {}
                Reload::Reloaded { keys, skipped } => log::emit(
                    Level::Info,
                    "jwks_reloaded",
                    &[("keys", &keys), ("skipped", &skipped)],
                ),
                Reload::KeptOld(e) => {
                    log::emit(Level::Warn, "jwks_reload_failed", &[("error", &e)])
                }
            }
        }
        #[cfg(not(feature = "auth"))]
        let _ = core;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_header_then_query() {
        let t = |a: Option<&'static [u8]>, q: Option<&'static str>| {
            request_token(a, q).map(|c| String::from_utf8(c.into_owned()).unwrap())
        };
        assert_eq!(t(Some(b"Bearer a.b.c"), None).as_deref(), Some("a.b.c"));
        assert_eq!(t(Some(b"bearer  a.b.c "), None).as_deref(), Some("a.b.c"));
        assert_eq!(
            t(Some(b"Bearer h.h.h"), Some("token=q.q.q")).as_deref(),
            Some("h.h.h")
        );
        assert_eq!(
            t(Some(b"Basic xyz"), Some("token=q.q.q")).as_deref(),
            Some("q.q.q")
        );
        assert_eq!(
            t(None, Some("a=1&token=q.q.q&b=2")).as_deref(),
            Some("q.q.q")
        );
        assert_eq!(t(None, Some("token=q%2Eq.q")).as_deref(), Some("q.q.q"));
        assert_eq!(t(None, Some("token=%zz%2")).as_deref(), Some("%zz%2"));
        assert_eq!(t(None, Some("tokens=x")), None);
        assert_eq!(t(None, None), None);
    }
}
