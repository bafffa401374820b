//! Typed records (what the store returns) and their inputs (what callers send).
//!
//! Every input type has a `validate()` that the repositories call before writing;
//! callers may call it earlier to report errors sooner.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::enums::{AgentType, DifficultyLevel, NotificationType, PriorityLevel, SubscriptionTier};
use super::ids::*;
use super::validate as v;
use crate::error::{Error, Result};

/// A user's profile. Its id is the user's id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// The user.
    pub id: UserId,
    /// Email address, unique across users (case-insensitive).
    pub email: String,
    /// Name shown in the app.
    pub display_name: String,
    /// The user's plan.
    pub subscription_tier: SubscriptionTier,
    /// Free-form preferences.
    pub preferences: Value,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
}

/// Input for a new profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewProfile {
    /// The user's id, as assigned by the host's authentication.
    pub id: UserId,
    /// Email address.
    pub email: String,
    /// Name shown in the app.
    pub display_name: String,
    /// The user's plan. Only the service may create a non-free profile.
    pub subscription_tier: SubscriptionTier,
    /// Free-form preferences (at most 64 KiB of JSON).
    pub preferences: Value,
}

impl NewProfile {
    /// A free-tier profile with empty preferences.
    pub fn new(id: UserId, email: impl Into<String>, display_name: impl Into<String>) -> Self {
        Self {
            id,
            email: email.into(),
            display_name: display_name.into(),
            subscription_tier: SubscriptionTier::Free,
            preferences: Value::Object(Default::default()),
        }
    }

    /// # Errors
    /// [`Error::InvalidInput`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        v::email(&self.email)?;
        v::title("display_name", &self.display_name)?;
        v::json("preferences", &self.preferences)
    }
}

/// A change to a profile; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileUpdate {
    /// New email address.
    pub email: Option<String>,
    /// New display name.
    pub display_name: Option<String>,
    /// New plan (service only).
    pub subscription_tier: Option<SubscriptionTier>,
    /// New preferences (replaces the old document).
    pub preferences: Option<Value>,
}

impl ProfileUpdate {
    /// # Errors
    /// [`Error::InvalidInput`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        if let Some(e) = &self.email {
            v::email(e)?;
        }
        if let Some(n) = &self.display_name {
            v::title("display_name", n)?;
        }
        if let Some(p) = &self.preferences {
            v::json("preferences", p)?;
        }
        Ok(())
    }
}

/// An assessment a user takes (a questionnaire), stored in monthly partitions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// Its id.
    pub id: AssessmentId,
    /// Whose it is.
    pub user_id: UserId,
    /// Kind of assessment, e.g. `"attachment_style"`.
    pub assessment_type: String,
    /// Title shown to the user.
    pub title: String,
    /// Whether it is finished.
    pub completed: bool,
    /// When it was finished; set exactly when `completed`.
    pub completed_at: Option<DateTime<Utc>>,
    /// Overall score 0–100, once completed.
    pub score: Option<i32>,
    /// Insights produced on completion.
    pub insights: Value,
    /// When started (also its partition key).
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
}

/// Input for a new assessment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewAssessment {
    /// Whose it is.
    pub user_id: UserId,
    /// Kind: 1–64 characters of lowercase letters, digits and `_`.
    pub assessment_type: String,
    /// Title.
    pub title: String,
    /// When it was started; `None` means now. Set it to import history.
    pub created_at: Option<DateTime<Utc>>,
}

impl NewAssessment {
    /// # Errors
    /// [`Error::InvalidInput`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        assessment_type(&self.assessment_type)?;
        v::title("title", &self.title)
    }
}

pub(crate) fn assessment_type(t: &str) -> Result<()> {
    if t.is_empty()
        || t.len() > 64
        || !t
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(Error::invalid(
            "assessment_type",
            "must be 1 to 64 characters of a-z, 0-9 and _",
        ));
    }
    Ok(())
}

