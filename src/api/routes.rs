//! The route table: the single list the router and `/openapi.json` are built from.

use std::sync::Arc;

use axum::http::Method;
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodRouter, delete, get, post};

use super::AppState;
use super::auth::{Access, Auth, Guard, guard};
use super::handlers as h;
use crate::config::Scope;

/// What the OpenAPI document says about a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// `SendRequest`, as JSON or a form.
    Send,
    /// `{"messages": [SendRequest + idempotency_key]}`.
    Batch,
    /// `{"number", "note"}`.
    Optout,
}

/// Documentation of a route, and its access rule.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: Method,
    /// axum's path syntax, which is also OpenAPI's (`/v1/messages/{id}`).
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    /// Query parameters: name and description.
    pub query: Vec<(&'static str, &'static str)>,
    pub body: Option<RequestBody>,
    /// Success status and what it returns.
    pub success: (u16, &'static str),
}

pub struct Route {
    pub spec: RouteSpec,
    handler: MethodRouter<AppState>,
}

impl Route {
    /// The handler with its access guard applied.
    pub fn into_method_router(self, auth: &Arc<Auth>) -> MethodRouter<AppState> {
        match self.spec.access {
            Access::Public => self.handler,
            access => self.handler.route_layer(from_fn_with_state(
                Guard {
                    auth: auth.clone(),
                    access,
                },
                guard,
            )),
        }
    }
}

/// The log's filters, shared by the list and the export.
const FILTER_QUERY: &[(&str, &str)] = &[
    ("direction", "outbound or inbound"),
    ("to", "the other party's number (normalised to E.164)"),
    ("status", "one message status"),
    ("since", "created at or after (RFC 3339)"),
    ("until", "created before (RFC 3339)"),
    ("reference", "the client's reference"),
];
const PAGE_QUERY: &[(&str, &str)] = &[
    ("limit", "page size, 1-1000, default 100"),
    ("after", "the `next` cursor of the previous page"),
];
/// The export streams every matching message, so it has no page size; `after` resumes a broken one.
const RESUME_QUERY: &[(&str, &str)] = &[
    (
        "after",
        "a message id: only messages after it (the last id received, to resume an interrupted export)",
    ),
    (
        "bom",
        "true: start with a UTF-8 byte order mark, so Excel opening the file shows accents and \
         non-Latin text as written",
    ),
];

fn route(
    method: Method,
    path: &'static str,
    access: Access,
    summary: &'static str,
    success: (u16, &'static str),
    handler: MethodRouter<AppState>,
) -> Route {
    Route {
        spec: RouteSpec {
            method,
            path,
            access,
            summary,
            query: Vec::new(),
            body: None,
            success,
        },
        handler,
    }
}

impl Route {
    /// Adds query parameters to those already documented.
    fn query(mut self, query: &'static [(&'static str, &'static str)]) -> Route {
        self.spec.query.extend_from_slice(query);
        self
    }

    fn body(mut self, body: RequestBody) -> Route {
        self.spec.body = Some(body);
        self
    }
}

/// Every route the daemon serves.
pub fn table() -> Vec<Route> {
    use Access::{Authenticated, Public};
    let send = Access::Scope(Scope::Send);
    let read = Access::Scope(Scope::Read);
    let admin = Access::Scope(Scope::Admin);
    vec![
        route(
            Method::POST,
            "/v1/messages",
            send,
            "Queue a message (JSON or form)",
            (202, "Accepted"),
            post(h::send),
        )
        .body(RequestBody::Send),
        route(
            Method::POST,
            "/v1/messages/batch",
            send,
            "Queue up to 1,000 messages",
            (200, "BatchResults"),
            post(h::send_batch),
        )
        .body(RequestBody::Batch),
        route(
            Method::GET,
            "/v1/messages",
            read,
            "The message log, paged",
            (200, "Page"),
            get(h::list),
        )
        .query(FILTER_QUERY)
        .query(PAGE_QUERY),
        route(
            Method::GET,
            "/v1/messages/export.csv",
            read,
            "The message log as CSV, streamed",
            (200, "Csv"),
            get(h::export_csv),
        )
        .query(FILTER_QUERY)
        .query(RESUME_QUERY),
        route(
            Method::GET,
            "/v1/messages/{id}",
            read,
            "A message with its parts and events",
            (200, "MessageDetail"),
            get(h::get_message),
        ),
        route(
            Method::POST,
            "/v1/messages/{id}/cancel",
            send,
            "Cancel a message not yet sent",
            (200, "Message"),
            post(h::cancel),
        ),
        route(
            Method::GET,
            "/v1/conversations/{number}",
            read,
            "Both directions with a number, in time order",
            (200, "Page"),
            get(h::conversation),
        )
        .query(PAGE_QUERY),
        route(
            Method::GET,
            "/v1/modems",
            read,
            "Each modem's state, signal, operator and counters",
            (200, "Modems"),
            get(h::modems),
        ),
        route(
            Method::POST,
            "/v1/modems/{id}/pause",
            admin,
            "Stop giving a modem new messages",
            (200, "Modem"),
            post(h::pause),
        ),
        route(
            Method::POST,
            "/v1/modems/{id}/resume",
            admin,
            "Resume a paused modem",
            (200, "Modem"),
            post(h::resume),
        ),
        route(
            Method::GET,
            "/v1/optouts",
            admin,
            "Numbers that opted out",
            (200, "Optouts"),
            get(h::optouts),
        ),
        route(
            Method::GET,
            "/v1/optouts/audit",
            admin,
            "Every opt-out and its lifting, who did it and why",
            (200, "OptoutAudit"),
            get(h::optout_audit),
        ),
        route(
            Method::POST,
            "/v1/optouts",
            admin,
            "Add an opt-out",
            (201, "Optout"),
            post(h::add_optout),
        )
        .body(RequestBody::Optout),
        route(
            Method::DELETE,
            "/v1/optouts/{number}",
            admin,
            "Remove an opt-out",
            (204, "Empty"),
            delete(h::remove_optout),
        ),
        route(
            Method::GET,
            "/healthz",
            Public,
            "The process is up",
            (200, "Status"),
            get(h::healthz),
        ),
        route(
            Method::GET,
            "/readyz",
            read,
            "The store is open and traffic is accepted",
            (200, "Status"),
            get(h::readyz),
        ),
        route(
            Method::GET,
            "/metrics",
            read,
            "Prometheus metrics (text)",
            (200, "Metrics"),
            get(h::metrics),
        ),
        route(
            Method::GET,
            "/openapi.json",
            Authenticated,
            "This document",
            (200, "OpenApi"),
            get(h::openapi),
        ),
    ]
}
