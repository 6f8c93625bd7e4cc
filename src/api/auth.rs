//! Bearer-token authentication, scopes and per-key request rates.
//!
//! Tokens are compared as SHA-256 digests with `subtle`, against every key without stopping at a match, so
//! neither the time taken nor the key order tells an attacker how close a guess was. Keys configured with a
//! plain `token` are hashed once at start-up; `token_sha256` keys never hold the secret at all.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// What a key may do. `admin` implies the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Queue, batch and cancel messages.
    Send,
    /// Read the log, conversations, modems and metrics.
    Read,
    /// Pause/resume modems, manage opt-outs.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (`/healthz`, `/readyz`).
    Public,
    /// Any valid key.
    Authenticated,
    /// A valid key holding this scope (or `admin`).
    Scope(Scope),
}

/// How a key's secret is configured.
#[derive(Clone, PartialEq, Eq)]
pub enum Token {
    /// `token = "..."`.
    Plain(String),
    /// `token_sha256 = "hex"`: the SHA-256 of the token.
    Sha256([u8; 32]),
}

impl Token {
    fn digest(&self) -> [u8; 32] {
        match self {
            Token::Plain(token) => Sha256::digest(token.as_bytes()).into(),
            Token::Sha256(digest) => *digest,
        }
    }
}

impl std::fmt::Debug for Token {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Plain(_) => f.write_str("Token::Plain(..)"),
            Token::Sha256(_) => f.write_str("Token::Sha256(..)"),
        }
    }
}

/// One `[[api_keys]]` entry, as the daemon maps it from the config.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    pub name: String,
    pub token: Token,
    pub scopes: Vec<Scope>,
    /// Per-key request limit (`rate = "200/s"`); unlimited when `None`.
    pub rate: Option<Quota>,
}

/// The authenticated caller, put into request extensions for handlers that record who did what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_name: Arc<str>,
    scopes: Vec<Scope>,
}

impl Principal {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes
            .iter()
            .any(|s| *s == scope || *s == Scope::Admin)
    }
}

struct Key {
    principal: Principal,
    digest: [u8; 32],
    /// Direct (unkeyed) limiter per key: keys are few and fixed at start-up, so no map is needed.
    limiter: Option<DefaultDirectRateLimiter>,
}

/// The configured keys, ready to check requests against.
pub struct Auth {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|k| &*k.principal.key_name).collect();
        f.debug_struct("Auth").field("keys", &names).finish()
    }
}

impl Auth {
    pub fn new(keys: Vec<KeyConfig>) -> Auth {
        let keys = keys
            .into_iter()
            .map(|k| Key {
                digest: k.token.digest(),
                limiter: k.rate.map(RateLimiter::direct),
                principal: Principal {
                    key_name: k.name.into(),
                    scopes: k.scopes,
                },
            })
            .collect();
        Auth { keys }
    }

    /// Checks the bearer token, the scope and the key's rate, in that order: a request from a key over its
    /// rate is refused before it costs anything, but only once we know the key is real.
    pub fn check(
        &self,
        headers: &HeaderMap,
        access: Access,
    ) -> Result<Option<Principal>, ApiError> {
        let required = match access {
            Access::Public => return Ok(None),
            Access::Authenticated => None,
            Access::Scope(scope) => Some(scope),
        };
        let token = bearer(headers).ok_or(ApiError::Unauthorized)?;
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.digest.ct_eq(&presented)) {
                found = Some(key);
            }
        }
        let key = found.ok_or(ApiError::Unauthorized)?;
        if let Some(scope) = required
            && !key.principal.has(scope)
        {
            return Err(ApiError::Forbidden(scope.as_str()));
        }
        if let Some(limiter) = &key.limiter
            && let Err(not_until) = limiter.check()
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(ApiError::RateLimited(wait.max(Duration::from_millis(1))));
        }
        Ok(Some(key.principal.clone()))
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Middleware state: the keys and what this route requires.
#[derive(Debug, Clone)]
pub struct Guard {
    pub auth: Arc<Auth>,
    pub access: Access,
}

/// Route layer enforcing a [`Guard`]; the [`Principal`] is left in the request extensions.
pub async fn guard(
    State(guard): State<Guard>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(principal) = guard.auth.check(req.headers(), guard.access)? {
        req.extensions_mut().insert(principal);
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn auth() -> Auth {
        let digest: [u8; 32] = Sha256::digest(b"hashed-secret").into();
        Auth::new(vec![
            KeyConfig {
                name: "cms".into(),
                token: Token::Plain("cms-secret".into()),
                scopes: vec![Scope::Send, Scope::Read],
                rate: None,
            },
            KeyConfig {
                name: "ops".into(),
                token: Token::Sha256(digest),
                scopes: vec![Scope::Admin],
                rate: None,
            },
            KeyConfig {
                name: "slow".into(),
                token: Token::Plain("slow-secret".into()),
                scopes: vec![Scope::Read],
                rate: Some(Quota::per_minute(NonZeroU32::MIN)),
            },
        ])
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn missing_or_wrong_token_is_401_and_missing_scope_is_403() {
        let auth = auth();
        let read = Access::Scope(Scope::Read);
        assert_eq!(
            auth.check(&HeaderMap::new(), read),
            Err(ApiError::Unauthorized)
        );
        assert_eq!(
            auth.check(&headers("Bearer nope"), read),
            Err(ApiError::Unauthorized)
        );
        assert_eq!(
            auth.check(&headers("Basic cms-secret"), read),
            Err(ApiError::Unauthorized)
        );
        let cms = auth
            .check(&headers("bearer cms-secret"), read)
            .unwrap()
            .unwrap();
        assert_eq!(&*cms.key_name, "cms");
        assert_eq!(
            auth.check(&headers("Bearer cms-secret"), Access::Scope(Scope::Admin)),
            Err(ApiError::Forbidden("admin"))
        );
        assert_eq!(auth.check(&HeaderMap::new(), Access::Public), Ok(None));
    }

    #[test]
    fn sha256_keys_match_and_admin_implies_every_scope() {
        let auth = auth();
        for scope in [Scope::Send, Scope::Read, Scope::Admin] {
            let p = auth
                .check(&headers("Bearer hashed-secret"), Access::Scope(scope))
                .unwrap();
            assert_eq!(p.map(|p| p.key_name.to_string()).as_deref(), Some("ops"));
        }
    }

    #[test]
    fn a_key_over_its_rate_gets_429_with_a_wait() {
        let auth = auth();
        let h = headers("Bearer slow-secret");
        assert!(auth.check(&h, Access::Authenticated).is_ok());
        match auth.check(&h, Access::Authenticated) {
            Err(ApiError::RateLimited(wait)) => {
                assert!(
                    wait > Duration::from_secs(1) && wait <= Duration::from_secs(60),
                    "{wait:?}"
                )
            }
            other => panic!("expected 429, got {other:?}"),
        }
        // Other keys are not affected.
        assert!(
            auth.check(&headers("Bearer cms-secret"), Access::Authenticated)
                .is_ok()
        );
    }
}
