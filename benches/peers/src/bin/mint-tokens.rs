//! Mints the tokens of `benches/auth.sh` ahead of the measurement, with the
//! same key files the gateway is started with (the `tests/keys/` pairs are
//! test-only keys).
//!
//! `mint-tokens --alg HS256|RS256|ES256 --key FILE --count N [--ttl SECS]`
//! prints N lines `<sub> <jwt>`: every token has its own `sub`, a 20-byte
//! user id (`user-000000000000042`), and `exp` = now + TTL (default one day).
//! For HS256, FILE holds the shared secret (a trailing newline is ignored,
//! as the gateway does); for RS256 / ES256 it is the PEM private key.

#[path = "../common.rs"]
#[allow(dead_code)]
mod common;

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// `user-` and 15 digits: 20 bytes.
fn user_id(i: usize) -> String {
    format!("user-{i:015}")
}

fn main() {
    let mut alg = None;
    let mut key = None;
    let mut count: usize = 1000;
    let mut ttl: u64 = 86_400;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| common::die(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--alg" => alg = Some(val()),
            "--key" => key = Some(val()),
            "--count" => count = val().parse().unwrap_or_else(|_| common::die("bad --count")),
            "--ttl" => ttl = val().parse().unwrap_or_else(|_| common::die("bad --ttl")),
            _ => common::die(&format!(
                "unexpected argument {a:?}\nusage: mint-tokens --alg HS256|RS256|ES256 --key FILE --count N [--ttl SECS]"
            )),
        }
    }
    let key_path = key.unwrap_or_else(|| common::die("--key FILE is required"));
    let bytes =
        std::fs::read(&key_path).unwrap_or_else(|e| common::die(&format!("{key_path}: {e}")));
    let (alg, key) = match alg.as_deref() {
        Some("HS256") => {
            let mut secret = bytes.as_slice();
            if let Some(s) = secret.strip_suffix(b"\n") {
                secret = s.strip_suffix(b"\r").unwrap_or(s);
            }
            (Algorithm::HS256, EncodingKey::from_secret(secret))
        }
        Some("RS256") => (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&bytes)
                .unwrap_or_else(|e| common::die(&format!("{key_path}: {e}"))),
        ),
        Some("ES256") => (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&bytes)
                .unwrap_or_else(|e| common::die(&format!("{key_path}: {e}"))),
        ),
        _ => common::die("--alg HS256, RS256 or ES256 is required"),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = Header::new(alg);
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    for i in 0..count {
        let sub = user_id(i);
        let claims = serde_json::json!({ "sub": sub, "exp": now + ttl, "iat": now });
        let jwt = jsonwebtoken::encode(&header, &claims, &key)
            .unwrap_or_else(|e| common::die(&format!("sign: {e}")));
        writeln!(out, "{sub} {jwt}").unwrap_or_else(|e| common::die(&format!("stdout: {e}")));
    }
    out.flush()
        .unwrap_or_else(|e| common::die(&format!("stdout: {e}")));
}
