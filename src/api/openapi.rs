//! `/openapi.json`, assembled from the route table the router is built from.
//!
//! Why by hand and not `utoipa`: utoipa is not in our dependency tree (and this box has no registry access
//! to vet its tree), and paths, methods, parameters and security are all derived here from
//! [`routes::table`](super::routes::table), the same list the router uses, so a route cannot be served
//! without being documented or documented without being served. Only the schemas are written out by hand.

use serde_json::{Map, Value, json};

use super::auth::Access;
use super::error::ErrorCode;
use super::routes::{RequestBody, RouteSpec, table};
use super::validate::{MAX_IDEMPOTENCY_KEY, MAX_METADATA, MAX_PARTS, MAX_REFERENCE};
use crate::webhook::EventKind;

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in table() {
        let spec = route.spec;
        let entry = paths.entry(spec.path).or_insert_with(|| json!({}));
        if let Value::Object(methods) = entry {
            methods.insert(spec.method.as_str().to_ascii_lowercase(), operation(&spec));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "modemgate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "On-premises SMS gateway. Every route but /healthz needs \
                `Authorization: Bearer TOKEN`; `x-scope` names the scope a route needs (admin implies all). \
                Errors are {\"error\": {\"code\", \"message\", \"field\"}}."
        },
        "paths": paths,
        "webhooks": webhooks(),
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas(),
        }
    })
}

