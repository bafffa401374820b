//! Hardening found by trying to break issue 10: roles that defeat RLS in less obvious
//! ways, erasure racing a partition move, partitions left misaligned by an older
//! function, and a maintenance task that must outlive a panicking or odd run; and JSON
//! that only looks like it holds a NUL, which jsonb must keep.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use common::fixtures::{new_answer, new_assessment};
use kasama::prelude::*;
use kasama::repository::postgres::{
    MaintenanceConfig, MaintenanceReport, PartitionMaintainer, spawn_partition_maintenance,
};
use kasama::{PgConfig, PgRepository};

const S: Actor = Actor::Service;

/// A login that is a member of `kasama_app` and of the `kasama_readonly` group that
/// migration 0006 creates. `kasama_readonly` has a `FOR SELECT ... USING (true)`
/// policy on every user table, so for this login RLS no longer separates users on
/// reads — yet `check_role` accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_readonly_membership_is_refused() {
    let Some(db) = common::pg().await else { return };
    let login = "kasama_review_ro_login";
    let admin = db.admin().await;
    common::ensure_role(&admin, login, "LOGIN IN ROLE kasama_app, kasama_readonly").await;

    // RLS does not keep users apart for this login: B's transaction reads A's profile.
    let a = UserId::new();
    let b = UserId::new();
    for u in [a, b] {
        db.repo
            .create_profile(S, NewProfile::new(u, format!("{u}@example.com"), "x"))
            .await
            .unwrap();
    }
    let mut c = common::connect(&common::conn_string(&db.base, Some(login), &db.name))
        .await
        .unwrap();
    let tx = c.transaction().await.unwrap();
    tx.execute(
        "SELECT set_config('app.user_id', $1, true), set_config('app.service', '', true)",
        &[&b.to_string()],
    )
    .await
    .unwrap();
    let seen: i64 = tx
        .query_one("SELECT count(*) FROM profiles WHERE id = $1", &[&a.0])
        .await
        .unwrap()
        .get(0);
    drop(tx);
    assert_eq!(
        seen, 1,
        "precondition: kasama_readonly's policy lets B read A's row"
    );

    let repo = PgRepository::connect(&PgConfig::new(common::conn_string(
        &db.base,
        Some(login),
        &db.name,
    )))
    .unwrap();
    let r = repo.verify().await;
    assert!(
        matches!(r, Err(Error::Config { .. })),
        "a login for which RLS lets every user read every row must be refused, got {r:?}"
    );
    db.finish().await;
}

/// On PostgreSQL 15 a `CREATEROLE` role can grant itself membership in any
/// non-superuser role — the tables' owner included — so it "can become the owner",
/// which `check_role` promises to refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn createrole_login_is_refused() {
    let Some(db) = common::pg().await else { return };
    let login = "kasama_review_cr_login";
    let admin = db.admin().await;
    common::ensure_role(&admin, login, "LOGIN CREATEROLE IN ROLE kasama_app").await;

    // It really can become the owner (and then switch RLS off).
    let c = common::connect(&common::conn_string(&db.base, Some(login), &db.name))
        .await
        .unwrap();
    c.batch_execute(&format!("GRANT {} TO {login}", common::OWNER))
        .await
        .expect("a CREATEROLE role grants itself the owner's role");
    let owner_member: bool = c
        .query_one(
            "SELECT pg_has_role(current_user, $1, 'MEMBER')",
            &[&common::OWNER],
        )
        .await
        .unwrap()
        .get(0);
    assert!(owner_member);
    c.batch_execute(&format!("REVOKE {} FROM {login}", common::OWNER))
        .await
        .unwrap();

    let repo = PgRepository::connect(&PgConfig::new(common::conn_string(
        &db.base,
        Some(login),
        &db.name,
    )))
    .unwrap();
    let r = repo.verify().await;
    assert!(
        matches!(r, Err(Error::Config { .. })),
        "a CREATEROLE login can make itself the owner and must be refused, got {r:?}"
    );
    db.finish().await;
}

