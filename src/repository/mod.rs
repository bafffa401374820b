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

mod memory;
mod metered;
pub mod postgres;

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
    /// progress, learning paths, notifications, AI interactions, in every partition —
    /// in one transaction, and says how many rows of each went. Idempotent: a user
    /// with no data gives an all-zero report. The change feed reports the deleted
    /// rows of the tables it covers. Caches in front of the repository
    /// ([`CachedRepository`](crate::CachedRepository)) forget the user too; the
    /// semantic cache is the host's to clear
    /// (`SemanticCache::forget_user`).
    ///
    /// # Errors
    /// `Forbidden` unless the service asks.
    async fn erase_user(&self, actor: Actor, user: UserId) -> Result<ErasureReport>;
}

fn _object_safe(_: &dyn Repository) {}

/// Blanket impl so an `Arc<R>` (or `Arc<dyn Repository>`) is itself a repository.
#[async_trait]
impl<R: Repository + ?Sized> Repository for Arc<R> {
    async fn create_profile(&self, a: Actor, n: NewProfile) -> Result<Profile> {
        (**self).create_profile(a, n).await
    }
    async fn get_profile(&self, a: Actor, id: UserId) -> Result<Profile> {
        (**self).get_profile(a, id).await
    }
    async fn update_profile(&self, a: Actor, id: UserId, u: ProfileUpdate) -> Result<Profile> {
        (**self).update_profile(a, id, u).await
    }
    async fn create_assessment(&self, a: Actor, n: NewAssessment) -> Result<Assessment> {
        (**self).create_assessment(a, n).await
    }
    async fn get_assessment(&self, a: Actor, id: AssessmentId) -> Result<Assessment> {
        (**self).get_assessment(a, id).await
    }
    async fn answer_assessment(
        &self,
        a: Actor,
        id: AssessmentId,
        n: Vec<NewAnswer>,
    ) -> Result<Vec<AssessmentAnswer>> {
        (**self).answer_assessment(a, id, n).await
    }
    async fn list_answers(&self, a: Actor, id: AssessmentId) -> Result<Vec<AssessmentAnswer>> {
        (**self).list_answers(a, id).await
    }
    async fn complete_assessment(
        &self,
        a: Actor,
        id: AssessmentId,
        score: i32,
        insights: Value,
    ) -> Result<Assessment> {
        (**self).complete_assessment(a, id, score, insights).await
    }
    async fn list_assessments(
        &self,
        a: Actor,
        u: UserId,
        f: &AssessmentFilter,
        p: Page,
    ) -> Result<Vec<Assessment>> {
        (**self).list_assessments(a, u, f, p).await
    }
    async fn create_practice(&self, a: Actor, n: NewPractice) -> Result<Practice> {
        (**self).create_practice(a, n).await
    }
    async fn get_practice(&self, a: Actor, id: PracticeId) -> Result<Practice> {
        (**self).get_practice(a, id).await
    }
    async fn search_practices(&self, a: Actor, q: &str, p: Page) -> Result<Vec<Practice>> {
        (**self).search_practices(a, q, p).await
    }
    async fn list_practices(&self, a: Actor, f: &PracticeFilter, p: Page) -> Result<Vec<Practice>> {
        (**self).list_practices(a, f, p).await
    }
    async fn create_goal(&self, a: Actor, n: NewGoal) -> Result<Goal> {
        (**self).create_goal(a, n).await
    }
    async fn get_goal(&self, a: Actor, id: GoalId) -> Result<Goal> {
        (**self).get_goal(a, id).await
    }
    async fn update_goal(&self, a: Actor, id: GoalId, u: GoalUpdate) -> Result<Goal> {
        (**self).update_goal(a, id, u).await
    }
    async fn set_goal_progress(&self, a: Actor, id: GoalId, p: i32) -> Result<Goal> {
        (**self).set_goal_progress(a, id, p).await
    }
    async fn complete_milestone(&self, a: Actor, id: GoalId, i: usize) -> Result<Goal> {
        (**self).complete_milestone(a, id, i).await
    }
    async fn delete_goal(&self, a: Actor, id: GoalId) -> Result<()> {
        (**self).delete_goal(a, id).await
    }
    async fn list_goals(&self, a: Actor, u: UserId, p: Page) -> Result<Vec<Goal>> {
        (**self).list_goals(a, u, p).await
    }
    async fn log_progress(&self, a: Actor, n: NewProgress) -> Result<ProgressEntry> {
        (**self).log_progress(a, n).await
    }
    async fn list_progress(
        &self,
        a: Actor,
        u: UserId,
        r: Option<DateRange>,
        p: Page,
    ) -> Result<Vec<ProgressEntry>> {
        (**self).list_progress(a, u, r, p).await
    }
    async fn get_progress_entry(&self, a: Actor, id: ProgressId) -> Result<ProgressEntry> {
        (**self).get_progress_entry(a, id).await
    }
    async fn get_notification(&self, a: Actor, id: NotificationId) -> Result<Notification> {
        (**self).get_notification(a, id).await
    }
    async fn create_learning_path(&self, a: Actor, n: NewLearningPath) -> Result<LearningPath> {
        (**self).create_learning_path(a, n).await
    }
    async fn get_learning_path(&self, a: Actor, id: LearningPathId) -> Result<LearningPath> {
        (**self).get_learning_path(a, id).await
    }
    async fn list_learning_paths(&self, a: Actor, u: UserId, p: Page) -> Result<Vec<LearningPath>> {
        (**self).list_learning_paths(a, u, p).await
    }
    async fn advance_learning_path(
        &self,
        a: Actor,
        id: LearningPathId,
        s: i32,
    ) -> Result<LearningPath> {
        (**self).advance_learning_path(a, id, s).await
    }
    async fn create_notification(&self, a: Actor, n: NewNotification) -> Result<Notification> {
        (**self).create_notification(a, n).await
    }
    async fn list_unread_notifications(
        &self,
        a: Actor,
        u: UserId,
        p: Page,
    ) -> Result<Vec<Notification>> {
        (**self).list_unread_notifications(a, u, p).await
    }
    async fn mark_notifications_read(
        &self,
        a: Actor,
        u: UserId,
        ids: &[NotificationId],
    ) -> Result<u64> {
        (**self).mark_notifications_read(a, u, ids).await
    }
    async fn record_interaction(&self, a: Actor, n: NewAiInteraction) -> Result<AiInteraction> {
        (**self).record_interaction(a, n).await
    }
    async fn record_interactions(&self, a: Actor, b: &[NewAiInteraction]) -> Result<u64> {
        (**self).record_interactions(a, b).await
    }
    async fn list_interactions(&self, a: Actor, u: UserId, p: Page) -> Result<Vec<AiInteraction>> {
        (**self).list_interactions(a, u, p).await
    }
    async fn user_statistics(
        &self,
        a: Actor,
        u: UserId,
        r: Option<DateRange>,
    ) -> Result<UserStatistics> {
        (**self).user_statistics(a, u, r).await
    }
    async fn learning_recommendations(
        &self,
        a: Actor,
        u: UserId,
        l: u32,
    ) -> Result<Vec<Recommendation>> {
        (**self).learning_recommendations(a, u, l).await
    }
    async fn ai_cost_analysis(
        &self,
        a: Actor,
        u: Option<UserId>,
        r: Option<DateRange>,
    ) -> Result<CostAnalysis> {
        (**self).ai_cost_analysis(a, u, r).await
    }
    async fn system_health(&self, a: Actor) -> Result<SystemHealth> {
        (**self).system_health(a).await
    }
    async fn erase_user(&self, a: Actor, u: UserId) -> Result<ErasureReport> {
        (**self).erase_user(a, u).await
    }
}

