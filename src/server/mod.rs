//! An axum server composed from the library (feature `server`): REST endpoints, JWT
//! auth, rate limits, `/health`, `/metrics`, a realtime WebSocket and a live dashboard.
//! `examples/server.rs` runs it; hosts can copy it or mount [`router`] as it is.
//!
//! Auth: `Authorization: Bearer <JWT>` (HS256, a secret of at least 32 bytes — see
//! [`JwtConfig`]) whose `sub` is the acting user's id; `exp` is required, `nbf` is
//! honoured, and `iss`/`aud` are required when configured. The WebSocket also takes
//! `?token=`. No token or a bad one → 401; another user's id in the path → 403.
//!
//! `/health` answers anyone with the overall status only (`{"status": "ok"}`,
//! `"degraded"` or `"critical"`; 503 when critical); the checks and the database's
//! figures go only to an operator's token (`role: "operator"`, see
//! [`JwtConfig::operator_token`]). The database figures are cached by the
//! [`HealthMonitor`] (30 s by default), so probes cost no query each. Errors map to statuses: invalid input 400 (with the field),
//! forbidden 403, not found 404, conflict 409, rate limited 429 with `Retry-After`,
//! budget exceeded 402, overloaded or circuit open 503, timeout 504. Bodies over
//! 64 KiB → 413; malformed JSON → 400/422 from axum's extractor, never 500.

mod auth;
mod dashboard;
mod serve;
pub mod ws;

pub use serve::{ServeConfig, serve};

pub use ws::{CLOSE_LAGGED, CLOSE_TOKEN_EXPIRED, CLOSE_TOO_BIG, WsConfig, WsSockets, WsStats};

pub use auth::{AuthUser, Claims, JwtConfig, OPERATOR_ROLE, token};
use auth::{bearer, verify};

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::agent::AiRequest;
use crate::domain::*;
use crate::error::Error;
use crate::health::{HealthMonitor, Status};
use crate::metrics::{InMemoryMetrics, MetricEvent, MetricsSink};
use crate::pipeline::AiPipeline;
use crate::realtime::Realtime;
use crate::repository::Repository;

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The data.
    pub repo: Arc<dyn Repository>,
    /// The AI pipeline.
    pub pipeline: Arc<AiPipeline>,
    /// The change feed.
    pub realtime: Arc<dyn Realtime>,
    /// In-process metrics: the dashboard and `/api/metrics` read them.
    pub metrics: Arc<InMemoryMetrics>,
    /// Where API request metrics go. Include `metrics` (e.g. in a
    /// [`FanOut`](crate::metrics::FanOut) with a `MetricsFacadeSink`) for the dashboard
    /// to see them; each event is recorded once, here.
    pub sink: Arc<dyn MetricsSink>,
    /// Health checks.
    pub health: Arc<HealthMonitor>,
    /// How bearer tokens are checked (the HS256 secret, at least 32 bytes, and the
    /// `iss`/`aud` required when configured): [`JwtConfig::new`] or
    /// [`JwtConfig::from_env`] refuse a missing or short secret.
    pub jwt: JwtConfig,
    /// Renders `/metrics` (e.g. a Prometheus handle's `render`); `None` → 404.
    pub render_metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// The realtime WebSocket's settings, per-user counts and stats
    /// (`WsSockets::with_defaults()` for the documented defaults).
    pub ws: Arc<WsSockets>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("jwt", &self.jwt)
            .field("ws", &self.ws.config())
            .finish_non_exhaustive()
    }
}

