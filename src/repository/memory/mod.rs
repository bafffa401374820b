//! [`InMemoryRepository`]: the whole data model in process memory.
//!
//! The state is one [`State`] behind a lock; each aggregate's calls live in a file of
//! their own (`profiles.rs`, `goals.rs`, …) as functions named after the
//! [`Repository`](super::Repository) methods, which the impl at the bottom passes every
//! call to.

mod analytics;
mod assessments;
mod conversations;
mod erasure;
mod goals;
mod interactions;
mod learning_paths;
mod notifications;
mod practices;
mod profiles;
mod progress;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, SubsecRound, Utc};

use self::{
    analytics::*, assessments::*, conversations::*, erasure::*, goals::*, interactions::*,
    learning_paths::*, notifications::*, practices::*, profiles::*, progress::*,
};
use crate::domain::*;
use crate::error::{Error, Result};
use crate::feed::{ChangeEvent, ChangeOp, ChangeTable, Hub};

/// A complete, concurrent [`Repository`](super::Repository) in memory: the same
/// validation, isolation and analytics as [`PgRepository`](super::PgRepository),
/// nothing to set up, nothing kept after the process ends.
///
/// Readers share a lock; each write holds it briefly and never across an `.await`.
/// Full-text search approximates PostgreSQL's English stemming with a small suffix
/// stripper, so results agree on ordinary words but may differ on exotic ones.
#[derive(Debug, Default)]
pub struct InMemoryRepository {
    state: RwLock<State>,
    feed: Option<Arc<Hub>>,
    ai_feed: bool,
}

#[derive(Debug, Default)]
struct State {
    profiles: HashMap<UserId, Profile>,
    emails: HashMap<String, UserId>,
    assessments: HashMap<AssessmentId, Assessment>,
    answers: HashMap<AssessmentId, Vec<AssessmentAnswer>>,
    practices: HashMap<PracticeId, Practice>,
    goals: HashMap<GoalId, Goal>,
    progress: HashMap<UserId, Vec<ProgressEntry>>,
    paths: HashMap<LearningPathId, LearningPath>,
    notifications: HashMap<NotificationId, Notification>,
    interactions: HashMap<UserId, Vec<AiInteraction>>,
    interaction_keys: HashSet<(InteractionId, DateTime<Utc>)>,
    conversations: HashMap<ConversationId, Conversation>,
    messages: HashMap<ConversationId, Vec<ConversationMessage>>,
    last_message_id: i64,
}

/// Now, at the microsecond precision PostgreSQL stores.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

fn page<T: Clone>(items: impl Iterator<Item = T>, p: Page) -> Vec<T> {
    items
        .skip(p.offset as usize)
        .take(p.limit as usize)
        .collect()
}

fn newest_first<T>(v: &mut [T], key: impl Fn(&T) -> (DateTime<Utc>, uuid::Uuid)) {
    v.sort_by_key(|x| std::cmp::Reverse(key(x)));
}

fn not_found(entity: &'static str) -> Error {
    Error::NotFound { entity }
}

impl InMemoryRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes every committed change to `hub`, as PostgreSQL's triggers do (see
    /// [`MemoryRealtime`](crate::realtime::MemoryRealtime)). AI interactions are left
    /// out unless [`with_ai_interactions_feed`](Self::with_ai_interactions_feed).
    #[must_use]
    pub fn with_change_feed(mut self, hub: Arc<Hub>) -> Self {
        self.feed = Some(hub);
        self
    }

    /// Also publishes AI interactions (the hottest table; off by default, as in
    /// PostgreSQL, where `kasama_ai_interactions_feed(true)` switches it on).
    #[must_use]
    pub fn with_ai_interactions_feed(mut self, on: bool) -> Self {
        self.ai_feed = on;
        self
    }

    fn emit(&self, table: ChangeTable, op: ChangeOp, id: uuid::Uuid, user: UserId) {
        if let Some(hub) = &self.feed {
            if table == ChangeTable::AiInteractions && !self.ai_feed {
                return;
            }
            hub.publish(&ChangeEvent {
                table,
                op,
                id,
                user_id: user,
                seq: hub.next_seq(),
                at: now(),
            });
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-written record: every
        // write builds the new value first and inserts it last.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn require_profile(&self, user: UserId) -> Result<()> {
        if self.profiles.contains_key(&user) {
            Ok(())
        } else {
            Err(Error::invalid("user_id", "no profile for this user"))
        }
    }

    fn assessment_mut(&mut self, actor: Actor, id: AssessmentId) -> Result<&mut Assessment> {
        match self.assessments.get_mut(&id) {
            Some(a) if actor.may_access(a.user_id) => Ok(a),
            _ => Err(not_found("assessment")),
        }
    }

    fn goal_mut(&mut self, actor: Actor, id: GoalId) -> Result<&mut Goal> {
        match self.goals.get_mut(&id) {
            Some(g) if actor.may_access(g.user_id) => Ok(g),
            _ => Err(not_found("goal")),
        }
    }

    fn path_mut(&mut self, actor: Actor, id: LearningPathId) -> Result<&mut LearningPath> {
        match self.paths.get_mut(&id) {
            Some(p) if actor.may_access(p.user_id) => Ok(p),
            _ => Err(not_found("learning path")),
        }
    }

    /// A practice's category, if the practice exists.
    fn category(&self, p: PracticeId) -> Option<&str> {
        self.practices.get(&p).map(|x| x.category.as_str())
    }
}

// Every method is the same-named function of an aggregate's file.
macro_rules! to_function {
    ($s:ident, $name:ident($($a:ident),*)) => {
        $name($s, $($a),*)
    };
}
crate::__forward_repository!(impl[] InMemoryRepository => to_function);
