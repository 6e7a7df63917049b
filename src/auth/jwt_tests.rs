//! Tests of token verification: tokens signed here with the test-only keys
//! of `tests/keys/` (and an HS256 test secret).

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
