//! The progress log.

use super::{InMemoryRepository, micros, newest_first, not_found, now, page};
use crate::domain::*;
use crate::error::{Error, Result};
use crate::feed::{ChangeOp as Op, ChangeTable as T};
use crate::repository::checks;

pub(super) fn log_progress(
    repo: &InMemoryRepository,
    actor: Actor,
    new: NewProgress,
) -> Result<ProgressEntry> {
    new.validate()?;
    actor.check_write(new.user_id)?;
    let mut s = repo.write();
    s.require_profile(new.user_id)?;
    if let Some(p) = new.practice_id
        && !s.practices.contains_key(&p)
    {
        return Err(Error::invalid("practice_id", "no such practice"));
    }
    if let Some(g) = new.goal_id
        && s.goals.get(&g).is_none_or(|g| g.user_id != new.user_id)
    {
        return Err(Error::invalid("goal_id", "no such goal for this user"));
    }
    if let Some(l) = new.learning_path_id
        && s.paths.get(&l).is_none_or(|l| l.user_id != new.user_id)
    {
        return Err(Error::invalid(
            "learning_path_id",
            "no such learning path for this user",
        ));
    }
    let e = ProgressEntry {
        id: ProgressId::new(),
        user_id: new.user_id,
        practice_id: new.practice_id,
        goal_id: new.goal_id,
        learning_path_id: new.learning_path_id,
        duration_minutes: new.duration_minutes,
        rating: new.rating,
        mood_before: new.mood_before,
        mood_after: new.mood_after,
        notes: new.notes,
        completed: new.completed,
        completed_at: new.completed_at.map(micros),
        created_at: new.created_at.map_or_else(now, micros),
    };
    s.progress.entry(e.user_id).or_default().push(e.clone());
    repo.emit(T::Progress, Op::Insert, e.id.0, e.user_id);
    Ok(e)
}

pub(super) fn get_progress_entry(
    repo: &InMemoryRepository,
    actor: Actor,
    id: ProgressId,
) -> Result<ProgressEntry> {
    let s = repo.read();
    let found = match actor {
        Actor::User(u) => s
            .progress
            .get(&u)
            .and_then(|v| v.iter().find(|e| e.id == id)),
        Actor::Service => s.progress.values().flatten().find(|e| e.id == id),
    };
    found.cloned().ok_or_else(|| not_found("progress entry"))
}

pub(super) fn list_progress(
    repo: &InMemoryRepository,
    actor: Actor,
    user: UserId,
    range: Option<DateRange>,
    p: Page,
) -> Result<Vec<ProgressEntry>> {
    p.validate()?;
    checks::list_owner(actor, user)?;
    if let Some(r) = &range {
        r.validate()?;
    }
    let s = repo.read();
    let mut v: Vec<ProgressEntry> = s
        .progress
        .get(&user)
        .into_iter()
        .flatten()
        .filter(|e| range.is_none_or(|r| e.created_at >= r.from && e.created_at < r.to))
        .cloned()
        .collect();
    newest_first(&mut v, |e| (e.created_at, e.id.0));
    Ok(page(v.into_iter(), p))
}
