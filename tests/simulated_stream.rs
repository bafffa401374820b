//! `SimulatedAgent::stream` on tokio's paused clock: the same draws and answer as
//! `complete`, the text token by token over the drawn latency (first piece after
//! 30 % of it, `Done` at all of it), failures before the stream and mid-stream.

use std::time::Duration;

use futures_util::StreamExt;
use kasama::agent::{
    AiAgent, AiRequest, AiResponse, AiStream, ChatMessage, Role, SIMULATED_TTFT_SHARE,
    SimulatedAgent, StreamEvent, output_text, token_pieces,
};
use kasama::prelude::*;
use serde_json::json;
use tokio::time::Instant;

fn req(agent: AgentType) -> AiRequest {
    AiRequest::new(UserId::new(), agent, "How do I listen better?")
        .with_context(json!({"scores": {"communication": 97}}))
        .with_history(vec![
            ChatMessage::new(Role::User, "We argue at night."),
            ChatMessage::new(Role::Assistant, "What starts it?"),
        ])
}

fn agent(seed: u64) -> SimulatedAgent {
    SimulatedAgent::builder("sim").seed(seed).build().unwrap()
}

/// Every item of a stream with when it arrived (since `start`).
async fn timed(mut s: AiStream, start: Instant) -> Vec<(Duration, Result<StreamEvent>)> {
    let mut out = Vec::new();
    while let Some(item) = s.next().await {
        out.push((start.elapsed(), item));
    }
    out
}

