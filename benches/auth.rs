//! Token verification cost per algorithm (`cargo bench --bench auth`).
//!
//! The tokens are signed here with the test keys of `tests/keys/` (test-only
//! keys); what is measured is `Verifier::verify`: shape, header, signature,
//! claims, as a handshake pays it.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use wsgate::auth::{Verifier, VerifyOptions};

const NOW: u64 = 1_800_000_000;
const SECRET: &[u8] = b"bench-only-secret-0123456789abcdef";

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let claims = serde_json::json!({
        "sub": "user-0123456789abcdef",
        "exp": NOW + 3600,
        "iss": "https://idp.example",
        "aud": "wsgate",
        "wsgate": {"sub": ["room:{user}*"], "pub": ["room:{user}"]},
    });
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

fn verify(c: &mut Criterion) {
    let opts = VerifyOptions {
        issuer: Some("https://idp.example".into()),
        audience: Some("wsgate".into()),
        leeway_secs: 5,
    };
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/");
    let read = |f: &str| std::fs::read(format!("{keys}{f}")).unwrap();
    let cases = [
        (
            "HS256",
            Verifier::hs256(SECRET, opts.clone()).unwrap(),
            token(Algorithm::HS256, &EncodingKey::from_secret(SECRET)),
        ),
        (
            "RS256-2048",
            Verifier::public_key_pem(&read("rsa_public.pem"), opts.clone()).unwrap(),
            token(
                Algorithm::RS256,
                &EncodingKey::from_rsa_pem(&read("rsa_private.pem")).unwrap(),
            ),
        ),
        (
            "ES256",
            Verifier::public_key_pem(&read("ec_public.pem"), opts.clone()).unwrap(),
            token(
                Algorithm::ES256,
                &EncodingKey::from_ec_pem(&read("ec_private.pem")).unwrap(),
            ),
        ),
    ];
    let mut g = c.benchmark_group("auth_verify");
    for (name, verifier, token) in &cases {
        assert!(verifier.verify(token.as_bytes(), NOW).is_ok());
        g.bench_function(*name, |b| {
            b.iter(|| black_box(verifier.verify(black_box(token.as_bytes()), NOW)))
        });
    }
    g.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
