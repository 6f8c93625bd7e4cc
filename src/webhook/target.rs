//! The configured webhooks: where events go, what each subscribes to, and what logs call it.

use hyper::Uri;

use super::WebhookError;
use super::event::EventKind;
use super::signature::{HmacSha256, keyed_mac, signature_header};

#[derive(Clone)]
pub struct Target {
    url: Uri,
    /// What logs and `/metrics` call it (see [`labels`]).
    label: String,
    /// Its `name` in the config: what identifies it when its URL changes.
    name: Option<String>,
    mac: HmacSha256,
    /// Subscribed events; every event when `None`.
    events: Option<Vec<EventKind>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("label", &self.label)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// A webhook at `url` (http or https) signing with `secret`; `events: None` subscribes to every event.
    pub fn new(
        url: &str,
        secret: &str,
        events: Option<Vec<EventKind>>,
    ) -> Result<Target, WebhookError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| WebhookError::BadUrl(url.to_owned()))?;
        match uri.scheme_str() {
            Some("http" | "https") if uri.host().is_some() && port_is_valid(&uri) => {}
            _ => return Err(WebhookError::BadUrl(url.to_owned())),
        }
        Ok(Target {
            label: default_label(&uri),
            name: None,
            url: uri,
            mac: keyed_mac(secret.as_bytes())?,
            events,
        })
    }

    /// The same webhook under another label in logs, attempts and `/metrics`.
    pub fn labelled(mut self, label: impl Into<String>) -> Target {
        self.label = label.into();
        self
    }

    /// Its configured name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// What logs and `/metrics` call this webhook.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The URL its outbox rows are addressed to.
    pub fn url(&self) -> String {
        self.url.to_string()
    }

    pub fn wants(&self, kind: EventKind) -> bool {
        subscribes(self.events.as_deref(), kind)
    }

    /// What the outbox needs to know of this webhook to write its rows.
    pub fn subscription(&self) -> Subscription {
        Subscription {
            url: self.url.to_string(),
            name: self.name.clone(),
            events: self.events.clone(),
        }
    }

    /// Where its rows are posted.
    pub(super) fn uri(&self) -> &Uri {
        &self.url
    }

    /// Whether an outbox row addressed to `url` is this webhook's.
    pub(super) fn is(&self, url: &str) -> bool {
        self.url == url
    }

    /// The `Modemgate-Signature` value for `body` sent at `timestamp` (unix seconds).
    pub fn signature(&self, timestamp: i64, body: &[u8]) -> String {
        signature_header(&self.mac, timestamp, body)
    }
}

/// The `[[webhooks]]` entries as delivery targets, each under its label ([`labels`]); an empty event
/// list subscribes to every event.
pub fn targets(webhooks: &[crate::config::Webhook]) -> Result<Vec<Target>, WebhookError> {
    webhooks
        .iter()
        .zip(labels(webhooks))
        .map(|(webhook, label)| {
            let events = (!webhook.events.is_empty()).then(|| webhook.events.to_vec());
            let mut target =
                Target::new(&webhook.url.to_string(), webhook.secret.expose(), events)?
                    .labelled(label);
            target.name = webhook.name.as_ref().map(|name| name.as_str().to_owned());
            Ok(target)
        })
        .collect()
}

/// What logs and `/metrics` call each `[[webhooks]]` entry: its `name`, else its scheme
/// and host, never its path or query, where receivers often put a token. Unnamed webhooks on one host are
/// told apart by their position in the file (`https://cms.example#2`).
pub fn labels(webhooks: &[crate::config::Webhook]) -> Vec<String> {
    let hosts: Vec<String> = webhooks.iter().map(|w| default_label(&w.url)).collect();
    webhooks
        .iter()
        .zip(&hosts)
        .enumerate()
        .map(|(i, (webhook, host))| match &webhook.name {
            Some(name) => name.as_str().to_owned(),
            None if hosts.iter().filter(|h| *h == host).count() > 1 => format!("{host}#{}", i + 1),
            None => host.clone(),
        })
        .collect()
}

/// What logs call the webhook at `url` when no configured name is known: its scheme and host.
pub fn label_of(url: &str) -> String {
    url.parse::<Uri>().map_or_else(
        |_| "an unreadable webhook URL".to_owned(),
        |uri| default_label(&uri),
    )
}

/// `scheme://host[:port]`: the URL without credentials, path or query.
/// A port written in the URL must be one a connection can use (hyper's parser takes `:99999`, and the
/// webhook would then fail at every delivery instead of at check-config).
fn port_is_valid(uri: &Uri) -> bool {
    let written = uri
        .authority()
        .and_then(|a| a.as_str().rsplit_once(':'))
        // `[::1]` has colons but no port.
        .filter(|(_, port)| !port.ends_with(']'))
        .map(|(_, port)| port);
    written.is_none_or(|port| port.parse::<u16>().is_ok_and(|p| p != 0))
}

