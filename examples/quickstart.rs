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
//! questions — some repeated, some paraphrased — spread over a day. Requests go through
//! the AI pipeline (rate limits, semantic cache, budgets, batching and coalescing,
//! routing over three simulated backends, one of them flaky with an outage), are
//! recorded, counted by the change feed and measured. On the in-memory defaults the
//! day runs on tokio's paused clock: it takes seconds, and for a given seed everything,
//! timings included, comes out the same. With `DATABASE_URL` (the app's login role;
//! `KASAMA_MIGRATION_URL`, the owner, migrates first when set) it runs on PostgreSQL in
//! real time: the simulated latencies divided by 20 and the day squeezed into 20 s.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use kasama::agent::{AiRequest, SimulatedAgent};
use kasama::health::{Alert, HealthMonitor};
use kasama::metrics::{InMemoryMetrics, MetricsSink};
use kasama::pipeline::{AiPipeline, Price, PriceTable};
use kasama::prelude::*;
use kasama::realtime::{
    ChangeTable, Channel, Hub, MemoryRealtime, PgRealtime, PgRealtimeConfig, Realtime,
    RealtimeEvent,
};
use kasama::repository::MeteredRepository;
use kasama::semantic::{HashingEmbedder, SemanticCache};
use serde::Serialize;

