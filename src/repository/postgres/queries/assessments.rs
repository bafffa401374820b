//! Assessments and their answers.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{limit, who};
use crate::domain::*;
use crate::error::{Error, Result};
use crate::repository::checks;
use crate::repository::postgres::rows::*;
use crate::repository::postgres::{PgRepository, db_err};

pub(super) async fn create_assessment(
    pg: &PgRepository,
    actor: Actor,
    new: NewAssessment,
) -> Result<Assessment> {
    new.validate()?;
    actor.check_write(new.user_id)?;
    let sql = format!(
        "INSERT INTO assessments (id, user_id, assessment_type, title, created_at)
         VALUES ($1, $2, $3, $4, coalesce($5, now())) RETURNING {ASSESSMENT_COLS}"
    );
    let r = pg
        .scoped(
            actor,
            &sql,
            &[
                &Uuid::new_v4(),
                &new.user_id.0,
                &new.assessment_type,
                &new.title,
                &new.created_at,
            ],
        )
        .await?;
    one(&r, "assessment", assessment)
}

pub(super) async fn get_assessment(
    pg: &PgRepository,
    actor: Actor,
    id: AssessmentId,
) -> Result<Assessment> {
    let sql = format!(
        "SELECT {ASSESSMENT_COLS} FROM assessments
         WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2)"
    );
    let r = pg.scoped(actor, &sql, &[&id.0, &who(actor)]).await?;
    one(&r, "assessment", assessment)
}

pub(super) async fn answer_assessment(
    pg: &PgRepository,
    actor: Actor,
    id: AssessmentId,
    answers: Vec<NewAnswer>,
) -> Result<Vec<AssessmentAnswer>> {
    checks::answers(&answers)?;
    let mut client = pg.client().await?;
    let tx = PgRepository::begin(&mut client, actor).await?;
    let lock = tx
        .prepare_cached(
            "SELECT user_id, created_at, completed FROM assessments
             WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2) FOR UPDATE",
        )
        .await
        .map_err(db_err)?;
    let Some(a) = tx
        .query_opt(&lock, &[&id.0, &who(actor)])
        .await
        .map_err(db_err)?
    else {
        return Err(Error::NotFound {
            entity: "assessment",
        });
    };
    let (user, created, completed): (Uuid, DateTime<Utc>, bool) = (a.get(0), a.get(1), a.get(2));
    if completed {
        return Err(Error::invalid("assessment", "already completed"));
    }
    let insert = tx
        .prepare_cached(&format!(
            "INSERT INTO assessment_answers (id, assessment_id, assessment_created_at, user_id, question_id, answer, score)
             SELECT t.id, $2, $3, $4, t.q, t.a, t.s
             FROM unnest($1::uuid[], $5::text[], $6::jsonb[], $7::int4[]) AS t(id, q, a, s)
             ON CONFLICT (assessment_id, question_id)
             DO UPDATE SET answer = excluded.answer, score = excluded.score, created_at = now()
             RETURNING {ANSWER_COLS}"
        ))
        .await
        .map_err(db_err)?;
    let ids: Vec<Uuid> = answers.iter().map(|_| Uuid::new_v4()).collect();
    let qs: Vec<&str> = answers.iter().map(|a| a.question_id.as_str()).collect();
    let vals: Vec<&Value> = answers.iter().map(|a| &a.answer).collect();
    let scores: Vec<Option<i32>> = answers.iter().map(|a| a.score).collect();
    let rows = tx
        .query(
            &insert,
            &[&ids, &id.0, &created, &user, &qs, &vals, &scores],
        )
        .await
        .map_err(db_err)?;
    let mut out = all(&rows, answer)?;
    tx.commit().await.map_err(db_err)?;
    out.sort_by_key(|a| qs.iter().position(|q| *q == a.question_id));
    Ok(out)
}

pub(super) async fn list_answers(
    pg: &PgRepository,
    actor: Actor,
    id: AssessmentId,
) -> Result<Vec<AssessmentAnswer>> {
    // One statement: the assessment's visibility and its answers together.
    let sql = format!(
        "SELECT * FROM (
            SELECT {ANSWER_COLS}, true AS found FROM assessment_answers
            WHERE assessment_id = $1 AND ($2::uuid IS NULL OR user_id = $2)
            UNION ALL
            SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, false
            WHERE NOT EXISTS (SELECT 1 FROM assessments
                              WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2))
         ) a ORDER BY question_id COLLATE \"C\""
    );
    let r = pg.scoped(actor, &sql, &[&id.0, &who(actor)]).await?;
    if r.first().is_some_and(|row| !row.get::<_, bool>(7)) {
        return Err(Error::NotFound {
            entity: "assessment",
        });
    }
    all(&r, answer)
}

pub(super) async fn complete_assessment(
    pg: &PgRepository,
    actor: Actor,
    id: AssessmentId,
    score: i32,
    insights: Value,
) -> Result<Assessment> {
    checks::complete_score(score, &insights)?;
    let sql = format!(
        "UPDATE assessments SET completed = true, completed_at = now(), score = $2, insights = $3
         WHERE id = $1 AND ($4::uuid IS NULL OR user_id = $4) AND NOT completed
         RETURNING {ASSESSMENT_COLS}"
    );
    let r = pg
        .scoped(actor, &sql, &[&id.0, &score, &insights, &who(actor)])
        .await?;
    if r.is_empty() {
        // Slow path, only on failure: tell "absent" from "already completed".
        let seen = pg
            .scoped(
                actor,
                "SELECT 1 FROM assessments WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2)",
                &[&id.0, &who(actor)],
            )
            .await?;
        if !seen.is_empty() {
            return Err(Error::invalid("assessment", "already completed"));
        }
    }
    one(&r, "assessment", assessment)
}

pub(super) async fn list_assessments(
    pg: &PgRepository,
    actor: Actor,
    user: UserId,
    f: &AssessmentFilter,
    p: Page,
) -> Result<Vec<Assessment>> {
    p.validate()?;
    checks::list_owner(actor, user)?;
    if let Some(t) = &f.assessment_type {
        crate::domain::assessment_type(t)?;
    }
    let sql = format!(
        "SELECT {ASSESSMENT_COLS} FROM assessments
         WHERE user_id = $1
           AND ($2::text IS NULL OR assessment_type = $2)
           AND ($3::bool IS NULL OR completed = $3)
           AND ($4::timestamptz IS NULL OR created_at >= $4)
           AND ($5::timestamptz IS NULL OR created_at < $5)
         ORDER BY created_at DESC, id DESC LIMIT $6 OFFSET $7"
    );
    let (l, o) = limit(p);
    let r = pg
        .scoped(
            actor,
            &sql,
            &[
                &user.0,
                &f.assessment_type,
                &f.completed,
                &f.from,
                &f.to,
                &l,
                &o,
            ],
        )
        .await?;
    all(&r, assessment)
}
