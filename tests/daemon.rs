//! The whole gateway end to end: real HTTP on loopback, a real SQLite file, simulated modems on real ptys
//! driven through tokio-serial, and a webhook receiver that checks signatures.

mod common;

use common::{Http, TOKEN, WEBHOOK_SECRET, WebhookReceiver};
use modemgate::config::Config;
use modemgate::daemon::{self, StartOptions};
use modemgate::modem::job::ModemState;
use modemgate::pdu::UserData;
use modemgate::sim::{Inbound, TextEncoding};
use serde_json::json;

/// The whole gateway in-process, with simulators that answer at once.
async fn start_instant(config: &Config) -> daemon::Running {
    daemon::start(
        config,
        StartOptions {
            instant_sims: true,
            ..StartOptions::default()
        },
    )
    .await
    .unwrap()
}

fn config(dir: &std::path::Path, webhook: &str) -> Config {
    Config::parse(&format!(
        r#"{HEAD}
[[webhooks]]
url = "{webhook}"
secret = "{WEBHOOK_SECRET}"
"#,
        HEAD = head(dir, TOKEN, "")
    ))
    .unwrap()
}

/// Server, storage, one key and one simulated modem `m1` (`m1_extra` is appended to its table).
fn head(dir: &std::path::Path, token: &str, m1_extra: &str) -> String {
    head_at_rate(dir, token, "600/min", m1_extra)
}

