//! What operators read: `/health`, `/metrics` (Prometheus text), `/api/metrics` (the
//! in-process snapshot, operators only), the `/dashboard` page that draws it, and the
//! layer that records every request's metrics.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::health::Status;
use crate::metrics::{MetricEvent, MetricsSnapshot};
use crate::server::AppState;
use crate::server::auth::{Operator, claims_if_any};

/// The dashboard. It polls `/api/metrics` every 2 s with the operator's token given in
/// the page's fragment (`/dashboard#token=…`) and draws four charts on canvases:
/// latency percentiles per layer, cache hit rates, AI cost per agent, and throughput
/// per window. When a draw had data it sets `data-rendered="yes"` and
/// `data-points="N"` on `<body>` (what the browser test checks).
const DASHBOARD: &str = include_str!("dashboard.html");

/// `/health`, `/metrics` and `/dashboard`.
pub(in crate::server) fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(prometheus))
        .route("/dashboard", get(|| async { Html(DASHBOARD) }))
}

/// `/api/metrics` (nested under `/api`).
pub(in crate::server) fn api_routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics_snapshot))
}

/// Records a [`MetricEvent::Api`] per request: the matched route, the method, the
/// status and the latency.
pub(in crate::server) async fn record_api(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let start = tokio::time::Instant::now();
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method: &'static str = match *req.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::DELETE => "DELETE",
        _ => "OTHER",
    };
    let resp = next.run(req).await;
    let ev = MetricEvent::Api {
        endpoint,
        method,
        status: resp.status().as_u16(),
        latency: start.elapsed(),
        user: None,
    };
    state.sink.record(&ev);
    resp
}

/// `/api/metrics`: the in-process snapshot, for an operator's token only
/// ([`JwtConfig::operator_token`](crate::server::JwtConfig::operator_token)): 401
/// without a token or with one that does not verify, 403 for a user's.
async fn metrics_snapshot(_: Operator, State(s): State<AppState>) -> Json<MetricsSnapshot> {
    Json(s.metrics.snapshot())
}

/// `/health`: `{"status": "ok" | "degraded" | "critical"}` for anyone (503 when
/// critical, else 200); the whole [`HealthReport`](crate::metrics::HealthReport)
/// beside it only for an operator's token. A token that does not verify is refused
/// (401) rather than silently served less.
async fn health(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let operator = match claims_if_any(&s.jwt, &headers) {
        Ok(c) => c.is_some_and(|c| c.is_operator()),
        Err(e) => return e.into_response(),
    };
    let r = s.health.evaluate().await;
    let (code, status) = match r.overall {
        Status::Healthy => (StatusCode::OK, "ok"),
        Status::Warning => (StatusCode::OK, "degraded"),
        Status::Critical => (StatusCode::SERVICE_UNAVAILABLE, "critical"),
    };
    let mut body = json!({ "status": status });
    if operator
        && let Ok(Value::Object(details)) = serde_json::to_value(&r)
        && let Some(b) = body.as_object_mut()
    {
        b.extend(details);
    }
    (code, Json(body)).into_response()
}

/// `/metrics`: what [`AppState::render_metrics`] renders (Prometheus text); 404
/// without it.
async fn prometheus(State(s): State<AppState>) -> Response {
    match &s.render_metrics {
        Some(f) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], f()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