struct Args {
    users: usize,
    requests: usize,
    seed: u64,
    json: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        users: 1000,
        requests: 3000,
        seed: 42,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(f) = it.next() {
        let mut val = || it.next().ok_or(format!("{f} needs a value"));
        match f.as_str() {
            "--users" => a.users = val()?.parse().map_err(|e| format!("--users: {e}"))?,
            "--requests" => a.requests = val()?.parse().map_err(|e| format!("--requests: {e}"))?,
            "--seed" => a.seed = val()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--json" => a.json = Some(val()?),
            "-h" | "--help" => {
                return Err(
                    "usage: quickstart [--users N] [--requests N] [--seed N] [--json PATH]".into(),
                );
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.users == 0 || a.requests == 0 {
        return Err("--users and --requests must be positive".into());
    }
    Ok(a)
}

/// SplitMix64, seeded: every choice of the simulation comes from here.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

const TOPICS: &[&str] = &[
    "money",
    "chores",
    "in-laws",
    "holidays",
    "screen time",
    "intimacy",
    "jealousy",
    "career moves",
    "friends",
    "sleep",
];

/// (question, paraphrase) pairs per agent; `{t}` is a topic.
fn questions(agent: AgentType) -> &'static [(&'static str, &'static str)] {
    match agent {
        AgentType::AssessmentAnalyst => &[
            (
                "What does my attachment style result mean for arguments about {t}?",
                "How does my attachment style show up when we argue about {t}?",
            ),
            (
                "Why did I score low on conflict resolution around {t}?",
                "What explains my low conflict resolution score around {t}?",
            ),
        ],
        AgentType::LearningCoach => &[
            (
                "How can we talk about {t} without fighting?",
                "How do we discuss {t} without a fight?",
            ),
            (
                "What practice helps couples agree on {t}?",
                "Which practice helps couples reach agreement on {t}?",
            ),
            (
                "How do I start a calm conversation about {t}?",
                "How can I begin a calm conversation about {t}?",
            ),
        ],
        AgentType::ProgressTracker => &[
            (
                "How am I doing with my practices this week?",
                "How is my practice going this week?",
            ),
            (
                "Am I keeping my streak on {t} exercises?",
                "Is my streak on {t} exercises still going?",
            ),
        ],
        AgentType::InsightGenerator => &[
            (
                "What patterns do couples show around {t}?",
                "Which patterns do couples tend to show around {t}?",
            ),
            (
                "Why do arguments about {t} keep coming back?",
                "Why do fights about {t} keep coming back?",
            ),
        ],
        AgentType::CommunicationAdvisor => &[
            (
                "How should I phrase my worries about {t}?",
                "How can I phrase my worries about {t}?",
            ),
            (
                "What can I say when my partner shuts down about {t}?",
                "What should I say when my partner shuts down about {t}?",
            ),
        ],
    }
}

#[derive(Serialize)]
struct Report {
    seed: u64,
    store: &'static str,
    clock: &'static str,
    users: usize,
    users_by_tier: BTreeMap<&'static str, usize>,
    requests: usize,
    answered: usize,
    refused_or_failed: BTreeMap<String, usize>,
    cache: CacheReport,
    backend: BackendReport,
    cost: CostReport,
    latency_ms: BTreeMap<String, Percentiles>,
    realtime_events: u64,
    breaker_trips: BTreeMap<String, u64>,
    alerts: Vec<String>,
    interactions_recorded: u64,
}

#[derive(Serialize)]
struct CacheReport {
    exact_hits: u64,
    semantic_hits: u64,
    misses: u64,
    hit_rate: f64,
    exact_hit_rate: f64,
    semantic_hit_rate: f64,
}

#[derive(Serialize)]
struct BackendReport {
    requests_reaching_batcher: u64,
    coalesced: u64,
    distinct_sent: u64,
    batches: u64,
    backend_calls_including_retries: u64,
    calls_saved_vs_one_call_per_request: f64,
}

#[derive(Serialize)]
struct CostReport {
    spent_usd: f64,
    saved_by_cache_usd: f64,
    saved_by_coalescing_usd: f64,
    without_optimisations_usd: f64,
    per_user_per_month_usd: f64,
    per_user_per_month_without_optimisations_usd: f64,
    target_per_user_per_month_usd: f64,
}

#[derive(Serialize)]
struct Percentiles {
    count: u64,
    p50: f64,
    p95: f64,
    p99: f64,
}

fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("quickstart: {e}");
            return std::process::ExitCode::from(2);
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
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(a: Args, pg: Option<String>) -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = Rng(a.seed);
    let metrics = Arc::new(InMemoryMetrics::new());
    // Real time (PostgreSQL): backend latencies ÷ 20, and the day squeezed into 20 s.
    let scale = if pg.is_some() { 20 } else { 1 };
    let day_scale: u64 = if pg.is_some() { 4320 } else { 1 };
    let (repo, realtime): (Arc<dyn Repository>, Box<dyn Realtime>) = match &pg {
        None => {
            let hub = Hub::new(100_000);
            let inner = InMemoryRepository::new().with_change_feed(hub.clone());
            (
                Arc::new(MeteredRepository::new(inner, metrics.clone())),
                Box::new(MemoryRealtime::new(hub)),
            )
        }
        Some(url) => {
            if let Some(owner) = std::env::var("KASAMA_MIGRATION_URL")
                .ok()
                .filter(|s| !s.is_empty())
            {
                kasama::repository::postgres::migrate_url(&owner).await?;
            }
            let pgr = PgRepository::connect(&PgConfig::new(url.clone()))?;
            pgr.verify().await?;
            pgr.ensure_partitions(3, 8).await?;
            let feed = PgRealtime::start_with_metrics(
                PgRealtimeConfig {
                    url: url.clone(),
                    buffer: 100_000,
                    ..Default::default()
                },
                metrics.clone(),
            )?;
            feed.wait_connected(Duration::from_secs(10)).await;
            (
                Arc::new(MeteredRepository::new(pgr, metrics.clone())),
                Box::new(feed),
            )
        }
    };
    let mut feeds = Vec::new();
    for t in [
        ChangeTable::Assessments,
        ChangeTable::Progress,
        ChangeTable::Goals,
        ChangeTable::Notifications,
    ] {
        feeds.push(realtime.subscribe(Actor::Service, Channel::Table(t))?);
    }
    let events = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for mut f in feeds {
        let ev = events.clone();
        tokio::spawn(async move {
            while let Some(e) = f.next_event().await {
                if matches!(e, RealtimeEvent::Change(_)) {
                    ev.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
    }

    // The catalogue and the users.
    let mut practices = Vec::new();
    for (i, (title, cat, d)) in [
        (
            "Active listening",
            "communication",
            DifficultyLevel::Beginner,
        ),
        (
            "Breathing together",
            "mindfulness",
            DifficultyLevel::Beginner,
        ),
        (
            "Appreciation ritual",
            "gratitude",
            DifficultyLevel::Beginner,
        ),
        (
            "Fair fighting rules",
            "conflict",
            DifficultyLevel::Intermediate,
        ),
        (
            "Weekly check-in",
            "communication",
            DifficultyLevel::Intermediate,
        ),
        ("Repair attempts", "conflict", DifficultyLevel::Advanced),
    ]
    .into_iter()
    .enumerate()
    {
        practices.push(
            repo.create_practice(
                Actor::Service,
                NewPractice {
                    title: title.into(),
                    description: format!("{title}: a {cat} practice for couples"),
                    category: cat.into(),
                    difficulty: d,
                    tags: vec![cat.into()],
                    duration_minutes: 10 + 5 * i as i32,
                },
            )
            .await?
            .id,
        );
    }
    let mut users = Vec::new();
    let mut by_tier: BTreeMap<&'static str, usize> = BTreeMap::new();
    for i in 0..a.users {
        let tier = match rng.below(100) {
            0..70 => SubscriptionTier::Free,
            70..95 => SubscriptionTier::Premium,
            _ => SubscriptionTier::Enterprise,
        };
        // Seeded ids in memory (the simulated backends draw from the request's content,
        // user included); fresh ones on PostgreSQL, where earlier runs' users remain.
        let seeded = UserId(uuid::Uuid::from_u64_pair(rng.next(), rng.next()));
        let id = if pg.is_some() { UserId::new() } else { seeded };
        let mut p = NewProfile::new(id, format!("user{i}-{id}@example.com"), format!("User {i}"));
        p.subscription_tier = tier;
        repo.create_profile(Actor::Service, p).await?;
        *by_tier.entry(tier.as_str()).or_default() += 1;
        users.push((id, tier));
    }
    for (u, _) in &users {
        let me = Actor::User(*u);
        let asmt = repo
            .create_assessment(
                me,
                NewAssessment {
                    user_id: *u,
                    assessment_type: "attachment_style".into(),
                    title: "Attachment style".into(),
                    created_at: None,
                },
            )
            .await?;
        let answers = (0..5)
            .map(|q| NewAnswer {
                question_id: format!("q{q}"),
                answer: serde_json::json!(q),
                score: Some(20 * q),
            })
            .collect();
        repo.answer_assessment(me, asmt.id, answers).await?;
        repo.complete_assessment(
            me,
            asmt.id,
            40 + rng.below(60) as i32,
            serde_json::json!({"style": "secure"}),
        )
        .await?;
        repo.create_goal(
            me,
            NewGoal {
                user_id: *u,
                title: "Weekly check-ins".into(),
                description: String::new(),
                category: "communication".into(),
                target_date: None,
                milestones: vec!["first".into()],
            },
        )
        .await?;
        for _ in 0..1 + rng.below(3) {
            let mut e = NewProgress::practice(
                *u,
                practices[rng.below(practices.len())],
                5 + rng.below(25) as i32,
            );
            e.rating = Some(1 + rng.below(5) as i16);
            e.mood_before = Some(3 + rng.below(4) as i16);
            e.mood_after = Some(5 + rng.below(5) as i16);
            repo.log_progress(me, e).await?;
        }
    }

    // Three backends; the cheapest is flaky and has an outage.
    let ms = |m: u64| Duration::from_millis(m / scale);
    let primary = Arc::new(
        SimulatedAgent::builder("primary")
            .seed(a.seed)
            .latency(ms(700), ms(1600))
            .model("coach-large")
            .build()?,
    );
    let secondary = Arc::new(
        SimulatedAgent::builder("secondary")
            .seed(a.seed + 1)
            .latency(ms(900), ms(2200))
            .model("coach-medium")
            .build()?,
    );
    let flaky = Arc::new(
        SimulatedAgent::builder("flaky")
            .seed(a.seed + 2)
            .latency(ms(500), ms(1200))
            .failure_rate(0.25)
            .outage(
                Duration::from_millis(3 * 3_600_000 / day_scale),
                Duration::from_millis(1_800_000 / day_scale),
            )
            .model("coach-small")
            .build()?,
    );
    let p = |i, o| Price {
        input_micros_per_1k: i,
        output_micros_per_1k: o,
    };
    let prices = PriceTable::default()
        .with("coach-large", p(20_000, 60_000))
        .with("coach-medium", p(15_000, 45_000))
        .with("coach-small", p(10_000, 30_000));
    let cache = Arc::new(
        SemanticCache::builder(Arc::new(HashingEmbedder::new()))
            .shared(AgentType::LearningCoach)
            .shared(AgentType::InsightGenerator)
            .build()?,
    );
    let pipeline = Arc::new(
        AiPipeline::builder(repo.clone())
            .backend_priced(primary.clone(), p(20_000, 60_000))
            .backend_priced(secondary.clone(), p(15_000, 45_000))
            .backend_priced(flaky.clone(), p(10_000, 30_000))
            .prices(prices)
            .semantic_cache(cache.clone())
            .metrics(metrics.clone() as Arc<dyn MetricsSink>)
            .build()?,
    );
    let alerts: Arc<Mutex<Vec<Alert>>> = Arc::default();
    let al = alerts.clone();
    let monitor = Arc::new(
        HealthMonitor::new(metrics.clone())
            .with_repository(repo.clone())
            .on_alert(move |a| al.lock().unwrap().push(a.clone())),
    );
    let monitor_task = monitor
        .clone()
        .spawn(Duration::from_millis(600_000 / day_scale));

    // The day's AI requests, at seeded moments.
    let day = Duration::from_millis(24 * 3_600_000 / day_scale);
    let mut asked: Vec<Vec<String>> = vec![Vec::new(); users.len()];
    let mut plan = Vec::with_capacity(a.requests);
    for _ in 0..a.requests {
        let ui = rng.below(users.len());
        let agent = AgentType::ALL[rng.below(5)];
        let qs = questions(agent);
        let (q, para) = qs[rng.below(qs.len())];
        let topic = TOPICS[rng.below(TOPICS.len())];
        let text = if !asked[ui].is_empty() && rng.chance(0.25) {
            asked[ui][rng.below(asked[ui].len())].clone()
        } else if rng.chance(0.3) {
            para.replace("{t}", topic)
        } else if rng.chance(0.5) {
            q.replace("{t}", topic)
        } else {
            format!(
                "{} My situation: week {}, day {}.",
                q.replace("{t}", topic),
                rng.below(52),
                rng.below(7)
            )
        };
        asked[ui].push(text.clone());
        let at = Duration::from_millis(rng.next() % day.as_millis() as u64);
        plan.push((at, users[ui], agent, text));
    }
    plan.sort_by_key(|x| x.0);
    let bar = ProgressBar::new(a.requests as u64);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} requests ({msg})").unwrap());
    let start = tokio::time::Instant::now();
    let outcomes: Arc<Mutex<(usize, BTreeMap<String, usize>)>> = Arc::default();
    let mut tasks = Vec::new();
    for (at, (u, tier), agent, text) in plan {
        let (pipeline, outcomes, bar) = (pipeline.clone(), outcomes.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start + at).await;
            let r = pipeline
                .complete(AiRequest::new(u, agent, text), tier)
                .await;
            let mut o = outcomes.lock().unwrap();
            match r {
                Ok(_) => o.0 += 1,
                Err(e) => *o.1.entry(e.kind().to_string()).or_default() += 1,
            }
            bar.inc(1);
        }));
    }
    for t in tasks {
        t.await?;
    }
    bar.finish_with_message("done");
    let recorded = pipeline.shutdown().await?.written;
    monitor.evaluate().await;
    monitor_task.abort();
    tokio::time::sleep(Duration::from_millis(50)).await; // let the feed counters drain

    // The report.
    let snap = metrics.snapshot();
    let cs = cache.stats();
    let bs = pipeline.batch_stats();
    let (answered, failed) = outcomes.lock().unwrap().clone();
    let total_calls = primary.calls() + secondary.calls() + flaky.calls();
    let spend = pipeline.ledger().total();
    let lookups = cs.exact_hits + cs.semantic_hits + cs.misses;
    let rate = |n: u64| {
        if lookups == 0 {
            0.0
        } else {
            n as f64 / lookups as f64
        }
    };
    let usd = |n: f64| n / 1e9;
    // Exact, from the ledger: each coalesced request saved what its shared call cost.
    let coalesce_saved = spend.saved_by_coalescing_nanos as f64;
    let cache_saved = (spend.saved_nanos - spend.saved_by_coalescing_nanos) as f64;
    let without = spend.cost_nanos as f64 + spend.saved_nanos as f64;
    let month = |n: f64| usd(n) / a.users as f64 * 30.0;
    let pct = |s: &kasama::metrics::LatencySummary| Percentiles {
        count: s.count,
        p50: s.p50_ms * scale as f64,
        p95: s.p95_ms * scale as f64,
        p99: s.p99_ms * scale as f64,
    };
    let mut latency = BTreeMap::new();
    latency.insert("ai end to end".to_string(), pct(&snap.ai));
    latency.insert("ai answered by a backend".to_string(), {
        let n: u64 = snap.ai_backends.iter().map(|b| b.latency.count).sum();
        let w = |f: fn(&kasama::metrics::LatencySummary) -> f64| {
            if n == 0 {
                0.0
            } else {
                snap.ai_backends
                    .iter()
                    .map(|b| f(&b.latency) * b.latency.count as f64)
                    .sum::<f64>()
                    / n as f64
                    * scale as f64
            }
        };
        // A count-weighted blend of the backends' percentiles (an approximation).
        Percentiles {
            count: n,
            p50: w(|l| l.p50_ms),
            p95: w(|l| l.p95_ms),
            p99: w(|l| l.p99_ms),
        }
    });
    for b in &snap.ai_backends {
        latency.insert(format!("backend {}", b.name), pct(&b.latency));
    }
    latency.insert(
        "database".to_string(),
        Percentiles {
            count: snap.db.count,
            p50: snap.db.p50_ms,
            p95: snap.db.p95_ms,
            p99: snap.db.p99_ms,
        },
    );
    if snap.realtime.count > 0 {
        latency.insert(
            "realtime delivery".to_string(),
            Percentiles {
                count: snap.realtime.count,
                p50: snap.realtime.p50_ms,
                p95: snap.realtime.p95_ms,
                p99: snap.realtime.p99_ms,
            },
        );
    }
    let report = Report {
        seed: a.seed,
        store: if pg.is_some() {
            "postgresql"
        } else {
            "in-memory"
        },
        clock: if pg.is_some() {
            "real time: backend latencies ÷ 20 (AI figures scaled back ×20), the day squeezed into 20 s"
        } else {
            "tokio's paused clock: a simulated day, in which computation (cache lookups, the in-memory store) takes no simulated time"
        },
        users: a.users,
        users_by_tier: by_tier,
        requests: a.requests,
        answered,
        refused_or_failed: failed,
        cache: CacheReport {
            exact_hits: cs.exact_hits,
            semantic_hits: cs.semantic_hits,
            misses: cs.misses,
            hit_rate: rate(cs.exact_hits + cs.semantic_hits),
            exact_hit_rate: rate(cs.exact_hits),
            semantic_hit_rate: rate(cs.semantic_hits),
        },
        backend: BackendReport {
            requests_reaching_batcher: bs.logical_requests,
            coalesced: bs.coalesced,
            distinct_sent: bs.distinct_requests,
            batches: bs.backend_calls,
            backend_calls_including_retries: total_calls,
            calls_saved_vs_one_call_per_request: 1.0 - total_calls as f64 / a.requests as f64,
        },
        cost: CostReport {
            spent_usd: usd(spend.cost_nanos as f64),
            saved_by_cache_usd: usd(cache_saved),
            saved_by_coalescing_usd: usd(coalesce_saved),
            without_optimisations_usd: usd(without),
            per_user_per_month_usd: month(spend.cost_nanos as f64),
            per_user_per_month_without_optimisations_usd: month(without),
            target_per_user_per_month_usd: 0.10,
        },
        latency_ms: latency,
        realtime_events: events.load(std::sync::atomic::Ordering::Relaxed),
        breaker_trips: pipeline
            .backends()
            .iter()
            .map(|b| (b.name.clone(), b.trips))
            .collect(),
        alerts: alerts
            .lock()
            .unwrap()
            .iter()
            .map(|a| format!("{:?} {:?} ({:?}): {}", a.kind, a.check, a.status, a.message))
            .collect(),
        interactions_recorded: recorded,
    };
    print_report(&report);
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        println!("\nJSON report written to {path}");
    }
    Ok(())
}