/// Most answers accepted in one [`Repository::answer_assessment`] call.
pub const MAX_ANSWERS_PER_CALL: usize = 200;
/// Most interactions accepted in one [`Repository::record_interactions`] call.
pub const MAX_INTERACTIONS_PER_BATCH: usize = 10_000;
/// Most ids accepted in one [`Repository::mark_notifications_read`] call.
pub const MAX_IDS_PER_CALL: usize = 1_000;

/// Checks shared by both implementations, so they refuse the same inputs.
pub(crate) mod checks {
    use super::*;
    use crate::error::Error;

    pub(crate) fn search_query(q: &str) -> Result<()> {
        if q.trim().is_empty() {
            return Err(Error::invalid("query", "must not be empty"));
        }
        validate::text("query", q, 200)
    }

    pub(crate) fn list_owner(actor: Actor, user: UserId) -> Result<()> {
        if actor.may_access(user) {
            Ok(())
        } else {
            Err(Error::forbidden("a user may only list their own data"))
        }
    }

    pub(crate) fn answers(answers: &[NewAnswer]) -> Result<()> {
        if answers.is_empty() || answers.len() > MAX_ANSWERS_PER_CALL {
            return Err(Error::invalid(
                "answers",
                format!(
                    "{} answers, 1 to {MAX_ANSWERS_PER_CALL} allowed",
                    answers.len()
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for a in answers {
            a.validate()?;
            if !seen.insert(a.question_id.as_str()) {
                return Err(Error::invalid(
                    "question_id",
                    format!("{:?} answered twice in one call", a.question_id),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn interactions(actor: Actor, batch: &[NewAiInteraction]) -> Result<()> {
        if batch.len() > MAX_INTERACTIONS_PER_BATCH {
            return Err(Error::invalid(
                "batch",
                format!("{} rows, at most {MAX_INTERACTIONS_PER_BATCH}", batch.len()),
            ));
        }
        for (i, n) in batch.iter().enumerate() {
            n.validate().map_err(|e| match e {
                Error::InvalidInput { field, reason } => Error::InvalidInput {
                    field: format!("[{i}].{field}").into(),
                    reason,
                },
                e => e,
            })?;
            actor.check_write(n.user_id)?;
        }
        Ok(())
    }

    pub(crate) fn complete_score(score: i32, insights: &Value) -> Result<()> {
        validate::range("score", score.into(), 0, 100)?;
        validate::json("insights", insights)
    }

    /// The range of an analytics call: the default when `None`, at PostgreSQL's
    /// microsecond precision, `from` before `to`.
    pub(crate) fn range(range: Option<DateRange>) -> Result<DateRange> {
        use chrono::SubsecRound;
        let r = DateRange::or_default(range);
        let r = DateRange {
            from: r.from.trunc_subsecs(6),
            to: r.to.trunc_subsecs(6),
        };
        r.validate()?;
        Ok(r)
    }

    /// A learning path's step must not be negative (the upper bound is the path's length).
    pub(crate) fn step(step: i32) -> Result<()> {
        validate::range("current_step", step.into(), 0, i32::MAX.into())
    }

    pub(crate) fn recommendation_limit(limit: u32) -> Result<()> {
        validate::range("limit", limit.into(), 1, 50)
    }

    pub(crate) fn note_ids(ids: &[NotificationId]) -> Result<()> {
        if ids.len() > MAX_IDS_PER_CALL {
            return Err(Error::invalid(
                "ids",
                format!("{} ids, at most {MAX_IDS_PER_CALL}", ids.len()),
            ));
        }
        Ok(())
    }

    /// Learning-path progress for `step` of `steps`.
    pub(crate) fn path_progress(step: i32, steps: usize) -> Result<i32> {
        validate::range("current_step", step.into(), 0, steps as i64)?;
        Ok((i64::from(step) * 100 / steps as i64) as i32)
    }

    /// The recommendation's reason, in words, from its score parts.
    pub(crate) fn recommendation_reason(
        top: bool,
        level: bool,
        category: &str,
        lvl: &str,
    ) -> String {
        match (top, level) {
            (true, true) => format!("in your favourite category {category}, at your {lvl} level"),
            (true, false) => format!("in your favourite category {category}"),
            (false, true) => format!("suits your {lvl} level"),
            (false, false) => "something new to try".to_string(),
        }
    }

    /// The user's level from their count of completed practices.
    pub(crate) fn level(completed: i64) -> DifficultyLevel {
        match completed {
            n if n < 10 => DifficultyLevel::Beginner,
            n if n < 50 => DifficultyLevel::Intermediate,
            _ => DifficultyLevel::Advanced,
        }
    }
}

/// The fixed cost-saving rules of [`CostAnalysis::recommendations`], shared by both
/// implementations so they word them identically. Percentages are whole numbers,
/// rounded down.
pub(crate) fn cost_recommendations(c: &CostAnalysis) -> Vec<String> {
    let mut out = Vec::new();
    if c.total_requests == 0 {
        return out;
    }
    let hit_pct = c.cache_hits * 100 / c.total_requests;
    if c.cache_hits * 100 < 70 * c.total_requests {
        out.push(format!(
            "Cache hit rate is {hit_pct}%, below the 70% target: widen the semantic cache's scope for non-personal agents or lower its threshold."
        ));
    }
    if let Some(top) = c.per_agent.first()
        && c.total_cost_nanos > 0
    {
        let share = i128::from(top.cost_nanos) * 100 / i128::from(c.total_cost_nanos);
        if i128::from(top.cost_nanos) * 2 > i128::from(c.total_cost_nanos) {
            out.push(format!(
                "{} accounts for {share}% of AI cost: consider a cheaper model or shorter prompts for it.",
                top.agent_type
            ));
        }
    }
    let failed = c.total_requests - c.successful_requests;
    let fail_pct = failed * 100 / c.total_requests;
    if failed * 100 > 5 * c.total_requests {
        out.push(format!(
            "{fail_pct}% of AI requests failed: check backend health and circuit breakers."
        ));
    }
    out
}
