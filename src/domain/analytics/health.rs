//! [`SystemHealth`]: figures about the whole system.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::mean;
use crate::domain::{AiInteraction, ProgressEntry};

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

/// The system's figures at `now`, from every profile count, progress entry, AI
/// interaction and unread-notification count; `database` is left `None`.
pub(crate) fn system_health<'a>(
    now: DateTime<Utc>,
    profiles: i64,
    progress: impl IntoIterator<Item = &'a ProgressEntry>,
    interactions: impl IntoIterator<Item = &'a AiInteraction>,
    unread_notifications: i64,
) -> SystemHealth {
    let day = now - Duration::hours(24);
    let hour = now - Duration::hours(1);
    let mut active: BTreeSet<crate::domain::UserId> = progress
        .into_iter()
        .filter(|e| e.created_at >= day)
        .map(|e| e.user_id)
        .collect();
    let (mut n, mut failed, mut latency) = (0i64, 0i64, 0i64);
    for i in interactions {
        if i.created_at >= day {
            active.insert(i.user_id);
        }
        if i.created_at >= hour {
            n += 1;
            failed += i64::from(!i.success);
            latency += i64::from(i.latency_ms);
        }
    }
    SystemHealth {
        measured_at: now,
        profiles,
        active_users_24h: active.len() as i64,
        ai_requests_1h: n,
        ai_error_rate_1h: mean(failed, n).unwrap_or(0.0),
        ai_average_latency_ms_1h: mean(latency, n),
        unread_notifications,
        database: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgentType, InteractionId, ProgressId, UserId};

    fn entry(user: UserId, t: DateTime<Utc>) -> ProgressEntry {
        ProgressEntry {
            id: ProgressId::new(),
            user_id: user,
            practice_id: None,
            goal_id: None,
            learning_path_id: None,
            duration_minutes: 1,
            rating: None,
            mood_before: None,
            mood_after: None,
            notes: None,
            completed: false,
            completed_at: None,
            created_at: t,
        }
    }

    fn call(user: UserId, t: DateTime<Utc>, ok: bool, latency_ms: i32) -> AiInteraction {
        AiInteraction {
            id: InteractionId::new(),
            user_id: user,
            agent_type: AgentType::LearningCoach,
            model: "m".into(),
            input: serde_json::Value::Null,
            output: serde_json::Value::Null,
            input_tokens: 1,
            output_tokens: 1,
            cost_nanos: 1,
            saved_nanos: 0,
            latency_ms,
            cache_hit: false,
            success: ok,
            created_at: t,
        }
    }

    #[test]
    fn active_users_over_a_day_and_ai_figures_over_an_hour() {
        let now = Utc::now();
        let (a, b, c, d) = (UserId::new(), UserId::new(), UserId::new(), UserId::new());
        let progress = [
            entry(a, now - Duration::hours(2)),
            entry(a, now - Duration::hours(3)),
            entry(d, now - Duration::hours(25)), // too old to count
        ];
        let calls = [
            call(a, now - Duration::minutes(5), true, 100),
            call(b, now - Duration::minutes(30), false, 300),
            call(c, now - Duration::hours(5), true, 9_999), // active, not in the last hour
            call(d, now - Duration::hours(30), false, 1),
        ];
        let h = system_health(now, 7, &progress, &calls, 3);
        assert_eq!(h.measured_at, now);
        assert_eq!((h.profiles, h.unread_notifications), (7, 3));
        assert_eq!(h.active_users_24h, 3);
        assert_eq!(h.ai_requests_1h, 2);
        assert_eq!(h.ai_error_rate_1h, 0.5);
        assert_eq!(h.ai_average_latency_ms_1h, Some(200.0));
        assert_eq!(h.database, None);
        let quiet = system_health(now, 0, [], [], 0);
        assert_eq!(
            (quiet.ai_error_rate_1h, quiet.ai_average_latency_ms_1h),
            (0.0, None)
        );
    }
}