fn print_report(r: &Report) {
    println!(
        "\nkasama quickstart — one simulated day (seed {}, {} store; {})",
        r.seed, r.store, r.clock
    );
    println!(
        "users: {} ({})",
        r.users,
        r.users_by_tier
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "AI requests: {}  answered {}  refused/failed {}",
        r.requests,
        r.answered,
        if r.refused_or_failed.is_empty() {
            "none".to_string()
        } else {
            r.refused_or_failed
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let c = &r.cache;
    println!(
        "semantic cache: hit rate {:.1} % (exact {:.1} %, paraphrase {:.1} %); {} misses",
        100.0 * c.hit_rate,
        100.0 * c.exact_hit_rate,
        100.0 * c.semantic_hit_rate,
        c.misses
    );
    let b = &r.backend;
    println!(
        "backends: {} requests reached the batcher, {} coalesced into in-flight twins, {} sent in {} batches; {} backend calls in all (retries included): {:.1} % fewer than one per request",
        b.requests_reaching_batcher,
        b.coalesced,
        b.distinct_sent,
        b.batches,
        b.backend_calls_including_retries,
        100.0 * b.calls_saved_vs_one_call_per_request
    );
    let k = &r.cost;
    println!(
        "cost: ${:.4} spent; ${:.4} saved by the cache, ${:.4} by coalescing; ${:.4} without them",
        k.spent_usd, k.saved_by_cache_usd, k.saved_by_coalescing_usd, k.without_optimisations_usd
    );
    println!(
        "projected per user per month: ${:.4} (without optimisations ${:.4}) — target < ${:.2}: {}",
        k.per_user_per_month_usd,
        k.per_user_per_month_without_optimisations_usd,
        k.target_per_user_per_month_usd,
        if k.per_user_per_month_usd < k.target_per_user_per_month_usd {
            "met"
        } else {
            "NOT met"
        }
    );
    println!("latency (ms)              count       p50       p95       p99");
    for (name, p) in &r.latency_ms {
        println!(
            "  {name:<22} {:>8} {:>9.1} {:>9.1} {:>9.1}",
            p.count, p.p50, p.p95, p.p99
        );
    }
    println!("realtime: {} change events delivered", r.realtime_events);
    println!(
        "breaker trips: {}",
        r.breaker_trips
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("interactions recorded: {}", r.interactions_recorded);
    if r.alerts.is_empty() {
        println!("alerts: none");
    } else {
        println!("alerts: {}", r.alerts.len());
        for a in r.alerts.iter().take(8) {
            println!("  {a}");
        }
        if r.alerts.len() > 8 {
            println!("  … and {} more (all in --json)", r.alerts.len() - 8);
        }
    }
}
