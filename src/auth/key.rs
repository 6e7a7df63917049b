//! A verification key and the one algorithm it is for: `Alg`, `Key`, and
//! reading a PEM public key (the algorithm follows the key).

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};

/// The algorithms wsgate accepts; each key has exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    /// HMAC-SHA256 with a shared secret.
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, RSA keys of 2048–8192 bits.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

impl Alg {
    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::RS256 => "RS256",
            Alg::ES256 => "ES256",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Alg> {
        match name {
            "HS256" => Some(Alg::HS256),
            "RS256" => Some(Alg::RS256),
            "ES256" => Some(Alg::ES256),
            _ => None,
        }
    }

    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            Alg::HS256 => Algorithm::HS256,
            Alg::RS256 => Algorithm::RS256,
            Alg::ES256 => Algorithm::ES256,
        }
    }
}

/// One verification key and the one algorithm it is used with.
#[derive(Clone)]
pub(crate) struct Key {
    pub alg: Alg,
    pub kid: Option<Box<str>>,
    pub key: DecodingKey,
}

/// The DER of the prime256v1 (P-256) curve OID, 1.2.840.10045.3.1.7.
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// A PEM public key and the algorithm it is for.
pub(crate) fn key_from_pem(pem: &[u8]) -> Result<(Alg, DecodingKey), &'static str> {
    let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file")?;
    if text.contains("PRIVATE KEY-----") {
        return Err("this is a private key; give the public key (`openssl pkey -in KEY -pubout`)");
    }
    if text.contains("BEGIN CERTIFICATE") {
        return Err(
            "this is a certificate; give its public key (`openssl x509 -in CERT -pubkey -noout`)",
        );
    }
    match text.matches("-----BEGIN ").count() {
        0 => return Err("not a PEM file"),
        1 => {}
        _ => return Err("more than one PEM block; give one public key"),
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((Alg::RS256, key));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return if pem_der(text)
            .is_some_and(|der| der.windows(P256_OID.len()).any(|w| w == P256_OID))
        {
            Ok((Alg::ES256, key))
        } else {
            Err("an EC key on a curve other than P-256 (only ES256 is supported)")
        };
    }
    Err("neither an RSA nor an EC P-256 public key in PEM")
}

/// The DER inside one PEM block.
fn pem_der(text: &str) -> Option<Vec<u8>> {
    let body: String = text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN "))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END "))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}
