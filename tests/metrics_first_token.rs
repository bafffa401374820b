//! Time to first token in the metrics: `InMemoryMetrics` keeps its percentiles (all,
//! from a backend, replayed from the cache) and counts a streaming client that went
//! away in cost, not in latencies; `MetricsFacadeSink` exports it as a histogram.

use std::time::Duration;

use kasama::metrics::{CANCELLED, CacheTier, InMemoryMetrics, MetricEvent, MetricsSink};
use kasama::prelude::*;

fn first(ms: u64, cache: CacheTier) -> MetricEvent {
    MetricEvent::FirstToken {
        agent: AgentType::CommunicationAdvisor,
        latency: Duration::from_millis(ms),
        cache,
    }
}

#[tokio::test(start_paused = true)]
async fn first_token_percentiles_are_kept_apart_for_backends_and_cache_replays() {
    let m = InMemoryMetrics::new();
    // Backends: 1..=100 ms; cache replays: 1 ms each.
    for ms in 1..=100 {
        m.record(&first(ms, CacheTier::Miss));
    }
    for _ in 0..50 {
        m.record(&first(1, CacheTier::Exact));
    }
    let t = m.snapshot().ai_first_token;
    assert_eq!(
        (t.all.count, t.backend.count, t.cache.count),
        (150, 100, 50)
    );
    // HDR histograms at 3 significant figures: within 0.1 %.
    let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001;
    assert!(close(t.backend.p50_ms, 50.0), "{t:?}");
    assert!(close(t.backend.p95_ms, 95.0), "{t:?}");
    assert!(close(t.backend.p99_ms, 99.0), "{t:?}");
    assert!(close(t.backend.max_ms, 100.0), "{t:?}");
    assert!(close(t.cache.p99_ms, 1.0), "{t:?}");
    assert!(close(t.all.p50_ms, 25.0), "{t:?}");
    assert_eq!(t.all.errors, 0);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_went_away_counts_in_cost_not_in_latencies_or_errors() {
    let m = InMemoryMetrics::new();
    m.record(&MetricEvent::Ai {
        agent: AgentType::CommunicationAdvisor,
        backend: Some("b".into()),
        input_tokens: 30,
        output_tokens: 12,
        cost_nanos: 1_650_000,
        saved_nanos: 0,
        latency: Duration::from_secs(3),
        cache: CacheTier::Miss,
        error: Some(CANCELLED),
    });
    let s = m.snapshot();
    assert_eq!(s.ai_cancelled, 1);
    assert_eq!((s.ai.count, s.ai.errors, s.ai_refused), (0, 0, 0));
    assert_eq!(s.ai_cost_nanos, 1_650_000);
    let a = s
        .ai_agents
        .iter()
        .find(|a| a.agent == AgentType::CommunicationAdvisor)
        .unwrap();
    assert_eq!((a.input_tokens, a.output_tokens), (30, 12));
    assert_eq!(a.latency.count, 0);
    assert!(s.ai_backends.is_empty());
}

#[cfg(feature = "metrics-facade")]
#[test]
fn first_token_reaches_the_facade_as_a_histogram_by_agent_and_cache_tier() {
    use kasama::metrics::MetricsFacadeSink;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let sink = MetricsFacadeSink::new();
        sink.record(&first(40, CacheTier::Miss));
        sink.record(&first(60, CacheTier::Miss));
        sink.record(&first(1, CacheTier::Semantic));
    });
    let mut found = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let k = key.key();
        if k.name() != "kasama_ai_first_token_seconds" {
            continue;
        }
        let mut labels: Vec<String> = k
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let DebugValue::Histogram(v) = value else {
            panic!("not a histogram: {value:?}");
        };
        let mut secs: Vec<f64> = v.iter().map(|x| x.into_inner()).collect();
        secs.sort_by(f64::total_cmp);
        found.push((labels.join(","), secs));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        found,
        vec![
            (
                "agent=communication_advisor,cache=miss".to_string(),
                vec![0.04, 0.06]
            ),
            (
                "agent=communication_advisor,cache=semantic".to_string(),
                vec![0.001]
            ),
        ]
    );
}
