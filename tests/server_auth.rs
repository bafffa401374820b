//! The server's authentication layer, driven through the router with
//! `tower::ServiceExt::oneshot` (no sockets; tokio's paused clock where time matters):
//! the rate limit is checked before any profile read, a `tier` claim is honoured
//! without one, a looked-up plan is cached for its TTL, a failed lookup is 503 (not the
//! free plan) and not cached, bad tokens are 401, `/api/metrics` is an operator's, and
//! a host's own routes behind `Authenticator::guard`.
#![cfg(all(feature = "server", feature = "metrics-facade"))]

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, header};
use axum::routing::get;
use kasama::metrics::{MetricEvent, MetricsSink};
use kasama::pipeline::{Quota, RateLimitConfig, TierQuotas};
use kasama::prelude::*;
use kasama::realtime::{Hub, MemoryRealtime};
use kasama::repository::MeteredRepository;
use kasama::server::{
    AppState, AuthConfig, AuthUser, Authenticator, JwtConfig, WsSockets, router_with, token,
};
use serde_json::{Value, json};
use tower::ServiceExt;

mod common;

use common::ws::{HOUR, SECRET, app_state_limited, call as send, jwt};

/// Counts the repository's `get_profile` calls (through `MeteredRepository`).
#[derive(Default)]
struct ProfileReads(AtomicU64);

impl MetricsSink for ProfileReads {
    fn record(&self, e: &MetricEvent) {
        if let MetricEvent::Database {
            operation: "get_profile",
            ..
        } = e
        {
            self.0.fetch_add(1, SeqCst);
        }
    }
}

struct Rig {
    state: AppState,
    app: axum::Router,
    reads: Arc<ProfileReads>,
}

impl Rig {
    fn reads(&self) -> u64 {
        self.reads.0.load(SeqCst)
    }

    async fn user(&self, tier: SubscriptionTier) -> UserId {
        let u = UserId::new();
        let mut p = NewProfile::new(u, format!("{u}@example.com"), "U");
        p.subscription_tier = tier;
        self.state
            .repo
            .create_profile(Actor::Service, p)
            .await
            .unwrap();
        u
    }

    /// Status, `Retry-After` and JSON body (null when empty) of one request.
    async fn send(
        &self,
        method: &str,
        path: &str,
        tok: Option<&str>,
    ) -> (u16, Option<String>, Value) {
        send(&self.app, method, path, tok).await
    }

    async fn get(&self, path: &str, tok: &str) -> u16 {
        self.send("GET", path, Some(tok)).await.0
    }
}

/// The server on `inner` (metered, so profile reads are counted).
fn rig_on(inner: impl Repository, limits: RateLimitConfig, auth: AuthConfig) -> Rig {
    let reads = Arc::new(ProfileReads::default());
    let repo: Arc<dyn Repository> = Arc::new(MeteredRepository::new(inner, reads.clone()));
    let state = app_state_limited(
        repo,
        Arc::new(MemoryRealtime::new(Hub::new(16))),
        WsSockets::with_defaults(),
        limits,
    );
    Rig {
        app: router_with(state.clone(), auth),
        state,
        reads,
    }
}

/// In memory, with the default limits (API bursts: free 30, premium 60).
fn rig() -> Rig {
    rig_on(
        InMemoryRepository::new(),
        RateLimitConfig::default(),
        AuthConfig::default(),
    )
}

#[tokio::test(start_paused = true)]
async fn a_tier_in_the_token_is_used_without_reading_the_profile() {
    let r = rig();
    // On the free plan in the database; the token says premium: premium's burst of 60.
    let u = r.user(SubscriptionTier::Free).await;
    let t = jwt().token_with_tier(u, SubscriptionTier::Premium, HOUR);
    for i in 0..60 {
        assert_eq!(r.get("/api/goals", &t).await, 200, "request {i}");
    }
    assert_eq!(r.get("/api/goals", &t).await, 429);
    // And the other way round: the claim wins over the profile.
    let v = r.user(SubscriptionTier::Enterprise).await;
    let t = jwt().token_with_tier(v, SubscriptionTier::Free, HOUR);
    for i in 0..30 {
        assert_eq!(r.get("/api/goals", &t).await, 200, "request {i}");
    }
    assert_eq!(r.get("/api/goals", &t).await, 429);
    assert_eq!(r.reads(), 0, "no profile was read");
}

