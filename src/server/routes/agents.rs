//! `/api/agents/{agent}`: one answer of an AI agent through the pipeline, whole or
//! streamed as server-sent events (`/api/agents/{agent}/stream`).
//!
//! The event stream (`text/event-stream`): one `delta` event per chunk of the answer
//! (`{"text": …}`), then one `done` event with the whole answer, its usage, cost and
//! cache tier — or one `error` event (`{"error": kind, "message": …}`) when the backend
//! fails mid-answer. Refusals before the first byte (rate limited, over budget,
//! invalid input) are ordinary HTTP errors. A client that disconnects mid-stream
//! stops the backend call; what it produced is billed and recorded by the pipeline.
//!
//! Every request carries the user's own data ([`ContextProvider`](crate::context::ContextProvider),
//! read as the user before the pipeline is asked). The pipeline's time-to-first-token
//! metric starts when the pipeline is asked, so it does not include those reads; the
//! API latency metric of the route does.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};

use crate::agent::AiRequest;
use crate::domain::AgentType;
use crate::error::Error;
use crate::pipeline::{AiOutcome, OutcomeStream, StreamItem};
use crate::server::AppState;
use crate::server::auth::{AuthUser, Authenticator};
use crate::server::errors::{ApiError, ApiResult};

pub(in crate::server) fn routes(auth: &Authenticator) -> Router<AppState> {
    Router::new()
        .route("/agents/{agent}", auth.guard(post(ask_agent)))
        .route("/agents/{agent}/stream", auth.guard(post(stream_agent)))
}

/// The request for `agent` with the user's own data as its context, read as the user.
pub(in crate::server) async fn request(
    s: &AppState,
    u: &AuthUser,
    agent: AgentType,
    input: Value,
) -> Result<AiRequest, Error> {
    let context = crate::context::ContextProvider::new(s.repo.clone())
        .context_for(u.id, agent, &input)
        .await?;
    Ok(AiRequest::new(u.id, agent, input).with_context(context))
}

async fn ask_agent(
    State(s): State<AppState>,
    u: AuthUser,
    Path(agent): Path<String>,
    Json(input): Json<Value>,
) -> ApiResult<Value> {
    let agent: AgentType = agent.parse()?;
    let req = request(&s, &u, agent, input).await?;
    let out = s.pipeline.complete(req, u.tier).await?;
    Ok(Json(done_body(&out)))
}

async fn stream_agent(
    State(s): State<AppState>,
    u: AuthUser,
    Path(agent): Path<String>,
    Json(input): Json<Value>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let agent: AgentType = agent.parse()?;
    let req = request(&s, &u, agent, input).await?;
    let stream = s.pipeline.stream(req, u.tier).await?;
    Ok(sse(events(stream, |_| async {})))
}

/// The `done` event's body (also the whole answer's JSON).
pub(in crate::server) fn done_body(out: &AiOutcome) -> Value {
    json!({
        "output": out.response.output,
        "usage": out.response.usage,
        "model": out.response.model,
        "cache": out.cache,
        "cost_nanos": out.cost_nanos,
        "saved_nanos": out.saved_nanos,
        "backend": out.response.backend,
    })
}

/// The pipeline's stream as server-sent events; `on_done` runs with the finished
/// answer before its `done` event is sent.
pub(in crate::server) fn events<F, Fut>(
    stream: OutcomeStream,
    on_done: F,
) -> impl Stream<Item = Event> + Send
where
    F: Fn(AiOutcome) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let on_done = std::sync::Arc::new(on_done);
    stream.then(move |item| {
        let on_done = on_done.clone();
        async move {
            match item {
                Ok(StreamItem::Delta(text)) => Event::default()
                    .event("delta")
                    .data(json!({ "text": text }).to_string()),
                Ok(StreamItem::Done(out)) => {
                    let body = done_body(&out);
                    on_done(out).await;
                    Event::default().event("done").data(body.to_string())
                }
                Err(e) => {
                    let body = ApiError::from(e).body;
                    Event::default().event("error").data(body.to_string())
                }
            }
        }
    })
}

/// Server-sent events with a keep-alive comment every 15 s.
pub(in crate::server) fn sse(
    events: impl Stream<Item = Event> + Send + 'static,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(events.map(Ok)).keep_alive(KeepAlive::default())
}
