//! An axum server composed from the library (feature `server`): REST endpoints, JWT
//! auth, rate limits, `/health`, `/metrics`, a realtime WebSocket and a live dashboard.
//! `examples/server.rs` runs it; hosts can copy it or mount [`router`] as it is.
//!
//! Auth: `Authorization: Bearer <JWT>` (HS256, a secret of at least 32 bytes — see
//! [`JwtConfig`]) whose `sub` is the acting user's id; `exp` is required, `nbf` is
//! honoured, and `iss`/`aud` are required when configured. The WebSocket also takes
//! `?token=`. No token or a bad one → 401; another user's id in the path → 403. The
//! user routes sit behind the [`Authenticator`] layer, which also applies the API rate
//! limit by the user's plan — from the token's `tier` claim
//! ([`JwtConfig::token_with_tier`]) or a cached lookup ([`AuthConfig`]) — before any
//! database read; handlers take the [`AuthUser`] it admitted.
//!
//! `/health` answers anyone with the overall status only (`{"status": "ok"}`,
//! `"degraded"` or `"critical"`; 503 when critical); the checks and the database's
//! figures go only to an operator's token (`role: "operator"`, see
//! [`JwtConfig::operator_token`]), and so does `/api/metrics` (401 without a token,
//! 403 for a user's; the `/dashboard` page takes the token as `#token=…`). The
//! database figures are cached by the [`HealthMonitor`] (30 s by default), so probes
//! cost no query each. Errors answer as [`Error`](crate::Error)'s `IntoResponse` says
//! (statuses of [`Error::status_code`](crate::Error::status_code): invalid input 400
//! with the field, forbidden 403, not found 404, conflict 409, rate limited 429 with
//! `Retry-After`, budget exceeded 402, overloaded or circuit open 503, timeout 504); a
//! plan that cannot be read is 503. Bodies over 64 KiB → 413; malformed JSON → 400/422
//! from axum's extractor, never 500.
//!
//! Where things are: `auth` (the layer, [`AuthUser`]), `jwt` (tokens), `errors`
//! ([`ApiError`]), `routes/` (one file per resource; `ops` for health, metrics and the
//! dashboard), [`ws`] (the realtime WebSocket) and `serve` (the connection loop).

mod auth;
mod errors;
mod jwt;
mod routes;
mod serve;
pub mod ws;

pub use auth::{AuthConfig, AuthUser, Authenticator};
pub use errors::ApiError;
pub use jwt::{Claims, JwtConfig, OPERATOR_ROLE, token};
pub use serve::{ServeConfig, serve};
pub use ws::{CLOSE_LAGGED, CLOSE_TOKEN_EXPIRED, CLOSE_TOO_BIG, WsConfig, WsSockets, WsStats};

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;

use crate::health::HealthMonitor;
use crate::metrics::{InMemoryMetrics, MetricsSink};
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

/// The server's routes (see the module docs), with the [`Authenticator`]'s defaults
/// ([`AuthConfig::default`]).
pub fn router(state: AppState) -> Router {
    router_with(state, AuthConfig::default())
}

/// The server's routes, the user routes behind an [`Authenticator`] with `auth`.
pub fn router_with(state: AppState, auth: AuthConfig) -> Router {
    let auth = Authenticator::new(&state, auth);
    let api = Router::new()
        .merge(routes::profile::routes(&auth))
        .merge(routes::assessments::routes(&auth))
        .merge(routes::goals::routes(&auth))
        .merge(routes::progress::routes(&auth))
        .merge(routes::stats::routes(&auth))
        .merge(routes::agents::routes(&auth))
        .merge(routes::conversations::routes(&auth))
        .merge(routes::ops::api_routes());
    Router::new()
        .nest("/api", api)
        .merge(routes::ops::routes())
        .route("/realtime", get(ws::realtime_ws))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            routes::ops::record_api,
        ))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}
