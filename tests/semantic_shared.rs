//! Semantic-cache instances with separate memory sharing one PostgreSQL store: an
//! answer stored through one is a hit on another, a fresh instance starts warm,
//! forgetting a user and expiry apply everywhere, personal scopes stay personal,
//! unreadable rows are skipped, and a killed listener reconnects and catches up.
//! Real PostgreSQL (fails without it); real time, polled with generous deadlines.

mod common;

use std::sync::Arc;
use std::time::Duration;

use kasama::prelude::*;
use kasama::semantic::{CacheTier, HashingEmbedder, Lookup, SemanticCache};
use kasama::semantic_store::{PgSemanticStore, PgSemanticStoreConfig};

use common::semantic::{answer, ask, served};

/// How long a change may take to reach another instance before a test gives up (the
/// promise is a second; the margin is for a busy test machine).
const DEADLINE: Duration = Duration::from_secs(5);

async fn db() -> common::TestDb {
    common::pg()
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 is required for these tests")
}

fn store_config(db: &common::TestDb) -> PgSemanticStoreConfig {
    PgSemanticStoreConfig {
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        heartbeat: Duration::from_millis(500),
        heartbeat_timeout: Duration::from_secs(2),
        ..PgSemanticStoreConfig::new(db.app_config().url)
    }
}

/// One app instance: its own store (listener, pool) and its own cache memory.
struct Instance {
    store: Arc<PgSemanticStore>,
    cache: Arc<SemanticCache>,
}

async fn instance_with(
    db: &common::TestDb,
    config: PgSemanticStoreConfig,
    ttl: Duration,
) -> Instance {
    let repo = PgRepository::connect(&db.app_config()).unwrap();
    let store = PgSemanticStore::start(repo, config).unwrap();
    assert!(store.wait_listening(Duration::from_secs(10)).await);
    let cache = SemanticCache::builder(Arc::new(HashingEmbedder::new()))
        .ttl(ttl)
        .build_shared(store.clone())
        .await
        .unwrap();
    Instance { store, cache }
}

async fn instance(db: &common::TestDb) -> Instance {
    instance_with(db, store_config(db), Duration::from_secs(3600)).await
}

async fn lookup(i: &Instance, user: UserId, q: &str) -> Option<(CacheTier, String)> {
    served(&i.cache.lookup(&ask(user, q)).await.unwrap())
}