/// An HTTP error with a JSON body.
#[derive(Debug)]
pub struct ApiError(StatusCode, Value, Option<Duration>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(self.1)).into_response();
        if let Some(d) = self.2
            && let Ok(v) = HeaderValue::from_str(&d.as_secs_f64().ceil().max(1.0).to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let kind = e.kind();
        let (status, retry) = match &e {
            Error::InvalidInput { .. } => (StatusCode::BAD_REQUEST, None),
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, None),
            Error::Forbidden { .. } => (StatusCode::FORBIDDEN, None),
            Error::Conflict { .. } => (StatusCode::CONFLICT, None),
            Error::RateLimited { retry_after } => {
                (StatusCode::TOO_MANY_REQUESTS, Some(*retry_after))
            }
            Error::BudgetExceeded { .. } => (StatusCode::PAYMENT_REQUIRED, None),
            Error::CircuitOpen { .. } | Error::Overloaded { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, None)
            }
            Error::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, None),
            // The operator's problem, not the client's: no details over HTTP.
            Error::Config { .. } => {
                tracing::error!(error = %e, "refusing requests: unsafe configuration");
                let body = json!({ "error": kind, "message": "server misconfigured" });
                return ApiError(StatusCode::INTERNAL_SERVER_ERROR, body, None);
            }
            _ => (StatusCode::BAD_GATEWAY, None),
        };
        let mut body = json!({ "error": kind, "message": e.to_string() });
        if let Error::InvalidInput { field, reason } = &e {
            body["field"] = json!(field);
            body["reason"] = json!(reason);
        }
        ApiError(status, body, retry)
    }
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError(
        StatusCode::UNAUTHORIZED,
        json!({ "error": "unauthorized", "message": msg }),
        None,
    )
}

/// The server's routes (see the module docs).
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/profile",
            get(get_profile).post(create_profile).patch(update_profile),
        )
        .route(
            "/assessments",
            get(list_assessments).post(create_assessment),
        )
        .route("/assessments/{id}/answers", post(answer_assessment))
        .route("/assessments/{id}/complete", post(complete_assessment))
        .route("/goals", get(list_goals).post(create_goal))
        .route("/goals/{id}/progress", patch(goal_progress))
        .route("/progress", get(list_progress).post(log_progress))
        .route("/stats", get(my_stats))
        .route("/users/{id}/stats", get(user_stats))
        .route("/agents/{agent}", post(ask_agent))
        .route("/metrics", get(metrics_snapshot));
    Router::new()
        .nest("/api", api)
        .route("/health", get(health))
        .route("/metrics", get(prometheus))
        .route("/dashboard", get(|| async { Html(dashboard::PAGE) }))
        .route("/realtime", get(ws::realtime_ws))
        .layer(middleware::from_fn_with_state(state.clone(), record_api))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

async fn record_api(State(state): State<AppState>, req: Request, next: Next) -> Response {
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

type ApiResult<T> = Result<Json<T>, ApiError>;

async fn get_profile(State(s): State<AppState>, u: AuthUser) -> ApiResult<Profile> {
    Ok(Json(s.repo.get_profile(Actor::User(u.id), u.id).await?))
}

#[derive(Deserialize)]
struct NewProfileBody {
    email: String,
    display_name: String,
}

async fn create_profile(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(b): Json<NewProfileBody>,
) -> Result<(StatusCode, Json<Profile>), ApiError> {
    // The profile does not exist yet, so the tier lookup and rate limit of AuthUser
    // are skipped: only the token is checked.
    let tok = bearer(&headers).ok_or_else(|| unauthorized("missing bearer token"))?;
    let id = verify(&s, tok)?;
    let p = s
        .repo
        .create_profile(
            Actor::User(id),
            NewProfile::new(id, b.email, b.display_name),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(p)))
}

async fn update_profile(
    State(s): State<AppState>,
    u: AuthUser,
    Json(b): Json<ProfileUpdate>,
) -> ApiResult<Profile> {
    Ok(Json(
        s.repo.update_profile(Actor::User(u.id), u.id, b).await?,
    ))
}

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<u32>,
    offset: Option<u32>,
    #[serde(rename = "type")]
    kind: Option<String>,
    completed: Option<bool>,
    days: Option<i64>,
}

