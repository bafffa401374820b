//! Persistent data: the [`Repository`] trait and its two implementations,
//! [`InMemoryRepository`] (zero set-up) and [`PgRepository`] (PostgreSQL with
//! row-level security).
//!
//! Every call on user data takes an [`Actor`]. The implementation, not the caller,
//! enforces isolation: a user reads and writes only their own rows (another user's
//! row reads as [`Error::NotFound`](crate::Error::NotFound), a write for another user
//! is [`Error::Forbidden`](crate::Error::Forbidden)); [`Actor::Service`] may act on
//! everyone's. Inputs are validated identically by both implementations, and a call
//! that fails writes nothing.
//!
//! Adding a method: declare it on the trait, add it to the list in `forward.rs` (which
//! writes the impls that only pass calls on: `Arc<R>`, [`MeteredRepository`], the two
//! stores' dispatch to their per-aggregate files), then write it in `memory/` and
//! `postgres/queries/` under the same name; the shared input checks are in `checks.rs`.

pub(crate) mod checks;
mod forward;
mod memory;
mod metered;
pub mod postgres;

#[doc(hidden)]
pub use forward::__private;
pub use memory::InMemoryRepository;
pub use metered::MeteredRepository;
pub use postgres::{PgConfig, PgRepository};

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::domain::*;
use crate::error::Result;