/// Polls until `user` asking `q` on `i` gives `want`, or the deadline passes.
async fn until(i: &Instance, user: UserId, q: &str, want: Option<(CacheTier, &str)>) {
    let want = want.map(|(t, a)| (t, a.to_string()));
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let got = lookup(i, user, q).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{q:?} for {user}: still {got:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn rows_of(db: &common::TestDb, user: UserId) -> i64 {
    db.admin()
        .await
        .query_one(
            "SELECT count(*) FROM semantic_entries WHERE user_id = $1",
            &[&user.as_uuid()],
        )
        .await
        .unwrap()
        .get(0)
}

const Q: &str = "How do I tell my partner I feel unheard?";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_stored_through_one_instance_is_a_hit_on_the_others() {
    let db = db().await;
    let (one, two, three) = (
        instance(&db).await,
        instance(&db).await,
        instance(&db).await,
    );
    let (u, other) = (UserId::new(), UserId::new());
    assert_eq!(lookup(&three, u, Q).await, None);

    one.cache
        .store(&ask(u, Q), &answer("say what you need"), None)
        .await
        .unwrap();
    until(&three, u, Q, Some((CacheTier::Exact, "say what you need"))).await;
    until(&two, u, Q, Some((CacheTier::Exact, "say what you need"))).await;
    // Personal scope: another user asking the same is a miss everywhere.
    assert_eq!(lookup(&three, other, Q).await, None);
    assert_eq!(lookup(&one, other, Q).await, None);
    assert_eq!(rows_of(&db, u).await, 1);

    // Stored again (a new answer): one row, the new answer everywhere.
    two.cache
        .store(&ask(u, Q), &answer("ask for ten minutes"), None)
        .await
        .unwrap();
    until(
        &three,
        u,
        Q,
        Some((CacheTier::Exact, "ask for ten minutes")),
    )
    .await;
    until(&one, u, Q, Some((CacheTier::Exact, "ask for ten minutes"))).await;
    assert_eq!(rows_of(&db, u).await, 1);

    // A fresh fourth instance starts warm: a hit without waiting.
    let four = instance(&db).await;
    assert_eq!(
        lookup(&four, u, Q).await,
        Some((CacheTier::Exact, "ask for ten minutes".into()))
    );
    assert_eq!(lookup(&four, other, Q).await, None);
    assert_eq!(four.cache.stats().entries, 1);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paraphrase_is_a_semantic_hit_on_another_instance() {
    let db = db().await;
    let build = |store: Arc<PgSemanticStore>| {
        SemanticCache::builder(Arc::new(HashingEmbedder::new()))
            .semantic_hits(true)
            .shared(AgentType::CommunicationAdvisor)
            .build_shared(store)
    };
    let s1 = PgSemanticStore::start(db.repo.clone(), store_config(&db)).unwrap();
    let s3 = PgSemanticStore::start(db.repo.clone(), store_config(&db)).unwrap();
    assert!(s3.wait_listening(Duration::from_secs(10)).await);
    let (c1, c3) = (build(s1).await.unwrap(), build(s3).await.unwrap());
    let (a, b) = (UserId::new(), UserId::new());
    c1.store(
        &ask(a, "how can I listen better to my partner"),
        &answer("reflect back"),
        None,
    )
    .await
    .unwrap();
    // A shared scope: user b, on instance 3, a paraphrase.
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let l = c3
            .lookup(&ask(b, "how can I listen better to my partner?!"))
            .await
            .unwrap();
        if let Some(hit) = served(&l) {
            assert_eq!(hit, (CacheTier::Exact, "reflect back".into()));
            break;
        }
        assert!(tokio::time::Instant::now() < end, "no hit on instance 3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match c3
        .lookup(&ask(b, "how can I listen to my partner better"))
        .await
        .unwrap()
    {
        Lookup::Hit {
            tier, similarity, ..
        } => {
            assert_eq!(tier, CacheTier::Semantic);
            assert!(similarity < 1.0);
        }
        miss => panic!("expected a semantic hit, got {miss:?}"),
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_a_user_on_one_instance_forgets_them_on_all_and_in_the_table() {
    let db = db().await;
    let (one, two, three) = (
        instance(&db).await,
        instance(&db).await,
        instance(&db).await,
    );
    let (gone, stays) = (UserId::new(), UserId::new());
    for u in [gone, stays] {
        one.cache
            .store(&ask(u, Q), &answer("listen"), None)
            .await
            .unwrap();
    }
    for i in [&two, &three] {
        until(i, gone, Q, Some((CacheTier::Exact, "listen"))).await;
        until(i, stays, Q, Some((CacheTier::Exact, "listen"))).await;
    }

    assert_eq!(two.cache.forget_user_everywhere(gone).await.unwrap(), 1);
    assert_eq!(rows_of(&db, gone).await, 0);
    assert_eq!(lookup(&two, gone, Q).await, None);
    until(&one, gone, Q, None).await;
    until(&three, gone, Q, None).await;
    // Only that user.
    assert_eq!(rows_of(&db, stays).await, 1);
    for i in [&one, &two, &three] {
        assert_eq!(
            lookup(i, stays, Q).await,
            Some((CacheTier::Exact, "listen".into()))
        );
    }
    // And a new instance does not bring them back.
    assert_eq!(lookup(&instance(&db).await, gone, Q).await, None);

    // The synchronous forget_user reaches the table and the others too.
    assert_eq!(one.cache.forget_user(stays), 1);
    until(&three, stays, Q, None).await;
    let end = tokio::time::Instant::now() + DEADLINE;
    while rows_of(&db, stays).await != 0 {
        assert!(tokio::time::Instant::now() < end, "rows left in the table");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_applies_everywhere_and_the_sweep_empties_the_table() {
    let db = db().await;
    let short = instance_with(&db, store_config(&db), Duration::from_secs(3)).await;
    let long = instance(&db).await;
    let (u, v) = (UserId::new(), UserId::new());
    // Stored where the TTL is 3 s: the row says so, and the long-TTL instance obeys it.
    short
        .cache
        .store(&ask(u, Q), &answer("soon gone"), None)
        .await
        .unwrap();
    until(&long, u, Q, Some((CacheTier::Exact, "soon gone"))).await;
    // Stored where the TTL is an hour: the 3 s instance keeps it 3 s only.
    long.cache
        .store(&ask(v, Q), &answer("kept an hour"), None)
        .await
        .unwrap();
    until(&short, v, Q, Some((CacheTier::Exact, "kept an hour"))).await;
    until(&long, u, Q, None).await;
    until(&short, v, Q, None).await;
    assert_eq!(
        lookup(&long, v, Q).await,
        Some((CacheTier::Exact, "kept an hour".into()))
    );
    // An expired row is not loaded by a new instance, and the sweep deletes it.
    assert_eq!(lookup(&instance(&db).await, u, Q).await, None);
    assert_eq!(short.store.sweep().await.unwrap(), 1);
    assert_eq!(rows_of(&db, u).await, 0);
    assert_eq!(rows_of(&db, v).await, 1);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_is_cut_to_its_row_cap_newest_kept() {
    let db = db().await;
    let cfg = PgSemanticStoreConfig {
        max_rows: 2,
        ..store_config(&db)
    };
    let one = instance_with(&db, cfg, Duration::from_secs(3600)).await;
    let u = UserId::new();
    for q in ["first question", "second question", "third question"] {
        one.cache.store(&ask(u, q), &answer(q), None).await.unwrap();
    }
    assert_eq!(one.store.sweep().await.unwrap(), 1);
    let questions: Vec<String> = db
        .admin()
        .await
        .query(
            "SELECT question FROM semantic_entries ORDER BY question",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(questions, ["second question", "third question"]);
    db.finish().await;
}

/// Inserts a row as the DBA, as a foreign or broken writer would, and announces it.
async fn raw_row(
    db: &common::TestDb,
    user: UserId,
    question: &str,
    embedder: &str,
    embedding: &str,
    agent: &str,
    answer: &str,
) {
    let admin = db.admin().await;
    let id = uuid::Uuid::new_v4();
    // The scope's context fingerprint of a plain question (no data, no history).
    let context = ask(user, question).fingerprint();
    admin
        .execute(
            &format!(
                "INSERT INTO semantic_entries (id, agent, model, params, context, user_id, embedder,
                     norm, question, embedding, answer, expires_at)
                 VALUES ($1, $2, '', '512|0.300|0000000000000000', $6, $3, $4, lower($5), $5,
                         {embedding}, {answer}, now() + interval '1 hour')"
            ),
            &[&id, &agent, &user.as_uuid(), &embedder, &question, &context],
        )
        .await
        .unwrap();
    admin
        .execute(
            "SELECT pg_notify('kasama_semantic', json_build_object('op', 'store', 'id', $1::uuid)::text)",
            &[&id],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_another_embedder_or_dimension_or_broken_are_skipped() {
    let db = db().await;
    let one = instance(&db).await;
    let u = UserId::new();
    // The params column must match what a request of the test's defaults fingerprints
    // to, or the good row below would be in another scope.
    let scope = one.cache.scope_of(&ask(u, "x"));
    assert_eq!(scope.params, "512|0.300|0000000000000000", "test fixture");
    let unit = "array_fill(0.05::real, ARRAY[384])";
    let ok_answer = r#"'{"output": {"advice": "raw"}, "model": "m", "usage": {"input_tokens": 1, "output_tokens": 1}, "question": "q"}'::jsonb"#;
    let agent = "communication_advisor";
    raw_row(
        &db,
        u,
        "wrong dimension",
        "hashing",
        "array_fill(0.1::real, ARRAY[3])",
        agent,
        ok_answer,
    )
    .await;
    raw_row(&db, u, "other embedder", "minilm", unit, agent, ok_answer).await;
    raw_row(
        &db,
        u,
        "nan vector",
        "hashing",
        "array_fill('NaN'::real, ARRAY[384])",
        agent,
        ok_answer,
    )
    .await;
    raw_row(
        &db,
        u,
        "zero vector",
        "hashing",
        "array_fill(0::real, ARRAY[384])",
        agent,
        ok_answer,
    )
    .await;
    raw_row(
        &db,
        u,
        "null element",
        "hashing",
        "array_fill(NULL::real, ARRAY[384])",
        agent,
        ok_answer,
    )
    .await;
    raw_row(
        &db,
        u,
        "unknown agent",
        "hashing",
        unit,
        "oracle",
        ok_answer,
    )
    .await;
    raw_row(
        &db,
        u,
        "broken answer",
        "hashing",
        unit,
        agent,
        "'[1, 2]'::jsonb",
    )
    .await;
    raw_row(&db, u, "a good row", "hashing", unit, agent, ok_answer).await;

    // Heard live: only the good row arrives; the listener survives the others.
    until(&one, u, "a good row", Some((CacheTier::Exact, "raw"))).await;
    // Loaded at start: the same.
    let fresh = instance(&db).await;
    for q in [
        "wrong dimension",
        "other embedder",
        "nan vector",
        "zero vector",
        "null element",
        "broken answer",
    ] {
        assert_eq!(lookup(&one, u, q).await, None, "{q}");
        assert_eq!(lookup(&fresh, u, q).await, None, "{q}");
    }
    assert_eq!(
        lookup(&fresh, u, "a good row").await,
        Some((CacheTier::Exact, "raw".into()))
    );
    assert_eq!(one.cache.stats().entries, 1);
    assert_eq!(fresh.cache.stats().entries, 1);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listener_reconnects_and_catches_up() {
    let db = db().await;
    let one = instance(&db).await;
    // Instance three reconnects only after 2 s, so what happens meanwhile is missed.
    let slow = PgSemanticStoreConfig {
        reconnect_min: Duration::from_secs(2),
        reconnect_max: Duration::from_secs(2),
        ..store_config(&db)
    };
    let three = instance_with(&db, slow, Duration::from_secs(3600)).await;
    let (u, gone) = (UserId::new(), UserId::new());
    one.cache
        .store(&ask(gone, Q), &answer("old"), None)
        .await
        .unwrap();
    until(&three, gone, Q, Some((CacheTier::Exact, "old"))).await;

    let pid = three.store.status().backend_pid.expect("listening");
    let killed: bool = db
        .admin()
        .await
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(killed);
    let end = tokio::time::Instant::now() + DEADLINE;
    while three.store.status().listening {
        assert!(tokio::time::Instant::now() < end, "the kill went unnoticed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // While instance three is deaf: a new answer, and a forgotten user.
    one.cache
        .store(&ask(u, Q), &answer("while away"), None)
        .await
        .unwrap();
    one.cache.forget_user_everywhere(gone).await.unwrap();
    assert!(!three.store.status().listening, "reconnected too early");

    until(&three, u, Q, Some((CacheTier::Exact, "while away"))).await;
    until(&three, gone, Q, None).await;
    let s = three.store.status();
    assert!(s.listening);
    assert_eq!(s.reconnects, 1);
    assert_ne!(s.backend_pid, Some(pid));
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_bypasses_rls_is_refused_as_listener() {
    let db = db().await;
    let store = PgSemanticStore::start(
        db.repo.clone(),
        PgSemanticStoreConfig::new(db.admin_conn_string()),
    )
    .unwrap();
    let end = tokio::time::Instant::now() + DEADLINE;
    while store.status().refused.is_none() {
        assert!(tokio::time::Instant::now() < end, "not refused");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!store.status().listening);
    let cfg = PgSemanticStoreConfig::new("postgres://kasama:hunter2@db.example.com/app");
    assert!(!format!("{cfg:?}").contains("hunter2"), "{cfg:?}");
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_role_sees_only_its_users_rows_outside_the_service() {
    let db = db().await;
    let one = instance(&db).await;
    let (a, b) = (UserId::new(), UserId::new());
    for u in [a, b] {
        one.cache
            .store(&ask(u, Q), &answer("listen"), None)
            .await
            .unwrap();
    }
    let mut app = db.app().await;
    // No scope: nothing.
    let tx = app.transaction().await.unwrap();
    assert_eq!(count(&tx).await, 0);
    tx.rollback().await.unwrap();
    // As user a: a's row only; writing b's row is refused.
    let tx = app.transaction().await.unwrap();
    tx.execute(
        "SELECT set_config('app.user_id', $1, true)",
        &[&a.to_string()],
    )
    .await
    .unwrap();
    assert_eq!(count(&tx).await, 1);
    let refused = tx
        .execute(
            "UPDATE semantic_entries SET question = 'x' WHERE user_id = $1",
            &[&b.as_uuid()],
        )
        .await
        .unwrap();
    assert_eq!(refused, 0, "b's row is invisible to a");
    tx.rollback().await.unwrap();
    // As the service: both.
    let tx = app.transaction().await.unwrap();
    tx.execute("SELECT set_config('app.service', 'on', true)", &[])
        .await
        .unwrap();
    assert_eq!(count(&tx).await, 2);
    tx.rollback().await.unwrap();
    db.finish().await;
}

async fn count(tx: &tokio_postgres::Transaction<'_>) -> i64 {
    tx.query_one("SELECT count(*) FROM semantic_entries", &[])
        .await
        .unwrap()
        .get(0)
}
