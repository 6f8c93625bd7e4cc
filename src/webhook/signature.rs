//! `Modemgate-Signature`: HMAC-SHA256 over `<t>.<body>`, made by the deliverer and checked by receivers.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use jiff::Timestamp;
use sha2::Sha256;

use super::WebhookError;

pub(super) type HmacSha256 = Hmac<Sha256>;

pub(super) fn keyed_mac(secret: &[u8]) -> Result<HmacSha256, WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::EmptySecret);
    }
    HmacSha256::new_from_slice(secret).map_err(|_| WebhookError::EmptySecret)
}

fn signed_mac(mac: &HmacSha256, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = mac.clone();
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Modemgate-Signature` value for `body` sent at `timestamp` (unix seconds).
pub(super) fn signature_header(mac: &HmacSha256, timestamp: i64, body: &[u8]) -> String {
    let mac = signed_mac(mac, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(mac))
}

/// Checks a `Modemgate-Signature` header as a receiver should: the MAC over `t.body` in constant time, and
/// `t` within `tolerance` of `now`.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: Timestamp,
    tolerance: Duration,
) -> Result<(), WebhookError> {
    let mut timestamp = None;
    let mut signature = None;
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", hex_mac)) => signature = hex::decode(hex_mac).ok(),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(WebhookError::MalformedSignature);
    };
    if now.as_second().abs_diff(timestamp) > tolerance.as_secs() {
        return Err(WebhookError::StaleSignature);
    }
    signed_mac(&keyed_mac(secret)?, timestamp, body)
        .verify_slice(&signature)
        .map_err(|_| WebhookError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(secret: &str, timestamp: i64, body: &[u8]) -> String {
        signature_header(&keyed_mac(secret.as_bytes()).unwrap(), timestamp, body)
    }

    #[test]
    fn signatures_verify_and_tampering_is_caught() {
        let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let header = header("s3cret", now.as_second(), b"{}");
        assert!(header.starts_with(&format!("t={},v1=", now.as_second())));
        let tolerance = Duration::from_secs(300);
        assert_eq!(verify(b"s3cret", &header, b"{}", now, tolerance), Ok(()));
        assert_eq!(
            verify(b"s3cret", &header, b"{ }", now, tolerance),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(b"other", &header, b"{}", now, tolerance),
            Err(WebhookError::BadSignature)
        );
        let later = now.checked_add(Duration::from_secs(301)).unwrap();
        assert_eq!(
            verify(b"s3cret", &header, b"{}", later, tolerance),
            Err(WebhookError::StaleSignature)
        );
        assert_eq!(
            verify(b"s3cret", "v1=zz", b"{}", now, tolerance),
            Err(WebhookError::MalformedSignature)
        );
    }

    #[test]
    fn known_answer_signature() {
        // HMAC-SHA256(key="key", "1.{}") computed independently (Python hmac module).
        assert_eq!(
            header("key", 1, b"{}"),
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }
}
