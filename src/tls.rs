//! TLS for the HTTP API: the certificate and key named by `[server] tls_cert` and `tls_key`, a listener
//! that completes handshakes away from the accept loop, and the client configuration `status` and `send`
//! use to reach a daemon that serves TLS.
//!
//! A CMS on another host sends debtors' numbers and texts, and its bearer token, across the agency's
//! network; serving TLS directly spares the admin a proxy in front for that. rustls with ring is already
//! what the webhooks use, so this adds no crypto library.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take over its handshake before the connection is dropped: a client that opens
/// connections and says nothing must not hold file descriptors for ever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes completed but not yet taken by the HTTP server; beyond this, handshakes wait their turn.
const READY_CONNECTIONS: usize = 64;

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
    #[error("the certificate and the key do not make a usable pair: {0}")]
    Pair(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file, in order.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
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
    let pem = std::fs::read(&files.key).map_err(|e| TlsError::Read {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::NoKey {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| TlsError::Pair(e.to_string()))
}

/// The certificate the API presents, replaceable while it serves: a renewed certificate is read on
/// SIGHUP, so renewing one needs no restart.
#[derive(Debug)]
pub struct ServedCertificate(RwLock<Arc<CertifiedKey>>);

impl ServedCertificate {
    /// Read `files` again and present them from the next handshake on; on an error the current ones stay.
    pub fn reload(&self, files: &TlsFiles) -> Result<(), TlsError> {
        let key = Arc::new(certified_key(files)?);
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = key;
        Ok(())
    }
}

impl ResolvesServerCert for ServedCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// The server side: TLS 1.2 and 1.3 with the certificate of `files`, and the handle that replaces it.
pub fn server_config(
    files: &TlsFiles,
) -> Result<(Arc<rustls::ServerConfig>, Arc<ServedCertificate>), TlsError> {
    let served = Arc::new(ServedCertificate(RwLock::new(Arc::new(certified_key(
        files,
    )?))));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Pair(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(served.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), served))
}

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

/// A listener for `axum::serve` that hands over connections whose TLS handshake is done. Each handshake
/// runs in its own task, under a 10-second limit, so a slow or silent client holds up no one else.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    failures: Arc<AtomicU64>,
}

impl TlsListener {
    /// Starts accepting on `tcp`; the accepting stops when the listener is dropped.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_CONNECTIONS);
        let failures = Arc::new(AtomicU64::new(0));
        tokio::spawn(accept(tcp, TlsAcceptor::from(config), tx, failures.clone()));
        Ok(TlsListener {
            ready,
            local,
            failures,
        })
    }

    /// Handshakes that failed or timed out so far: clients that do not trust the certificate, or speak
    /// plain HTTP to the port, show here before anyone reads a debug log.
    pub fn failures(&self) -> Arc<AtomicU64> {
        self.failures.clone()
    }
}

async fn accept(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    failures: Arc<AtomicU64>,
) {
    loop {
        let accepted = tokio::select! {
            _ = ready.closed() => return,
            accepted = tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait for some to be released, as axum does.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, ready, failures) = (acceptor.clone(), ready.clone(), failures.clone());
        tokio::spawn(async move {
            let handshake = acceptor.accept(stream).into_fallible();
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Err((error, stream))) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    // Counted before the connection closes, so a client that saw it close reads the
                    // count with its failure in it.
                    failures.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ended (it only does when this listener is dropped): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
