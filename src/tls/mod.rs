//! TLS for the HTTP API: the certificate and key named by `[server] tls_cert` and `tls_key`, the serving
//! side (a listener that completes handshakes away from the accept loop, and the certificate a reload
//! replaces), and the https clients of the CLI and the webhooks.
//!
//! A CMS on another host sends debtors' numbers and texts, and its bearer token, across the agency's
//! network; serving TLS directly spares the admin a proxy in front for that. rustls with ring is already
//! what the webhooks use, so this adds no crypto library.

mod client;
mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

pub use client::{https_connector, pinned_client_config};
pub use server::{ServedCertificate, TlsListener, server_config};

/// `[server] tls_cert` and `tls_key`: both or neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the certificate or key cannot be used, in terms an admin can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}", path.display())]
    NoKey { path: PathBuf, reason: String },
    #[error(
        "{} is not the private key of the certificate in {}: give the key the certificate was issued for \
         (or the certificate issued for this key)",
        key.display(),
        cert.display()
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("the certificate and the key do not make a usable pair: {0}")]
    Pair(String),
}

/// ring, the provider the webhooks' TLS already uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The certificates of a PEM file, in order.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::NoCertificate {
            path: path.to_owned(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The certificate chain and key of `files`, checked against each other (a key that does not match the
/// certificate is refused here, not at the first client's handshake).
pub fn certified_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let certs = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|e| TlsError::NoKey {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        },
        other => TlsError::Pair(other.to_string()),
    })
}