impl PageQuery {
    fn page(&self) -> Page {
        Page {
            limit: self.limit.unwrap_or(50),
            offset: self.offset.unwrap_or(0),
        }
    }
}

async fn list_assessments(
    State(s): State<AppState>,
    u: AuthUser,
    Query(q): Query<PageQuery>,
) -> ApiResult<Vec<Assessment>> {
    let f = AssessmentFilter {
        assessment_type: q.kind.clone(),
        completed: q.completed,
        ..Default::default()
    };
    Ok(Json(
        s.repo
            .list_assessments(Actor::User(u.id), u.id, &f, q.page())
            .await?,
    ))
}

#[derive(Deserialize)]
struct NewAssessmentBody {
    assessment_type: String,
    title: String,
}

async fn create_assessment(
    State(s): State<AppState>,
    u: AuthUser,
    Json(b): Json<NewAssessmentBody>,
) -> Result<(StatusCode, Json<Assessment>), ApiError> {
    let a = s
        .repo
        .create_assessment(
            Actor::User(u.id),
            NewAssessment {
                user_id: u.id,
                assessment_type: b.assessment_type,
                title: b.title,
                created_at: None,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(a)))
}

async fn answer_assessment(
    State(s): State<AppState>,
    u: AuthUser,
    Path(id): Path<AssessmentId>,
    Json(b): Json<Vec<NewAnswer>>,
) -> ApiResult<Vec<AssessmentAnswer>> {
    Ok(Json(
        s.repo.answer_assessment(Actor::User(u.id), id, b).await?,
    ))
}

#[derive(Deserialize)]
struct CompleteBody {
    score: i32,
    #[serde(default)]
    insights: Value,
}

async fn complete_assessment(
    State(s): State<AppState>,
    u: AuthUser,
    Path(id): Path<AssessmentId>,
    Json(b): Json<CompleteBody>,
) -> ApiResult<Assessment> {
    Ok(Json(
        s.repo
            .complete_assessment(Actor::User(u.id), id, b.score, b.insights)
            .await?,
    ))
}

async fn list_goals(
    State(s): State<AppState>,
    u: AuthUser,
    Query(q): Query<PageQuery>,
) -> ApiResult<Vec<Goal>> {
    Ok(Json(
        s.repo.list_goals(Actor::User(u.id), u.id, q.page()).await?,
    ))
}

#[derive(Deserialize)]
struct NewGoalBody {
    title: String,
    #[serde(default)]
    description: String,
    category: String,
    #[serde(default)]
    milestones: Vec<String>,
}

async fn create_goal(
    State(s): State<AppState>,
    u: AuthUser,
    Json(b): Json<NewGoalBody>,
) -> Result<(StatusCode, Json<Goal>), ApiError> {
    let g = s
        .repo
        .create_goal(
            Actor::User(u.id),
            NewGoal {
                user_id: u.id,
                title: b.title,
                description: b.description,
                category: b.category,
                target_date: None,
                milestones: b.milestones,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(g)))
}

#[derive(Deserialize)]
struct ProgressBody {
    progress: i32,
}

async fn goal_progress(
    State(s): State<AppState>,
    u: AuthUser,
    Path(id): Path<GoalId>,
    Json(b): Json<ProgressBody>,
) -> ApiResult<Goal> {
    Ok(Json(
        s.repo
            .set_goal_progress(Actor::User(u.id), id, b.progress)
            .await?,
    ))
}

async fn list_progress(
    State(s): State<AppState>,
    u: AuthUser,
    Query(q): Query<PageQuery>,
) -> ApiResult<Vec<ProgressEntry>> {
    Ok(Json(
        s.repo
            .list_progress(Actor::User(u.id), u.id, None, q.page())
            .await?,
    ))
}

#[derive(Deserialize)]
struct LogBody {
    practice_id: Option<PracticeId>,
    goal_id: Option<GoalId>,
    learning_path_id: Option<LearningPathId>,
    duration_minutes: i32,
    rating: Option<i16>,
    mood_before: Option<i16>,
    mood_after: Option<i16>,
    notes: Option<String>,
    #[serde(default)]
    completed: bool,
}

