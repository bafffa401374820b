//! Refusals before any byte, and shutdown waiting for a stream.

use super::*;

#[tokio::test(start_paused = true)]
async fn rate_limits_and_budgets_refuse_a_stream_before_any_backend_call() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Arc::new(Scripted::new("s", &WORDS, 10, End::Done));
    let one = Quota::per_hour(NonZeroU32::new(1).unwrap());
    let limits = RateLimitConfig {
        ai_per_user: TierQuotas {
            free: one,
            premium: one,
            enterprise: one,
        },
        ..RateLimitConfig::unlimited()
    };
    let p = builder(repo.clone())
        .backend(agent.clone())
        .rate_limits(limits)
        .build()
        .unwrap();
    let (_, done) = drain(
        p.stream(ask(u, "first"), SubscriptionTier::Free)
            .await
            .unwrap(),
    )
    .await;
    done.unwrap();
    let refused = p.stream(ask(u, "second"), SubscriptionTier::Free).await;
    assert!(
        matches!(refused, Err(Error::RateLimited { .. })),
        "{refused:?}"
    );
    assert_eq!(agent.calls(), 1);
    p.shutdown().await.unwrap();

    // A budget the first call uses up (a soft cap: the last call admitted may pass
    // it by its own cost); the second is refused.
    let agent = Arc::new(Scripted::new("s", &WORDS, 10, End::Done));
    let p = builder(repo.clone())
        .backend(agent.clone())
        .budgets(Budgets {
            free_user_daily: Some(1_000),
            ..Budgets::unlimited()
        })
        .build()
        .unwrap();
    let (_, done) = drain(
        p.stream(ask(u, "third"), SubscriptionTier::Free)
            .await
            .unwrap(),
    )
    .await;
    done.unwrap();
    let refused = p.stream(ask(u, "fourth"), SubscriptionTier::Free).await;
    assert!(
        matches!(refused, Err(Error::BudgetExceeded { .. })),
        "{refused:?}"
    );
    assert_eq!(agent.calls(), 1, "no backend call for the refused one");
    assert_eq!(p.ledger().user_reserved(u), 0);
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_an_active_stream() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Arc::new(Scripted::new("s", &WORDS, 1_000, End::Done));
    let p = Arc::new(
        builder(repo.clone())
            .backend(agent.clone())
            .build()
            .unwrap(),
    );
    let mut s = p
        .stream(ask(u, "Can we talk later?"), SubscriptionTier::Free)
        .await
        .unwrap();
    assert!(matches!(s.next().await, Some(Ok(StreamItem::Delta(_)))));
    let closing = tokio::spawn({
        let p = p.clone();
        async move { p.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!closing.is_finished(), "shutdown waits for the stream");
    let refused = p.stream(ask(u, "And now?"), SubscriptionTier::Free).await;
    assert!(
        matches!(refused, Err(Error::Overloaded { .. })),
        "{refused:?}"
    );
    let (rest, done) = drain(s).await;
    assert_eq!(rest.len(), WORDS.len() - 1);
    done.unwrap();
    let stats = closing.await.unwrap().unwrap();
    assert_eq!(
        stats.written, 1,
        "the stream's row is written before shutdown ends"
    );
    assert_eq!(rows(&repo, u).await.len(), 1);
}
