//! Settings read from a document (feature `config`): an empty document is the
//! documented defaults, and so is one that writes every field out at its default; a
//! partial document keeps the other defaults; an unknown field is refused, named; a
//! bad duration is refused; the values are then checked by `validate()`.
#![cfg(feature = "config")]

use std::num::NonZeroU32;
use std::time::Duration;

use kasama::health::Thresholds;
use kasama::pipeline::{
    BatchConfig, BreakerConfig, Budgets, Price, PriceTable, Quota, RateLimitConfig, RecorderConfig,
    RouterConfig, TierQuotas,
};
use serde::de::DeserializeOwned;

fn read<T: DeserializeOwned>(doc: &str) -> T {
    serde_json::from_str(doc).unwrap_or_else(|e| panic!("{doc}: {e}"))
}

fn refusal<T: DeserializeOwned + std::fmt::Debug>(doc: &str) -> String {
    serde_json::from_str::<T>(doc)
        .map(|v| panic!("{doc} accepted as {v:?}"))
        .unwrap_err()
        .to_string()
}

fn per_minute(n: u32, burst: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap()).allow_burst(NonZeroU32::new(burst).unwrap())
}

#[test]
fn an_empty_document_is_the_defaults() {
    assert_eq!(read::<BatchConfig>("{}"), BatchConfig::default());
    assert_eq!(read::<BreakerConfig>("{}"), BreakerConfig::default());
    assert_eq!(read::<RouterConfig>("{}"), RouterConfig::default());
    assert_eq!(read::<RecorderConfig>("{}"), RecorderConfig::default());
    assert_eq!(read::<RateLimitConfig>("{}"), RateLimitConfig::default());
    assert_eq!(read::<Budgets>("{}"), Budgets::default());
    assert_eq!(read::<PriceTable>("{}"), PriceTable::default());
    assert_eq!(read::<Thresholds>("{}"), Thresholds::default());
}

/// Every field written out at the default its doc comment states: the documents
/// name every field, and the docs tell the truth.
#[test]
fn every_field_written_at_its_documented_default_is_the_defaults() {
    let batch = r#"{ "window": "150ms", "max_batch": 10, "max_queue": 10000 }"#;
    assert_eq!(read::<BatchConfig>(batch), BatchConfig::default());
    let breaker = r#"{ "consecutive_failures": 5, "error_rate": 0.5, "window": "30s",
        "min_calls": 10, "cool_down": "10s" }"#;
    assert_eq!(read::<BreakerConfig>(breaker), BreakerConfig::default());
    let router = format!(
        r#"{{ "max_attempts": 3, "deadline": "30s", "backoff_min": "100ms",
        "backoff_max": "2s", "ewma_decay": "10s", "breaker": {breaker} }}"#
    );
    assert_eq!(read::<RouterConfig>(&router), RouterConfig::default());
    let recorder = r#"{ "batch": 500, "interval": "1s", "capacity": 100000, "attempts": 5 }"#;
    assert_eq!(read::<RecorderConfig>(recorder), RecorderConfig::default());
    let limits = r#"{
        "global_ai": { "rate": 500, "per": "1s", "burst": 1000 },
        "ai_per_user": {
            "free": { "rate": 10, "per": "1m", "burst": 5 },
            "premium": { "rate": 60, "per": "1m", "burst": 20 },
            "enterprise": { "rate": 600, "per": "1m", "burst": 100 }
        },
        "api_per_user": {
            "free": { "rate": 60, "per": "1m", "burst": 30 },
            "premium": { "rate": 300, "per": "1m", "burst": 60 },
            "enterprise": { "rate": 1200, "per": "1m", "burst": 200 }
        },
        "prune_every": 10000
    }"#;
    assert_eq!(read::<RateLimitConfig>(limits), RateLimitConfig::default());
    let budgets = r#"{ "free_user_daily": 10000000, "premium_user_daily": 100000000,
        "enterprise_user_daily": 1000000000, "global_daily": null }"#;
    assert_eq!(read::<Budgets>(budgets), Budgets::default());
    let prices = r#"{ "models": {},
        "default": { "input_micros_per_1k": 20000, "output_micros_per_1k": 60000 } }"#;
    assert_eq!(read::<PriceTable>(prices), PriceTable::default());
    let thresholds = r#"{ "api_p95": ["200ms", "500ms"], "ai_mean": ["2s", "5s"],
        "db_p95": ["50ms", "200ms"], "realtime_p95": ["100ms", "500ms"],
        "error_rate": [0.05, 0.15], "cache_hit_rate": [0.5, 0.25],
        "cache_hit_target": 0.7, "min_samples": 20, "db_buffer_hit_ratio": 0.9 }"#;
    assert_eq!(read::<Thresholds>(thresholds), Thresholds::default());
}

