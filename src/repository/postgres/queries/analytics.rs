//! Analytics: the migrations' SQL functions, their JSON read back and finished with the shared definitions of `domain::analytics`.

use serde::Deserialize;

use crate::domain::analytics;
use crate::domain::*;
use crate::error::Result;
use crate::repository::checks;
use crate::repository::postgres::PgRepository;
use crate::repository::postgres::rows::{self};

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

pub(super) async fn user_statistics(
    pg: &PgRepository,
    actor: Actor,
    user: UserId,
    range: Option<DateRange>,
) -> Result<UserStatistics> {
    checks::list_owner(actor, user)?;
    let r = checks::range(range)?;
    let rows = pg
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

pub(super) async fn learning_recommendations(
    pg: &PgRepository,
    actor: Actor,
    user: UserId,
    limit: u32,
) -> Result<Vec<Recommendation>> {
    checks::list_owner(actor, user)?;
    checks::recommendation_limit(limit)?;
    let rows = pg
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
            reason: analytics::recommendation_reason(
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

pub(super) async fn ai_cost_analysis(
    pg: &PgRepository,
    actor: Actor,
    user: Option<UserId>,
    range: Option<DateRange>,
) -> Result<CostAnalysis> {
    match user {
        Some(u) => checks::list_owner(actor, u)?,
        None => actor.require_service("only the service may analyse every user's cost")?,
    }
    let r = checks::range(range)?;
    let rows = pg
        .scoped(
            actor,
            "SELECT get_ai_cost_analysis($1, $2, $3)",
            &[&user.map(|u| u.0), &r.from, &r.to],
        )
        .await?;
    let mut c: CostAnalysis = rows::from_json("cost analysis", rows[0].get(0))?;
    (c.from, c.to) = (r.from, r.to);
    c.recommendations = analytics::cost_recommendations(&c);
    Ok(c)
}

pub(super) async fn system_health(pg: &PgRepository, actor: Actor) -> Result<SystemHealth> {
    actor.require_service("only the service may read system health")?;
    let rows = pg
        .scoped(actor, "SELECT get_system_health_metrics()", &[])
        .await?;
    rows::from_json("system health", rows[0].get(0))
}
