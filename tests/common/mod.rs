//! Shared test helpers: a fresh PostgreSQL database per test, cloned from a migrated
//! template, reached as a non-owner, non-superuser application role.
#![allow(dead_code, unreachable_pub)]

pub mod cluster;

use std::str::FromStr;

use kasama::repository::postgres::{MIGRATIONS, migrate_url};
use kasama::{PgConfig, PgRepository};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

/// The login role the tests' repositories use: member of `kasama_app`, nothing more.
pub const APP_LOGIN: &str = "kasama_test_login";

pub struct TestDb {
    pub name: String,
    pub base: Config,
    pub repo: PgRepository,
}

fn base_config() -> Config {
    let url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    Config::from_str(&url).expect("DATABASE_URL parses")
}

/// A connection string for `base` with another user and database.
pub fn conn_string(base: &Config, user: Option<&str>, dbname: &str) -> String {
    let mut parts = Vec::new();
    if let Some(Host::Tcp(h)) = base.get_hosts().first() {
        parts.push(format!("host={h}"));
    }
    #[cfg(unix)]
    if let Some(Host::Unix(p)) = base.get_hosts().first() {
        parts.push(format!("host={}", p.display()));
    }
    if let Some(p) = base.get_ports().first() {
        parts.push(format!("port={p}"));
    }
    let user = user.or(base.get_user()).unwrap_or("postgres");
    parts.push(format!("user={user}"));
    if let Some(pw) = base.get_password()
        && user == base.get_user().unwrap_or("")
    {
        parts.push(format!("password='{}'", String::from_utf8_lossy(pw)));
    }
    parts.push(format!("dbname={dbname}"));
    parts.join(" ")
}

pub async fn connect(conn: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn require_postgres() -> bool {
    std::env::var("KASAMA_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

fn template_name() -> String {
    let mut all = String::new();
    for m in MIGRATIONS {
        all.push_str(&m.checksum());
    }
    // A short, stable digest of every migration's checksum.
    let h = all.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("kasama_tmpl_{h:016x}")
}

/// A fresh, migrated database and a repository on it as the application role; `None`
/// (after printing `SKIPPED (no PostgreSQL)`) when no server answers, unless
/// `KASAMA_REQUIRE_POSTGRES=1`, which makes that a failure.
pub async fn pg() -> Option<TestDb> {
    let base = base_config();
    let admin_db = base.get_dbname().unwrap_or("postgres").to_string();
    let admin = match connect(&conn_string(&base, None, &admin_db)).await {
        Ok(c) => c,
        Err(e) => {
            if require_postgres() {
                panic!("PostgreSQL is required (KASAMA_REQUIRE_POSTGRES=1) but unreachable: {e}");
            }
            eprintln!("SKIPPED (no PostgreSQL): {e}");
            return None;
        }
    };
    let tmpl = template_name();
    admin
        .execute("SELECT pg_advisory_lock(424242)", &[])
        .await
        .unwrap();
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&tmpl])
        .await
        .unwrap()
        .is_some();
    if !exists {
        let building = format!("{tmpl}_building");
        for sql in [
            format!("DROP DATABASE IF EXISTS {building}"),
            format!("CREATE DATABASE {building}"),
        ] {
            admin.batch_execute(&sql).await.unwrap();
        }
        migrate_url(&conn_string(&base, None, &building))
            .await
            .expect("migrations apply to a fresh database");
        admin
            .batch_execute(&format!(
                "DO $$ BEGIN
                    CREATE ROLE {APP_LOGIN} LOGIN IN ROLE kasama_app;
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                 END $$"
            ))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {tmpl}"))
            .await
            .unwrap();
    }
    let name = format!("kasama_t_{}", uuid::Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {tmpl}"))
        .await
        .unwrap();
    admin
        .execute("SELECT pg_advisory_unlock(424242)", &[])
        .await
        .unwrap();
    let repo = PgRepository::connect(&PgConfig::new(conn_string(&base, Some(APP_LOGIN), &name)))
        .expect("pool builds");
    Some(TestDb { name, base, repo })
}

impl TestDb {
    /// A connection as the database's owner (a superuser in the default set-up).
    pub async fn admin(&self) -> Client {
        connect(&conn_string(&self.base, None, &self.name))
            .await
            .unwrap()
    }

    /// A raw connection as the application role.
    pub async fn app(&self) -> Client {
        connect(&conn_string(&self.base, Some(APP_LOGIN), &self.name))
            .await
            .unwrap()
    }

    pub fn app_config(&self) -> PgConfig {
        PgConfig::new(conn_string(&self.base, Some(APP_LOGIN), &self.name))
    }

    pub fn admin_conn_string(&self) -> String {
        conn_string(&self.base, None, &self.name)
    }

    /// Drops the database.
    pub async fn finish(self) {
        self.repo.pool().close();
        let admin_db = self.base.get_dbname().unwrap_or("postgres").to_string();
        if let Ok(c) = connect(&conn_string(&self.base, None, &admin_db)).await {
            let _ = c
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .await;
        }
    }
}
