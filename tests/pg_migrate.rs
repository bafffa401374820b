//! Migrations: applied by a non-superuser owner (as on a managed PostgreSQL), once,
//! safe when several processes run them at once, and an edited or unknown migration
//! is refused.

mod common;

use kasama::Error;
use kasama::repository::postgres::{MIGRATIONS, migrate_url};

async fn empty_db() -> Option<(String, String, tokio_postgres::Client)> {
    // Borrow the helper's connection settings, then make an empty database beside it.
    let db = common::pg().await?;
    let admin = db.admin().await;
    let name = format!("{}_empty", db.name);
    admin
        .batch_execute(&format!("CREATE DATABASE {name} OWNER {}", common::OWNER))
        .await
        .unwrap();
    let conn = db
        .owner_conn_string()
        .replace(&format!("dbname={}", db.name), &format!("dbname={name}"));
    Some((name, conn, admin))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_and_repeated_runs_apply_each_migration_once() {
    let Some((name, conn, admin)) = empty_db().await else {
        return;
    };
    let all: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    let (r1, r2, r3) = tokio::join!(migrate_url(&conn), migrate_url(&conn), migrate_url(&conn));
    let reports = [r1.unwrap(), r2.unwrap(), r3.unwrap()];
    let applied: Vec<&Vec<i32>> = reports
        .iter()
        .map(|r| &r.applied)
        .filter(|a| !a.is_empty())
        .collect();
    assert_eq!(applied, [&all], "exactly one run applied everything");
    assert_eq!(
        reports.iter().filter(|r| r.already_applied == all).count(),
        2
    );
    let again = migrate_url(&conn).await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.already_applied, all);

    let c = common::connect(&conn).await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM kasama_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, all.len() as i64);

    // The owner is no superuser and cannot bypass RLS: the migrations needed neither.
    let (sup, bypass): (bool, bool) = {
        let r = c
            .query_one(
                "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(!sup && !bypass);

    // A database migrated with 0003's earlier text (which only a superuser could
    // apply) is accepted as it is.
    c.execute(
        "UPDATE kasama_migrations SET checksum = '68350a0afc7881b1398bd53b400a261bee3786055fdc4602ba13bcdf1fefdc61' WHERE version = 3",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(migrate_url(&conn).await.unwrap().already_applied, all);

    // An edited migration is refused, naming its version.
    c.execute(
        "UPDATE kasama_migrations SET checksum = 'edited' WHERE version = 2",
        &[],
    )
    .await
    .unwrap();
    match migrate_url(&conn).await.unwrap_err() {
        Error::Migration { version, reason } => {
            assert_eq!(version, 2);
            assert!(reason.contains("edited"), "{reason}");
        }
        e => panic!("{e:?}"),
    }
    // So is a migration the code does not know (the database is newer than the code).
    let m2 = MIGRATIONS[1].checksum();
    c.execute(
        "UPDATE kasama_migrations SET checksum = $1 WHERE version = 2",
        &[&m2],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO kasama_migrations (version, name, checksum) VALUES (999, 'future', 'x')",
        &[],
    )
    .await
    .unwrap();
    match migrate_url(&conn).await.unwrap_err() {
        Error::Migration { version, .. } => assert_eq!(version, 999),
        e => panic!("{e:?}"),
    }
    drop(c);
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
}
