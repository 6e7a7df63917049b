//! Helpers for the authentication tests (`tests/auth_*.rs`, DESIGN §11):
//!
//! * tokens minted here with `jsonwebtoken` (HS256 with [`SECRET`], RS256 /
//!   ES256 with the test-only keys of `tests/keys/`), and hand-made bad ones
//!   (`alg: none`);
//! * [`Keys`]: a temp dir holding the secret file, paths of the PEM / JWKS
//!   test keys, and a JWKS file the tests may rewrite;
//! * gateway arguments with the auth flags ([`gw_args`]);
//! * log scans: the refusal reasons, and proof that no token, session id
//!   or hook body was ever logged;
//! * [`client`]: a gateway-protocol client that can send any header / query
//!   and reads `hello <peer> new|resumed <node> <user>`;
//! * [`hook`]: a small HTTP/1.1 server standing in for the `--auth-hook`
//!   backend, recording every request.
//!
//! Every read has a deadline; every process and thread ends with the test.

#![allow(dead_code)]

pub mod client;
pub mod hook;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::common::{wait_until, Gateway, Scrape};

/// The HS256 secret of the tests (40 bytes; written with a trailing newline,
/// which the gateway must ignore).
pub const SECRET: &str = "wsgate-integration-tests-secret-0123456789";
/// `--jwt-issuer` / `--jwt-audience` when a test sets them.
pub const ISSUER: &str = "https://idp.test.example";
pub const AUDIENCE: &str = "wsgate-tests";
/// The publish-API token (the same as `gw::TOKEN`).
pub const PUBLISH_TOKEN: &str = crate::gw::TOKEN;

const RSA_PRIVATE: &[u8] = include_bytes!("../keys/rsa_private.pem");
const EC_PRIVATE: &[u8] = include_bytes!("../keys/ec_private.pem");
/// The public halves, as PEM bytes (also used as a forged HMAC secret).
pub const RSA_PUBLIC: &[u8] = include_bytes!("../keys/rsa_public.pem");
pub const EC_PUBLIC: &[u8] = include_bytes!("../keys/ec_public.pem");
/// Kids of `tests/keys/jwks.json`.
pub const KID_RSA: &str = "test-rsa-1";
pub const KID_EC: &str = "test-ec-1";

/// `tests/keys/<file>`.
pub fn key_path(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(file)
        .display()
        .to_string()
}

// ---------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `{"sub": sub, "exp": now + ttl}`; add claims with `c["iss"] = json!(..)`.
pub fn claims(sub: &str, ttl_secs: i64) -> Value {
    json!({"sub": sub, "exp": now() + ttl_secs})
}

/// [`claims`] with a `wsgate` claim granting `sub` / `pub` patterns.
pub fn claims_with(sub: &str, ttl_secs: i64, subs: &[&str], pubs: &[&str]) -> Value {
    let mut c = claims(sub, ttl_secs);
    c["wsgate"] = json!({"sub": subs, "pub": pubs});
    c
}

fn sign(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).expect("sign a test token")
}

/// HS256 with the tests' [`SECRET`].
pub fn hs256(claims: &Value) -> String {
    hs256_with(SECRET.as_bytes(), claims)
}

/// HS256 with any secret (a wrong one, or a public key's PEM bytes: the
/// algorithm-confusion forgery).
pub fn hs256_with(secret: &[u8], claims: &Value) -> String {
    sign(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
}

/// RS256 with `tests/keys/rsa_private.pem`, with `kid` in the header if given.
pub fn rs256(claims: &Value, kid: Option<&str>) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = kid.map(str::to_string);
    sign(
        &h,
        claims,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("rsa test key"),
    )
}

/// ES256 with `tests/keys/ec_private.pem`, with `kid` in the header if given.
pub fn es256(claims: &Value, kid: Option<&str>) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = kid.map(str::to_string);
    sign(
        &h,
        claims,
        &EncodingKey::from_ec_pem(EC_PRIVATE).expect("ec test key"),
    )
}

/// An unsigned token: `{"alg":"none","typ":"JWT"}.<claims>.` (empty
/// signature).
pub fn alg_none(claims: &Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{h}.{p}.")
}

/// `token` with its payload replaced by `claims` (signature kept): a
/// tampered token.
pub fn tampered(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWT");
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{}.{p}.{}", parts[0], parts[2])
}

/// What of a token must never show up in a log line: the whole token and
/// its payload and signature parts.
pub fn token_secrets(token: &str) -> Vec<String> {
    let mut v = vec![token.to_string()];
    for part in token.split('.').skip(1) {
        if part.len() >= 16 {
            v.push(part.to_string());
        }
    }
    v
}