/// One answer to one question of an assessment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssessmentAnswer {
    /// Its id.
    pub id: AnswerId,
    /// The assessment answered.
    pub assessment_id: AssessmentId,
    /// Whose it is.
    pub user_id: UserId,
    /// The question's id within the assessment.
    pub question_id: String,
    /// The answer.
    pub answer: Value,
    /// The answer's score 0–100, if scored.
    pub score: Option<i32>,
    /// When given.
    pub created_at: DateTime<Utc>,
}

/// Input for an answer. Answering the same question again replaces the answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewAnswer {
    /// The question's id (1–100 characters).
    pub question_id: String,
    /// The answer (at most 64 KiB of JSON).
    pub answer: Value,
    /// The answer's score 0–100.
    pub score: Option<i32>,
}

impl NewAnswer {
    /// # Errors
    /// [`Error::InvalidInput`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        if self.question_id.is_empty() {
            return Err(Error::invalid("question_id", "must not be empty"));
        }
        v::text("question_id", &self.question_id, 100)?;
        v::json("answer", &self.answer)?;
        v::opt_range("score", self.score.map(i64::from), 0, 100)
    }
}

/// Filters for listing assessments; every `None` matches all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AssessmentFilter {
    /// Only this kind.
    pub assessment_type: Option<String>,
    /// Only completed (or only open) ones.
    pub completed: Option<bool>,
    /// Only those created at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Only those created before this time.
    pub to: Option<DateTime<Utc>>,
}

/// A practice (exercise) in the shared catalogue, readable by every user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Practice {
    /// Its id.
    pub id: PracticeId,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Category, e.g. `"communication"`.
    pub category: String,
    /// Difficulty.
    pub difficulty: DifficultyLevel,
    /// Tags (lowercase).
    pub tags: Vec<String>,
    /// Suggested length in minutes.
    pub duration_minutes: i32,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
}

/// Input for a new practice (service only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewPractice {
    /// Title.
    pub title: String,
    /// Description (at most 10,000 characters).
    pub description: String,
    /// Category (1–64 characters).
    pub category: String,
    /// Difficulty.
    pub difficulty: DifficultyLevel,
    /// Tags: at most 20, each 1–50 characters, stored lowercase.
    pub tags: Vec<String>,
    /// Suggested length, 1–600 minutes.
    pub duration_minutes: i32,
}

impl NewPractice {
    /// # Errors
    /// [`Error::InvalidInput`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        v::title("title", &self.title)?;
        v::text("description", &self.description, v::MAX_TEXT_CHARS)?;
        v::title("category", &self.category)?;
        v::text("category", &self.category, 64)?;
        if self.tags.len() > v::MAX_TAGS {
            return Err(Error::invalid(
                "tags",
                format!("{} tags, at most {} allowed", self.tags.len(), v::MAX_TAGS),
            ));
        }
        for t in &self.tags {
            if t.trim().is_empty() {
                return Err(Error::invalid("tags", "a tag must not be empty"));
            }
            v::text("tags", t, 50)?;
        }
        v::range("duration_minutes", self.duration_minutes.into(), 1, 600)
    }
}

/// Filters for listing practices; every `None` matches all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PracticeFilter {
    /// Only this category.
    pub category: Option<String>,
    /// Only this difficulty.
    pub difficulty: Option<DifficultyLevel>,
    /// Only practices carrying this tag (case-insensitive).
    pub tag: Option<String>,
}

/// A step towards a goal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Milestone {
    /// What the step is.
    pub title: String,
    /// Whether it is done.
    pub completed: bool,
    /// When it was done; set exactly when `completed`.
    pub completed_at: Option<DateTime<Utc>>,
}

/// A user's goal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Goal {
    /// Its id.
    pub id: GoalId,
    /// Whose it is.
    pub user_id: UserId,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Category.
    pub category: String,
    /// Target date, if any.
    pub target_date: Option<NaiveDate>,
    /// Progress 0–100.
    pub progress: i32,
    /// Whether reached (progress 100).
    pub completed: bool,
    /// When reached; set exactly when `completed`.
    pub completed_at: Option<DateTime<Utc>>,
    /// Steps towards it.
    pub milestones: Vec<Milestone>,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
}