#[test]
fn a_partial_document_keeps_the_other_defaults() {
    let r: RouterConfig = read(r#"{ "deadline": "1m 30s", "breaker": { "cool_down": "2h" } }"#);
    assert_eq!(
        r,
        RouterConfig {
            deadline: Duration::from_secs(90),
            breaker: BreakerConfig {
                cool_down: Duration::from_secs(7200),
                ..Default::default()
            },
            ..Default::default()
        }
    );
    let b: BatchConfig = read(r#"{ "window": "0s" }"#);
    assert_eq!(
        b,
        BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        }
    );
    let rec: RecorderConfig = read(r#"{ "capacity": 7 }"#);
    assert_eq!(
        rec,
        RecorderConfig {
            capacity: 7,
            ..Default::default()
        }
    );
    // `null` is no cap; a cap left out keeps its default.
    let budgets: Budgets = read(r#"{ "free_user_daily": null, "global_daily": 5 }"#);
    assert_eq!(
        budgets,
        Budgets {
            free_user_daily: None,
            global_daily: Some(5),
            ..Default::default()
        }
    );
    let prices: PriceTable =
        read(r#"{ "models": { "m": { "input_micros_per_1k": 1, "output_micros_per_1k": 2 } } }"#);
    assert_eq!(
        prices,
        PriceTable::default().with(
            "m",
            Price {
                input_micros_per_1k: 1,
                output_micros_per_1k: 2
            }
        )
    );
    let t: Thresholds = read(r#"{ "db_p95": ["10ms", "1s"], "min_samples": 3 }"#);
    assert_eq!(
        t,
        Thresholds {
            db_p95: (Duration::from_millis(10), Duration::from_secs(1)),
            min_samples: 3,
            ..Default::default()
        }
    );
}

#[test]
fn a_tier_left_out_of_a_rate_limit_keeps_its_default() {
    let l: RateLimitConfig = read(
        r#"{ "ai_per_user": { "free": { "rate": 3, "per": "1h" } },
             "global_ai": { "rate": 50, "per": "1s", "burst": 70 } }"#,
    );
    let d = RateLimitConfig::default();
    assert_eq!(
        l,
        RateLimitConfig {
            global_ai: Quota::per_second(NonZeroU32::new(50).unwrap())
                .allow_burst(NonZeroU32::new(70).unwrap()),
            ai_per_user: TierQuotas {
                free: Quota::per_hour(NonZeroU32::new(3).unwrap()),
                ..d.ai_per_user
            },
            ..d
        }
    );
    // On its own, a tier table names all three tiers.
    let all: TierQuotas = read(
        r#"{ "free": { "rate": 1, "per": "1m" }, "premium": { "rate": 2, "per": "1m" },
             "enterprise": { "rate": 3, "per": "1m" } }"#,
    );
    assert_eq!(all.premium, per_minute(2, 2));
    assert!(refusal::<TierQuotas>(r#"{ "free": { "rate": 1, "per": "1m" } }"#).contains("premium"));
}

#[test]
fn an_unknown_field_is_refused_by_name() {
    fn names<T: DeserializeOwned + std::fmt::Debug>(doc: &str, field: &str) {
        let e = refusal::<T>(doc);
        assert!(
            e.contains("unknown field") && e.contains(&format!("`{field}`")),
            "{doc}: {e}"
        );
    }
    names::<BatchConfig>(r#"{ "windw": "1s" }"#, "windw");
    names::<BreakerConfig>(r#"{ "cooldown": "1s" }"#, "cooldown");
    names::<RouterConfig>(r#"{ "retries": 2 }"#, "retries");
    names::<RouterConfig>(r#"{ "breaker": { "coll_down": "1s" } }"#, "coll_down");
    names::<RecorderConfig>(r#"{ "batch_size": 2 }"#, "batch_size");
    names::<RateLimitConfig>(r#"{ "global": {} }"#, "global");
    names::<RateLimitConfig>(r#"{ "ai_per_user": { "gold": {} } }"#, "gold");
    names::<RateLimitConfig>(
        r#"{ "global_ai": { "rate": 1, "per": "1s", "brust": 2 } }"#,
        "brust",
    );
    names::<Budgets>(r#"{ "free_daily": 1 }"#, "free_daily");
    names::<PriceTable>(r#"{ "fallback": {} }"#, "fallback");
    names::<Thresholds>(r#"{ "api_p99": ["1s", "2s"] }"#, "api_p99");
}

#[test]
fn a_bad_duration_is_refused() {
    for doc in [
        r#"{ "window": "soon" }"#,
        r#"{ "window": "150" }"#,
        r#"{ "window": 150 }"#,
        r#"{ "window": "-1s" }"#,
    ] {
        let e = refusal::<BatchConfig>(doc);
        assert!(!e.is_empty(), "{doc}");
    }
    refusal::<RouterConfig>(r#"{ "deadline": "30 parsecs" }"#);
    refusal::<RouterConfig>(r#"{ "breaker": { "window": "x" } }"#);
    refusal::<RecorderConfig>(r#"{ "interval": "" }"#);
    refusal::<Thresholds>(r#"{ "api_p95": ["200ms"] }"#);
    refusal::<Thresholds>(r#"{ "api_p95": ["200ms", "fast"] }"#);
    // A quota needs a period between cells: neither a zero rate nor a zero span.
    refusal::<RateLimitConfig>(r#"{ "global_ai": { "rate": 0, "per": "1s" } }"#);
    refusal::<RateLimitConfig>(r#"{ "global_ai": { "rate": 5, "per": "0s" } }"#);
}

/// Deserialising checks the shape; `validate()` checks the values, naming the field.
#[test]
fn values_are_checked_by_validate_after_loading() {
    let r: RouterConfig = read(r#"{ "max_attempts": 0 }"#);
    assert_eq!(
        r.validate().unwrap_err().invalid_field(),
        Some("routing.max_attempts")
    );
    let r: RouterConfig = read(r#"{ "breaker": { "error_rate": 1.5 } }"#);
    assert_eq!(
        r.validate().unwrap_err().invalid_field(),
        Some("breaker.error_rate")
    );
    let b: BatchConfig = read(r#"{ "max_batch": 0 }"#);
    assert_eq!(
        b.validate().unwrap_err().invalid_field(),
        Some("batch.max_batch")
    );
    let b: BatchConfig = read(r#"{ "window": "400days" }"#);
    assert_eq!(
        b.validate().unwrap_err().invalid_field(),
        Some("batch.window")
    );
    let rec: RecorderConfig = read(r#"{ "interval": "0s" }"#);
    assert_eq!(
        rec.validate().unwrap_err().invalid_field(),
        Some("recording.interval")
    );
    assert!(read::<RouterConfig>("{}").validate().is_ok());
    assert!(read::<BatchConfig>("{}").validate().is_ok());
    assert!(read::<RecorderConfig>("{}").validate().is_ok());
}
