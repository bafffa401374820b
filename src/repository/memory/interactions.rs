//! AI interactions, keyed by (id, created_at) as on the partitioned PostgreSQL table.

use std::collections::HashSet;

use super::{InMemoryRepository, State, micros, newest_first, now, page};
use crate::domain::*;
use crate::error::{Error, Result};
use crate::feed::{ChangeOp as Op, ChangeTable as T};
use crate::repository::checks;

pub(super) fn record_interaction(
    repo: &InMemoryRepository,
    actor: Actor,
    new: NewAiInteraction,
) -> Result<AiInteraction> {
    checks::interactions(actor, std::slice::from_ref(&new))?;
    let mut s = repo.write();
    let rows = insert_interactions(&mut s, std::slice::from_ref(&new))?;
    for r in &rows {
        repo.emit(T::AiInteractions, Op::Insert, r.id.0, r.user_id);
    }
    Ok(rows.into_iter().next().expect("one row in, one row out"))
}

pub(super) fn record_interactions(
    repo: &InMemoryRepository,
    actor: Actor,
    batch: &[NewAiInteraction],
) -> Result<u64> {
    checks::interactions(actor, batch)?;
    let mut s = repo.write();
    let rows = insert_interactions(&mut s, batch)?;
    for r in &rows {
        repo.emit(T::AiInteractions, Op::Insert, r.id.0, r.user_id);
    }
    Ok(rows.len() as u64)
}

pub(super) fn list_interactions(
    repo: &InMemoryRepository,
    actor: Actor,
    user: UserId,
    p: Page,
) -> Result<Vec<AiInteraction>> {
    p.validate()?;
    checks::list_owner(actor, user)?;
    let s = repo.read();
    let mut v: Vec<AiInteraction> = s
        .interactions
        .get(&user)
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    newest_first(&mut v, |i| (i.created_at, i.id.0));
    Ok(page(v.into_iter(), p))
}

fn insert_interactions(s: &mut State, batch: &[NewAiInteraction]) -> Result<Vec<AiInteraction>> {
    let t = now();
    let rows: Vec<AiInteraction> = batch
        .iter()
        .map(|n| AiInteraction {
            id: n.id.unwrap_or_default(),
            user_id: n.user_id,
            agent_type: n.agent_type,
            model: n.model.clone(),
            input: n.input.clone(),
            output: n.output.clone(),
            input_tokens: n.input_tokens,
            output_tokens: n.output_tokens,
            cost_nanos: n.cost_nanos,
            saved_nanos: n.saved_nanos,
            latency_ms: n.latency_ms,
            cache_hit: n.cache_hit,
            success: n.success,
            created_at: n.created_at.map_or(t, micros),
        })
        .collect();
    // Check everything first, so a refused batch writes nothing. The key is
    // (id, created_at), as on the partitioned PostgreSQL table.
    let mut seen = HashSet::new();
    for r in &rows {
        if !s.profiles.contains_key(&r.user_id) {
            return Err(Error::invalid("user_id", "no profile for this user"));
        }
        let key = (r.id, r.created_at);
        if s.interaction_keys.contains(&key) || !seen.insert(key) {
            return Err(Error::Conflict {
                what: "interaction id already recorded".into(),
            });
        }
    }
    for r in &rows {
        s.interaction_keys.insert((r.id, r.created_at));
        s.interactions.entry(r.user_id).or_default().push(r.clone());
    }
    Ok(rows)
}