/// Input for a new goal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewGoal {
    /// Whose it is.
    pub user_id: UserId,
    /// Title.
    pub title: String,
    /// Description (at most 10,000 characters).
    pub description: String,
    /// Category (1–64 characters).
    pub category: String,
    /// Target date.
    pub target_date: Option<NaiveDate>,
    /// Titles of the milestones, in order (at most 50).
    pub milestones: Vec<String>,
}

impl NewGoal {
    /// # Errors
    /// [`Error::InvalidInput`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        v::title("title", &self.title)?;
        v::text("description", &self.description, v::MAX_TEXT_CHARS)?;
        v::title("category", &self.category)?;
        v::text("category", &self.category, 64)?;
        milestone_titles(&self.milestones)
    }
}

fn milestone_titles(m: &[String]) -> Result<()> {
    if m.len() > v::MAX_MILESTONES {
        return Err(Error::invalid(
            "milestones",
            format!(
                "{} milestones, at most {} allowed",
                m.len(),
                v::MAX_MILESTONES
            ),
        ));
    }
    for t in m {
        v::title("milestones", t)?;
    }
    Ok(())
}

/// A change to a goal; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GoalUpdate {
    /// New title.
    pub title: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New category.
    pub category: Option<String>,
    /// New target date (`Some(None)` clears it).
    pub target_date: Option<Option<NaiveDate>>,
}

impl GoalUpdate {
    /// # Errors
    /// [`Error::InvalidInput`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = &self.title {
            v::title("title", t)?;
        }
        if let Some(d) = &self.description {
            v::text("description", d, v::MAX_TEXT_CHARS)?;
        }
        if let Some(c) = &self.category {
            v::title("category", c)?;
            v::text("category", c, 64)?;
        }
        Ok(())
    }
}

/// One entry of a user's progress log: a practice session, a step on a goal or path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgressEntry {
    /// Its id.
    pub id: ProgressId,
    /// Whose it is.
    pub user_id: UserId,
    /// The practice done, if any.
    pub practice_id: Option<PracticeId>,
    /// The goal worked on, if any.
    pub goal_id: Option<GoalId>,
    /// The learning path followed, if any.
    pub learning_path_id: Option<LearningPathId>,
    /// Minutes spent.
    pub duration_minutes: i32,
    /// The user's rating 1–5.
    pub rating: Option<i16>,
    /// Mood before, 1–10.
    pub mood_before: Option<i16>,
    /// Mood after, 1–10.
    pub mood_after: Option<i16>,
    /// Notes.
    pub notes: Option<String>,
    /// Whether the activity was finished.
    pub completed: bool,
    /// When finished; set exactly when `completed`.
    pub completed_at: Option<DateTime<Utc>>,
    /// When it happened.
    pub created_at: DateTime<Utc>,
}

/// Input for a progress entry. It must reference at least one activity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewProgress {
    /// Whose it is.
    pub user_id: UserId,
    /// The practice done.
    pub practice_id: Option<PracticeId>,
    /// The goal worked on (must be the same user's).
    pub goal_id: Option<GoalId>,
    /// The learning path followed (must be the same user's).
    pub learning_path_id: Option<LearningPathId>,
    /// Minutes spent, 0–1440.
    pub duration_minutes: i32,
    /// Rating 1–5.
    pub rating: Option<i16>,
    /// Mood before, 1–10.
    pub mood_before: Option<i16>,
    /// Mood after, 1–10.
    pub mood_after: Option<i16>,
    /// Notes (at most 10,000 characters).
    pub notes: Option<String>,
    /// Whether finished.
    pub completed: bool,
    /// When finished; required exactly when `completed`.
    pub completed_at: Option<DateTime<Utc>>,
    /// When it happened; `None` means now.
    pub created_at: Option<DateTime<Utc>>,
}

