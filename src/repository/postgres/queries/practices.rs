//! The shared catalogue of practices, and its text search.

use uuid::Uuid;

use super::limit;
use crate::domain::*;
use crate::error::Result;
use crate::repository::checks;
use crate::repository::postgres::PgRepository;
use crate::repository::postgres::rows::*;

/// `%q%` for ILIKE, with the pattern characters of `q` escaped.
fn like_pattern(q: &str) -> String {
    let mut s = String::with_capacity(q.len() + 2);
    s.push('%');
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('%');
    s
}

pub(super) async fn create_practice(
    pg: &PgRepository,
    actor: Actor,
    new: NewPractice,
) -> Result<Practice> {
    new.validate()?;
    actor.require_service("only the service may add practices")?;
    let tags: Vec<String> = new.tags.iter().map(|t| t.to_lowercase()).collect();
    let sql = format!(
        "INSERT INTO practices (id, title, description, category, difficulty, tags, duration_minutes)
         VALUES ($1, $2, $3, $4, $5::text::difficulty_level, $6, $7) RETURNING {PRACTICE_COLS}"
    );
    let r = pg
        .scoped(
            actor,
            &sql,
            &[
                &Uuid::new_v4(),
                &new.title,
                &new.description,
                &new.category,
                &new.difficulty.as_str(),
                &tags,
                &new.duration_minutes,
            ],
        )
        .await?;
    one(&r, "practice", practice)
}

pub(super) async fn get_practice(
    pg: &PgRepository,
    actor: Actor,
    id: PracticeId,
) -> Result<Practice> {
    let sql = format!("SELECT {PRACTICE_COLS} FROM practices WHERE id = $1");
    let r = pg.scoped(actor, &sql, &[&id.0]).await?;
    one(&r, "practice", practice)
}

pub(super) async fn search_practices(
    pg: &PgRepository,
    actor: Actor,
    q: &str,
    p: Page,
) -> Result<Vec<Practice>> {
    p.validate()?;
    checks::search_query(q)?;
    let sql = format!(
        "SELECT {PRACTICE_COLS} FROM practices
         WHERE search_vector @@ websearch_to_tsquery('english', $1) OR title ILIKE $2
         ORDER BY (title ILIKE $2) DESC, title COLLATE \"C\", id LIMIT $3 OFFSET $4"
    );
    let (l, o) = limit(p);
    let r = pg
        .scoped(actor, &sql, &[&q, &like_pattern(q), &l, &o])
        .await?;
    all(&r, practice)
}

pub(super) async fn list_practices(
    pg: &PgRepository,
    actor: Actor,
    f: &PracticeFilter,
    p: Page,
) -> Result<Vec<Practice>> {
    p.validate()?;
    let sql = format!(
        "SELECT {PRACTICE_COLS} FROM practices
         WHERE ($1::text IS NULL OR category = $1)
           AND ($2::text IS NULL OR difficulty = $2::text::difficulty_level)
           AND ($3::text IS NULL OR tags @> ARRAY[lower($3)])
         ORDER BY title COLLATE \"C\", id LIMIT $4 OFFSET $5"
    );
    let (l, o) = limit(p);
    let r = pg
        .scoped(
            actor,
            &sql,
            &[
                &f.category,
                &f.difficulty.map(|d| d.as_str()),
                &f.tag,
                &l,
                &o,
            ],
        )
        .await?;
    all(&r, practice)
}
