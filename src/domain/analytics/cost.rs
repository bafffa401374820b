//! [`CostAnalysis`]: AI spending over a range, and the rules that suggest how to spend
//! less.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::{mean, within};
use crate::domain::{AgentType, AiInteraction, DateRange, UserId};

/// AI spending over a date range, for one user or (service only) for everyone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostAnalysis {
    /// Whose, or `None` for all users.
    pub user_id: Option<UserId>,
    /// Start of the range (inclusive).
    pub from: DateTime<Utc>,
    /// End of the range (exclusive).
    pub to: DateTime<Utc>,
    /// Interactions recorded.
    pub total_requests: i64,
    /// Of which succeeded.
    pub successful_requests: i64,
    /// Of which were answered from a cache.
    pub cache_hits: i64,
    /// `cache_hits ÷ total_requests`; 0 when there are none.
    pub cache_hit_rate: f64,
    /// Total cost in nano-dollars (1e-9 $) (exact).
    pub total_cost_nanos: i64,
    /// What cache hits saved, in nano-dollars (1e-9 $).
    pub saved_nanos: i64,
    /// Input tokens billed.
    pub input_tokens: i64,
    /// Output tokens billed.
    pub output_tokens: i64,
    /// Mean latency in milliseconds.
    pub average_latency_ms: Option<f64>,
    /// One line per agent that was used, most expensive first (ties by name).
    pub per_agent: Vec<AgentCost>,
    /// One point per UTC day that has interactions, oldest first.
    pub daily_trend: Vec<DailyCost>,
    /// Suggestions to spend less, from fixed rules (cache hit rate under 70 %, one
    /// agent over half the cost, failure rate over 5 %).
    pub recommendations: Vec<String>,
}

/// One agent's share of the cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentCost {
    /// The agent.
    pub agent_type: AgentType,
    /// Interactions.
    pub requests: i64,
    /// Of which cache hits.
    pub cache_hits: i64,
    /// Cost in nano-dollars (1e-9 $).
    pub cost_nanos: i64,
    /// Mean latency in milliseconds.
    pub average_latency_ms: f64,
}

/// One day's AI cost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyCost {
    /// The UTC day.
    pub date: NaiveDate,
    /// Interactions.
    pub requests: i64,
    /// Cost in nano-dollars (1e-9 $).
    pub cost_nanos: i64,
}

/// The cost analysis of `interactions` over `range` (interactions outside it are
/// skipped), for `user` (`None`: the interactions are everyone's).
pub(crate) fn cost_analysis<'a>(
    user: Option<UserId>,
    range: &DateRange,
    interactions: impl IntoIterator<Item = &'a AiInteraction>,
) -> CostAnalysis {
    let rows: Vec<&AiInteraction> = interactions
        .into_iter()
        .filter(|i| within(i.created_at, range))
        .collect();
    let total = rows.len() as i64;
    let hits = rows.iter().filter(|i| i.cache_hit).count() as i64;
    // Per agent: requests, cache hits, cost, latency sum.
    let mut agents: BTreeMap<AgentType, (i64, i64, i64, i64)> = BTreeMap::new();
    // Per day: requests, cost.
    let mut days: BTreeMap<NaiveDate, (i64, i64)> = BTreeMap::new();
    for i in &rows {
        let a = agents.entry(i.agent_type).or_default();
        a.0 += 1;
        a.1 += i64::from(i.cache_hit);
        a.2 += i.cost_nanos;
        a.3 += i64::from(i.latency_ms);
        let d = days.entry(i.created_at.date_naive()).or_default();
        d.0 += 1;
        d.1 += i.cost_nanos;
    }
    let mut per_agent: Vec<AgentCost> = agents
        .into_iter()
        .map(|(agent_type, (n, h, c, l))| AgentCost {
            agent_type,
            requests: n,
            cache_hits: h,
            cost_nanos: c,
            average_latency_ms: l as f64 / n as f64,
        })
        .collect();
    per_agent.sort_by(|a, b| {
        b.cost_nanos
            .cmp(&a.cost_nanos)
            .then_with(|| a.agent_type.as_str().cmp(b.agent_type.as_str()))
    });
    let mut c = CostAnalysis {
        user_id: user,
        from: range.from,
        to: range.to,
        total_requests: total,
        successful_requests: rows.iter().filter(|i| i.success).count() as i64,
        cache_hits: hits,
        cache_hit_rate: mean(hits, total).unwrap_or(0.0),
        total_cost_nanos: rows.iter().map(|i| i.cost_nanos).sum(),
        saved_nanos: rows.iter().map(|i| i.saved_nanos).sum(),
        input_tokens: rows.iter().map(|i| i64::from(i.input_tokens)).sum(),
        output_tokens: rows.iter().map(|i| i64::from(i.output_tokens)).sum(),
        average_latency_ms: mean(rows.iter().map(|i| i64::from(i.latency_ms)).sum(), total),
        per_agent,
        daily_trend: days
            .into_iter()
            .map(|(date, (requests, cost_nanos))| DailyCost {
                date,
                requests,
                cost_nanos,
            })
            .collect(),
        recommendations: Vec::new(),
    };
    c.recommendations = cost_recommendations(&c);
    c
}

