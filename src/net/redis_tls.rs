//! TLS to Redis (`rediss://`, feature `redis-tls`): the client
//! configuration built once at start from the flags, and the per-connection
//! session it makes. The bytes are moved by [`super::redis_stream`].
//!
//! Certificates are verified against Mozilla's roots (compiled in) or, with
//! `--redis-ca-file`, against that file's CAs only; the name checked is the
//! URL's host or `--redis-tls-server-name`. `--redis-tls-insecure` accepts
//! any certificate (signatures are still checked, so the session is
//! encrypted but not authenticated) and is logged as a warning at start.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::config::Config;
use crate::sys::log::{self, Level};

/// The TLS settings of every Redis connection of the process.
#[derive(Clone)]
pub struct TlsSetup {
    config: Arc<ClientConfig>,
    /// `--redis-tls-server-name`: the name to verify instead of the host.
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSetup")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsSetup {
    /// Builds the settings when `--redis` is `rediss://` (`None` otherwise);
    /// an unreadable or empty CA file is an error.
    pub fn from_config(config: &Config) -> Result<Option<TlsSetup>, String> {
        if !config.redis_target().is_some_and(|t| t.tls) {
            return Ok(None);
        }
        // ring, already in the tree (jsonwebtoken): rustls 0.23.48 deprecates
        // it only for its lack of post-quantum key exchange; aws-lc-rs would
        // add a C/cmake build.
        #[allow(deprecated)]
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("redis tls: {e}"))?;
        let client = if config.redis_tls_insecure {
            log::emit(
                Level::Warn,
                "redis_tls_insecure",
                &[(
                    "warning",
                    &"the Redis server's certificate is NOT verified (--redis-tls-insecure): anyone on the path can impersonate it",
                )],
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            let roots = match &config.redis_ca_file {
                Some(path) => roots_from_file(path)?,
                None => RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        let server_name = match &config.redis_tls_server_name {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                format!("--redis-tls-server-name: {name:?} is not a DNS name or an IP address")
            })?),
            None => None,
        };
        Ok(Some(TlsSetup {
            config: Arc::new(client),
            server_name,
        }))
    }

    /// A new client session for a server reached as `host`.
    pub fn connect(&self, host: &str) -> std::io::Result<ClientConnection> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => ServerName::try_from(host.to_string()).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("tls: {host:?} is not a DNS name or an IP address"),
                )
            })?,
        };
        ClientConnection::new(self.config.clone(), name)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("tls: {e}")))
    }
}

/// The CAs of a PEM file (one or more certificates).
fn roots_from_file(path: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("--redis-ca-file {path}: {e}"))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("--redis-ca-file {path}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("--redis-ca-file {path}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("--redis-ca-file {path}: no certificate in it"));
    }
    Ok(roots)
}

/// `--redis-tls-insecure`: any certificate, any name; the handshake's
/// signatures are still verified.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
