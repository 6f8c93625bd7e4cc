//! The HTTP API and webhook delivery over real loopback HTTP.
//!
//! Until the store lands, the API runs on `FakeBackend`, an in-memory stand-in for the daemon that records
//! what the routes asked of it, and webhooks run on `FakeOutbox`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jiff::Timestamp;
use serde_json::{Value, json};
use uuid::Uuid;

use modemgate::api::auth::api_key;
use modemgate::api::backend::{
    Accepted, Backend, BackendError, BackendResult, Direction, ListFilter, MessageDetail,
    MessageView, ModemCounters, ModemView, NewMessage, Optout, Page, Status,
};
use modemgate::api::{AppState, Auth, Metrics, router};
use modemgate::config::{ApiKey, Scope};
use modemgate::modem::job::{ModemHealth, ModemIdentity, ModemState};
use modemgate::msisdn::{Msisdn, Region};
use modemgate::pdu::Encoding;
use modemgate::webhook::{
    self, Attempt, AttemptOutcome, Backoff, Deliverer, Envelope, Event, MessageEvent, OutboxItem,
    OutboxResult, OutboxStore, Target,
};

// ---------------------------------------------------------------------------------------------------------
// A stand-in daemon.

#[derive(Default)]
struct FakeBackend {
    not_ready: bool,
    /// The log `list` pages through.
    messages: Vec<MessageView>,
    last_filter: Mutex<Option<ListFilter>>,
    paused: Mutex<Vec<(String, bool)>>,
}

fn message(i: usize) -> MessageView {
    let at: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
    MessageView {
        id: Uuid::from_u128(i as u128 + 1),
        direction: Direction::Outbound,
        status: Status::Delivered,
        to: Some("+4915123456789".into()),
        from: None,
        text: format!("Payment {i}, due \"today\""),
        parts: 1,
        encoding: Encoding::Gsm7,
        priority: None,
        reference: Some(format!("case-{i}")),
        metadata: None,
        modem: Some("m1".into()),
        send_at: None,
        expires_at: None,
        created_at: at,
        updated_at: at,
        error: None,
    }
}

fn modem_view(id: &str, state: ModemState) -> ModemView {
    ModemView {
        id: id.into(),
        health: ModemHealth {
            state,
            signal: Some(21),
            operator: Some("Telekom.de".into()),
            cs: None,
            ps: None,
            eps: None,
            identity: ModemIdentity::default(),
            last_error: None,
        },
        counters: ModemCounters {
            sent: 5,
            failed: 1,
            received: 2,
            delivered: 4,
        },
    }
}