/// All persistent data of the app. Object safe: hosts hold an `Arc<dyn Repository>`.
///
/// Lists are ordered newest first (`created_at`, then id, descending) unless a method
/// says otherwise.
#[async_trait]
pub trait Repository: Send + Sync + 'static {
    // ---- profiles ----

    /// Creates a profile. A user may create only their own, on the free tier.
    ///
    /// # Errors
    /// `InvalidInput`, `Forbidden`, `Conflict` (id or email, case-insensitive, taken).
    async fn create_profile(&self, actor: Actor, new: NewProfile) -> Result<Profile>;

    /// Reads a profile.
    ///
    /// # Errors
    /// `NotFound` when it does not exist or is another user's.
    async fn get_profile(&self, actor: Actor, id: UserId) -> Result<Profile>;

    /// Changes a profile. Only the service may change `subscription_tier`.
    ///
    /// # Errors
    /// `InvalidInput`, `Forbidden`, `NotFound`, `Conflict` (email taken).
    async fn update_profile(
        &self,
        actor: Actor,
        id: UserId,
        update: ProfileUpdate,
    ) -> Result<Profile>;

    // ---- assessments ----

    /// Starts an assessment.
    ///
    /// # Errors
    /// `InvalidInput` (also for a user without a profile), `Forbidden`.
    async fn create_assessment(&self, actor: Actor, new: NewAssessment) -> Result<Assessment>;

    /// Reads an assessment.
    ///
    /// # Errors
    /// `NotFound`.
    async fn get_assessment(&self, actor: Actor, id: AssessmentId) -> Result<Assessment>;

    /// Records answers, all or none; an answer to a question already answered
    /// replaces it. Returns the stored answers in input order.
    ///
    /// # Errors
    /// `InvalidInput` (also for an empty list, more than 200 answers or a completed
    /// assessment), `NotFound`.
    async fn answer_assessment(
        &self,
        actor: Actor,
        id: AssessmentId,
        answers: Vec<NewAnswer>,
    ) -> Result<Vec<AssessmentAnswer>>;

    /// The answers of an assessment, by question id.
    ///
    /// # Errors
    /// `NotFound`.
    async fn list_answers(&self, actor: Actor, id: AssessmentId) -> Result<Vec<AssessmentAnswer>>;

    /// Completes an assessment with its score (0–100) and insights.
    ///
    /// # Errors
    /// `InvalidInput` (also when already completed), `NotFound`.
    async fn complete_assessment(
        &self,
        actor: Actor,
        id: AssessmentId,
        score: i32,
        insights: Value,
    ) -> Result<Assessment>;

    /// A user's assessments matching `filter`.
    ///
    /// # Errors
    /// `InvalidInput`, `Forbidden` (another user's list).
    async fn list_assessments(
        &self,
        actor: Actor,
        user: UserId,
        filter: &AssessmentFilter,
        page: Page,
    ) -> Result<Vec<Assessment>>;

    // ---- practices (shared catalogue) ----

    /// Adds a practice to the catalogue (service only).
    ///
    /// # Errors
    /// `InvalidInput`, `Forbidden`.
    async fn create_practice(&self, actor: Actor, new: NewPractice) -> Result<Practice>;

    /// Reads a practice.
    ///
    /// # Errors
    /// `NotFound`.
    async fn get_practice(&self, actor: Actor, id: PracticeId) -> Result<Practice>;

    /// Full-text search over title, description and tags (English stemming), plus a
    /// case-insensitive substring match on the title. Title matches come first, then
    /// by title.
    ///
    /// # Errors
    /// `InvalidInput` for an empty or over-long (200 characters) query.
    async fn search_practices(
        &self,
        actor: Actor,
        query: &str,
        page: Page,
    ) -> Result<Vec<Practice>>;

    /// Practices matching `filter`, by title.
    ///
    /// # Errors
    /// `InvalidInput`.
    async fn list_practices(
        &self,
        actor: Actor,
        filter: &PracticeFilter,
        page: Page,
    ) -> Result<Vec<Practice>>;

    // ---- goals ----

    /// Creates a goal.
    ///
    /// # Errors
    /// `InvalidInput`, `Forbidden`.
    async fn create_goal(&self, actor: Actor, new: NewGoal) -> Result<Goal>;

    /// Reads a goal.
    ///
    /// # Errors
    /// `NotFound`.
    async fn get_goal(&self, actor: Actor, id: GoalId) -> Result<Goal>;

    /// Changes a goal's description fields.
    ///
    /// # Errors
    /// `InvalidInput`, `NotFound`.
    async fn update_goal(&self, actor: Actor, id: GoalId, update: GoalUpdate) -> Result<Goal>;

    /// Sets progress (0–100); 100 completes the goal, less re-opens it.
    ///
    /// # Errors
    /// `InvalidInput`, `NotFound`.
    async fn set_goal_progress(&self, actor: Actor, id: GoalId, progress: i32) -> Result<Goal>;

    /// Marks milestone `index` (0-based) done; a done one stays as it is.
    ///
    /// # Errors
    /// `InvalidInput` (no such milestone), `NotFound`.
    async fn complete_milestone(&self, actor: Actor, id: GoalId, index: usize) -> Result<Goal>;

    /// Deletes a goal; progress entries that referenced it keep their other references
    /// (a goal-only entry is deleted with it).
    ///
    /// # Errors
    /// `NotFound`.
    async fn delete_goal(&self, actor: Actor, id: GoalId) -> Result<()>;

    /// A user's goals.
    ///
    /// # Errors
    /// `InvalidInput`, `Forbidden`.
    async fn list_goals(&self, actor: Actor, user: UserId, page: Page) -> Result<Vec<Goal>>;

    // ---- progress ----

    /// Logs a progress entry; the goal and learning path it references must be the
    /// same user's, the practice must exist.
    ///
    /// # Errors
    /// `InvalidInput`, `Forbidden`.
    async fn log_progress(&self, actor: Actor, new: NewProgress) -> Result<ProgressEntry>;

    /// Reads one progress entry.
    ///
    /// # Errors
    /// `NotFound`.
    async fn get_progress_entry(&self, actor: Actor, id: ProgressId) -> Result<ProgressEntry>;

    /// A user's progress entries, optionally within a range.
    ///
    /// # Errors
    /// `InvalidInput`, `Forbidden`.
    async fn list_progress(
        &self,
        actor: Actor,
        user: UserId,
        range: Option<DateRange>,
        page: Page,
    ) -> Result<Vec<ProgressEntry>>;

    // ---- learning paths ----

    /// Creates a learning path over existing practices.
    ///
    /// # Errors
    /// `InvalidInput` (also for an unknown practice), `Forbidden`.
    async fn create_learning_path(
        &self,
        actor: Actor,
        new: NewLearningPath,
    ) -> Result<LearningPath>;

    /// Reads a learning path.
    ///
    /// # Errors
    /// `NotFound`.
    async fn get_learning_path(&self, actor: Actor, id: LearningPathId) -> Result<LearningPath>;

    /// A user's learning paths.
    ///
    /// # Errors
    /// `InvalidInput`, `Forbidden`.
    async fn list_learning_paths(
        &self,
        actor: Actor,
        user: UserId,
        page: Page,
    ) -> Result<Vec<LearningPath>>;

    /// Sets how many steps are done (0 to the number of practices); progress and
    /// completion follow.
    ///
    /// # Errors
    /// `InvalidInput`, `NotFound`.
    async fn advance_learning_path(
        &self,
        actor: Actor,
        id: LearningPathId,
        current_step: i32,
    ) -> Result<LearningPath>;

    // ---- notifications ----

    /// Creates a notification.
    ///
    /// # Errors
    /// `InvalidInput`, `Forbidden`.
    async fn create_notification(&self, actor: Actor, new: NewNotification)
    -> Result<Notification>;

    /// Reads one notification.
    ///
    /// # Errors
    /// `NotFound`.
    async fn get_notification(&self, actor: Actor, id: NotificationId) -> Result<Notification>;

    /// A user's unread notifications.
    ///
    /// # Errors
    /// `InvalidInput`, `Forbidden`.
    async fn list_unread_notifications(
        &self,
        actor: Actor,
        user: UserId,
        page: Page,
    ) -> Result<Vec<Notification>>;

    /// Marks notifications read; returns how many were unread and are now read.
    /// Ids of other users' notifications are ignored. At most 1,000 ids.
    ///
    /// # Errors
    /// `InvalidInput`, `Forbidden`.
    async fn mark_notifications_read(
        &self,
        actor: Actor,
        user: UserId,
        ids: &[NotificationId],
    ) -> Result<u64>;

    // ---- AI interactions ----

    /// Records one AI interaction.
    ///
    /// # Errors
    /// `InvalidInput`, `Forbidden`, `Conflict` (id already recorded).
    async fn record_interaction(
        &self,
        actor: Actor,
        new: NewAiInteraction,
    ) -> Result<AiInteraction>;

    /// Records a batch of AI interactions, all or none, in one round trip to the
    /// database. Returns how many were written. At most 10,000 per call.
    ///
    /// # Errors
    /// `InvalidInput` (naming the field, prefixed by the row index), `Forbidden`,
    /// `Conflict`.
    async fn record_interactions(&self, actor: Actor, batch: &[NewAiInteraction]) -> Result<u64>;

    /// A user's AI interactions.
    ///
    /// # Errors
    /// `InvalidInput`, `Forbidden`.
    async fn list_interactions(
        &self,
        actor: Actor,
        user: UserId,
        page: Page,
    ) -> Result<Vec<AiInteraction>>;

    // ---- conversations ----

    /// Starts a conversation of `new.user_id` with an agent kind.
    ///
    /// # Errors
    /// `InvalidInput` (also for a user without a profile), `Forbidden` (another
    /// user's).
    async fn create_conversation(&self, actor: Actor, new: NewConversation)
    -> Result<Conversation>;

    /// Reads a conversation.
    ///
    /// # Errors
    /// `NotFound` when it does not exist or is another user's.
    async fn get_conversation(&self, actor: Actor, id: ConversationId) -> Result<Conversation>;

    /// A user's `limit` (1–500) most recently active conversations: by `updated_at`,
    /// then id, descending.
    ///
    /// # Errors
    /// `InvalidInput`, `Forbidden` (another user's list).
    async fn list_conversations(
        &self,
        actor: Actor,
        user: UserId,
        limit: u32,
    ) -> Result<Vec<Conversation>>;

    /// Adds a message to a conversation (stored under the conversation's owner) and
    /// sets the conversation's `updated_at` to the message's time.
    ///
    /// # Errors
    /// `InvalidInput` (a system message, blank or over-long content), `NotFound`
    /// (no such conversation, or another user's).
    async fn add_message(
        &self,
        actor: Actor,
        new: NewConversationMessage,
    ) -> Result<ConversationMessage>;

    /// The last `limit` (1–500) messages of a conversation, returned **oldest first**
    /// (by `created_at`, then id, which increases with every message stored).
    ///
    /// # Errors
    /// `InvalidInput` (limit), `NotFound` (no such conversation, or another user's).
    async fn recent_messages(
        &self,
        actor: Actor,
        conversation: ConversationId,
        limit: u32,
    ) -> Result<Vec<ConversationMessage>>;

    // ---- analytics ----

    /// A user's statistics over `range` (default: the last 30 days).
    ///
    /// # Errors
    /// `InvalidInput`, `Forbidden`.
    async fn user_statistics(
        &self,
        actor: Actor,
        user: UserId,
        range: Option<DateRange>,
    ) -> Result<UserStatistics>;

    /// Up to `limit` (1–50) practices to suggest to a user.
    ///
    /// # Errors
    /// `InvalidInput`, `Forbidden`.
    async fn learning_recommendations(
        &self,
        actor: Actor,
        user: UserId,
        limit: u32,
    ) -> Result<Vec<Recommendation>>;

    /// AI cost over `range` (default: the last 30 days) for one user, or for all users
    /// (`None`, service only).
    ///
    /// # Errors
    /// `InvalidInput`, `Forbidden`.
    async fn ai_cost_analysis(
        &self,
        actor: Actor,
        user: Option<UserId>,
        range: Option<DateRange>,
    ) -> Result<CostAnalysis>;

    /// Figures about the whole system (service only).
    ///
    /// # Errors
    /// `Forbidden`.
    async fn system_health(&self, actor: Actor) -> Result<SystemHealth>;

    /// Erases every row of `user` — profile, assessments with their answers, goals,
    /// progress, learning paths, notifications, AI interactions, conversations with
    /// their messages, in every partition —
    /// in one transaction, and says how many rows of each went. Idempotent: a user
    /// with no data gives an all-zero report. The change feed reports the deleted
    /// rows of the tables it covers. Caches in front of the repository
    /// ([`CachedRepository`](crate::CachedRepository)) stop serving the user's values
    /// at once (a new generation) and drop them at their TTL (a shared Redis cache
    /// still holds them until then); the
    /// semantic cache is the host's to clear
    /// (`SemanticCache::forget_user`).
    ///
    /// # Errors
    /// `Forbidden` unless the service asks.
    async fn erase_user(&self, actor: Actor, user: UserId) -> Result<ErasureReport>;
}

fn _object_safe(_: &dyn Repository) {}

// An `Arc<R>` (or `Arc<dyn Repository>`) is itself a repository.
macro_rules! to_target {
    ($s:ident, $name:ident($($a:ident),*)) => {
        (**$s).$name($($a),*).await
    };
}
crate::__forward_repository!(impl[R: Repository + ?Sized] Arc<R> => to_target);

/// Most answers accepted in one [`Repository::answer_assessment`] call.
pub const MAX_ANSWERS_PER_CALL: usize = 200;
/// Most interactions accepted in one [`Repository::record_interactions`] call.
pub const MAX_INTERACTIONS_PER_BATCH: usize = 10_000;
/// Most ids accepted in one [`Repository::mark_notifications_read`] call.
pub const MAX_IDS_PER_CALL: usize = 1_000;
/// Largest `limit` of [`Repository::list_conversations`] and
/// [`Repository::recent_messages`].
pub const MAX_CONVERSATION_READ: u32 = 500;
