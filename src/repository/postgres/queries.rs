//! `impl Repository for PgRepository`.

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::rows::{self, *};
use super::{PgRepository, db_err};
use crate::domain::*;
use crate::error::{Error, Result};
use crate::repository::{Repository, checks, cost_recommendations};

/// The acting user, or `None` for the service: every by-id statement also filters
/// `($n::uuid IS NULL OR user_id = $n)` with it, so users stay apart even where
/// row-level security does not apply (defence in depth; see `PgConfig::allow_rls_bypass`).
fn who(actor: Actor) -> Option<Uuid> {
    match actor {
        Actor::User(u) => Some(u.0),
        Actor::Service => None,
    }
}

fn limit(p: Page) -> (i64, i64) {
    (i64::from(p.limit), i64::from(p.offset))
}

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

const INSERT_INTERACTIONS: &str = "INSERT INTO ai_interactions (id, user_id, agent_type, model, input, output, input_tokens, output_tokens, cost_nanos, saved_nanos, latency_ms, cache_hit, success, created_at)
     SELECT t.id, t.user_id, t.agent::agent_type, t.model, t.input, t.output, t.tin, t.tout, t.cost, t.saved, t.lat, t.hit, t.ok, coalesce(t.ts, now())
     FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[], $7::int4[], $8::int4[], $9::int8[], $10::int8[], $11::int4[], $12::bool[], $13::bool[], $14::timestamptz[])
       AS t(id, user_id, agent, model, input, output, tin, tout, cost, saved, lat, hit, ok, ts)";

/// The column arrays of an interaction batch, in `INSERT_INTERACTIONS` order.
struct InteractionColumns {
    id: Vec<Uuid>,
    user_id: Vec<Uuid>,
    agent: Vec<&'static str>,
    model: Vec<String>,
    input: Vec<Value>,
    output: Vec<Value>,
    tin: Vec<i32>,
    tout: Vec<i32>,
    cost: Vec<i64>,
    saved: Vec<i64>,
    lat: Vec<i32>,
    hit: Vec<bool>,
    ok: Vec<bool>,
    ts: Vec<Option<DateTime<Utc>>>,
}

impl InteractionColumns {
    fn new(batch: &[NewAiInteraction]) -> Self {
        Self {
            id: batch.iter().map(|n| n.id.unwrap_or_default().0).collect(),
            user_id: batch.iter().map(|n| n.user_id.0).collect(),
            agent: batch.iter().map(|n| n.agent_type.as_str()).collect(),
            model: batch.iter().map(|n| n.model.clone()).collect(),
            input: batch.iter().map(|n| n.input.clone()).collect(),
            output: batch.iter().map(|n| n.output.clone()).collect(),
            tin: batch.iter().map(|n| n.input_tokens).collect(),
            tout: batch.iter().map(|n| n.output_tokens).collect(),
            cost: batch.iter().map(|n| n.cost_nanos).collect(),
            saved: batch.iter().map(|n| n.saved_nanos).collect(),
            lat: batch.iter().map(|n| n.latency_ms).collect(),
            hit: batch.iter().map(|n| n.cache_hit).collect(),
            ok: batch.iter().map(|n| n.success).collect(),
            ts: batch.iter().map(|n| n.created_at).collect(),
        }
    }

    async fn insert(
        &self,
        repo: &PgRepository,
        actor: Actor,
        sql: &str,
    ) -> Result<Vec<tokio_postgres::Row>> {
        repo.scoped(
            actor,
            sql,
            &[
                &self.id,
                &self.user_id,
                &self.agent,
                &self.model,
                &self.input,
                &self.output,
                &self.tin,
                &self.tout,
                &self.cost,
                &self.saved,
                &self.lat,
                &self.hit,
                &self.ok,
                &self.ts,
            ],
        )
        .await
    }
}

#[derive(Deserialize)]
struct RecRow {
    practice_id: PracticeId,
    title: String,
    category: String,
    difficulty: DifficultyLevel,
    score: i32,
    in_top: bool,
    fits: bool,
    level: DifficultyLevel,
}

#[async_trait]
impl Repository for PgRepository {
    async fn create_profile(&self, actor: Actor, new: NewProfile) -> Result<Profile> {
        new.validate()?;
        actor.check_write(new.id)?;
        if actor != Actor::Service && new.subscription_tier != SubscriptionTier::Free {
            return Err(Error::forbidden("only the service may set a paid tier"));
        }
        let sql = format!(
            "INSERT INTO profiles (id, email, display_name, subscription_tier, preferences)
             VALUES ($1, $2, $3, $4::text::subscription_tier, $5) RETURNING {PROFILE_COLS}"
        );
        let r = self
            .scoped(
                actor,
                &sql,
                &[
                    &new.id.0,
                    &new.email,
                    &new.display_name,
                    &new.subscription_tier.as_str(),
                    &new.preferences,
                ],
            )
            .await?;
        one(&r, "profile", profile)
    }

