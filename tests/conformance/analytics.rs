//! Analytics over the stored rows: user statistics, recommendations, AI cost
//! analysis and system health.

use chrono::{Duration, NaiveDate, Utc};
use kasama::prelude::*;
use serde_json::json;

use super::{Repo, S, at, entry, field, interaction, practice, user};

pub(super) async fn statistics(repo: Repo) {
    let a = user(&repo, 1).await;
    let ua = Actor::User(a);
    let comm = practice(
        &repo,
        "Active listening",
        "communication",
        DifficultyLevel::Beginner,
        &[],
    )
    .await;
    let mind = practice(
        &repo,
        "Breathing together",
        "mindfulness",
        DifficultyLevel::Beginner,
        &[],
    )
    .await;
    let conf = practice(
        &repo,
        "Calm conflict",
        "conflict",
        DifficultyLevel::Intermediate,
        &[],
    )
    .await;
    let log = |mut e: NewProgress, rating: Option<i16>, mood: Option<(i16, i16)>| {
        e.rating = rating;
        if let Some((b, a)) = mood {
            e.mood_before = Some(b);
            e.mood_after = Some(a);
        }
        e
    };
    let entries = [
        log(
            entry(a, comm.id, at(2026, 1, 5, 12), 10, true),
            Some(4),
            Some((4, 7)),
        ),
        log(
            entry(a, comm.id, at(2026, 1, 6, 12), 20, true),
            Some(5),
            Some((5, 6)),
        ),
        log(entry(a, mind.id, at(2026, 1, 7, 12), 15, true), None, None),
        log(
            entry(a, conf.id, at(2026, 1, 7, 18), 5, false),
            Some(2),
            None,
        ),
        log(
            entry(a, mind.id, at(2026, 1, 12, 12), 30, true),
            Some(3),
            Some((6, 5)),
        ),
        log(entry(a, conf.id, at(2026, 1, 30, 12), 10, true), None, None),
        log(entry(a, comm.id, at(2026, 1, 31, 12), 10, true), None, None),
        // Outside [Jan 1, Feb 1):
        log(
            entry(a, comm.id, at(2025, 12, 31, 12), 60, true),
            Some(1),
            None,
        ),
        log(
            entry(a, comm.id, at(2026, 2, 1, 0), 60, true),
            Some(1),
            None,
        ),
    ];
    for e in entries {
        repo.log_progress(ua, e).await.unwrap();
    }
    let jan = DateRange {
        from: at(2026, 1, 1, 0),
        to: at(2026, 2, 1, 0),
    };
    let s = repo.user_statistics(ua, a, Some(jan)).await.unwrap();
    assert_eq!((s.from, s.to), (jan.from, jan.to));
    assert_eq!(s.total_sessions, 7);
    assert_eq!(s.total_practices, 6);
    assert!(
        (s.completion_rate - 6.0 / 7.0).abs() < 1e-12,
        "{}",
        s.completion_rate
    );
    assert_eq!(s.average_rating, Some(3.5));
    assert_eq!(s.session_minutes, 100);
    assert_eq!(s.longest_streak_days, 3);
    assert_eq!(s.current_streak_days, 2);
    let cats: Vec<(&str, i64)> = s
        .top_categories
        .iter()
        .map(|c| (c.category.as_str(), c.count))
        .collect();
    assert_eq!(
        cats,
        [("communication", 3), ("mindfulness", 2), ("conflict", 1)]
    );
    let d = |m, d| NaiveDate::from_ymd_opt(2026, m, d).unwrap();
    assert_eq!(
        s.weekly_trend,
        vec![
            WeekPoint {
                week_start: d(1, 5),
                sessions: 4,
                completed: 3,
                minutes: 50
            },
            WeekPoint {
                week_start: d(1, 12),
                sessions: 1,
                completed: 1,
                minutes: 30
            },
            WeekPoint {
                week_start: d(1, 26),
                sessions: 2,
                completed: 2,
                minutes: 20
            },
        ]
    );
    assert_eq!(s.mood_improvement, Some(1.0));
    assert!(
        (s.learning_velocity - 6.0 * 7.0 / 31.0).abs() < 1e-9,
        "{}",
        s.learning_velocity
    );

    // The streak survives a last day without activity (the day before counts).
    let early = DateRange {
        from: at(2026, 1, 1, 0),
        to: at(2026, 1, 14, 0),
    };
    let s = repo.user_statistics(ua, a, Some(early)).await.unwrap();
    assert_eq!((s.current_streak_days, s.longest_streak_days), (1, 3));
    let later = DateRange {
        from: at(2026, 1, 1, 0),
        to: at(2026, 1, 15, 0),
    };
    assert_eq!(
        repo.user_statistics(ua, a, Some(later))
            .await
            .unwrap()
            .current_streak_days,
        0
    );

    // The default range is the last 30 days: nothing there.
    let s = repo.user_statistics(ua, a, None).await.unwrap();
    assert_eq!(
        (
            s.total_sessions,
            s.completion_rate,
            s.average_rating,
            s.learning_velocity
        ),
        (0, 0.0, None, 0.0)
    );
    assert!((s.to - s.from - Duration::days(30)).num_seconds().abs() <= 1);
    assert!(s.weekly_trend.is_empty() && s.top_categories.is_empty());
}

