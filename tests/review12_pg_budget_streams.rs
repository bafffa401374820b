//! Streams with a shared `PgBudget` attached: whatever becomes of a stream (read to
//! its end, its reader leaving mid-answer or before the first poll, the backend
//! failing mid-answer), its hold is settled or released exactly once in the shared
//! ledger as in the instance's own, and both books agree with the recorded rows.
//!
//! Real time: the ledger talks to a real server. No figure depends on how long
//! anything takes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, stream};
use kasama::agent::{AiResponse, AiStream, StreamEvent, Usage};
use kasama::pipeline::{Budgets, PgBudget, StreamItem};
use kasama::prelude::*;

mod common;

use common::pipeline::{builder, rows, users};

const USAGE: Usage = Usage {
    input_tokens: 100,
    output_tokens: 100,
};

/// Streams "Hello " then, by the question: "world" and the answer (`full`), an error
/// (`fail`), or nothing more, ever (`stall`).
struct Scripted;

fn answer() -> AiResponse {
    AiResponse {
        output: serde_json::json!({ "text": "Hello world" }),
        usage: USAGE,
        usage_estimated: false,
        model: "m".into(),
        backend: "scripted".into(),
        latency: Duration::from_millis(1),
    }
}

#[async_trait]
impl AiAgent for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    async fn complete(&self, _req: &AiRequest) -> kasama::Result<AiResponse> {
        Ok(answer())
    }
    async fn stream(&self, req: &AiRequest) -> kasama::Result<AiStream> {
        let first = stream::iter([Ok(StreamEvent::Delta("Hello ".into()))]);
        let rest: AiStream = match req.question().split(' ').next().unwrap_or("") {
            "full" => AiStream::new(stream::iter([
                Ok(StreamEvent::Delta("world".into())),
                Ok(StreamEvent::Done(answer())),
            ])),
            "fail" => AiStream::new(stream::iter([Err(Error::Backend {
                what: "scripted".into(),
                retryable: false,
                source: "broke mid-answer".into(),
            })])),
            _ => AiStream::new(stream::pending()),
        };
        Ok(AiStream::new(first.chain(rest)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ending_of_a_stream_is_booked_once_in_both_ledgers() {
    let db = common::pg()
        .await
        .expect("this test needs PostgreSQL (`.ci/run` starts it)");
    let repo: Arc<dyn Repository> = Arc::new(db.repo.clone());
    let u = users(&repo, 1).await[0];
    let app = PgRepository::connect(&db.app_config()).unwrap();
    let shared = Arc::new(PgBudget::new(app.pool().clone()));
    let pipeline = builder(repo.clone())
        .backend(Arc::new(Scripted))
        .budgets(Budgets {
            free_user_daily: Some(1_000_000_000),
            ..Budgets::unlimited()
        })
        .shared_budget(shared.clone())
        .build()
        .unwrap();
    let ask = |q: &str| AiRequest::new(u, AgentType::LearningCoach, q.to_string());

    // Read to the end.
    let mut s = pipeline
        .stream(ask("full answer please"), SubscriptionTier::Free)
        .await
        .unwrap();
    let mut paid = 0;
    while let Some(item) = s.next().await {
        if let StreamItem::Done(o) = item.unwrap() {
            paid = o.cost_nanos;
        }
    }
    assert!(paid > 0);

    // The backend fails after the first delta.
    let mut s = pipeline
        .stream(ask("fail mid answer"), SubscriptionTier::Free)
        .await
        .unwrap();
    let mut last = None;
    while let Some(item) = s.next().await {
        last = Some(item);
    }
    assert!(last.unwrap().is_err());

    // The reader leaves after the first delta (the backend would never end).
    let mut s = pipeline
        .stream(ask("stall forever"), SubscriptionTier::Free)
        .await
        .unwrap();
    assert!(matches!(s.next().await, Some(Ok(StreamItem::Delta(_)))));
    drop(s);

    // The reader leaves before the first poll.
    let s = pipeline
        .stream(ask("full but unread"), SubscriptionTier::Free)
        .await
        .unwrap();
    drop(s);

    pipeline.shutdown().await.unwrap();
    shared.flush().await;
    let local = pipeline.ledger().user_today(u);
    let recorded: i64 = rows(&repo, u).await.iter().map(|r| r.cost_nanos).sum();
    assert_eq!(rows(&repo, u).await.len(), 4, "one row per stream");
    assert_eq!(
        recorded,
        i64::try_from(local).unwrap(),
        "rows = local ledger"
    );
    let spent = shared.spent(u).await.unwrap();
    assert_eq!(spent.held, 0, "every shared hold settled or released");
    assert_eq!(spent.day, local, "shared ledger = local ledger");
    assert!(
        local > paid,
        "the cut streams were billed too: {local} vs {paid}"
    );
    db.finish().await;
}