// ---------------------------------------------------------------------------
// Key files
// ---------------------------------------------------------------------------

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p = std::env::temp_dir().join(format!(
            "wsg-auth-{tag}-{}-{nanos}-{:x}",
            std::process::id(),
            crate::common::rand_u64() as u16
        ));
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        TempDir(p)
    }

    /// Writes `bytes` to `<dir>/<name>`; returns the path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p.display().to_string()
    }

    /// Replaces `<dir>/<name>` atomically (write a sibling, rename over).
    pub fn replace(&self, name: &str, bytes: &[u8]) -> String {
        let tmp = self.0.join(format!(".{name}.new"));
        std::fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        let p = self.0.join(name);
        std::fs::rename(&tmp, &p).unwrap_or_else(|e| panic!("rename to {}: {e}", p.display()));
        p.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Key material for a test: the secret file (in a temp dir) and the paths
/// of the committed test keys.
pub struct Keys {
    pub dir: TempDir,
    /// `--jwt-secret-file`: [`SECRET`] and a trailing newline.
    pub secret_file: String,
    pub rsa_public: String,
    pub ec_public: String,
    pub jwks: String,
}

impl Keys {
    pub fn new() -> Keys {
        let dir = TempDir::new("keys");
        let secret_file = dir.write("secret", format!("{SECRET}\n").as_bytes());
        Keys {
            dir,
            secret_file,
            rsa_public: key_path("rsa_public.pem"),
            ec_public: key_path("ec_public.pem"),
            jwks: key_path("jwks.json"),
        }
    }
}

/// The committed JWKS document with only the keys whose kid is in `kids`.
pub fn jwks_with(kids: &[&str]) -> String {
    let all: Value = serde_json::from_str(include_str!("../keys/jwks.json")).expect("jwks.json");
    let keys: Vec<Value> = all["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .filter(|k| kids.contains(&k["kid"].as_str().unwrap_or("")))
        .cloned()
        .collect();
    assert_eq!(keys.len(), kids.len(), "unknown kid among {kids:?}");
    serde_json::to_string_pretty(&json!({ "keys": keys })).unwrap()
}

// ---------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------

/// Arguments of an auth test gateway: plain-HTTP cookie, node id
/// [`crate::gw::NODE`], the publish token, then `auth` (the auth flags and
/// anything else).
pub fn gw_args(auth: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = crate::gw::args(&["--publish-token", PUBLISH_TOKEN])
        .into_iter()
        .map(str::to_string)
        .collect();
    v.extend(auth.iter().map(|s| s.to_string()));
    v
}

/// `&[String]` as `Vec<&str>` (for `for_each_driver` and `Gateway::start`).
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Every `event=rejected` log line as `(status, reason)`.
pub fn rejections(gw: &Gateway) -> Vec<(u16, String)> {
    gw.logs()
        .iter()
        .filter(|l| l.split_whitespace().any(|t| t == "event=rejected"))
        .map(|l| {
            let status = log_field(l, "status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let reason = log_field(l, "reason").unwrap_or("").to_string();
            (status, reason)
        })
        .collect()
}

/// The `event=rejected status=<status>` reasons, sorted.
pub fn rejection_reasons(gw: &Gateway, status: u16) -> Vec<String> {
    let mut v: Vec<String> = rejections(gw)
        .into_iter()
        .filter(|(s, _)| *s == status)
        .map(|(_, r)| r)
        .collect();
    v.sort();
    v
}

/// Waits (up to 5 s) until `n` refusals with `status` were logged; returns
/// their reasons, sorted.
pub fn wait_rejections(gw: &Gateway, status: u16, n: usize) -> Vec<String> {
    wait_until(Duration::from_secs(5), || {
        rejection_reasons(gw, status).len() >= n
    });
    rejection_reasons(gw, status)
}

/// The value of `key=` in a log line (quotes stripped).
pub fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|tok| tok.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .map(|v| v.trim_matches('"'))
}

/// Log lines with `event=<event>`.
pub fn events(gw: &Gateway, event: &str) -> Vec<String> {
    let key = format!("event={event}");
    gw.logs()
        .into_iter()
        .filter(|l| l.split_whitespace().any(|t| t == key))
        .collect()
}

/// No log line of `gw` contains any of `secrets` (tokens and their parts,
/// session ids, hook bodies), nor anything that looks like a JWT (`eyJ`,
/// base64url of `{"`), nor a `token` query parameter, nor a hook body's
/// JSON keys.
pub fn assert_no_secrets(gw: &Gateway, secrets: &[String]) {
    let logs = gw.logs();
    assert!(!logs.is_empty(), "no log lines captured");
    for line in &logs {
        for s in secrets {
            assert!(
                s.len() < 8 || !line.contains(s.as_str()),
                "[{}] a secret ({}…) appears in a log line: {line:?}",
                gw.driver.name(),
                &s[..8]
            );
        }
        for needle in ["eyJ", "?token=", "&token=", "\"session\":", "\"headers\":"] {
            assert!(
                !line.contains(needle),
                "[{}] a log line carries {needle:?}: {line:?}",
                gw.driver.name()
            );
        }
    }
}

/// `wsgate_upgrades_total{result="<status>"}`.
pub fn upgrades(s: &Scrape, result: &str) -> f64 {
    s.val(&format!("wsgate_upgrades_total{{result=\"{result}\"}}"))
}

/// Scrapes until `series` (an exact series, or a family's sum when it has
/// no `{`) equals `want` (up to 5 s); returns the last value.
pub fn wait_series(gw: &Gateway, series: &str, want: f64) -> f64 {
    let get = |s: &Scrape| {
        if series.contains('{') {
            s.val(series)
        } else {
            s.sum(series)
        }
    };
    let s = gw.scrape_until(Duration::from_secs(5), |s| get(s) == want);
    get(&s)
}
