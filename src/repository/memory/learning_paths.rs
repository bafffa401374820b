//! Learning paths.

use super::{InMemoryRepository, newest_first, not_found, now, page};
use crate::domain::*;
use crate::error::{Error, Result};
use crate::feed::{ChangeOp as Op, ChangeTable as T};
use crate::repository::checks;

pub(super) fn create_learning_path(
    repo: &InMemoryRepository,
    actor: Actor,
    new: NewLearningPath,
) -> Result<LearningPath> {
    new.validate()?;
    actor.check_write(new.user_id)?;
    let mut s = repo.write();
    s.require_profile(new.user_id)?;
    if new
        .practice_ids
        .iter()
        .any(|p| !s.practices.contains_key(p))
    {
        return Err(Error::invalid("practice_ids", "unknown practice"));
    }
    let t = now();
    let l = LearningPath {
        id: LearningPathId::new(),
        user_id: new.user_id,
        title: new.title,
        description: new.description,
        practice_ids: new.practice_ids,
        current_step: 0,
        progress: 0,
        completed: false,
        completed_at: None,
        created_at: t,
        updated_at: t,
    };
    s.paths.insert(l.id, l.clone());
    repo.emit(T::LearningPaths, Op::Insert, l.id.0, l.user_id);
    Ok(l)
}

pub(super) fn get_learning_path(
    repo: &InMemoryRepository,
    actor: Actor,
    id: LearningPathId,
) -> Result<LearningPath> {
    let s = repo.read();
    match s.paths.get(&id) {
        Some(l) if actor.may_access(l.user_id) => Ok(l.clone()),
        _ => Err(not_found("learning path")),
    }
}

pub(super) fn list_learning_paths(
    repo: &InMemoryRepository,
    actor: Actor,
    user: UserId,
    p: Page,
) -> Result<Vec<LearningPath>> {
    p.validate()?;
    checks::list_owner(actor, user)?;
    let s = repo.read();
    let mut v: Vec<LearningPath> = s
        .paths
        .values()
        .filter(|l| l.user_id == user)
        .cloned()
        .collect();
    newest_first(&mut v, |l| (l.created_at, l.id.0));
    Ok(page(v.into_iter(), p))
}

pub(super) fn advance_learning_path(
    repo: &InMemoryRepository,
    actor: Actor,
    id: LearningPathId,
    step: i32,
) -> Result<LearningPath> {
    checks::step(step)?;
    let mut s = repo.write();
    let l = s.path_mut(actor, id)?;
    let progress = checks::path_progress(step, l.practice_ids.len())?;
    let t = now();
    l.current_step = step;
    l.progress = progress;
    l.completed = step as usize == l.practice_ids.len();
    l.completed_at = if l.completed {
        l.completed_at.or(Some(t))
    } else {
        None
    };
    l.updated_at = t;
    let l = l.clone();
    repo.emit(T::LearningPaths, Op::Update, l.id.0, l.user_id);
    Ok(l)
}
