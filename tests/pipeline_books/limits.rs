//! Bounded and validated: the ledger forgets past days, settings that would misbehave
//! are refused naming the field, prices never wrap, and a global refusal uses up
//! nothing of the user's allowance.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use kasama::agent::{AiAgent, AiRequest, SimulatedAgent, Usage};
use kasama::pipeline::{
    AiPipeline, BatchConfig, Budgets, Ledger, Price, PriceTable, Quota, RateLimitConfig,
    RateLimits, RecorderConfig, RouterConfig,
};
use kasama::prelude::*;

use super::{Mode, Scripted, cost};
use crate::common::pipeline::{PRICE, builder, memory, users};

// ---- bounded and validated ----

#[test]
fn the_ledger_forgets_past_days_over_a_month_of_100000_users() {
    let day = Arc::new(AtomicU64::new(0));
    let d = day.clone();
    let start = chrono::NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
    let ledger = Ledger::with_clock(Budgets::unlimited(), move || {
        start + chrono::Days::new(d.load(SeqCst))
    });
    let users: Vec<UserId> = (0..100_000).map(|_| UserId::new()).collect();
    // A third of the users are active each day.
    let active = |t: u64| users.iter().skip((t % 3) as usize).step_by(3);
    for today in 0..30u64 {
        day.store(today, SeqCst);
        for u in active(today) {
            let r = ledger.reserve(*u, SubscriptionTier::Free, 1_000).unwrap();
            ledger.settle(r, AgentType::LearningCoach, 7);
        }
        // Today's and yesterday's lines and per-user totals, two global days and two
        // (empty) global reservation days: nothing older.
        let days = if today == 0 {
            vec![0]
        } else {
            vec![today - 1, today]
        };
        let held: usize = days.iter().map(|&t| 2 * active(t).count() + 2).sum();
        // And this month's totals (the month began on day 0): one per user active in
        // it so far, and the global month's spent and held.
        let month: usize = (0..=today.min(2)).map(|t| active(t).count()).sum::<usize>() + 2;
        assert_eq!(ledger.tracked(), held + month, "day {today}");
    }
    let total = ledger.total();
    let expected: u64 = (0..30u64).map(|t| active(t).count() as u64).sum();
    assert_eq!((total.requests, total.cost_nanos), (expected, 7 * expected));
    let yesterday = start + chrono::Days::new(28);
    let old = start + chrono::Days::new(27);
    let someone = users[(28 % 3) as usize];
    assert_eq!(
        ledger
            .line(someone, AgentType::LearningCoach, yesterday)
            .cost_nanos,
        7
    );
    let someone_older = users[(27 % 3) as usize];
    assert_eq!(
        ledger
            .line(someone_older, AgentType::LearningCoach, old)
            .requests,
        0
    );
}

