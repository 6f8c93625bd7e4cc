//! The HTTP API (axum): routes, authentication, errors, metrics and the OpenAPI document.
//!
//! # Layout
//! - [`routes`]: the route table (method, path, access, docs, handler); the router and `/openapi.json` are
//!   both built from it, so the document cannot drift from what is served.
//! - [`handlers`]: one thin function per route.
//! - [`backend`]: the [`Backend`] trait (what routes need from the daemon) and the JSON shapes of the HTTP
//!   contract.
//! - [`gateway`]: [`Backend`] over the store, the dispatcher and the modem workers.
//! - [`validate`]: the `POST /v1/messages` request, field by field.
//! - `waiting`: why a queued message is not moving, worked out when it is read.
//! - [`extract`]: body/query extractors whose rejections are [`ApiError`]s.
//! - `strict_json`: JSON bodies read with repeated keys refused.
//! - [`error`]: [`ApiError`], the one error type at the edge.
//! - [`auth`]: bearer tokens, scopes, per-key rates.
//! - [`metrics`]: the Prometheus registry behind `/metrics`.
//! - [`openapi`]: the document served at `/openapi.json`.

pub mod auth;
pub mod backend;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod handlers;
pub mod metrics;
pub mod openapi;
pub mod routes;
mod strict_json;
pub mod validate;
mod waiting;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use jiff::Timestamp;

pub use auth::{Access, Auth};
pub use backend::Backend;
pub use error::ApiError;
pub use metrics::Metrics;

/// Default largest request body (413 above it): a batch of 1,000 sends is 70 KB (short texts) to 300 KB.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The clock validation uses for "in the future" checks; injected so tests can fix "now".
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Everything the routes need, cloned per request (all fields are shared handles).
#[derive(Clone)]
pub struct AppState {
    /// The store, dispatcher and workers behind the API.
    pub backend: Arc<dyn Backend>,
    /// API keys, scopes and per-key limiters.
    pub auth: Arc<Auth>,
    /// Rendered by `/metrics`; the daemon updates it.
    pub metrics: Arc<Metrics>,
    /// `[server] default_region`: how to read numbers written without `+`.
    pub default_region: Option<crate::msisdn::Region>,
    /// `[pdu] smart_encoding`: the default of a send's `smart`.
    pub smart_default: bool,
    /// `[server] body_limit`: larger bodies are refused with 413.
    pub body_limit: usize,
    pub clock: Clock,
}

impl AppState {
    pub fn new(backend: Arc<dyn Backend>, auth: Arc<Auth>, metrics: Arc<Metrics>) -> AppState {
        AppState {
            backend,
            auth,
            metrics,
            default_region: None,
            smart_default: false,
            body_limit: BODY_LIMIT,
            clock: Arc::new(Timestamp::now),
        }
    }

    /// The state for a loaded configuration: keys, default region, smart encoding and body limit from it.
    pub fn from_config(
        config: &crate::config::Config,
        backend: Arc<dyn Backend>,
        metrics: Arc<Metrics>,
    ) -> AppState {
        AppState {
            default_region: Some(config.server.default_region),
            smart_default: config.pdu.smart_encoding,
            body_limit: config.server.body_limit.get(),
            ..AppState::new(backend, Arc::new(Auth::new(&config.api_keys)), metrics)
        }
    }

    fn validator(&self) -> validate::Validator {
        validate::Validator {
            now: (self.clock)(),
            default_region: self.default_region,
            smart_default: self.smart_default,
        }
    }
}

/// The whole API as a router, ready for `axum::serve`.
pub fn router(state: AppState) -> Router {
    let body_limit = state.body_limit;
    let mut router = Router::new();
    for route in routes::table() {
        router = router.route(route.spec.path, route.into_method_router(&state.auth));
    }
    let metrics = state.metrics.clone();
    router
        .fallback(|| async { ApiError::NotFound("route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_response_with_state(
            metrics,
            count_response,
        ))
        .with_state(state)
}

/// Counts every answer by its status for `/metrics`: a CMS getting 503s or 429s shows there.
async fn count_response(
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
    response: axum::response::Response,
) -> axum::response::Response {
    metrics.count_response(response.status().as_u16());
    response
}