pub(super) async fn recommendations(repo: Repo) {
    let a = user(&repo, 1).await;
    let ua = Actor::User(a);
    let comm = practice(
        &repo,
        "Active listening",
        "communication",
        DifficultyLevel::Beginner,
        &[],
    )
    .await;
    let mind = practice(
        &repo,
        "Breathing together",
        "mindfulness",
        DifficultyLevel::Beginner,
        &[],
    )
    .await;
    let conf = practice(
        &repo,
        "Calm conflict",
        "conflict",
        DifficultyLevel::Intermediate,
        &[],
    )
    .await;
    let date = practice(
        &repo,
        "Date night",
        "intimacy",
        DifficultyLevel::Advanced,
        &[],
    )
    .await;
    let gift = practice(
        &repo,
        "Gratitude letters",
        "intimacy",
        DifficultyLevel::Beginner,
        &[],
    )
    .await;

    // No history: beginner level, no favourite category.
    let r = repo.learning_recommendations(ua, a, 2).await.unwrap();
    assert_eq!(
        r.iter()
            .map(|x| (x.practice_id, x.score))
            .collect::<Vec<_>>(),
        [(comm.id, 1), (mind.id, 1)]
    );
    assert_eq!(r[0].reason, "suits your beginner level");

    for (p, day) in [
        (comm.id, 1),
        (comm.id, 2),
        (comm.id, 3),
        (mind.id, 4),
        (mind.id, 5),
        (conf.id, 6),
    ] {
        repo.log_progress(ua, entry(a, p, at(2026, 1, day, 12), 10, true))
            .await
            .unwrap();
    }
    // Done within the last 30 days: left out.
    repo.log_progress(
        ua,
        entry(a, gift.id, Utc::now() - Duration::days(1), 10, true),
    )
    .await
    .unwrap();
    let r = repo.learning_recommendations(ua, a, 10).await.unwrap();
    let got: Vec<_> = r.iter().map(|x| (x.practice_id, x.score)).collect();
    assert_eq!(
        got,
        [(comm.id, 3), (mind.id, 3), (conf.id, 2), (date.id, 0)]
    );
    assert_eq!(
        r[0].reason,
        "in your favourite category communication, at your beginner level"
    );
    assert_eq!(r[2].reason, "in your favourite category conflict");
    assert_eq!(r[3].reason, "something new to try");
    assert_eq!(r[3].difficulty, DifficultyLevel::Advanced);
    assert_eq!(
        field(repo.learning_recommendations(ua, a, 0).await.unwrap_err()),
        "limit"
    );
}

