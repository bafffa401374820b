//! The main job: a simulated day of the app through the whole stack, and a report.
//!
//! ```text
//! cargo run --release --example quickstart
//! cargo run --release --example quickstart -- --users 500 --requests 10000 --seed 7 --json report.json
//! KASAMA_MIGRATION_URL=postgres://kasama_owner@127.0.0.1/kasama \
//!   DATABASE_URL=postgres://kasama_web@127.0.0.1/kasama cargo run --release --example quickstart
//! ```
//!
//! Users across the three tiers take assessments, log practices and ask the five agents
//! questions — some repeated, some paraphrased, some as turns of a conversation whose
//! answers are streamed — spread over a day; the personal agents see the user's own
//! data. Requests go through
//! the AI pipeline (rate limits, semantic cache, budgets, batching and coalescing,
//! routing over three simulated backends, one of them flaky with an outage), are
//! recorded, counted by the change feed and measured. On the in-memory defaults the
//! day runs on tokio's paused clock: it takes seconds, and for a given seed everything,
//! timings included, comes out the same. With `DATABASE_URL` (the app's login role;
//! `KASAMA_MIGRATION_URL`, the owner, migrates first when set) it runs on PostgreSQL in
//! real time: the simulated latencies divided by 20 and the day squeezed into 20 s.
//!
//! The parts, in the order the run uses them: `args` (the flags), `stack` (the store
//! and its change feed, the backends, the pipeline, the monitor), `population` (the
//! practices, the users and their first steps), `questions` and `day` (the requests,
//! and sending them), `report` (what is printed and written); `rng` is the one
//! source of chance.

mod args;
mod day;
mod population;
mod questions;
mod report;
mod rng;
mod stack;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kasama::metrics::InMemoryMetrics;

use args::Args;
use rng::Rng;
use stack::{Ai, Scale};

fn main() -> ExitCode {
    let a = match args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("quickstart: {e}");
            return ExitCode::from(2);
        }
    };
    let pg = std::env::var("DATABASE_URL").ok().filter(|s| !s.is_empty());
    let rt = if pg.is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        // Paused: the simulated day costs no wall time, and one thread makes the run
        // reproducible for a seed.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
    }
    .expect("a runtime");
    match rt.block_on(run(a, pg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The whole run: build the parts, simulate the day, report.
async fn run(a: Args, pg: Option<String>) -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = Rng(a.seed);
    let metrics = Arc::new(InMemoryMetrics::new());
    let scale = Scale::new(pg.is_some());
    let (repo, realtime) = stack::store(pg.as_deref(), &metrics).await?;
    let events = stack::count_changes(realtime.as_ref())?;

    // The catalogue, the users and their first steps.
    let practices = population::catalogue(&repo).await?;
    let (users, by_tier) = population::users(&repo, &mut rng, a.users, pg.is_some()).await?;
    population::first_steps(&repo, &mut rng, &users, &practices).await?;

    // The AI side, watched by the health monitor.
    let ai = Ai::build(a.seed, scale, repo.clone(), metrics.clone())?;
    let (monitor, alerts, monitor_task) = stack::monitor(metrics.clone(), repo.clone(), scale);

    // The day's AI requests, at seeded moments.
    let day = Duration::from_millis(24 * 3_600_000 / scale.day);
    let plan = day::plan(&mut rng, &users, a.requests, day);
    let (outcomes, conversations) = day::run(&repo, &ai.pipeline, plan).await?;
    let recorded = ai.pipeline.shutdown().await?.written;
    monitor.evaluate().await;
    monitor_task.abort();
    tokio::time::sleep(Duration::from_millis(50)).await; // let the feed counters drain

    let report = report::build(
        report::Day {
            seed: a.seed,
            postgres: pg.is_some(),
            scale: scale.latency,
            users: a.users,
            users_by_tier: by_tier,
            requests: a.requests,
            outcomes,
            conversations,
            realtime_events: events.load(Ordering::Relaxed),
            alerts: alerts.lock().unwrap().clone(),
            recorded,
        },
        &metrics,
        &ai,
    );
    report::print(&report);
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        println!("\nJSON report written to {path}");
    }
    Ok(())
}
