//! A stream that fails: before the first delta (not billed, fails over), mid-answer,
//! at the deadline, by a backend's panic, or with a structured answer of the wrong
//! shape (billed for what was produced, never cached).

use super::*;

#[tokio::test(start_paused = true)]
async fn a_stream_failing_mid_answer_is_billed_for_what_was_produced_and_not_cached() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Arc::new(Scripted::new("s", &WORDS[..3], 100, End::Fail));
    let metrics = Arc::new(InMemoryMetrics::new());
    let cache = cache();
    let p = builder(repo.clone())
        .backend(agent.clone())
        .semantic_cache(cache.clone())
        .metrics(metrics.clone())
        .build()
        .unwrap();
    let req = ask(u, "What do I say when I am hurt?");

    let (deltas, end) = drain(p.stream(req.clone(), SubscriptionTier::Free).await.unwrap()).await;
    assert_eq!(deltas, WORDS[..3]);
    let e = end.unwrap_err();
    assert!(e.is_retryable(), "the backend's error: {e:?}");
    assert_eq!(agent.calls(), 1, "no retry once text was sent");
    let b = &p.backends()[0];
    assert_eq!(b.in_flight, 0);
    assert!(b.error_rate > 0.0, "counted against the backend: {b:?}");

    let produced = WORDS[..3].concat();
    let (input, output) = (input_of(&req), estimate_tokens(&produced));
    let billed = cost_at(PRICE, input, output);
    assert_eq!(p.ledger().user_today(u), billed);
    assert_eq!(p.ledger().user_reserved(u), 0);
    assert!(
        matches!(cache.lookup(&req).await.unwrap(), Lookup::Miss { .. }),
        "a failed stream is not cached"
    );
    let s = metrics.snapshot();
    assert_eq!((s.ai.count, s.ai.errors, s.ai_cost_nanos), (1, 1, billed));

    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert!(!r.success);
    assert_eq!(r.cost_nanos, billed as i64);
    assert_eq!(
        (r.input_tokens, r.output_tokens),
        (input as i32, output as i32)
    );
    assert_eq!(r.output, json!({ "error": "backend", "text": produced }));
}

#[tokio::test(start_paused = true)]
async fn a_failure_before_the_first_delta_is_not_billed_and_fails_over() {
    let repo = memory();
    let us = users(&repo, 2).await;
    let cheap_price = Price {
        input_micros_per_1k: 1_000,
        output_micros_per_1k: 2_000,
    };
    let dear_price = Price {
        input_micros_per_1k: 30_000,
        output_micros_per_1k: 60_000,
    };
    // The cheap one is picked first (same latency, lower price) and fails at once.
    let cheap = Arc::new(Scripted::new("cheap", &WORDS, 50, End::Done).failing_open());
    let dear = Arc::new(Scripted::new("dear", &WORDS, 50, End::Done));
    let p = builder(repo.clone())
        .backend_priced(cheap.clone(), cheap_price)
        .backend_priced(dear.clone(), dear_price)
        .build()
        .unwrap();
    let (deltas, done) = drain(
        p.stream(ask(us[0], "How do I apologise?"), SubscriptionTier::Free)
            .await
            .unwrap(),
    )
    .await;
    let o = done.unwrap();
    assert_eq!(
        deltas.concat(),
        WORDS.concat(),
        "no text of the failed attempt"
    );
    assert_eq!(o.response.backend, "dear");
    assert_eq!((cheap.calls(), dear.calls()), (1, 1));
    let call = cost_at(dear_price, USAGE.input_tokens, USAGE.output_tokens);
    assert_eq!(o.cost_nanos, call, "priced by the backend that answered");
    assert_eq!(
        p.ledger().user_today(us[0]),
        call,
        "the failed attempt is free"
    );
    p.shutdown().await.unwrap();

    // Every backend fails before any text: the error is the stream's only item.
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let down = Arc::new(Scripted::new("down", &WORDS, 50, End::Done).failing_open());
    let p = builder(repo.clone())
        .backend(down.clone())
        .routing(RouterConfig {
            max_attempts: 2,
            ..Default::default()
        })
        .build()
        .unwrap();
    let (deltas, end) = drain(
        p.stream(ask(u, "How do I apologise?"), SubscriptionTier::Free)
            .await
            .unwrap(),
    )
    .await;
    assert!(deltas.is_empty());
    assert!(end.unwrap_err().is_retryable());
    assert_eq!(down.calls(), 2, "retried before the first delta");
    assert_eq!(p.ledger().user_today(u), 0, "not billed");
    assert_eq!(p.ledger().user_reserved(u), 0, "the hold is released");
    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].success);
    assert_eq!((rows[0].cost_nanos, rows[0].output_tokens), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_never_ends_is_cut_at_the_deadline_and_billed() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Arc::new(Scripted::new("s", &WORDS[..2], 100, End::Hang));
    let p = builder(repo.clone())
        .backend(agent.clone())
        .routing(RouterConfig {
            deadline: Duration::from_secs(5),
            ..Default::default()
        })
        .build()
        .unwrap();
    let req = ask(u, "Will this ever end?");
    let (deltas, end) = drain(p.stream(req.clone(), SubscriptionTier::Free).await.unwrap()).await;
    assert_eq!(deltas, WORDS[..2]);
    assert!(matches!(end, Err(Error::Timeout { .. })), "{end:?}");
    assert_eq!(agent.cancelled(), 1);
    let billed = cost_at(PRICE, input_of(&req), estimate_tokens(&WORDS[..2].concat()));
    assert_eq!(p.ledger().user_today(u), billed);
    p.shutdown().await.unwrap();
}

