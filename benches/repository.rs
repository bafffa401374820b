//! Repository benchmarks against PostgreSQL, each beside its baseline.
//!
//! - `pk_read`: `PgRepository::get_goal` against the same `SELECT` on raw
//!   tokio-postgres, through an identical pool whose connection carries the user's
//!   identity at session level (so RLS does the same work and returns the same row):
//!   what the repository adds is its per-call transaction and scope. A third line,
//!   `raw_scoped_by_hand`, does that same transaction by hand on raw tokio-postgres,
//!   so the repository's own overhead reads off against it.
//! - `insert`: `PgRepository::log_progress` against the same `INSERT … RETURNING`.
//! - `user_statistics`: a user with a year of daily activity, in a database holding
//!   1,000,000 `ai_interactions` rows and 100,000 `progress` rows (seeded once into the
//!   database `kasama_bench_<schema hash>`; re-seeded when the schema changes).
//!
//! Besides criterion's report, each group prints interleaved p50/p95/p99 and the
//! repository/baseline ratio. Needs PostgreSQL at `$DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), as a superuser for the set-up.
//!
//! ```text
//! cargo bench --bench repository
//! ```

use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{Duration as Days, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use kasama::prelude::*;
use kasama::repository::postgres::{MIGRATIONS, migrate_url};
use tokio::runtime::Runtime;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

const LOGIN: &str = "kasama_bench_login";

fn conn(base: &Config, user: &str, db: &str) -> String {
    let host = match base.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = base.get_ports().first().copied().unwrap_or(5432);
    // Plaintext, like the NoTls baselines, so the ratios compare like with like.
    format!("host={host} port={port} user={user} dbname={db} sslmode=disable")
}

async fn connect(s: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(s, NoTls)
        .await
        .expect("PostgreSQL reachable");
    tokio::spawn(conn);
    c
}

struct Setup {
    repo: PgRepository,
    raw: PgRepository,
    scoped: PgRepository,
    user: UserId,
    goal: GoalId,
    practice: PracticeId,
}

async fn setup() -> Setup {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let base = Config::from_str(&url).unwrap();
    let admin_user = base.get_user().unwrap_or("postgres").to_string();
    let admin = connect(&conn(
        &base,
        &admin_user,
        base.get_dbname().unwrap_or("postgres"),
    ))
    .await;
    let hash = MIGRATIONS
        .iter()
        .flat_map(|m| m.checksum().into_bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let db = format!("kasama_bench_{hash:016x}");
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
        .await
        .unwrap()
        .is_some();
    if !exists {
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
    }
    migrate_url(&conn(&base, &admin_user, &db)).await.unwrap();
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {LOGIN} LOGIN IN ROLE kasama_app;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        ))
        .await
        .unwrap();
    let owner = connect(&conn(&base, &admin_user, &db)).await;
    seed(&owner).await;
    let ids = owner
        .query_one(
            "SELECT p.id, g.id, (SELECT id FROM practices ORDER BY title LIMIT 1)
             FROM profiles p JOIN goals g ON g.user_id = p.id WHERE p.email = 'bench@example.com'",
            &[],
        )
        .await
        .unwrap();
    let user = UserId(ids.get(0));
    let mut cfg = PgConfig::new(conn(&base, LOGIN, &db));
    cfg.max_size = 1;
    let repo = PgRepository::connect(&cfg).unwrap();
    let raw = PgRepository::connect(&cfg).unwrap();
    let scoped = PgRepository::connect(&cfg).unwrap();
    // The baseline's one connection carries the identity for its whole session.
    raw.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!("SET app.user_id = '{user}'"))
        .await
        .unwrap();
    Setup {
        repo,
        raw,
        scoped,
        user,
        goal: GoalId(ids.get(1)),
        practice: PracticeId(ids.get(2)),
    }
}

