//! `PgBudget` reservations against a bare `UPDATE … RETURNING` round trip, in the
//! same run, on the same kind of pool (deadpool-postgres, one connection, as the
//! application login). Issue 13's bar: a shared guard costs at most 1.3× its bare
//! round trip.
//!
//! - `bare_update_returning`: `UPDATE bench_counter SET n = n + 1 WHERE id = 1
//!   RETURNING n` on a two-column table without RLS.
//! - `reserve_user_caps`: one reservation under the default budgets (the user's daily
//!   and monthly caps).
//! - `reserve_user_and_global_caps`: with global daily and monthly caps too (the
//!   global line is locked as well).
//! - `reserve_user_caps_1000_users`: the same spread over 1,000 users.
//! - `reserve_then_settle` beside `two_bare_updates`: the whole life of a hold.
//!
//! Needs PostgreSQL at `$DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), as a superuser for the set-up; the
//! benchmark itself runs as a login that is only a member of `kasama_app`.
//!
//! ```text
//! cargo bench --bench shared_budget
//! ```

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use kasama::pipeline::{Budgets, PgBudget};
use kasama::prelude::*;
use kasama::repository::postgres::{MIGRATIONS, migrate_url};
use tokio::runtime::Runtime;
use tokio_postgres::config::Host;
use tokio_postgres::{Config, NoTls};

const LOGIN: &str = "kasama_bench_login";

fn conn(base: &Config, user: &str, db: &str) -> String {
    let host = match base.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = base.get_ports().first().copied().unwrap_or(5432);
    format!("host={host} port={port} user={user} dbname={db} sslmode=disable")
}

struct Setup {
    budget: Arc<PgBudget>,
    raw: deadpool_postgres::Pool,
}

async fn setup() -> Setup {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let base = Config::from_str(&url).unwrap();
    let admin_user = base.get_user().unwrap_or("postgres").to_string();
    let (admin, c) = tokio_postgres::connect(
        &conn(&base, &admin_user, base.get_dbname().unwrap_or("postgres")),
        NoTls,
    )
    .await
    .expect("the bench needs PostgreSQL");
    tokio::spawn(c);
    let hash = MIGRATIONS
        .iter()
        .flat_map(|m| m.checksum().into_bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let db = format!("kasama_bench_budget_{hash:016x}");
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    migrate_url(&conn(&base, &admin_user, &db)).await.unwrap();
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {LOGIN} LOGIN IN ROLE kasama_app;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        ))
        .await
        .unwrap();
    let (owner, c) = tokio_postgres::connect(&conn(&base, &admin_user, &db), NoTls)
        .await
        .unwrap();
    tokio::spawn(c);
    owner
        .batch_execute(&format!(
            "CREATE TABLE bench_counter (id int PRIMARY KEY, n bigint NOT NULL);
             INSERT INTO bench_counter VALUES (1, 0);
             GRANT SELECT, UPDATE ON bench_counter TO {LOGIN};"
        ))
        .await
        .unwrap();
    let mut cfg = PgConfig::new(conn(&base, LOGIN, &db));
    cfg.max_size = 1;
    let budget = PgRepository::connect(&cfg).unwrap();
    let raw = PgRepository::connect(&cfg).unwrap();
    Setup {
        budget: Arc::new(PgBudget::new(budget.pool().clone())),
        raw: raw.pool().clone(),
    }
}

async fn bare(pool: &deadpool_postgres::Pool) {
    let c = pool.get().await.unwrap();
    let st = c
        .prepare_cached("UPDATE bench_counter SET n = n + 1 WHERE id = 1 RETURNING n")
        .await
        .unwrap();
    let n: i64 = c.query_one(&st, &[]).await.unwrap().get(0);
    std::hint::black_box(n);
}

fn benches(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let s = rt.block_on(setup());
    let user = UserId::new();
    let defaults = Budgets::default();
    let global = Budgets {
        global_daily: Some(u64::MAX / 4),
        global_monthly: Some(u64::MAX / 4),
        ..Budgets::default()
    };
    let mut g = c.benchmark_group("shared_budget");
    g.bench_function("bare_update_returning", |b| {
        b.to_async(&rt).iter(|| bare(&s.raw))
    });
    for (name, budgets) in [
        ("reserve_user_caps", defaults),
        ("reserve_user_and_global_caps", global),
    ] {
        g.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|n| {
                let budget = s.budget.clone();
                async move {
                    // Each hold is released before the next reservation (outside the
                    // timing), so holds never pile up.
                    let mut took = Duration::ZERO;
                    for _ in 0..n {
                        let t = Instant::now();
                        let h = budget
                            .reserve(user, SubscriptionTier::Free, 1, &budgets)
                            .await
                            .unwrap();
                        took += t.elapsed();
                        h.settle(0);
                        budget.flush().await;
                    }
                    took
                }
            })
        });
    }
    // The same, spread over 1,000 users (as traffic is): each user's own holds,
    // live and dead, are few.
    let many: Vec<UserId> = (0..1000).map(|_| UserId::new()).collect();
    g.bench_function("reserve_user_caps_1000_users", |b| {
        b.to_async(&rt).iter_custom(|n| {
            let budget = s.budget.clone();
            let many = many.clone();
            async move {
                let mut took = Duration::ZERO;
                for i in 0..n {
                    let u = many[(i % 1000) as usize];
                    let t = Instant::now();
                    let h = budget
                        .reserve(u, SubscriptionTier::Free, 1, &defaults)
                        .await
                        .unwrap();
                    took += t.elapsed();
                    h.settle(0);
                    budget.flush().await;
                }
                took
            }
        })
    });
    g.bench_function("two_bare_updates", |b| {
        b.to_async(&rt).iter(|| async {
            bare(&s.raw).await;
            bare(&s.raw).await;
        })
    });
    g.bench_function("reserve_then_settle", |b| {
        b.to_async(&rt).iter(|| async {
            let h = s
                .budget
                .reserve(user, SubscriptionTier::Free, 1, &defaults)
                .await
                .unwrap();
            h.settle(0);
            s.budget.flush().await;
        })
    });
    g.finish();
}

criterion_group! {
    name = group;
    config = Criterion::default()
        .sample_size(50)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(group);
