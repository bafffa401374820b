//! Realtime delivery on loopback PostgreSQL: commit-to-subscriber latency (database
//! clock at the trigger to arrival in the subscriber's stream, same host) with 1 and
//! with 1,000 subscribers on the changed user's channel, and events per second through
//! one listener. Target p99 ≤ 10 ms (the product's bar: 100 ms).
//!
//! ```text
//! cargo bench --bench realtime
//! ```
//!
//! Needs PostgreSQL at `$DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), as a superuser for the set-up.

use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::Utc;
use kasama::prelude::*;
use kasama::realtime::{
    Channel, PgRealtime, PgRealtimeConfig, Realtime, RealtimeEvent, Subscription,
};
use kasama::repository::postgres::{MIGRATIONS, migrate_url};
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;

fn conn(base: &tokio_postgres::Config, db: &str) -> String {
    let host = match base.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = base.get_ports().first().copied().unwrap_or(5432);
    let user = base.get_user().unwrap_or("postgres");
    // Plaintext, like the NoTls baselines, so the ratios compare like with like.
    format!("host={host} port={port} user={user} dbname={db} sslmode=disable")
}

async fn latency_of(sub: &mut Subscription) -> Duration {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), sub.next_event()).await {
            Ok(Some(RealtimeEvent::Change(e))) => {
                return (Utc::now() - e.at).to_std().unwrap_or(Duration::ZERO);
            }
            Ok(Some(_)) => continue,
            _ => panic!("no event within 10 s"),
        }
    }
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let base = tokio_postgres::Config::from_str(&url).unwrap();
    let hash = MIGRATIONS
        .iter()
        .flat_map(|m| m.checksum().into_bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let db = format!("kasama_rtbench_{hash:016x}");
    let (admin, c) =
        tokio_postgres::connect(&conn(&base, base.get_dbname().unwrap_or("postgres")), NoTls)
            .await
            .unwrap();
    tokio::spawn(c);
    if admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
        .await
        .unwrap()
        .is_none()
    {
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
    }
    migrate_url(&conn(&base, &db)).await.unwrap();
    // The app's side runs as a login that is only a member of kasama_app (the
    // repository refuses roles that bypass row-level security).
    admin
        .batch_execute(
            "DO $$ BEGIN CREATE ROLE kasama_bench_login LOGIN IN ROLE kasama_app;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
        )
        .await
        .unwrap();
    let app = conn(&base, &db).replace(
        &format!("user={}", base.get_user().unwrap_or("postgres")),
        "user=kasama_bench_login",
    );
    let repo = PgRepository::connect(&PgConfig::new(app.clone())).unwrap();
    let rt = PgRealtime::start(PgRealtimeConfig {
        url: app,
        buffer: 20_000,
        ..Default::default()
    })
    .unwrap();
    assert!(
        rt.wait_connected(Duration::from_secs(10)).await,
        "listener connected"
    );
    let u = UserId::new();
    repo.create_profile(
        Actor::Service,
        NewProfile::new(u, format!("{u}@example.com"), "Bench"),
    )
    .await
    .unwrap();
    let goal = |i: usize| NewGoal {
        user_id: u,
        title: format!("g{i}"),
        description: String::new(),
        category: "c".into(),
        target_date: None,
        milestones: vec![],
    };

    for subscribers in [1usize, 1000] {
        let mut subs: Vec<Subscription> = (0..subscribers)
            .map(|_| {
                rt.subscribe(
                    Actor::User(u),
                    Channel::User {
                        user: u,
                        table: None,
                    },
                )
                .unwrap()
            })
            .collect();
        let mut first = Vec::new();
        let mut last = Vec::new();
        for i in 0..300 {
            repo.create_goal(Actor::User(u), goal(i)).await.unwrap();
            let mut worst = Duration::ZERO;
            for (k, s) in subs.iter_mut().enumerate() {
                let l = latency_of(s).await;
                if k == 0 {
                    first.push(l);
                }
                worst = worst.max(l);
            }
            last.push(worst);
        }
        println!(
            "{subscribers} subscriber(s), 300 commits: first subscriber p50 {:.2} ms p99 {:.2} ms; slowest subscriber p50 {:.2} ms p99 {:.2} ms",
            pct(&mut first, 0.5),
            pct(&mut first, 0.99),
            pct(&mut last, 0.5),
            pct(&mut last, 0.99),
        );
    }

    // Throughput: 10,000 rows in 10 transactions, counted at one subscriber.
    let mut sub = rt
        .subscribe(
            Actor::User(u),
            Channel::User {
                user: u,
                table: None,
            },
        )
        .unwrap();
    let (owner, c) = tokio_postgres::connect(&conn(&base, &db), NoTls)
        .await
        .unwrap();
    tokio::spawn(c);
    let start = Instant::now();
    for _ in 0..10 {
        owner
            .execute(
                "INSERT INTO goals (id, user_id, title, category) SELECT gen_random_uuid(), $1, 'bulk', 'c' FROM generate_series(1, 1000)",
                &[&u.0],
            )
            .await
            .unwrap();
    }
    let mut n = 0;
    while n < 10_000 {
        match tokio::time::timeout(Duration::from_secs(10), sub.next_event()).await {
            Ok(Some(RealtimeEvent::Change(_))) => n += 1,
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            _ => panic!("stalled after {n} events"),
        }
    }
    let took = start.elapsed();
    println!(
        "throughput: 10,000 events through one listener in {:.2} s = {:.0} events/s (commits included)",
        took.as_secs_f64(),
        10_000.0 / took.as_secs_f64()
    );
}
