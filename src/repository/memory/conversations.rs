//! Conversations and their messages.

use super::{InMemoryRepository, not_found, now};
use crate::domain::*;
use crate::error::Result;
use crate::repository::checks;

pub(super) fn create_conversation(
    repo: &InMemoryRepository,
    actor: Actor,
    new: NewConversation,
) -> Result<Conversation> {
    new.validate()?;
    actor.check_write(new.user_id)?;
    let mut s = repo.write();
    s.require_profile(new.user_id)?;
    let t = now();
    let c = Conversation {
        id: ConversationId::new(),
        user_id: new.user_id,
        agent: new.agent,
        title: new.title,
        created_at: t,
        updated_at: t,
    };
    s.conversations.insert(c.id, c.clone());
    Ok(c)
}

pub(super) fn get_conversation(
    repo: &InMemoryRepository,
    actor: Actor,
    id: ConversationId,
) -> Result<Conversation> {
    let s = repo.read();
    match s.conversations.get(&id) {
        Some(c) if actor.may_access(c.user_id) => Ok(c.clone()),
        _ => Err(not_found("conversation")),
    }
}

pub(super) fn list_conversations(
    repo: &InMemoryRepository,
    actor: Actor,
    user: UserId,
    limit: u32,
) -> Result<Vec<Conversation>> {
    checks::conversation_limit(limit)?;
    checks::list_owner(actor, user)?;
    let s = repo.read();
    let mut v: Vec<Conversation> = s
        .conversations
        .values()
        .filter(|c| c.user_id == user)
        .cloned()
        .collect();
    v.sort_by_key(|c| std::cmp::Reverse((c.updated_at, c.id)));
    v.truncate(limit as usize);
    Ok(v)
}

pub(super) fn add_message(
    repo: &InMemoryRepository,
    actor: Actor,
    new: NewConversationMessage,
) -> Result<ConversationMessage> {
    new.validate()?;
    let mut guard = repo.write();
    let s = &mut *guard;
    let c = match s.conversations.get_mut(&new.conversation_id) {
        Some(c) if actor.may_access(c.user_id) => c,
        _ => return Err(not_found("conversation")),
    };
    s.last_message_id += 1;
    let id = MessageId(s.last_message_id);
    // Never before the conversation's last change (as PostgreSQL's
    // `greatest(now(), updated_at)`), so time order is insertion order even if the
    // wall clock steps back.
    let t = now().max(c.updated_at);
    c.updated_at = t;
    let m = ConversationMessage {
        id,
        conversation_id: new.conversation_id,
        user_id: c.user_id,
        role: new.role,
        content: new.content,
        created_at: t,
    };
    s.messages
        .entry(new.conversation_id)
        .or_default()
        .push(m.clone());
    Ok(m)
}

pub(super) fn recent_messages(
    repo: &InMemoryRepository,
    actor: Actor,
    conversation: ConversationId,
    limit: u32,
) -> Result<Vec<ConversationMessage>> {
    checks::conversation_limit(limit)?;
    let s = repo.read();
    match s.conversations.get(&conversation) {
        Some(c) if actor.may_access(c.user_id) => {}
        _ => return Err(not_found("conversation")),
    }
    let mut v: Vec<ConversationMessage> =
        s.messages.get(&conversation).cloned().unwrap_or_default();
    v.sort_by_key(|m| (m.created_at, m.id));
    let skip = v.len().saturating_sub(limit as usize);
    Ok(v.split_off(skip))
}
