//! Analytics: the state's rows handed to the definitions in `domain::analytics`, which
//! PostgreSQL's SQL functions mirror.

use super::{InMemoryRepository, now};
use crate::domain::analytics;
use crate::domain::*;
use crate::error::Result;
use crate::repository::checks;

pub(super) fn user_statistics(
    repo: &InMemoryRepository,
    actor: Actor,
    user: UserId,
    range: Option<DateRange>,
) -> Result<UserStatistics> {
    checks::list_owner(actor, user)?;
    let r = checks::range(range)?;
    let s = repo.read();
    let entries = s.progress.get(&user).into_iter().flatten();
    Ok(analytics::user_statistics(user, &r, entries, |p| {
        s.category(p)
    }))
}

pub(super) fn learning_recommendations(
    repo: &InMemoryRepository,
    actor: Actor,
    user: UserId,
    limit: u32,
) -> Result<Vec<Recommendation>> {
    checks::list_owner(actor, user)?;
    checks::recommendation_limit(limit)?;
    let s = repo.read();
    let entries = s.progress.get(&user).into_iter().flatten();
    Ok(analytics::recommend(
        s.practices.values(),
        entries,
        |p| s.category(p),
        now(),
        limit,
    ))
}

pub(super) fn ai_cost_analysis(
    repo: &InMemoryRepository,
    actor: Actor,
    user: Option<UserId>,
    range: Option<DateRange>,
) -> Result<CostAnalysis> {
    match user {
        Some(u) => checks::list_owner(actor, u)?,
        None => actor.require_service("only the service may analyse every user's cost")?,
    }
    let r = checks::range(range)?;
    let s = repo.read();
    let rows = s
        .interactions
        .iter()
        .filter(|(u, _)| user.is_none_or(|x| x == **u))
        .flat_map(|(_, v)| v);
    Ok(analytics::cost_analysis(user, &r, rows))
}

pub(super) fn system_health(repo: &InMemoryRepository, actor: Actor) -> Result<SystemHealth> {
    actor.require_service("only the service may read system health")?;
    let s = repo.read();
    Ok(analytics::system_health(
        now(),
        s.profiles.len() as i64,
        s.progress.values().flatten(),
        s.interactions.values().flatten(),
        s.notifications.values().filter(|x| !x.read).count() as i64,
    ))
}
