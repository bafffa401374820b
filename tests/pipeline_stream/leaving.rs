//! A reader that goes away: mid-stream, before the first delta, between attempts;
//! and one that stops reading.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_reader_that_goes_away_mid_stream_cancels_the_call_and_is_billed_for_what_was_produced() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let words: Vec<String> = (0..10).map(|i| format!("word{i} ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let agent = Arc::new(Scripted::new("s", &words, 100, End::Done));
    let metrics = Arc::new(InMemoryMetrics::new());
    let cache = cache();
    let p = builder(repo.clone())
        .backend(agent.clone())
        .semantic_cache(cache.clone())
        .metrics(metrics.clone())
        .build()
        .unwrap();
    let req = ask(u, "Why do we keep having the same fight?");
    let mut s = p.stream(req.clone(), SubscriptionTier::Free).await.unwrap();
    let mut read = String::new();
    for _ in 0..3 {
        match s.next().await {
            Some(Ok(StreamItem::Delta(d))) => read.push_str(&d),
            other => panic!("{other:?}"),
        }
    }
    drop(s);
    tokio::time::sleep(Duration::from_secs(5)).await;

    assert_eq!(agent.cancelled(), 1, "the backend's stream was dropped");
    assert_eq!(agent.finished(), 0);
    let b = &p.backends()[0];
    assert_eq!(b.in_flight, 0, "its slot is given back");
    assert_eq!(
        b.error_rate, 0.0,
        "a reader leaving is not the backend's fault"
    );
    assert_eq!(read, words[..3].concat());
    let billed = cost_at(PRICE, input_of(&req), estimate_tokens(&read));
    assert_eq!(p.ledger().user_today(u), billed);
    assert_eq!(p.ledger().user_reserved(u), 0);
    assert!(matches!(
        cache.lookup(&req).await.unwrap(),
        Lookup::Miss { .. }
    ));
    let snap = metrics.snapshot();
    assert_eq!(snap.ai_cancelled, 1);
    assert_eq!(snap.ai.count, 0, "a reader going away is not an AI failure");
    assert_eq!(snap.ai_cost_nanos, billed, "but its cost counts");

    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].success);
    assert_eq!(rows[0].cost_nanos, billed as i64);
    assert_eq!(
        rows[0].output,
        json!({ "error": "cancelled", "text": read })
    );
}

#[tokio::test(start_paused = true)]
async fn a_reader_that_goes_away_before_the_first_delta_pays_the_input_it_sent() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Arc::new(Scripted::new("s", &WORDS, 100, End::Done).first(2_000));
    let p = builder(repo.clone())
        .backend(agent.clone())
        .build()
        .unwrap();
    let req = ask(u, "Is it normal to argue about chores?");
    let s = p.stream(req.clone(), SubscriptionTier::Free).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(s);
    tokio::time::sleep(Duration::from_secs(5)).await;

    assert_eq!(agent.cancelled(), 1, "the call was cancelled");
    let billed = cost_at(PRICE, input_of(&req), 0);
    assert_eq!(
        p.ledger().user_today(u),
        billed,
        "the prompt the backend had"
    );
    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].success);
    assert_eq!(
        (rows[0].cost_nanos, rows[0].output_tokens),
        (billed as i64, 0)
    );
}

/// Between attempts (a backoff after a failed one) no backend has the request: a
/// reader that goes away then costs nothing, and is still recorded.
#[tokio::test(start_paused = true)]
async fn a_reader_that_goes_away_between_attempts_pays_nothing() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    // Fails after 50 ms; the retry waits at least `backoff_min` (100 ms) more.
    let agent = Arc::new(
        Scripted::new("s", &WORDS, 50, End::Done)
            .first(50)
            .failing_open(),
    );
    let p = builder(repo.clone())
        .backend(agent.clone())
        .build()
        .unwrap();
    let s = p
        .stream(ask(u, "Should I wait?"), SubscriptionTier::Free)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        agent.calls(),
        1,
        "the first attempt failed; waiting to retry"
    );
    drop(s);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(agent.calls(), 1, "no retry for a reader that left");
    assert_eq!(p.ledger().user_today(u), 0);
    assert_eq!(p.ledger().user_reserved(u), 0);
    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].success);
    assert_eq!(rows[0].cost_nanos, 0);
    assert_eq!(rows[0].output, json!({ "error": "cancelled" }));
}

/// A reader that stops reading holds the backend back, and past the deadline is
/// treated as gone: the backend call is cancelled, what was produced billed, and
/// shutdown does not wait for the reader.
#[tokio::test(start_paused = true)]
async fn a_reader_that_stops_reading_is_given_up_at_the_deadline() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let words: Vec<String> = (0..100).map(|i| format!("w{i} ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let agent = Arc::new(Scripted::new("s", &words, 10, End::Done));
    let p = builder(repo.clone())
        .backend(agent.clone())
        .routing(RouterConfig {
            deadline: Duration::from_secs(5),
            ..Default::default()
        })
        .build()
        .unwrap();
    let req = ask(u, "Are you still there?");
    let mut s = p.stream(req.clone(), SubscriptionTier::Free).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        agent.cancelled() + agent.finished(),
        0,
        "held back, not ended"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(agent.cancelled(), 1, "given up at the deadline");
    // The channel's worth was sent; one more was produced and could not be.
    let produced = words[..STREAM_CHANNEL + 1].concat();
    let billed = cost_at(PRICE, input_of(&req), estimate_tokens(&produced));
    assert_eq!(p.ledger().user_today(u), billed);
    p.shutdown().await.unwrap();
    let mut read = String::new();
    while let Some(item) = s.next().await {
        match item {
            Ok(StreamItem::Delta(d)) => read.push_str(&d),
            other => panic!("no room was left for a last item: {other:?}"),
        }
    }
    assert_eq!(read, words[..STREAM_CHANNEL].concat());
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].cost_nanos, billed as i64);
    assert_eq!(rows[0].output["error"], "cancelled");
}

#[tokio::test(start_paused = true)]
async fn a_reader_that_leaves_as_the_answer_completes_pays_the_answer_as_reported() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    // One delta at 100 ms, the whole answer at 200 ms.
    let agent = Arc::new(Scripted::new("s", &["Listen first."], 100, End::Done));
    let cache = cache();
    let p = builder(repo.clone())
        .backend(agent.clone())
        .semantic_cache(cache.clone())
        .build()
        .unwrap();
    let req = ask(u, "How do I start a hard talk?");
    let start = tokio::time::Instant::now();
    let mut s = p.stream(req.clone(), SubscriptionTier::Free).await.unwrap();
    assert!(matches!(s.next().await, Some(Ok(StreamItem::Delta(_)))));
    // The reader leaves at the very moment the answer is complete.
    tokio::time::sleep_until(start + Duration::from_millis(200)).await;
    drop(s);
    tokio::time::sleep(Duration::from_secs(5)).await;

    assert_eq!(agent.finished(), 1, "the backend finished its answer");
    let exact = cost_at(PRICE, USAGE.input_tokens, USAGE.output_tokens);
    assert_eq!(
        p.ledger().user_today(u),
        exact,
        "charged as the backend reported"
    );
    assert!(
        matches!(cache.lookup(&req).await.unwrap(), Lookup::Hit { .. }),
        "a complete answer is cached"
    );
    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].success);
}
