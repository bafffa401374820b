//! `SimulatedAgent`: reproducible for a seed, latency on tokio's (paused) clock,
//! failures at the configured rate, outage windows.

use std::time::Duration;

use kasama::agent::{AiAgent, AiRequest, SimulatedAgent};
use kasama::prelude::*;
use tokio::time::Instant;

fn reqs(n: usize) -> Vec<AiRequest> {
    let u = UserId::new();
    (0..n)
        .map(|i| AiRequest::new(u, AgentType::ALL[i % 5], format!("question number {i}")))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_run_and_latency_costs_no_real_time() {
    let rs = reqs(50);
    let run = |seed| {
        let rs = rs.clone();
        async move {
            let a = SimulatedAgent::builder("sim").seed(seed).build().unwrap();
            let mut out = Vec::new();
            for r in &rs {
                let t = Instant::now();
                let resp = a.complete(r).await.unwrap();
                assert_eq!(t.elapsed(), resp.latency);
                out.push((resp.latency, resp.usage, resp.output));
            }
            out
        }
    };
    let real = std::time::Instant::now();
    let (a, b, c) = (run(7).await, run(7).await, run(8).await);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(
        real.elapsed() < Duration::from_secs(5),
        "paused clock: simulated latency is free"
    );
    // Latency around the 800 ms median, under a few seconds.
    let mut lat: Vec<Duration> = a.iter().map(|x| x.0).collect();
    lat.sort();
    assert!(
        lat[25] > Duration::from_millis(400) && lat[25] < Duration::from_millis(1600),
        "{:?}",
        lat[25]
    );
}

#[tokio::test(start_paused = true)]
async fn failures_follow_the_rate_and_outages_their_window() {
    let a = SimulatedAgent::builder("flaky")
        .seed(1)
        .failure_rate(0.3)
        .latency(Duration::ZERO, Duration::ZERO)
        .build()
        .unwrap();
    let results = a.complete_batch(&reqs(1000)).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert!(
        (250..=350).contains(&failed),
        "{failed} of 1000 failed at rate 0.3"
    );
    assert!(results.iter().flatten().all(|r| r.backend == "flaky"));
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| e.is_retryable())
    );
    assert_eq!(a.calls(), 1000);

    let down = SimulatedAgent::builder("down")
        .latency(Duration::ZERO, Duration::ZERO)
        .outage(Duration::from_secs(10), Duration::from_secs(5))
        .build()
        .unwrap();
    let r = &reqs(1)[0];
    assert!(down.complete(r).await.is_ok());
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(down.complete(r).await.is_err());
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(down.complete(r).await.is_ok());
}

#[tokio::test]
async fn answers_are_per_agent_and_validated() {
    let a = SimulatedAgent::builder("coach")
        .serves(&[AgentType::LearningCoach])
        .latency(Duration::ZERO, Duration::ZERO)
        .build()
        .unwrap();
    assert!(a.serves(AgentType::LearningCoach) && !a.serves(AgentType::ProgressTracker));
    let r = a
        .complete(&AiRequest::new(
            UserId::new(),
            AgentType::LearningCoach,
            "How can I be more patient?",
        ))
        .await
        .unwrap();
    assert!(r.output["advice"].is_string());
    assert_eq!(r.output["about"], "How can I be more patient?");
    assert!(r.usage.input_tokens > 0 && r.usage.output_tokens > 0);
    let e = a
        .complete(&AiRequest::new(UserId::new(), AgentType::LearningCoach, ""))
        .await
        .unwrap_err();
    assert_eq!(e.invalid_field(), Some("input"));
    assert_eq!(
        SimulatedAgent::builder("x")
            .failure_rate(1.5)
            .build()
            .unwrap_err()
            .invalid_field(),
        Some("failure_rate")
    );
}
