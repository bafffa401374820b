//! Set-up shared by the AI pipeline tests (tests/pipeline*, both folders and files):
//! an in-memory repository, users with profiles, pipeline builders whose limits never
//! bite, and the interactions recorded for a user.

use std::sync::Arc;

use kasama::agent::Usage;
use kasama::pipeline::{
    AiPipeline, AiPipelineBuilder, Budgets, Price, PriceTable, RateLimitConfig,
};
use kasama::prelude::*;

/// The price of every model in [`builder`]'s table.
pub const PRICE: Price = Price {
    input_micros_per_1k: 25_000,
    output_micros_per_1k: 75_000,
};

/// The usage of one answer of the tests' scripted backends.
pub const ONE_CALL: Usage = Usage {
    input_tokens: 120,
    output_tokens: 200,
};

/// A fresh in-memory repository.
pub fn memory() -> Arc<dyn Repository> {
    Arc::new(InMemoryRepository::new())
}

/// `n` new users, each with a profile (created by the service).
pub async fn users(repo: &Arc<dyn Repository>, n: usize) -> Vec<UserId> {
    let mut v = Vec::new();
    for i in 0..n {
        let u = UserId::new();
        repo.create_profile(
            Actor::Service,
            NewProfile::new(u, format!("u{i}-{u}@example.com"), format!("U{i}")),
        )
        .await
        .unwrap();
        v.push(u);
    }
    v
}

/// A pipeline builder whose rate limits and budgets never bite.
pub fn relaxed(repo: Arc<dyn Repository>) -> AiPipelineBuilder {
    AiPipeline::builder(repo)
        .rate_limits(RateLimitConfig::unlimited())
        .budgets(Budgets::unlimited())
}

/// [`relaxed`], with every model priced at [`PRICE`].
pub fn builder(repo: Arc<dyn Repository>) -> AiPipelineBuilder {
    relaxed(repo).prices(PriceTable {
        default: PRICE,
        ..Default::default()
    })
}

/// Every interaction recorded for `u` (up to 500), as the service sees them.
pub async fn rows(repo: &Arc<dyn Repository>, u: UserId) -> Vec<AiInteraction> {
    repo.list_interactions(
        Actor::Service,
        u,
        Page {
            limit: 500,
            offset: 0,
        },
    )
    .await
    .unwrap()
}
