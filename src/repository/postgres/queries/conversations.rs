//! Conversations and their messages.

use uuid::Uuid;

use super::who;
use crate::domain::*;
use crate::error::{Error, Result};
use crate::repository::checks;
use crate::repository::postgres::PgRepository;
use crate::repository::postgres::rows::*;

pub(super) async fn create_conversation(
    pg: &PgRepository,
    actor: Actor,
    new: NewConversation,
) -> Result<Conversation> {
    new.validate()?;
    actor.check_write(new.user_id)?;
    let sql = format!(
        "INSERT INTO conversations (id, user_id, agent, title)
         VALUES ($1, $2, $3::text::agent_type, $4) RETURNING {CONVERSATION_COLS}"
    );
    let r = pg
        .scoped(
            actor,
            &sql,
            &[
                &Uuid::new_v4(),
                &new.user_id.0,
                &new.agent.as_str(),
                &new.title,
            ],
        )
        .await?;
    one(&r, "conversation", conversation)
}

pub(super) async fn get_conversation(
    pg: &PgRepository,
    actor: Actor,
    id: ConversationId,
) -> Result<Conversation> {
    let sql = format!(
        "SELECT {CONVERSATION_COLS} FROM conversations
         WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2)"
    );
    let r = pg.scoped(actor, &sql, &[&id.0, &who(actor)]).await?;
    one(&r, "conversation", conversation)
}

pub(super) async fn list_conversations(
    pg: &PgRepository,
    actor: Actor,
    user: UserId,
    limit: u32,
) -> Result<Vec<Conversation>> {
    checks::conversation_limit(limit)?;
    checks::list_owner(actor, user)?;
    let sql = format!(
        "SELECT {CONVERSATION_COLS} FROM conversations WHERE user_id = $1
         ORDER BY updated_at DESC, id DESC LIMIT $2"
    );
    let r = pg
        .scoped(actor, &sql, &[&user.0, &i64::from(limit)])
        .await?;
    all(&r, conversation)
}

pub(super) async fn add_message(
    pg: &PgRepository,
    actor: Actor,
    new: NewConversationMessage,
) -> Result<ConversationMessage> {
    new.validate()?;
    // One statement: the conversation's row is locked and touched, and the message
    // stored under its owner, only when the actor may see it.
    let cols = MESSAGE_COLS;
    let sql = format!(
        "WITH c AS (
            UPDATE conversations SET updated_at = greatest(now(), updated_at)
            WHERE id = $1 AND ($4::uuid IS NULL OR user_id = $4)
            RETURNING id, user_id, updated_at
         )
         INSERT INTO conversation_messages (conversation_id, user_id, role, content, created_at)
         SELECT c.id, c.user_id, $2, $3, c.updated_at FROM c
         RETURNING {cols}"
    );
    let r = pg
        .scoped(
            actor,
            &sql,
            &[
                &new.conversation_id.0,
                &new.role.as_str(),
                &new.content,
                &who(actor),
            ],
        )
        .await?;
    one(&r, "conversation", message)
}

pub(super) async fn recent_messages(
    pg: &PgRepository,
    actor: Actor,
    conversation: ConversationId,
    limit: u32,
) -> Result<Vec<ConversationMessage>> {
    checks::conversation_limit(limit)?;
    // No row at all: the conversation is not there (or not the actor's); one row of
    // NULLs: it has no messages.
    let sql = format!(
        "WITH c AS (
            SELECT id FROM conversations WHERE id = $1 AND ($3::uuid IS NULL OR user_id = $3)
         )
         SELECT m.* FROM c LEFT JOIN LATERAL (
            SELECT {MESSAGE_COLS} FROM conversation_messages
            WHERE conversation_id = c.id AND ($3::uuid IS NULL OR user_id = $3)
            ORDER BY created_at DESC, id DESC LIMIT $2
         ) m ON true
         ORDER BY m.created_at, m.id"
    );
    let r = pg
        .scoped(
            actor,
            &sql,
            &[&conversation.0, &i64::from(limit), &who(actor)],
        )
        .await?;
    if r.is_empty() {
        return Err(Error::NotFound {
            entity: "conversation",
        });
    }
    r.iter()
        .filter(|row| row.get::<_, Option<i64>>(0).is_some())
        .map(message)
        .collect()
}
