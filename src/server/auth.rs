//! Who is asking, and whether they may: the [`Authenticator`] layer in front of every
//! user route, the [`AuthUser`] handlers read, and the operator check.
//!
//! For each request a guarded route gets, in this order:
//!
//! 1. the bearer token is checked ([`JwtConfig::verify`]); no token or a bad one → 401;
//! 2. the user's plan is taken from the token's `tier` claim
//!    ([`JwtConfig::token_with_tier`]) or, without one, from a per-user cache of recent
//!    lookups ([`AuthConfig::tier_ttl`], 60 s by default);
//! 3. the API rate limit is checked with that plan → 429 with `Retry-After`. When the
//!    plan is unknown, the most restrictive limit (the free plan's) is checked *first*
//!    and only then is the profile read (and cached), then the real plan's limit is
//!    checked too: no request reaches the database before a limit has admitted it;
//! 4. a failed profile read is answered 503 (`"error": "unavailable"`, `Retry-After:
//!    1`) and not cached — never served as the free plan. A user without a profile is
//!    on the free plan;
//! 5. the [`AuthUser`] is put in the request's extensions for the handler.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use lru::LruCache;
use tokio::time::Instant;

use super::AppState;
use super::errors::ApiError;
use super::jwt::{Claims, JwtConfig, Verified};
use crate::domain::{Actor, SubscriptionTier, UserId};
use crate::error::Error;
use crate::pipeline::AiPipeline;
use crate::repository::Repository;

/// Settings of the [`Authenticator`]. Defaults on each field.
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// How long a user's plan, once read from their profile, is trusted before it is
    /// read again: a plan change reaches the rate limits at most this late. Zero: no
    /// caching (each request with a token that states no `tier` reads the profile,
    /// after the free plan's limit admitted it). Default: 60 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub tier_ttl: Duration,
    /// Most users whose plan is cached (the least recently seen go first; at least
    /// 1). Default: 100,000.
    pub tier_cache_capacity: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            tier_ttl: Duration::from_secs(60),
            tier_cache_capacity: 100_000,
        }
    }
}

/// Recently read plans, per user, for [`AuthConfig::tier_ttl`]; bounded.
struct TierCache {
    ttl: Duration,
    capacity: usize,
    // Unbounded in the type, bounded by `put`: `LruCache::new` would allocate the
    // whole capacity up front.
    map: Mutex<LruCache<UserId, (SubscriptionTier, Instant)>>,
}

impl TierCache {
    fn new(c: &AuthConfig) -> Self {
        Self {
            ttl: c.tier_ttl,
            capacity: NonZeroUsize::new(c.tier_cache_capacity).map_or(1, NonZeroUsize::get),
            map: Mutex::new(LruCache::unbounded()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<UserId, (SubscriptionTier, Instant)>> {
        // The map holds plain values: a panic elsewhere cannot leave it half-written.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, user: UserId) -> Option<SubscriptionTier> {
        let mut m = self.lock();
        match m.get(&user).copied() {
            Some((tier, at)) if at.elapsed() < self.ttl => Some(tier),
            Some(_) => {
                m.pop(&user);
                None
            }
            None => None,
        }
    }

    fn put(&self, user: UserId, tier: SubscriptionTier) {
        if self.ttl.is_zero() {
            return;
        }
        let mut m = self.lock();
        m.put(user, (tier, Instant::now()));
        while m.len() > self.capacity {
            m.pop_lru();
        }
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The authentication and API rate limit of the user routes, as a layer (see the
/// module docs for the order of checks). [`router`](super::router) puts it in front of
/// every user route; a host adding its own routes wraps them with
/// [`Authenticator::guard`] and reads the user with the [`AuthUser`] extractor.
#[derive(Clone)]
pub struct Authenticator {
    jwt: JwtConfig,
    repo: Arc<dyn Repository>,
    pipeline: Arc<AiPipeline>,
    tiers: Arc<TierCache>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("jwt", &self.jwt)
            .field("tier_ttl", &self.tiers.ttl)
            .field("tier_cache_capacity", &self.tiers.capacity)
            .field("tiers_cached", &self.tiers.len())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator checking tokens with `state.jwt`, reading plans from
    /// `state.repo` and limiting with `state.pipeline`'s
    /// [`RateLimits`](crate::pipeline::RateLimits), with its own cache of plans.
    pub fn new(state: &AppState, config: AuthConfig) -> Self {
        Self {
            jwt: state.jwt.clone(),
            repo: state.repo.clone(),
            pipeline: state.pipeline.clone(),
            tiers: Arc::new(TierCache::new(&config)),
        }
    }

    /// `routes` behind this authenticator: each of their handlers runs only for an
    /// authenticated user the rate limit admitted, and may take an [`AuthUser`].
    /// Methods added to the returned router afterwards are not guarded, and a method
    /// `routes` does not serve still gets its plain 405.
    pub fn guard<S>(&self, routes: MethodRouter<S>) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        routes.route_layer(middleware::from_fn_with_state(self.clone(), authenticate))
    }

    async fn admit(&self, headers: &HeaderMap) -> Result<AuthUser, ApiError> {
        let v = verified(&self.jwt, headers)?;
        let id = user_of(&v.claims)?;
        let limits = &self.pipeline;
        if let Some(tier) = v.tier.or_else(|| self.tiers.get(id)) {
            limits.check_api(id, tier).await?;
            return Ok(AuthUser { id, tier });
        }
        // Unknown plan: the lookup itself is limited first, at the most generous plan's
        // rate (the enterprise limiter, keyed by this user), so that a flood is refused
        // before it reaches the database; then the user's own plan's limit applies. A
        // check against the free plan here would charge paying users' requests to the
        // free allowance whenever their plan is not cached (no cache, or evicted).
        limits.check_api(id, SubscriptionTier::Enterprise).await?;
        let tier = self.look_up(id).await?;
        self.tiers.put(id, tier);
        if tier != SubscriptionTier::Enterprise {
            limits.check_api(id, tier).await?;
        }
        Ok(AuthUser { id, tier })
    }

    /// The user's plan from their profile: the free plan without one; a failure is a
    /// 503 (a configuration refusal stays the 500 it is), never the free plan.
    async fn look_up(&self, id: UserId) -> Result<SubscriptionTier, ApiError> {
        match self.repo.get_profile(Actor::User(id), id).await {
            Ok(p) => Ok(p.subscription_tier),
            Err(e) if e.is_not_found() => Ok(SubscriptionTier::Free),
            Err(e) if e.is_config() => Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, user = %id, "could not read the user's plan");
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the account's plan could not be read; retry shortly",
                )
                .retry_after(Duration::from_secs(1)))
            }
        }
    }
}

/// The layer's function: admits the request or answers for it.
async fn authenticate(State(a): State<Authenticator>, mut req: Request, next: Next) -> Response {
    match a.admit(req.headers()).await {
        Ok(user) => {
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// The authenticated user of a route behind an [`Authenticator`] (every user route of
/// [`router`](super::router)), whose API rate limit has admitted this request.
///
/// As an extractor it reads what the authenticator left in the request's extensions;
/// on a route without one it answers 500 (`"server misconfigured"`) and logs why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    /// The user.
    pub id: UserId,
    /// Their plan (from the token's `tier` claim, else from their profile).
    pub tier: SubscriptionTier,
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<AuthUser>().copied().ok_or_else(|| {
            Error::Config {
                what: "route".into(),
                reason: format!(
                    "{} takes an AuthUser but is not behind an Authenticator (wrap it with Authenticator::guard)",
                    parts.uri.path()
                ),
            }
            .into()
        })
    }
}

/// An operator's token (`role: "operator"`): no token or a bad one → 401, anyone
/// else's → 403.
#[derive(Debug)]
pub(super) struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        match claims_if_any(&s.jwt, &parts.headers)? {
            None => Err(ApiError::unauthorized("missing bearer token")),
            Some(c) if c.is_operator() => Ok(Operator),
            Some(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "an operator's token is required",
            )),
        }
    }
}

