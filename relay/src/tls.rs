//! The relay's TLS identity: a certificate and key from PEM files, or a self-signed one made at
//! start. Clients of a self-signed relay pin the certificate's SHA-256 fingerprint, which is
//! also what the authentication challenge binds to.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest as _, Sha256};

/// A server configuration and the fingerprint of its certificate.
#[derive(Clone)]
pub struct Identity {
    /// For the TLS acceptor.
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate's DER bytes.
    pub cert_sha256: [u8; 32],
    /// The leaf certificate, for clients in tests and for printing.
    pub cert_der: CertificateDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity(sha256 {})", hex::encode(self.cert_sha256))
    }
}

/// Why a TLS identity could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The chain holds no certificate.
    #[error("no certificate")]
    NoCertificate,
    /// A PEM file could not be read or holds no usable item.
    #[error("{path}: {error}")]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        error: rustls::pki_types::pem::Error,
    },
    /// rustls refused the certificate or the key.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// A self-signed certificate could not be made.
    #[error("a self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
}

/// SHA-256 of a certificate, as clients pin it.
pub fn fingerprint(cert: &CertificateDer<'_>) -> [u8; 32] {
    Sha256::digest(cert.as_ref()).into()
}

fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Identity, TlsError> {
    let leaf = certs.first().cloned().ok_or(TlsError::NoCertificate)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Identity { config: Arc::new(config), cert_sha256: fingerprint(&leaf), cert_der: leaf })
}

/// Loads a certificate chain and its private key from PEM files.
pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    fn pem(path: &Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError + '_ {
        move |error| TlsError::Pem { path: path.to_path_buf(), error }
    }
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(pem(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(cert))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
    server_config(certs, key)
}

/// A self-signed certificate and its key as PEM, to keep (the key belongs in a file of mode
/// 0600) and load later with [`from_pem_files`], so the fingerprint that devices pin stays
/// the same across restarts.
pub fn self_signed_pem(names: Vec<String>) -> Result<(String, String), TlsError> {
    let certified = rcgen::generate_simple_self_signed(names)?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

/// Makes a self-signed certificate for `names` (DNS names or IP addresses).
pub fn self_signed(names: Vec<String>) -> Result<Identity, TlsError> {
    let certified = rcgen::generate_simple_self_signed(names)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    server_config(vec![certified.cert.der().clone()], key)
}
