//! The HTTP API and webhook delivery over real loopback HTTP, on a real SQLite store (a temp file) and a
//! running dispatcher with no modems (so sends stay queued), with a stand-in for the modem workers' health.

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
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use modemgate::api::auth::api_key;
use modemgate::api::backend::Backend;
use modemgate::api::gateway::{Gateway, LiveModem, ModemControl};
use modemgate::api::{AppState, Auth, Metrics, router};
use modemgate::config::{ApiKey, Config, Scope};
use modemgate::dispatch::{self, AllowAll, Settings};
use modemgate::modem::job::{ModemHealth, ModemIdentity, ModemState};
use modemgate::msisdn::Region;
use modemgate::store::{
    Clock as _, Handback, InboundContent, InboundPart, ManualClock, OpenOptions, ReportIn, Store,
    TextEncoding,
};
use modemgate::webhook::{
    self, Attempt, AttemptOutcome, Backoff, Deliverer, Envelope, Event, Lane, MessageEvent,
    OptoutEvent, OutboxItem, OutboxResult, OutboxStore, ReceivedEvent, Target,
};

// ---------------------------------------------------------------------------------------------------------
// The daemon's parts, for real, on 127.0.0.1:0.

/// The workers' health as the daemon would keep it; pausing flips the state.
struct Modems(Mutex<Vec<LiveModem>>);

impl ModemControl for Modems {
    fn modems(&self) -> Vec<LiveModem> {
        self.0.lock().unwrap().clone()
    }
    fn set_paused(&self, id: &str, paused: bool) -> bool {
        let mut modems = self.0.lock().unwrap();
        let Some(LiveModem { health, .. }) = modems.iter_mut().find(|m| m.id == id) else {
            return false;
        };
        health.state = if paused {
            ModemState::Paused
        } else {
            ModemState::Ready
        };
        true
    }
}

fn health() -> ModemHealth {
    ModemHealth {
        signal: Some(21),
        operator: Some("Telekom.de".into()),
        answered_at: Some("2026-11-23T19:59:30.25Z".parse().unwrap()),
        ..ModemHealth::new(ModemState::Ready)
    }
}

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

/// The SIM number modem m1 reports (`AT+CNUM`).
const M1_NUMBER: &str = "+4915100000001";

struct Server {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    store: Store,
    _dir: tempfile::TempDir,
    _stop: tokio_util::sync::DropGuard,
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

    fn assert_status(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        self.json()
    }
}

async fn serve() -> Server {
    serve_with(OpenOptions::default()).await
}

async fn serve_with(options: OpenOptions) -> Server {
    start(options, |backend| {
        let metrics = Arc::new(Metrics::default());
        let mut state = AppState::new(backend, Arc::new(Auth::new(&keys())), metrics);
        state.default_region = Some(Region(phonenumber::country::Id::DE));
        state
    })
    .await
}

/// The real store (a temp file), a dispatcher with no modems, the gateway, and the router on 127.0.0.1:0.
async fn start(options: OpenOptions, state: impl FnOnce(Arc<dyn Backend>) -> AppState) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("modemgate.db"), options).unwrap();
    store
        .upsert_modem(
            "m1",
            ModemIdentity {
                own_number: Some(M1_NUMBER.into()),
                ..ModemIdentity::default()
            },
        )
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let (dispatch, _task) = dispatch::start(
        store.clone(),
        vec![],
        Settings::default(),
        Arc::new(AllowAll),
        stop.clone(),
        None,
    )
    .await
    .unwrap();
    let modems = Arc::new(Modems(Mutex::new(vec![LiveModem {
        id: "m1".into(),
        health: health(),
        daily_cap: std::num::NonZeroU32::new(200),
    }])));
    let optouts = Arc::new(
        modemgate::rules::optouts::OptOuts::load(&store)
            .await
            .unwrap(),
    );
    let state = state(Arc::new(Gateway::new(
        store.clone(),
        dispatch,
        modems,
        optouts,
        Default::default(),
        true,
    )));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    Server {
        addr,
        client,
        store,
        _dir: dir,
        _stop: stop.drop_guard(),
    }
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

    async fn post(&self, path: &str, token: &str) -> Answer {
        self.call(Method::POST, path, Some(token), None).await
    }

    /// Queues `text` to `to` and returns the message id.
    async fn send(&self, to: &str, text: &str) -> String {
        let answer = self
            .post_json("/v1/messages", "cms-token", json!({"to": to, "text": text}))
            .await;
        answer.assert_status(202)["id"].as_str().unwrap().to_owned()
    }

    /// Message `id` claimed by m1 and its first part sent (TP-MR 7), as the dispatcher and m1's worker
    /// would record it.
    async fn first_part_sent_on_m1(&self, id: uuid::Uuid) {
        self.store.claim(id, "m1", None).await.unwrap();
        self.store.part_submitting(id, 1, "m1", None).await.unwrap();
        self.store.part_sent(id, 1, "m1", 7).await.unwrap();
    }

    /// An inbound SMS from `from`, as a modem worker would record it.
    async fn receive(&self, from: &str, text: &str, pdu: &str) {
        let part = InboundPart {
            modem: "m1".into(),
            pdu_hex: pdu.into(),
            content: InboundContent::Decoded {
                sender: from.into(),
                text: text.into(),
                encoding: TextEncoding::Gsm7,
                sent_at: Some(Timestamp::now()),
                concat: None,
            },
        };
        self.store.record_inbound(part).await.unwrap();
    }
}

const TO: &str = "+4915123456789";

// ---------------------------------------------------------------------------------------------------------
// Authentication and scopes.

#[tokio::test]
async fn missing_or_unknown_token_is_401_with_www_authenticate() {
    let server = serve().await;
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
    let server = serve().await;
    let send = json!({"to": TO, "text": "hi"});
    server
        .post_json("/v1/messages", "reader-token", send)
        .await
        .assert_error(403, "forbidden", None);
    server
        .get("/v1/optouts", "cms-token")
        .await
        .assert_error(403, "forbidden", None);
    server
        .post("/v1/modems/m1/pause", "cms-token")
        .await
        .assert_error(403, "forbidden", None);
    // admin implies read and send.
    assert_eq!(
        server.get("/v1/modems", "admin-token").await.status,
        StatusCode::OK
    );
    server
        .post_json(
            "/v1/messages",
            "admin-token",
            json!({"to": TO, "text": "hi"}),
        )
        .await
        .assert_status(202);
}

