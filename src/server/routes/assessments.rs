//! `/api/assessments`: the caller's assessments, their answers and completion.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::PageQuery;
use crate::domain::{
    Actor, Assessment, AssessmentAnswer, AssessmentFilter, AssessmentId, NewAnswer, NewAssessment,
};
use crate::server::AppState;
use crate::server::auth::{AuthUser, Authenticator};
use crate::server::errors::{ApiError, ApiResult};

pub(in crate::server) fn routes(auth: &Authenticator) -> Router<AppState> {
    Router::new()
        .route(
            "/assessments",
            auth.guard(get(list_assessments).post(create_assessment)),
        )
        .route(
            "/assessments/{id}/answers",
            auth.guard(post(answer_assessment)),
        )
        .route(
            "/assessments/{id}/complete",
            auth.guard(post(complete_assessment)),
        )
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