pub(super) async fn cost_analysis(repo: Repo) {
    let a = user(&repo, 1).await;
    let b = user(&repo, 2).await;
    let ua = Actor::User(a);
    let d2 = Some(at(2026, 3, 2, 9));
    let d3 = Some(at(2026, 3, 3, 9));
    let mut rows = vec![
        interaction(a, AgentType::LearningCoach, 1000, d2),
        interaction(a, AgentType::LearningCoach, 0, d2),
        interaction(a, AgentType::InsightGenerator, 3000, d3),
        interaction(a, AgentType::CommunicationAdvisor, 1000, d3),
        interaction(b, AgentType::LearningCoach, 5000, d3),
    ];
    rows[1].cache_hit = true;
    rows[1].saved_nanos = 1000;
    rows[1].latency_ms = 10;
    rows[1].input_tokens = 0;
    rows[1].output_tokens = 0;
    rows[2].latency_ms = 300;
    rows[2].success = false;
    rows[2].input_tokens = 200;
    rows[2].output_tokens = 100;
    rows[3].latency_ms = 200;
    repo.record_interactions(S, &rows).await.unwrap();
    let march = Some(DateRange {
        from: at(2026, 3, 1, 0),
        to: at(2026, 4, 1, 0),
    });

    let c = repo.ai_cost_analysis(ua, Some(a), march).await.unwrap();
    assert_eq!(c.user_id, Some(a));
    assert_eq!(
        (c.total_requests, c.successful_requests, c.cache_hits),
        (4, 3, 1)
    );
    assert_eq!(c.cache_hit_rate, 0.25);
    assert_eq!((c.total_cost_nanos, c.saved_nanos), (5000, 1000));
    assert_eq!((c.input_tokens, c.output_tokens), (400, 200));
    assert_eq!(c.average_latency_ms, Some(152.5));
    let agents: Vec<_> = c
        .per_agent
        .iter()
        .map(|x| {
            (
                x.agent_type,
                x.requests,
                x.cache_hits,
                x.cost_nanos,
                x.average_latency_ms,
            )
        })
        .collect();
    assert_eq!(
        agents,
        [
            (AgentType::InsightGenerator, 1, 0, 3000, 300.0),
            (AgentType::CommunicationAdvisor, 1, 0, 1000, 200.0),
            (AgentType::LearningCoach, 2, 1, 1000, 55.0),
        ]
    );
    let day = |d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
    assert_eq!(
        c.daily_trend,
        vec![
            DailyCost {
                date: day(2),
                requests: 2,
                cost_nanos: 1000
            },
            DailyCost {
                date: day(3),
                requests: 2,
                cost_nanos: 4000
            },
        ]
    );
    assert_eq!(
        c.recommendations,
        [
            "Cache hit rate is 25%, below the 70% target: widen the semantic cache's scope for non-personal agents or lower its threshold.",
            "insight_generator accounts for 60% of AI cost: consider a cheaper model or shorter prompts for it.",
            "25% of AI requests failed: check backend health and circuit breakers.",
        ]
    );

    let all = repo.ai_cost_analysis(S, None, march).await.unwrap();
    assert_eq!(
        (all.user_id, all.total_requests, all.total_cost_nanos),
        (None, 5, 10000)
    );
    assert_eq!(all.per_agent[0].agent_type, AgentType::LearningCoach);
    assert_eq!(all.per_agent[0].cost_nanos, 6000);
    assert!(
        repo.ai_cost_analysis(ua, None, march)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert!(
        repo.ai_cost_analysis(ua, Some(b), march)
            .await
            .unwrap_err()
            .is_forbidden()
    );
    let empty = repo.ai_cost_analysis(ua, Some(a), None).await.unwrap();
    assert_eq!(
        (
            empty.total_requests,
            empty.average_latency_ms,
            empty.recommendations.len()
        ),
        (0, None, 0)
    );
}

pub(super) async fn system_health(repo: Repo) {
    let a = user(&repo, 1).await;
    let _b = user(&repo, 2).await;
    let mut failed = interaction(a, AgentType::LearningCoach, 10, None);
    failed.success = false;
    failed.latency_ms = 300;
    repo.record_interactions(
        S,
        &[interaction(a, AgentType::LearningCoach, 10, None), failed],
    )
    .await
    .unwrap();
    repo.record_interaction(
        S,
        interaction(
            a,
            AgentType::LearningCoach,
            10,
            Some(Utc::now() - Duration::hours(3)),
        ),
    )
    .await
    .unwrap();
    repo.create_notification(
        S,
        NewNotification {
            user_id: a,
            kind: NotificationType::System,
            priority: PriorityLevel::Low,
            title: "Hi".into(),
            body: String::new(),
            data: json!({}),
        },
    )
    .await
    .unwrap();
    let h = repo.system_health(S).await.unwrap();
    assert_eq!(h.profiles, 2);
    assert_eq!(h.active_users_24h, 1);
    assert_eq!(h.ai_requests_1h, 2);
    assert_eq!(h.ai_error_rate_1h, 0.5);
    assert_eq!(h.ai_average_latency_ms_1h, Some(200.0));
    assert_eq!(h.unread_notifications, 1);
    assert!(
        repo.system_health(Actor::User(a))
            .await
            .unwrap_err()
            .is_forbidden()
    );
}
