//! Row-level security on PostgreSQL, checked as the application role: through the
//! repository and through raw SQL, and across checkouts of one pooled connection.

mod common;

use std::time::Duration;

use common::fixtures::{new_assessment, new_goal};
use kasama::prelude::*;
use kasama::repository::postgres::PgRepository;
use tokio_postgres::error::SqlState;

const S: Actor = Actor::Service;

async fn seed(repo: &PgRepository) -> (UserId, UserId, GoalId, GoalId) {
    let a = UserId::new();
    let b = UserId::new();
    repo.create_profile(S, NewProfile::new(a, format!("{a}@example.com"), "A"))
        .await
        .unwrap();
    repo.create_profile(S, NewProfile::new(b, format!("{b}@example.com"), "B"))
        .await
        .unwrap();
    let goal = |u: UserId| new_goal(u, &format!("goal of {u}"));
    let ga = repo.create_goal(S, goal(a)).await.unwrap().id;
    let gb = repo.create_goal(S, goal(b)).await.unwrap().id;
    repo.create_assessment(S, new_assessment(b, "x", "T", None))
        .await
        .unwrap();
    (a, b, ga, gb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_sql_as_app_role_sees_and_changes_only_own_rows() {
    let Some(db) = common::pg().await else { return };
    let (a, b, _ga, gb) = seed(&db.repo).await;
    let mut c = db.app().await;

    let tx = c.transaction().await.unwrap();
    tx.execute(
        "SELECT set_config('app.user_id', $1, true)",
        &[&a.to_string()],
    )
    .await
    .unwrap();
    let n: i64 = tx
        .query_one("SELECT count(*) FROM goals", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "a sees only a's goal");
    let n: i64 = tx
        .query_one("SELECT count(*) FROM goals WHERE user_id = $1", &[&b.0])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let n: i64 = tx
        .query_one("SELECT count(*) FROM profiles", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let n: i64 = tx
        .query_one("SELECT count(*) FROM assessments", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n, 0,
        "b's assessment is invisible, partitioned table included"
    );
    assert_eq!(
        tx.execute("UPDATE goals SET title = 'pwned' WHERE id = $1", &[&gb.0])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        tx.execute("DELETE FROM goals WHERE id = $1", &[&gb.0])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        tx.execute("DELETE FROM profiles WHERE id = $1", &[&b.0])
            .await
            .unwrap(),
        0
    );
    tx.commit().await.unwrap();

    // Inserting a row for another user is refused by the policy's WITH CHECK.
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "SELECT set_config('app.user_id', $1, true)",
        &[&a.to_string()],
    )
    .await
    .unwrap();
    let e = tx
        .execute(
            "INSERT INTO goals (id, user_id, title, category) VALUES (gen_random_uuid(), $1, 'x', 'c')",
            &[&b.0],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e}");
    drop(tx);

    // Moving one's own row to another user is refused too.
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "SELECT set_config('app.user_id', $1, true)",
        &[&a.to_string()],
    )
    .await
    .unwrap();
    let e = tx
        .execute("UPDATE goals SET user_id = $1", &[&b.0])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e}");
    drop(tx);

    // No identity at all: no user rows; the catalogue stays readable.
    let n: i64 = c
        .query_one("SELECT count(*) FROM goals", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    c.query_one("SELECT count(*) FROM practices", &[])
        .await
        .unwrap();
    // Partitions are not reachable directly, and RLS cannot be switched off.
    let e = c
        .query("SELECT * FROM assessments_default", &[])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e}");
    let e = c
        .batch_execute("ALTER TABLE goals DISABLE ROW LEVEL SECURITY")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e}");
    let e = c.batch_execute("SET ROLE postgres").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e}");

    // b's data is intact.
    assert_eq!(
        db.repo.get_goal(Actor::User(b), gb).await.unwrap().title,
        format!("goal of {b}")
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_table_forces_rls_and_the_app_role_is_not_privileged() {
    let Some(db) = common::pg().await else { return };
    let admin = db.admin().await;
    let rows = admin
        .query(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relname = ANY($1) ORDER BY 1",
            &[&vec![
                "profiles",
                "assessments",
                "assessment_answers",
                "practices",
                "goals",
                "learning_paths",
                "progress",
                "notifications",
                "ai_interactions",
                "conversations",
                "conversation_messages",
            ]],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 11);
    for r in rows {
        let (name, on, forced): (String, bool, bool) = (r.get(0), r.get(1), r.get(2));
        assert!(on && forced, "{name}: rls={on} forced={forced}");
    }
    let app = db.app().await;
    let r = app
        .query_one(
            "SELECT rolsuper, rolbypassrls,
                    (SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user))
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.get::<_, bool>(0), r.get::<_, bool>(1), r.get::<_, i64>(2)),
        (false, false, 0)
    );
    db.finish().await;
}