#[tokio::test(start_paused = true)]
async fn a_looked_up_tier_is_cached_for_its_ttl() {
    let r = rig();
    let u = r.user(SubscriptionTier::Premium).await;
    let t = jwt().token(u, HOUR);
    assert_eq!(r.get("/api/goals", &t).await, 200);
    assert_eq!(r.reads(), 1);
    for _ in 0..10 {
        assert_eq!(r.get("/api/goals", &t).await, 200);
    }
    assert_eq!(r.reads(), 1, "read once, then cached");
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(r.get("/api/goals", &t).await, 200);
    assert_eq!(r.reads(), 1, "still within the 60 s default");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(r.get("/api/goals", &t).await, 200);
    assert_eq!(r.reads(), 2, "read again once expired");

    // The plan read is the one limited by: premium's burst of 60, not free's 30.
    let v = r.user(SubscriptionTier::Premium).await;
    let t = jwt().token(v, HOUR);
    for i in 0..60 {
        assert_eq!(r.get("/api/goals", &t).await, 200, "request {i}");
    }
    assert_eq!(r.get("/api/goals", &t).await, 429);
    // A user without a profile is on the free plan (and that answer is cached too).
    let w = UserId::new();
    let t = jwt().token(w, HOUR);
    for i in 0..30 {
        assert_eq!(r.get("/api/goals", &t).await, 200, "request {i}");
    }
    assert_eq!(r.get("/api/goals", &t).await, 429);
    assert_eq!(r.reads(), 4);

    // A zero TTL caches nothing.
    let r = rig_on(
        InMemoryRepository::new(),
        RateLimitConfig::default(),
        AuthConfig {
            tier_ttl: Duration::ZERO,
            ..AuthConfig::default()
        },
    );
    let t = jwt().token(r.user(SubscriptionTier::Premium).await, HOUR);
    for _ in 0..3 {
        assert_eq!(r.get("/api/goals", &t).await, 200);
    }
    assert_eq!(r.reads(), 3);
}

/// A database that refuses every connection (nothing listens on port 1): each call is a
/// real `Error::Backend` from the driver. Free and enterprise users get 3 API requests
/// an hour (the enterprise rate also bounds plan lookups), premium users 100.
fn rig_without_database() -> Rig {
    let dead = PgRepository::connect(&PgConfig::new(
        "postgres://kasama@127.0.0.1:1/kasama?sslmode=disable",
    ))
    .unwrap();
    let hourly = |n| Quota::per_hour(NonZeroU32::new(n).unwrap());
    let limits = RateLimitConfig {
        api_per_user: TierQuotas {
            free: hourly(3),
            premium: hourly(100),
            enterprise: hourly(3),
        },
        ..RateLimitConfig::default()
    };
    rig_on(dead, limits, AuthConfig::default())
}

#[tokio::test]
async fn the_limit_comes_before_the_profile_read_and_a_failed_read_is_503_not_free() {
    let r = rig_without_database();
    let u = UserId::new();
    let t = jwt().token(u, HOUR);
    for i in 1..=3 {
        let (status, retry, body) = r.send("GET", "/api/goals", Some(&t)).await;
        // Not served as the free plan (which would reach the handler: 502 from its query).
        assert_eq!(status, 503, "request {i}: {body}");
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(body["error"], "unavailable");
        // Not cached: each request tried again.
        assert_eq!(r.reads(), i);
    }
    // Plan lookups are limited before the read (at the most generous plan's rate, so
    // no paying user is held to the free one while their plan is unknown): the fourth
    // request is refused without one.
    let (status, retry, body) = r.send("GET", "/api/goals", Some(&t)).await;
    assert_eq!(
        (status, body["error"].clone()),
        (429, json!("rate_limited"))
    );
    assert!(retry.is_some());
    assert_eq!(r.reads(), 3);
    // With the plan in the token nothing is looked up: the request reaches the handler,
    // whose own query fails (502).
    let t = jwt().token_with_tier(u, SubscriptionTier::Premium, HOUR);
    assert_eq!(r.get("/api/goals", &t).await, 502);
    assert_eq!(r.reads(), 3);
}