fn head_at_rate(dir: &std::path::Path, token: &str, rate: &str, m1_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
default_region = "US"
[storage]
path = "{db}"
[[api_keys]]
name = "cms"
token = "{token}"
scopes = ["admin"]
[quiet_hours]
enabled = false
[[modems]]
id = "m1"
device = "sim:ec25"
rate = "{rate}"
{m1_extra}
"#,
        db = dir.join("gw.db").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_is_delivered_and_a_multipart_reply_comes_back_as_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut hooks = WebhookReceiver::start().await;
    let gateway = start_instant(&config(dir.path(), &hooks.url)).await;
    let http = Http::new(gateway.addr);

    // POST → 202 with the E.164 number and the cost.
    let (status, accepted) = http
        .post(
            "/v1/messages",
            json!({"to": "4158906431", "text": "Your balance is €12 [ref 7]", "reference": "acct-7"}),
        )
        .await;
    assert_eq!(status.as_u16(), 202, "{accepted}");
    assert_eq!(accepted["to"], "+14158906431");
    assert_eq!(accepted["parts"], 1);
    assert_eq!(accepted["encoding"], "gsm7");
    let id = accepted["id"].as_str().unwrap().to_owned();

    // The simulated modem received exactly that PDU...
    let sim = gateway.sim("m1").unwrap();
    let sends = sim.wait_sends(1).await.unwrap();
    assert_eq!(sends[0].submit.recipient.value, "+14158906431");
    assert_eq!(
        sends[0].submit.user_data,
        UserData::Text("Your balance is €12 [ref 7]".into())
    );
    assert!(sends[0].submit.status_report_request);

    // ... and the CMS hears `sent`, then `delivered` from the simulator's status report, signed.
    let sent = hooks.next("message.sent").await;
    assert_eq!(sent["data"]["message_id"], id.as_str());
    assert_eq!(sent["data"]["reference"], "acct-7");
    let delivered = hooks.next("message.delivered").await;
    assert_eq!(delivered["data"]["message_id"], id.as_str());
    assert_eq!(delivered["data"]["category"], "standard", "{delivered}");
    let message = http.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(message["status"], "delivered", "{message}");
    let metrics = http.text("/metrics").await;
    for line in [
        "modemgate_messages{status=\"delivered\",modem=\"m1\"} 1",
        "modemgate_queue_depth 0",
        "modemgate_send_latency_seconds_count 1",
        "modemgate_modem_state{modem=\"m1\",state=\"ready\"} 1",
        "modemgate_modem_sent_today{modem=\"m1\"} 1",
        "modemgate_modems_available 1",
        "modemgate_http_responses_total{code=\"202\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    // The part counts against the SIM the modem reports, and shows at a glance (no cap configured).
    let modems = http.get("/v1/modems").await;
    let m1 = &modems["modems"][0];
    assert!(m1["identity"]["iccid"].is_string(), "{m1}");
    assert_eq!(
        (&m1["sent_today"], &m1["daily_cap"]),
        (&json!(1), &json!(null))
    );

    // A UCS-2 reply long enough for three parts arrives as one message.
    let reply = "¿Puedo pagar el viernes? Гарантирую оплату 💶 ".repeat(3);
    let parts = sim
        .inject(Inbound {
            encoding: TextEncoding::Ucs2,
            ..Inbound::new("+14158906431", reply.clone())
        })
        .await
        .unwrap();
    assert!(
        parts >= 2,
        "the reply should need several parts, got {parts}"
    );
    let received = hooks.next("message.received").await;
    assert_eq!(received["data"]["text"], reply.as_str());
    assert_eq!(received["data"]["from"], "+14158906431");
    assert_eq!(received["data"]["modem"], "m1");
    assert_eq!(received["data"]["parts"], parts);
    assert_eq!(received["data"]["needs_agent"], true, "{received}");
    assert_eq!(received["data"]["intent"], serde_json::Value::Null);

    // The conversation shows both directions in time order.
    let conversation = http.get("/v1/conversations/+14158906431").await;
    let texts: Vec<_> = conversation["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["direction"].clone(), m["text"].clone()))
        .collect();
    assert_eq!(
        texts,
        [
            (json!("outbound"), json!("Your balance is €12 [ref 7]")),
            (json!("inbound"), json!(reply)),
        ]
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_each_webhooks_backlog_under_its_name_never_its_url() {
    let dir = tempfile::tempdir().unwrap();
    // An archive that is down (nothing listens on its port) beside the CMS's receiver.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut hooks = WebhookReceiver::start().await;
    // The `archive` webhook at `archive_url`, beside the CMS's unnamed one.
    let cms = hooks.url.clone();
    let config = |archive_url: &str| {
        Config::parse(&format!(
            r#"{HEAD}
[[webhooks]]
name = "archive"
url = "{archive_url}"
secret = "{WEBHOOK_SECRET}"
[[webhooks]]
url = "{cms}"
secret = "{WEBHOOK_SECRET}"
"#,
            HEAD = head(dir.path(), TOKEN, ""),
        ))
        .unwrap()
    };
    let gateway = start_instant(&config(&format!("http://{down}/events?token=s3cr3t-t0ken"))).await;
    let http = Http::new(gateway.addr);
    let (status, accepted) = http
        .post("/v1/messages", json!({"to": "4158906431", "text": "hi"}))
        .await;
    assert_eq!(status.as_u16(), 202, "{accepted}");
    // Both events reached the CMS, so both are also in the archive's rows (written in the same commits).
    hooks.next("message.sent").await;
    hooks.next("message.delivered").await;
    let metrics = http.text("/metrics").await;
    let unnamed = format!(
        "modemgate_webhook_backlog{{webhook=\"http://{}\"}} ",
        hooks
            .url
            .trim_start_matches("http://")
            .trim_end_matches("/hook")
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == "modemgate_webhook_backlog{webhook=\"archive\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(
            |l| l.starts_with("modemgate_webhook_oldest_pending_seconds{webhook=\"archive\"} ")
        ),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with(&unnamed)),
        "{metrics}"
    );
    assert!(
        !metrics.contains("s3cr3t-t0ken") && !metrics.contains("/hook"),
        "{metrics}"
    );
    gateway.stop().await;

    // The archive comes back at another address: restarted with its new URL, it gets both events.
    let mut archive = WebhookReceiver::start().await;
    let gateway = start_instant(&config(&archive.url)).await;
    let sent = archive.next("message.sent").await;
    assert_eq!(sent["data"]["message_id"], accepted["id"]);
    archive.next("message.delivered").await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_keys_and_adds_and_pauses_modems_without_dropping_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let before = Config::parse(&head(dir.path(), TOKEN, "paused = true")).unwrap();
    let mut gateway = start_instant(&before).await;
    let old_key = Http::new(gateway.addr);
    // Paused in the config reads "paused" from the start, before its start-up conversation is over.
    let modems = old_key.get("/v1/modems").await;
    assert_eq!(modems["modems"][0]["state"], "paused", "{modems}");
    // The only modem is paused: the message waits in the queue.
    let (status, accepted) = old_key
        .post(
            "/v1/messages",
            json!({"to": "+14158906431", "text": "waiting"}),
        )
        .await;
    assert_eq!(status.as_u16(), 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    // ... and says why.
    let message = old_key.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(
        (&message["status"], &message["error"]),
        (
            &json!("queued"),
            &json!("waiting: no modem can send it now (m1 is paused)")
        ),
        "{message}"
    );
    // A CMS listing its queue reads the same reason.
    let queued = old_key.get("/v1/messages?status=queued").await;
    assert_eq!(queued["messages"][0]["id"].as_str(), Some(id.as_str()));
    assert_eq!(queued["messages"][0]["error"], message["error"], "{queued}");

    let after = Config::parse(&format!(
        "{}\n[[modems]]\nid = \"m2\"\ndevice = \"sim:plain\"\nrate = \"600/min\"\ndaily_cap = 100\n",
        head(dir.path(), "rotated-token-456", "paused = true")
    ))
    .unwrap();
    gateway.reload(&after).await.unwrap();

    // The queued message goes out on the modem the reload added.
    let sends = gateway.sim("m2").unwrap().wait_sends(1).await.unwrap();
    assert_eq!(sends[0].submit.user_data, UserData::Text("waiting".into()));
    assert!(gateway.sim("m1").unwrap().sends().is_empty());

    // The old key is gone, the new one works and sees both modems, m1 still paused.
    let (status, _) = old_key.call(hyper::Method::GET, "/v1/modems", None).await;
    assert_eq!(status.as_u16(), 401);
    let new_key = Http::with_token(gateway.addr, "rotated-token-456");
    let modems = new_key.get("/v1/modems").await;
    let states: Vec<_> = modems["modems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].clone(), m["state"].clone()))
        .collect();
    assert_eq!(states[0], (json!("m1"), json!("paused")));
    assert_eq!(states[1].0, json!("m2"));
    // The cap the reload gave m2 shows with it; m1 has none.
    let caps: Vec<_> = modems["modems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["daily_cap"].clone())
        .collect();
    assert_eq!(caps, [json!(null), json!(100)]);
    let message = new_key.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(message["modem"], "m2", "{message}");

    // Pausing through the API answers with the new state at once, whatever the worker is doing; resuming
    // shows the state its last report means (m2 is registered: ready).
    let (status, paused) = new_key.post("/v1/modems/m2/pause", json!({})).await;
    assert_eq!((status.as_u16(), &paused["state"]), (200, &json!("paused")));
    // A reload that leaves m2's own `paused` setting as it was leaves the admin's pause alone.
    gateway.reload(&after).await.unwrap();
    let modems = new_key.get("/v1/modems").await;
    assert_eq!(modems["modems"][1]["state"], "paused", "{modems}");
    let (status, resumed) = new_key.post("/v1/modems/m2/resume", json!({})).await;
    assert_eq!((status.as_u16(), &resumed["state"]), (200, &json!("ready")));
    let mut m2 = gateway.health("m2").unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        m2.wait_for(|health| health.state == ModemState::Ready),
    )
    .await
    .expect("m2's worker never reported ready again after the resume")
    .unwrap();
    gateway.stop().await;
}

/// A message no modem can take now says why in its `error`, so the CMS sees more than `queued`; it says
/// nothing once a modem can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_held_back_by_the_daily_cap_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut hooks = WebhookReceiver::start().await;
    let url = hooks.url.clone();
    let config = |cap: &str| {
        let text = format!(
            "{}[[webhooks]]\nurl = \"{url}\"\nsecret = \"{WEBHOOK_SECRET}\"\n",
            head(dir.path(), TOKEN, cap)
        );
        Config::parse(&text).unwrap()
    };
    let mut gateway = start_instant(&config("daily_cap = 1")).await;
    let http = Http::new(gateway.addr);
    let first = http
        .accepted(json!({"to": "+14158906431", "text": "first"}))
        .await;
    let sent = hooks.next("message.sent").await;
    assert_eq!(sent["data"]["message_id"], first["id"]);

    let second = http
        .accepted(json!({"to": "+14158906432", "text": "second"}))
        .await;
    let path = format!("/v1/messages/{}", second["id"].as_str().unwrap());
    let message = http.get(&path).await;
    assert_eq!(message["status"], "queued", "{message}");
    let error = message["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(
            "waiting: no modem can send it now (m1 reached its daily cap of 1 part until "
        ),
        "{message}"
    );
    let first = http
        .get(&format!("/v1/messages/{}", first["id"].as_str().unwrap()))
        .await;
    assert_eq!(first["error"], json!(null), "{first}");
    // The admin's alert sees the same: no modem can send, with a message queued.
    let metrics = http.text("/metrics").await;
    for line in ["modemgate_modems_available 0", "modemgate_queue_depth 1"] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }

    // A bigger cap lets it go.
    gateway.reload(&config("daily_cap = 2")).await.unwrap();
    let sent = hooks.next("message.sent").await;
    assert_eq!(sent["data"]["message_id"], second["id"]);
    assert_eq!(gateway.sim("m1").unwrap().sends().len(), 2);
    gateway.stop().await;
}

/// A reload that re-opens a modem (its baud changed) while it sends a long message lets the whole message
/// out first: stopped after 20 s, as it used to be, the worker left the debtor part of the text and the
/// message `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_reopens_a_modem_lets_its_message_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut hooks = WebhookReceiver::start().await;
    let with_hook = |m1_extra: &str| {
        let hook = format!(
            "[[webhooks]]\nurl = \"{}\"\nsecret = \"{WEBHOOK_SECRET}\"\n",
            hooks.url
        );
        Config::parse(&format!("{}{hook}", head(dir.path(), TOKEN, m1_extra))).unwrap()
    };
    let mut gateway = start_instant(&with_hook("")).await;
    let http = Http::new(gateway.addr);
    // Four parts at 7 s each: longer than the old 20-s stop.
    gateway
        .sim("m1")
        .unwrap()
        .update_faults(|f| f.slow_send = std::time::Duration::from_secs(7))
        .unwrap();
    let accepted = http
        .accepted(json!({"to": "+14158906431", "text": "Payment plan details. ".repeat(27)}))
        .await;
    assert_eq!(accepted["parts"], 4, "{accepted}");
    gateway.sim("m1").unwrap().wait_started(1).await.unwrap();
    let after = with_hook("baud = 9600");
    tokio::time::timeout(std::time::Duration::from_secs(150), gateway.reload(&after))
        .await
        .expect("the reload never returned")
        .unwrap();
    // The last part's outcome reaches the store through the hub, just after the worker ends: its
    // webhook says when.
    let id = accepted["id"].as_str().unwrap();
    let sent = hooks.next("message.sent").await;
    assert_eq!(sent["data"]["message_id"], id, "{sent}");
    let message = http.get(&format!("/v1/messages/{id}")).await;
    assert!(
        ["sent", "delivered"].contains(&message["status"].as_str().unwrap_or_default()),
        "{message}"
    );
    gateway.stop().await;
}