    async fn get_profile(&self, actor: Actor, id: UserId) -> Result<Profile> {
        let sql = format!(
            "SELECT {PROFILE_COLS} FROM profiles WHERE id = $1 AND ($2::uuid IS NULL OR id = $2)"
        );
        let r = self.scoped(actor, &sql, &[&id.0, &who(actor)]).await?;
        one(&r, "profile", profile)
    }

    async fn update_profile(&self, actor: Actor, id: UserId, u: ProfileUpdate) -> Result<Profile> {
        u.validate()?;
        if u.subscription_tier.is_some() {
            actor.require_service("only the service may change the subscription tier")?;
        }
        let sql = format!(
            "UPDATE profiles SET email = coalesce($2, email),
                display_name = coalesce($3, display_name),
                subscription_tier = coalesce($4::text::subscription_tier, subscription_tier),
                preferences = coalesce($5, preferences)
             WHERE id = $1 AND ($6::uuid IS NULL OR id = $6) RETURNING {PROFILE_COLS}"
        );
        let r = self
            .scoped(
                actor,
                &sql,
                &[
                    &id.0,
                    &u.email,
                    &u.display_name,
                    &u.subscription_tier.map(|t| t.as_str()),
                    &u.preferences,
                    &who(actor),
                ],
            )
            .await?;
        one(&r, "profile", profile)
    }

    async fn create_assessment(&self, actor: Actor, new: NewAssessment) -> Result<Assessment> {
        new.validate()?;
        actor.check_write(new.user_id)?;
        let sql = format!(
            "INSERT INTO assessments (id, user_id, assessment_type, title, created_at)
             VALUES ($1, $2, $3, $4, coalesce($5, now())) RETURNING {ASSESSMENT_COLS}"
        );
        let r = self
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

    async fn get_assessment(&self, actor: Actor, id: AssessmentId) -> Result<Assessment> {
        let sql = format!(
            "SELECT {ASSESSMENT_COLS} FROM assessments
             WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2)"
        );
        let r = self.scoped(actor, &sql, &[&id.0, &who(actor)]).await?;
        one(&r, "assessment", assessment)
    }

