//! A JWKS file (RFC 7517), re-read when it changes so that keys rotate
//! without a restart (how Cognito, Auth0 and Keycloak publish keys; the
//! operator fetches them into the file).
//!
//! Used: `kty: "RSA"` keys (`n`, `e`; RS256; 2048 bits or more) and
//! `kty: "EC"` keys with `crv: "P-256"` (`x`, `y`; ES256), with `use`
//! absent or `sig`, and `alg` absent or equal to the key type's algorithm.
//! Everything else (encryption keys, `oct` secrets, other curves and
//! algorithms) is skipped and counted. Malformed keys, duplicate `kid`s or
//! no usable key make the whole file invalid.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use super::key::{Alg, Key};
use super::KeyError;

/// base64url, padding tolerated (key material, not tokens).
const B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What [`crate::auth::Verifier::reload_if_changed`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reload {
    /// The file looks the same (modification time, size, inode); or not a
    /// JWKS verifier.
    Unchanged,
    /// New keys in force.
    Reloaded { keys: usize, skipped: usize },
    /// The file changed but cannot be used; the old keys stay in force.
    /// Reported once per change of the file.
    KeptOld(KeyError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    mtime: i64,
    mtime_nsec: i64,
    size: u64,
    ino: u64,
    dev: u64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            size: m.size(),
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct JwksFile {
    path: PathBuf,
    stamp: Option<Stamp>,
    keys: Vec<Key>,
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

impl JwksFile {
    pub(crate) fn load(path: &Path) -> Result<JwksFile, KeyError> {
        let mut f = JwksFile {
            path: path.to_path_buf(),
            stamp: None,
            keys: Vec::new(),
        };
        match f.read()? {
            (stamp, Ok((keys, _))) => {
                f.stamp = Some(stamp);
                f.keys = keys;
                Ok(f)
            }
            (_, Err(e)) => Err(e),
        }
    }

    /// Stats the file (before reading it: a change during the read shows
    /// at the next call), then reads and parses it.
    #[allow(clippy::type_complexity)]
    fn read(&self) -> Result<(Stamp, Result<(Vec<Key>, usize), KeyError>), KeyError> {
        let what = |e: String| KeyError(format!("--jwt-jwks-file {}: {e}", self.path.display()));
        let meta = std::fs::metadata(&self.path).map_err(|e| what(e.to_string()))?;
        let stamp = Stamp::of(&meta);
        let parsed = std::fs::read(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| parse(&bytes))
            .map_err(what);
        Ok((stamp, parsed))
    }

    pub(crate) fn reload_if_changed(&mut self) -> Reload {
        let (stamp, parsed) = match std::fs::metadata(&self.path) {
            Ok(m) if Some(Stamp::of(&m)) == self.stamp => return Reload::Unchanged,
            _ => match self.read() {
                Ok(r) => r,
                // Gone or unreadable: keep the keys, say so once.
                Err(e) => {
                    if self.stamp.take().is_none() {
                        return Reload::Unchanged;
                    }
                    return Reload::KeptOld(e);
                }
            },
        };
        if Some(stamp) == self.stamp {
            return Reload::Unchanged;
        }
        self.stamp = Some(stamp);
        match parsed {
            Ok((keys, skipped)) => {
                self.keys = keys;
                Reload::Reloaded {
                    keys: self.keys.len(),
                    skipped,
                }
            }
            Err(e) => Reload::KeptOld(e),
        }
    }

    pub(crate) fn path(&self) -> &PathBuf {
        &self.path
    }

    pub(crate) fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The key for a token's `kid`; without a `kid`, the only key if there
    /// is exactly one.
    pub(crate) fn find(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }
}

/// The usable keys of a JWKS document and how many were skipped.
pub(crate) fn parse(json: &[u8]) -> Result<(Vec<Key>, usize), String> {
    let doc: Document =
        serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys: Vec<Key> = Vec::new();
    let mut skipped = 0;
    for (i, jwk) in doc.keys.iter().enumerate() {
        let name = match &jwk.kid {
            Some(kid) => format!("key {i} (kid {kid:?})"),
            None => format!("key {i}"),
        };
        match key(jwk).map_err(|e| format!("{name}: {e}"))? {
            Some(k) => {
                if keys.iter().any(|o| o.kid == k.kid) {
                    return Err(match &k.kid {
                        Some(kid) => format!("two keys with kid {kid:?}"),
                        None => "two keys without a kid".to_string(),
                    });
                }
                keys.push(k);
            }
            None => skipped += 1,
        }
    }
    if keys.is_empty() {
        return Err(format!(
            "no usable key ({skipped} skipped; wanted RSA 2048+ bits for RS256 or EC P-256 for ES256, with use \"sig\")"
        ));
    }
    Ok((keys, skipped))
}

/// `Ok(None)`: a key of a kind wsgate does not use.
fn key(jwk: &Jwk) -> Result<Option<Key>, String> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let alg = match jwk.kty.as_str() {
        "RSA" => Alg::RS256,
        "EC" if jwk.crv.as_deref() == Some("P-256") => Alg::ES256,
        _ => return Ok(None),
    };
    if jwk.alg.as_deref().is_some_and(|a| a != alg.name()) {
        return Ok(None);
    }
    let field = |v: &Option<String>, f: &str| -> Result<Vec<u8>, String> {
        let v = v.as_deref().ok_or_else(|| format!("no `{f}`"))?;
        B64.decode(v).map_err(|_| format!("`{f}` is not base64url"))
    };
    let key = match alg {
        Alg::RS256 => {
            let n = field(&jwk.n, "n")?;
            let e = field(&jwk.e, "e")?;
            let bits = n.iter().skip_while(|&&b| b == 0).count() * 8;
            if bits < 2048 {
                // ring verifies 2048–8192 bits; a smaller key would refuse
                // every token.
                return Ok(None);
            }
            DecodingKey::from_rsa_raw_components(&n, &e)
        }
        _ => {
            let x = field(&jwk.x, "x")?;
            let y = field(&jwk.y, "y")?;
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 `x` and `y` are 32 bytes each".into());
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            DecodingKey::from_ec_der(&point)
        }
    };
    Ok(Some(Key {
        alg,
        kid: jwk.kid.as_deref().map(Box::from),
        key,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::jwt::tests::{claims, sign, NOW};
    use super::super::{AuthError, Verifier, VerifyOptions};
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as NO_PAD;
    use serde_json::{json, Value};

    const JWKS: &[u8] = include_bytes!("../../tests/keys/jwks.json");

    fn test_keys() -> (Value, Value) {
        let doc: Value = serde_json::from_slice(JWKS).unwrap();
        (doc["keys"][0].clone(), doc["keys"][1].clone())
    }

    fn with_kid(mut k: Value, kid: &str) -> Value {
        k["kid"] = json!(kid);
        k
    }

    struct TempFile(PathBuf);
    impl TempFile {
        fn new(name: &str) -> TempFile {
            let p = std::env::temp_dir().join(format!(
                "wsgate-auth-{}-{name}-{:?}.json",
                std::process::id(),
                std::thread::current().id()
            ));
            TempFile(p)
        }
        fn write(&self, v: &[u8]) {
            // Atomic replace, as an operator should: a new inode each time.
            let tmp = self.0.with_extension("tmp");
            std::fs::write(&tmp, v).unwrap();
            std::fs::rename(&tmp, &self.0).unwrap();
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn doc(keys: &[&Value]) -> Vec<u8> {
        serde_json::to_vec(&json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn kid_picks_the_key() {
        let f = TempFile::new("kid");
        f.write(JWKS);
        let v = Verifier::jwks_file(&f.0, VerifyOptions::default()).unwrap();
        assert!(v.describe().ends_with("(2 keys)"), "{}", v.describe());
        let rs = sign(Alg::RS256, Some("test-rsa-1"), &claims());
        let es = sign(Alg::ES256, Some("test-ec-1"), &claims());
        assert_eq!(&*v.verify(rs.as_bytes(), NOW).unwrap().user, "alice");
        assert!(v.verify(es.as_bytes(), NOW).is_ok());
        let e = |t: &str| v.verify(t.as_bytes(), NOW).unwrap_err();
        assert_eq!(
            e(&sign(Alg::RS256, Some("nope"), &claims())),
            AuthError::UnknownKey
        );
        // No kid and two keys: which one?
        assert_eq!(e(&sign(Alg::RS256, None, &claims())), AuthError::UnknownKey);
        // The kid of the RSA key with an EC signature: the key's alg rules.
        assert_eq!(
            e(&sign(Alg::ES256, Some("test-rsa-1"), &claims())),
            AuthError::Alg
        );
        assert_eq!(
            e(&sign(Alg::RS256, Some("test-ec-1"), &claims())),
            AuthError::Alg
        );
        assert_eq!(
            e(&sign(Alg::HS256, Some("test-rsa-1"), &claims())),
            AuthError::Alg
        );
        // HS256 with the RSA public key's PEM as secret.
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some("test-rsa-1".into());
        let forged = jsonwebtoken::encode(
            &h,
            &claims(),
            &jsonwebtoken::EncodingKey::from_secret(super::super::jwt::tests::RSA_PUBLIC),
        )
        .unwrap();
        assert_eq!(e(&forged), AuthError::Alg);
        // Unknown alg before the key lookup.
        let none = format!(
            "{}.{}.",
            NO_PAD.encode(br#"{"alg":"none","kid":"test-rsa-1"}"#),
            NO_PAD.encode(serde_json::to_vec(&claims()).unwrap())
        );
        assert_eq!(e(&none), AuthError::Alg);
    }

    #[test]
    fn single_key_without_kid() {
        let (rsa, _) = test_keys();
        let f = TempFile::new("single");
        f.write(&doc(&[&rsa]));
        let v = Verifier::jwks_file(&f.0, VerifyOptions::default()).unwrap();
        assert!(v
            .verify(sign(Alg::RS256, None, &claims()).as_bytes(), NOW)
            .is_ok());
    }

    #[test]
    fn reload_rotates_keys_and_keeps_them_on_a_bad_file() {
        let (rsa, ec) = test_keys();
        let f = TempFile::new("reload");
        f.write(&doc(&[&with_kid(rsa, "old")]));
        let mut v = Verifier::jwks_file(&f.0, VerifyOptions::default()).unwrap();
        let old = sign(Alg::RS256, Some("old"), &claims());
        let new = sign(Alg::ES256, Some("new"), &claims());
        assert!(v.verify(old.as_bytes(), NOW).is_ok());
        assert_eq!(
            v.verify(new.as_bytes(), NOW).unwrap_err(),
            AuthError::UnknownKey
        );
        assert_eq!(v.reload_if_changed(), Reload::Unchanged);

        f.write(&doc(&[&with_kid(ec, "new")]));
        assert_eq!(
            v.reload_if_changed(),
            Reload::Reloaded {
                keys: 1,
                skipped: 0
            }
        );
        assert_eq!(
            v.verify(old.as_bytes(), NOW).unwrap_err(),
            AuthError::UnknownKey
        );
        assert!(v.verify(new.as_bytes(), NOW).is_ok());
        assert_eq!(v.reload_if_changed(), Reload::Unchanged);

        // An invalid rewrite keeps the keys, reported once.
        f.write(b"{\"keys\": [");
        match v.reload_if_changed() {
            Reload::KeptOld(e) => assert!(e.0.contains("not a JWKS document"), "{e}"),
            r => panic!("{r:?}"),
        }
        assert_eq!(v.reload_if_changed(), Reload::Unchanged);
        assert!(v.verify(new.as_bytes(), NOW).is_ok());

        // Removed: keys kept, reported once; back: reloaded.
        std::fs::remove_file(&f.0).unwrap();
        assert!(matches!(v.reload_if_changed(), Reload::KeptOld(_)));
        assert_eq!(v.reload_if_changed(), Reload::Unchanged);
        assert!(v.verify(new.as_bytes(), NOW).is_ok());
        f.write(JWKS);
        assert_eq!(
            v.reload_if_changed(),
            Reload::Reloaded {
                keys: 2,
                skipped: 0
            }
        );
        assert_eq!(
            v.verify(new.as_bytes(), NOW).unwrap_err(),
            AuthError::UnknownKey
        );
        let t = sign(Alg::ES256, Some("test-ec-1"), &claims());
        assert!(v.verify(t.as_bytes(), NOW).is_ok());

        // A rewrite in place (same inode) is seen too.
        let (rsa, _) = test_keys();
        std::fs::write(&f.0, doc(&[&with_kid(rsa, "in-place")])).unwrap();
        assert!(matches!(
            v.reload_if_changed(),
            Reload::Reloaded { keys: 1, .. }
        ));
        let t = sign(Alg::RS256, Some("in-place"), &claims());
        assert!(v.verify(t.as_bytes(), NOW).is_ok());
    }

    #[test]
    fn what_is_skipped_and_what_is_refused() {
        let (rsa, ec) = test_keys();
        let mut enc = with_kid(rsa.clone(), "enc");
        enc["use"] = json!("enc");
        let mut ps = with_kid(rsa.clone(), "ps");
        ps["alg"] = json!("PS256");
        let mut hs_rsa = with_kid(rsa.clone(), "hs");
        hs_rsa["alg"] = json!("HS256");
        let oct = json!({"kty": "oct", "kid": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"});
        let mut p384 = with_kid(ec.clone(), "p384");
        p384["crv"] = json!("P-384");
        let okp = json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "AAAA"});
        let small =
            json!({"kty": "RSA", "kid": "small", "n": B64.encode([0xc5u8; 128]), "e": "AQAB"});
        let (keys, skipped) = parse(&doc(&[
            &rsa, &ec, &enc, &ps, &hs_rsa, &oct, &p384, &okp, &small,
        ]))
        .unwrap();
        assert_eq!((keys.len(), skipped), (2, 7));

        for (bad, want) in [
            (doc(&[&enc]), "no usable key"),
            (b"[]".to_vec(), "not a JWKS"),
            (b"{}".to_vec(), "not a JWKS"),
            (doc(&[&rsa, &rsa]), "two keys with kid \"test-rsa-1\""),
            (doc(&[&json!({"kty": "RSA", "e": "AQAB"})]), "key 0: no `n`"),
            (
                doc(&[&json!({"kty": "RSA", "n": "!!", "e": "AQAB"})]),
                "not base64url",
            ),
            (
                doc(&[&json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"})]),
                "32 bytes",
            ),
            (doc(&[&json!({"kid": "x"})]), "not a JWKS"),
        ] {
            let Err(e) = parse(&bad) else {
                panic!("accepted: {want}")
            };
            assert!(e.contains(want), "{e}");
        }
        let e = Verifier::jwks_file(Path::new("/nonexistent.json"), VerifyOptions::default())
            .unwrap_err();
        assert!(e.0.contains("--jwt-jwks-file /nonexistent.json"), "{e}");
    }
}