/// An admin adds a modem while another is in the middle of a send that takes an hour: the reload does
/// not wait for it, the new modem sends at once, and the send that was under way is still recorded when
/// it ends (by the dispatcher the reload started: it took that job over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_does_not_wait_for_a_modem_in_the_middle_of_a_send() {
    let dir = tempfile::tempdir().unwrap();
    let mut hooks = WebhookReceiver::start().await;
    // m1 may send once a minute: after its first send only m2 can take the next message.
    let m1 = format!(
        "{}[[webhooks]]\nurl = \"{}\"\nsecret = \"{WEBHOOK_SECRET}\"\n",
        head_at_rate(dir.path(), TOKEN, "1/min", ""),
        hooks.url
    );
    let mut gateway = start_instant(&Config::parse(&m1).unwrap()).await;
    let http = Http::new(gateway.addr);
    gateway
        .sim("m1")
        .unwrap()
        .update_faults(|f| f.slow_send = std::time::Duration::from_secs(3600))
        .unwrap();
    let (status, first) = http
        .post(
            "/v1/messages",
            json!({"to": "+14158906431", "text": "first"}),
        )
        .await;
    assert_eq!(status.as_u16(), 202, "{first}");
    gateway.sim("m1").unwrap().wait_started(1).await.unwrap();

    let both = Config::parse(&format!(
        "{m1}[[modems]]\nid = \"m2\"\ndevice = \"sim:plain\"\nrate = \"600/min\"\n"
    ))
    .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(60), gateway.reload(&both))
        .await
        .expect("the reload waited for m1's send to end")
        .unwrap();
    let (status, second) = http
        .post(
            "/v1/messages",
            json!({"to": "+14158906432", "text": "second"}),
        )
        .await;
    assert_eq!(status.as_u16(), 202, "{second}");
    let sends = gateway.sim("m2").unwrap().wait_sends(1).await.unwrap();
    assert_eq!(sends[0].submit.user_data, UserData::Text("second".into()));
    let sent = hooks.next("message.sent").await;
    assert_eq!(sent["data"]["message_id"], second["id"], "{sent}");

    // m1 is unplugged mid-send: the PDU was written, so the first message is `unknown`, recorded by
    // the dispatcher that took the job over.
    gateway
        .sim("m1")
        .unwrap()
        .vanish(std::time::Duration::from_secs(3600))
        .unwrap();
    let unknown = hooks.next("message.unknown").await;
    assert_eq!(unknown["data"]["message_id"], first["id"], "{unknown}");
    assert!(gateway.sim("m1").unwrap().sends().is_empty());
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_through_a_modem_opts_out_confirms_once_and_blocks_new_sends() {
    let dir = tempfile::tempdir().unwrap();
    let mut hooks = WebhookReceiver::start().await;
    let gateway = start_instant(&config(dir.path(), &hooks.url)).await;
    let http = Http::new(gateway.addr);
    let sim = gateway.sim("m1").unwrap();

    sim.inject(Inbound::new("+14158906431", "Stop."))
        .await
        .unwrap();
    let received = hooks.next("message.received").await;
    assert_eq!(received["data"]["intent"], "opt_out", "{received}");
    assert_eq!(received["data"]["needs_agent"], false);
    let optout = hooks.next("optout.created").await;
    assert_eq!(optout["data"]["number"], "+14158906431");
    // Exactly one confirmation goes back through the modem the STOP came in on.
    let sends = sim.wait_sends(1).await.unwrap();
    assert_eq!(sends[0].submit.recipient.value, "+14158906431");

    // New sends to that number are refused at the door, with the field named.
    let (status, error) = http
        .post(
            "/v1/messages",
            json!({"to": "+14158906431", "text": "balance due"}),
        )
        .await;
    assert_eq!(status.as_u16(), 422, "{error}");
    assert_eq!(error["error"]["code"], "opted_out");
    assert_eq!(error["error"]["field"], "to");
    let listed = http.get("/v1/optouts").await;
    assert!(listed.to_string().contains("+14158906431"), "{listed}");
    assert_eq!(
        sim.sends().len(),
        1,
        "no second confirmation, nothing else sent"
    );

    // START opts back in: the CMS hears it too, and sends go out again.
    sim.inject(Inbound::new("+14158906431", "START"))
        .await
        .unwrap();
    let removed = hooks.next("optout.removed").await;
    assert_eq!(removed["data"]["number"], "+14158906431", "{removed}");
    assert_eq!(removed["data"]["source"], "keyword", "{removed}");
    assert!(removed["data"]["message_id"].is_string(), "{removed}");
    let accepted = http
        .accepted(json!({"to": "+14158906431", "text": "balance due"}))
        .await;
    assert_eq!(accepted["status"], "queued", "{accepted}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opt_out_notice_is_appended_when_it_fits_or_required() {
    for (mode, expect_refusal) in [("append", false), ("require", true)] {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(&format!(
            "{}\n[optout]\nnotice = {{ en = \"Reply STOP to opt out\", es = \"Responda BAJA\" }}\n\
             notice_mode = \"{mode}\"\n",
            head(dir.path(), TOKEN, "paused = true")
        ))
        .unwrap();
        let gateway = start_instant(&config).await;
        let http = Http::new(gateway.addr);
        let (status, answer) = http
            .post(
                "/v1/messages",
                json!({"to": "+14158906431", "text": "Balance due."}),
            )
            .await;
        if expect_refusal {
            assert_eq!(status.as_u16(), 422, "{answer}");
            assert_eq!(answer["error"]["code"], "optout_notice_missing");
            assert_eq!(answer["error"]["field"], "text");
        } else {
            assert_eq!(status.as_u16(), 202, "{answer}");
            let id = answer["id"].as_str().unwrap();
            let message = http.get(&format!("/v1/messages/{id}")).await;
            assert_eq!(message["text"], "Balance due.\nReply STOP to opt out");
            // A Spanish-speaking debtor gets the Spanish notice.
            let answer = http
                .accepted(
                    json!({"to": "+14158906431", "text": "Saldo pendiente.", "language": "es"}),
                )
                .await;
            let id = answer["id"].as_str().unwrap();
            let message = http.get(&format!("/v1/messages/{id}")).await;
            assert_eq!(message["text"], "Saldo pendiente.\nResponda BAJA");
        }
        // A text that already carries it is left alone in either mode.
        let (status, answer) = http
            .post(
                "/v1/messages",
                json!({"to": "+14158906431", "text": "Balance due. Reply STOP to opt out"}),
            )
            .await;
        assert_eq!(status.as_u16(), 202, "{answer}");
        gateway.stop().await;
    }
}

/// With `tls_cert` and `tls_key` the API speaks HTTPS only: a client that verifies the certificate the
/// usual way (as a root it trusts, for the address it connects to) sends through it, and a plain-HTTP
/// request on the same port gets no HTTP answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_https_with_the_configured_certificate() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let tls = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls");
    let text = head(dir.path(), TOKEN, "").replace(
        "[server]\n",
        &format!("[server]\ntls_cert = \"{tls}/cert.pem\"\ntls_key = \"{tls}/key.pem\"\n"),
    );
    let gateway = start_instant(&Config::parse(&text).unwrap()).await;

    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(trusting(&[&format!("{tls}/cert.pem")]))
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let request = hyper::Request::post(format!("https://{}/v1/messages", gateway.addr))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            json!({"to": "+14158906431", "text": "over TLS"}).to_string(),
        )))
        .unwrap();
    let answer = client.request(request).await.expect("an HTTPS answer");
    assert_eq!(answer.status().as_u16(), 202);
    let body = answer.into_body().collect().await.unwrap().to_bytes();
    let accepted: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(accepted["status"], "queued", "{accepted}");
    let sends = gateway.sim("m1").unwrap().wait_sends(1).await.unwrap();
    assert_eq!(sends[0].submit.user_data, UserData::Text("over TLS".into()));

    let mut plain = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    // The server closes the connection on a record that is not TLS; the read ends with it.
    let _ = plain.read_to_end(&mut reply).await;
    assert!(
        !reply.starts_with(b"HTTP/"),
        "plain HTTP was answered: {}",
        String::from_utf8_lossy(&reply)
    );
    // ... and the admin sees it counted.
    let request = hyper::Request::get(format!("https://{}/metrics", gateway.addr))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let metrics = client.request(request).await.unwrap();
    let text = metrics.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.lines()
            .any(|l| l == "modemgate_tls_handshake_failures_total 1"),
        "{text}"
    );
    gateway.stop().await;
}

