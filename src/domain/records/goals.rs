//! Goals and their milestones.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::*;
use crate::domain::validate as v;
use crate::error::{Error, Result};

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
