//! Assessments (questionnaires) and their answers.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::ids::*;
use crate::domain::validate as v;
use crate::error::{Error, Result};

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