/// The certificate in a PEM file, as DER.
fn pem_certificate(path: &str) -> rustls::pki_types::CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path).unwrap()
}

/// A client that verifies servers the usual way, with `roots` (PEM files) as its only trusted roots.
fn trusting(roots: &[&str]) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(pem_certificate(root)).unwrap();
    }
    rustls::ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth()
}

/// A renewed certificate is presented from the next connection on after a reload, with no restart: what
/// a certbot deploy hook running `systemctl reload modemgate` relies on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_presents_a_renewed_certificate() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let install = |prefix: &str| {
        std::fs::copy(format!("{data}/{prefix}cert.pem"), &cert).unwrap();
        std::fs::copy(format!("{data}/{prefix}key.pem"), &key).unwrap();
    };
    install("");
    let text = head(dir.path(), TOKEN, "").replace(
        "[server]\n",
        &format!(
            "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    );
    let mut gateway = start_instant(&Config::parse(&text).unwrap()).await;
    let client = tokio_rustls::TlsConnector::from(std::sync::Arc::new(trusting(&[
        &format!("{data}/cert.pem"),
        &format!("{data}/renewed-cert.pem"),
    ])));
    let presented = |addr: std::net::SocketAddr| {
        let client = client.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = client
                .connect(name, tcp)
                .await
                .expect("a verified handshake");
            tls.get_ref().1.peer_certificates().unwrap()[0].clone()
        }
    };
    assert_eq!(
        presented(gateway.addr).await,
        pem_certificate(&format!("{data}/cert.pem"))
    );

    install("renewed-");
    gateway
        .reload(&Config::parse(&text).unwrap())
        .await
        .unwrap();
    assert_eq!(
        presented(gateway.addr).await,
        pem_certificate(&format!("{data}/renewed-cert.pem"))
    );
    gateway.stop().await;
}

