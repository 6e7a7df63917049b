//! JWT verification: HS256, RS256, ES256; the algorithm follows the key.
//!
//! Checks, cheapest first: size, shape (three base64url parts), header
//! JSON, `alg` (against the key's: `none` and everything else refused),
//! the key (JWKS: by `kid`), the signature (jsonwebtoken's `crypto::verify`,
//! ring underneath, called with the KEY's algorithm), and only then the
//! payload: `exp` (required), `nbf`, `iss`, `aud`, `sub`, the `wsgate` claim.
//! The payload is not parsed before its signature is checked.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use super::jwks::{JwksFile, Reload};
use super::key::{key_from_pem, Alg, Key};
use super::patterns::Grants;
use super::{is_valid_user, AuthError, Claims, KeyError, MAX_TOKEN_LEN, MIN_SECRET_LEN};

/// The claim checks besides the signature.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
    /// When set, `aud` (a string, or an array of strings) must contain it.
    /// When unset, `aud` is not looked at.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

#[derive(Clone)]
enum Keys {
    One(Key),
    Jwks(JwksFile),
}

/// Verifies tokens against one configured key or a JWKS file. `Clone` (a
/// core may keep its own copy); `Debug` shows no key material.
#[derive(Clone)]
pub struct Verifier {
    keys: Keys,
    opts: VerifyOptions,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.describe())
            .field("opts", &self.opts)
            .finish()
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<serde_json::Number>,
    #[serde(default)]
    nbf: Option<serde_json::Number>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    wsgate: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WsgateClaim {
    #[serde(default)]
    sub: Vec<String>,
    #[serde(default, rename = "pub")]
    publish: Vec<String>,
}

impl Verifier {
    /// HS256 with `secret` (at least 32 bytes; a trailing newline is
    /// ignored). A PEM key is refused: a public key is no secret, and using
    /// one as an HMAC secret is the classic algorithm-confusion forgery.
    pub fn hs256(secret: &[u8], opts: VerifyOptions) -> Result<Verifier, KeyError> {
        Self::hs256_named(secret, opts, "the HS256 secret")
    }

    /// HS256 with the secret in `path` (`--jwt-secret-file`).
    pub fn hs256_file(path: &Path, opts: VerifyOptions) -> Result<Verifier, KeyError> {
        let bytes = read(path, "--jwt-secret-file")?;
        Self::hs256_named(
            &bytes,
            opts,
            &format!("--jwt-secret-file {}", path.display()),
        )
    }