impl Backend for FakeBackend {
    fn accept(&self, _message: NewMessage) -> BackendResult<'_, Accepted> {
        Box::pin(async { Err(BackendError::Unavailable("the fake stores nothing".into())) })
    }
    fn accept_batch(
        &self,
        messages: Vec<NewMessage>,
    ) -> BackendResult<'_, Vec<Result<Accepted, BackendError>>> {
        let results = messages
            .iter()
            .map(|_| Err(BackendError::Unavailable("fake".into())))
            .collect();
        Box::pin(async move { Ok(results) })
    }
    fn message(&self, id: Uuid) -> BackendResult<'_, MessageDetail> {
        let found = self.messages.iter().find(|m| m.id == id).cloned();
        Box::pin(async move {
            let message = found.ok_or_else(|| BackendError::NotFound(format!("message {id}")))?;
            Ok(MessageDetail {
                message,
                part_list: vec![],
                events: vec![],
            })
        })
    }
    /// Pages of `limit`, the cursor being the index of the next message.
    fn list(&self, filter: ListFilter) -> BackendResult<'_, Page> {
        *self.last_filter.lock().unwrap() = Some(filter.clone());
        Box::pin(async move {
            let start = match &filter.after {
                None => 0,
                Some(c) => c
                    .parse::<usize>()
                    .map_err(|_| BackendError::InvalidCursor)?,
            };
            let end = (start + filter.limit).min(self.messages.len());
            let messages = self.messages.get(start..end).unwrap_or_default().to_vec();
            let next = (end < self.messages.len()).then(|| end.to_string());
            Ok(Page { messages, next })
        })
    }
    fn conversation(
        &self,
        number: Msisdn,
        limit: usize,
        after: Option<String>,
    ) -> BackendResult<'_, Page> {
        self.list(ListFilter {
            to: Some(number),
            limit,
            after,
            ..ListFilter::default()
        })
    }
    fn cancel(&self, id: Uuid) -> BackendResult<'_, MessageView> {
        Box::pin(async move {
            Err(BackendError::InvalidState(format!(
                "message {id} was already sent"
            )))
        })
    }
    fn modems(&self) -> BackendResult<'_, Vec<ModemView>> {
        Box::pin(async { Ok(vec![modem_view("m1", ModemState::Ready)]) })
    }
    fn set_paused(&self, modem: String, paused: bool) -> BackendResult<'_, ModemView> {
        self.paused.lock().unwrap().push((modem.clone(), paused));
        let state = if paused {
            ModemState::Paused
        } else {
            ModemState::Ready
        };
        Box::pin(async move { Ok(modem_view(&modem, state)) })
    }
    fn optouts(&self) -> BackendResult<'_, Vec<Optout>> {
        Box::pin(async { Ok(vec![]) })
    }
    fn add_optout(&self, number: Msisdn, note: Option<String>) -> BackendResult<'_, Optout> {
        Box::pin(async move {
            Ok(Optout {
                number: number.as_str().to_owned(),
                created_at: Timestamp::UNIX_EPOCH,
                source: "api".into(),
                note,
            })
        })
    }
    fn remove_optout(&self, number: Msisdn) -> BackendResult<'_, ()> {
        Box::pin(async move {
            Err(BackendError::NotFound(format!(
                "opt-out {}",
                number.as_str()
            )))
        })
    }
    fn ready(&self) -> BackendResult<'_, ()> {
        let ready = !self.not_ready;
        Box::pin(async move {
            if ready {
                Ok(())
            } else {
                Err(BackendError::Unavailable("store is migrating".into()))
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// A server on 127.0.0.1:0 and a real client.

fn keys() -> Vec<ApiKey> {
    vec![
        api_key("cms", "cms-token", &[Scope::Send, Scope::Read], None).unwrap(),
        api_key("reader", "reader-token", &[Scope::Read], None).unwrap(),
        api_key("admin", "admin-token", &[Scope::Admin], None).unwrap(),
        api_key(
            "limited",
            "limited-token",
            &[Scope::Read],
            Some((1, Duration::from_secs(3600))),
        )
        .unwrap(),
    ]
}

struct Server {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

struct Answer {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// Asserts our error envelope with this status, code and field.
    fn assert_error(&self, status: u16, code: &str, field: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        let json = self.json();
        assert_eq!(json["error"]["code"], code, "{json}");
        assert_eq!(json["error"]["field"].as_str(), field, "{json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{json}"
        );
    }
}

async fn serve(backend: FakeBackend) -> (Server, Arc<FakeBackend>) {
    let backend = Arc::new(backend);
    let metrics = Arc::new(Metrics::default());
    metrics.set_queue_depth(3);
    let mut state = AppState::new(backend.clone(), Arc::new(Auth::new(&keys())), metrics);
    state.default_region = Some(Region(phonenumber::country::Id::DE));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    (Server { addr, client }, backend)
}

impl Server {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Answer {
        self.call_with(method, path, token, &[], body).await
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some((content_type, bytes)) => {
                request = request.header("content-type", content_type);
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let response = self
            .client
            .request(request.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, Some(token), None).await
    }

    async fn post_json(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(
            Method::POST,
            path,
            Some(token),
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await
    }
}

// ---------------------------------------------------------------------------------------------------------
// Authentication and scopes.

#[tokio::test]
async fn missing_or_unknown_token_is_401_with_www_authenticate() {
    let (server, _) = serve(FakeBackend::default()).await;
    for token in [None, Some("wrong-token")] {
        let answer = server.call(Method::GET, "/v1/modems", token, None).await;
        answer.assert_error(401, "unauthorized", None);
        assert!(
            answer.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
    }
    // /openapi.json needs a key too, any key.
    server
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .assert_error(401, "unauthorized", None);
    assert_eq!(
        server.get("/openapi.json", "reader-token").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_valid_key_without_the_scope_is_403() {
    let (server, _) = serve(FakeBackend::default()).await;
    let send = json!({"to": "+4915123456789", "text": "hi"});
    server
        .post_json("/v1/messages", "reader-token", send)
        .await
        .assert_error(403, "forbidden", None);
    server
        .get("/v1/optouts", "cms-token")
        .await
        .assert_error(403, "forbidden", None);
    server
        .call(Method::POST, "/v1/modems/m1/pause", Some("cms-token"), None)
        .await
        .assert_error(403, "forbidden", None);
    // admin implies read.
    assert_eq!(
        server.get("/v1/modems", "admin-token").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_key_over_its_rate_is_429_with_retry_after() {
    let (server, _) = serve(FakeBackend::default()).await;
    assert_eq!(
        server.get("/v1/modems", "limited-token").await.status,
        StatusCode::OK
    );
    let answer = server.get("/v1/modems", "limited-token").await;
    answer.assert_error(429, "rate_limited", None);
    let retry: u64 = answer.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry), "Retry-After {retry}");
    // Other keys have their own budget.
    assert_eq!(
        server.get("/v1/modems", "reader-token").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn healthz_needs_no_token_and_readyz_reports_the_backend() {
    let (server, _) = serve(FakeBackend::default()).await;
    let answer = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (answer.status, answer.json()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(
        server.call(Method::GET, "/readyz", None, None).await.status,
        StatusCode::OK
    );
    let (server, _) = serve(FakeBackend {
        not_ready: true,
        ..FakeBackend::default()
    })
    .await;
    server
        .call(Method::GET, "/readyz", None, None)
        .await
        .assert_error(503, "unavailable", None);
}

// ---------------------------------------------------------------------------------------------------------
// Bad input: always our JSON error, never axum's plain text, never a 500.

#[tokio::test]
async fn malformed_bodies_get_precise_errors() {
    let (server, _) = serve(FakeBackend::default()).await;
    let post = |content_type: &'static str, body: &[u8]| {
        server.call(
            Method::POST,
            "/v1/messages",
            Some("cms-token"),
            Some((content_type, body.to_vec())),
        )
    };
    post("application/json", b"{\"to\": \"+49")
        .await
        .assert_error(400, "malformed_json", None);
    post("text/plain", b"to=1")
        .await
        .assert_error(415, "unsupported_media_type", None);
    let huge = format!(
        "{{\"to\": \"+4915123456789\", \"text\": \"{}\"}}",
        "a".repeat(2 << 20)
    );
    post("application/json", huge.as_bytes())
        .await
        .assert_error(413, "payload_too_large", None);
    post("application/json", b"[]")
        .await
        .assert_error(422, "invalid_body", None);
    let no_type = server
        .call(Method::POST, "/v1/messages", Some("cms-token"), None)
        .await;
    no_type.assert_error(415, "unsupported_media_type", None);
}

#[tokio::test]
async fn send_fields_are_validated_with_their_names() {
    let (server, _) = serve(FakeBackend::default()).await;
    let cases = [
        (
            json!({"to": "+4915123456789", "text": "hi", "colour": "red"}),
            "unknown_field",
            "colour",
        ),
        (json!({"to": "12", "text": "hi"}), "invalid_number", "to"),
        (
            json!({"to": "+4915123456789", "text": ""}),
            "empty_text",
            "text",
        ),
        (
            json!({"to": "+4915123456789", "text": "hi", "send_at": "yesterday"}),
            "invalid_time",
            "send_at",
        ),
        (
            json!({"to": "+4915123456789", "text": "hi", "send_at": "2001-01-01T00:00:00Z"}),
            "invalid_time",
            "send_at",
        ),
        (
            json!({"to": "+4915123456789", "text": "hi", "tz": "Europe/Atlantis"}),
            "invalid_tz",
            "tz",
        ),
        (
            json!({"to": "+4915123456789", "text": "hi", "priority": 12}),
            "invalid_priority",
            "priority",
        ),
    ];
    for (body, code, field) in cases {
        server
            .post_json("/v1/messages", "cms-token", body)
            .await
            .assert_error(422, code, Some(field));
    }
    let body = json!({"to": "+4915123456789", "text": "hi"})
        .to_string()
        .into_bytes();
    let long_key = "k".repeat(256);
    let answer = server
        .call_with(
            Method::POST,
            "/v1/messages",
            Some("cms-token"),
            &[("idempotency-key", &long_key)],
            Some(("application/json", body)),
        )
        .await;
    answer.assert_error(422, "invalid_idempotency_key", Some("Idempotency-Key"));
}

#[tokio::test]
async fn form_bodies_are_read_like_json() {
    let (server, _) = serve(FakeBackend::default()).await;
    let form = |body: &str| {
        server.call(
            Method::POST,
            "/v1/messages",
            Some("cms-token"),
            Some((
                "application/x-www-form-urlencoded",
                body.as_bytes().to_vec(),
            )),
        )
    };
    form("to=0151&text=hi")
        .await
        .assert_error(422, "invalid_number", Some("to"));
    form("to=%2B4915123456789&text=hi&smart=perhaps")
        .await
        .assert_error(422, "invalid_type", Some("smart"));
    form("to=%2B4915123456789&text=hi&text=again")
        .await
        .assert_error(422, "duplicate_field", Some("text"));
    form("to=%2B4915123456789&text=hi&metadata=%5B1%5D")
        .await
        .assert_error(422, "invalid_type", Some("metadata"));
}

#[tokio::test]
async fn unknown_routes_methods_and_ids_are_json_errors() {
    let (server, _) = serve(FakeBackend::default()).await;
    server
        .get("/v1/nothing", "cms-token")
        .await
        .assert_error(404, "not_found", None);
    server
        .call(Method::DELETE, "/v1/messages", Some("cms-token"), None)
        .await
        .assert_error(405, "method_not_allowed", None);
    server
        .get("/v1/messages/not-a-uuid", "cms-token")
        .await
        .assert_error(404, "not_found", None);
    server
        .get(&format!("/v1/messages/{}", Uuid::nil()), "cms-token")
        .await
        .assert_error(404, "not_found", None);
}

// ---------------------------------------------------------------------------------------------------------
// Routes over the backend.

#[tokio::test]
async fn list_filters_are_parsed_and_pages_link() {
    let backend = FakeBackend {
        messages: (0..5).map(message).collect(),
        ..FakeBackend::default()
    };
    let (server, backend) = serve(backend).await;
    let answer = server
        .get(
            "/v1/messages?direction=outbound&to=0151%2023456789&status=delivered&since=2026-11-01T00:00:00Z&reference=case-1&limit=2",
            "reader-token",
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let page = answer.json();
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], "2");
    let filter = backend.last_filter.lock().unwrap().clone().unwrap();
    assert_eq!(
        filter.to.as_ref().map(Msisdn::as_str),
        Some("+4915123456789"),
        "to is normalised to E.164"
    );
    assert_eq!(
        (filter.direction, filter.status, filter.limit),
        (Some(Direction::Outbound), Some(Status::Delivered), 2)
    );
    assert_eq!(filter.since, Some("2026-11-01T00:00:00Z".parse().unwrap()));
    let last = server
        .get("/v1/messages?limit=2&after=4", "reader-token")
        .await
        .json();
    assert_eq!(last["next"], Value::Null);

    server
        .get("/v1/messages?status=lost", "reader-token")
        .await
        .assert_error(422, "invalid_status", Some("status"));
    server
        .get("/v1/messages?limit=0", "reader-token")
        .await
        .assert_error(422, "invalid_limit", Some("limit"));
    server
        .get("/v1/messages?sort=asc", "reader-token")
        .await
        .assert_error(422, "unknown_field", Some("sort"));
    server
        .get("/v1/messages?after=zz", "reader-token")
        .await
        .assert_error(400, "invalid_cursor", Some("after"));
}

#[tokio::test]
async fn export_csv_streams_every_page() {
    let backend = FakeBackend {
        messages: (0..5).map(message).collect(),
        ..FakeBackend::default()
    };
    let (server, _) = serve(backend).await;
    let answer = server
        .get("/v1/messages/export.csv?limit=2", "reader-token")
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = String::from_utf8(answer.body.to_vec()).unwrap();
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 6, "header + 5 rows across 3 pages:\n{text}");
    assert!(lines[0].starts_with("id,direction,status,to"));
    assert!(
        lines[1].contains(",\"Payment 0, due \"\"today\"\"\","),
        "{}",
        lines[1]
    );
}

#[tokio::test]
async fn modems_pause_resume_and_metrics() {
    let (server, backend) = serve(FakeBackend::default()).await;
    let modems = server.get("/v1/modems", "reader-token").await.json();
    let m1 = &modems["modems"][0];
    assert_eq!(
        (
            m1["id"].as_str(),
            m1["state"].as_str(),
            m1["signal"].as_u64()
        ),
        (Some("m1"), Some("ready"), Some(21))
    );
    assert_eq!(m1["operator"], "Telekom.de");
    assert_eq!(m1["counters"]["sent"], 5);
    let paused = server
        .call(
            Method::POST,
            "/v1/modems/m2/pause",
            Some("admin-token"),
            None,
        )
        .await;
    assert_eq!(paused.json()["state"], "paused");
    server
        .call(
            Method::POST,
            "/v1/modems/m2/resume",
            Some("admin-token"),
            None,
        )
        .await;
    assert_eq!(
        *backend.paused.lock().unwrap(),
        vec![("m2".to_owned(), true), ("m2".to_owned(), false)]
    );

    let metrics = server.get("/metrics", "reader-token").await;
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    assert!(
        String::from_utf8_lossy(&metrics.body)
            .lines()
            .any(|l| l == "modemgate_queue_depth 3")
    );
}

#[tokio::test]
async fn optouts_and_cancel_map_backend_answers() {
    let (server, _) = serve(FakeBackend::default()).await;
    let created = server
        .post_json(
            "/v1/optouts",
            "admin-token",
            json!({"number": "0151 23456789", "note": "asked"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.json()["number"], "+4915123456789");
    server
        .post_json("/v1/optouts", "admin-token", json!({"numbr": "1"}))
        .await
        .assert_error(422, "unknown_field", Some("numbr"));
    server
        .call(
            Method::DELETE,
            "/v1/optouts/%2B4915123456789",
            Some("admin-token"),
            None,
        )
        .await
        .assert_error(404, "not_found", None);
    let cancel = format!("/v1/messages/{}/cancel", Uuid::nil());
    server
        .call(Method::POST, &cancel, Some("cms-token"), None)
        .await
        .assert_error(409, "invalid_state", None);
}

#[tokio::test]
async fn batch_reports_each_item() {
    let (server, _) = serve(FakeBackend::default()).await;
    let answer = server
        .post_json(
            "/v1/messages/batch",
            "cms-token",
            json!({"messages": [{"to": "12", "text": "x"}, {"to": "+4915123456789", "text": ""}]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let results = answer.json()["results"].clone();
    assert_eq!(results[0]["index"], 0);
    assert_eq!(results[0]["status"], 422);
    assert_eq!(results[0]["error"]["code"], "invalid_number");
    assert_eq!(results[1]["error"]["code"], "empty_text");
    let too_many: Vec<Value> = (0..1001).map(|_| json!({"to": "1", "text": "x"})).collect();
    server
        .post_json(
            "/v1/messages/batch",
            "cms-token",
            json!({"messages": too_many}),
        )
        .await
        .assert_error(422, "invalid_batch_size", Some("messages"));
}

#[tokio::test]
async fn openapi_lists_every_served_route() {
    let (server, _) = serve(FakeBackend::default()).await;
    let doc = server.get("/openapi.json", "cms-token").await.json();
    for (path, method) in [
        ("/v1/messages", "post"),
        ("/v1/messages", "get"),
        ("/v1/messages/{id}", "get"),
        ("/v1/conversations/{number}", "get"),
        ("/v1/modems", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// Webhooks: a fake outbox, real receivers.

#[derive(Debug, Clone)]
struct Row {
    item: OutboxItem,
    message_id: Option<Uuid>,
    next_at: Timestamp,
    delivered: bool,
    attempts: Vec<Attempt>,
}

fn row(id: i64, envelope: &Envelope) -> Row {
    Row {
        item: OutboxItem {
            id,
            kind: envelope.event.kind(),
            body: serde_json::to_vec(&envelope.payload()).unwrap(),
            attempts: 0,
        },
        message_id: envelope.event.message_id(),
        next_at: Timestamp::UNIX_EPOCH,
        delivered: false,
        attempts: vec![],
    }
}

/// The outbox contract in memory: due rows, oldest first, only the oldest undelivered row per message.
struct FakeOutbox {
    rows: Mutex<Vec<Row>>,
    delivered: tokio::sync::watch::Sender<usize>,
}

impl FakeOutbox {
    fn new(rows: Vec<Row>) -> Arc<FakeOutbox> {
        Arc::new(FakeOutbox {
            rows: Mutex::new(rows),
            delivered: tokio::sync::watch::channel(0).0,
        })
    }
}

impl OutboxStore for FakeOutbox {
    fn next_due(&self, now: Timestamp, limit: usize) -> OutboxResult<'_, Vec<OutboxItem>> {
        let rows = self.rows.lock().unwrap();
        let mut seen = std::collections::HashSet::new();
        let due = rows
            .iter()
            .filter(|r| !r.delivered)
            .filter(|r| r.message_id.is_none_or(|k| seen.insert(k)))
            .filter(|r| r.next_at <= now)
            .take(limit)
            .map(|r| r.item.clone())
            .collect();
        Box::pin(async move { Ok(due) })
    }
    fn record_attempt(&self, id: i64, attempt: Attempt) -> OutboxResult<'_, ()> {
        let mut rows = self.rows.lock().unwrap();
        let row = rows.iter_mut().find(|r| r.item.id == id).unwrap();
        row.next_at = attempt.next_at;
        row.item.attempts += 1;
        row.attempts.push(attempt);
        Box::pin(async { Ok(()) })
    }
    fn mark_delivered(&self, id: i64, _at: Timestamp, _status: u16) -> OutboxResult<'_, ()> {
        let mut rows = self.rows.lock().unwrap();
        rows.iter_mut().find(|r| r.item.id == id).unwrap().delivered = true;
        self.delivered.send_modify(|n| *n += 1);
        Box::pin(async { Ok(()) })
    }
}

fn status_event(message_id: Uuid, kind: fn(MessageEvent) -> Event) -> Envelope {
    Envelope::new(
        kind(MessageEvent {
            message_id,
            to: "+4915123456789".into(),
            parts: 1,
            modem: Some("m1".into()),
            reference: None,
            metadata: None,
            error: None,
        }),
        Timestamp::now(),
    )
}

type ReceiverLog = Arc<Mutex<Vec<(String, u16)>>>;

/// A webhook receiver on 127.0.0.1: checks every signature, answers 500 to the first `failures` requests,
/// logs (event id, status answered).
async fn receiver(secret: &'static str, failures: usize) -> (String, ReceiverLog) {
    let log: ReceiverLog = Arc::default();
    let handler_log = log.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let log = handler_log.clone();
            async move {
                let signature = headers["modemgate-signature"].to_str().unwrap();
                webhook::verify(
                    secret.as_bytes(),
                    signature,
                    &body,
                    Timestamp::now(),
                    Duration::from_secs(300),
                )
                .unwrap();
                let event: Value = serde_json::from_slice(&body).unwrap();
                let mut log = log.lock().unwrap();
                let status = if log.len() < failures { 500 } else { 200 };
                log.push((event["id"].as_str().unwrap().to_owned(), status));
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, log)
}

#[tokio::test]
async fn webhooks_are_signed_retried_with_backoff_and_ordered_per_message() {
    let (all_url, all_log) = receiver("secret-all", 2).await;
    let (delivered_url, delivered_log) = receiver("secret-delivered", 0).await;
    let targets = vec![
        Target::new(&all_url, "secret-all", None).unwrap(),
        Target::new(
            &delivered_url,
            "secret-delivered",
            Some(vec![webhook::EventKind::MessageDelivered]),
        )
        .unwrap(),
    ];
    let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let envelopes = [
        status_event(a, Event::MessageSent),
        status_event(b, Event::MessageSent),
        status_event(a, Event::MessageDelivered),
    ];
    let outbox = FakeOutbox::new(
        envelopes
            .iter()
            .enumerate()
            .map(|(i, e)| row(i as i64, e))
            .collect(),
    );
    let mut delivered_rx = outbox.delivered.subscribe();
    let backoff = Backoff {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(40),
    };
    let deliverer = Deliverer::new(outbox.clone(), targets, backoff);
    assert!(deliverer.wants(webhook::EventKind::MessageSent));
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(deliverer.run(cancel.clone()));

    tokio::time::timeout(Duration::from_secs(20), delivered_rx.wait_for(|n| *n == 3))
        .await
        .unwrap()
        .unwrap();
    cancel.cancel();
    task.await.unwrap();

    let index: HashMap<String, usize> = envelopes
        .iter()
        .enumerate()
        .map(|(i, e)| (e.id.to_string(), i))
        .collect();
    let log = all_log.lock().unwrap().clone();
    assert_eq!(log.iter().filter(|(_, s)| *s == 500).count(), 2, "{log:?}");
    // a's second event is never posted before a's first was accepted.
    let first_a_ok = log
        .iter()
        .position(|(id, s)| index[id] == 0 && *s == 200)
        .unwrap();
    let first_a2 = log.iter().position(|(id, _)| index[id] == 2).unwrap();
    assert!(first_a2 > first_a_ok, "out of order: {log:?}");
    // The second webhook only subscribed to message.delivered.
    let delivered_only: Vec<usize> = delivered_log
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| index[id])
        .collect();
    assert_eq!(delivered_only, vec![2]);
    // Every failed attempt was recorded with its status and a back-off within the bounds.
    let rows = outbox.rows.lock().unwrap();
    assert_eq!(rows.iter().map(|r| r.attempts.len()).sum::<usize>(), 2);
    for attempt in rows.iter().flat_map(|r| &r.attempts) {
        assert_eq!(attempt.outcome, AttemptOutcome::Status(500));
        let delay = attempt.next_at.duration_since(attempt.at);
        assert!(
            delay >= jiff::SignedDuration::from_millis(10)
                && delay <= jiff::SignedDuration::from_millis(40)
        );
    }
    assert!(rows.iter().all(|r| r.delivered));
}

#[tokio::test]
async fn unreachable_webhooks_record_the_error() {
    // Bind then drop a listener: nothing listens on that port any more.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let target = Target::new(&format!("http://{addr}/hook"), "s", None).unwrap();
    let outbox = FakeOutbox::new(vec![row(
        1,
        &status_event(Uuid::nil(), Event::MessageFailed),
    )]);
    let deliverer = Deliverer::new(outbox.clone(), vec![target], Backoff::default());
    let round = deliverer.deliver_due().await.unwrap();
    assert_eq!(round.rows, 1);
    let rows = outbox.rows.lock().unwrap();
    assert!(
        matches!(&rows[0].attempts[0].outcome, AttemptOutcome::Error(_)),
        "{:?}",
        rows[0].attempts
    );
    assert!(
        rows[0].next_at > rows[0].attempts[0].at,
        "retry scheduled in the future"
    );
    assert_eq!(round.earliest_retry, Some(rows[0].next_at));
    assert!(!rows[0].delivered);
}