fn deltas(items: &[(Duration, Result<StreamEvent>)]) -> Vec<String> {
    items
        .iter()
        .filter_map(|(_, i)| match i {
            Ok(StreamEvent::Delta(d)) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

/// Tokio's timers fire on whole milliseconds: a piece due at 228.6 ms arrives at 229 ms.
fn about(a: Duration, b: Duration) -> bool {
    a.abs_diff(b) <= Duration::from_millis(1)
}

fn done(items: &[(Duration, Result<StreamEvent>)]) -> Option<&AiResponse> {
    match items.last() {
        Some((_, Ok(StreamEvent::Done(r)))) => Some(r),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn pieces_arrive_over_the_drawn_latency_and_add_up_to_completes_answer() {
    for kind in [AgentType::LearningCoach, AgentType::AssessmentAnalyst] {
        let r = req(kind);
        let whole = agent(7).complete(&r).await.unwrap();
        let text = output_text(&whole.output);

        let a = agent(7);
        let start = Instant::now();
        let s = a.stream(&r).await.unwrap();
        let ttft = whole.latency.mul_f64(SIMULATED_TTFT_SHARE);
        assert!(
            about(start.elapsed(), ttft),
            "the stream starts with its first piece: {:?} vs {ttft:?}",
            start.elapsed()
        );
        let items = timed(s, start).await;

        let pieces = deltas(&items);
        assert_eq!(pieces, token_pieces(&text), "{kind}: token by token");
        assert!(pieces.len() > 5, "{kind}: {} pieces", pieces.len());
        assert_eq!(pieces.concat(), text);
        assert!(
            about(items[0].0, ttft),
            "first piece at 30 % of the latency"
        );
        // The rest spread evenly over the other 70 %.
        let n = pieces.len() as f64;
        for (i, (at, _)) in items.iter().enumerate().take(pieces.len()) {
            let due = ttft + (whole.latency - ttft).mul_f64(i as f64 / n);
            assert!(about(*at, due), "{kind}: piece {i} at {at:?}, due {due:?}");
        }
        for w in items.windows(2) {
            assert!(w[0].0 < w[1].0, "{kind}: {:?} then {:?}", w[0].0, w[1].0);
        }
        let last = done(&items).expect("ends with Done");
        assert_eq!(
            items.last().unwrap().0,
            whole.latency,
            "Done at the whole latency"
        );
        assert_eq!(
            last, &whole,
            "same output, usage, model and latency as complete"
        );
        assert_eq!(a.calls(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_structured_answer_streams_as_its_json() {
    let r = req(AgentType::AssessmentAnalyst);
    let a = agent(3);
    let items = timed(a.stream(&r).await.unwrap(), Instant::now()).await;
    let text = deltas(&items).concat();
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(&parsed, &done(&items).unwrap().output);
    assert!(parsed["insights"].is_array());
}

#[tokio::test(start_paused = true)]
async fn streams_and_completes_share_one_sequence_of_draws() {
    let r = req(AgentType::InsightGenerator);
    let a = agent(11);
    let first_a = a.complete(&r).await.unwrap();
    let second_a = a.complete(&r).await.unwrap();

    let b = agent(11);
    let first_b = timed(b.stream(&r).await.unwrap(), Instant::now()).await;
    let second_b = b.complete(&r).await.unwrap();
    assert_eq!(done(&first_b).unwrap(), &first_a);
    assert_eq!(
        second_b, second_a,
        "a stream consumes the call it stands for"
    );
    assert_eq!(b.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_instant_agent_streams_at_once() {
    let a = SimulatedAgent::instant("now");
    let start = Instant::now();
    let items = timed(
        a.stream(&req(AgentType::ProgressTracker)).await.unwrap(),
        start,
    )
    .await;
    assert!(items.iter().all(|(t, _)| t.is_zero()));
    assert_eq!(
        deltas(&items).concat(),
        output_text(&done(&items).unwrap().output)
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_call_fails_before_the_stream_starts() {
    let a = SimulatedAgent::builder("down")
        .seed(5)
        .failure_rate(1.0)
        .build()
        .unwrap();
    let r = req(AgentType::LearningCoach);
    let latency = {
        // The same draws without failures give the latency the failing call drew.
        let ok = agent(5).complete(&r).await.unwrap();
        ok.latency
    };
    let start = Instant::now();
    let e = a.stream(&r).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Backend {
                retryable: true,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(about(
        start.elapsed(),
        latency.mul_f64(SIMULATED_TTFT_SHARE)
    ));
    assert_eq!(a.calls(), 1);

    let outage = SimulatedAgent::builder("out")
        .outage(Duration::ZERO, Duration::from_secs(60))
        .build()
        .unwrap();
    assert!(outage.stream(&r).await.unwrap_err().is_retryable());
}

#[tokio::test(start_paused = true)]
async fn fail_streams_after_n_pieces() {
    let r = req(AgentType::CommunicationAdvisor);
    let whole = agent(9).complete(&r).await.unwrap();
    let pieces = token_pieces(&output_text(&whole.output))
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    assert!(pieces.len() > 3);

    let failing = |n| {
        SimulatedAgent::builder("sim")
            .seed(9)
            .fail_streams_after(n)
            .build()
            .unwrap()
    };
    // After two pieces: those two, then the error when the third was due.
    let a = failing(2);
    let start = Instant::now();
    let items = timed(a.stream(&r).await.unwrap(), start).await;
    assert_eq!(deltas(&items), pieces[..2]);
    assert_eq!(items.len(), 3, "the error is the last item");
    let (at, last) = &items[2];
    let e = last.as_ref().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Backend {
                retryable: true,
                ..
            }
        ),
        "{e:?}"
    );
    let ttft = whole.latency.mul_f64(SIMULATED_TTFT_SHARE);
    let rest = whole.latency - ttft;
    let due = ttft + rest.mul_f64(2.0 / pieces.len() as f64);
    assert!(about(*at, due), "{at:?} vs {due:?}");
    assert!(*at < whole.latency);

    // Zero: started, then failed before any text.
    let items = timed(failing(0).stream(&r).await.unwrap(), Instant::now()).await;
    assert_eq!(items.len(), 1);
    assert!(items[0].1.is_err());

    // More than the answer has: every piece, then the error in place of Done.
    let items = timed(failing(10_000).stream(&r).await.unwrap(), Instant::now()).await;
    assert_eq!(deltas(&items), pieces);
    assert!(items.last().unwrap().1.is_err());
    assert!(done(&items).is_none());

    // complete is not affected.
    assert_eq!(failing(2).complete(&r).await.unwrap(), whole);
}

#[tokio::test(start_paused = true)]
async fn stream_failure_rate_fails_a_share_of_streams_after_their_first_byte() {
    let every = SimulatedAgent::builder("sim")
        .stream_failure_rate(1.0)
        .latency(Duration::ZERO, Duration::ZERO)
        .build()
        .unwrap();
    let u = UserId::new();
    let mut failed = 0;
    for i in 0..300 {
        let r = AiRequest::new(u, AgentType::ALL[i % 5], format!("question {i}"));
        let items = timed(every.stream(&r).await.unwrap(), Instant::now()).await;
        assert!(
            items.last().unwrap().1.is_err(),
            "rate 1: every stream fails"
        );
        assert!(!deltas(&items).is_empty(), "after the first byte");
        assert!(every.complete(&r).await.is_ok(), "complete is not affected");

        let some = SimulatedAgent::builder("sim")
            .seed(i as u64)
            .stream_failure_rate(0.3)
            .latency(Duration::ZERO, Duration::ZERO)
            .build()
            .unwrap();
        let items = timed(some.stream(&r).await.unwrap(), Instant::now()).await;
        if items.last().unwrap().1.is_err() {
            failed += 1;
        }
    }
    assert!((60..=120).contains(&failed), "{failed} of 300 at rate 0.3");

    assert_eq!(
        SimulatedAgent::builder("sim")
            .stream_failure_rate(1.5)
            .build()
            .unwrap_err()
            .invalid_field(),
        Some("stream_failure_rate")
    );
}

#[tokio::test(start_paused = true)]
async fn invalid_requests_are_refused_before_a_call_counts() {
    let a = agent(1);
    let mut r = req(AgentType::LearningCoach);
    r.params.max_tokens = 0;
    assert_eq!(
        a.stream(&r).await.unwrap_err().invalid_field(),
        Some("max_tokens")
    );
    assert_eq!(a.calls(), 0);
}
