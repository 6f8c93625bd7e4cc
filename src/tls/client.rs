//! The https side of our own clients: `status` and `send` pinned to the configured certificate, and the
//! webhooks against the system's CA store.

use std::path::Path;
use std::sync::Arc;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::{TlsError, certificates, provider};

/// The client side for `status` and `send` on the box: trust exactly the certificate the config names,
/// whatever name it was issued for, since they reach the daemon by its listen address (often 127.0.0.1,
/// which a certificate for the box's host name does not cover).
pub fn pinned_client_config(cert: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let leaf = certificates(cert)?.swap_remove(0);
    let provider = provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Pair(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { leaf, provider }))
        .with_no_client_auth();
    Ok(config)
}

/// `connector` with TLS for https URLs (http ones pass through): `pinned` when given, else the system's CA
/// store, so an agency's internal CA installed on the box is trusted like any other. With no readable CA
/// store, https calls fail with a logged error; plain http keeps working.
pub fn https_connector(
    mut connector: HttpConnector,
    pinned: Option<rustls::ClientConfig>,
) -> HttpsConnector<HttpConnector> {
    // The TLS layer takes https URLs; the TCP connector underneath must not refuse them.
    connector.enforce_http(false);
    let builder = match pinned {
        Some(config) => HttpsConnectorBuilder::new().with_tls_config(config),
        None => match HttpsConnectorBuilder::new().with_native_roots() {
            Ok(builder) => builder,
            Err(error) => {
                tracing::warn!(%error, "no system CA certificates: https calls will fail until some are installed");
                HttpsConnectorBuilder::new().with_tls_config(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
            }
        },
    };
    builder
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector)
}

/// Accepts the one certificate it holds and checks the handshake's signatures as usual.
#[derive(Debug)]
struct Pinned {
    leaf: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the daemon's certificate is not the one in the config's tls_cert".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
