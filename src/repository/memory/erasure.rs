//! Erasing a user.

use super::InMemoryRepository;
use crate::domain::*;
use crate::error::Result;
use crate::feed::{ChangeOp as Op, ChangeTable as T};

pub(super) fn erase_user(
    repo: &InMemoryRepository,
    actor: Actor,
    user: UserId,
) -> Result<ErasureReport> {
    actor.require_service("only the service may erase a user")?;
    let mut s = repo.write();
    let mut r = ErasureReport::default();
    let mut events: Vec<(T, uuid::Uuid)> = Vec::new();
    // Same order as PostgreSQL's statements, so the feed reports the same events.
    let assessments: Vec<AssessmentId> = s
        .assessments
        .values()
        .filter(|a| a.user_id == user)
        .map(|a| a.id)
        .collect();
    for id in assessments {
        s.assessments.remove(&id);
        r.answers += s.answers.remove(&id).map_or(0, |v| v.len() as u64);
        r.assessments += 1;
        events.push((T::Assessments, id.0));
    }
    for e in s.progress.remove(&user).unwrap_or_default() {
        r.progress += 1;
        events.push((T::Progress, e.id.0));
    }
    s.goals.retain(|id, g| {
        let mine = g.user_id == user;
        if mine {
            r.goals += 1;
            events.push((T::Goals, id.0));
        }
        !mine
    });
    s.paths.retain(|id, p| {
        let mine = p.user_id == user;
        if mine {
            r.learning_paths += 1;
            events.push((T::LearningPaths, id.0));
        }
        !mine
    });
    s.notifications.retain(|id, n| {
        let mine = n.user_id == user;
        if mine {
            r.notifications += 1;
            events.push((T::Notifications, id.0));
        }
        !mine
    });
    for i in s.interactions.remove(&user).unwrap_or_default() {
        s.interaction_keys.remove(&(i.id, i.created_at));
        r.ai_interactions += 1;
        events.push((T::AiInteractions, i.id.0));
    }
    // Conversations are not in the change feed.
    let conversations: Vec<ConversationId> = s
        .conversations
        .values()
        .filter(|c| c.user_id == user)
        .map(|c| c.id)
        .collect();
    for id in conversations {
        s.conversations.remove(&id);
        r.conversation_messages += s.messages.remove(&id).map_or(0, |v| v.len() as u64);
        r.conversations += 1;
    }
    if let Some(p) = s.profiles.remove(&user) {
        s.emails.remove(&p.email.to_lowercase());
        r.profiles = 1;
    }
    for (table, id) in events {
        repo.emit(table, Op::Delete, id, user);
    }
    Ok(r)
}
