//! Checks shared by both implementations, so they refuse the same inputs.

use serde_json::Value;

use super::{
    MAX_ANSWERS_PER_CALL, MAX_CONVERSATION_READ, MAX_IDS_PER_CALL, MAX_INTERACTIONS_PER_BATCH,
};
use crate::domain::*;
use crate::error::{Error, Result};

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

/// The `limit` of a conversation read: 1 to [`MAX_CONVERSATION_READ`].
pub(crate) fn conversation_limit(limit: u32) -> Result<()> {
    validate::range("limit", limit.into(), 1, MAX_CONVERSATION_READ.into())
}