/// `[storage] retain_days`: the hourly pass deletes a delivered message once it is older than the
/// retention, and keeps a message accepted since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_a_finished_message_once_it_is_older_than_retain_days() {
    let dir = tempfile::tempdir().unwrap();
    let mut hooks = WebhookReceiver::start().await;
    let config = Config::parse(&format!(
        "{HEAD}[[webhooks]]\nurl = \"{url}\"\nsecret = \"{WEBHOOK_SECRET}\"\n",
        HEAD = head(dir.path(), TOKEN, "").replace("[storage]\n", "[storage]\nretain_days = 30\n"),
        url = hooks.url
    ))
    .unwrap();
    assert_eq!(config.storage.retain_days.map(|r| r.days()), Some(30));
    let clock = modemgate::store::ManualClock::new("2026-03-02T15:00:00Z".parse().unwrap());
    let gateway = daemon::start(
        &config,
        StartOptions {
            clock: std::sync::Arc::new(clock.clone()),
            instant_sims: true,
            ..StartOptions::default()
        },
    )
    .await
    .unwrap();
    let http = Http::new(gateway.addr);
    let old = http
        .accepted(json!({"to": "+14158906431", "text": "old news"}))
        .await;
    let old = old["id"].as_str().unwrap().to_owned();
    hooks.next("message.delivered").await;

    // 31 days and an hour on: the next hourly pass finds it a day past the retention.
    clock.advance(std::time::Duration::from_secs(31 * 86_400 + 3_600));
    let recent = http
        .accepted(json!({"to": "+14158906432", "text": "news"}))
        .await;
    let recent = recent["id"].as_str().unwrap().to_owned();
    // The pass counts what it deleted once the deletion is committed: wait for the count.
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        gateway
            .metrics
            .retention_deleted_until(|messages, _| messages >= 1),
    )
    .await
    .expect("retention never counted a deletion");
    let metrics = http.text("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "modemgate_retention_deleted_total{kind=\"messages\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    let (status, _) = http
        .call(hyper::Method::GET, &format!("/v1/messages/{old}"), None)
        .await;
    assert_eq!(status.as_u16(), 404);
    let metrics = http.text("/metrics").await;
    let database = metrics
        .lines()
        .find_map(|l| l.strip_prefix("modemgate_database_bytes{file=\"database\"} "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(database.is_some_and(|bytes| bytes > 0.0), "{metrics}");
    let message = http.get(&format!("/v1/messages/{recent}")).await;
    assert_eq!(message["id"], recent.as_str(), "{message}");
    gateway.stop().await;
}

/// The value `/metrics` shows for `series` (name and labels).
fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .parse::<f64>()
            .ok()
    })
}

/// What a test waits for the store to have done.
#[derive(Clone, Copy, Debug)]
enum StoreMoment {
    /// Refused a batch since it opened.
    Refused,
    /// Refused every batch since its last commit.
    Unwritable,
    /// Committed since its last refusal.
    Writable,
}

/// Waits (30 s at most) for the store to reach `moment`, woken by each refusal and each recovery (no
/// polling), then checks that `/metrics` shows it.
async fn until_store(gateway: &daemon::Running, http: &Http, moment: StoreMoment) {
    type Reached = fn(&modemgate::store::WriterStats) -> bool;
    type Shown = fn(f64) -> bool;
    let (reached, series, shown): (Reached, &str, Shown) = match moment {
        // The refusals may go on counting: at least one.
        StoreMoment::Refused => (
            |stats| stats.refused >= 1,
            "modemgate_store_refused_batches_total",
            |n| n >= 1.0,
        ),
        StoreMoment::Unwritable => (
            |stats| stats.failing >= 1,
            "modemgate_store_writable",
            |n| n == 0.0,
        ),
        StoreMoment::Writable => (
            |stats| stats.failing == 0,
            "modemgate_store_writable",
            |n| n == 1.0,
        ),
    };
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        gateway.store.writer_stats_until(reached),
    )
    .await
    .unwrap_or_else(|_| panic!("the store never reached {moment:?}"));
    let metrics = http.text("/metrics").await;
    assert!(
        metric(&metrics, series).is_some_and(shown),
        "{moment:?}: {metrics}"
    );
}