/// The fixed cost-saving rules of [`CostAnalysis::recommendations`], from the other
/// figures. Percentages are whole numbers, rounded down.
pub(crate) fn cost_recommendations(c: &CostAnalysis) -> Vec<String> {
    let mut out = Vec::new();
    if c.total_requests == 0 {
        return out;
    }
    let hit_pct = c.cache_hits * 100 / c.total_requests;
    if c.cache_hits * 100 < 70 * c.total_requests {
        out.push(format!(
            "Cache hit rate is {hit_pct}%, below the 70% target: widen the semantic cache's scope for non-personal agents or lower its threshold."
        ));
    }
    if let Some(top) = c.per_agent.first()
        && c.total_cost_nanos > 0
    {
        let share = i128::from(top.cost_nanos) * 100 / i128::from(c.total_cost_nanos);
        if i128::from(top.cost_nanos) * 2 > i128::from(c.total_cost_nanos) {
            out.push(format!(
                "{} accounts for {share}% of AI cost: consider a cheaper model or shorter prompts for it.",
                top.agent_type
            ));
        }
    }
    let failed = c.total_requests - c.successful_requests;
    let fail_pct = failed * 100 / c.total_requests;
    if failed * 100 > 5 * c.total_requests {
        out.push(format!(
            "{fail_pct}% of AI requests failed: check backend health and circuit breakers."
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::domain::InteractionId;

    fn at(d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 3, d, h, 0, 0).unwrap()
    }

    fn row(agent: AgentType, t: DateTime<Utc>, cost: i64, hit: bool, ok: bool) -> AiInteraction {
        AiInteraction {
            id: InteractionId::new(),
            user_id: UserId::new(),
            agent_type: agent,
            model: "m".into(),
            input: serde_json::Value::Null,
            output: serde_json::Value::Null,
            input_tokens: 10,
            output_tokens: 20,
            cost_nanos: cost,
            saved_nanos: i64::from(hit) * 7,
            latency_ms: 100,
            cache_hit: hit,
            success: ok,
            created_at: t,
        }
    }

    #[test]
    fn totals_per_agent_and_per_day_within_the_range() {
        use AgentType::*;
        let range = DateRange {
            from: at(1, 0),
            to: at(3, 0),
        };
        let mut slow = row(LearningCoach, at(2, 5), 300, false, false);
        slow.latency_ms = 400;
        let rows = [
            row(LearningCoach, at(1, 1), 500, false, true),
            row(ProgressTracker, at(1, 2), 100, true, true),
            slow,
            row(LearningCoach, at(3, 0), 1_000, false, true), // the end is excluded
            row(
                LearningCoach,
                at(1, 0) - Duration::microseconds(1),
                1,
                false,
                true,
            ),
        ];
        let c = cost_analysis(None, &range, &rows);
        assert_eq!((c.user_id, c.from, c.to), (None, range.from, range.to));
        assert_eq!(
            (c.total_requests, c.successful_requests, c.cache_hits),
            (3, 2, 1)
        );
        assert!((c.cache_hit_rate - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!((c.total_cost_nanos, c.saved_nanos), (900, 7));
        assert_eq!((c.input_tokens, c.output_tokens), (30, 60));
        assert_eq!(c.average_latency_ms, Some(200.0));
        let agents: Vec<(AgentType, i64, i64, i64, f64)> = c
            .per_agent
            .iter()
            .map(|a| {
                (
                    a.agent_type,
                    a.requests,
                    a.cache_hits,
                    a.cost_nanos,
                    a.average_latency_ms,
                )
            })
            .collect();
        assert_eq!(
            agents,
            [
                (LearningCoach, 2, 0, 800, 250.0),
                (ProgressTracker, 1, 1, 100, 100.0)
            ]
        );
        let days: Vec<(u32, i64, i64)> = c
            .daily_trend
            .iter()
            .map(|d| (chrono::Datelike::day(&d.date), d.requests, d.cost_nanos))
            .collect();
        assert_eq!(days, [(1, 2, 600), (2, 1, 300)]);
        assert_eq!(
            c.recommendations,
            [
                "Cache hit rate is 33%, below the 70% target: widen the semantic cache's scope for non-personal agents or lower its threshold.",
                "learning_coach accounts for 88% of AI cost: consider a cheaper model or shorter prompts for it.",
                "33% of AI requests failed: check backend health and circuit breakers.",
            ]
        );
    }

    #[test]
    fn healthy_spending_gets_no_advice_and_nothing_gives_zeros() {
        use AgentType::*;
        let range = DateRange {
            from: at(1, 0),
            to: at(2, 0),
        };
        let rows: Vec<AiInteraction> = [LearningCoach, ProgressTracker, InsightGenerator]
            .into_iter()
            .cycle()
            .take(20)
            .enumerate()
            .map(|(i, a)| row(a, at(1, 1), 10, i >= 2, true))
            .collect();
        let c = cost_analysis(Some(UserId::new()), &range, &rows);
        assert!(c.recommendations.is_empty(), "{:?}", c.recommendations);
        let none = cost_analysis(None, &range, []);
        assert_eq!((none.total_requests, none.cache_hit_rate), (0, 0.0));
        assert_eq!(none.average_latency_ms, None);
        assert!(none.recommendations.is_empty() && none.per_agent.is_empty());
    }

    #[test]
    fn thresholds_are_strict() {
        // Exactly 70 % hits, exactly half the cost, exactly 5 % failures: no advice.
        let mut c = cost_analysis(
            None,
            &DateRange {
                from: at(1, 0),
                to: at(2, 0),
            },
            [],
        );
        c.total_requests = 100;
        c.cache_hits = 70;
        c.successful_requests = 95;
        c.total_cost_nanos = 200;
        c.per_agent = vec![AgentCost {
            agent_type: AgentType::LearningCoach,
            requests: 50,
            cache_hits: 35,
            cost_nanos: 100,
            average_latency_ms: 1.0,
        }];
        assert!(cost_recommendations(&c).is_empty());
        c.cache_hits = 69;
        c.successful_requests = 94;
        c.per_agent[0].cost_nanos = 101;
        assert_eq!(cost_recommendations(&c).len(), 3);
    }
}