/// `erase_user` deletes from `assessment_answers` before `assessments`, the opposite
/// of the order 0006 says every writer uses (assessments first). A partition move
/// that has locked `assessments_default` and waits for `assessment_answers`
/// deadlocks with it: one of the two calls fails with 40P01.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_user_does_not_deadlock_with_a_partition_move() {
    let Some(db) = common::pg().await else { return };
    let repo = Arc::new(db.repo.clone());
    let u = UserId::new();
    repo.create_profile(S, NewProfile::new(u, format!("{u}@example.com"), "U"))
        .await
        .unwrap();
    // An assessment far ahead lands in DEFAULT: the next ensure_partitions moves it.
    let far = Utc.with_ymd_and_hms(2031, 5, 10, 12, 0, 0).unwrap();
    let a = repo
        .create_assessment(S, new_assessment(u, "x", "T", Some(far)))
        .await
        .unwrap();
    repo.answer_assessment(S, a.id, vec![new_answer("q", serde_json::json!(1))])
        .await
        .unwrap();

    // A third session holds the answer's row lock: erase_user's first DELETE takes
    // its table lock on assessment_answers, then waits for the row.
    let mut holder = db.admin().await;
    let htx = holder.transaction().await.unwrap();
    htx.execute(
        "SELECT 1 FROM assessment_answers WHERE assessment_id = $1 FOR UPDATE",
        &[&a.id.0],
    )
    .await
    .unwrap();

    let r1 = repo.clone();
    let erase = tokio::spawn(async move { r1.erase_user(S, u).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The move locks assessments_default, then waits for assessment_answers.
    let r2 = repo.clone();
    let mover = tokio::spawn(async move { r2.ensure_partitions(0, 0).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    htx.rollback().await.unwrap();

    let erased = erase.await.unwrap();
    let moved = mover.await.unwrap();
    assert!(erased.is_ok(), "erase_user failed: {erased:?}");
    assert!(moved.is_ok(), "ensure_partitions failed: {moved:?}");
    db.finish().await;
}

/// Keeps a flag that says whether the task still holds it.
struct Probe {
    calls: AtomicUsize,
    dropped: Arc<AtomicBool>,
    panic_on_first: bool,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl PartitionMaintainer for Probe {
    async fn maintain(&self, _: &MaintenanceConfig) -> kasama::Result<MaintenanceReport> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.panic_on_first && n == 0 {
            panic!("maintainer bug");
        }
        Ok(MaintenanceReport::default())
    }
}

/// A maintainer that panics once kills the task for good: no retry, and the status
/// does not say so (runs 0, failures 0, no error) while the host still holds the task.
#[tokio::test(start_paused = true)]
async fn maintenance_survives_a_panicking_run() {
    let dropped = Arc::new(AtomicBool::new(false));
    let probe = Arc::new(Probe {
        calls: AtomicUsize::new(0),
        dropped: dropped.clone(),
        panic_on_first: true,
    });
    let task = spawn_partition_maintenance(probe.clone(), MaintenanceConfig::default()).unwrap();
    tokio::time::sleep(Duration::from_secs(3 * 24 * 3600)).await;
    let st = task.status();
    // The panic at 0 s is a failure, retried after 60 s; then daily at 1 d + 60 s and
    // 2 d + 60 s.
    assert_eq!((st.runs, st.failures), (3, 1), "{st:?}");
    assert_eq!(st.last_error, None);
    drop(task);
}

/// `every` is not bounded by `validate`, and `Instant::now() + every` panics on
/// overflow: with a very long period the task dies right after its first run.
#[tokio::test(start_paused = true)]
async fn maintenance_survives_a_very_long_period() {
    let dropped = Arc::new(AtomicBool::new(false));
    let probe = Arc::new(Probe {
        calls: AtomicUsize::new(0),
        dropped: dropped.clone(),
        panic_on_first: false,
    });
    let cfg = MaintenanceConfig {
        every: Duration::MAX,
        ..MaintenanceConfig::default()
    };
    let task = match spawn_partition_maintenance(probe.clone(), cfg) {
        Ok(t) => t,
        Err(_) => return, // rejecting such a period up front is a fine fix too
    };
    drop(probe);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        !dropped.load(Ordering::SeqCst),
        "the task died (its maintainer was dropped) while the host still holds it: {:?}",
        task.status()
    );
    drop(task);
}

/// A retention that chrono cannot represent passes `validate` and then fails every
/// run (after its partitions were created) for as long as the task lives.
#[test]
fn retention_out_of_range_is_rejected_up_front() {
    let cfg = MaintenanceConfig {
        retention: Some(Duration::MAX),
        ..MaintenanceConfig::default()
    };
    assert!(cfg.validate().is_err());
}

/// A database whose `ai_interactions` partitions were created by 0003's function in a
/// non-UTC session (what every deployment before 0006 had) holds a weekly partition
/// whose upper bound is off by the DST hour. 0006's function never repairs it: with
/// `Australia/Sydney` (clocks back in April) the next week's partition overlaps it,
/// so every maintenance run fails from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_from_the_old_function_do_not_block_maintenance() {
    let Some(db) = common::pg().await else { return };
    let owner = db.owner().await;
    // The first Monday-aligned week ahead whose end, computed the old way in Sydney
    // (timestamptz + interval '7 days' in the session's zone), is not 7×24 h later.
    owner
        .batch_execute("SET TimeZone = 'Australia/Sydney'")
        .await
        .unwrap();
    let r = owner
        .query_one(
            "SELECT w, (w + interval '7 days') AS old_hi, to_char(w AT TIME ZONE 'UTC', 'YYYYMMDD')
             FROM (SELECT (date_trunc('week', now() AT TIME ZONE 'UTC') + make_interval(weeks => i))
                          AT TIME ZONE 'UTC' AS w
                   FROM generate_series(1, 60) i) s
             WHERE (w + interval '7 days') > w + interval '168 hours'
             ORDER BY w LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let w: chrono::DateTime<Utc> = r.get(0);
    let old_hi: chrono::DateTime<Utc> = r.get(1);
    let suffix: String = r.get(2);
    let part = format!("ai_interactions_p{suffix}");
    // Reproduce what 0003 left behind: that week's partition with the old bounds and
    // nothing after it yet (the old function was last run with it as the last week).
    owner
        .batch_execute(&format!(
            "SET app.service = 'on';
             DO $$ DECLARE r record; BEGIN
               FOR r IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                        WHERE i.inhparent = 'ai_interactions'::regclass
                          AND c.relname ~ '_p[0-9]{{8}}$' AND c.relname >= '{part}'
               LOOP
                 EXECUTE format('ALTER TABLE ai_interactions DETACH PARTITION %I', r.relname);
                 EXECUTE format('DROP TABLE %I', r.relname);
               END LOOP;
             END $$;
             CREATE TABLE {part} (LIKE ai_interactions INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
             ALTER TABLE ai_interactions ATTACH PARTITION {part}
               FOR VALUES FROM ('{w}') TO ('{old_hi}');",
            w = w.to_rfc3339(),
            old_hi = old_hi.to_rfc3339(),
        ))
        .await
        .unwrap();
    // After the upgrade, maintenance keeps weeks ahead: the next week must be created.
    let weeks = ((w - Utc::now()).num_days() / 7 + 3) as u32;
    let r = db.repo.ensure_partitions(0, weeks).await;
    assert!(
        r.is_ok(),
        "0006's ensure_partitions fails on a partition made by 0003's: {r:?}"
    );
    db.finish().await;
}

/// `validate::json` refuses a real NUL in a string or a key (jsonb cannot hold one) but
/// not the text `\u0000` (a backslash, then `u0000`), which both stores keep as it is.
async fn json_nul_rules(repo: Arc<dyn Repository>) {
    use serde_json::json;

    let a = UserId::new();
    let looks_like_nul = json!({"s": "\\u0000", "\\u0000": ["x\\u0000y"]});
    let mut np = NewProfile::new(a, format!("{a}@example.com"), "N");
    np.preferences = looks_like_nul.clone();
    let p = repo.create_profile(S, np).await.unwrap();
    assert_eq!(p.preferences, looks_like_nul);
    assert_eq!(
        repo.get_profile(S, a).await.unwrap().preferences,
        looks_like_nul
    );
    let note = |data| NewNotification {
        user_id: a,
        kind: NotificationType::System,
        priority: PriorityLevel::Low,
        title: "T".into(),
        body: String::new(),
        data,
    };
    let kept = repo
        .create_notification(S, note(json!({"path": "C:\\u0000\\x"})))
        .await
        .unwrap();
    assert_eq!(
        repo.get_notification(S, kept.id).await.unwrap().data,
        json!({"path": "C:\\u0000\\x"})
    );
    for bad in [
        json!({"s": "a\u{0}b"}),
        json!({"a\u{0}b": 1}),
        json!([["\u{0}"]]),
    ] {
        let e = repo
            .create_notification(S, note(bad.clone()))
            .await
            .unwrap_err();
        assert_eq!(e.invalid_field(), Some("data"), "{bad:?}: {e}");
    }
}

#[tokio::test]
async fn json_text_that_looks_like_nul_is_kept_in_memory() {
    json_nul_rules(Arc::new(kasama::InMemoryRepository::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_text_that_looks_like_nul_is_kept_in_jsonb() {
    let Some(db) = common::pg().await else { return };
    json_nul_rules(Arc::new(db.repo.clone())).await;
    // What PostgreSQL stored is the six characters, not a NUL.
    let stored: String = db
        .admin()
        .await
        .query_one("SELECT preferences->>'s' FROM profiles", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "\\u0000");
    db.finish().await;
}