fn signed(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn bad_tokens_are_401_before_any_limit_or_read() {
    let r = rig();
    let u = r.user(SubscriptionTier::Premium).await;
    let exp = chrono::Utc::now().timestamp() + 3600;
    let cases = [
        ("no token", None),
        ("not a JWT", Some("not.a.jwt".to_string())),
        ("another key", Some(token(b"wrong-secret", u, HOUR))),
        (
            "expired",
            Some(signed(json!({"sub": u.to_string(), "exp": 1_000_000}))),
        ),
        (
            "an unknown tier",
            Some(signed(
                json!({"sub": u.to_string(), "exp": exp, "tier": "gold"}),
            )),
        ),
        ("an operator's", Some(jwt().operator_token("ops", HOUR))),
    ];
    for (what, tok) in cases {
        // More than any burst: a refusal never uses up the limit.
        for _ in 0..70 {
            let (status, retry, body) = r.send("GET", "/api/goals", tok.as_deref()).await;
            assert_eq!(status, 401, "{what}");
            assert_eq!(retry, None, "{what}");
            assert_eq!(body["error"], "unauthorized", "{what}");
        }
    }
    assert_eq!(r.reads(), 0);
    // The user's own token still has its whole allowance.
    let t = jwt().token(u, HOUR);
    for i in 0..60 {
        assert_eq!(r.get("/api/goals", &t).await, 200, "request {i}");
    }
    // A wrong method is still 405, token or not: the layer guards the routes only.
    assert_eq!(r.send("DELETE", "/api/goals", None).await.0, 405);
    // Creating one's profile is limited like any call: the plan is looked up once (none
    // yet: the free plan).
    let n = UserId::new();
    let (status, _, body) = r
        .send("POST", "/api/profile", Some(&jwt().token(n, HOUR)))
        .await;
    assert_eq!((status, body["id"].clone()), (201, json!(n.to_string())));
    assert_eq!(r.send("POST", "/api/profile", None).await.0, 401);
    assert_eq!(r.reads(), 2);
}

#[tokio::test(start_paused = true)]
async fn api_metrics_takes_an_operators_token() {
    let r = rig();
    let user_token = jwt().token(r.user(SubscriptionTier::Premium).await, HOUR);
    let (status, _, body) = r.send("GET", "/api/metrics", None).await;
    assert_eq!(
        (status, body["error"].clone()),
        (401, json!("unauthorized"))
    );
    let (status, _, body) = r.send("GET", "/api/metrics", Some(&user_token)).await;
    assert_eq!((status, body["error"].clone()), (403, json!("forbidden")));
    // An operator role signed with another key is no operator.
    let forged = JwtConfig::new(b"another-secret-of-at-least-32-bytes".to_vec())
        .unwrap()
        .operator_token("ops", HOUR);
    assert_eq!(r.send("GET", "/api/metrics", Some(&forged)).await.0, 401);
    let op = jwt().operator_token("ops", HOUR);
    let (status, _, body) = r.send("GET", "/api/metrics", Some(&op)).await;
    assert_eq!(status, 200);
    assert!(body["api"]["count"].as_u64().unwrap() >= 3, "{body}");
}

#[tokio::test(start_paused = true)]
async fn a_hosts_own_routes_behind_the_guard_get_the_user() {
    let r = rig();
    let auth = Authenticator::new(&r.state, AuthConfig::default());
    let app = axum::Router::new()
        .route(
            "/mine",
            auth.guard(get(|u: AuthUser| async move { u.id.to_string() })),
        )
        // Forgotten guard: a loud 500, never an anonymous user.
        .route(
            "/unguarded",
            get(|u: AuthUser| async move { u.id.to_string() }),
        );
    let u = r.user(SubscriptionTier::Free).await;
    let t = jwt().token(u, HOUR);
    let req = |path: &str, tok: Option<&str>| {
        let mut b = Request::builder().uri(path);
        if let Some(t) = tok {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        app.clone().oneshot(b.body(Body::empty()).unwrap())
    };
    let resp = req("/mine", Some(&t)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
    assert_eq!(body, u.to_string().as_bytes());
    assert_eq!(req("/mine", None).await.unwrap().status(), 401);
    let resp = req("/unguarded", Some(&t)).await.unwrap();
    assert_eq!(resp.status(), 500);
    let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"error": "config", "message": "server misconfigured"})
    );
    let shown = format!("{auth:?}");
    assert!(!shown.contains("a-test-secret"), "{shown}");
}

#[test]
fn a_jwt_secret_shorter_than_32_bytes_is_refused_and_never_shown() {
    let e = JwtConfig::new(b"0123456789abcdef0123456789abcde".to_vec()).unwrap_err();
    assert_eq!(e.invalid_field(), Some("jwt_secret"));
    assert!(e.to_string().contains("at least 32 bytes, got 31"), "{e}");
    assert!(JwtConfig::new(Vec::new()).is_err());
    let ok = JwtConfig::new(SECRET).unwrap().issuer("kasama-auth");
    let shown = format!("{ok:?}");
    assert!(!shown.contains("a-test-secret"), "{shown}");
    assert!(
        shown.contains("***") && shown.contains("kasama-auth"),
        "{shown}"
    );
}