    async fn answer_assessment(
        &self,
        actor: Actor,
        id: AssessmentId,
        answers: Vec<NewAnswer>,
    ) -> Result<Vec<AssessmentAnswer>> {
        checks::answers(&answers)?;
        let mut client = self.client().await?;
        let tx = Self::begin(&mut client, actor).await?;
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
        let (user, created, completed): (Uuid, DateTime<Utc>, bool) =
            (a.get(0), a.get(1), a.get(2));
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

    async fn list_answers(&self, actor: Actor, id: AssessmentId) -> Result<Vec<AssessmentAnswer>> {
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
        let r = self.scoped(actor, &sql, &[&id.0, &who(actor)]).await?;
        if r.first().is_some_and(|row| !row.get::<_, bool>(7)) {
            return Err(Error::NotFound {
                entity: "assessment",
            });
        }
        all(&r, answer)
    }

    async fn complete_assessment(
        &self,
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
        let r = self
            .scoped(actor, &sql, &[&id.0, &score, &insights, &who(actor)])
            .await?;
        if r.is_empty() {
            // Slow path, only on failure: tell "absent" from "already completed".
            let seen = self
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

    async fn list_assessments(
        &self,
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
        let r = self
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

    async fn create_practice(&self, actor: Actor, new: NewPractice) -> Result<Practice> {
        new.validate()?;
        actor.require_service("only the service may add practices")?;
        let tags: Vec<String> = new.tags.iter().map(|t| t.to_lowercase()).collect();
        let sql = format!(
            "INSERT INTO practices (id, title, description, category, difficulty, tags, duration_minutes)
             VALUES ($1, $2, $3, $4, $5::text::difficulty_level, $6, $7) RETURNING {PRACTICE_COLS}"
        );
        let r = self
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

    async fn get_practice(&self, actor: Actor, id: PracticeId) -> Result<Practice> {
        let sql = format!("SELECT {PRACTICE_COLS} FROM practices WHERE id = $1");
        let r = self.scoped(actor, &sql, &[&id.0]).await?;
        one(&r, "practice", practice)
    }

    async fn search_practices(&self, actor: Actor, q: &str, p: Page) -> Result<Vec<Practice>> {
        p.validate()?;
        checks::search_query(q)?;
        let sql = format!(
            "SELECT {PRACTICE_COLS} FROM practices
             WHERE search_vector @@ websearch_to_tsquery('english', $1) OR title ILIKE $2
             ORDER BY (title ILIKE $2) DESC, title COLLATE \"C\", id LIMIT $3 OFFSET $4"
        );
        let (l, o) = limit(p);
        let r = self
            .scoped(actor, &sql, &[&q, &like_pattern(q), &l, &o])
            .await?;
        all(&r, practice)
    }

    async fn list_practices(
        &self,
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
        let r = self
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

    async fn create_goal(&self, actor: Actor, new: NewGoal) -> Result<Goal> {
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
        let r = self
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

    async fn get_goal(&self, actor: Actor, id: GoalId) -> Result<Goal> {
        let sql = format!(
            "SELECT {GOAL_COLS} FROM goals WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2)"
        );
        let r = self.scoped(actor, &sql, &[&id.0, &who(actor)]).await?;
        one(&r, "goal", goal)
    }

    async fn update_goal(&self, actor: Actor, id: GoalId, u: GoalUpdate) -> Result<Goal> {
        u.validate()?;
        let sql = format!(
            "UPDATE goals SET title = coalesce($2, title), description = coalesce($3, description),
                category = coalesce($4, category),
                target_date = CASE WHEN $5 THEN $6 ELSE target_date END
             WHERE id = $1 AND ($7::uuid IS NULL OR user_id = $7) RETURNING {GOAL_COLS}"
        );
        let set_date = u.target_date.is_some();
        let date = u.target_date.flatten();
        let r = self
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

    async fn set_goal_progress(&self, actor: Actor, id: GoalId, progress: i32) -> Result<Goal> {
        validate::range("progress", progress.into(), 0, 100)?;
        let sql = format!(
            "UPDATE goals SET progress = $2, completed = ($2 = 100),
                completed_at = CASE WHEN $2 = 100 THEN coalesce(completed_at, now()) END
             WHERE id = $1 AND ($3::uuid IS NULL OR user_id = $3) RETURNING {GOAL_COLS}"
        );
        let r = self
            .scoped(actor, &sql, &[&id.0, &progress, &who(actor)])
            .await?;
        one(&r, "goal", goal)
    }

    async fn complete_milestone(&self, actor: Actor, id: GoalId, index: usize) -> Result<Goal> {
        let mut client = self.client().await?;
        let tx = Self::begin(&mut client, actor).await?;
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

    async fn delete_goal(&self, actor: Actor, id: GoalId) -> Result<()> {
        let sql = "WITH only_goal AS (
                DELETE FROM progress
                WHERE goal_id = $1 AND practice_id IS NULL AND learning_path_id IS NULL
                  AND ($2::uuid IS NULL OR user_id = $2)
                  AND EXISTS (SELECT 1 FROM goals WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2))
             )
             DELETE FROM goals WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2) RETURNING id";
        let r = self.scoped(actor, sql, &[&id.0, &who(actor)]).await?;
        if r.is_empty() {
            return Err(Error::NotFound { entity: "goal" });
        }
        Ok(())
    }

    async fn list_goals(&self, actor: Actor, user: UserId, p: Page) -> Result<Vec<Goal>> {
        p.validate()?;
        checks::list_owner(actor, user)?;
        let sql = format!(
            "SELECT {GOAL_COLS} FROM goals WHERE user_id = $1
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        );
        let (l, o) = limit(p);
        let r = self.scoped(actor, &sql, &[&user.0, &l, &o]).await?;
        all(&r, goal)
    }

    async fn log_progress(&self, actor: Actor, new: NewProgress) -> Result<ProgressEntry> {
        new.validate()?;
        actor.check_write(new.user_id)?;
        let sql = format!(
            "INSERT INTO progress (id, user_id, practice_id, goal_id, learning_path_id, duration_minutes,
                rating, mood_before, mood_after, notes, completed, completed_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, coalesce($13, now()))
             RETURNING {PROGRESS_COLS}"
        );
        let r = self
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

    async fn list_progress(
        &self,
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
        let r = self
            .scoped(actor, &sql, &[&user.0, &from, &to, &l, &o])
            .await?;
        all(&r, progress)
    }

    async fn get_progress_entry(&self, actor: Actor, id: ProgressId) -> Result<ProgressEntry> {
        let sql = format!(
            "SELECT {PROGRESS_COLS} FROM progress WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2)"
        );
        let r = self.scoped(actor, &sql, &[&id.0, &who(actor)]).await?;
        one(&r, "progress entry", progress)
    }

    async fn get_notification(&self, actor: Actor, id: NotificationId) -> Result<Notification> {
        let sql = format!(
            "SELECT {NOTIFICATION_COLS} FROM notifications
             WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2)"
        );
        let r = self.scoped(actor, &sql, &[&id.0, &who(actor)]).await?;
        one(&r, "notification", notification)
    }

    async fn create_learning_path(
        &self,
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
        let r = self
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

    async fn get_learning_path(&self, actor: Actor, id: LearningPathId) -> Result<LearningPath> {
        let sql = format!(
            "SELECT {PATH_COLS} FROM learning_paths WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2)"
        );
        let r = self.scoped(actor, &sql, &[&id.0, &who(actor)]).await?;
        one(&r, "learning path", path)
    }

    async fn list_learning_paths(
        &self,
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
        let r = self.scoped(actor, &sql, &[&user.0, &l, &o]).await?;
        all(&r, path)
    }

    async fn advance_learning_path(
        &self,
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
        let r = self
            .scoped(actor, &sql, &[&id.0, &step, &who(actor)])
            .await?;
        one(&r, "learning path", path)
    }

    async fn create_notification(
        &self,
        actor: Actor,
        new: NewNotification,
    ) -> Result<Notification> {
        new.validate()?;
        actor.check_write(new.user_id)?;
        let sql = format!(
            "INSERT INTO notifications (id, user_id, kind, priority, title, body, data)
             VALUES ($1, $2, $3::text::notification_type, $4::text::priority_level, $5, $6, $7)
             RETURNING {NOTIFICATION_COLS}"
        );
        let r = self
            .scoped(
                actor,
                &sql,
                &[
                    &Uuid::new_v4(),
                    &new.user_id.0,
                    &new.kind.as_str(),
                    &new.priority.as_str(),
                    &new.title,
                    &new.body,
                    &new.data,
                ],
            )
            .await?;
        one(&r, "notification", notification)
    }

    async fn list_unread_notifications(
        &self,
        actor: Actor,
        user: UserId,
        p: Page,
    ) -> Result<Vec<Notification>> {
        p.validate()?;
        checks::list_owner(actor, user)?;
        let sql = format!(
            "SELECT {NOTIFICATION_COLS} FROM notifications WHERE user_id = $1 AND NOT read
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        );
        let (l, o) = limit(p);
        let r = self.scoped(actor, &sql, &[&user.0, &l, &o]).await?;
        all(&r, notification)
    }

    async fn mark_notifications_read(
        &self,
        actor: Actor,
        user: UserId,
        ids: &[NotificationId],
    ) -> Result<u64> {
        checks::note_ids(ids)?;
        actor.check_write(user)?;
        let ids: Vec<Uuid> = ids.iter().map(|i| i.0).collect();
        let r = self
            .scoped(
                actor,
                "UPDATE notifications SET read = true, read_at = now()
                 WHERE user_id = $1 AND id = ANY($2) AND NOT read RETURNING 1",
                &[&user.0, &ids],
            )
            .await?;
        Ok(r.len() as u64)
    }

    async fn record_interaction(
        &self,
        actor: Actor,
        new: NewAiInteraction,
    ) -> Result<AiInteraction> {
        let batch = std::slice::from_ref(&new);
        checks::interactions(actor, batch)?;
        let sql = format!("{INSERT_INTERACTIONS} RETURNING {INTERACTION_COLS}");
        let r = InteractionColumns::new(batch)
            .insert(self, actor, &sql)
            .await?;
        one(&r, "interaction", interaction)
    }

    async fn record_interactions(&self, actor: Actor, batch: &[NewAiInteraction]) -> Result<u64> {
        checks::interactions(actor, batch)?;
        if batch.is_empty() {
            return Ok(0);
        }
        let sql =
            format!("WITH ins AS ({INSERT_INTERACTIONS} RETURNING 1) SELECT count(*) FROM ins");
        let r = InteractionColumns::new(batch)
            .insert(self, actor, &sql)
            .await?;
        Ok(r.first().map_or(0, |r| r.get::<_, i64>(0)) as u64)
    }

    async fn list_interactions(
        &self,
        actor: Actor,
        user: UserId,
        p: Page,
    ) -> Result<Vec<AiInteraction>> {
        p.validate()?;
        checks::list_owner(actor, user)?;
        let sql = format!(
            "SELECT {INTERACTION_COLS} FROM ai_interactions WHERE user_id = $1
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        );
        let (l, o) = limit(p);
        let r = self.scoped(actor, &sql, &[&user.0, &l, &o]).await?;
        all(&r, interaction)
    }

    async fn user_statistics(
        &self,
        actor: Actor,
        user: UserId,
        range: Option<DateRange>,
    ) -> Result<UserStatistics> {
        checks::list_owner(actor, user)?;
        let r = checks::range(range)?;
        let rows = self
            .scoped(
                actor,
                "SELECT get_user_statistics($1, $2, $3)",
                &[&user.0, &r.from, &r.to],
            )
            .await?;
        let mut s: UserStatistics = rows::from_json("user statistics", rows[0].get(0))?;
        (s.from, s.to) = (r.from, r.to);
        Ok(s)
    }

    async fn learning_recommendations(
        &self,
        actor: Actor,
        user: UserId,
        limit: u32,
    ) -> Result<Vec<Recommendation>> {
        checks::list_owner(actor, user)?;
        checks::recommendation_limit(limit)?;
        let rows = self
            .scoped(
                actor,
                "SELECT get_learning_recommendations($1, $2)",
                &[&user.0, &(limit as i32)],
            )
            .await?;
        let recs: Vec<RecRow> = rows::from_json("recommendations", rows[0].get(0))?;
        Ok(recs
            .into_iter()
            .map(|r| Recommendation {
                reason: checks::recommendation_reason(
                    r.in_top,
                    r.fits,
                    &r.category,
                    r.level.as_str(),
                ),
                practice_id: r.practice_id,
                title: r.title,
                category: r.category,
                difficulty: r.difficulty,
                score: r.score,
            })
            .collect())
    }

    async fn ai_cost_analysis(
        &self,
        actor: Actor,
        user: Option<UserId>,
        range: Option<DateRange>,
    ) -> Result<CostAnalysis> {
        match user {
            Some(u) => checks::list_owner(actor, u)?,
            None => actor.require_service("only the service may analyse every user's cost")?,
        }
        let r = checks::range(range)?;
        let rows = self
            .scoped(
                actor,
                "SELECT get_ai_cost_analysis($1, $2, $3)",
                &[&user.map(|u| u.0), &r.from, &r.to],
            )
            .await?;
        let mut c: CostAnalysis = rows::from_json("cost analysis", rows[0].get(0))?;
        (c.from, c.to) = (r.from, r.to);
        c.recommendations = cost_recommendations(&c);
        Ok(c)
    }

    async fn system_health(&self, actor: Actor) -> Result<SystemHealth> {
        actor.require_service("only the service may read system health")?;
        let rows = self
            .scoped(actor, "SELECT get_system_health_metrics()", &[])
            .await?;
        rows::from_json("system health", rows[0].get(0))
    }

    async fn erase_user(&self, actor: Actor, user: UserId) -> Result<ErasureReport> {
        actor.require_service("only the service may erase a user")?;
        let mut client = self.client().await?;
        let tx = Self::begin(&mut client, actor).await?;
        // Locks in the order every writer and partition maintenance take them
        // (assessments, then answers), so erasing never deadlocks with a move; then the
        // profile row, so the user's concurrent writes (whose foreign-key checks share-lock
        // it) wait and then fail, and the counts below are every row that went.
        tx.batch_execute("LOCK TABLE assessments, assessment_answers IN ROW EXCLUSIVE MODE")
            .await
            .map_err(db_err)?;
        let lock = tx
            .prepare_cached("SELECT 1 FROM profiles WHERE id = $1 FOR UPDATE")
            .await
            .map_err(db_err)?;
        tx.execute(&lock, &[&user.0]).await.map_err(db_err)?;
        let mut counts = [0u64; 8];
        // Children first, so no ON DELETE action turns a delete into an update event.
        for (i, table) in [
            "assessment_answers",
            "assessments",
            "progress",
            "goals",
            "learning_paths",
            "notifications",
            "ai_interactions",
            "profiles",
        ]
        .iter()
        .enumerate()
        {
            let col = if *table == "profiles" {
                "id"
            } else {
                "user_id"
            };
            let stmt = tx
                .prepare_cached(&format!("DELETE FROM {table} WHERE {col} = $1"))
                .await
                .map_err(db_err)?;
            counts[i] = tx.execute(&stmt, &[&user.0]).await.map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        let [
            answers,
            assessments,
            progress,
            goals,
            learning_paths,
            notifications,
            ai_interactions,
            profiles,
        ] = counts;
        Ok(ErasureReport {
            profiles,
            assessments,
            answers,
            goals,
            progress,
            learning_paths,
            notifications,
            ai_interactions,
        })
    }
}
