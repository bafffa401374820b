//! Practices: the shared catalogue of exercises.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::enums::DifficultyLevel;
use crate::domain::ids::*;
use crate::domain::validate as v;
use crate::error::{Error, Result};

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