async fn log_progress(
    State(s): State<AppState>,
    u: AuthUser,
    Json(b): Json<LogBody>,
) -> Result<(StatusCode, Json<ProgressEntry>), ApiError> {
    let e = s
        .repo
        .log_progress(
            Actor::User(u.id),
            NewProgress {
                user_id: u.id,
                practice_id: b.practice_id,
                goal_id: b.goal_id,
                learning_path_id: b.learning_path_id,
                duration_minutes: b.duration_minutes,
                rating: b.rating,
                mood_before: b.mood_before,
                mood_after: b.mood_after,
                notes: b.notes,
                completed: b.completed,
                completed_at: b.completed.then(chrono::Utc::now),
                created_at: None,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(e)))
}

fn range(days: Option<i64>) -> Result<Option<DateRange>, ApiError> {
    match days {
        None => Ok(None),
        Some(d) if (1..=3650).contains(&d) => Ok(Some(DateRange::last_days(d))),
        Some(_) => Err(Error::invalid("days", "must be 1 to 3650").into()),
    }
}

async fn my_stats(
    State(s): State<AppState>,
    u: AuthUser,
    Query(q): Query<PageQuery>,
) -> ApiResult<UserStatistics> {
    Ok(Json(
        s.repo
            .user_statistics(Actor::User(u.id), u.id, range(q.days)?)
            .await?,
    ))
}

async fn user_stats(
    State(s): State<AppState>,
    u: AuthUser,
    Path(id): Path<UserId>,
    Query(q): Query<PageQuery>,
) -> ApiResult<UserStatistics> {
    if id != u.id {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            json!({ "error": "forbidden", "message": "another user's data" }),
            None,
        ));
    }
    Ok(Json(
        s.repo
            .user_statistics(Actor::User(u.id), id, range(q.days)?)
            .await?,
    ))
}

async fn ask_agent(
    State(s): State<AppState>,
    u: AuthUser,
    Path(agent): Path<String>,
    Json(input): Json<Value>,
) -> ApiResult<Value> {
    let agent: AgentType = agent.parse()?;
    let out = s
        .pipeline
        .complete(AiRequest::new(u.id, agent, input), u.tier)
        .await?;
    Ok(Json(json!({
        "output": out.response.output,
        "cache": out.cache,
        "cost_nanos": out.cost_nanos,
        "backend": out.response.backend,
    })))
}

async fn metrics_snapshot(State(s): State<AppState>) -> Json<crate::metrics::MetricsSnapshot> {
    Json(s.metrics.snapshot())
}

/// `/health`: `{"status": "ok" | "degraded" | "critical"}` for anyone (503 when
/// critical, else 200); the whole [`HealthReport`](crate::metrics::HealthReport)
/// beside it only for an operator's token ([`JwtConfig::operator_token`]). A token that
/// does not verify is refused (401) rather than silently served less.
async fn health(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let operator = match bearer(&headers) {
        None => false,
        Some(tok) => match auth::claims(&s, tok) {
            Ok(c) => c.is_operator(),
            Err(e) => return e.into_response(),
        },
    };
    let r = s.health.evaluate().await;
    let (code, status) = match r.overall {
        Status::Healthy => (StatusCode::OK, "ok"),
        Status::Warning => (StatusCode::OK, "degraded"),
        Status::Critical => (StatusCode::SERVICE_UNAVAILABLE, "critical"),
    };
    let mut body = json!({ "status": status });
    if operator && let Ok(Value::Object(details)) = serde_json::to_value(&r) {
        body.as_object_mut().expect("a JSON object").extend(details);
    }
    (code, Json(body)).into_response()
}

async fn prometheus(State(s): State<AppState>) -> Response {
    match &s.render_metrics {
        Some(f) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], f()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