/// What each configured webhook URL receives: one POST per event, the same envelope for every type.
fn webhooks() -> Value {
    let mut hooks = Map::new();
    for kind in EventKind::ALL {
        let name = kind.as_str();
        let data = match kind {
            EventKind::MessageReceived => "ReceivedEventData",
            EventKind::OptoutCreated | EventKind::OptoutRemoved => "OptoutEventData",
            EventKind::MessageSent
            | EventKind::MessageDelivered
            | EventKind::MessageFailed
            | EventKind::MessageExpired
            | EventKind::MessageUnknown => "MessageEventData",
        };
        let body = json!({"allOf": [schema_ref("WebhookEnvelope"),
            {"properties": {"type": {"type": "string", "const": name}, "data": schema_ref(data)}}]});
        hooks.insert(name.to_owned(), json!({"post": {
            "summary": format!("`{name}`"),
            "operationId": format!("webhook_{}", name.replace('.', "_")),
            "parameters": [{"name": "Modemgate-Signature", "in": "header", "required": true,
                "description": "t=<unix seconds>,v1=<hex>: HMAC-SHA256 with the webhook's secret over \
                    \"<t>.<body>\". Recompute it, compare in constant time, reject a t far from your clock.",
                "schema": {"type": "string"}}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": body}}},
            "responses": {
                "2XX": {"description": "Received: not sent again"},
                "default": {"description": "Anything else, or no answer in time: sent again with the same \
                    id and body, backing off from 1 s to 1 h, across restarts. The message's later events wait \
                    for this one at this webhook; other webhooks are not held back."}}
        }}));
    }
    Value::Object(hooks)
}

fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

fn operation(spec: &RouteSpec) -> Value {
    let mut parameters: Vec<Value> = path_parameters(spec.path)
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    parameters.extend(spec.query.iter().map(|(name, description)| {
        json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}})
    }));
    if spec.body == Some(RequestBody::Send) {
        parameters.push(json!({
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": format!("1-{MAX_IDEMPOTENCY_KEY} visible ASCII characters or spaces; a repeat of the same \
                request answers 202 again with the same message as it is now and the header \
                Idempotent-Replayed: true; a different request 409 idempotency_conflict"),
            "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY}
        }));
    }
    let (status, name) = spec.success;
    let success = match name {
        "Empty" => json!({"description": "Done"}),
        "Csv" => {
            json!({"description": "CSV (RFC 4180)", "content": {"text/csv": {"schema": {"type": "string"}}}})
        }
        "Metrics" => {
            json!({"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}})
        }
        _ => {
            json!({"description": name, "content": {"application/json": {"schema": schema_ref(name)}}})
        }
    };
    let error = json!({"description": "Error", "content": {"application/json": {"schema": schema_ref("Error")}}});
    let mut responses = Map::new();
    responses.insert(status.to_string(), success);
    if spec.body == Some(RequestBody::Optout) {
        responses.insert(
            "200".into(),
            json!({"description": "Already opted out: the record as it was, unchanged",
            "content": {"application/json": {"schema": schema_ref("Optout")}}}),
        );
    }
    responses.insert("4XX".into(), error.clone());
    responses.insert("503".into(), error);
    let mut op = json!({
        "summary": spec.summary,
        "operationId": operation_id(spec),
        "parameters": parameters,
        "responses": responses,
    });
    match spec.access {
        Access::Public => op["security"] = json!([]),
        Access::Authenticated => op["security"] = json!([{"bearer": []}]),
        Access::Scope(scope) => {
            op["security"] = json!([{"bearer": []}]);
            op["x-scope"] = json!(super::auth::scope_name(scope));
        }
    }
    if let Some(body) = spec.body {
        op["requestBody"] = request_body(body);
    }
    op
}

fn operation_id(spec: &RouteSpec) -> String {
    let words: Vec<&str> = spec
        .path
        .split(['/', '.', '{', '}'])
        .filter(|w| !w.is_empty() && *w != "v1")
        .collect();
    format!(
        "{}_{}",
        spec.method.as_str().to_ascii_lowercase(),
        words.join("_")
    )
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn request_body(body: RequestBody) -> Value {
    let content = match body {
        RequestBody::Send => json!({
            "application/json": {"schema": schema_ref("SendRequest")},
            "application/x-www-form-urlencoded": {"schema": schema_ref("SendRequest")},
        }),
        RequestBody::Batch => json!({"application/json": {"schema": schema_ref("BatchRequest")}}),
        RequestBody::Optout => json!({"application/json": {"schema": schema_ref("OptoutRequest")}}),
    };
    json!({"required": true, "content": content})
}

/// Response objects whose every property is always present (`null` when empty): listed as required, so
/// generated clients need not treat each as optional.
const ALWAYS_COMPLETE: &[&str] = &[
    "Message",
    "Modem",
    "Modems",
    "Optout",
    "Optouts",
    "OptoutAudit",
];

fn schemas() -> Value {
    let mut schemas = schema_definitions();
    for name in ALWAYS_COMPLETE {
        require_every_property(&mut schemas[*name]);
    }
    if let Some(item) = schemas["OptoutAudit"]["properties"]["changes"].get_mut("items") {
        require_every_property(item);
    }
    schemas
}

fn require_every_property(schema: &mut Value) {
    let keys: Vec<Value> = schema["properties"]
        .as_object()
        .map(|properties| properties.keys().cloned().map(Value::from).collect())
        .unwrap_or_default();
    schema["required"] = Value::Array(keys);
}

fn schema_definitions() -> Value {
    let status = json!({"type": "string", "enum": ["scheduled", "queued", "sending", "sent", "delivered", "failed",
        "cancelled", "expired", "unknown", "received"]});
    let encoding = json!({"type": "string", "enum": ["gsm7", "ucs2", "8bit", "undecoded"]});
    let optional_time = json!({"type": ["string", "null"], "format": "date-time"});
    let time = json!({"type": "string", "format": "date-time"});
    let optional_string = json!({"type": ["string", "null"]});
    let registration = json!({"type": ["string", "null"], "description": "+CREG/+CGREG/+CEREG; null: not asked",
        "enum": ["not_registered", "home", "searching", "denied", "unknown", "roaming", "registered_other", null]});
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": schema_ref("ErrorBody")}},
        "ErrorBody": {"type": "object", "required": ["code", "message", "field"], "properties": {
            "code": {"type": "string", "enum": codes,
                "description": "stable, for programs; README's \"Error codes\" says when each is answered"},
            "message": {"type": "string", "description": "for people; its wording may change"},
            "field": {"type": ["string", "null"],
                "description": "the field at fault (a batch item's own path), null when no one field is"}}},
        "SendRequest": {"type": "object", "required": ["to", "text"], "additionalProperties": false, "properties": {
            "to": {"type": "string", "description": "The recipient as people write numbers, read as libphonenumber reads them: international (+ or an international prefix such as 00 or 011), else national in [server] default_region. Refused with 422 invalid_number unless the numbering plan assigns it."},
            "text": {"type": "string", "description": format!("non-blank; at most {MAX_PARTS} SMS parts; no control characters but tab, CR, LF and FF (422 control_character)")},
            "send_at": {"type": "string", "format": "date-time", "description": "RFC 3339; not in the past"},
            "expires_at": {"type": "string", "format": "date-time", "description": "after now and send_at"},
            "priority": {"description": "0-9 (9 most urgent) or low=2, normal=5 (default), high=8",
                "oneOf": [{"type": "integer", "minimum": 0, "maximum": 9},
                          {"type": "string", "enum": ["low", "normal", "high"]}]},
            "encoding": {"type": "string", "enum": ["auto", "gsm7", "ucs2"], "default": "auto"},
            "smart": {"type": "boolean",
                "description": "replace look-alike Unicode with GSM characters; default [pdu] smart_encoding"},
            "reference": {"type": "string", "maxLength": MAX_REFERENCE},
            "metadata": {"type": "object", "description": format!("at most {MAX_METADATA} bytes serialised \
                (a JSON string in a form)")},
            "tz": {"type": "string", "description": "the recipient's IANA time zone, for quiet hours"},
            "region": {"type": "string", "pattern": "^[A-Za-z]{2}(-[A-Za-z0-9]{1,3})?$",
                "description": "the region of the recipient's address, ISO 3166 (US-MA, CA-ON, MX): its \
                    quiet hours apply besides the number's, and caps with that region count the send"},
            "language": {"type": "string", "enum": ["en", "es", "fr"], "default": "en",
                "description": "the recipient's language: which [optout] notice the text gets"}}},
        "BatchRequest": {"type": "object", "required": ["messages"], "properties": {"messages": {
            "type": "array", "minItems": 1, "maxItems": super::handlers::MAX_BATCH,
            "items": {"allOf": [schema_ref("SendRequest")],
                "description": "plus optional idempotency_key. An item that is not a valid send, even one \
                    that is not an object, gets its own 422 in `results` and the other items go ahead; the \
                    request as a whole is refused only when `messages` is missing, not an array, empty or \
                    over the limit"}}}},
        "BatchResults": {"type": "object", "properties": {"results": {"type": "array", "items": {
            "type": "object", "required": ["index", "http_status"],
            "description": "per item, in order: what a single POST /v1/messages would have answered",
            "properties": {"index": {"type": "integer"},
                "http_status": {"type": "integer", "description": "202 accepted (new or an idempotent repeat), 4xx refused"},
                "replayed": {"type": "boolean", "description": "present and true on an idempotent repeat"},
                "accepted": schema_ref("Accepted"), "error": schema_ref("ErrorBody")}}}}},
        "Accepted": {"type": "object", "required": ["id", "status", "to", "parts", "encoding"], "properties": {
            "id": {"type": "string", "format": "uuid"}, "status": status, "to": {"type": "string"},
            "parts": {"type": "integer"}, "encoding": encoding}},
        "Message": {"type": "object", "properties": {
            "id": {"type": "string", "format": "uuid"},
            "direction": {"type": "string", "enum": ["outbound", "inbound"]},
            "status": status, "to": {"type": ["string", "null"],
                "description": "outbound: the recipient; inbound: the number of the SIM it came in on (null \
                    when its modem reports none)"},
            "from": {"type": ["string", "null"],
                "description": "inbound: the sender; outbound: the number of the SIM it went out from (null \
                    until sent, or when its modem reports none)"},
            "text": {"type": "string"}, "parts": {"type": "integer"}, "encoding": encoding,
            "priority": {"type": "integer", "description": "0-9, higher first"},
            "reference": {"type": ["string", "null"]}, "metadata": {"type": ["object", "null"]},
            "tz": {"type": ["string", "null"]}, "region": {"type": ["string", "null"]},
            "modem": {"type": ["string", "null"]},
            "send_at": optional_time, "expires_at": optional_time, "created_at": time, "updated_at": time,
            "sent_at": {"type": ["string", "null"], "format": "date-time",
                "description": "sent and delivered messages: when the last part was sent; received \
                    messages: when the sender's phone sent it (the SMSC's timestamp)"},
            "delivered_at": {"type": ["string", "null"], "format": "date-time",
                "description": "delivered messages: when the last delivery report came"},
            "not_before": {"type": ["string", "null"], "format": "date-time",
                "description": "scheduled messages: when it may go next (send_at, or the end of a hold: \
                    quiet hours, a contact cap, a retry's back-off)"},
            "error": {"type": ["string", "null"], "description": "why it failed, is unknown or is held; \
                for a queued message no modem can take now, why"},
            "error_code": {"type": ["integer", "null"],
                "description": "the modem's +CMS ERROR code or the delivery report's TP-Status behind `error`"},
            "category": {"type": "string", "enum": ["standard", "auto_reply", "confirmation"],
                "description": "standard: sent by the CMS; auto_reply: a reply rule's answer; confirmation: \
                    the gateway's answer to STOP, START or HELP"},
            "api_key": {"type": ["string", "null"],
                "description": "the [[api_keys]] name that sent it; rules for the gateway's own answers; null for a reply"}}},
        "MessageDetail": {"allOf": [schema_ref("Message"), {"type": "object", "properties": {
            "part_list": {"type": "array", "items": {"type": "object", "properties": {
                "part": {"type": "integer"},
                "status": {"type": "string", "enum": ["pending", "submitting", "sent", "delivered", "failed",
                    "unknown"]},
                "modem": {"type": ["string", "null"]},
                "reference": {"type": ["integer", "null"], "description": "TP-MR"},
                "sent_at": optional_time,
                "report_status": {"type": ["integer", "null"], "description": "TP-ST of the delivery report"},
                "reported_at": optional_time}}},
            "events": {"type": "array", "description": "append-only history, oldest first",
                "items": {"type": "object", "properties": {
                "at": time, "actor": {"type": "string", "description": "api:KEY, dispatcher, modem:ID, system"},
                "kind": {"type": "string"}, "state": status, "part": {"type": ["integer", "null"]},
                "detail": {"type": ["string", "null"]}, "rule": {"type": ["string", "null"]}}}}}}]},
        "Page": {"type": "object", "required": ["messages", "next"], "properties": {
            "messages": {"type": "array", "items": schema_ref("Message")},
            "next": {"type": ["string", "null"], "description": "pass back as `after`; null on the last page"}}},
        "Modem": {"type": "object", "properties": {"id": {"type": "string"},
            "state": {"type": "string", "enum": ["initialising", "ready", "degraded", "offline", "paused"]},
            "signal": {"type": ["integer", "null"], "description": "+CSQ RSSI: 0-31, 99 unknown"},
            "operator": {"type": ["string", "null"]},
            "cs": registration.clone(), "ps": registration.clone(), "eps": registration,
            "identity": {"type": "object", "description": "read from the modem and its SIM at start-up",
                "properties": {"manufacturer": optional_string.clone(), "model": optional_string.clone(),
                "revision": optional_string.clone(), "imei": optional_string.clone(),
                "imsi": optional_string.clone(), "iccid": optional_string.clone(),
                "own_number": optional_string.clone()}},
            "last_error": {"type": ["string", "null"], "description": "the last error worth an admin's eye"},
            "storage_used": {"type": ["integer", "null"],
                "description": "messages in the storage replies are read from (AT+CPMS?); when it is full no \
                    new SMS can arrive and last_error says so"},
            "storage_total": {"type": ["integer", "null"], "description": "that storage's size"},
            "answered_at": {"type": ["string", "null"], "format": "date-time",
                "description": "when it last answered a health poll (every minute while idle): how fresh the \
                    rest is; a modem that hung while idle reads ready until its next poll times out"},
            "failed_sends": {"type": "integer", "description": format!("sends that failed in a row with a \
                transient error; from {} on the modem is degraded (no jobs) until its next health poll (every 10 s \
                while degraded)", crate::modem::job::FAILED_SENDS_DEGRADE)},
            "counters": {"type": "object", "properties": {"parts_sent": {"type": "integer"},
                "parts_failed": {"type": "integer"}, "received": {"type": "integer"}}},
            "sent_today": {"type": "integer",
                "description": "parts its SIM sent on today's cap day: what `daily_cap` counts"},
            "daily_cap": {"type": ["integer", "null"], "description": "from the config; null when none"}}},
        "Modems": {"type": "object", "properties": {"modems": {"type": "array", "items": schema_ref("Modem")}}},
        "OptoutRequest": {"type": "object", "required": ["number"], "additionalProperties": false,
            "properties": {"number": {"type": "string"}, "note": {"type": "string"}}},
        "Optout": {"type": "object", "properties": {"number": {"type": "string"}, "created_at": time,
            "actor": {"type": "string"}, "note": {"type": ["string", "null"]},
            "source": {"type": ["string", "null"], "enum": ["keyword", "review", "api", null],
                "description": "how it came about: keyword and review are lifted by a START from the number or through the API, api only through the API"}}},
        "Optouts": {"type": "object", "properties": {"optouts": {"type": "array", "items": schema_ref("Optout")}}},
        "OptoutAudit": {"type": "object", "properties": {"changes": {"type": "array", "items": {
            "type": "object", "properties": {
                "number": {"type": "string"}, "at": time,
                "opted_out": {"type": "boolean", "description": "true: it opted out; false: lifted"},
                "actor": {"type": "string", "description": "rules for a reply, api:KEY for the API"},
                "message_id": {"type": ["string", "null"], "format": "uuid",
                    "description": "the reply that asked (STOP, START...)"},
                "modem": {"type": ["string", "null"]},
                "detail": {"type": ["string", "null"],
                    "description": "the keyword, the reply under review (review: ...), an admin's note"}}}}}},
        "Status": {"type": "object", "properties": {"status": {"type": "string"}}},
        "WebhookEnvelope": {"type": "object", "required": ["id", "type", "created_at", "data"], "properties": {
            "id": {"type": "string", "format": "uuid",
                "description": "the event's id, kept when it is sent again: de-duplicate on it"},
            "type": {"type": "string"}, "created_at": time.clone(), "data": {"type": "object"}}},
        "MessageEventData": {"type": "object", "properties": {
            "message_id": {"type": "string", "format": "uuid"},
            "to": {"type": "string", "description": "E.164"}, "parts": {"type": "integer"},
            "modem": optional_string.clone(),
            "reference": {"type": ["string", "null"], "description": "the send's `reference`, echoed"},
            "metadata": {"type": ["object", "null"], "description": "the send's `metadata`, echoed"},
            "error": {"type": ["string", "null"], "description": "why it failed or is unknown"},
            "error_code": {"type": ["integer", "null"],
                "description": "the modem's +CMS ERROR code or the delivery report's TP-Status behind `error`"},
            "category": {"type": "string", "enum": ["standard", "confirmation", "auto_reply"],
                "description": "standard for the CMS's texts; confirmation and auto_reply for the gateway's own answers"}}},
        "ReceivedEventData": {"type": "object", "properties": {
            "message_id": {"type": "string", "format": "uuid"}, "from": {"type": "string"},
            "to": {"type": ["string", "null"], "description": "our modem's number, when known"},
            "text": {"type": "string", "description": "the whole text, reassembled from its parts"},
            "parts": {"type": "integer"}, "modem": {"type": "string", "description": "the modem it came in on"},
            "sent_at": optional_time.clone(),
            "intent": {"type": ["string", "null"],
                "description": "opt_out, opt_in, help, optout_review, or a reply menu's intent"},
            "needs_agent": {"type": "boolean", "description": "no rule fully handled it: a person should read it"}}},
        "OptoutEventData": {"type": "object", "description": "optout.created: the number opted out; \
            optout.removed: it opted back in (a START reply: source keyword; or through the API: source api). \
            A number's opt-out events arrive in the order they happened.", "properties": {
            "number": {"type": "string"}, "source": {"type": "string", "enum": ["keyword", "review", "api"]},
            "keyword": {"type": ["string", "null"], "description": "the keyword (source keyword)"},
            "text": {"type": ["string", "null"], "description": "the reply to review (source review)"},
            "note": {"type": ["string", "null"], "description": "the admin's note (source api)"},
            "message_id": {"type": ["string", "null"], "format": "uuid",
                "description": "the reply that caused it (sources keyword and review)"}}},
        "OpenApi": {"type": "object"},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_every_ref_resolves() {
        let doc = document();
        for route in table() {
            let method = route.spec.method.as_str().to_ascii_lowercase();
            assert!(
                doc["paths"][route.spec.path][&method].is_object(),
                "{method} {}",
                route.spec.path
            );
        }
        assert_eq!(doc["paths"]["/v1/messages"]["post"]["x-scope"], "send");
        assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([]));
        assert_eq!(
            doc["paths"]["/v1/messages/{id}"]["get"]["parameters"][0]["name"],
            "id"
        );
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "dangling $ref {name}"
            );
        }
    }
}