/// The bearer token of a request, if it has one.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
}

/// The claims of `tok`, or 401.
pub(super) fn claims(jwt: &JwtConfig, tok: &str) -> Result<Claims, ApiError> {
    Ok(checked(jwt, tok)?.claims)
}

fn checked(jwt: &JwtConfig, tok: &str) -> Result<Verified, ApiError> {
    jwt.verify_full(tok)
        .map_err(|_| ApiError::unauthorized("invalid or expired token"))
}

fn verified(jwt: &JwtConfig, headers: &HeaderMap) -> Result<Verified, ApiError> {
    let tok = bearer(headers).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    checked(jwt, tok)
}

/// The claims of the request's token; `None` without one; 401 for one that does not
/// verify (refused rather than silently served less).
pub(super) fn claims_if_any(
    jwt: &JwtConfig,
    headers: &HeaderMap,
) -> Result<Option<Claims>, ApiError> {
    bearer(headers).map(|tok| claims(jwt, tok)).transpose()
}

/// The user a token's claims name, or 401 (e.g. an operator's token).
pub(super) fn user_of(c: &Claims) -> Result<UserId, ApiError> {
    c.sub
        .parse::<UserId>()
        .map_err(|_| ApiError::unauthorized("the token's subject is not a user id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_cache_forgets_after_its_ttl_and_keeps_at_most_its_capacity() {
        let c = TierCache::new(&AuthConfig {
            tier_ttl: Duration::from_secs(60),
            tier_cache_capacity: 2,
        });
        let (a, b, d) = (UserId::new(), UserId::new(), UserId::new());
        c.put(a, SubscriptionTier::Premium);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(c.get(a), Some(SubscriptionTier::Premium));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(c.get(a), None);
        assert_eq!(c.len(), 0, "an expired entry is dropped when met");
        c.put(a, SubscriptionTier::Free);
        c.put(b, SubscriptionTier::Premium);
        assert_eq!(c.get(a), Some(SubscriptionTier::Free)); // a is now the most recent
        c.put(d, SubscriptionTier::Enterprise);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(b), None, "the least recently seen went first");
        assert_eq!(c.get(a), Some(SubscriptionTier::Free));
        assert_eq!(c.get(d), Some(SubscriptionTier::Enterprise));
    }

    #[test]
    fn a_zero_ttl_caches_nothing_and_a_zero_capacity_is_one() {
        let c = TierCache::new(&AuthConfig {
            tier_ttl: Duration::ZERO,
            tier_cache_capacity: 0,
        });
        assert_eq!(c.capacity, 1);
        c.put(UserId::new(), SubscriptionTier::Free);
        assert_eq!(c.len(), 0);
    }
}
