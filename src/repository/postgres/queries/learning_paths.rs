//! Learning paths.

use uuid::Uuid;

use super::{limit, who};
use crate::domain::*;
use crate::error::{Error, Result};
use crate::repository::checks;
use crate::repository::postgres::PgRepository;
use crate::repository::postgres::rows::*;

pub(super) async fn create_learning_path(
    pg: &PgRepository,
    actor: Actor,
    new: NewLearningPath,
) -> Result<LearningPath> {
    new.validate()?;
    actor.check_write(new.user_id)?;
    let ids: Vec<Uuid> = new.practice_ids.iter().map(|p| p.0).collect();
    let sql = format!(
        "INSERT INTO learning_paths (id, user_id, title, description, practice_ids)
         SELECT $1, $2, $3, $4, $5
         WHERE NOT EXISTS (
            SELECT 1 FROM unnest($5::uuid[]) AS x(id)
            WHERE NOT EXISTS (SELECT 1 FROM practices p WHERE p.id = x.id))
         RETURNING {PATH_COLS}"
    );
    let r = pg
        .scoped(
            actor,
            &sql,
            &[
                &Uuid::new_v4(),
                &new.user_id.0,
                &new.title,
                &new.description,
                &ids,
            ],
        )
        .await?;
    if r.is_empty() {
        return Err(Error::invalid("practice_ids", "unknown practice"));
    }
    one(&r, "learning path", path)
}

pub(super) async fn get_learning_path(
    pg: &PgRepository,
    actor: Actor,
    id: LearningPathId,
) -> Result<LearningPath> {
    let sql = format!(
        "SELECT {PATH_COLS} FROM learning_paths WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2)"
    );
    let r = pg.scoped(actor, &sql, &[&id.0, &who(actor)]).await?;
    one(&r, "learning path", path)
}

pub(super) async fn list_learning_paths(
    pg: &PgRepository,
    actor: Actor,
    user: UserId,
    p: Page,
) -> Result<Vec<LearningPath>> {
    p.validate()?;
    checks::list_owner(actor, user)?;
    let sql = format!(
        "SELECT {PATH_COLS} FROM learning_paths WHERE user_id = $1
         ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
    );
    let (l, o) = limit(p);
    let r = pg.scoped(actor, &sql, &[&user.0, &l, &o]).await?;
    all(&r, path)
}

pub(super) async fn advance_learning_path(
    pg: &PgRepository,
    actor: Actor,
    id: LearningPathId,
    step: i32,
) -> Result<LearningPath> {
    checks::step(step)?;
    let sql = format!(
        "UPDATE learning_paths SET current_step = $2,
            progress = $2 * 100 / cardinality(practice_ids),
            completed = ($2 = cardinality(practice_ids)),
            completed_at = CASE WHEN $2 = cardinality(practice_ids) THEN coalesce(completed_at, now()) END
         WHERE id = $1 AND ($3::uuid IS NULL OR user_id = $3) RETURNING {PATH_COLS}"
    );
    let r = pg.scoped(actor, &sql, &[&id.0, &step, &who(actor)]).await?;
    one(&r, "learning path", path)
}