#[tokio::test]
async fn a_key_over_its_rate_is_429_with_retry_after() {
    let server = serve().await;
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
async fn healthz_needs_no_token_and_readyz_the_read_scope() {
    let server = serve().await;
    let answer = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (answer.status, answer.json()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    server
        .call(Method::GET, "/readyz", None, None)
        .await
        .assert_error(401, "unauthorized", None);
    let ready = server.get("/readyz", "reader-token").await;
    assert_eq!(
        (ready.status, ready.json()),
        (StatusCode::OK, json!({"status": "ready"}))
    );
}

// ---------------------------------------------------------------------------------------------------------
// Bad input: always our JSON error, never axum's plain text, never a 500.

#[tokio::test]
async fn malformed_bodies_get_precise_errors() {
    let server = serve().await;
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
        "{{\"to\": \"{TO}\", \"text\": \"{}\"}}",
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
    let form_to_batch = server
        .call(
            Method::POST,
            "/v1/messages/batch",
            Some("cms-token"),
            Some(("application/x-www-form-urlencoded", b"a=1".to_vec())),
        )
        .await;
    form_to_batch.assert_error(415, "unsupported_media_type", None);
    let message = form_to_batch.json()["error"]["message"].clone();
    assert!(
        message.as_str().unwrap().ends_with("use application/json"),
        "the batch reads JSON only: {message}"
    );
    post(
        "application/json",
        format!(r#"{{"to": "{TO}", "text": 123}}"#).as_bytes(),
    )
    .await
    .assert_error(422, "invalid_type", Some("text"));
    let unescaped = server
        .get("/v1/messages?since=2026-11-23T04:51:00+01:00", "cms-token")
        .await;
    unescaped.assert_error(422, "invalid_time", Some("since"));
    let message = unescaped.json()["error"]["message"].clone();
    assert!(message.as_str().unwrap().contains("%2B"), "{message}");

    // A field given twice is refused, never settled by picking one (serde_json would keep the last `to`),
    // in a JSON body, a form's metadata and a batch item; nothing is stored.
    post(
        "application/json",
        format!(r#"{{"to": "{TO}", "text": "x", "to": "+16505550100"}}"#).as_bytes(),
    )
    .await
    .assert_error(422, "duplicate_field", Some("to"));
    post(
        "application/x-www-form-urlencoded",
        b"to=4158906431&text=x&metadata=%7B%22a%22%3A1%2C%22a%22%3A2%7D",
    )
    .await
    .assert_error(422, "duplicate_field", Some("metadata.a"));
    // A form that is not UTF-8 (PHP and older stacks send Latin-1) would reach the debtor as "caf\u{FFFD}":
    // refused, whether it says its charset (415) or not (400).
    post(
        "application/x-www-form-urlencoded; charset=ISO-8859-1",
        b"to=4158906431&text=caf%E9",
    )
    .await
    .assert_status(415);
    post(
        "application/x-www-form-urlencoded",
        b"to=4158906431&text=caf\xe9",
    )
    .await
    .assert_error(400, "malformed_json", None);
    let batch = format!(
        r#"{{"messages": [{{"to": "{TO}", "text": "a"}}, {{"to": "{TO}", "text": "b", "text": "c"}}]}}"#
    );
    server
        .call(
            Method::POST,
            "/v1/messages/batch",
            Some("cms-token"),
            Some(("application/json", batch.into_bytes())),
        )
        .await
        .assert_error(422, "duplicate_field", Some("messages[1].text"));
    let listed = server.get("/v1/messages", "cms-token").await;
    assert_eq!(
        listed.json()["messages"],
        serde_json::json!([]),
        "nothing stored"
    );

    // A UTF-8 byte order mark (.NET writes one by default) is not an error.
    let bom = format!("\u{FEFF}{{\"to\": \"{TO}\", \"text\": \"x\"}}");
    post("application/json", bom.as_bytes())
        .await
        .assert_status(202);
}

#[tokio::test]
async fn a_full_disk_answers_503_with_retry_after_and_acknowledges_only_what_is_stored() {
    // A database capped at a few pages stands in for a full disk.
    let server = serve_with(OpenOptions {
        max_pages: Some(40),
        ..OpenOptions::default()
    })
    .await;
    let text = "x".repeat(1500);
    let mut acknowledged = Vec::new();
    let refused = loop {
        let answer = server
            .post_json("/v1/messages", "cms-token", json!({"to": TO, "text": text}))
            .await;
        if answer.status != StatusCode::ACCEPTED {
            break answer;
        }
        acknowledged.push(answer.json()["id"].as_str().unwrap().to_owned());
        assert!(acknowledged.len() < 1000, "the database never filled");
    };
    refused.assert_error(503, "unavailable", None);
    assert_eq!(refused.headers["retry-after"], "5");
    assert!(!acknowledged.is_empty());
    // Reads still work, and list exactly the messages that got a 202.
    let listed = server
        .get("/v1/messages?limit=1000", "cms-token")
        .await
        .json();
    let stored: Vec<&str> = listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(stored, acknowledged);
}

#[tokio::test]
async fn send_fields_are_validated_with_their_names() {
    let server = serve().await;
    let cases = [
        (
            json!({"to": TO, "text": "hi", "colour": "red"}),
            "unknown_field",
            "colour",
        ),
        (json!({"text": "hi"}), "missing_field", "to"),
        (json!({"to": "12", "text": "hi"}), "invalid_number", "to"),
        (json!({"to": TO, "text": ""}), "empty_text", "text"),
        (
            json!({"to": TO, "text": "Balance due\u{0}"}),
            "control_character",
            "text",
        ),
        (
            json!({"to": TO, "text": "x".repeat(1531)}),
            "text_too_long",
            "text",
        ),
        (
            json!({"to": TO, "text": "😀", "encoding": "gsm7"}),
            "unencodable_text",
            "text",
        ),
        (
            json!({"to": TO, "text": "hi", "send_at": "yesterday"}),
            "invalid_time",
            "send_at",
        ),
        (
            json!({"to": TO, "text": "hi", "send_at": "2001-01-01T00:00:00Z"}),
            "invalid_time",
            "send_at",
        ),
        (
            json!({"to": TO, "text": "hi", "expires_at": "2001-01-01T00:00:00Z"}),
            "invalid_time",
            "expires_at",
        ),
        // No place is 25 hours from UTC: a typo, not a day later.
        (
            json!({"to": TO, "text": "hi", "send_at": "2099-01-01T09:00:00+25:00"}),
            "invalid_time",
            "send_at",
        ),
        (
            json!({"to": TO, "text": "hi", "region": "Massachusetts"}),
            "invalid_region",
            "region",
        ),
        (
            json!({"to": TO, "text": "hi", "tz": "Europe/Atlantis"}),
            "invalid_tz",
            "tz",
        ),
        // A fixed offset has no summer time: in July "21:00 EST" is 22:00 in New York.
        (
            json!({"to": TO, "text": "hi", "tz": "EST"}),
            "invalid_tz",
            "tz",
        ),
        (
            json!({"to": TO, "text": "hi", "language": "de"}),
            "invalid_language",
            "language",
        ),
        (
            json!({"to": TO, "text": "hi", "priority": 12}),
            "invalid_priority",
            "priority",
        ),
        (
            json!({"to": TO, "text": "hi", "reference": "r".repeat(129)}),
            "reference_too_long",
            "reference",
        ),
        (
            json!({"to": TO, "text": "hi", "metadata": "x"}),
            "invalid_type",
            "metadata",
        ),
    ];
    for (body, code, field) in cases {
        server
            .post_json("/v1/messages", "cms-token", body)
            .await
            .assert_error(422, code, Some(field));
    }
    let body = json!({"to": TO, "text": "hi"}).to_string().into_bytes();
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
    // Nothing of the above was stored.
    let page = server
        .get("/v1/messages", "cms-token")
        .await
        .assert_status(200);
    assert_eq!(page["messages"], json!([]));
}

#[tokio::test]
async fn unknown_routes_methods_and_ids_are_json_errors() {
    let server = serve().await;
    server
        .get("/v1/nothing", "cms-token")
        .await
        .assert_error(404, "not_found", None);
    let delete = server
        .call(Method::DELETE, "/v1/messages", Some("cms-token"), None)
        .await;
    delete.assert_error(405, "method_not_allowed", None);
    server
        .get("/v1/messages/not-a-uuid", "cms-token")
        .await
        .assert_error(404, "not_found", None);
    server
        .get(&format!("/v1/messages/{}", Uuid::nil()), "cms-token")
        .await
        .assert_error(404, "not_found", None);
    server
        .post(&format!("/v1/messages/{}/cancel", Uuid::nil()), "cms-token")
        .await
        .assert_error(404, "not_found", None);
    server
        .post("/v1/modems/m9/pause", "admin-token")
        .await
        .assert_error(404, "not_found", None);
}

// ---------------------------------------------------------------------------------------------------------
// Every route over the store.

#[tokio::test]
async fn a_send_is_stored_and_readable_with_parts_and_events() {
    let server = serve().await;
    let body = json!({
        "to": "0151 23456789", "text": "x".repeat(161), "priority": "high", "reference": "case-7",
        "metadata": {"debtor": 42}, "tz": "Europe/Berlin", "region": "de-be"
    });
    let accepted = server
        .post_json("/v1/messages", "cms-token", body)
        .await
        .assert_status(202);
    assert_eq!(accepted["to"], TO);
    assert_eq!(
        (accepted["parts"].as_u64(), accepted["encoding"].as_str()),
        (Some(2), Some("gsm7"))
    );
    assert_eq!(accepted["status"], "queued");
    let id = accepted["id"].as_str().unwrap();

    let detail = server
        .get(&format!("/v1/messages/{id}"), "reader-token")
        .await
        .assert_status(200);
    assert_eq!(detail["id"], id);
    assert_eq!(
        (detail["direction"].as_str(), detail["to"].as_str()),
        (Some("outbound"), Some(TO))
    );
    assert_eq!(
        (
            detail["reference"].as_str(),
            detail["metadata"]["debtor"].as_u64()
        ),
        (Some("case-7"), Some(42))
    );
    assert_eq!(detail["priority"], 8);
    assert_eq!(
        (detail["tz"].as_str(), detail["region"].as_str()),
        (Some("Europe/Berlin"), Some("DE-BE"))
    );
    assert_eq!(detail["part_list"].as_array().unwrap().len(), 2);
    assert_eq!(detail["events"][0]["kind"], "accepted", "{detail}");

    // A form body is read like JSON; a future send_at makes it scheduled.
    let send_at = Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(2))
        .unwrap();
    let form = format!(
        "to=%2B4915123456789&text=Bitte+zahlen&send_at={}",
        send_at.to_string().replace('+', "%2B")
    );
    let answer = server
        .call(
            Method::POST,
            "/v1/messages",
            Some("cms-token"),
            Some(("application/x-www-form-urlencoded", form.into_bytes())),
        )
        .await;
    let scheduled = answer.assert_status(202)["id"].as_str().unwrap().to_owned();
    let shown = server
        .get(&format!("/v1/messages/{scheduled}"), "reader-token")
        .await
        .assert_status(200);
    assert_eq!(shown["status"], "scheduled");
    // When it may go, which for a held message the send_at alone would not say.
    assert_eq!(
        shown["not_before"].as_str(),
        Some(modemgate::wire_time::format(send_at).as_str()),
        "{shown}"
    );
    assert_eq!(detail["not_before"], Value::Null, "only scheduled messages");
    // The same with the + not escaped: a form decodes it as a space, and region DE would read the rest as
    // another valid number (+49 4915...): refused, saying why.
    let unescaped = server
        .call(
            Method::POST,
            "/v1/messages",
            Some("cms-token"),
            Some((
                "application/x-www-form-urlencoded",
                b"to=+4915123456789&text=Bitte+zahlen".to_vec(),
            )),
        )
        .await;
    unescaped.assert_error(422, "invalid_number", Some("to"));
    let message = unescaped.json()["error"]["message"].to_string();
    assert!(message.contains("write it as %2B"), "{message}");

    // With smart encoding, what is stored is what the phone shows: the look-alikes replaced, GSM 7-bit.
    let smart = server
        .post_json(
            "/v1/messages",
            "cms-token",
            json!({"to": TO, "text": "It’s due “today”", "smart": true}),
        )
        .await
        .assert_status(202);
    assert_eq!(smart["encoding"], "gsm7");
    let detail = server
        .get(
            &format!("/v1/messages/{}", smart["id"].as_str().unwrap()),
            "reader-token",
        )
        .await
        .assert_status(200);
    assert_eq!(detail["text"], "It's due \"today\"", "{detail}");
}

#[tokio::test]
async fn idempotent_repeats_answer_202_again_marked_replayed_and_different_bodies_409() {
    let server = serve().await;
    let send = |text: &'static str| {
        let body = json!({"to": TO, "text": text}).to_string().into_bytes();
        server.call_with(
            Method::POST,
            "/v1/messages",
            Some("cms-token"),
            &[("idempotency-key", "order-42")],
            Some(("application/json", body)),
        )
    };
    let long = "Ihre Zahlung ist fällig. ".repeat(12);
    let long: &'static str = long.leak();
    let first = send(long).await;
    assert!(!first.headers.contains_key("idempotent-replayed"));
    let first = first.assert_status(202);
    let again = send(long).await;
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let again = again.assert_status(202);
    assert_eq!(
        first["id"], again["id"],
        "a multi-part repeat is recognised"
    );
    send("something else")
        .await
        .assert_error(409, "idempotency_conflict", None);
    // The recipient opts out: new sends are refused, but a retry of the request accepted before is still
    // that message (a CMS retrying after a timeout must not read a refusal), and a changed body conflicts.
    server
        .post_json("/v1/optouts", "admin-token", json!({"number": TO}))
        .await
        .assert_status(201);
    let replayed = send(long).await;
    assert_eq!(replayed.headers["idempotent-replayed"], "true");
    assert_eq!(replayed.assert_status(202)["id"], first["id"]);
    send("something else")
        .await
        .assert_error(409, "idempotency_conflict", None);
    let batch = server
        .post_json(
            "/v1/messages/batch",
            "cms-token",
            json!({"messages": [
                {"to": TO, "text": long, "idempotency_key": "order-42"},
                {"to": TO, "text": "new", "idempotency_key": "order-43"},
            ]}),
        )
        .await
        .assert_status(200);
    let results = &batch["results"];
    assert_eq!(
        (&results[0]["http_status"], &results[0]["replayed"]),
        (&json!(202), &json!(true)),
        "{batch}"
    );
    assert_eq!(results[0]["accepted"]["id"], first["id"], "{batch}");
    assert_eq!(results[1]["http_status"], 422, "{batch}");
    assert_eq!(results[1]["error"]["code"], "opted_out", "{batch}");
    let page = server
        .get("/v1/messages", "cms-token")
        .await
        .assert_status(200);
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    // Times always carry milliseconds, three digits, so they sort as text (jiff alone drops zeros).
    for field in ["created_at", "updated_at"] {
        let at = page["messages"][0][field].as_str().unwrap();
        assert!(
            at.len() == "2026-11-23T03:51:32.720Z".len() && at.as_bytes()[19] == b'.',
            "{field}: {at}"
        );
    }
}

/// The record says when a message was said, not only when it was accepted: `sent_at` (its last part) and
/// `delivered_at` (its last report) in the message, the lists and the export, set only once it is sent or
/// delivered.
#[tokio::test]
async fn the_record_says_when_a_message_was_sent_and_delivered() {
    let clock = ManualClock::new("2026-11-23T10:00:00Z".parse().unwrap());
    let server = serve_with(OpenOptions {
        clock: Arc::new(clock.clone()),
        ..OpenOptions::default()
    })
    .await;
    let id = server.send(TO, "Your plan is ready").await;
    let uuid: uuid::Uuid = id.parse().unwrap();
    let fields = |m: &Value| {
        (
            m["created_at"].clone(),
            m["sent_at"].clone(),
            m["delivered_at"].clone(),
        )
    };
    let queued = server
        .get(&format!("/v1/messages/{id}"), "reader-token")
        .await
        .assert_status(200);
    assert_eq!(
        fields(&queued),
        (json!("2026-11-23T10:00:00.000Z"), json!(null), json!(null))
    );

    clock.advance(Duration::from_secs(3600));
    server.first_part_sent_on_m1(uuid).await;
    clock.advance(Duration::from_secs(90));
    server
        .store
        .record_report(ReportIn {
            modem: "m1".into(),
            tp_mr: 7,
            recipient: TO.into(),
            status: 0,
            discharged_at: None,
        })
        .await
        .unwrap();
    let expected = (
        json!("2026-11-23T10:00:00.000Z"),
        json!("2026-11-23T11:00:00.000Z"),
        json!("2026-11-23T11:01:30.000Z"),
    );
    let delivered = server
        .get(&format!("/v1/messages/{id}"), "reader-token")
        .await
        .assert_status(200);
    assert_eq!(delivered["status"], "delivered", "{delivered}");
    assert_eq!(fields(&delivered), expected);
    assert_eq!(delivered["api_key"], "cms", "{delivered}");
    let listed = server
        .get("/v1/messages?status=delivered", "reader-token")
        .await
        .assert_status(200);
    assert_eq!(fields(&listed["messages"][0]), expected);

    let export = server.get("/v1/messages/export.csv", "reader-token").await;
    let text = String::from_utf8(export.body.to_vec()).unwrap();
    let mut lines = text.split("\r\n");
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(
        (column("status"), column("sent_at"), column("delivered_at")),
        (
            "delivered",
            "2026-11-23T11:00:00.000Z",
            "2026-11-23T11:01:30.000Z"
        )
    );
    // Session 1's columns keep their places; the new ones come last.
    assert_eq!(
        header[..14].join(","),
        "id,direction,status,to,from,text,parts,encoding,priority,reference,modem,created_at,updated_at,error"
    );
    assert_eq!(
        header[14..].join(","),
        "sent_at,delivered_at,category,error_code,send_at,expires_at,tz,metadata,api_key,region"
    );
    assert_eq!(column("category"), "standard");
    assert_eq!(column("api_key"), "cms", "the key that sent it");

    // A reply: sent by the debtor's phone at 11:05 (the SMSC's timestamp), stored when it reached us.
    clock.advance(Duration::from_secs(240));
    let reply = InboundPart {
        modem: "m1".into(),
        pdu_hex: "07911326040000F0040B911346610089F60000".into(),
        content: InboundContent::Decoded {
            sender: TO.into(),
            text: "STOP".into(),
            encoding: TextEncoding::Gsm7,
            sent_at: Some("2026-11-23T11:05:00Z".parse().unwrap()),
            concat: None,
        },
    };
    server.store.record_inbound(reply).await.unwrap();
    let number = TO.replace('+', "%2B");
    let conversation = server
        .get(&format!("/v1/conversations/{number}"), "reader-token")
        .await
        .assert_status(200);
    let received = &conversation["messages"][1];
    assert_eq!(received["status"], "received", "{conversation}");
    assert_eq!(received["api_key"], json!(null), "a reply has no key");
    assert_eq!(
        fields(received),
        (
            json!("2026-11-23T11:05:30.000Z"),
            json!("2026-11-23T11:05:00.000Z"),
            json!(null)
        )
    );
}

/// A CMS retrying a scheduled send after its time (it never heard the first answer) must hear about the
/// message it sent, not that `send_at` has passed.
#[tokio::test]
async fn a_repeat_of_a_scheduled_send_after_its_time_is_still_that_message() {
    let clock = ManualClock::new("2026-11-23T10:00:00Z".parse().unwrap());
    let options = OpenOptions {
        clock: Arc::new(clock.clone()),
        ..OpenOptions::default()
    };
    let api_clock = clock.clone();
    let server = start(options, move |backend| {
        let metrics = Arc::new(Metrics::default());
        let mut state = AppState::new(backend, Arc::new(Auth::new(&keys())), metrics);
        state.default_region = Some(Region(phonenumber::country::Id::DE));
        state.clock = Arc::new(move || api_clock.now());
        state
    })
    .await;
    async fn scheduled(server: &Server, key: &str, text: &str) -> Answer {
        let body = json!({"to": TO, "text": text, "send_at": "2026-11-23T12:00:00Z"});
        server
            .call_with(
                Method::POST,
                "/v1/messages",
                Some("cms-token"),
                &[("idempotency-key", key)],
                Some(("application/json", body.to_string().into_bytes())),
            )
            .await
    }
    let send = |key, text| scheduled(&server, key, text);
    let first = send("reminder-7", "Due today").await.assert_status(202);
    clock.advance(Duration::from_secs(3 * 3600));
    let again = send("reminder-7", "Due today").await;
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.assert_status(202)["id"], first["id"]);
    send("reminder-7", "Due tomorrow")
        .await
        .assert_error(409, "idempotency_conflict", None);
    send("reminder-8", "Due today")
        .await
        .assert_error(422, "invalid_time", Some("send_at"));
    let batch = server
        .post_json(
            "/v1/messages/batch",
            "cms-token",
            json!({"messages": [{"to": TO, "text": "Due today", "send_at": "2026-11-23T12:00:00Z",
                                 "idempotency_key": "reminder-7"}]}),
        )
        .await
        .assert_status(200);
    assert_eq!(batch["results"][0]["replayed"], true, "{batch}");
    assert_eq!(
        batch["results"][0]["accepted"]["id"], first["id"],
        "{batch}"
    );
    // The header on a batch would not make it safe to retry: refused, nothing stored.
    let before = server.get("/v1/messages", "cms-token").await.json()["messages"].clone();
    let body = json!({"messages": [{"to": TO, "text": "Due today"}]});
    server
        .call_with(
            Method::POST,
            "/v1/messages/batch",
            Some("cms-token"),
            &[("idempotency-key", "batch-1")],
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await
        .assert_error(422, "invalid_idempotency_key", Some("Idempotency-Key"));
    let after = server.get("/v1/messages", "cms-token").await.json()["messages"].clone();
    assert_eq!(before, after);
}

#[tokio::test]
async fn list_filters_and_cursor_pages() {
    let server = serve().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(server.send(TO, &format!("Reminder {i}")).await);
    }
    server.send("+4915223456789", "Other person").await;
    server.receive(TO, "I will pay", "00AA").await;

    // Page through the outbound messages to TO, two at a time.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let cursor = after.map(|c| format!("&after={c}")).unwrap_or_default();
        let page = server
            .get(
                &format!("/v1/messages?direction=outbound&to=0151%2023456789&limit=2{cursor}"),
                "reader-token",
            )
            .await
            .assert_status(200);
        let messages = page["messages"].as_array().unwrap();
        assert!(messages.len() <= 2);
        seen.extend(
            messages
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every message once, in order");

    let inbound = server
        .get("/v1/messages?direction=inbound", "reader-token")
        .await
        .assert_status(200);
    assert_eq!(inbound["messages"].as_array().unwrap().len(), 1);
    assert_eq!(inbound["messages"][0]["from"], TO);
    assert_eq!(
        inbound["messages"][0]["to"], M1_NUMBER,
        "the SIM it came in on"
    );
    assert_eq!(inbound["messages"][0]["status"], "received");
    let queued = server
        .get("/v1/messages?status=queued&limit=1000", "reader-token")
        .await
        .assert_status(200);
    assert_eq!(queued["messages"].as_array().unwrap().len(), 6);
    let future = server
        .get("/v1/messages?since=2999-01-01T00:00:00Z", "reader-token")
        .await
        .assert_status(200);
    assert_eq!(future["messages"], json!([]));

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
async fn conversations_hold_both_directions_in_time_order() {
    let server = serve().await;
    let first = server.send(TO, "You owe 20 EUR").await;
    server.receive(TO, "Paid yesterday", "00BB").await;
    let last = server.send(TO, "Thank you").await;
    server.send("+4915223456789", "Someone else").await;
    let page = server
        .get("/v1/conversations/%2B4915123456789", "reader-token")
        .await
        .assert_status(200);
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["You owe 20 EUR", "Paid yesterday", "Thank you"]);
    assert_eq!(
        (
            page["messages"][0]["id"].as_str(),
            page["messages"][2]["id"].as_str()
        ),
        (Some(&*first), Some(&*last))
    );
    assert_eq!(page["next"], Value::Null);
    server
        .get("/v1/conversations/12", "reader-token")
        .await
        .assert_error(422, "invalid_number", Some("number"));
}

#[tokio::test]
async fn batch_reports_each_item_and_stores_the_valid_ones() {
    let server = serve().await;
    let answer = server
        .post_json(
            "/v1/messages/batch",
            "cms-token",
            json!({"messages": [
                {"to": TO, "text": "one", "idempotency_key": "b-1"},
                {"to": "12", "text": "x"},
                {"to": TO, "text": ""},
                {"to": "+4915223456789", "text": "two"},
            ]}),
        )
        .await;
    let results = answer.assert_status(200)["results"].clone();
    let statuses: Vec<u64> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["http_status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [202, 422, 422, 202]);
    assert_eq!(
        (
            results[1]["index"].as_u64(),
            results[1]["error"]["code"].as_str()
        ),
        (Some(1), Some("invalid_number"))
    );
    assert_eq!(results[2]["error"]["code"], "empty_text");
    assert_eq!(results[0]["accepted"]["to"], TO);
    assert_eq!(results[0]["accepted"]["status"], "queued");
    let page = server
        .get("/v1/messages", "cms-token")
        .await
        .assert_status(200);
    assert_eq!(page["messages"].as_array().unwrap().len(), 2);
    // The same key again is a repeat, not a new message.
    let again = server
        .post_json(
            "/v1/messages/batch",
            "cms-token",
            json!({"messages": [{"to": TO, "text": "one", "idempotency_key": "b-1"}]}),
        )
        .await;
    let again = again.assert_status(200)["results"][0].clone();
    assert_eq!(
        (
            again["http_status"].as_u64(),
            again["replayed"].as_bool(),
            again["accepted"]["id"].clone()
        ),
        (Some(202), Some(true), results[0]["accepted"]["id"].clone())
    );
    assert_eq!(
        results[0].get("replayed"),
        None,
        "a new message is no repeat"
    );

    let too_many: Vec<Value> = (0..1001).map(|_| json!({"to": TO, "text": "x"})).collect();
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
async fn export_csv_streams_every_page() {
    let server = serve().await;
    for i in 0..5 {
        server
            .send(TO, &format!("Payment {i}, due \"today\""))
            .await;
    }
    server
        .receive(TO, "=HYPERLINK(\"http://evil\")", "00CC")
        .await;
    // More than one of the export's internal pages (1,000 messages each).
    let batch: Vec<Value> = (0..1000)
        .map(|i| json!({"to": "+4915223456789", "text": format!("Bulk {i}")}))
        .collect();
    server
        .post_json(
            "/v1/messages/batch",
            "cms-token",
            json!({ "messages": batch }),
        )
        .await
        .assert_status(200);
    server
        .get("/v1/messages/export.csv?limit=2", "reader-token")
        .await
        .assert_error(422, "unknown_field", Some("limit"));
    let answer = server.get("/v1/messages/export.csv", "reader-token").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = String::from_utf8(answer.body.to_vec()).unwrap();
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines.len(),
        1 + 1006,
        "header + every row, across two pages"
    );
    assert!(lines[0].starts_with("id,direction,status,to"));
    assert!(
        lines[1].contains(",\"Payment 0, due \"\"today\"\"\","),
        "{}",
        lines[1]
    );
    assert!(
        lines[6].contains(",\"'=HYPERLINK("),
        "formula defused: {}",
        lines[6]
    );
    assert!(lines[1006].contains(",Bulk 999,"), "{}", lines[1006]);
    // An interrupted export resumes after the last id received.
    let last_received = lines[3].split(',').next().unwrap();
    let rest = server
        .get(
            &format!("/v1/messages/export.csv?after={last_received}"),
            "reader-token",
        )
        .await;
    let rest = String::from_utf8(rest.body.to_vec()).unwrap();
    let rest: Vec<&str> = rest.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(rest[1..], lines[4..]);
    let filtered = server
        .get("/v1/messages/export.csv?direction=inbound", "reader-token")
        .await;
    assert_eq!(
        String::from_utf8_lossy(&filtered.body)
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .count(),
        2
    );
    // For Excel: the same file after a byte order mark; without asking, none.
    assert!(!text.starts_with('\u{FEFF}'));
    let excel = server
        .get("/v1/messages/export.csv?bom=true", "reader-token")
        .await;
    let excel = String::from_utf8(excel.body.to_vec()).unwrap();
    assert_eq!(excel.strip_prefix('\u{FEFF}'), Some(text.as_str()));
}

#[tokio::test]
async fn cancel_stops_a_queued_message_once() {
    let server = serve().await;
    let id = server.send(TO, "Cancel me").await;
    let cancelled = server
        .post(&format!("/v1/messages/{id}/cancel"), "cms-token")
        .await
        .assert_status(200);
    assert_eq!(cancelled["status"], "cancelled");
    // A retried cancel is answered with the message, and records nothing more.
    let again = server
        .post(&format!("/v1/messages/{id}/cancel"), "cms-token")
        .await
        .assert_status(200);
    assert_eq!(again["status"], "cancelled");
    let detail = server
        .get(&format!("/v1/messages/{id}"), "cms-token")
        .await
        .assert_status(200);
    let events = detail["events"].as_array().unwrap();
    let last = events.last().unwrap().clone();
    assert_eq!(last["actor"], "api:cms", "{detail}");
    let cancels = events.iter().filter(|e| e["kind"] == "cancelled").count();
    assert_eq!(cancels, 1, "{detail}");
}

/// A queued message in a list says why it waits, as it does read alone; the rest of a multipart message
/// half sent names the modem it must wait for.
#[tokio::test]
async fn listed_queued_messages_say_why_they_wait() {
    let server = serve().await;
    let whole = server.send(TO, "hello").await;
    let half = server.send(TO, &"two parts ".repeat(20)).await;
    let id: uuid::Uuid = half.parse().unwrap();
    server.first_part_sent_on_m1(id).await;
    server
        .store
        .requeue(id, "m1", "port lost", Handback::NothingWritten, None)
        .await
        .unwrap();
    server
        .post("/v1/modems/m1/pause", "admin-token")
        .await
        .assert_status(200);

    let alone = |id: String| {
        let server = &server;
        async move {
            let message = server
                .get(&format!("/v1/messages/{id}"), "reader-token")
                .await
                .assert_status(200);
            message["error"].as_str().unwrap_or_default().to_owned()
        }
    };
    let (whole_error, half_error) = (alone(whole.clone()).await, alone(half.clone()).await);
    assert_eq!(
        whole_error,
        "waiting: no modem can send it now (m1 is paused)"
    );
    assert!(
        half_error.starts_with("waiting for modem m1, which sent its first parts"),
        "{half_error}"
    );
    let number = TO.replace('+', "%2B");
    for path in [
        "/v1/messages?status=queued".to_owned(),
        format!("/v1/conversations/{number}"),
    ] {
        let page = server.get(&path, "reader-token").await.assert_status(200);
        let listed: HashMap<&str, &Value> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["id"].as_str().unwrap(), &m["error"]))
            .collect();
        assert_eq!(
            listed[whole.as_str()],
            &json!(whole_error),
            "{path}: {page}"
        );
        assert_eq!(listed[half.as_str()], &json!(half_error), "{path}: {page}");
    }
}

#[tokio::test]
async fn modems_pause_resume_and_metrics() {
    let server = serve().await;
    // One part sent through m1 today, as its worker would report it.
    let id: uuid::Uuid = server.send(TO, "hello").await.parse().unwrap();
    server.first_part_sent_on_m1(id).await;
    let modems = server
        .get("/v1/modems", "reader-token")
        .await
        .assert_status(200);
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
    assert_eq!(m1["answered_at"], "2026-11-23T19:59:30.250Z");
    assert_eq!(
        m1["counters"],
        json!({"parts_sent": 1, "parts_failed": 0, "received": 0})
    );
    assert_eq!(
        (&m1["sent_today"], &m1["daily_cap"]),
        (&json!(1), &json!(200))
    );
    let paused = server
        .post("/v1/modems/m1/pause", "admin-token")
        .await
        .assert_status(200);
    assert_eq!(paused["state"], "paused");
    let resumed = server
        .post("/v1/modems/m1/resume", "admin-token")
        .await
        .assert_status(200);
    assert_eq!(resumed["state"], "ready");

    server
        .post("/v1/modems/m1/pause", "admin-token")
        .await
        .assert_status(200);
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
            .any(|l| l.starts_with("modemgate_queue_depth "))
    );
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains("modemgate_modem_state{modem=\"m1\",state=\"paused\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("modemgate_modem_signal_rssi{modem=\"m1\"} 21"),
        "{text}"
    );
    for line in [
        "modemgate_modem_sent_today{modem=\"m1\"} 1",
        "modemgate_modem_daily_cap{modem=\"m1\"} 200",
        "modemgate_modem_parts_total{modem=\"m1\",outcome=\"sent\"} 1",
        "modemgate_modem_parts_total{modem=\"m1\",outcome=\"failed\"} 0",
        "modemgate_modem_received_total{modem=\"m1\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
}

#[tokio::test]
async fn optouts_are_added_and_removed_by_admins() {
    let server = serve().await;
    let created = server
        .post_json(
            "/v1/optouts",
            "admin-token",
            json!({"number": "0151 23456789", "note": "asked"}),
        )
        .await;
    let created = created.assert_status(201);
    assert_eq!(
        (created["number"].as_str(), created["actor"].as_str()),
        (Some(TO), Some("api:admin"))
    );
    assert!(server.store.is_opted_out(TO).await.unwrap());
    assert_eq!(created["note"], "asked");
    assert_eq!(created["source"], "api", "lifted only through the API");
    // Again, with another note: the original record stands, answered 200.
    let again = server
        .post_json(
            "/v1/optouts",
            "admin-token",
            json!({"number": TO, "note": "asked again"}),
        )
        .await
        .assert_status(200);
    assert_eq!(again, created);
    server
        .post_json("/v1/optouts", "admin-token", json!({"numbr": "1"}))
        .await
        .assert_error(422, "unknown_field", Some("numbr"));
    let delete = |token| {
        server.call(
            Method::DELETE,
            "/v1/optouts/%2B4915123456789",
            Some(token),
            None,
        )
    };
    assert_eq!(delete("admin-token").await.status, StatusCode::NO_CONTENT);
    assert!(!server.store.is_opted_out(TO).await.unwrap());
    delete("admin-token")
        .await
        .assert_error(404, "not_found", None);
    // The audit keeps both changes, who made them and why, oldest first; by number too (national form).
    let audit = server
        .get("/v1/optouts/audit?number=0151%2023456789", "admin-token")
        .await
        .assert_status(200);
    let changes: Vec<_> = audit["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["number"].clone(),
                c["opted_out"].clone(),
                c["actor"].clone(),
                c["detail"].clone(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            (json!(TO), json!(true), json!("api:admin"), json!("asked")),
            (json!(TO), json!(false), json!("api:admin"), Value::Null),
        ],
        "{audit}"
    );
    let everyone = server.get("/v1/optouts/audit", "admin-token").await;
    assert_eq!(everyone.assert_status(200)["changes"], audit["changes"]);
    server
        .get("/v1/optouts/audit", "cms-token")
        .await
        .assert_error(403, "forbidden", None);
}

#[tokio::test]
async fn state_from_config_applies_keys_region_and_body_limit() {
    let config = Config::parse(
        "[server]\ndefault_region = \"US\"\nbody_limit = 1024\n\
         [[api_keys]]\nname = \"cms\"\ntoken = \"config-token\"\nscopes = [\"send\"]\n",
    )
    .unwrap();
    let server = start(OpenOptions::default(), |backend| {
        AppState::from_config(&config, backend, Arc::default())
    })
    .await;
    let form = |body: String| {
        server.call(
            Method::POST,
            "/v1/messages",
            Some("config-token"),
            Some(("application/x-www-form-urlencoded", body.into_bytes())),
        )
    };
    // A US national number, as the demo's curl sends it.
    let accepted = form("to=4158906431&text=hello".into())
        .await
        .assert_status(202);
    assert_eq!(accepted["to"], "+14158906431");
    form(format!("to=4158906431&text={}", "a".repeat(2000)))
        .await
        .assert_error(413, "payload_too_large", None);
    server
        .get("/v1/messages", "config-token")
        .await
        .assert_error(403, "forbidden", None);
}

#[tokio::test]
async fn openapi_lists_every_served_route() {
    let server = serve().await;
    let doc = server
        .get("/openapi.json", "cms-token")
        .await
        .assert_status(200);
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

/// Where `value` strays from `schema` (the document's own `$ref`s and `allOf`s followed): fields it does
/// not list, and JSON types it does not allow. Enough to keep the hand-written schemas honest against
/// what the routes really answer; a full JSON Schema validator is not a dependency worth carrying.
fn strays(doc: &Value, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    if let Some(name) = schema["$ref"].as_str() {
        let name = name.rsplit('/').next().unwrap();
        return strays(doc, &doc["components"]["schemas"][name], value, at, out);
    }
    if let Some(all) = schema["allOf"].as_array() {
        let (mut merged, mut required) = (serde_json::Map::new(), Vec::new());
        for part in all {
            let part = match part["$ref"].as_str() {
                Some(name) => &doc["components"]["schemas"][name.rsplit('/').next().unwrap()],
                None => part,
            };
            if let Some(properties) = part["properties"].as_object() {
                merged.extend(properties.clone());
            }
            required.extend(part["required"].as_array().cloned().unwrap_or_default());
        }
        let merged = json!({"type": "object", "properties": merged, "required": required});
        return strays(doc, &merged, value, at, out);
    }
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let allowed: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => vec![kind],
    };
    let integer_as_number = kind == "integer" && allowed.contains(&"number");
    if !(allowed.contains(&kind) || integer_as_number) {
        out.push(format!("{at}: {kind}, documented as {allowed:?}"));
    }
    if let (Value::Object(fields), Some(required)) = (value, schema["required"].as_array()) {
        for name in required.iter().filter_map(Value::as_str) {
            if !fields.contains_key(name) {
                out.push(format!("{at}.{name}: required, missing"));
            }
        }
    }
    if let (Value::Object(fields), Some(properties)) = (value, schema["properties"].as_object()) {
        for (name, field) in fields {
            match properties.get(name) {
                Some(documented) => strays(doc, documented, field, &format!("{at}.{name}"), out),
                None => out.push(format!("{at}.{name}: not documented")),
            }
        }
    }
    if let (Value::Array(items), Some(schema)) = (value, schema.get("items")) {
        for item in items {
            strays(doc, schema, item, &format!("{at}[]"), out);
        }
    }
}

#[tokio::test]
async fn answers_match_the_openapi_document() {
    let server = serve().await;
    let doc = server.get("/openapi.json", "cms-token").await.json();
    let accepted = server
        .post_json(
            "/v1/messages",
            "cms-token",
            json!({"to": TO, "text": "hello"}),
        )
        .await;
    let id = accepted.json()["id"].as_str().unwrap().to_owned();
    let batch = server
        .post_json(
            "/v1/messages/batch",
            "cms-token",
            json!({"messages": [{"to": TO, "text": "a"}, {"to": "nope", "text": "b"}]}),
        )
        .await;
    let cancelled = server
        .post(&format!("/v1/messages/{id}/cancel"), "cms-token")
        .await;
    let optout = server
        .post_json(
            "/v1/optouts",
            "admin-token",
            json!({"number": "+4915123456780"}),
        )
        .await;
    let invalid = server
        .post_json(
            "/v1/messages",
            "cms-token",
            json!({"to": "nope", "text": "x"}),
        )
        .await;
    let answers = [
        ("/v1/messages", "post", accepted),
        ("/v1/messages/batch", "post", batch),
        ("/v1/messages/{id}/cancel", "post", cancelled),
        ("/v1/optouts", "post", optout),
        ("/v1/messages", "post", invalid),
        (
            "/v1/messages/{id}",
            "get",
            server.get(&format!("/v1/messages/{id}"), "cms-token").await,
        ),
        (
            "/v1/messages",
            "get",
            server.get("/v1/messages", "cms-token").await,
        ),
        (
            "/v1/conversations/{number}",
            "get",
            server
                .get(&format!("/v1/conversations/{TO}"), "cms-token")
                .await,
        ),
        (
            "/v1/modems",
            "get",
            server.get("/v1/modems", "cms-token").await,
        ),
        (
            "/v1/modems/{id}/pause",
            "post",
            server.post("/v1/modems/m1/pause", "admin-token").await,
        ),
        (
            "/v1/optouts",
            "get",
            server.get("/v1/optouts", "admin-token").await,
        ),
        (
            "/v1/optouts/audit",
            "get",
            server.get("/v1/optouts/audit", "admin-token").await,
        ),
        ("/readyz", "get", server.get("/readyz", "cms-token").await),
        ("/healthz", "get", server.get("/healthz", "cms-token").await),
        (
            "/v1/modems/{id}/resume",
            "post",
            server.post("/v1/modems/m1/resume", "admin-token").await,
        ),
    ];
    let mut out = Vec::new();
    for (path, method, answer) in answers {
        let status = answer.status.as_u16().to_string();
        let responses = &doc["paths"][path][method]["responses"];
        let response = match &responses[&status] {
            Value::Null => &responses[&format!("{}XX", &status[..1])],
            documented => documented,
        };
        let schema = &response["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{method} {path} {status}: no schema");
        strays(
            &doc,
            schema,
            &answer.json(),
            &format!("{method} {path} {status}"),
            &mut out,
        );
    }
    assert!(
        out.is_empty(),
        "answers stray from /openapi.json:\n{}",
        out.join("\n")
    );
}

#[tokio::test]
async fn webhook_payloads_match_the_openapi_document() {
    let server = serve().await;
    let doc = server.get("/openapi.json", "cms-token").await.json();
    let message = MessageEvent {
        message_id: Uuid::now_v7(),
        to: TO.into(),
        parts: 2,
        modem: Some("m1".into()),
        reference: Some("acct-7".into()),
        metadata: json!({"debtor": 42}).as_object().cloned(),
        error: Some("+CMS ERROR: 500 (unknown error)".into()),
        error_code: Some(500),
        category: modemgate::store::Category::Confirmation,
    };
    let events = [
        Event::MessageSent(message.clone()),
        Event::MessageDelivered(message.clone()),
        Event::MessageFailed(message.clone()),
        Event::MessageExpired(message.clone()),
        Event::MessageUnknown(message),
        Event::MessageReceived(ReceivedEvent {
            message_id: Uuid::now_v7(),
            from: TO.into(),
            to: None,
            text: "Kann ich Freitag zahlen?".into(),
            parts: 1,
            modem: "m1".into(),
            sent_at: Some(Timestamp::now()),
            intent: None,
            needs_agent: true,
        }),
        Event::OptoutCreated(OptoutEvent {
            number: TO.into(),
            source: "keyword".into(),
            keyword: Some("STOP".into()),
            text: None,
            note: None,
            message_id: Some(Uuid::nil()),
        }),
    ];
    let documented: Vec<&String> = doc["webhooks"].as_object().unwrap().keys().collect();
    assert_eq!(
        documented.len(),
        webhook::EventKind::ALL.len(),
        "{documented:?}"
    );
    let mut out = Vec::new();
    for event in events {
        let name = event.kind().as_str();
        let schema =
            &doc["webhooks"][name]["post"]["requestBody"]["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{name} is not documented");
        let payload = Envelope::new(event, Timestamp::now()).payload();
        strays(&doc, schema, &payload, name, &mut out);
        let allowed = &schema["allOf"][1]["properties"]["type"]["const"];
        assert_eq!(&payload["type"], allowed, "{name}");
    }
    assert!(
        out.is_empty(),
        "payloads stray from /openapi.json:\n{}",
        out.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------------------
// Webhooks: a fake outbox, real receivers.

#[derive(Debug, Clone)]
struct Row {
    item: OutboxItem,
    in_order_of: String,
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
            target: None,
        },
        in_order_of: envelope.event.in_order_of(),
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
    fn next_due(
        &self,
        lane: &Lane,
        now: Timestamp,
        limit: usize,
    ) -> OutboxResult<'_, Vec<OutboxItem>> {
        let rows = self.rows.lock().unwrap();
        let mut seen = std::collections::HashSet::new();
        let due = rows
            .iter()
            .filter(|r| !r.delivered && r.item.target.as_deref() == lane.target())
            .filter(|r| seen.insert(r.in_order_of.clone()))
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
            error_code: None,
            category: modemgate::store::Category::Standard,
        }),
        Timestamp::now(),
    )
}

