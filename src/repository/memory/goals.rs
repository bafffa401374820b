//! Goals and their milestones.

use super::{InMemoryRepository, newest_first, not_found, now, page};
use crate::domain::*;
use crate::error::{Error, Result};
use crate::feed::{ChangeOp as Op, ChangeTable as T};
use crate::repository::checks;

pub(super) fn create_goal(repo: &InMemoryRepository, actor: Actor, new: NewGoal) -> Result<Goal> {
    new.validate()?;
    actor.check_write(new.user_id)?;
    let mut s = repo.write();
    s.require_profile(new.user_id)?;
    let t = now();
    let g = Goal {
        id: GoalId::new(),
        user_id: new.user_id,
        title: new.title,
        description: new.description,
        category: new.category,
        target_date: new.target_date,
        progress: 0,
        completed: false,
        completed_at: None,
        milestones: new
            .milestones
            .into_iter()
            .map(|title| Milestone {
                title,
                completed: false,
                completed_at: None,
            })
            .collect(),
        created_at: t,
        updated_at: t,
    };
    s.goals.insert(g.id, g.clone());
    repo.emit(T::Goals, Op::Insert, g.id.0, g.user_id);
    Ok(g)
}

pub(super) fn get_goal(repo: &InMemoryRepository, actor: Actor, id: GoalId) -> Result<Goal> {
    let s = repo.read();
    match s.goals.get(&id) {
        Some(g) if actor.may_access(g.user_id) => Ok(g.clone()),
        _ => Err(not_found("goal")),
    }
}

pub(super) fn update_goal(
    repo: &InMemoryRepository,
    actor: Actor,
    id: GoalId,
    u: GoalUpdate,
) -> Result<Goal> {
    u.validate()?;
    let mut s = repo.write();
    let g = s.goal_mut(actor, id)?;
    if let Some(t) = u.title {
        g.title = t;
    }
    if let Some(d) = u.description {
        g.description = d;
    }
    if let Some(c) = u.category {
        g.category = c;
    }
    if let Some(td) = u.target_date {
        g.target_date = td;
    }
    g.updated_at = now();
    let g = g.clone();
    repo.emit(T::Goals, Op::Update, g.id.0, g.user_id);
    Ok(g)
}

pub(super) fn set_goal_progress(
    repo: &InMemoryRepository,
    actor: Actor,
    id: GoalId,
    progress: i32,
) -> Result<Goal> {
    validate::range("progress", progress.into(), 0, 100)?;
    let mut s = repo.write();
    let g = s.goal_mut(actor, id)?;
    let t = now();
    g.progress = progress;
    g.completed = progress == 100;
    g.completed_at = if g.completed {
        g.completed_at.or(Some(t))
    } else {
        None
    };
    g.updated_at = t;
    let g = g.clone();
    repo.emit(T::Goals, Op::Update, g.id.0, g.user_id);
    Ok(g)
}

pub(super) fn complete_milestone(
    repo: &InMemoryRepository,
    actor: Actor,
    id: GoalId,
    index: usize,
) -> Result<Goal> {
    let mut s = repo.write();
    let g = s.goal_mut(actor, id)?;
    let t = now();
    let Some(m) = g.milestones.get_mut(index) else {
        return Err(Error::invalid(
            "milestone",
            format!("no milestone {index}; the goal has {}", g.milestones.len()),
        ));
    };
    let changed = !m.completed;
    if changed {
        m.completed = true;
        m.completed_at = Some(t);
        g.updated_at = t;
    }
    let g = g.clone();
    if changed {
        repo.emit(T::Goals, Op::Update, g.id.0, g.user_id);
    }
    Ok(g)
}

pub(super) fn delete_goal(repo: &InMemoryRepository, actor: Actor, id: GoalId) -> Result<()> {
    let mut s = repo.write();
    let user = s.goal_mut(actor, id)?.user_id;
    s.goals.remove(&id);
    let (mut deleted, mut updated) = (Vec::new(), Vec::new());
    if let Some(v) = s.progress.get_mut(&user) {
        v.retain(|e| {
            let goal_only =
                e.goal_id == Some(id) && e.practice_id.is_none() && e.learning_path_id.is_none();
            if goal_only {
                deleted.push(e.id);
            }
            !goal_only
        });
        for e in v.iter_mut().filter(|e| e.goal_id == Some(id)) {
            e.goal_id = None;
            updated.push(e.id);
        }
    }
    for p in deleted {
        repo.emit(T::Progress, Op::Delete, p.0, user);
    }
    repo.emit(T::Goals, Op::Delete, id.0, user);
    for p in updated {
        repo.emit(T::Progress, Op::Update, p.0, user);
    }
    Ok(())
}

pub(super) fn list_goals(
    repo: &InMemoryRepository,
    actor: Actor,
    user: UserId,
    p: Page,
) -> Result<Vec<Goal>> {
    p.validate()?;
    checks::list_owner(actor, user)?;
    let s = repo.read();
    let mut v: Vec<Goal> = s
        .goals
        .values()
        .filter(|g| g.user_id == user)
        .cloned()
        .collect();
    newest_first(&mut v, |g| (g.created_at, g.id.0));
    Ok(page(v.into_iter(), p))
}
