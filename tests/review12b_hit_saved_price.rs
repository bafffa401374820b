//! A cache hit saves what the call it replays cost. A backend added with its own price
//! (`backend_priced`) over a model the price table does not list was charged at its
//! price on the miss, but the hit's `saved_nanos` — the outcome's, the ledger's and
//! the metrics' — was priced at the table's default, for `complete` and for a stream
//! replayed from the cache alike.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kasama::agent::CacheTier;
use kasama::pipeline::{BatchConfig, Price, PriceTable, StreamItem};
use kasama::prelude::*;
use kasama::semantic::{HashingEmbedder, SemanticCache};

use common::pipeline::{memory, relaxed, users};

#[tokio::test(start_paused = true)]
async fn a_hit_saves_what_the_call_cost_at_the_backends_own_price() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let cache = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
        .build()
        .unwrap();
    let own = Price {
        input_micros_per_1k: 1_000_000,
        output_micros_per_1k: 3_000_000,
    };
    let p = relaxed(repo.clone())
        .prices(PriceTable {
            default: Price {
                input_micros_per_1k: 1,
                output_micros_per_1k: 1,
            },
            ..Default::default()
        })
        .backend_priced(Arc::new(SimulatedAgent::instant("sim")), own)
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .semantic_cache(Arc::new(cache))
        .build()
        .unwrap();
    let ask = || AiRequest::new(u, AgentType::LearningCoach, "What should I practise today?");
    let miss = p.complete(ask(), SubscriptionTier::Premium).await.unwrap();
    assert_eq!(miss.cache, CacheTier::Miss);
    assert_eq!(miss.cost_nanos, own.cost_nanos(miss.response.usage));
    let cost = miss.cost_nanos;
    assert!(cost > 0);

    let hit = p.complete(ask(), SubscriptionTier::Premium).await.unwrap();
    assert_eq!(hit.cache, CacheTier::Exact);
    assert_eq!(hit.saved_nanos, cost, "a hit saves what the call cost");

    let mut s = p.stream(ask(), SubscriptionTier::Premium).await.unwrap();
    let mut done = None;
    while let Some(item) = s.next().await {
        if let StreamItem::Done(o) = item.unwrap() {
            done = Some(o);
        }
    }
    let replayed = done.expect("a done item");
    assert_eq!(replayed.cache, CacheTier::Exact);
    assert_eq!(
        replayed.saved_nanos, cost,
        "a replayed stream saves what the call cost"
    );

    let total = p.ledger().total();
    assert_eq!(total.cost_nanos, cost);
    assert_eq!(total.saved_nanos, 2 * cost);
    p.shutdown().await.unwrap();
}