fn default_label(url: &Uri) -> String {
    let scheme = url.scheme_str().unwrap_or("http");
    let host = url.host().unwrap_or("");
    match url.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

/// A webhook as the outbox sees it: each event gets a row of its own for every webhook subscribed to its
/// type, so a receiver that is down delays and repeats only its own deliveries, not the others'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The webhook's URL, as the outbox rows name it.
    pub url: String,
    /// Its configured name, recorded with its rows so they can follow it to a new URL.
    pub name: Option<String>,
    /// Subscribed events; every event when `None`.
    pub events: Option<Vec<EventKind>>,
}

impl Subscription {
    pub fn wants(&self, kind: EventKind) -> bool {
        subscribes(self.events.as_deref(), kind)
    }
}

/// Whether a webhook subscribed to `events` (every event when `None`) wants `kind`.
fn subscribes(events: Option<&[EventKind]>, kind: EventKind) -> bool {
    events.is_none_or(|events| events.contains(&kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_validate_and_filter_events() {
        assert!(Target::new("https://cms/hook", "s", None).is_ok());
        assert!(Target::new("https://cms:8443/hook", "s", None).is_ok());
        assert!(Target::new("http://[::1]:8080/hook", "s", None).is_ok());
        assert!(Target::new("http://[::1]/hook", "s", None).is_ok());
        for bad in [
            "http://cms:99999/hook",
            "http://cms:0/hook",
            "http://[::1]:70000/",
        ] {
            assert!(Target::new(bad, "s", None).is_err(), "{bad}");
        }
        assert!(matches!(
            Target::new("ftp://cms/hook", "s", None),
            Err(WebhookError::BadUrl(_))
        ));
        assert!(matches!(
            Target::new("cms/hook", "s", None),
            Err(WebhookError::BadUrl(_))
        ));
        assert_eq!(
            Target::new("http://cms/", "", None).unwrap_err(),
            WebhookError::EmptySecret
        );
        let only =
            Target::new("http://cms/a", "s", Some(vec![EventKind::MessageDelivered])).unwrap();
        assert!(only.wants(EventKind::MessageDelivered));
        assert!(!only.wants(EventKind::MessageSent));
        assert!(
            Target::new("http://cms/b", "s", None)
                .unwrap()
                .wants(EventKind::OptoutCreated)
        );
    }

    #[test]
    fn config_webhooks_subscribe_by_event_type() {
        let config: crate::config::Webhook = toml::from_str(
            "url = \"http://cms.local/hook\"\nsecret = \"s3cret-s3cret-s3cret\"\nevents = [\"message.delivered\"]",
        )
        .unwrap();
        let target = targets(std::slice::from_ref(&config)).unwrap().remove(0);
        assert!(target.wants(EventKind::MessageDelivered));
        assert!(!target.wants(EventKind::MessageSent) && !target.wants(EventKind::OptoutCreated));
        let status_name: Result<crate::config::Webhook, _> = toml::from_str(
            "url = \"http://cms.local/hook\"\nsecret = \"s3cret-s3cret-s3cret\"\nevents = [\"delivered\"]",
        );
        assert!(
            status_name
                .unwrap_err()
                .to_string()
                .contains("unknown webhook event `delivered`")
        );
    }

    #[test]
    fn webhooks_are_labelled_by_name_else_by_host_without_credentials_path_or_query() {
        let hook = |name: Option<&str>, url: &str| crate::config::Webhook {
            name: name.map(|n| n.parse().unwrap()),
            url: url.parse().unwrap(),
            secret: "s3cret-s3cret-s3cret".parse().unwrap(),
            events: Vec::new(),
        };
        let webhooks = [
            hook(Some("cms"), "https://cms.example/hooks?token=abc"),
            hook(None, "https://user:pw@archive.example:8443/a/T0KEN"),
            hook(None, "http://10.0.0.5/one"),
            hook(None, "http://10.0.0.5/two?key=k"),
        ];
        let expected = [
            "cms",
            "https://archive.example:8443",
            "http://10.0.0.5#3",
            "http://10.0.0.5#4",
        ];
        assert_eq!(labels(&webhooks), expected);
        let targets = targets(&webhooks).unwrap();
        assert_eq!(
            targets.iter().map(Target::label).collect::<Vec<_>>(),
            expected
        );
        assert_eq!(targets[0].url(), "https://cms.example/hooks?token=abc");
        assert!(!format!("{:?}", targets[1]).contains("T0KEN"));
        assert_eq!(
            label_of("https://user:pw@gone.example:8443/a/T0KEN?k=1"),
            "https://gone.example:8443"
        );
    }
}
