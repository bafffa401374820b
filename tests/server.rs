//! The example server used as its clients would: HTTP with reqwest and WebSocket with
//! tokio-tungstenite against a loopback port — the auth matrix, a REST change arriving
//! on the same user's socket only, 429 under a flood, malformed and oversize bodies,
//! `/metrics` and `/health`, and the dashboard rendered in headless Chromium.
#![cfg(all(feature = "server", feature = "metrics-facade"))]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kasama::agent::SimulatedAgent;
use kasama::health::HealthMonitor;
use kasama::metrics::{FanOut, InMemoryMetrics, MetricsFacadeSink, MetricsSink};
use kasama::pipeline::AiPipeline;
use kasama::prelude::*;
use kasama::realtime::{Hub, MemoryRealtime};
use kasama::server::{AppState, JwtConfig, router, token};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes";

fn prometheus() -> metrics_exporter_prometheus::PrometheusHandle {
    static H: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    H.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .unwrap()
    })
    .clone()
}

struct Server {
    base: String,
    repo: Arc<dyn Repository>,
    metrics: Arc<InMemoryMetrics>,
}

async fn start() -> Server {
    start_with(JwtConfig::new(SECRET).unwrap()).await
}

async fn start_with(jwt: JwtConfig) -> Server {
    let handle = prometheus();
    let metrics = Arc::new(InMemoryMetrics::new());
    let kept_metrics = metrics.clone();
    let sink: Arc<dyn MetricsSink> = Arc::new(FanOut(vec![
        metrics.clone(),
        Arc::new(MetricsFacadeSink::new()),
    ]));
    let hub = Hub::new(64);
    let repo: Arc<dyn Repository> =
        Arc::new(InMemoryRepository::new().with_change_feed(hub.clone()));
    let pipeline = Arc::new(
        AiPipeline::builder(repo.clone())
            .backend(Arc::new(SimulatedAgent::instant("sim")))
            .metrics(sink.clone())
            .build()
            .unwrap(),
    );
    let state = AppState {
        repo: repo.clone(),
        pipeline,
        realtime: Arc::new(MemoryRealtime::new(hub)),
        metrics: metrics.clone(),
        sink,
        health: Arc::new(HealthMonitor::new(metrics)),
        jwt,
        render_metrics: Some(Arc::new(move || handle.render())),
        ws: kasama::server::WsSockets::with_defaults(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    Server {
        base: format!("http://{addr}"),
        repo,
        metrics: kept_metrics,
    }
}

async fn user(s: &Server, tier: SubscriptionTier) -> (UserId, String) {
    let u = UserId::new();
    let mut p = NewProfile::new(u, format!("{u}@example.com"), "U");
    p.subscription_tier = tier;
    s.repo.create_profile(Actor::Service, p).await.unwrap();
    (u, token(SECRET, u, Duration::from_secs(3600)))
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_matrix() {
    let s = start().await;
    let (a, ta) = user(&s, SubscriptionTier::Premium).await;
    let (b, _) = user(&s, SubscriptionTier::Premium).await;
    let get = |path: &str, tok: Option<String>| {
        let mut r = http().get(format!("{}{path}", s.base));
        if let Some(t) = tok {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(get("/api/profile", None).await.unwrap().status(), 401);
    assert_eq!(
        get("/api/profile", Some("not.a.jwt".into()))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        get(
            "/api/profile",
            Some(token(b"wrong-secret", a, Duration::from_secs(60)))
        )
        .await
        .unwrap()
        .status(),
        401
    );
    // Expired (well past the default leeway).
    let old = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &kasama::server::Claims {
            sub: a.to_string(),
            exp: 1_000_000,
            nbf: None,
            role: None,
        },
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    assert_eq!(get("/api/profile", Some(old)).await.unwrap().status(), 401);
    let me = get("/api/profile", Some(ta.clone())).await.unwrap();
    assert_eq!(me.status(), 200);
    assert_eq!(me.json::<Value>().await.unwrap()["id"], a.to_string());
    assert_eq!(
        get(&format!("/api/users/{a}/stats"), Some(ta.clone()))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get(&format!("/api/users/{b}/stats"), Some(ta.clone()))
            .await
            .unwrap()
            .status(),
        403
    );
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next(w: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("a message within 5 s")
            .unwrap()
            .unwrap()
        {
            Message::Text(t) => return serde_json::from_str::<Value>(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_change_reaches_its_users_socket_and_no_one_elses() {
    let s = start().await;
    let (a, ta) = user(&s, SubscriptionTier::Premium).await;
    let (b, tb) = user(&s, SubscriptionTier::Premium).await;
    let ws = |t: &str| {
        tokio_tungstenite::connect_async(format!(
            "{}/realtime?token={t}",
            s.base.replace("http", "ws")
        ))
    };
    let (mut wa, _) = ws(&ta).await.unwrap();
    let (mut wb, _) = ws(&tb).await.unwrap();
    assert!(
        tokio_tungstenite::connect_async(format!(
            "{}/realtime?token=bad",
            s.base.replace("http", "ws")
        ))
        .await
        .is_err()
    );

    let post = |tok: &str, title: &str| {
        http()
            .post(format!("{}/api/goals", s.base))
            .bearer_auth(tok)
            .json(&json!({"title": title, "category": "communication"}))
            .send()
    };
    let ga: Value = post(&ta, "a's goal").await.unwrap().json().await.unwrap();
    let ev = next(&mut wa).await;
    assert_eq!(ev["type"], "change");
    assert_eq!(ev["change"]["table"], "goals");
    assert_eq!(ev["change"]["id"], ga["id"]);
    assert_eq!(ev["change"]["user_id"], a.to_string());
    // b's socket got nothing of a's: its first message is b's own change.
    let gb: Value = post(&tb, "b's goal").await.unwrap().json().await.unwrap();
    let ev = next(&mut wb).await;
    assert_eq!(
        (ev["change"]["id"].clone(), ev["change"]["user_id"].clone()),
        (gb["id"].clone(), json!(b.to_string()))
    );
    wa.send(Message::Close(None)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_get_429_and_bad_bodies_get_4xx() {
    let s = start().await;
    let (_, t) = user(&s, SubscriptionTier::Free).await; // free: 60 a minute, bursts of 30
    let mut limited = None;
    for _ in 0..40 {
        let r = http()
            .get(format!("{}/api/goals", s.base))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status(), 200);
    }
    let r = limited.expect("the flood was limited");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "rate_limited");

    let (_, t) = user(&s, SubscriptionTier::Enterprise).await;
    let post = |body: Vec<u8>, ct: &'static str| {
        http()
            .post(format!("{}/api/goals", s.base))
            .bearer_auth(&t)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let r = post(b"{\"title\": ".to_vec(), "application/json")
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = post(b"{\"title\": 5}".to_vec(), "application/json")
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = post(
        format!(
            "{{\"title\": \"{}\", \"category\": \"c\"}}",
            "x".repeat(100_000)
        )
        .into_bytes(),
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 413);
    let r = post(
        json!({"title": " ", "category": "c"})
            .to_string()
            .into_bytes(),
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["error"].clone(), body["field"].clone()),
        (json!("invalid_input"), json!("title"))
    );
    let r = http()
        .post(format!("{}/api/agents/not_an_agent", s.base))
        .bearer_auth(&t)
        .json(&json!("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http()
        .post(format!("{}/api/agents/learning_coach", s.base))
        .bearer_auth(&t)
        .json(&json!("How do I listen better?"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["output"]["advice"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_the_dashboard_render() {
    let s = start().await;
    let (_, t) = user(&s, SubscriptionTier::Enterprise).await;
    for i in 0..5 {
        http()
            .post(format!("{}/api/agents/insight_generator", s.base))
            .bearer_auth(&t)
            .json(&json!(format!("question {i}")))
            .send()
            .await
            .unwrap();
        http()
            .get(format!("{}/api/goals", s.base))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
    }
    // A streamed answer read to its end: its time to first token is on the dashboard.
    let streamed = http().post(format!("{}/api/agents/learning_coach/stream", s.base));
    let streamed = streamed.bearer_auth(&t).json(&json!("how do I listen?"));
    let streamed = streamed.send().await.unwrap().text().await.unwrap();
    assert!(streamed.contains("event: done"), "{streamed}");
    let text = http()
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("kasama_ai_requests_total{agent=\"insight_generator\""),
        "{text}"
    );
    assert!(text.contains("kasama_api_requests_total"));
    let operator = JwtConfig::new(SECRET)
        .unwrap()
        .operator_token("ops", Duration::from_secs(60));
    let h = http()
        .get(format!("{}/health", s.base))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
    assert!(
        h.json::<Value>().await.unwrap()["checks"]
            .as_array()
            .unwrap()
            .len()
            >= 7
    );
    let snap: Value = http()
        .get(format!("{}/api/metrics", s.base))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(snap["ai"]["count"].as_u64().unwrap() >= 5);
    assert_eq!(snap["ai_first_token"]["all"]["count"], 1, "{snap}");
    // Each API request counted once: 11 calls, /metrics and /health (this one ends after
    // the snapshot is taken).
    assert_eq!(snap["api"]["count"], 13);

    // The dashboard, in a real browser.
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|b| {
        std::process::Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(chromium) = chromium else {
        if std::env::var("KASAMA_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1") {
            panic!("Chromium is required (KASAMA_REQUIRE_CHROMIUM=1) but not installed");
        }
        eprintln!("SKIPPED (no Chromium): dashboard rendering");
        return;
    };
    let profile =
        std::env::temp_dir().join(format!("kasama-chromium-{}", uuid::Uuid::new_v4().simple()));
    // /api/metrics is an operator's: the page takes the token in its fragment.
    let url = format!("{}/dashboard#token={operator}", s.base);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=5000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("data-rendered=\"yes\""),
        "the charts did not render: {dom}"
    );
    let points: u32 = dom
        .split("data-points=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(points >= 5, "{points} points drawn");
    assert!(dom.contains("AI requests"));
    assert!(dom.contains("time to first token p50"), "{dom}");
}

fn signed(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_for_nbf_and_the_configured_iss_and_aud() {
    let jwt = JwtConfig::new(SECRET)
        .unwrap()
        .issuer("kasama-auth")
        .audience("kasama-api");
    let s = start_with(jwt.clone()).await;
    let (a, _) = user(&s, SubscriptionTier::Premium).await;
    let status = |tok: String| {
        let s = &s;
        async move {
            http()
                .get(format!("{}/api/profile", s.base))
                .bearer_auth(tok)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let sub = a.to_string();
    let exp = now() + 3600;
    // Signed by the config itself: accepted.
    assert_eq!(status(jwt.token(a, Duration::from_secs(60))).await, 200);
    let good = json!({"sub": sub, "exp": exp, "iss": "kasama-auth", "aud": "kasama-api"});
    assert_eq!(status(signed(good.clone())).await, 200);
    // An audience list that contains ours.
    let mut list = good.clone();
    list["aud"] = json!(["other", "kasama-api"]);
    assert_eq!(status(signed(list)).await, 200);
    // Each failing one check.
    let mut cases = Vec::new();
    let mut t = good.clone();
    t["nbf"] = json!(now() + 3600);
    cases.push(("not yet valid (nbf in an hour)", t));
    let mut t = good.clone();
    t.as_object_mut().unwrap().remove("iss");
    cases.push(("no iss", t));
    let mut t = good.clone();
    t["iss"] = json!("someone-else");
    cases.push(("another iss", t));
    let mut t = good.clone();
    t.as_object_mut().unwrap().remove("aud");
    cases.push(("no aud", t));
    let mut t = good.clone();
    t["aud"] = json!("another-api");
    cases.push(("another aud", t));
    for (what, claims) in cases {
        assert_eq!(status(signed(claims)).await, 401, "{what}");
    }
    // nbf in the past (beyond the leeway) is fine.
    let mut t = good;
    t["nbf"] = json!(now() - 3600);
    assert_eq!(status(signed(t)).await, 200);

    // Without iss/aud configured, nbf is still checked and iss/aud are not required.
    let s2 = start_with(JwtConfig::new(SECRET).unwrap()).await;
    let (b, _) = user(&s2, SubscriptionTier::Premium).await;
    let status2 = |claims: Value| {
        let s2 = &s2;
        async move {
            http()
                .get(format!("{}/api/profile", s2.base))
                .bearer_auth(signed(claims))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        status2(json!({"sub": b.to_string(), "exp": exp})).await,
        200
    );
    assert_eq!(
        status2(json!({"sub": b.to_string(), "exp": exp, "nbf": now() + 3600})).await,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_gives_anonymous_callers_the_status_only_and_operators_the_details() {
    let jwt = JwtConfig::new(SECRET).unwrap();
    let s = start_with(jwt.clone()).await;
    let (_, user_token) = user(&s, SubscriptionTier::Premium).await;
    let health = |tok: Option<String>| {
        let s = &s;
        async move {
            let mut r = http().get(format!("{}/health", s.base));
            if let Some(t) = tok {
                r = r.bearer_auth(t);
            }
            let r = r.send().await.unwrap();
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.unwrap())
        }
    };
    // Anonymous, and an ordinary user: the status and nothing else.
    for tok in [None, Some(user_token)] {
        let (code, body) = health(tok).await;
        assert_eq!(code, 200);
        assert_eq!(body, json!({"status": "ok"}));
    }
    // An operator: the checks too.
    let (code, body) = health(Some(jwt.operator_token("ops", Duration::from_secs(60)))).await;
    assert_eq!(code, 200);
    assert_eq!(body["status"], "ok");
    assert!(body["checks"].as_array().unwrap().len() >= 7, "{body}");
    assert!(body.get("database").is_some(), "{body}");
    // A token that does not verify is refused, not quietly served less.
    let forged = token(
        b"another-secret-of-at-least-32-bytes",
        UserId::new(),
        Duration::from_secs(60),
    );
    assert_eq!(health(Some(forged)).await.0, 401);
    // An operator role in a token signed with another key is no operator.
    let forged_op = JwtConfig::new(b"another-secret-of-at-least-32-bytes".to_vec())
        .unwrap()
        .operator_token("ops", Duration::from_secs(60));
    assert_eq!(health(Some(forged_op)).await.0, 401);
    // An operator token is not a user's.
    let r = http()
        .get(format!("{}/api/profile", s.base))
        .bearer_auth(jwt.operator_token("ops", Duration::from_secs(60)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_server_says_so_to_anyone_with_503_and_no_details() {
    let s = start().await;
    // 30 failed API calls in the window: the API error-rate check is critical.
    for _ in 0..30 {
        s.metrics.record(&kasama::metrics::MetricEvent::Api {
            endpoint: "/api/goals".into(),
            method: "GET",
            status: 500,
            latency: Duration::from_millis(5),
            user: None,
        });
    }
    let r = http()
        .get(format!("{}/health", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status": "critical"})
    );
}
