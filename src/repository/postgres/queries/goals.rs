//! Goals and their milestones.

use chrono::{SubsecRound, Utc};
use uuid::Uuid;

use super::{limit, who};
use crate::domain::*;
use crate::error::{Error, Result};
use crate::repository::checks;
use crate::repository::postgres::rows::*;
use crate::repository::postgres::{PgRepository, db_err};

pub(super) async fn create_goal(pg: &PgRepository, actor: Actor, new: NewGoal) -> Result<Goal> {
    new.validate()?;
    actor.check_write(new.user_id)?;
    let milestones: Vec<Milestone> = new
        .milestones
        .iter()
        .map(|t| Milestone {
            title: t.clone(),
            completed: false,
            completed_at: None,
        })
        .collect();
    let ms = serde_json::to_value(&milestones).expect("milestones serialise");
    let sql = format!(
        "INSERT INTO goals (id, user_id, title, description, category, target_date, milestones)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {GOAL_COLS}"
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
                &new.category,
                &new.target_date,
                &ms,
            ],
        )
        .await?;
    one(&r, "goal", goal)
}

pub(super) async fn get_goal(pg: &PgRepository, actor: Actor, id: GoalId) -> Result<Goal> {
    let sql = format!(
        "SELECT {GOAL_COLS} FROM goals WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2)"
    );
    let r = pg.scoped(actor, &sql, &[&id.0, &who(actor)]).await?;
    one(&r, "goal", goal)
}

pub(super) async fn update_goal(
    pg: &PgRepository,
    actor: Actor,
    id: GoalId,
    u: GoalUpdate,
) -> Result<Goal> {
    u.validate()?;
    let sql = format!(
        "UPDATE goals SET title = coalesce($2, title), description = coalesce($3, description),
            category = coalesce($4, category),
            target_date = CASE WHEN $5 THEN $6 ELSE target_date END
         WHERE id = $1 AND ($7::uuid IS NULL OR user_id = $7) RETURNING {GOAL_COLS}"
    );
    let set_date = u.target_date.is_some();
    let date = u.target_date.flatten();
    let r = pg
        .scoped(
            actor,
            &sql,
            &[
                &id.0,
                &u.title,
                &u.description,
                &u.category,
                &set_date,
                &date,
                &who(actor),
            ],
        )
        .await?;
    one(&r, "goal", goal)
}

pub(super) async fn set_goal_progress(
    pg: &PgRepository,
    actor: Actor,
    id: GoalId,
    progress: i32,
) -> Result<Goal> {
    validate::range("progress", progress.into(), 0, 100)?;
    let sql = format!(
        "UPDATE goals SET progress = $2, completed = ($2 = 100),
            completed_at = CASE WHEN $2 = 100 THEN coalesce(completed_at, now()) END
         WHERE id = $1 AND ($3::uuid IS NULL OR user_id = $3) RETURNING {GOAL_COLS}"
    );
    let r = pg
        .scoped(actor, &sql, &[&id.0, &progress, &who(actor)])
        .await?;
    one(&r, "goal", goal)
}

pub(super) async fn complete_milestone(
    pg: &PgRepository,
    actor: Actor,
    id: GoalId,
    index: usize,
) -> Result<Goal> {
    let mut client = pg.client().await?;
    let tx = PgRepository::begin(&mut client, actor).await?;
    let sel = tx
        .prepare_cached(&format!(
            "SELECT {GOAL_COLS} FROM goals
             WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2) FOR UPDATE"
        ))
        .await
        .map_err(db_err)?;
    let rows_ = tx
        .query(&sel, &[&id.0, &who(actor)])
        .await
        .map_err(db_err)?;
    let mut g = one(&rows_, "goal", goal)?;
    let len = g.milestones.len();
    let Some(m) = g.milestones.get_mut(index) else {
        return Err(Error::invalid(
            "milestone",
            format!("no milestone {index}; the goal has {len}"),
        ));
    };
    if m.completed {
        return Ok(g);
    }
    m.completed = true;
    m.completed_at = Some(Utc::now().trunc_subsecs(6));
    let ms = serde_json::to_value(&g.milestones).expect("milestones serialise");
    let upd = tx
        .prepare_cached(&format!(
            "UPDATE goals SET milestones = $2
             WHERE id = $1 AND ($3::uuid IS NULL OR user_id = $3) RETURNING {GOAL_COLS}"
        ))
        .await
        .map_err(db_err)?;
    let r = tx
        .query(&upd, &[&id.0, &ms, &who(actor)])
        .await
        .map_err(db_err)?;
    let g = one(&r, "goal", goal)?;
    tx.commit().await.map_err(db_err)?;
    Ok(g)
}

pub(super) async fn delete_goal(pg: &PgRepository, actor: Actor, id: GoalId) -> Result<()> {
    let sql = "WITH only_goal AS (
            DELETE FROM progress
            WHERE goal_id = $1 AND practice_id IS NULL AND learning_path_id IS NULL
              AND ($2::uuid IS NULL OR user_id = $2)
              AND EXISTS (SELECT 1 FROM goals WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2))
         )
         DELETE FROM goals WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2) RETURNING id";
    let r = pg.scoped(actor, sql, &[&id.0, &who(actor)]).await?;
    if r.is_empty() {
        return Err(Error::NotFound { entity: "goal" });
    }
    Ok(())
}

pub(super) async fn list_goals(
    pg: &PgRepository,
    actor: Actor,
    user: UserId,
    p: Page,
) -> Result<Vec<Goal>> {
    p.validate()?;
    checks::list_owner(actor, user)?;
    let sql = format!(
        "SELECT {GOAL_COLS} FROM goals WHERE user_id = $1
         ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
    );
    let (l, o) = limit(p);
    let r = pg.scoped(actor, &sql, &[&user.0, &l, &o]).await?;
    all(&r, goal)
}