/// Seeds once: 1,000 users, 50 practices, 100,000 progress rows (365+ of them one
/// user's year of daily activity), 1,000,000 AI interactions over the last year.
async fn seed(c: &Client) {
    let done = c
        .query_one(
            "SELECT count(*) FROM profiles WHERE email = 'bench@example.com'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    if done == 1 {
        return;
    }
    eprintln!("seeding the bench database (once; about a minute)…");
    let t = Instant::now();
    c.batch_execute(
        "INSERT INTO profiles (id, email, display_name)
           SELECT gen_random_uuid(), 'user' || i || '@example.com', 'User ' || i FROM generate_series(1, 999) i;
         INSERT INTO profiles (id, email, display_name) VALUES (gen_random_uuid(), 'bench@example.com', 'Bench');
         INSERT INTO practices (id, title, description, category, difficulty, tags, duration_minutes)
           SELECT gen_random_uuid(), 'Practice ' || lpad(i::text, 2, '0'), 'A practice for couples number ' || i,
                  (ARRAY['communication','mindfulness','conflict','intimacy','gratitude'])[1 + i % 5],
                  (ARRAY['beginner','intermediate','advanced'])[1 + i % 3]::difficulty_level,
                  ARRAY['tag' || (i % 7)], 5 + i % 30
           FROM generate_series(1, 50) i;
         INSERT INTO goals (id, user_id, title, category)
           SELECT gen_random_uuid(), id, 'Goal', 'communication' FROM profiles;
         CREATE TEMP TABLE u AS SELECT id, row_number() OVER (ORDER BY id) AS n FROM profiles WHERE email <> 'bench@example.com';
         CREATE TEMP TABLE pr AS SELECT id, row_number() OVER (ORDER BY title) AS n FROM practices;
         -- The bench user: every day of the last year, some days twice (~ 500 rows).
         INSERT INTO progress (id, user_id, practice_id, duration_minutes, rating, mood_before, mood_after, completed, completed_at, created_at)
           SELECT gen_random_uuid(), (SELECT id FROM profiles WHERE email = 'bench@example.com'),
                  (SELECT id FROM pr WHERE n = 1 + (d * 7 + k) % 50 LIMIT 1), 5 + (d % 40), 1 + d % 5, 1 + d % 10, 1 + (d + 3) % 10,
                  (d % 9) <> 0, CASE WHEN (d % 9) <> 0 THEN now() - make_interval(days => d) END,
                  now() - make_interval(days => d, hours => k)
           FROM generate_series(0, 364) d, generate_series(0, 1) k WHERE k = 0 OR d % 3 = 0;
         -- Everyone else: the rest of 100,000 rows.
         INSERT INTO progress (id, user_id, practice_id, duration_minutes, rating, completed, completed_at, created_at)
           SELECT gen_random_uuid(), u.id, pr.id, 10, 1 + i % 5, true,
                  now() - make_interval(mins => i * 5), now() - make_interval(mins => i * 5)
           FROM generate_series(1, 100000 - (SELECT count(*) FROM progress)::int) i
           JOIN u ON u.n = 1 + i % 999 JOIN pr ON pr.n = 1 + i % 50;
         INSERT INTO ai_interactions (id, user_id, agent_type, model, input, output, input_tokens, output_tokens,
                                      cost_nanos, saved_nanos, latency_ms, cache_hit, success, created_at)
           SELECT gen_random_uuid(), u.id,
                  (ARRAY['assessment_analyst','learning_coach','progress_tracker','insight_generator','communication_advisor'])[1 + i % 5]::agent_type,
                  'gpt-4o-mini', '{\"q\": \"hello\"}', '{\"a\": \"hi\"}', 100 + i % 50, 50 + i % 30,
                  (i % 97) * 10, 0, 200 + i % 800, i % 4 = 0, i % 50 <> 0,
                  now() - make_interval(secs => (i % 31536000))
           FROM generate_series(1, 1000000) i JOIN u ON u.n = 1 + i % 999;
         SELECT kasama_ensure_partitions(3, 8);
         ANALYZE;",
    )
    .await
    .unwrap();
    eprintln!("seeded in {:.1} s", t.elapsed().as_secs_f64());
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn show(name: &str, d: &mut [Duration]) -> Duration {
    d.sort();
    let us = |x: Duration| x.as_secs_f64() * 1e6;
    println!(
        "  {name:<44} p50 {:>8.1} µs   p95 {:>8.1} µs   p99 {:>8.1} µs",
        us(pct(d, 0.5)),
        us(pct(d, 0.95)),
        us(pct(d, 0.99))
    );
    pct(d, 0.5)
}

/// Runs `a` and `b` alternately `n` times and prints percentiles and the p50 ratio.
fn compare<A, B, FA, FB>(
    rt: &Runtime,
    title: &str,
    n: usize,
    (na, mut a): (&str, A),
    (nb, mut b): (&str, B),
) where
    A: FnMut() -> FA,
    B: FnMut() -> FB,
    FA: Future<Output = ()>,
    FB: Future<Output = ()>,
{
    let (mut da, mut db) = (Vec::with_capacity(n), Vec::with_capacity(n));
    rt.block_on(async {
        for _ in 0..n / 10 {
            a().await;
            b().await;
        }
        for _ in 0..n {
            let t = Instant::now();
            a().await;
            da.push(t.elapsed());
            let t = Instant::now();
            b().await;
            db.push(t.elapsed());
        }
    });
    println!("\n{title} ({n} interleaved calls each):");
    let pa = show(na, &mut da);
    let pb = show(nb, &mut db);
    println!(
        "  ratio {na} / {nb} at p50: {:.3}",
        pa.as_secs_f64() / pb.as_secs_f64()
    );
}

fn benches(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let s = rt.block_on(setup());
    let me = Actor::User(s.user);
    let read_sql = "SELECT id, user_id, title, description, category, target_date, progress, completed, completed_at, milestones, created_at, updated_at FROM goals WHERE id = $1";
    let insert_sql = "INSERT INTO progress (id, user_id, practice_id, goal_id, learning_path_id, duration_minutes,
                rating, mood_before, mood_after, notes, completed, completed_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, coalesce($13, now()))
             RETURNING id, user_id, practice_id, goal_id, learning_path_id, duration_minutes, rating, mood_before, mood_after, notes, completed, completed_at, created_at";

    let repo_read = || async {
        s.repo.get_goal(me, s.goal).await.unwrap();
    };
    let raw_read = || async {
        let c = s.raw.pool().get().await.unwrap();
        let st = c.prepare_cached(read_sql).await.unwrap();
        c.query_one(&st, &[&s.goal.0]).await.unwrap();
    };
    // The same safety written by hand: BEGIN, transaction-local identity, the
    // statement, COMMIT, pipelined in one round trip.
    let scoped_read = || async {
        let c = s.scoped.pool().get().await.unwrap();
        let begin = c.prepare_cached("BEGIN").await.unwrap();
        let scope = c
            .prepare_cached("SELECT set_config('app.user_id', $1, true)")
            .await
            .unwrap();
        let st = c.prepare_cached(read_sql).await.unwrap();
        let commit = c.prepare_cached("COMMIT").await.unwrap();
        let uid = s.user.to_string();
        let (b, sc, q, cm) = futures_util::future::join4(
            c.execute(&begin, &[]),
            c.execute(&scope, &[&uid]),
            c.query_one(&st, &[&s.goal.0]),
            c.execute(&commit, &[]),
        )
        .await;
        b.unwrap();
        sc.unwrap();
        q.unwrap();
        cm.unwrap();
    };
    let new_entry = || NewProgress {
        created_at: Some(Utc::now() - Days::days(400)),
        completed: false,
        completed_at: None,
        ..NewProgress::practice(s.user, s.practice, 5)
    };
    let repo_insert = || async {
        s.repo.log_progress(me, new_entry()).await.unwrap();
    };
    let raw_insert = || async {
        let n = new_entry();
        let c = s.raw.pool().get().await.unwrap();
        let st = c.prepare_cached(insert_sql).await.unwrap();
        c.query_one(
            &st,
            &[
                &uuid::Uuid::new_v4(),
                &n.user_id.0,
                &n.practice_id.map(|x| x.0),
                &n.goal_id.map(|x| x.0),
                &n.learning_path_id.map(|x| x.0),
                &n.duration_minutes,
                &n.rating,
                &n.mood_before,
                &n.mood_after,
                &n.notes,
                &n.completed,
                &n.completed_at,
                &n.created_at,
            ],
        )
        .await
        .unwrap();
    };
    let year = DateRange {
        from: Utc::now() - Days::days(365),
        to: Utc::now(),
    };
    let stats = || async {
        let st = s
            .repo
            .user_statistics(me, s.user, Some(year))
            .await
            .unwrap();
        assert!(st.total_sessions > 365);
    };

    let mut g = c.benchmark_group("pk_read");
    g.throughput(criterion::Throughput::Elements(1));
    g.bench_function("raw_tokio_postgres", |b| b.to_async(&rt).iter(raw_read));
    g.bench_function("raw_scoped_by_hand", |b| b.to_async(&rt).iter(scoped_read));
    g.bench_function("pg_repository", |b| b.to_async(&rt).iter(repo_read));
    g.finish();
    let mut g = c.benchmark_group("insert");
    g.throughput(criterion::Throughput::Elements(1));
    g.bench_function("raw_tokio_postgres", |b| b.to_async(&rt).iter(raw_insert));
    g.bench_function("pg_repository", |b| b.to_async(&rt).iter(repo_insert));
    g.finish();
    let mut g = c.benchmark_group("user_statistics");
    g.sample_size(30);
    g.bench_function("year_of_daily_activity", |b| b.to_async(&rt).iter(stats));
    g.finish();

    compare(
        &rt,
        "pk_read",
        5000,
        ("pg_repository", repo_read),
        ("raw_tokio_postgres", raw_read),
    );
    compare(
        &rt,
        "pk_read, same scoping",
        5000,
        ("pg_repository", repo_read),
        ("raw_scoped_by_hand", scoped_read),
    );
    compare(
        &rt,
        "insert",
        3000,
        ("pg_repository", repo_insert),
        ("raw_tokio_postgres", raw_insert),
    );
    let mut d = Vec::new();
    rt.block_on(async {
        for _ in 0..20 {
            stats().await;
        }
        for _ in 0..300 {
            let t = Instant::now();
            stats().await;
            d.push(t.elapsed());
        }
    });
    println!("\nuser_statistics, a year of daily activity (300 calls):");
    show("pg_repository.user_statistics", &mut d);
}

criterion_group! {
    name = group;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(group);
