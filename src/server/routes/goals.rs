//! `/api/goals`: the caller's goals and their progress.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, patch};
use axum::{Json, Router};
use serde::Deserialize;

use super::PageQuery;
use crate::domain::{Actor, Goal, GoalId, NewGoal};
use crate::server::AppState;
use crate::server::auth::{AuthUser, Authenticator};
use crate::server::errors::{ApiError, ApiResult};

pub(in crate::server) fn routes(auth: &Authenticator) -> Router<AppState> {
    Router::new()
        .route("/goals", auth.guard(get(list_goals).post(create_goal)))
        .route("/goals/{id}/progress", auth.guard(patch(goal_progress)))
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