/// Runs `sql` on the database beside the daemon: triggers that refuse writes stand in for a full disk.
fn beside(db: &std::path::Path, sql: &str) {
    rusqlite::Connection::open(db)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

/// A daemon whose database refuses some writes: `refuse` is a trigger standing in for a full disk.
struct Outage {
    _dir: tempfile::TempDir,
    hooks: WebhookReceiver,
    db: std::path::PathBuf,
    gateway: daemon::Running,
    http: Http,
}

async fn outage(refuse: &str) -> Outage {
    let dir = tempfile::tempdir().unwrap();
    let hooks = WebhookReceiver::start().await;
    let config = config(dir.path(), &hooks.url);
    let db = config.storage.path.clone();
    let gateway = start_instant(&config).await;
    let http = Http::new(gateway.addr);
    beside(&db, refuse);
    Outage {
        _dir: dir,
        hooks,
        db,
        gateway,
        http,
    }
}

/// A part the network took while the store refused writes (a full disk) is recorded `sent` once the store
/// takes writes again, and the CMS hears of it; it is not left `sending`, then `unknown` at a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_sent_while_the_store_refused_writes_is_recorded_when_it_recovers() {
    let Outage {
        _dir,
        mut hooks,
        db,
        gateway,
        http,
    } = outage(
        "CREATE TRIGGER refuse_sent BEFORE INSERT ON events WHEN NEW.kind = 'part_sent' \
         BEGIN SELECT RAISE(ABORT, 'no space left'); END;",
    )
    .await;
    let accepted = http
        .accepted(json!({"to": "+14158906431", "text": "Your balance is due"}))
        .await;
    let id = accepted["id"].as_str().unwrap().to_owned();
    let sim = gateway.sim("m1").unwrap();
    sim.wait_sends(1).await.unwrap();
    until_store(&gateway, &http, StoreMoment::Refused).await;
    let message = http.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(message["status"], "sending", "{message}");

    beside(&db, "DROP TRIGGER refuse_sent;");
    let sent = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        hooks.next("message.sent"),
    )
    .await
    .expect("the part was never recorded sent");
    assert_eq!(sent["data"]["message_id"], id.as_str());
    // Its delivery report, which may have come while the part was still waiting, is matched too.
    let delivered = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        hooks.next("message.delivered"),
    )
    .await
    .expect("the delivery report was lost");
    assert_eq!(delivered["data"]["message_id"], id.as_str());
    let message = http.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(message["status"], "delivered", "{message}");
    // The log says when the network took it, and that it was written down late.
    let part_sent = message["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "part_sent")
        .unwrap();
    assert!(
        part_sent["detail"]
            .as_str()
            .is_some_and(|d| d.contains("recorded late")),
        "{part_sent}"
    );
    assert_eq!(sim.sends().len(), 1, "sent once");
    gateway.stop().await;
}

/// While the store refuses writes, `/readyz` says so and `/metrics` counts it; once it takes writes again
/// the daemon is ready without waiting for a message. A database file moved away under the daemon is
/// not ready either (its writes would go to a file no start reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_a_store_that_refuses_writes_or_lost_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "http://127.0.0.1:9/unused");
    let db = config.storage.path.clone();
    let gateway = start_instant(&config).await;
    let http = Http::new(gateway.addr);
    let ready = || async { http.call(hyper::Method::GET, "/readyz", None).await };
    assert_eq!(ready().await.0.as_u16(), 200);
    beside(
        &db,
        "CREATE TRIGGER refuse_events BEFORE INSERT ON events \
           BEGIN SELECT RAISE(ABORT, 'no space left'); END; \
         CREATE TRIGGER refuse_probe BEFORE INSERT ON store_probe \
           BEGIN SELECT RAISE(ABORT, 'no space left'); END;",
    );
    let (status, body) = http
        .post(
            "/v1/messages",
            json!({"to": "+14158906431", "text": "hello"}),
        )
        .await;
    assert_eq!(status.as_u16(), 503, "{body}");
    let (status, body) = ready().await;
    assert_eq!(status.as_u16(), 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("refuses writes")),
        "{body}"
    );
    until_store(&gateway, &http, StoreMoment::Unwritable).await;

    // Nothing else is written: the daemon's own probe finds the store writable again.
    beside(
        &db,
        "DROP TRIGGER refuse_events; DROP TRIGGER refuse_probe;",
    );
    until_store(&gateway, &http, StoreMoment::Writable).await;
    assert_eq!(ready().await.0.as_u16(), 200);

    let moved = dir.path().join("moved.db");
    std::fs::rename(&db, &moved).unwrap();
    let (status, body) = ready().await;
    assert_eq!(status.as_u16(), 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("deleted")),
        "{body}"
    );
    // What is written now would be lost at the next start: refused.
    let (status, body) = http
        .post(
            "/v1/messages",
            json!({"to": "+14158906431", "text": "hello"}),
        )
        .await;
    assert_eq!(status.as_u16(), 503, "{body}");
    std::fs::rename(&moved, &db).unwrap();
    // The writer takes writes again once a look finds the file back; a probe then ends the refusals.
    assert_eq!(ready().await.0.as_u16(), 503);
    until_store(&gateway, &http, StoreMoment::Writable).await;
    assert_eq!(ready().await.0.as_u16(), 200);
    http.accepted(json!({"to": "+14158906431", "text": "hello"}))
        .await;
    // A copy put in its place: refused at once, not only once a look has noticed.
    let copy = dir.path().join("copy.db");
    std::fs::copy(&db, &copy).unwrap();
    std::fs::rename(&copy, &db).unwrap();
    let (status, body) = http
        .post(
            "/v1/messages",
            json!({"to": "+14158906431", "text": "lost?"}),
        )
        .await;
    assert_eq!(status.as_u16(), 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("replaced")),
        "{body}"
    );
    gateway.stop().await;

    // A database that was served and is gone is not replaced by a new, empty one at the next start.
    std::fs::rename(&db, &moved).unwrap();
    let refused = daemon::start(&config, StartOptions::default())
        .await
        .err()
        .expect("started on a missing database");
    assert!(format!("{refused:#}").contains("is missing"), "{refused:#}");
}

