//! Bearer-token authentication, scopes and per-key request rates.
//!
//! Keys come straight from `[[api_keys]]` ([`ApiKey`]): the token check is the config's constant-time
//! [`Credential::matches`](crate::config::Credential::matches), run against every key without stopping at
//! a match, so neither the time taken nor the key order tells an attacker anything. Scopes: `admin` implies
//! `send` and `read`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, RateLimiter};

use super::error::ApiError;
use crate::config::{ApiKey, Credential, Scope};

/// The scope's name, as written in the config and shown in errors and `/openapi.json`.
pub fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Send => "send",
        Scope::Read => "read",
        Scope::Admin => "admin",
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (`/healthz` only: DESIGN.md's contract puts every other route behind a key).
    Public,
    /// Any valid key.
    Authenticated,
    /// A valid key holding this scope (or `admin`).
    Scope(Scope),
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
    credential: Credential,
    /// Direct (unkeyed) limiter per key: keys are few and fixed at start-up, so no map is needed.
    limiter: Option<DefaultDirectRateLimiter>,
}

/// The configured keys, ready to check requests against. Replaced whole on a configuration reload; a
/// `std::sync::RwLock` because a check is a short read with no `.await`.
pub struct Auth {
    keys: std::sync::RwLock<Arc<Vec<Key>>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.current();
        let names: Vec<&str> = keys.iter().map(|k| &*k.principal.key_name).collect();
        f.debug_struct("Auth").field("keys", &names).finish()
    }
}

impl Auth {
    /// A key's `rate` becomes a quota whose burst is the count (`200/s` allows 200 at once, then 1 per 5 ms).
    pub fn new(keys: &[ApiKey]) -> Auth {
        Auth {
            keys: std::sync::RwLock::new(Arc::new(Self::build(keys))),
        }
    }

    /// Swap in a new set of keys (SIGHUP); requests already past the check are not affected.
    pub fn replace(&self, keys: &[ApiKey]) {
        let keys = Arc::new(Self::build(keys));
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
    }

    fn current(&self) -> Arc<Vec<Key>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn build(keys: &[ApiKey]) -> Vec<Key> {
        keys.iter()
            .map(|k| Key {
                credential: k.credential.clone(),
                limiter: k
                    .rate
                    .map(|rate| RateLimiter::direct(rate.quota(Some(rate.count)))),
                principal: Principal {
                    key_name: k.name.as_str().into(),
                    scopes: k.scopes.clone(),
                },
            })
            .collect()
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
        let keys = self.current();
        let mut found = None;
        for key in keys.iter() {
            if key.credential.matches(token) {
                found = Some(key);
            }
        }
        let key = found.ok_or(ApiError::Unauthorized)?;
        if let Some(scope) = required
            && !key.principal.has(scope)
        {
            return Err(ApiError::Forbidden(scope_name(scope)));
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

/// An `[[api_keys]]` entry built in code (tests, the simulator demo).
pub fn api_key(
    name: &str,
    token: &str,
    scopes: &[Scope],
    rate: Option<(u32, Duration)>,
) -> Option<ApiKey> {
    Some(ApiKey {
        name: name.to_owned(),
        credential: Credential::Token(token.parse().ok()?),
        scopes: scopes.to_vec(),
        rate: match rate {
            None => None,
            Some((count, per)) => Some(crate::config::Rate {
                count: NonZeroU32::new(count)?,
                per,
            }),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenSha256;
    use sha2::{Digest, Sha256};

    fn auth() -> Auth {
        let digest: [u8; 32] = Sha256::digest(b"hashed-secret").into();
        let mut ops = api_key("ops", "unused", &[Scope::Admin], None).unwrap();
        ops.credential = Credential::Sha256(TokenSha256(digest));
        Auth::new(&[
            api_key("cms", "cms-secret", &[Scope::Send, Scope::Read], None).unwrap(),
            ops,
            api_key(
                "slow",
                "slow-secret",
                &[Scope::Read],
                Some((1, Duration::from_secs(60))),
            )
            .unwrap(),
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
        assert_eq!(
            auth.check(&headers("Bearer unused"), Access::Authenticated),
            Err(ApiError::Unauthorized)
        );
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
