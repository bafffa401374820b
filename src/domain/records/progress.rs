//! The progress log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::*;
use crate::domain::validate as v;
use crate::error::{Error, Result};

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
