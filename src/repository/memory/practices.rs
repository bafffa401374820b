//! The shared catalogue of practices, and its text search.

use std::collections::BTreeSet;

use super::{InMemoryRepository, not_found, now, page};
use crate::domain::*;
use crate::error::Result;
use crate::repository::checks;
use crate::text::terms;

pub(super) fn create_practice(
    repo: &InMemoryRepository,
    actor: Actor,
    new: NewPractice,
) -> Result<Practice> {
    new.validate()?;
    actor.require_service("only the service may add practices")?;
    let t = now();
    let p = Practice {
        id: PracticeId::new(),
        title: new.title,
        description: new.description,
        category: new.category,
        difficulty: new.difficulty,
        tags: new.tags.iter().map(|t| t.to_lowercase()).collect(),
        duration_minutes: new.duration_minutes,
        created_at: t,
        updated_at: t,
    };
    repo.write().practices.insert(p.id, p.clone());
    Ok(p)
}

pub(super) fn get_practice(
    repo: &InMemoryRepository,
    _actor: Actor,
    id: PracticeId,
) -> Result<Practice> {
    repo.read()
        .practices
        .get(&id)
        .cloned()
        .ok_or_else(|| not_found("practice"))
}

pub(super) fn search_practices(
    repo: &InMemoryRepository,
    _actor: Actor,
    q: &str,
    p: Page,
) -> Result<Vec<Practice>> {
    p.validate()?;
    checks::search_query(q)?;
    let s = repo.read();
    let mut hits: Vec<(bool, &Practice)> = s
        .practices
        .values()
        .filter_map(|pr| text_match(pr, q).map(|title| (title, pr)))
        .collect();
    hits.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| a.1.title.cmp(&b.1.title))
            .then_with(|| a.1.id.cmp(&b.1.id))
    });
    Ok(page(hits.into_iter().map(|(_, p)| p.clone()), p))
}

pub(super) fn list_practices(
    repo: &InMemoryRepository,
    _actor: Actor,
    f: &PracticeFilter,
    p: Page,
) -> Result<Vec<Practice>> {
    p.validate()?;
    let tag = f.tag.as_ref().map(|t| t.to_lowercase());
    let s = repo.read();
    let mut v: Vec<Practice> = s
        .practices
        .values()
        .filter(|x| f.category.as_ref().is_none_or(|c| *c == x.category))
        .filter(|x| f.difficulty.is_none_or(|d| d == x.difficulty))
        .filter(|x| tag.as_ref().is_none_or(|t| x.tags.contains(t)))
        .cloned()
        .collect();
    v.sort_by(|a, b| a.title.cmp(&b.title).then_with(|| a.id.cmp(&b.id)));
    Ok(page(v.into_iter(), p))
}

/// Whether `p` matches `q`, and if so whether by its title: an approximation of
/// PostgreSQL's `english` text search configuration.
fn text_match(p: &Practice, q: &str) -> Option<bool> {
    let title_hit = p.title.to_lowercase().contains(&q.to_lowercase());
    let qt = terms(q);
    let doc: BTreeSet<String> = terms(&format!(
        "{} {} {}",
        p.title,
        p.description,
        p.tags.join(" ")
    ))
    .into_iter()
    .collect();
    let fts = !qt.is_empty() && qt.iter().all(|t| doc.contains(t));
    (title_hit || fts).then_some(title_hit)
}
