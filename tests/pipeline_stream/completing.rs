//! A completed stream: paid once, recorded, replayed from the cache; time to first
//! token with percentiles.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_completed_stream_is_paid_once_recorded_and_then_replayed_from_the_cache() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Arc::new(Scripted::new("s", &WORDS, 100, End::Done));
    let metrics = Arc::new(InMemoryMetrics::new());
    let cache = cache();
    let p = builder(repo.clone())
        .backend(agent.clone())
        .semantic_cache(cache.clone())
        .metrics(metrics.clone())
        .build()
        .unwrap();
    let q = "How do I start a hard conversation?";

    let (deltas, done) = drain(p.stream(ask(u, q), SubscriptionTier::Free).await.unwrap()).await;
    let o = done.unwrap();
    assert_eq!(deltas, WORDS, "the backend's deltas, in order");
    assert_eq!(output_text(&o.response.output), deltas.concat());
    assert_eq!(o.cache, CacheTier::Miss);
    assert_eq!(o.response.backend, "s");
    let call = cost_at(PRICE, USAGE.input_tokens, USAGE.output_tokens);
    assert_eq!(
        o.cost_nanos, call,
        "charged at the usage the backend reported"
    );
    assert_eq!(
        p.ledger().user_today(u),
        call,
        "the ledger holds what Done says"
    );
    assert_eq!(p.ledger().user_reserved(u), 0, "the hold is settled");
    assert_eq!(
        p.batch_stats().logical_requests,
        0,
        "streams skip the batcher"
    );

    // The same question again: answered by the cache, as a stream.
    let (again, done) = drain(p.stream(ask(u, q), SubscriptionTier::Free).await.unwrap()).await;
    let hit = done.unwrap();
    assert_eq!(hit.cache, CacheTier::Exact);
    assert_eq!((hit.cost_nanos, hit.saved_nanos), (0, call));
    assert_eq!(again.concat(), WORDS.concat());
    assert!(again.len() > 1, "replayed in chunks: {again:?}");
    assert_eq!(agent.calls(), 1, "no second backend call");
    assert_eq!(agent.finished(), 1);
    assert_eq!(p.ledger().user_today(u), call);

    let ttft = metrics.snapshot().ai_first_token;
    assert_eq!(
        (ttft.all.count, ttft.backend.count, ttft.cache.count),
        (2, 1, 1)
    );
    assert!(near(ttft.backend.p50_ms, 100.0), "{ttft:?}");

    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 2);
    let paid: Vec<_> = rows.iter().filter(|r| !r.cache_hit).collect();
    assert_eq!(paid.len(), 1);
    assert!(paid[0].success);
    assert_eq!(paid[0].cost_nanos, call as i64);
    assert_eq!(paid[0].output, json!({ "text": WORDS.concat() }));
}

#[tokio::test(start_paused = true)]
async fn time_to_first_token_is_kept_with_percentiles() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    // Call k's first delta comes after 10 ms × k.
    let agent = Arc::new(Scripted::new("s", &WORDS, 10, End::Done).ramp());
    let metrics = Arc::new(InMemoryMetrics::new());
    let p = builder(repo.clone())
        .backend(agent.clone())
        .metrics(metrics.clone())
        .build()
        .unwrap();
    for i in 0..100 {
        let s = p
            .stream(ask(u, &format!("question {i}")), SubscriptionTier::Free)
            .await
            .unwrap();
        drain(s).await.1.unwrap();
    }
    let t = metrics.snapshot().ai_first_token;
    assert_eq!((t.all.count, t.backend.count, t.cache.count), (100, 100, 0));
    assert!(near(t.backend.p50_ms, 500.0), "{t:?}");
    assert!(near(t.backend.p95_ms, 950.0), "{t:?}");
    assert!(near(t.backend.p99_ms, 990.0), "{t:?}");
    assert!(near(t.backend.max_ms, 1000.0), "{t:?}");
    p.shutdown().await.unwrap();
}

/// Streams are not coalesced: two identical streams at once are two backend calls,
/// each charged to its own request.
#[tokio::test(start_paused = true)]
async fn identical_streams_at_once_are_two_calls_each_paid() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Arc::new(Scripted::new("s", &WORDS, 100, End::Done));
    let p = builder(repo.clone())
        .backend(agent.clone())
        .build()
        .unwrap();
    let q = "How do I say no kindly?";
    let (a, b) = tokio::join!(
        p.stream(ask(u, q), SubscriptionTier::Free),
        p.stream(ask(u, q), SubscriptionTier::Free)
    );
    let (a, b) = tokio::join!(drain(a.unwrap()), drain(b.unwrap()));
    let (a, b) = (a.1.unwrap(), b.1.unwrap());
    let call = cost_at(PRICE, USAGE.input_tokens, USAGE.output_tokens);
    assert_eq!(agent.calls(), 2);
    assert_eq!((a.cost_nanos, b.cost_nanos), (call, call));
    assert!(!a.coalesced && !b.coalesced);
    assert_eq!(p.ledger().user_today(u), 2 * call);
    p.shutdown().await.unwrap();
    assert_eq!(rows(&repo, u).await.len(), 2);
}
