//! Conversations: threads of messages between a user and one agent kind.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::enums::{AgentType, MessageRole};
use crate::domain::ids::*;
use crate::domain::validate as v;
use crate::error::{Error, Result};

/// A conversation (thread) of a user with one agent kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// Its id.
    pub id: ConversationId,
    /// Whose it is.
    pub user_id: UserId,
    /// The agent kind the user talks to.
    pub agent: AgentType,
    /// Title shown to the user.
    pub title: String,
    /// When started.
    pub created_at: DateTime<Utc>,
    /// When the last message was added (or when started, before any).
    pub updated_at: DateTime<Utc>,
}

/// Input for a new conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewConversation {
    /// Whose it is.
    pub user_id: UserId,
    /// The agent kind.
    pub agent: AgentType,
    /// Title (1–200 characters, not blank).
    pub title: String,
}

impl NewConversation {
    /// # Errors
    /// [`Error::InvalidInput`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        v::title("title", &self.title)
    }
}

/// One stored message of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConversationMessage {
    /// Its id; increases with every message stored.
    pub id: MessageId,
    /// The conversation it belongs to.
    pub conversation_id: ConversationId,
    /// Whose conversation it is (always the conversation's owner).
    pub user_id: UserId,
    /// Who said it.
    pub role: MessageRole,
    /// What was said.
    pub content: String,
    /// When stored.
    pub created_at: DateTime<Utc>,
}

/// Input for a message. System messages are not stored (the system prompt is the
/// agent's, rendered for every request), so a role is a [`MessageRole`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewConversationMessage {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Who said it.
    pub role: MessageRole,
    /// The text (1–10,000 characters, not blank).
    pub content: String,
}

impl NewConversationMessage {
    /// # Errors
    /// [`Error::InvalidInput`] naming `content` (blank, over 10,000 characters, or
    /// holding NUL).
    pub fn validate(&self) -> Result<()> {
        if self.content.trim().is_empty() {
            return Err(Error::invalid("content", "must not be empty"));
        }
        v::text("content", &self.content, v::MAX_TEXT_CHARS)
    }
}
