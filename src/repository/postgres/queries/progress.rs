//! The progress log.

use uuid::Uuid;

use super::{limit, who};
use crate::domain::*;
use crate::error::Result;
use crate::repository::checks;
use crate::repository::postgres::PgRepository;
use crate::repository::postgres::rows::*;

pub(super) async fn log_progress(
    pg: &PgRepository,
    actor: Actor,
    new: NewProgress,
) -> Result<ProgressEntry> {
    new.validate()?;
    actor.check_write(new.user_id)?;
    let sql = format!(
        "INSERT INTO progress (id, user_id, practice_id, goal_id, learning_path_id, duration_minutes,
            rating, mood_before, mood_after, notes, completed, completed_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, coalesce($13, now()))
         RETURNING {PROGRESS_COLS}"
    );
    let r = pg
        .scoped(
            actor,
            &sql,
            &[
                &Uuid::new_v4(),
                &new.user_id.0,
                &new.practice_id.map(|x| x.0),
                &new.goal_id.map(|x| x.0),
                &new.learning_path_id.map(|x| x.0),
                &new.duration_minutes,
                &new.rating,
                &new.mood_before,
                &new.mood_after,
                &new.notes,
                &new.completed,
                &new.completed_at,
                &new.created_at,
            ],
        )
        .await?;
    one(&r, "progress entry", progress)
}

pub(super) async fn get_progress_entry(
    pg: &PgRepository,
    actor: Actor,
    id: ProgressId,
) -> Result<ProgressEntry> {
    let sql = format!(
        "SELECT {PROGRESS_COLS} FROM progress WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2)"
    );
    let r = pg.scoped(actor, &sql, &[&id.0, &who(actor)]).await?;
    one(&r, "progress entry", progress)
}

pub(super) async fn list_progress(
    pg: &PgRepository,
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
    let sql = format!(
        "SELECT {PROGRESS_COLS} FROM progress
         WHERE user_id = $1
           AND ($2::timestamptz IS NULL OR created_at >= $2)
           AND ($3::timestamptz IS NULL OR created_at < $3)
         ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5"
    );
    let (l, o) = limit(p);
    let (from, to) = (range.map(|r| r.from), range.map(|r| r.to));
    let r = pg
        .scoped(actor, &sql, &[&user.0, &from, &to, &l, &o])
        .await?;
    all(&r, progress)
}
