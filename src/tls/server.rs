//! Serving TLS: the certificate a reload replaces, and a listener for `axum::serve` that completes each
//! handshake in its own task.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::{TlsError, TlsFiles, certified_key, provider};

/// How long a client may take over its handshake before the connection is dropped: a client that opens
/// connections and says nothing must not hold file descriptors for ever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes completed but not yet taken by the HTTP server; beyond this, handshakes wait their turn.
const READY_CONNECTIONS: usize = 64;

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