type ReceiverLog = Arc<Mutex<Vec<(String, u16)>>>;

/// A webhook receiver on 127.0.0.1.
struct Receiver {
    url: String,
    /// (event id, status answered), in arrival order.
    log: ReceiverLog,
    /// How many requests it accepted (2xx).
    accepted: tokio::sync::watch::Receiver<usize>,
    /// How many requests it answered at all.
    received: tokio::sync::watch::Receiver<usize>,
}

/// Checks every signature, answers 500 to the first `failures` requests, then 200.
async fn receiver(secret: &'static str, failures: usize) -> Receiver {
    let log: ReceiverLog = Arc::default();
    let (accepted_tx, accepted) = tokio::sync::watch::channel(0);
    let (received_tx, received) = tokio::sync::watch::channel(0);
    let handler_log = log.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let log = handler_log.clone();
            let accepted_tx = accepted_tx.clone();
            let received_tx = received_tx.clone();
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
                if status == 200 {
                    accepted_tx.send_modify(|n| *n += 1);
                }
                received_tx.send_modify(|n| *n += 1);
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        url,
        log,
        accepted,
        received,
    }
}

#[tokio::test]
async fn webhooks_are_signed_retried_with_backoff_and_ordered_per_message() {
    let all = receiver("secret-all", 2).await;
    let only_delivered = receiver("secret-delivered", 0).await;
    let targets = vec![
        Target::new(&all.url, "secret-all", None).unwrap(),
        Target::new(
            &only_delivered.url,
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
    let log = all.log.lock().unwrap().clone();
    assert_eq!(log.iter().filter(|(_, s)| *s == 500).count(), 2, "{log:?}");
    // a's second event is never posted before a's first was accepted.
    let first_a_ok = log
        .iter()
        .position(|(id, s)| index[id] == 0 && *s == 200)
        .unwrap();
    let first_a2 = log.iter().position(|(id, _)| index[id] == 2).unwrap();
    assert!(first_a2 > first_a_ok, "out of order: {log:?}");
    // The second webhook only subscribed to message.delivered.
    let delivered_only: Vec<usize> = only_delivered
        .log
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
    let round = deliverer.deliver_due(&Lane::Shared).await.unwrap();
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

/// A store whose outbox writes every event type for `targets`, and one message that was sent and then
/// delivered: two outbox rows for each webhook.
async fn store_with_a_delivered_message(path: &std::path::Path, targets: &[Target]) -> Store {
    let store = Store::open(
        path,
        OpenOptions {
            webhooks: targets.iter().map(Target::subscription).collect(),
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let id = store
        .accept(modemgate::store::NewMessage {
            api_key: "cms".into(),
            idempotency_key: None,
            to: "+15550001111".into(),
            text: "hello".into(),
            encoding: modemgate::store::TextEncoding::Gsm7,
            parts: vec![modemgate::store::NewPart {
                tpdu_length: 18,
                pdu_hex: "0011000B915155001011F10000AA05E8329BFD06".into(),
            }],
            priority: 0,
            send_at: None,
            expires_at: None,
            reference: None,
            metadata: None,
            tz: None,
            region: None,
            category: modemgate::store::Category::Standard,
        })
        .await
        .unwrap()
        .id;
    store.claim(id, "m1", None).await.unwrap();
    store.part_submitting(id, 1, "m1", None).await.unwrap();
    store.part_sent(id, 1, "m1", 9).await.unwrap();
    store
        .record_report(modemgate::store::ReportIn {
            modem: "m1".into(),
            tp_mr: 9,
            recipient: "+15550001111".into(),
            status: 0,
            discharged_at: None,
        })
        .await
        .unwrap();
    store
}

const FAST_RETRIES: Backoff = Backoff {
    base: Duration::from_millis(20),
    cap: Duration::from_millis(40),
};

#[tokio::test]
async fn webhooks_from_the_store_outbox_are_delivered_in_order_and_attempts_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("modemgate.db");
    let mut hook = receiver("secret-store", 1).await;
    let target = Target::new(&hook.url, "secret-store", None).unwrap();
    // Real state changes write the outbox rows: sent, then delivered, for one message.
    let store = store_with_a_delivered_message(&path, std::slice::from_ref(&target)).await;
    let deliverer = Deliverer::new(Arc::new(store.clone()), vec![target], FAST_RETRIES);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(deliverer.run(cancel.clone()));
    tokio::time::timeout(Duration::from_secs(20), hook.accepted.wait_for(|n| *n == 2))
        .await
        .unwrap()
        .unwrap();
    cancel.cancel();
    task.await.unwrap();

    // The first event failed once; the second waited for it although it was due.
    let order: Vec<(String, u16)> = hook.log.lock().unwrap().clone();
    assert_eq!(order.len(), 3, "{order:?}");
    assert_eq!(
        (order[0].0 == order[1].0, order[0].1, order[1].1),
        (true, 500, 200)
    );
    assert!(order[2].0 != order[0].0 && order[2].1 == 200, "{order:?}");
    let db = rusqlite::Connection::open(&path).unwrap();
    let count = |sql: &str| db.query_row(sql, [], |row| row.get::<_, i64>(0)).unwrap();
    assert_eq!(
        count("SELECT count(*) FROM webhook_outbox WHERE delivered_at IS NULL"),
        0
    );
    assert_eq!(count("SELECT count(*) FROM webhook_attempts"), 3);
    let types: Vec<String> = db
        .prepare("SELECT event_type FROM webhook_outbox ORDER BY id")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(types, ["message.sent", "message.delivered"]);
    assert_eq!(
        count("SELECT count(*) FROM webhook_attempts WHERE status = 500"),
        1
    );
    assert_eq!(
        count("SELECT attempts FROM webhook_outbox ORDER BY id LIMIT 1"),
        2
    );
}

/// A webhook receiver that takes requests and never answers; `taken` counts them.
async fn silent_receiver() -> (String, tokio::sync::watch::Receiver<usize>) {
    let (taken_tx, taken) = tokio::sync::watch::channel(0);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            taken_tx.send_modify(|n| *n += 1);
            std::future::pending::<StatusCode>()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, taken)
}

#[tokio::test]
async fn a_webhook_that_never_answers_does_not_hold_back_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("modemgate.db");
    let mut up = receiver("secret-up", 0).await;
    let (silent_url, mut taken) = silent_receiver().await;
    let targets = || {
        vec![
            Target::new(&silent_url, "secret-silent", None).unwrap(),
            Target::new(&up.url, "secret-up", None).unwrap(),
        ]
    };
    let store = store_with_a_delivered_message(&path, &targets()).await;
    // Far longer than the test may take: a round that waited for the silent receiver would not end.
    let deliverer = Deliverer::new(Arc::new(store.clone()), targets(), FAST_RETRIES)
        .with_timeout(Duration::from_secs(3600));
    let task = tokio::spawn(deliverer.run(CancellationToken::new()));
    tokio::time::timeout(Duration::from_secs(20), taken.wait_for(|n| *n == 1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), up.accepted.wait_for(|n| *n == 2))
        .await
        .unwrap()
        .unwrap();
    // A cancelled deliverer finishes its rounds in flight, and the silent one's never ends.
    task.abort();
    let _ = task.await;
    // The silent webhook still has its first event in flight: neither of its rows is delivered.
    assert_eq!(*taken.borrow(), 1);
    let db = rusqlite::Connection::open(&path).unwrap();
    let waiting: i64 = db
        .query_row(
            "SELECT count(*) FROM webhook_outbox WHERE delivered_at IS NULL AND target = ?1",
            [&silent_url],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(waiting, 2);
}

#[tokio::test]
async fn a_webhook_that_is_down_neither_holds_back_nor_repeats_the_others_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("modemgate.db");
    let mut up = receiver("secret-up", 0).await;
    let mut down = receiver("secret-down", usize::MAX).await;
    let targets = || {
        vec![
            Target::new(&up.url, "secret-up", None).unwrap(),
            Target::new(&down.url, "secret-down", None).unwrap(),
        ]
    };
    let store = store_with_a_delivered_message(&path, &targets()).await;
    let deliverer = Deliverer::new(Arc::new(store.clone()), targets(), FAST_RETRIES);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(deliverer.run(cancel.clone()));
    // The healthy webhook gets both events while the other keeps failing the first one.
    tokio::time::timeout(Duration::from_secs(20), up.accepted.wait_for(|n| *n == 2))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), down.received.wait_for(|n| *n >= 3))
        .await
        .unwrap()
        .unwrap();
    cancel.cancel();
    task.await.unwrap();

    let db = rusqlite::Connection::open(&path).unwrap();
    let event_ids = |url: &str| -> Vec<String> {
        db.prepare("SELECT payload FROM webhook_outbox WHERE target = ?1 ORDER BY id")
            .unwrap()
            .query_map([url], |row| row.get::<_, String>(0))
            .unwrap()
            .map(|payload| {
                let payload: Value = serde_json::from_str(&payload.unwrap()).unwrap();
                payload["id"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    let (up_events, down_events) = (event_ids(&up.url), event_ids(&down.url));
    // One row per event and webhook, the same event id for both webhooks.
    assert_eq!((up_events.len(), &up_events), (2, &down_events));
    // Each event once, in order, and nothing repeated for the other webhook's failures.
    let up_log = up.log.lock().unwrap().clone();
    let expected: Vec<(String, u16)> = up_events.iter().map(|id| (id.clone(), 200)).collect();
    assert_eq!(up_log, expected);
    // The failing webhook is retried with the first event only: the second waits for it.
    let down_log = down.log.lock().unwrap().clone();
    assert!(
        down_log
            .iter()
            .all(|(id, status)| *id == down_events[0] && *status == 500),
        "{down_log:?}"
    );
    // Every attempt names its webhook.
    let attempts = |url: &str, status: u16| -> i64 {
        db.query_row(
            "SELECT count(*) FROM webhook_attempts WHERE target = ?1 AND status = ?2",
            rusqlite::params![url, status],
            |row| row.get(0),
        )
        .unwrap()
    };
    assert_eq!(attempts(&up.url, 200), 2);
    assert!(attempts(&down.url, 500) >= 3);
    assert_eq!(
        db.query_row(
            "SELECT count(*) FROM webhook_outbox WHERE delivered_at IS NULL",
            [],
            |row| row.get::<_, i64>(0)
        )
        .unwrap(),
        2,
        "the failing webhook's two rows wait"
    );
}
