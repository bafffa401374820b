//! Learning paths: ordered sequences of practices.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::*;
use crate::domain::validate as v;
use crate::error::{Error, Result};

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
