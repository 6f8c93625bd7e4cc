//! The HTTP client `status` and `send` talk to the daemon with: where it listens and which token to use
//! (from the config file unless given), and errors an operator can act on in one line.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::{Config, Credential, Scope};

/// Longest wait for one answer: the API answers from memory or one SQLite read, so a daemon silent this
/// long is stuck, and the operator should hear so rather than watch a frozen shell.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `--config/--url/--token`, shared by the commands that call the API.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The config file the URL and token default from.
    #[arg(long, default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// The API's base URL, e.g. http://127.0.0.1:8080 (default: `[server] listen` of the config, https
    /// when it sets `tls_cert`).
    #[arg(long)]
    pub url: Option<String>,
    /// Bearer token (default: the first `[[api_keys]]` entry with a plain `token` and the needed scope).
    #[arg(long)]
    pub token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the URL and token from {path}: {reason} (or pass --url and --token)")]
    Config { path: PathBuf, reason: String },
    #[error(
        "no [[api_keys]] entry in {path} has a plain `token` with the {scope} scope: pass --token"
    )]
    NoToken { path: PathBuf, scope: &'static str },
    #[error("invalid --url {url:?}: expected http://HOST:PORT or https://HOST:PORT")]
    Url { url: String },
    #[error("modemgate is not running at {url}: {reason}")]
    NotRunning { url: String, reason: String },
    #[error(
        "modemgate at {url} refused over TLS: {reason} (on the box, leave out --url: the config's \
         tls_cert is then trusted)"
    )]
    Tls { url: String, reason: String },
    #[error("modemgate at {url} did not answer within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout { url: String },
    /// The API refused the request: its `{"error": {code, message, field}}`, as one line.
    #[error("{method} {path}: HTTP {status} {code}{}: {message}", field.as_ref().map(|f| format!(" (field `{f}`)")).unwrap_or_default())]
    Api {
        method: Method,
        path: String,
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
    },
    #[error("{method} {path}: unexpected answer: {reason}")]
    BadAnswer {
        method: Method,
        path: String,
        reason: String,
    },
}

