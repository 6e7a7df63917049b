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
pub(crate) mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header as JwtHeader};
    use serde_json::json;

    pub const RSA_PRIVATE: &[u8] = include_bytes!("../../tests/keys/rsa_private.pem");
    pub const RSA_PUBLIC: &[u8] = include_bytes!("../../tests/keys/rsa_public.pem");
    pub const EC_PRIVATE: &[u8] = include_bytes!("../../tests/keys/ec_private.pem");
    pub const EC_PUBLIC: &[u8] = include_bytes!("../../tests/keys/ec_public.pem");
    pub const SECRET: &[u8] = b"test-only-secret-0123456789abcdef-wsgate";
    pub const NOW: u64 = 1_800_000_000;

    pub fn sign(alg: Alg, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut h = JwtHeader::new(alg.jwt());
        h.kid = kid.map(str::to_string);
        let key = match alg {
            Alg::HS256 => EncodingKey::from_secret(SECRET),
            Alg::RS256 => EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
            Alg::ES256 => EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
        };
        jsonwebtoken::encode(&h, claims, &key).unwrap()
    }

    pub fn claims() -> serde_json::Value {
        json!({"sub": "alice", "exp": NOW + 60})
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn hs() -> Verifier {
        Verifier::hs256(SECRET, VerifyOptions::default()).unwrap()
    }
    fn rs() -> Verifier {
        Verifier::public_key_pem(RSA_PUBLIC, VerifyOptions::default()).unwrap()
    }
    fn es() -> Verifier {
        Verifier::public_key_pem(EC_PUBLIC, VerifyOptions::default()).unwrap()
    }
    fn with(opts: VerifyOptions) -> Verifier {
        Verifier::hs256(SECRET, opts).unwrap()
    }

    fn err(v: &Verifier, token: &str) -> AuthError {
        v.verify(token.as_bytes(), NOW).unwrap_err()
    }

    #[test]
    fn valid_tokens_of_each_alg() {
        for (v, alg) in [(hs(), Alg::HS256), (rs(), Alg::RS256), (es(), Alg::ES256)] {
            assert_eq!(v.describe(), alg.name());
            let t = sign(alg, None, &claims());
            let c = v.verify(t.as_bytes(), NOW).unwrap();
            assert_eq!(&*c.user, "alice");
            assert_eq!(c.exp, NOW + 60);
            assert_eq!(c.grants, None);
            // A kid is ignored with a single key.
            let t = sign(alg, Some("whatever"), &claims());
            assert!(v.verify(t.as_bytes(), NOW).is_ok());
        }
    }

    #[test]
    fn alg_none_is_refused() {
        for alg in [
            "none", "None", "NONE", "", "HS512", "RS384", "PS256", "EdDSA",
        ] {
            let h = b64(&json!({"alg": alg, "typ": "JWT"}));
            let p = b64(&claims());
            for v in [hs(), rs(), es()] {
                assert_eq!(err(&v, &format!("{h}.{p}.")), AuthError::Alg, "{alg}");
                // With a signature of another token glued on.
                let sig = sign(Alg::HS256, None, &claims());
                let sig = sig.rsplit('.').next().unwrap();
                assert_eq!(err(&v, &format!("{h}.{p}.{sig}")), AuthError::Alg, "{alg}");
            }
        }
    }

    #[test]
    fn alg_must_be_the_keys() {
        let hs_t = sign(Alg::HS256, None, &claims());
        let rs_t = sign(Alg::RS256, None, &claims());
        let es_t = sign(Alg::ES256, None, &claims());
        assert_eq!(err(&hs(), &rs_t), AuthError::Alg);
        assert_eq!(err(&hs(), &es_t), AuthError::Alg);
        assert_eq!(err(&rs(), &hs_t), AuthError::Alg);
        assert_eq!(err(&rs(), &es_t), AuthError::Alg);
        assert_eq!(err(&es(), &hs_t), AuthError::Alg);
        assert_eq!(err(&es(), &rs_t), AuthError::Alg);
    }

    #[test]
    fn hs256_with_the_public_key_as_secret_is_refused() {
        // The classic confusion: the attacker knows the public key and signs
        // HS256 with its bytes as the HMAC secret.
        for (public, v) in [(RSA_PUBLIC, rs()), (EC_PUBLIC, es())] {
            let mut variants = vec![public.to_vec()];
            let trimmed = public.strip_suffix(b"\n").unwrap().to_vec();
            variants.push(trimmed);
            for secret in variants {
                let t = jsonwebtoken::encode(
                    &JwtHeader::new(Algorithm::HS256),
                    &claims(),
                    &EncodingKey::from_secret(&secret),
                )
                .unwrap();
                assert_eq!(err(&v, &t), AuthError::Alg);
            }
        }
        // And a public key is refused as a secret file's content.
        let e = Verifier::hs256(RSA_PUBLIC, VerifyOptions::default()).unwrap_err();
        assert!(e.0.contains("PEM"), "{e}");
    }

    #[test]
    fn bad_signatures() {
        for (v, alg) in [(hs(), Alg::HS256), (rs(), Alg::RS256), (es(), Alg::ES256)] {
            let t = sign(alg, None, &claims());
            let (h, rest) = t.split_once('.').unwrap();
            let (_, s) = rest.split_once('.').unwrap();
            // Tampered payload, signature kept.
            let evil = b64(&json!({"sub": "mallory", "exp": NOW + 60}));
            assert_eq!(err(&v, &format!("{h}.{evil}.{s}")), AuthError::BadSignature);
            // Tampered signature.
            let mut sig = URL_SAFE_NO_PAD.decode(s).unwrap();
            sig[5] ^= 1;
            let bad = URL_SAFE_NO_PAD.encode(&sig);
            let p = rest.split_once('.').unwrap().0;
            assert_eq!(err(&v, &format!("{h}.{p}.{bad}")), AuthError::BadSignature);
            // Empty, truncated, not base64 of the right length.
            assert_eq!(err(&v, &format!("{h}.{p}.")), AuthError::BadSignature);
            assert_eq!(
                err(&v, &format!("{h}.{p}.{}", &s[..10])),
                AuthError::BadSignature
            );
            assert_eq!(err(&v, &format!("{h}.{p}.A")), AuthError::BadSignature);
        }
        // Another secret.
        let other = Verifier::hs256(&[b'x'; 32], VerifyOptions::default()).unwrap();
        assert_eq!(
            err(&other, &sign(Alg::HS256, None, &claims())),
            AuthError::BadSignature
        );
    }

    #[test]
    fn size_and_shape() {
        assert_eq!(hs().verify(b"", NOW).unwrap_err(), AuthError::Missing);
        let big = json!({"sub": "alice", "exp": NOW + 60, "pad": "x".repeat(MAX_TOKEN_LEN)});
        assert_eq!(
            err(&hs(), &sign(Alg::HS256, None, &big)),
            AuthError::TooLarge
        );
        // Just under the limit is fine.
        let mut n = MAX_TOKEN_LEN - 300;
        loop {
            let c = json!({"sub": "alice", "exp": NOW + 60, "pad": "x".repeat(n)});
            let t = sign(Alg::HS256, None, &c);
            if t.len() > MAX_TOKEN_LEN {
                assert_eq!(err(&hs(), &t), AuthError::TooLarge);
                break;
            }
            assert!(hs().verify(t.as_bytes(), NOW).is_ok(), "{}", t.len());
            n += 1;
        }
        let t = sign(Alg::HS256, None, &claims());
        let (h, rest) = t.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        for bad in [
            format!("{h}.{p}"),
            format!("{h}.{p}.{s}.{s}"),
            h.to_string(),
            format!(".{p}.{s}"),
            format!("{h}..{s}"),
            format!("{h}.{p}.{s}="),
            format!("{h}=.{p}.{s}"),
            format!("{h}.{p}.{s} "),
            format!("Bearer {t}"),
            format!("{h}.{p}+.{s}"),
            "...".to_string(),
        ] {
            assert_eq!(err(&hs(), &bad), AuthError::Malformed, "{bad}");
        }
        // Header not JSON, not an object, no alg, crit.
        let p = b64(&claims());
        for h in [
            URL_SAFE_NO_PAD.encode(b"not json"),
            b64(&json!(["HS256"])),
            b64(&json!({"typ": "JWT"})),
            b64(&json!({"alg": 256})),
            b64(&json!({"alg": "HS256", "crit": ["exp"]})),
        ] {
            assert_eq!(err(&hs(), &format!("{h}.{p}.sig")), AuthError::Malformed);
        }
    }

    #[test]
    fn payload_is_checked_after_the_signature() {
        // A payload that is not JSON but correctly signed: Malformed.
        let h = b64(&json!({"alg": "HS256"}));
        let p = URL_SAFE_NO_PAD.encode(b"[1,2");
        let msg = format!("{h}.{p}");
        let sig = jsonwebtoken::crypto::sign(
            msg.as_bytes(),
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
        .unwrap();
        assert_eq!(err(&hs(), &format!("{msg}.{sig}")), AuthError::Malformed);
        // The same payload unsigned: BadSignature first.
        assert_eq!(err(&hs(), &format!("{msg}.AAAA")), AuthError::BadSignature);
        // exp of the wrong type.
        let c = json!({"sub": "alice", "exp": "tomorrow"});
        assert_eq!(
            err(&hs(), &sign(Alg::HS256, None, &c)),
            AuthError::Malformed
        );
    }

    #[test]
    fn exp_and_nbf_with_and_without_leeway() {
        let v0 = hs();
        let v5 = with(VerifyOptions {
            leeway_secs: 5,
            ..Default::default()
        });
        let no_exp = sign(Alg::HS256, None, &json!({"sub": "alice"}));
        assert_eq!(err(&v0, &no_exp), AuthError::NoExpiry);
        let null_exp = sign(Alg::HS256, None, &json!({"sub": "alice", "exp": null}));
        assert_eq!(err(&v0, &null_exp), AuthError::NoExpiry);

        let t = sign(Alg::HS256, None, &json!({"sub": "a", "exp": NOW}));
        assert_eq!(v0.verify(t.as_bytes(), NOW - 1).unwrap().exp, NOW);
        assert_eq!(
            v0.verify(t.as_bytes(), NOW).unwrap_err(),
            AuthError::Expired
        );
        assert_eq!(
            v0.verify(t.as_bytes(), NOW + 1000).unwrap_err(),
            AuthError::Expired
        );
        assert!(v5.verify(t.as_bytes(), NOW + 4).is_ok());
        assert_eq!(
            v5.verify(t.as_bytes(), NOW + 5).unwrap_err(),
            AuthError::Expired
        );
        assert_eq!(v5.deadline(NOW), NOW + 5);

        // Fractional NumericDate.
        let t = sign(
            Alg::HS256,
            None,
            &json!({"sub": "a", "exp": NOW as f64 + 0.5}),
        );
        assert!(v0.verify(t.as_bytes(), NOW - 1).is_ok());
        assert_eq!(
            v0.verify(t.as_bytes(), NOW).unwrap_err(),
            AuthError::Expired
        );
        // Negative: long expired.
        let t = sign(Alg::HS256, None, &json!({"sub": "a", "exp": -1}));
        assert_eq!(
            v0.verify(t.as_bytes(), NOW).unwrap_err(),
            AuthError::Expired
        );

        let t = sign(
            Alg::HS256,
            None,
            &json!({"sub": "a", "exp": NOW + 100, "nbf": NOW + 3}),
        );
        assert_eq!(
            v0.verify(t.as_bytes(), NOW).unwrap_err(),
            AuthError::NotYetValid
        );
        assert!(v0.verify(t.as_bytes(), NOW + 3).is_ok());
        assert!(v5.verify(t.as_bytes(), NOW).is_ok());
        assert_eq!(
            v5.verify(t.as_bytes(), NOW - 3).unwrap_err(),
            AuthError::NotYetValid
        );
        // Expired is checked before nbf.
        let t = sign(
            Alg::HS256,
            None,
            &json!({"sub": "a", "exp": NOW, "nbf": NOW + 9}),
        );
        assert_eq!(
            v0.verify(t.as_bytes(), NOW).unwrap_err(),
            AuthError::Expired
        );
    }

    #[test]
    fn issuer_and_audience() {
        let v = with(VerifyOptions {
            issuer: Some("https://idp.example".into()),
            audience: Some("wsgate".into()),
            leeway_secs: 0,
        });
        let ok = |c: serde_json::Value| v.verify(sign(Alg::HS256, None, &c).as_bytes(), NOW);
        let base = |extra: serde_json::Value| {
            let mut c = claims();
            for (k, val) in extra.as_object().unwrap() {
                c[k] = val.clone();
            }
            c
        };
        assert!(ok(base(json!({"iss": "https://idp.example", "aud": "wsgate"}))).is_ok());
        assert!(ok(base(
            json!({"iss": "https://idp.example", "aud": ["x", "wsgate"]})
        ))
        .is_ok());
        assert_eq!(
            ok(base(
                json!({"iss": "https://evil.example", "aud": "wsgate"})
            ))
            .unwrap_err(),
            AuthError::Issuer
        );
        assert_eq!(
            ok(base(json!({"aud": "wsgate"}))).unwrap_err(),
            AuthError::Issuer
        );
        assert_eq!(
            ok(base(json!({"iss": "https://idp.example", "aud": "other"}))).unwrap_err(),
            AuthError::Audience
        );
        assert_eq!(
            ok(base(
                json!({"iss": "https://idp.example", "aud": ["a", "b"]})
            ))
            .unwrap_err(),
            AuthError::Audience
        );
        assert_eq!(
            ok(base(json!({"iss": "https://idp.example", "aud": []}))).unwrap_err(),
            AuthError::Audience
        );
        assert_eq!(
            ok(base(json!({"iss": "https://idp.example"}))).unwrap_err(),
            AuthError::Audience
        );
        // Unconfigured: not looked at.
        let t = sign(Alg::HS256, None, &base(json!({"iss": "any", "aud": "any"})));
        assert!(hs().verify(t.as_bytes(), NOW).is_ok());
    }

    #[test]
    fn subject_rules() {
        let t = |sub: serde_json::Value| {
            let c = json!({"sub": sub, "exp": NOW + 60});
            hs().verify(sign(Alg::HS256, None, &c).as_bytes(), NOW)
        };
        for good in [
            "a",
            "alice@example.com",
            "auth0|x".replace('|', ":").as_str(),
            "A-Z_0.9",
        ] {
            assert_eq!(&*t(json!(good)).unwrap().user, good);
        }
        assert!(t(json!("u".repeat(128))).is_ok());
        for bad in ["", "alice smith", "a/b", "a|b", "é", "a\nb", "<script>"] {
            assert_eq!(t(json!(bad)).unwrap_err(), AuthError::Subject, "{bad:?}");
        }
        assert_eq!(t(json!("u".repeat(129))).unwrap_err(), AuthError::Subject);
        let no_sub = sign(Alg::HS256, None, &json!({"exp": NOW + 60}));
        assert_eq!(err(&hs(), &no_sub), AuthError::Subject);
        assert_eq!(t(json!(42)).unwrap_err(), AuthError::Malformed);
    }

    #[test]
    fn wsgate_claim() {
        let t = |w: serde_json::Value| {
            let c = json!({"sub": "bob", "exp": NOW + 60, "wsgate": w});
            hs().verify(sign(Alg::HS256, None, &c).as_bytes(), NOW)
        };
        let c = t(json!({"sub": ["user:{user}", "news*"], "pub": ["chat:{user}"]})).unwrap();
        let g = c.grants.unwrap();
        assert!(g.sub.allows(b"user:bob", "bob"));
        assert!(!g.sub.allows(b"user:alice", "bob"));
        assert!(g.publish.allows(b"chat:bob", "bob"));
        assert_eq!(t(json!({"sub": [], "pub": []})).unwrap().grants, None);
        assert_eq!(t(json!({})).unwrap().grants, None);
        assert_eq!(t(json!(null)).unwrap().grants, None);
        for bad in [
            json!({"sub": ["a*b"]}),
            json!({"sub": "news"}),
            json!({"pub": [1]}),
            json!(["news"]),
            json!({"subscribe": ["x"]}),
        ] {
            assert_eq!(t(bad.clone()).unwrap_err(), AuthError::Permissions, "{bad}");
        }
    }

    #[test]
    fn errors_carry_no_token_bytes() {
        let t = sign(Alg::HS256, None, &json!({"sub": "a", "exp": 1}));
        let e = err(&hs(), &t);
        assert_eq!(e.reason(), "expired");
        for text in [format!("{e:?}"), format!("{e}")] {
            assert!(!text.contains(&t[..20]) && !text.contains('.'), "{text}");
        }
        let v = format!("{:?}", hs());
        assert!(!v.contains("test-only-secret"), "{v}");
        let reasons: std::collections::HashSet<_> = [
            AuthError::Missing,
            AuthError::TooLarge,
            AuthError::Malformed,
            AuthError::Alg,
            AuthError::UnknownKey,
            AuthError::BadSignature,
            AuthError::NoExpiry,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::Issuer,
            AuthError::Audience,
            AuthError::Subject,
            AuthError::Permissions,
        ]
        .iter()
        .map(|e| e.reason())
        .collect();
        assert_eq!(reasons.len(), 13);
        assert!(reasons.contains("bad_signature") && reasons.contains("alg"));
    }

    #[test]
    fn key_loading_errors() {
        let o = VerifyOptions::default;
        // Secret: trailing newline ignored, 32 bytes minimum.
        let mut s = [b'k'; 32].to_vec();
        s.extend_from_slice(b"\r\n");
        assert!(Verifier::hs256(&s, o()).is_ok());
        let e = Verifier::hs256(b"0123456789012345678901234567890\n", o()).unwrap_err();
        assert!(
            e.0.contains("31 bytes") && e.0.contains("at least 32"),
            "{e}"
        );
        // A trailing newline is not part of the secret.
        let v = Verifier::hs256(&[SECRET, b"\n"].concat(), o()).unwrap();
        assert!(v
            .verify(sign(Alg::HS256, None, &claims()).as_bytes(), NOW)
            .is_ok());

        for (pem, want) in [
            (RSA_PRIVATE, "private key"),
            (EC_PRIVATE, "private key"),
            (b"hello".as_slice(), "not a PEM"),
            (
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".as_slice(),
                "neither",
            ),
            (P384_PUBLIC, "P-256"),
            (&[RSA_PUBLIC, EC_PUBLIC].concat(), "more than one"),
        ] {
            let e = Verifier::public_key_pem(pem, o()).unwrap_err();
            assert!(e.0.contains(want), "{e}");
        }
        let e = Verifier::public_key_file(Path::new("/nonexistent/key.pem"), o()).unwrap_err();
        assert!(
            e.0.contains("--jwt-public-key-file /nonexistent/key.pem"),
            "{e}"
        );
        let e = Verifier::hs256_file(Path::new("/nonexistent/s"), o()).unwrap_err();
        assert!(e.0.contains("--jwt-secret-file"), "{e}");
    }

    #[test]
    fn key_files() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
        let o = VerifyOptions::default;
        let rs = Verifier::public_key_file(&Path::new(dir).join("rsa_public.pem"), o()).unwrap();
        assert_eq!(rs.describe(), "RS256");
        let es = Verifier::public_key_file(&Path::new(dir).join("ec_public.pem"), o()).unwrap();
        assert_eq!(es.describe(), "ES256");
        assert!(rs
            .verify(sign(Alg::RS256, None, &claims()).as_bytes(), NOW)
            .is_ok());
        assert!(es
            .verify(sign(Alg::ES256, None, &claims()).as_bytes(), NOW)
            .is_ok());
    }

    /// A P-384 public key (`openssl ecparam -name secp384r1`), not test
    /// material for anything else.
    const P384_PUBLIC: &[u8] = b"-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE0VxYanSRyToY5rMEVV3wJOYYCCWec+zT
Ym5C8sg4oKom18cnuOnAy+qS3Ccq3KnddPMLahGeT9PHYSK83PMT94JwLDHIbNDv
q2jTIV/zAnpf2udzWFkx4K8v7c60RyhU
-----END PUBLIC KEY-----
";
}
