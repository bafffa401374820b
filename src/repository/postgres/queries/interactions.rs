//! AI interactions: a batch is one `INSERT … SELECT FROM unnest(…)` of column arrays.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::limit;
use crate::domain::*;
use crate::error::Result;
use crate::repository::checks;
use crate::repository::postgres::PgRepository;
use crate::repository::postgres::rows::*;

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

pub(super) async fn record_interaction(
    pg: &PgRepository,
    actor: Actor,
    new: NewAiInteraction,
) -> Result<AiInteraction> {
    let batch = std::slice::from_ref(&new);
    checks::interactions(actor, batch)?;
    let sql = format!("{INSERT_INTERACTIONS} RETURNING {INTERACTION_COLS}");
    let r = InteractionColumns::new(batch)
        .insert(pg, actor, &sql)
        .await?;
    one(&r, "interaction", interaction)
}

pub(super) async fn record_interactions(
    pg: &PgRepository,
    actor: Actor,
    batch: &[NewAiInteraction],
) -> Result<u64> {
    checks::interactions(actor, batch)?;
    if batch.is_empty() {
        return Ok(0);
    }
    let sql = format!("WITH ins AS ({INSERT_INTERACTIONS} RETURNING 1) SELECT count(*) FROM ins");
    let r = InteractionColumns::new(batch)
        .insert(pg, actor, &sql)
        .await?;
    Ok(r.first().map_or(0, |r| r.get::<_, i64>(0)) as u64)
}

pub(super) async fn list_interactions(
    pg: &PgRepository,
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
    let r = pg.scoped(actor, &sql, &[&user.0, &l, &o]).await?;
    all(&r, interaction)
}