/// A client bound to one daemon and token.
pub struct ApiClient {
    /// `http://host:port` or `https://host:port`, no trailing slash.
    base: String,
    token: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl ApiClient {
    /// Resolve the URL and token: flags first, then the config file (read only when a flag is missing).
    pub fn resolve(args: &ApiArgs, scope: Scope) -> Result<ApiClient, ClientError> {
        // A daemon that serves TLS is trusted by the certificate its config names, when the URL comes from
        // that config too; a URL given with --url is checked against the system's CA store.
        let (url, token, pinned) = match (&args.url, &args.token) {
            (Some(url), Some(token)) => (url.clone(), token.clone(), None),
            (url, token) => {
                let config = Config::load(&args.config).map_err(|e| ClientError::Config {
                    path: args.config.clone(),
                    reason: e.to_string().replace('\n', "; "),
                })?;
                let (url, pinned) = match (url, &config.server.tls) {
                    (Some(url), _) => (url.clone(), None),
                    (None, None) => (format!("http://{}", reachable(config.server.listen)), None),
                    (None, Some(files)) => {
                        let pinned =
                            crate::tls::pinned_client_config(&files.cert).map_err(|e| {
                                ClientError::Config {
                                    path: args.config.clone(),
                                    reason: e.to_string(),
                                }
                            })?;
                        let url = format!("https://{}", reachable(config.server.listen));
                        (url, Some(pinned))
                    }
                };
                let token = match token {
                    Some(token) => token.clone(),
                    None => config_token(&args.config, &config, scope)?,
                };
                (url, token, pinned)
            }
        };
        let base = checked_url(&url)?;
        let connector = crate::tls::https_connector(HttpConnector::new(), pinned);
        Ok(ApiClient {
            base,
            token,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`, the JSON answer of a 2xx.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body, the JSON answer of a 2xx.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let bad = |reason: String| ClientError::BadAnswer {
            method: method.clone(),
            path: path.to_owned(),
            reason,
        };
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token));
        let body = match body {
            Some(json) => {
                request = request.header("content-type", "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .map_err(|_| ClientError::Url {
                url: self.base.clone(),
            })?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(&self.base, &e))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| bad(format!("reading the body: {e}")))?
                .to_bytes();
            Ok::<_, ClientError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                url: self.base.clone(),
            })??;
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            return json.ok_or_else(|| bad(format!("HTTP {status} without a JSON body")));
        }
        Err(api_error(method, path, status, json.as_ref()))
    }
}

fn api_error(method: Method, path: &str, status: StatusCode, body: Option<&Value>) -> ClientError {
    let error = body.and_then(|b| b.get("error"));
    let text = |name: &str| {
        error
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    ClientError::Api {
        method,
        path: path.to_owned(),
        status: status.as_u16(),
        code: text("code").unwrap_or_else(|| "error".into()),
        message: text("message")
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned()),
        field: text("field"),
    }
}

/// Why a request got no answer: "connection refused" rather than hyper's "client error (Connect)" (the io
/// error at the bottom of the chain), or a TLS refusal, which means the daemon runs but is not trusted.
fn unreachable(url: &str, error: &hyper_util::client::legacy::Error) -> ClientError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(tls) = tls_cause(io) {
                return ClientError::Tls {
                    url: url.to_owned(),
                    reason: tls.to_string(),
                };
            }
            let reason = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                _ => io.to_string(),
            };
            return ClientError::NotRunning {
                url: url.to_owned(),
                reason,
            };
        }
        source = e.source();
    }
    // No io error at the bottom: hyper's own words, each cause after the last.
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        reason = format!("{reason}: {e}");
        source = e.source();
    }
    ClientError::NotRunning {
        url: url.to_owned(),
        reason,
    }
}

/// The TLS error inside `io`, which the TLS connector wraps in an io error of its own.
fn tls_cause(io: &std::io::Error) -> Option<&rustls::Error> {
    let inner = io.get_ref()?;
    inner
        .downcast_ref::<rustls::Error>()
        .or_else(|| inner.downcast_ref::<std::io::Error>().and_then(tls_cause))
}

fn checked_url(url: &str) -> Result<String, ClientError> {
    let trimmed = url.trim_end_matches('/');
    match trimmed.parse::<hyper::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
            Ok(trimmed.to_owned())
        }
        _ => Err(ClientError::Url {
            url: url.to_owned(),
        }),
    }
}

/// Where to connect for a listen address: a wildcard bind is reached on loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// The first key with a plain token holding `scope` (or admin). `Token` keeps its text private so it never
/// reaches a log; the text is read back from the file's TOML at the same `[[api_keys]]` position.
fn config_token(path: &Path, config: &Config, scope: Scope) -> Result<String, ClientError> {
    let no_token = || ClientError::NoToken {
        path: path.to_owned(),
        scope: scope_name(scope),
    };
    let index = config
        .api_keys
        .iter()
        .position(|key| {
            matches!(key.credential, Credential::Token(_))
                && key.scopes.iter().any(|s| *s == scope || *s == Scope::Admin)
        })
        .ok_or_else(no_token)?;
    let text = std::fs::read_to_string(path).map_err(|e| ClientError::Config {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| ClientError::Config {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    table
        .get("api_keys")
        .and_then(|keys| keys.get(index))
        .and_then(|key| key.get("token"))
        .and_then(|token| token.as_str())
        .map(str::to_owned)
        .ok_or_else(no_token)
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Send => "send",
        Scope::Read => "read",
        Scope::Admin => "admin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_is_reached_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:8080".parse().unwrap()).to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            reachable("[::]:9000".parse().unwrap()).to_string(),
            "[::1]:9000"
        );
        assert_eq!(
            reachable("10.1.2.3:80".parse().unwrap()).to_string(),
            "10.1.2.3:80"
        );
    }

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        assert_eq!(
            checked_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(checked_url("https://gw:8443").unwrap(), "https://gw:8443");
        assert!(checked_url("127.0.0.1:8080").is_err());
        assert!(checked_url("ftp://gw:21").is_err());
        assert!(checked_url("https:///v1").is_err());
    }

    #[test]
    fn the_token_comes_from_the_first_key_with_the_scope() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.toml");
        std::fs::write(
            &path,
            r#"
[[api_keys]]
name = "hashed"
token_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
scopes = ["read"]
[[api_keys]]
name = "cms"
token = "send-only"
scopes = ["send"]
[[api_keys]]
name = "ops"
token = "ops-token"
scopes = ["admin"]
"#,
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(
            config_token(&path, &config, Scope::Send).unwrap(),
            "send-only"
        );
        assert_eq!(
            config_token(&path, &config, Scope::Read).unwrap(),
            "ops-token"
        );
    }
}
