//! `/api/progress`: the caller's practice log.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::PageQuery;
use crate::domain::{Actor, GoalId, LearningPathId, NewProgress, PracticeId, ProgressEntry};
use crate::server::AppState;
use crate::server::auth::{AuthUser, Authenticator};
use crate::server::errors::{ApiError, ApiResult};

pub(in crate::server) fn routes(auth: &Authenticator) -> Router<AppState> {
    Router::new().route(
        "/progress",
        auth.guard(get(list_progress).post(log_progress)),
    )
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
