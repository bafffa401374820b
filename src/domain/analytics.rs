//! Results of the analytics calls. Both repositories compute them with the same
//! definitions, documented on each field, so they agree to the last digit
//! (floating-point fields to within rounding).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::enums::{AgentType, DifficultyLevel};
use super::ids::{PracticeId, UserId};

/// A user's activity over a date range (`[from, to)`, by `created_at` of progress entries).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserStatistics {
    /// Whose.
    pub user_id: UserId,
    /// Start of the range (inclusive).
    pub from: DateTime<Utc>,
    /// End of the range (exclusive).
    pub to: DateTime<Utc>,
    /// Progress entries in the range.
    pub total_sessions: i64,
    /// Completed entries that reference a practice.
    pub total_practices: i64,
    /// Completed entries ÷ entries; 0 when there are none.
    pub completion_rate: f64,
    /// Mean rating of rated entries.
    pub average_rating: Option<f64>,
    /// Sum of `duration_minutes`.
    pub session_minutes: i64,
    /// Consecutive UTC days with a completed entry, ending on the range's last day
    /// (or the day before it, so a streak is not lost before today's session).
    pub current_streak_days: i32,
    /// Longest run of consecutive UTC days with a completed entry in the range.
    pub longest_streak_days: i32,
    /// Up to three categories of completed practices, most frequent first (ties by name).
    pub top_categories: Vec<CategoryCount>,
    /// One point per ISO week (Monday start, UTC) that has entries, oldest first.
    pub weekly_trend: Vec<WeekPoint>,
    /// Mean of `mood_after - mood_before` over entries that have both.
    pub mood_improvement: Option<f64>,
    /// Completed entries per week of the range.
    pub learning_velocity: f64,
}

/// A category and how often it was practised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryCount {
    /// The category.
    pub category: String,
    /// Completed practice entries in it.
    pub count: i64,
}

/// One week of activity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeekPoint {
    /// The week's Monday (UTC).
    pub week_start: NaiveDate,
    /// Entries that week.
    pub sessions: i64,
    /// Completed entries that week.
    pub completed: i64,
    /// Minutes that week.
    pub minutes: i64,
}

/// A practice suggested to a user.
///
/// Scoring: practices the user completed in the last 30 days are left out; the rest
/// score 2 if their category is among the user's three most practised (all time) and
/// 1 more if their difficulty fits the user's level (beginner under 10 completed
/// practices, intermediate under 50, advanced from 50); ordered by score, then title.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// The practice.
    pub practice_id: PracticeId,
    /// Its title.
    pub title: String,
    /// Its category.
    pub category: String,
    /// Its difficulty.
    pub difficulty: DifficultyLevel,
    /// The score (0–3).
    pub score: i32,
    /// Why it was suggested, in words.
    pub reason: String,
}

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

/// Figures about the whole system (service only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SystemHealth {
    /// When measured.
    pub measured_at: DateTime<Utc>,
    /// Profiles stored.
    pub profiles: i64,
    /// Distinct users with a progress entry or AI interaction in the last 24 hours.
    pub active_users_24h: i64,
    /// AI interactions in the last hour.
    pub ai_requests_1h: i64,
    /// Failed ÷ all AI interactions in the last hour; 0 when there are none.
    pub ai_error_rate_1h: f64,
    /// Mean AI latency in the last hour, in milliseconds.
    pub ai_average_latency_ms_1h: Option<f64>,
    /// Unread notifications.
    pub unread_notifications: i64,
    /// The database's own figures; `None` for stores without a database.
    pub database: Option<DatabaseHealth>,
}

/// PostgreSQL's own figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatabaseHealth {
    /// Backends connected to this database.
    pub connections: i64,
    /// Size of the database in bytes.
    pub size_bytes: i64,
    /// Share of block reads served from shared buffers.
    pub buffer_hit_ratio: Option<f64>,
    /// Rows that sit in DEFAULT partitions (a partition is missing for them).
    pub default_partition_rows: i64,
    /// Partitions of `assessments` and `ai_interactions`, DEFAULT ones included.
    pub partitions: i64,
}
