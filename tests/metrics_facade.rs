//! `MetricsFacadeSink` seen through `metrics-util`'s debugging recorder, and through
//! a real Prometheus exporter on a loopback port, scraped over HTTP and parsed.
#![cfg(feature = "metrics-facade")]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use kasama::metrics::{CacheOutcome, CacheTier, MetricEvent, MetricsFacadeSink, MetricsSink};
use kasama::prelude::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

fn events() -> Vec<MetricEvent> {
    let ai = |cache, error| MetricEvent::Ai {
        agent: AgentType::LearningCoach,
        backend: Some("sim".into()),
        input_tokens: 100,
        output_tokens: 40,
        cost_nanos: 4_400_000,
        saved_nanos: 0,
        latency: Duration::from_millis(800),
        cache,
        error,
    };
    vec![
        ai(CacheTier::Miss, None),
        ai(CacheTier::Miss, None),
        ai(CacheTier::Miss, Some("rate_limited")),
        MetricEvent::Api {
            endpoint: "/goals/{id}".into(),
            method: "GET",
            status: 200,
            latency: Duration::from_millis(12),
            user: Some(UserId::new()),
        },
        MetricEvent::Api {
            endpoint: "/goals/{id}".into(),
            method: "GET",
            status: 503,
            latency: Duration::from_millis(30),
            user: None,
        },
        MetricEvent::Database {
            operation: "get_goal",
            latency: Duration::from_micros(900),
            ok: true,
        },
        MetricEvent::Cache {
            tier: "query",
            outcome: CacheOutcome::Hit,
        },
        MetricEvent::RealtimeReconnect,
        MetricEvent::Breaker {
            backend: "sim".into(),
            state: "open",
        },
    ]
}

#[test]
fn events_reach_the_facade_with_stable_names_and_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let sink = MetricsFacadeSink::new();
        for e in events() {
            sink.record(&e);
        }
    });
    let mut counters: HashMap<String, u64> = HashMap::new();
    let mut histograms: HashMap<String, usize> = HashMap::new();
    for (key, _unit, _desc, value) in snapshotter.snapshot().into_vec() {
        let k = key.key();
        let mut labels: Vec<String> = k
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", k.name(), labels.join(","));
        match value {
            DebugValue::Counter(n) => {
                counters.insert(name, n);
            }
            DebugValue::Histogram(v) => {
                histograms.insert(name, v.len());
            }
            DebugValue::Gauge(_) => {}
        }
    }
    assert_eq!(
        counters["kasama_ai_requests_total{agent=learning_coach,cache=miss,outcome=ok}"],
        2
    );
    assert_eq!(
        counters["kasama_ai_requests_total{agent=learning_coach,cache=miss,outcome=rate_limited}"],
        1
    );
    assert_eq!(
        counters["kasama_ai_cost_nanodollars_total{agent=learning_coach}"],
        13_200_000
    );
    assert_eq!(
        counters["kasama_ai_tokens_total{agent=learning_coach,direction=input}"],
        300
    );
    assert_eq!(
        counters["kasama_api_requests_total{endpoint=/goals/{id},method=GET,status=5xx}"],
        1
    );
    assert_eq!(
        counters["kasama_db_queries_total{operation=get_goal,outcome=ok}"],
        1
    );
    assert_eq!(
        counters["kasama_cache_events_total{outcome=hit,tier=query}"],
        1
    );
    assert_eq!(counters["kasama_realtime_reconnects_total{}"], 1);
    assert_eq!(
        counters["kasama_breaker_transitions_total{backend=sim,state=open}"],
        1
    );
    assert_eq!(
        histograms["kasama_ai_request_duration_seconds{agent=learning_coach,cache=miss}"],
        3
    );
    assert_eq!(
        histograms["kasama_api_request_duration_seconds{endpoint=/goals/{id},method=GET}"],
        2
    );
    // No label carries a user.
    assert!(
        counters
            .keys()
            .chain(histograms.keys())
            .all(|k| !k.contains("user"))
    );
}

fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Parses the Prometheus text format into `name{labels} -> value`.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_exporter_serves_the_figures_over_http() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .unwrap();
    let sink = MetricsFacadeSink::new();
    for e in events() {
        sink.record(&e);
    }
    // The listener starts in the background: retry briefly.
    let mut text = String::new();
    for _ in 0..50 {
        if let Ok(t) = std::panic::catch_unwind(|| scrape(addr))
            && t.contains("kasama_")
        {
            text = t;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = parse(&text);
    assert_eq!(
        m[r#"kasama_ai_requests_total{agent="learning_coach",cache="miss",outcome="ok"}"#], 2.0,
        "{text}"
    );
    assert_eq!(
        m[r#"kasama_ai_cost_nanodollars_total{agent="learning_coach"}"#],
        13_200_000.0
    );
    assert_eq!(
        m[r#"kasama_api_requests_total{method="GET",endpoint="/goals/{id}",status="5xx"}"#],
        1.0
    );
    assert_eq!(
        m[r#"kasama_ai_request_duration_seconds_count{agent="learning_coach",cache="miss"}"#],
        3.0
    );
    assert!(
        text.contains("# TYPE kasama_ai_request_duration_seconds summary")
            || text.contains("# TYPE kasama_ai_request_duration_seconds histogram")
    );
    assert!(text.contains("# HELP kasama_ai_requests_total"));
}