impl NewProgress {
    /// A completed practice session of `minutes`, finished now.
    pub fn practice(user_id: UserId, practice_id: PracticeId, minutes: i32) -> Self {
        Self {
            user_id,
            practice_id: Some(practice_id),
            goal_id: None,
            learning_path_id: None,
            duration_minutes: minutes,
            rating: None,
            mood_before: None,
            mood_after: None,
            notes: None,
            completed: true,
            completed_at: Some(Utc::now()),
            created_at: None,
        }
    }

    /// # Errors
    /// [`Error::InvalidInput`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        if self.practice_id.is_none() && self.goal_id.is_none() && self.learning_path_id.is_none() {
            return Err(Error::invalid(
                "activity",
                "a progress entry must reference a practice, goal or learning path",
            ));
        }
        v::range("duration_minutes", self.duration_minutes.into(), 0, 1440)?;
        v::opt_range("rating", self.rating.map(i64::from), 1, 5)?;
        v::opt_range("mood_before", self.mood_before.map(i64::from), 1, 10)?;
        v::opt_range("mood_after", self.mood_after.map(i64::from), 1, 10)?;
        if let Some(n) = &self.notes {
            v::text("notes", n, v::MAX_TEXT_CHARS)?;
        }
        v::completion(self.completed, self.completed_at)
    }
}

/// An ordered sequence of practices a user follows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LearningPath {
    /// Its id.
    pub id: LearningPathId,
    /// Whose it is.
    pub user_id: UserId,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// The practices, in order.
    pub practice_ids: Vec<PracticeId>,
    /// Steps done (0 to the number of practices).
    pub current_step: i32,
    /// Progress 0–100: `current_step * 100 / steps`, rounded down.
    pub progress: i32,
    /// Whether every step is done.
    pub completed: bool,
    /// When finished; set exactly when `completed`.
    pub completed_at: Option<DateTime<Utc>>,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
}

/// Input for a learning path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewLearningPath {
    /// Whose it is.
    pub user_id: UserId,
    /// Title.
    pub title: String,
    /// Description (at most 10,000 characters).
    pub description: String,
    /// The practices, in order: 1 to 100 of them, each existing in the catalogue.
    pub practice_ids: Vec<PracticeId>,
}

impl NewLearningPath {
    /// # Errors
    /// [`Error::InvalidInput`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        v::title("title", &self.title)?;
        v::text("description", &self.description, v::MAX_TEXT_CHARS)?;
        if self.practice_ids.is_empty() || self.practice_ids.len() > 100 {
            return Err(Error::invalid(
                "practice_ids",
                format!("{} practices, 1 to 100 allowed", self.practice_ids.len()),
            ));
        }
        Ok(())
    }
}

/// A notification for a user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Its id.
    pub id: NotificationId,
    /// Whom it is for.
    pub user_id: UserId,
    /// What it is about.
    pub kind: NotificationType,
    /// How urgent.
    pub priority: PriorityLevel,
    /// Title.
    pub title: String,
    /// Body text.
    pub body: String,
    /// Extra data for the client.
    pub data: Value,
    /// Whether read.
    pub read: bool,
    /// When read; set exactly when `read`.
    pub read_at: Option<DateTime<Utc>>,
    /// When created.
    pub created_at: DateTime<Utc>,
}

/// Input for a notification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewNotification {
    /// Whom it is for.
    pub user_id: UserId,
    /// What it is about.
    pub kind: NotificationType,
    /// How urgent.
    pub priority: PriorityLevel,
    /// Title.
    pub title: String,
    /// Body (at most 10,000 characters).
    pub body: String,
    /// Extra data (at most 64 KiB of JSON).
    pub data: Value,
}

impl NewNotification {
    /// # Errors
    /// [`Error::InvalidInput`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        v::title("title", &self.title)?;
        v::text("body", &self.body, v::MAX_TEXT_CHARS)?;
        v::json("data", &self.data)
    }
}

