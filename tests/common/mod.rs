//! Helpers shared by the end-to-end test files: a loopback HTTP client, and a webhook receiver that checks
//! every signature.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::mpsc;

pub const TOKEN: &str = "test-token-123";
pub const WEBHOOK_SECRET: &str = "webhook-secret-0123456789";

pub struct Http {
    pub base: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Http {
        Http::with_token(addr, TOKEN)
    }

    pub fn with_token(addr: SocketAddr, token: &str) -> Http {
        Http {
            base: format!("http://{addr}"),
            token: token.to_owned(),
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, bytes) = self.raw(method, path, body).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// A text answer, such as `/metrics`.
    pub async fn text(&self, path: &str) -> String {
        let (status, bytes) = self.raw(Method::GET, path, None).await;
        assert!(status.is_success(), "GET {path}: {status}");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    async fn raw(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Bytes) {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token));
        let body = match body {
            Some(json) => {
                request = request.header("content-type", "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let response = self
            .client
            .request(request.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, json) = self.call(Method::GET, path, None).await;
        assert!(status.is_success(), "GET {path}: {status} {json}");
        json
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `POST /v1/messages` that must be accepted (202); the answer.
    pub async fn accepted(&self, body: Value) -> Value {
        let (status, answer) = self.post("/v1/messages", body).await;
        assert_eq!(status.as_u16(), 202, "{answer}");
        answer
    }
}

/// A CMS stand-in: receives webhook calls, rejects any whose signature does not verify, and hands the
/// verified payloads to the test in arrival order.
pub struct WebhookReceiver {
    pub url: String,
    events: mpsc::UnboundedReceiver<Value>,
    /// Events received while waiting for another type, kept for a later `next`.
    held: Vec<Value>,
}

impl WebhookReceiver {
    pub async fn start() -> WebhookReceiver {
        let (tx, events) = mpsc::unbounded_channel();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let header = headers
                        .get("modemgate-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    let verified = modemgate::webhook::verify(
                        WEBHOOK_SECRET.as_bytes(),
                        header,
                        &body,
                        jiff::Timestamp::now(),
                        Duration::from_secs(300),
                    );
                    if verified.is_err() {
                        return StatusCode::UNAUTHORIZED;
                    }
                    let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        WebhookReceiver {
            url,
            events,
            held: Vec::new(),
        }
    }

    /// The next event of any type (those kept by `next` first); panics if none comes within a minute.
    pub async fn next_any(&mut self) -> Value {
        if !self.held.is_empty() {
            return self.held.remove(0);
        }
        tokio::time::timeout(Duration::from_secs(60), self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("no webhook within a minute"))
            .expect("receiver stopped")
    }

    /// The next event of `kind` (others are kept for later calls); panics if none comes within a minute.
    pub async fn next(&mut self, kind: &str) -> Value {
        if let Some(i) = self.held.iter().position(|e| e["type"] == kind) {
            return self.held.remove(i);
        }
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let event = self.events.recv().await.expect("receiver stopped");
                if event["type"] == kind {
                    return event;
                }
                self.held.push(event);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {kind} webhook within a minute"))
    }
}