#[tokio::test(start_paused = true)]
async fn settings_that_would_misbehave_are_refused_naming_the_field() {
    let repo = memory();
    let a = || Arc::new(SimulatedAgent::instant("a")) as Arc<dyn AiAgent>;
    let field = |r: kasama::Result<AiPipeline>| match r {
        Err(Error::InvalidInput { field, .. }) => field.to_string(),
        other => panic!("accepted: {other:?}"),
    };
    let routing = |f: fn(&mut RouterConfig)| {
        let mut c = RouterConfig::default();
        f(&mut c);
        AiPipeline::builder(repo.clone())
            .backend(a())
            .routing(c)
            .build()
    };
    assert_eq!(
        field(routing(|c| c.ewma_decay = Duration::ZERO)),
        "routing.ewma_decay"
    );
    assert_eq!(
        field(routing(|c| c.deadline = Duration::ZERO)),
        "routing.deadline"
    );
    assert_eq!(
        field(routing(|c| c.backoff_min = Duration::ZERO)),
        "routing.backoff_min"
    );
    assert_eq!(
        field(routing(|c| c.backoff_max = Duration::from_millis(1))),
        "routing.backoff_max"
    );
    assert_eq!(
        field(routing(|c| c.max_attempts = 0)),
        "routing.max_attempts"
    );
    assert_eq!(
        field(routing(|c| c.breaker.error_rate = f64::NAN)),
        "breaker.error_rate"
    );
    assert_eq!(
        field(routing(|c| c.breaker.error_rate = 0.0)),
        "breaker.error_rate"
    );
    assert_eq!(
        field(routing(|c| c.breaker.window = Duration::ZERO)),
        "breaker.window"
    );
    assert_eq!(
        field(routing(|c| c.breaker.cool_down = Duration::ZERO)),
        "breaker.cool_down"
    );
    assert_eq!(
        field(routing(|c| c.breaker.consecutive_failures = 0)),
        "breaker.consecutive_failures"
    );
    assert_eq!(
        field(routing(|c| c.breaker.min_calls = 0)),
        "breaker.min_calls"
    );
    let batching = |c: BatchConfig| {
        AiPipeline::builder(repo.clone())
            .backend(a())
            .batching(c)
            .build()
    };
    assert_eq!(
        field(batching(BatchConfig {
            window: Duration::ZERO,
            max_batch: 0,
            ..Default::default()
        })),
        "batch.max_batch"
    );
    assert_eq!(
        field(batching(BatchConfig {
            max_queue: 0,
            ..Default::default()
        })),
        "batch.max_queue"
    );
    let recording = |c: RecorderConfig| {
        AiPipeline::builder(repo.clone())
            .backend(a())
            .recording(c)
            .build()
    };
    assert_eq!(
        field(recording(RecorderConfig {
            batch: 0,
            interval: Duration::ZERO,
            ..Default::default()
        })),
        "recording.batch"
    );
    assert_eq!(
        field(recording(RecorderConfig {
            interval: Duration::ZERO,
            ..Default::default()
        })),
        "recording.interval"
    );
    assert_eq!(
        field(recording(RecorderConfig {
            attempts: 0,
            ..Default::default()
        })),
        "recording.attempts"
    );
    assert_eq!(
        field(recording(RecorderConfig {
            capacity: 0,
            ..Default::default()
        })),
        "recording.capacity"
    );
    assert_eq!(
        field(
            AiPipeline::builder(repo.clone())
                .backend(a())
                .cache_timeout(Duration::ZERO)
                .build()
        ),
        "cache_timeout"
    );
    assert!(
        AiPipeline::builder(repo.clone())
            .backend(a())
            .build()
            .is_ok()
    );
}

#[test]
fn dated_model_names_find_their_price_and_costs_never_wrap() {
    let mini = Price {
        input_micros_per_1k: 150,
        output_micros_per_1k: 600,
    };
    let four = Price {
        input_micros_per_1k: 2_500,
        output_micros_per_1k: 10_000,
    };
    let t = PriceTable::default()
        .with("gpt-4o-mini", mini)
        .with("gpt-4o", four)
        .with("claude-3-5-sonnet", four)
        .with("gpt-4", four);
    assert_eq!(t.price("gpt-4o-mini-2024-07-18"), mini);
    assert_eq!(t.price("gpt-4o-2024-08-06"), four);
    assert_eq!(t.price("claude-3-5-sonnet-20241022"), four);
    assert_eq!(t.price("gpt-4-0613"), four);
    assert_eq!(t.price("gpt-4o-mini"), mini);
    assert_eq!(t.price("o1-preview"), t.default);
    assert_eq!(
        t.price("gpt-4o-mini-tts"),
        t.default,
        "not a date: no match"
    );

    let huge = Price {
        input_micros_per_1k: u64::MAX / 2,
        output_micros_per_1k: u64::MAX / 2,
    };
    let u = Usage {
        input_tokens: u32::MAX,
        output_tokens: u32::MAX,
    };
    assert_eq!(huge.checked_cost_nanos(u), None);
    assert_eq!(huge.cost_nanos(u), u64::MAX, "saturates, never wraps");
    assert_eq!(PRICE.checked_cost_nanos(u), Some(cost(u)));
}

