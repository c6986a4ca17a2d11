//! TLS 1.3 setup for both ends (rustls with the ring provider).
//!
//! The server uses a self-signed certificate generated once under its root. Clients do not use
//! a CA: they pin the SHA-256 fingerprint of the server's certificate (see
//! [`crate::client::known_hosts`]), while still checking the handshake signature, so only the
//! holder of the pinned key can complete a handshake.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// A certificate fingerprint: SHA-256 of its DER encoding.
pub type Fingerprint = [u8; 32];

/// Server name the client presents in SNI; the certificate is pinned, not matched by name.
pub const SERVER_NAME: &str = "xfer-server";

/// Errors setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("tls files under {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid certificate or key: {0}")]
    Pem(String),
    #[error("tls configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// SHA-256 fingerprint of a DER certificate.
pub fn fingerprint(cert_der: &[u8]) -> Fingerprint {
    Sha256::digest(cert_der).into()
}

/// Displays a fingerprint as `SHA256:<hex>`.
pub fn format_fingerprint(fp: &Fingerprint) -> String {
    format!("SHA256:{}", hex::encode(fp))
}

/// Parses `SHA256:<hex>`.
pub fn parse_fingerprint(s: &str) -> Option<Fingerprint> {
    let hex_part = s.strip_prefix("SHA256:")?;
    hex::decode(hex_part).ok()?.try_into().ok()
}

/// The server's certificate and key.
pub struct ServerIdentity {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

impl ServerIdentity {
    pub fn fingerprint(&self) -> Fingerprint {
        fingerprint(&self.cert)
    }

    /// Loads `dir/cert.pem` and `dir/key.pem`, generating and saving a self-signed pair first
    /// if either is missing. The key file is created with mode 0600.
    pub fn load_or_create(dir: &Path) -> Result<ServerIdentity, TlsSetupError> {
        let io_err = |source| TlsSetupError::Io { path: dir.display().to_string(), source };
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        if !cert_path.exists() || !key_path.exists() {
            std::fs::create_dir_all(dir).map_err(io_err)?;
            let ck = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string(), "localhost".to_string()])?;
            write_private(&key_path, ck.key_pair.serialize_pem().as_bytes()).map_err(io_err)?;
            std::fs::write(&cert_path, ck.cert.pem()).map_err(io_err)?;
        }
        let cert = CertificateDer::from_pem_file(&cert_path).map_err(|e| TlsSetupError::Pem(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsSetupError::Pem(e.to_string()))?;
        Ok(ServerIdentity { cert, key })
    }

    /// A TLS 1.3-only rustls server configuration.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())?;
        Ok(Arc::new(cfg))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Verifies the server by pinned fingerprint and records what it saw.
///
/// With `expected` set, any other certificate fails the handshake. With `expected` unset
/// (first contact), any certificate is accepted *for the handshake only*; the caller must then
/// read [`PinnedVerifier::seen`] and decide, before sending credentials, whether to trust it.
#[derive(Debug)]
pub struct PinnedVerifier {
    expected: Option<Fingerprint>,
    seen: Mutex<Option<Fingerprint>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedVerifier {
    pub fn new(expected: Option<Fingerprint>) -> PinnedVerifier {
        PinnedVerifier {
            expected,
            seen: Mutex::new(None),
            algorithms: ring::default_provider().signature_verification_algorithms,
        }
    }

    /// Fingerprint of the certificate the server presented, once the handshake has seen it.
    pub fn seen(&self) -> Option<Fingerprint> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(fp);
        match self.expected {
            Some(expected) if expected != fp => {
                Err(rustls::Error::General("server certificate fingerprint changed".into()))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS 1.3-only client configuration using `verifier`.
pub fn client_config(verifier: Arc<PinnedVerifier>) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = ServerIdentity::load_or_create(dir.path()).unwrap();
        let b = ServerIdentity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
    }

    #[test]
    fn can_round_trip_fingerprint_text() {
        let fp = fingerprint(b"x");
        assert_eq!(parse_fingerprint(&format_fingerprint(&fp)), Some(fp));
        assert_eq!(parse_fingerprint("SHA256:zz"), None);
        assert_eq!(parse_fingerprint("MD5:00"), None);
    }
}
