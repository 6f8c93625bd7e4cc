//! Serving the API over HTTP/1.1 with the limits a box on a network needs: a client that sends its headers
//! slowly, or holds a keep-alive connection open saying nothing, is cut off; one that never finishes its
//! request body gets 408; and a stop waits a bounded time for requests in flight, so one stalled client
//! cannot keep the daemon (and a package upgrade) from stopping.

use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The server's time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest wait for a request's headers, counted from when the connection is ready for one: it also
    /// closes a keep-alive connection idle that long (hyper's own default, which `axum::serve` leaves
    /// off).
    pub headers: Duration,
    /// Longest a request may take from its headers to its answer: bodies sent a byte at a time end here.
    /// The slowest real request, a 1,000-message batch on a busy store, takes well under a second.
    pub request: Duration,
    /// How long a stop waits for requests in flight before it closes their connections.
    pub stop_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            headers: Duration::from_secs(30),
            request: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` until `stop`, then lets requests in flight finish for up to
/// `limits.stop_grace`.
pub fn serve<L>(
    mut listener: L,
    app: axum::Router,
    limits: HttpLimits,
    stop: CancellationToken,
) -> JoinHandle<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let app = app.layer(axum::middleware::from_fn(move |request, next| {
        within(limits.request, request, next)
    }));
    tokio::spawn(async move {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.headers);
        let graceful = GracefulShutdown::new();
        loop {
            let (io, peer) = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stop.cancelled() => break,
            };
            let service = TowerToHyperService::new(app.clone());
            let connection = graceful.watch(http.serve_connection(TokioIo::new(io), service));
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    debug!(?peer, %error, "connection ended");
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(limits.stop_grace, graceful.shutdown())
            .await
            .is_err()
        {
            warn!(
                grace = ?limits.stop_grace,
                "requests still in flight at the stop were cut off"
            );
        }
    })
}

/// 408 for a request not answered within `limit` (in practice: a body that does not arrive). A send
/// whose write had begun is still committed and dispatched: the store's writes do not depend on the
/// request that asked for them.
async fn within(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => crate::api::ApiError::Timeout(limit).into_response(),
    }
}