#[tokio::test(start_paused = true)]
async fn an_absurd_price_saturates_instead_of_overflowing() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let huge = Price {
        input_micros_per_1k: u64::MAX / 4,
        output_micros_per_1k: u64::MAX / 4,
    };
    let p = builder(repo)
        .backend(Scripted::new("a", 10, Mode::Answer))
        .prices(PriceTable {
            default: huge,
            ..Default::default()
        })
        .build()
        .unwrap();
    let o = p
        .complete(
            AiRequest::new(u, AgentType::LearningCoach, "hi"),
            SubscriptionTier::Free,
        )
        .await
        .unwrap();
    assert_eq!(o.cost_nanos, u64::MAX);
    assert_eq!(p.ledger().total().cost_nanos, u64::MAX);
}

// ---- a global refusal does not use up the user's allowance ----

#[tokio::test(start_paused = true)]
async fn a_global_refusal_leaves_the_users_allowance_alone() {
    let per_hour = |n: u32| Quota::per_hour(NonZeroU32::new(n).unwrap());
    let limits = RateLimits::new(RateLimitConfig {
        global_ai: Quota::per_minute(NonZeroU32::new(1).unwrap()),
        ai_per_user: kasama::pipeline::TierQuotas {
            free: per_hour(2).allow_burst(NonZeroU32::new(2).unwrap()),
            premium: per_hour(2),
            enterprise: per_hour(2),
        },
        ..RateLimitConfig::default()
    });
    let (a, b) = (UserId::new(), UserId::new());
    limits.check_ai(a, SubscriptionTier::Free).unwrap();
    for _ in 0..5 {
        let e = limits.check_ai(a, SubscriptionTier::Free).unwrap_err();
        assert_eq!(e.retry_after(), Some(Duration::from_secs(60)));
    }
    tokio::time::advance(Duration::from_secs(60)).await;
    // `a` still has the second cell of its burst.
    limits.check_ai(a, SubscriptionTier::Free).unwrap();
    // And a user refused by their own limit does not use up everyone's allowance.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(matches!(
        limits.check_ai(a, SubscriptionTier::Free),
        Err(Error::RateLimited { retry_after }) if retry_after > Duration::from_secs(60)
    ));
    limits.check_ai(b, SubscriptionTier::Free).unwrap();
}

#[test]
fn the_ledger_applies_monthly_caps_and_a_new_month_starts_afresh() {
    let day = Arc::new(std::sync::Mutex::new(
        chrono::NaiveDate::from_ymd_opt(2026, 3, 30).unwrap(),
    ));
    let d = day.clone();
    let ledger = Ledger::with_clock(
        Budgets {
            free_user_daily: Some(20),
            free_user_monthly: Some(30),
            global_monthly: Some(1_000),
            ..Budgets::unlimited()
        },
        move || *d.lock().unwrap(),
    );
    let u = UserId::new();
    let mut got = Vec::new();
    for (m, dd) in [(3, 30), (3, 31), (4, 1)] {
        *day.lock().unwrap() = chrono::NaiveDate::from_ymd_opt(2026, m, dd).unwrap();
        for _ in 0..3 {
            match ledger.reserve(u, SubscriptionTier::Free, 10) {
                Ok(r) => {
                    ledger.settle(r, AgentType::LearningCoach, 10);
                    got.push("ok".to_string());
                }
                Err(Error::BudgetExceeded { scope }) => got.push(scope.to_string()),
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    assert_eq!(
        got,
        [
            "ok",
            "ok",
            "user daily", // March 30
            "ok",
            "user monthly",
            "user monthly", // March 31
            "ok",
            "ok",
            "user daily", // April
        ]
    );
    assert_eq!(ledger.user_this_month(u), 20);
    // Held calls count against the month too; a premium user has other caps.
    let r = ledger.reserve(u, SubscriptionTier::Premium, 5).unwrap();
    assert!(ledger.reserve(u, SubscriptionTier::Premium, 5).is_ok());
    drop(r);
}