/// The transaction-local settings of the pooled connection, and whether a transaction
/// was left open on it (then `now()`, the transaction's start, predates the statement).
async fn leftover_state(repo: &PgRepository) -> (String, String, bool) {
    let c = repo.pool().get().await.unwrap();
    // The simple protocol: one message, so in a fresh implicit transaction now() and
    // statement_timestamp() are equal; a transaction left open makes now() older.
    let msgs = c
        .simple_query(
            "SELECT coalesce(current_setting('app.user_id', true), ''),
                    coalesce(current_setting('app.service', true), ''),
                    (now() <> statement_timestamp())::text",
        )
        .await
        .unwrap();
    let row = msgs
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .unwrap();
    (
        row.get(0).unwrap().to_string(),
        row.get(1).unwrap().to_string(),
        row.get(2).unwrap() == "true",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pooled_connection_never_carries_an_identity_into_the_next_checkout() {
    let Some(db) = common::pg().await else { return };
    let (a, b, ga, gb) = seed(&db.repo).await;
    let mut cfg = db.app_config();
    cfg.max_size = 1;
    let repo = PgRepository::connect(&cfg).unwrap();
    let clean = (String::new(), String::new(), false);

    for i in 0..40 {
        let (u, g) = if i % 2 == 0 { (a, ga) } else { (b, gb) };
        let goals = repo
            .list_goals(Actor::User(u), u, Page::default())
            .await
            .unwrap();
        assert_eq!(goals.iter().map(|g| g.id).collect::<Vec<_>>(), [g]);
        assert_eq!(leftover_state(&repo).await, clean);
    }
    // Concurrent callers share the single connection; each sees only its own rows.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let repo = repo.clone();
        let (u, g) = if i % 2 == 0 { (a, ga) } else { (b, gb) };
        tasks.push(tokio::spawn(async move {
            let goals = repo
                .list_goals(Actor::User(u), u, Page::default())
                .await
                .unwrap();
            assert_eq!(goals.iter().map(|g| g.id).collect::<Vec<_>>(), [g]);
            assert!(
                repo.get_goal(Actor::User(u), if u == a { gb } else { ga })
                    .await
                    .unwrap_err()
                    .is_not_found()
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // After a failed statement (a database-side refusal), and after a service call.
    let dup = NewProfile::new(UserId::new(), format!("{a}@example.com"), "dup");
    assert!(matches!(
        repo.create_profile(S, dup).await.unwrap_err(),
        Error::Conflict { .. }
    ));
    assert_eq!(leftover_state(&repo).await, clean);
    repo.system_health(S).await.unwrap();
    assert_eq!(leftover_state(&repo).await, clean);
    // After a caller gives up mid-call (its future dropped at the first await point).
    for _ in 0..20 {
        let _ = tokio::time::timeout(Duration::ZERO, repo.get_goal(Actor::User(a), ga)).await;
        let _ = tokio::time::timeout(
            Duration::from_micros(50),
            repo.set_goal_progress(Actor::User(a), ga, 10),
        )
        .await;
    }
    assert_eq!(leftover_state(&repo).await, clean);
    assert_eq!(
        repo.list_goals(Actor::User(b), b, Page::default())
            .await
            .unwrap()[0]
            .id,
        gb
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_do_not_leak_sql_or_other_users_data() {
    let Some(db) = common::pg().await else { return };
    let a = UserId::new();
    db.repo
        .create_profile(S, NewProfile::new(a, "secret.person@example.com", "A"))
        .await
        .unwrap();
    let e = db
        .repo
        .create_profile(
            S,
            NewProfile::new(UserId::new(), "SECRET.person@example.com", "B"),
        )
        .await
        .unwrap_err();
    let mut text = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        text.push_str(&s.to_string());
        src = s.source();
    }
    assert!(!text.to_lowercase().contains("secret.person"), "{text}");
    assert!(!text.contains("INSERT"), "{text}");
    db.finish().await;
}

/// The repository refuses to run as a role for which RLS would not apply — a
/// superuser, a BYPASSRLS role, the tables' owner, or a role that can become the owner
/// — with `Error::Config` naming the role; the explicit opt-out lets a tool through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_that_bypass_rls_are_refused_at_connect() {
    let Some(db) = common::pg().await else { return };
    // The documented app login passes.
    db.repo.verify().await.unwrap();

    let refused = |url: String, allow: bool| async move {
        let mut cfg = PgConfig::new(url);
        cfg.allow_rls_bypass = allow;
        let repo = PgRepository::connect(&cfg).unwrap();
        let r = repo.verify().await;
        // Every call fails the same way, not just the first.
        let again = repo.get_profile(Actor::Service, UserId::new()).await;
        repo.pool().close();
        match (r, again) {
            (Ok(()), _) => None,
            (Err(e), Err(e2)) => {
                assert!(e.is_config(), "{e:?}");
                assert!(e2.is_config(), "{e2:?}");
                assert!(!e.is_retryable());
                Some(e.to_string())
            }
            (Err(e), Ok(_)) => panic!("refused once, then served: {e}"),
        }
    };

    let superuser = db.admin_conn_string();
    let su_name = common::connect(&superuser)
        .await
        .unwrap()
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get::<_, String>(0);
    let msg = refused(superuser.clone(), false)
        .await
        .expect("superuser refused");
    assert!(
        msg.contains(&format!("\"{su_name}\"")) && msg.contains("superuser"),
        "{msg}"
    );
    assert!(msg.contains("allow_rls_bypass"), "{msg}");

    let bypass = db
        .app_config()
        .url
        .replace(common::APP_LOGIN, common::BYPASS_LOGIN);
    let msg = refused(bypass.clone(), false)
        .await
        .expect("BYPASSRLS refused");
    assert!(msg.contains("BYPASSRLS"), "{msg}");

    let msg = refused(db.owner_conn_string(), false)
        .await
        .expect("owner refused");
    assert!(
        msg.contains(common::OWNER) && msg.contains("owner"),
        "{msg}"
    );

    // A login that may SET ROLE to the owner is as good as the owner.
    let admin = db.admin().await;
    common::ensure_role(
        &admin,
        "kasama_test_owner_member",
        &format!("LOGIN NOINHERIT IN ROLE {}", common::OWNER),
    )
    .await;
    let member = db
        .app_config()
        .url
        .replace(common::APP_LOGIN, "kasama_test_owner_member");
    let msg = refused(member, false)
        .await
        .expect("owner's member refused");
    assert!(msg.contains("can become"), "{msg}");

    // The opt-out lets tools through.
    assert_eq!(refused(superuser, true).await, None);
    assert_eq!(refused(bypass, true).await, None);
    db.finish().await;
}

/// An answer can only point at an assessment of its own user, even for raw SQL run
/// as the service (which RLS lets write any row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cannot_point_at_another_users_assessment_even_in_raw_sql() {
    let Some(db) = common::pg().await else { return };
    let (a, b, _, _) = seed(&db.repo).await;
    let asmt = db
        .repo
        .create_assessment(Actor::User(a), new_assessment(a, "x", "A's", None))
        .await
        .unwrap();
    let c = db.app().await;
    c.batch_execute("SELECT set_config('app.service', 'on', false)")
        .await
        .unwrap();
    let e = c
        .execute(
            "INSERT INTO assessment_answers (id, assessment_id, assessment_created_at, user_id, question_id, answer)
             VALUES ($1, $2, $3, $4, 'q', '1')",
            &[&uuid::Uuid::new_v4(), &asmt.id.0, &asmt.created_at, &b.0],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::FOREIGN_KEY_VIOLATION), "{e}");
    // The same row for the assessment's own user is accepted.
    c.execute(
        "INSERT INTO assessment_answers (id, assessment_id, assessment_created_at, user_id, question_id, answer)
         VALUES ($1, $2, $3, $4, 'q', '1')",
        &[&uuid::Uuid::new_v4(), &asmt.id.0, &asmt.created_at, &a.0],
    )
    .await
    .unwrap();
    db.finish().await;
}
