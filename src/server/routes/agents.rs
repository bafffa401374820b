//! `/api/agents/{agent}`: one answer of an AI agent through the pipeline.

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::agent::AiRequest;
use crate::domain::AgentType;
use crate::server::AppState;
use crate::server::auth::{AuthUser, Authenticator};
use crate::server::errors::ApiResult;

pub(in crate::server) fn routes(auth: &Authenticator) -> Router<AppState> {
    Router::new().route("/agents/{agent}", auth.guard(post(ask_agent)))
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