/// A STOP left on the SIM because the store refused it holds its number at once, in memory, and is read
/// again and recorded within seconds of the store recovering, not at the five-minute sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_the_store_could_not_take_is_read_again_soon() {
    let Outage {
        _dir,
        mut hooks,
        db,
        gateway,
        http,
    } = outage(
        "CREATE TRIGGER refuse_inbound BEFORE INSERT ON inbound_rules_pending \
         BEGIN SELECT RAISE(ABORT, 'no space left'); END;",
    )
    .await;
    let sim = gateway.sim("m1").unwrap();
    sim.inject(Inbound::new("+14158906431", "STOP"))
        .await
        .unwrap();
    until_store(&gateway, &http, StoreMoment::Refused).await;
    // Until it is read again and stored, the number is held in memory: nothing goes to it.
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        gateway.optouts_unrecorded_until(|n| n == 1),
    )
    .await
    .expect("the STOP's number was never held");
    assert_eq!(
        metric(&http.text("/metrics").await, "modemgate_optouts_unrecorded"),
        Some(1.0)
    );
    let (status, body) = http
        .post(
            "/v1/messages",
            json!({"to": "+14158906431", "text": "pay now"}),
        )
        .await;
    assert_eq!(status.as_u16(), 422, "{body}");
    assert_eq!(body["error"]["code"], "opted_out", "{body}");
    beside(&db, "DROP TRIGGER refuse_inbound;");
    let opted = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        hooks.next("optout.created"),
    )
    .await
    .expect("the STOP was left for the periodic sweep");
    assert_eq!(opted["data"]["number"], "+14158906431", "{opted}");
    // The hold gave way to the record before the webhook was queued.
    assert_eq!(
        metric(&http.text("/metrics").await, "modemgate_optouts_unrecorded"),
        Some(0.0)
    );
    gateway.stop().await;
}

/// A STOP stored (and so deleted from the SIM) just before a crash, before the reply rules ran on it, is
/// still an opt-out: the daemon runs the rules on it at start, and then no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_stored_before_a_crash_is_honoured_at_the_next_start() {
    use modemgate::store::{OpenOptions, Store};
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "http://127.0.0.1:9/unused");
    {
        let store = Store::open(&config.storage.path, OpenOptions::default()).unwrap();
        stop_stored_before_a_crash(&store).await;
    }
    let gateway = start_instant(&config).await;
    let http = Http::new(gateway.addr);
    // The rules record the opt-out, then answer it: the confirmation reaching the modem the STOP came
    // in on means the opt-out is on record.
    let sim = gateway.sim("m1").unwrap();
    let sends = tokio::time::timeout(std::time::Duration::from_secs(30), sim.wait_sends(1))
        .await
        .expect("the STOP was not honoured: no confirmation")
        .unwrap();
    assert_eq!(sends[0].submit.recipient.value, "+14158906431");
    let optouts = http.get("/v1/optouts").await;
    assert!(optouts.to_string().contains("+14158906431"), "{optouts}");
    gateway.stop().await;
    let store = Store::open(&config.storage.path, OpenOptions::default()).unwrap();
    assert!(store.rules_pending().await.unwrap().is_empty());
}

/// How many messages went (or are queued) to `number`.
async fn outbound_to(store: &modemgate::store::Store, number: &str) -> usize {
    let conversation = store.conversation(number, None, None).await.unwrap();
    conversation
        .messages
        .iter()
        .filter(|m| m.direction == modemgate::store::Direction::Outbound)
        .count()
}

/// A STOP from +14158906431 stored, as a crash leaves it: its reply rules not yet run.
async fn stop_stored_before_a_crash(store: &modemgate::store::Store) -> uuid::Uuid {
    use modemgate::store::{InboundContent, InboundOutcome, InboundPart, TextEncoding};
    let stored = store
        .record_inbound(InboundPart {
            modem: "m1".into(),
            pdu_hex: "00STOP".into(),
            content: InboundContent::Decoded {
                sender: "+14158906431".into(),
                text: "STOP".into(),
                encoding: TextEncoding::Gsm7,
                sent_at: Some(store.now()),
                concat: None,
            },
        })
        .await
        .unwrap();
    let InboundOutcome::Complete(stop) = stored else {
        panic!("{stored:?}");
    };
    assert_eq!(store.rules_pending().await.unwrap().len(), 1);
    stop.id
}

