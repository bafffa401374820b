//! `/api/stats` and `/api/users/{id}/stats`: the caller's statistics.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use super::PageQuery;
use crate::domain::{Actor, DateRange, UserId, UserStatistics};
use crate::error::Error;
use crate::server::AppState;
use crate::server::auth::{AuthUser, Authenticator};
use crate::server::errors::{ApiError, ApiResult};

pub(in crate::server) fn routes(auth: &Authenticator) -> Router<AppState> {
    Router::new()
        .route("/stats", auth.guard(get(my_stats)))
        .route("/users/{id}/stats", auth.guard(get(user_stats)))
}

/// `?days=` as a range ending now: 1 to 3650 days, or everything when absent.
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
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "another user's data",
        ));
    }
    Ok(Json(
        s.repo
            .user_statistics(Actor::User(u.id), id, range(q.days)?)
            .await?,
    ))
}