/// One recorded AI request and its answer, stored in weekly partitions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AiInteraction {
    /// Its id.
    pub id: InteractionId,
    /// Who asked.
    pub user_id: UserId,
    /// Which agent answered.
    pub agent_type: AgentType,
    /// Which model.
    pub model: String,
    /// The request.
    pub input: Value,
    /// The answer.
    pub output: Value,
    /// Input tokens billed.
    pub input_tokens: i32,
    /// Output tokens billed.
    pub output_tokens: i32,
    /// What it cost, in nano-dollars (1e-9 $) (exact).
    pub cost_nanos: i64,
    /// What a cache hit saved, in nano-dollars (1e-9 $).
    pub saved_nanos: i64,
    /// End-to-end latency in milliseconds.
    pub latency_ms: i32,
    /// Whether it was answered from a cache.
    pub cache_hit: bool,
    /// Whether it succeeded.
    pub success: bool,
    /// When it happened (also its partition key).
    pub created_at: DateTime<Utc>,
}

/// Input for recording an AI interaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewAiInteraction {
    /// Its id; `None` assigns a new one. Set it to make a retried write idempotent.
    pub id: Option<InteractionId>,
    /// Who asked.
    pub user_id: UserId,
    /// Which agent answered.
    pub agent_type: AgentType,
    /// Which model (1–100 characters).
    pub model: String,
    /// The request (at most 64 KiB of JSON).
    pub input: Value,
    /// The answer (at most 64 KiB of JSON).
    pub output: Value,
    /// Input tokens, ≥ 0.
    pub input_tokens: i32,
    /// Output tokens, ≥ 0.
    pub output_tokens: i32,
    /// Cost in nano-dollars (1e-9 $), ≥ 0.
    pub cost_nanos: i64,
    /// Saved by a cache hit, in nano-dollars (1e-9 $), ≥ 0.
    pub saved_nanos: i64,
    /// Latency in milliseconds, ≥ 0.
    pub latency_ms: i32,
    /// Whether answered from a cache.
    pub cache_hit: bool,
    /// Whether it succeeded.
    pub success: bool,
    /// When it happened; `None` means now.
    pub created_at: Option<DateTime<Utc>>,
}

impl NewAiInteraction {
    /// # Errors
    /// [`Error::InvalidInput`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        v::title("model", &self.model)?;
        v::text("model", &self.model, 100)?;
        v::json("input", &self.input)?;
        v::json("output", &self.output)?;
        v::range("input_tokens", self.input_tokens.into(), 0, i32::MAX.into())?;
        v::range(
            "output_tokens",
            self.output_tokens.into(),
            0,
            i32::MAX.into(),
        )?;
        v::range("cost_nanos", self.cost_nanos, 0, i64::MAX)?;
        v::range("saved_nanos", self.saved_nanos, 0, i64::MAX)?;
        v::range("latency_ms", self.latency_ms.into(), 0, i32::MAX.into())
    }
}

/// What [`Repository::erase_user`](crate::repository::Repository::erase_user) removed:
/// rows per table. All zero when the user had no data (erasing is idempotent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureReport {
    /// The profile (0 or 1).
    pub profiles: u64,
    /// Assessments.
    pub assessments: u64,
    /// Assessment answers.
    pub answers: u64,
    /// Goals.
    pub goals: u64,
    /// Progress entries.
    pub progress: u64,
    /// Learning paths.
    pub learning_paths: u64,
    /// Notifications.
    pub notifications: u64,
    /// AI interactions.
    pub ai_interactions: u64,
}

impl ErasureReport {
    /// Rows removed in all.
    pub fn total(&self) -> u64 {
        self.profiles
            + self.assessments
            + self.answers
            + self.goals
            + self.progress
            + self.learning_paths
            + self.notifications
            + self.ai_interactions
    }
}