/// A crash after the rules answered a STOP but before they were marked done: the next start runs them
/// again (the opt-out stays recorded) without queuing a second confirmation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_answered_before_a_crash_is_not_answered_again() {
    use modemgate::outbound::{ComposeOptions, compose};
    use modemgate::store::{Category, OpenOptions, Store};
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "http://127.0.0.1:9/unused");
    let stop = {
        let store = Store::open(&config.storage.path, OpenOptions::default()).unwrap();
        let stop = stop_stored_before_a_crash(&store).await;
        // The rules' confirmation, queued before the crash.
        let options = ComposeOptions {
            api_key: "rules".into(),
            category: Category::Confirmation,
            ..ComposeOptions::default()
        };
        let answer = compose("+14158906431", "You are unsubscribed.", options).unwrap();
        store.accept(answer).await.unwrap();
        stop
    };
    let gateway = start_instant(&config).await;
    let sim = gateway.sim("m1").unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), sim.wait_sends(1))
        .await
        .expect("the queued confirmation was not sent")
        .unwrap();
    // Stopping drains the reply rules, so the replay has run once this returns.
    gateway.stop().await;
    let store = Store::open(&config.storage.path, OpenOptions::default()).unwrap();
    assert!(store.rules_pending().await.unwrap().is_empty());
    let detail = store.get(stop).await.unwrap().unwrap();
    let kinds: Vec<&str> = detail.events.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.contains(&"opt_out"), "{kinds:?}");
    assert!(kinds.contains(&"answer_skipped"), "{kinds:?}");
    assert!(!kinds.contains(&"answered"), "{kinds:?}");
    assert_eq!(outbound_to(&store, "+14158906431").await, 1);
}

/// A STOP whose opt-out the store refuses (a full disk, here a trigger) is not marked done: the number is
/// suppressed in memory meanwhile, and the next start records the opt-out without a second confirmation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_the_store_refused_is_recorded_at_the_next_start() {
    use modemgate::store::{OpenOptions, Store};
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "http://127.0.0.1:9/unused");
    drop(Store::open(&config.storage.path, OpenOptions::default()).unwrap());
    let refuse = |sql: &str| beside(&config.storage.path, sql);
    refuse(
        "CREATE TRIGGER refuse_optouts BEFORE INSERT ON optout_audit \
         BEGIN SELECT RAISE(ABORT, 'no space left'); END;",
    );
    let gateway = start_instant(&config).await;
    let sim = gateway.sim("m1").unwrap();
    sim.inject(Inbound::new("+14158906431", "STOP"))
        .await
        .unwrap();
    // The confirmation goes out: the number is suppressed, in memory.
    tokio::time::timeout(std::time::Duration::from_secs(30), sim.wait_sends(1))
        .await
        .expect("no confirmation")
        .unwrap();
    gateway.stop().await;
    let store = Store::open(&config.storage.path, OpenOptions::default()).unwrap();
    assert!(!store.is_opted_out("+14158906431").await.unwrap());
    assert_eq!(
        store.rules_pending().await.unwrap().len(),
        1,
        "the STOP is still pending"
    );
    drop(store);

    refuse("DROP TRIGGER refuse_optouts;");
    let gateway = start_instant(&config).await;
    gateway.stop().await;
    let store = Store::open(&config.storage.path, OpenOptions::default()).unwrap();
    assert!(store.is_opted_out("+14158906431").await.unwrap());
    assert!(store.rules_pending().await.unwrap().is_empty());
    assert_eq!(
        outbound_to(&store, "+14158906431").await,
        1,
        "one confirmation"
    );
}

/// The API's time limits: a keep-alive connection that says nothing is closed, a body that never comes
/// gets a JSON 408, and a stop does not wait for a stalled client (under systemd it would run out
/// `TimeoutStopSec` and be killed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_stalled_clients_are_cut_off_and_do_not_hold_up_a_stop() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let short = std::time::Duration::from_millis(500);
    let options = StartOptions {
        instant_sims: true,
        http: daemon::HttpLimits {
            headers: short,
            request: short,
            stop_grace: short,
        },
        ..StartOptions::default()
    };
    let gateway = daemon::start(&config(dir.path(), "http://127.0.0.1:9/unused"), options)
        .await
        .unwrap();
    let deadline = std::time::Duration::from_secs(20);
    let read_all = |mut socket: tokio::net::TcpStream| async move {
        let mut answer = Vec::new();
        tokio::time::timeout(deadline, socket.read_to_end(&mut answer))
            .await
            .expect("the server kept the connection open")
            .unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    };
    // Idle: closed without a word.
    let idle = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    assert_eq!(read_all(idle).await, "");
    // A body promised and not sent.
    let mut stalled = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let answer = read_all(stalled).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    // A stop with a request stalled mid-body.
    let mut stalled = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    stalled.write_all(head.as_bytes()).await.unwrap();
    tokio::time::timeout(deadline, gateway.stop())
        .await
        .expect("the stop waited for the stalled client");
    drop(stalled);
}

/// A reply whose sender the network gives in national form is stored under the E.164 number the CMS
/// sends to, so it shows in that number's conversation and under the list's `to` filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_from_a_national_sender_is_filed_under_its_e164_number() {
    let dir = tempfile::tempdir().unwrap();
    let mut hooks = WebhookReceiver::start().await;
    let gateway = start_instant(&config(dir.path(), &hooks.url)).await;
    let http = Http::new(gateway.addr);
    let sim = gateway.sim("m1").unwrap();
    sim.inject(Inbound::new("4158906451", "can I pay Friday?"))
        .await
        .unwrap();
    let received = hooks.next("message.received").await;
    assert_eq!(received["data"]["from"], "+14158906451", "{received}");
    let conversation = http.get("/v1/conversations/%2B14158906451").await;
    assert!(
        conversation.to_string().contains("can I pay Friday?"),
        "{conversation}"
    );
    let listed = http.get("/v1/messages?to=%2B14158906451").await;
    assert_eq!(
        listed["messages"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    gateway.stop().await;
}

/// A second daemon on the same database (an admin's `serve` with the service up) is refused before it
/// opens the store, so its start-up recovery cannot mark the first one's sends `unknown`; once the first
/// has stopped, the database is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "http://127.0.0.1:9/unused");
    let first = start_instant(&config).await;
    let second = daemon::start(
        &config,
        StartOptions {
            instant_sims: true,
            ..StartOptions::default()
        },
    )
    .await;
    let error = format!("{:#}", second.err().expect("a second daemon started"));
    assert!(error.contains("another modemgate"), "{error}");
    assert!(
        error.contains(&std::process::id().to_string()),
        "names the holder: {error}"
    );
    first.stop().await;
    start_instant(&config).await.stop().await;
}