/// A backend that panics mid-stream fails the stream, not the pipeline: billed for
/// what it produced, counted against its breaker, its slot given back.
#[tokio::test(start_paused = true)]
async fn a_backend_panicking_mid_stream_ends_the_stream_with_an_error_and_is_billed() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Arc::new(Scripted::new("s", &WORDS[..2], 100, End::Panic));
    let p = builder(repo.clone())
        .backend(agent.clone())
        .build()
        .unwrap();
    let req = ask(u, "What if it breaks?");
    let (deltas, end) = drain(p.stream(req.clone(), SubscriptionTier::Free).await.unwrap()).await;
    assert_eq!(deltas, WORDS[..2]);
    let e = end.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    let billed = cost_at(PRICE, input_of(&req), estimate_tokens(&WORDS[..2].concat()));
    assert_eq!(p.ledger().user_today(u), billed);
    let b = &p.backends()[0];
    assert_eq!((b.calls, b.in_flight), (1, 0));
    assert!(b.error_rate > 0.0, "the breaker and averages saw it: {b:?}");
    // The pipeline still answers.
    let (_, next) = drain(
        p.stream(ask(u, "Again?"), SubscriptionTier::Free)
            .await
            .unwrap(),
    )
    .await;
    assert!(next.is_err(), "the same script panics again");
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_structured_answer_of_the_wrong_shape_is_an_error_item_billed_and_not_cached() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Arc::new(Scripted::new("s", &WORDS, 10, End::Done));
    let cache = cache();
    let p = builder(repo.clone())
        .backend(agent.clone())
        .semantic_cache(cache.clone())
        .build()
        .unwrap();
    let req = AiRequest::new(u, AgentType::AssessmentAnalyst, "What do my results say?");
    let (deltas, end) = drain(p.stream(req.clone(), SubscriptionTier::Free).await.unwrap()).await;
    assert_eq!(deltas.concat(), WORDS.concat());
    let e = end.unwrap_err();
    assert!(e.to_string().contains("wrong shape"), "{e}");
    let call = cost_at(PRICE, USAGE.input_tokens, USAGE.output_tokens);
    assert_eq!(p.ledger().user_today(u), call, "the provider billed it");
    assert!(matches!(
        cache.lookup(&req).await.unwrap(),
        Lookup::Miss { .. }
    ));
    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].success);
    assert_eq!(rows[0].cost_nanos, call as i64);
}
