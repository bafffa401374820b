//! `/api/conversations`: the caller's conversations with an agent; a message posted
//! to one is answered as server-sent events (as `/api/agents/{agent}/stream`), with
//! the conversation's last turns (within the history budget, oldest dropped first)
//! and the user's own data in the prompt. The user's message is stored once the
//! pipeline admitted the request (a refusal stores nothing; a database failing to
//! store it then does not stop the answer, which is already paid for); the agent's
//! answer is stored when it is complete. A client that
//! goes away mid-answer leaves its message without an answer (the pipeline bills and
//! records what the backend produced).

use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::PageQuery;
use super::agents::{events, request, sse};
use crate::agent::output_text;
use crate::context::ContextProvider;
use crate::domain::{
    Actor, AgentType, Conversation, ConversationId, MessageRole, NewConversation,
    NewConversationMessage,
};
use crate::server::AppState;
use crate::server::auth::{AuthUser, Authenticator};
use crate::server::errors::{ApiError, ApiResult};

/// Most messages `GET /api/conversations/{id}` returns (the latest).
const SHOWN: u32 = 100;
/// Most tokens of conversation history a prompt carries.
pub(in crate::server) const HISTORY_TOKENS: u32 = 2_000;

pub(in crate::server) fn routes(auth: &Authenticator) -> Router<AppState> {
    Router::new()
        .route(
            "/conversations",
            auth.guard(get(list_conversations).post(create_conversation)),
        )
        .route("/conversations/{id}", auth.guard(get(get_conversation)))
        .route(
            "/conversations/{id}/messages",
            auth.guard(post(post_message)),
        )
}

#[derive(Deserialize)]
struct NewConversationBody {
    agent: String,
    title: Option<String>,
}

async fn create_conversation(
    State(s): State<AppState>,
    u: AuthUser,
    Json(b): Json<NewConversationBody>,
) -> Result<(StatusCode, Json<Conversation>), ApiError> {
    let agent: AgentType = b.agent.parse()?;
    let c = s
        .repo
        .create_conversation(
            Actor::User(u.id),
            NewConversation {
                user_id: u.id,
                agent,
                title: b.title.unwrap_or_else(|| agent.as_str().replace('_', " ")),
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(c)))
}

async fn list_conversations(
    State(s): State<AppState>,
    u: AuthUser,
    Query(q): Query<PageQuery>,
) -> ApiResult<Vec<Conversation>> {
    // The listing has no paging (newest first, up to `limit`): an offset would be
    // ignored and a client paging by it served the first page again, forever.
    if q.offset.is_some_and(|o| o > 0) {
        return Err(crate::error::Error::invalid(
            "offset",
            "conversations are listed newest first, up to `limit` (1–500); paging by offset is not supported",
        )
        .into());
    }
    let limit = q.limit.unwrap_or(50);
    Ok(Json(
        s.repo
            .list_conversations(Actor::User(u.id), u.id, limit)
            .await?,
    ))
}

async fn get_conversation(
    State(s): State<AppState>,
    u: AuthUser,
    Path(id): Path<ConversationId>,
) -> ApiResult<Value> {
    let actor = Actor::User(u.id);
    let c = s.repo.get_conversation(actor, id).await?;
    let messages = s.repo.recent_messages(actor, id, SHOWN).await?;
    Ok(Json(json!({ "conversation": c, "messages": messages })))
}

#[derive(Deserialize)]
struct MessageBody {
    content: String,
}

async fn post_message(
    State(s): State<AppState>,
    u: AuthUser,
    Path(id): Path<ConversationId>,
    Json(b): Json<MessageBody>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let actor = Actor::User(u.id);
    crate::domain::validate::text(
        "content",
        &b.content,
        crate::domain::validate::MAX_TEXT_CHARS,
    )?;
    let c = s.repo.get_conversation(actor, id).await?;
    // The turns before this message: the history the answer is asked with.
    let history = ContextProvider::new(s.repo.clone())
        .history_for(u.id, id, HISTORY_TOKENS)
        .await?;
    let req = request(&s, &u, c.agent, Value::String(b.content.clone()))
        .await?
        .with_history(history);
    // Refusals (rate limit, budget, bad input) come before the message is stored.
    let stream = s.pipeline.stream(req, u.tier).await?;
    // From here the backend call is the user's, billed whatever becomes of it: a
    // question the database fails to store is still answered (never an error that
    // drops a paid answer), and the turn is missing from the history.
    let stored = s
        .repo
        .add_message(
            actor,
            NewConversationMessage {
                conversation_id: id,
                role: MessageRole::User,
                content: b.content,
            },
        )
        .await;
    if let Err(e) = stored {
        tracing::warn!(error = %e, conversation = %id, "the question was not stored");
    }
    let repo = s.repo.clone();
    Ok(sse(events(stream, move |out| {
        let repo = repo.clone();
        async move {
            let stored = repo
                .add_message(
                    actor,
                    NewConversationMessage {
                        conversation_id: id,
                        role: MessageRole::Assistant,
                        content: as_message(&output_text(&out.response.output)),
                    },
                )
                .await;
            if let Err(e) = stored {
                tracing::warn!(error = %e, conversation = %id, "the answer was not stored");
            }
        }
    })))
}

/// An answer as a stored message: cut to the repository's 10,000 characters (ending
/// in "…") when longer, so a long answer is kept, not refused. The client received
/// it whole.
fn as_message(text: &str) -> String {
    crate::text::cut_chars(text, crate::domain::validate::MAX_TEXT_CHARS)
}

#[cfg(test)]
mod tests {
    use super::as_message;

    #[test]
    fn a_long_answer_is_cut_to_what_a_message_holds() {
        let long = "é".repeat(12_000);
        let s = as_message(&long);
        assert_eq!(s.chars().count(), 10_000);
        assert!(s.ends_with('…'));
        assert_eq!(as_message("short"), "short");
        assert_eq!(as_message(&"a".repeat(10_000)).chars().count(), 10_000);
    }
}
