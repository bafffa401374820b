//! `/api/profile`: the caller's own profile.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::domain::{Actor, NewProfile, Profile, ProfileUpdate};
use crate::server::AppState;
use crate::server::auth::{AuthUser, Authenticator};
use crate::server::errors::{ApiError, ApiResult};

pub(in crate::server) fn routes(auth: &Authenticator) -> Router<AppState> {
    Router::new().route(
        "/profile",
        // Creating the profile is limited like every other call: a user without one is
        // on the free plan until it exists.
        auth.guard(get(get_profile).patch(update_profile).post(create_profile)),
    )
}

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
    u: AuthUser,
    Json(b): Json<NewProfileBody>,
) -> Result<(StatusCode, Json<Profile>), ApiError> {
    let id = u.id;
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