    fn hs256_named(secret: &[u8], opts: VerifyOptions, what: &str) -> Result<Verifier, KeyError> {
        let mut end = secret.len();
        while end > 0 && matches!(secret[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        let secret = &secret[..end];
        if secret.starts_with(b"-----BEGIN") {
            return Err(KeyError(format!(
                "{what}: this is a PEM key, not a shared secret (for RS256/ES256 use --jwt-public-key-file)"
            )));
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError(format!(
                "{what}: {} bytes; an HS256 secret needs at least {MIN_SECRET_LEN} (e.g. `openssl rand -hex 32`)",
                secret.len()
            )));
        }
        Ok(Verifier {
            keys: Keys::One(Key {
                alg: Alg::HS256,
                kid: None,
                key: DecodingKey::from_secret(secret),
            }),
            opts,
        })
    }

    /// RS256 or ES256 with a PEM public key (SPKI `PUBLIC KEY`, or PKCS#1
    /// `RSA PUBLIC KEY`); the algorithm follows the key: RSA → RS256,
    /// EC P-256 → ES256.
    pub fn public_key_pem(pem: &[u8], opts: VerifyOptions) -> Result<Verifier, KeyError> {
        Self::public_key_named(pem, opts, "the public key")
    }

    /// [`Verifier::public_key_pem`] with the key in `path`
    /// (`--jwt-public-key-file`).
    pub fn public_key_file(path: &Path, opts: VerifyOptions) -> Result<Verifier, KeyError> {
        let bytes = read(path, "--jwt-public-key-file")?;
        Self::public_key_named(
            &bytes,
            opts,
            &format!("--jwt-public-key-file {}", path.display()),
        )
    }

    fn public_key_named(pem: &[u8], opts: VerifyOptions, what: &str) -> Result<Verifier, KeyError> {
        let (alg, key) = key_from_pem(pem).map_err(|why| KeyError(format!("{what}: {why}")))?;
        Ok(Verifier {
            keys: Keys::One(Key {
                alg,
                kid: None,
                key,
            }),
            opts,
        })
    }

    /// Keys from a JWKS document in `path` (`--jwt-jwks-file`): RSA
    /// (RS256) and EC P-256 (ES256) signing keys, chosen by the token's
    /// `kid`. Other keys (encryption keys, other curves or algorithms) are
    /// skipped; a file without a usable key is an error.
    pub fn jwks_file(path: &Path, opts: VerifyOptions) -> Result<Verifier, KeyError> {
        Ok(Verifier {
            keys: Keys::Jwks(JwksFile::load(path)?),
            opts,
        })
    }

    /// JWKS only: re-reads the file when its modification time, size or
    /// inode changed. An unreadable or invalid new file keeps the old keys
    /// (and is reported once per change). Other verifiers: `Unchanged`.
    pub fn reload_if_changed(&mut self) -> Reload {
        match &mut self.keys {
            Keys::One(_) => Reload::Unchanged,
            Keys::Jwks(j) => j.reload_if_changed(),
        }
    }

    /// For a start-up log line: `HS256`, `RS256`, `ES256` or
    /// `JWKS <path> (<n> keys)`. No key material.
    pub fn describe(&self) -> String {
        match &self.keys {
            Keys::One(k) => k.alg.name().to_string(),
            Keys::Jwks(j) => format!("JWKS {} ({} keys)", j.path().display(), j.keys().len()),
        }
    }

    /// The JWKS file, if this verifier uses one.
    pub fn jwks_path(&self) -> Option<&Path> {
        match &self.keys {
            Keys::One(_) => None,
            Keys::Jwks(j) => Some(j.path().as_path()),
        }
    }

    pub fn options(&self) -> &VerifyOptions {
        &self.opts
    }

    /// When a token with `exp` stops being accepted: `exp` + leeway. A live
    /// connection is closed then unless refreshed.
    pub fn deadline(&self, exp: u64) -> u64 {
        exp.saturating_add(self.opts.leeway_secs)
    }

    /// Checks `token` (the compact serialization, as bytes from a header or
    /// query parameter) at `now_secs` (seconds since the epoch).
    pub fn verify(&self, token: &[u8], now_secs: u64) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TooLarge);
        }
        let (h64, p64, s64) = split(token)?;
        let header: Header = from_b64_json(h64)?;
        if header.crit.is_some() {
            // RFC 7515 §4.1.11: extensions we do not understand.
            return Err(AuthError::Malformed);
        }
        let alg = Alg::from_name(&header.alg).ok_or(AuthError::Alg)?;
        let key = match &self.keys {
            Keys::One(k) => k,
            Keys::Jwks(j) => j.find(header.kid.as_deref()).ok_or(AuthError::UnknownKey)?,
        };
        if alg != key.alg {
            return Err(AuthError::Alg);
        }
        let signed = &token[..h64.len() + 1 + p64.len()];
        // The key's algorithm, never the token's: an RSA/EC key is never
        // used as an HMAC secret.
        match jsonwebtoken::crypto::verify(s64, signed, &key.key, key.alg.jwt()) {
            Ok(true) => {}
            _ => return Err(AuthError::BadSignature),
        }
        let payload: Payload = from_b64_json(p64)?;
        let leeway = self.opts.leeway_secs;
        let exp = numeric_date(payload.exp.as_ref())?.ok_or(AuthError::NoExpiry)?;
        if now_secs >= exp.saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = numeric_date(payload.nbf.as_ref())? {
            if nbf > now_secs.saturating_add(leeway) {
                return Err(AuthError::NotYetValid);
            }
        }
        if let Some(want) = &self.opts.issuer {
            if payload.iss.as_deref() != Some(want.as_str()) {
                return Err(AuthError::Issuer);
            }
        }
        if let Some(want) = &self.opts.audience {
            let ok = match &payload.aud {
                Some(Audience::One(a)) => a == want,
                Some(Audience::Many(list)) => list.iter().any(|a| a == want),
                None => false,
            };
            if !ok {
                return Err(AuthError::Audience);
            }
        }
        let user = match payload.sub {
            Some(s) if is_valid_user(s.as_bytes()) => s.into_boxed_str(),
            _ => return Err(AuthError::Subject),
        };
        let grants = match payload.wsgate {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let c: WsgateClaim =
                    serde_json::from_value(v).map_err(|_| AuthError::Permissions)?;
                Grants::boxed(&c.sub, &c.publish).map_err(|_| AuthError::Permissions)?
            }
        };
        Ok(Claims { user, exp, grants })
    }
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| KeyError(format!("{flag} {}: {e}", path.display())))
}

/// Three parts of the base64url alphabet; header and payload not empty.
/// (An empty signature is left to the signature check, so that an unsigned
/// `alg: none` token is refused for its `alg`.)
fn split(token: &[u8]) -> Result<(&str, &str, &str), AuthError> {
    if !token
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(AuthError::Malformed);
    }
    // All ASCII: cannot fail.
    let s = std::str::from_utf8(token).map_err(|_| AuthError::Malformed)?;
    let mut parts = s.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(sig), None) if !h.is_empty() && !p.is_empty() => Ok((h, p, sig)),
        _ => Err(AuthError::Malformed),
    }
}

fn from_b64_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed)?;
    // An object, not the sequence form serde would also take for a struct.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(AuthError::Malformed);
    }
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

/// RFC 7519 NumericDate: a JSON number of seconds, possibly fractional.
fn numeric_date(n: Option<&serde_json::Number>) -> Result<Option<u64>, AuthError> {
    let Some(n) = n else { return Ok(None) };
    if let Some(v) = n.as_u64() {
        return Ok(Some(v));
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f <= 0.0 => Ok(Some(0)),
        Some(f) if f.is_finite() => Ok(Some(f.floor().min(u64::MAX as f64) as u64)),
        _ => Err(AuthError::Malformed),
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
pub(crate) mod tests;
