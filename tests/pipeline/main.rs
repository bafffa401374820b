//! The AI pipeline end to end (tokio's paused clock where time matters): coalescing,
//! personal scopes, breakers and failover, budgets, rate limits, bounded queues,
//! priorities, and exact recording of every interaction.
//!
//! This file holds what the parts share; each theme is a module.

#[path = "../common/mod.rs"]
mod common;

mod limits;
mod recording;
mod routing;

use std::sync::Arc;
use std::time::Duration;

use kasama::agent::SimulatedAgent;

/// A simulated backend answering in `latency_ms` to twice that, failing `failure_rate`
/// of its calls.
pub(crate) fn sim(name: &str, latency_ms: u64, failure_rate: f64) -> Arc<SimulatedAgent> {
    let l = Duration::from_millis(latency_ms);
    Arc::new(
        SimulatedAgent::builder(name)
            .latency(l, l * 2)
            .failure_rate(failure_rate)
            .build()
            .unwrap(),
    )
}
