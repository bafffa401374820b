//! Shared test helpers: a fresh PostgreSQL database per test, cloned from a template
//! migrated by a non-superuser owner role, reached as a non-owner, non-superuser
//! application role — the deployment the README describes. The superuser of
//! `DATABASE_URL` only creates roles and databases (the DBA's part).
#![allow(dead_code, unreachable_pub)]

pub mod cluster;
pub mod fixtures;
pub mod pipeline;
pub mod redis;
pub mod semantic;
#[cfg(feature = "server")]
pub mod ws;

use std::str::FromStr;

use kasama::repository::postgres::{MIGRATIONS, migrate_url};
use kasama::{PgConfig, PgRepository};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

/// The login role the tests' repositories use: member of `kasama_app`, nothing more.
pub const APP_LOGIN: &str = "kasama_test_login";
/// The role that owns the schema and runs the migrations: `LOGIN CREATEROLE`, no
/// superuser, no `BYPASSRLS` (what managed PostgreSQL services grant).
pub const OWNER: &str = "kasama_test_owner";
/// A login role that bypasses RLS (`BYPASSRLS`), for the defence-in-depth suite.
pub const BYPASS_LOGIN: &str = "kasama_test_bypass";

/// Creates a role unless it exists (roles are cluster-wide; tests race to make them).
pub async fn ensure_role(admin: &Client, name: &str, options: &str) {
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
                CREATE ROLE {name} {options};
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$"
        ))
        .await
        .unwrap();
}

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

/// On the cluster that `admin_url` reaches as a superuser: the owner role, a new
/// database `dbname` it owns and has migrated, and the app login. Returns the owner's
/// and the app login's connection strings.
pub async fn provision(admin_url: &str, dbname: &str) -> (String, String) {
    let base = Config::from_str(admin_url).expect("admin URL parses");
    let admin = connect(admin_url).await.expect("admin connects");
    ensure_role(&admin, OWNER, "LOGIN CREATEROLE NOSUPERUSER NOBYPASSRLS").await;
    admin
        .batch_execute(&format!("CREATE DATABASE {dbname} OWNER {OWNER}"))
        .await
        .unwrap();
    let owner = conn_string(&base, Some(OWNER), dbname);
    migrate_url(&owner)
        .await
        .expect("migrations apply as the owner");
    ensure_role(&admin, APP_LOGIN, "LOGIN IN ROLE kasama_app").await;
    (owner, conn_string(&base, Some(APP_LOGIN), dbname))
}

/// A minimal successful interaction of `user` costing 1 n$, at `at` (`None`: now) —
/// for tests about where rows go, not what they hold.
pub fn one_nano_interaction(
    user: kasama::domain::UserId,
    at: Option<chrono::DateTime<chrono::Utc>>,
) -> kasama::domain::NewAiInteraction {
    kasama::domain::NewAiInteraction {
        id: None,
        user_id: user,
        agent_type: kasama::domain::AgentType::LearningCoach,
        model: "m".into(),
        input: serde_json::json!(null),
        output: serde_json::json!(null),
        input_tokens: 1,
        output_tokens: 1,
        cost_nanos: 1,
        saved_nanos: 0,
        latency_ms: 1,
        cache_hit: false,
        success: true,
        created_at: at,
    }
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
    ensure_role(&admin, OWNER, "LOGIN CREATEROLE NOSUPERUSER NOBYPASSRLS").await;
    if !exists {
        let building = format!("{tmpl}_building");
        for sql in [
            format!("DROP DATABASE IF EXISTS {building}"),
            format!("CREATE DATABASE {building} OWNER {OWNER}"),
        ] {
            admin.batch_execute(&sql).await.unwrap();
        }
        migrate_url(&conn_string(&base, Some(OWNER), &building))
            .await
            .expect("migrations apply to a fresh database as a non-superuser owner");
        admin
            .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {tmpl}"))
            .await
            .unwrap();
    }
    // kasama_app exists once any template was migrated.
    ensure_role(&admin, APP_LOGIN, "LOGIN IN ROLE kasama_app").await;
    ensure_role(&admin, BYPASS_LOGIN, "LOGIN BYPASSRLS IN ROLE kasama_app").await;
    let name = format!("kasama_t_{}", uuid::Uuid::new_v4().simple());
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {name} TEMPLATE {tmpl} OWNER {OWNER}"
        ))
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
    /// A connection as the cluster's superuser (the DBA: for set-up and for looking
    /// behind RLS in assertions, never for the code under test).
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

    /// The schema owner's connection string (runs migrations and maintenance DDL).
    pub fn owner_conn_string(&self) -> String {
        conn_string(&self.base, Some(OWNER), &self.name)
    }

    /// A raw connection as the schema owner.
    pub async fn owner(&self) -> Client {
        connect(&self.owner_conn_string()).await.unwrap()
    }

    /// A repository on a role that bypasses RLS, with the explicit opt-out.
    pub fn bypass_repo(&self) -> PgRepository {
        let mut cfg = PgConfig::new(conn_string(&self.base, Some(BYPASS_LOGIN), &self.name));
        cfg.allow_rls_bypass = true;
        PgRepository::connect(&cfg).expect("pool builds")
    }

    /// A second database `<prefix>_<random>`, owned by the owner role and migrated
    /// only up to `version` (what an older build ran); returns its name and a
    /// connection as its owner. [`TestDb::drop_database`] removes it.
    pub async fn database_at(&self, prefix: &str, version: i32) -> (String, Client) {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        self.admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {OWNER}"))
            .await
            .unwrap();
        let mut owner = connect(&conn_string(&self.base, Some(OWNER), &name))
            .await
            .unwrap();
        for m in MIGRATIONS.iter().filter(|m| m.version <= version) {
            let tx = owner.transaction().await.unwrap();
            tx.batch_execute(m.sql).await.unwrap();
            tx.commit().await.unwrap();
        }
        (name, owner)
    }

    /// Drops a database made by [`TestDb::database_at`].
    pub async fn drop_database(&self, name: &str) {
        let admin_db = self.base.get_dbname().unwrap_or("postgres").to_string();
        let c = connect(&conn_string(&self.base, None, &admin_db))
            .await
            .unwrap();
        let _ = c
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
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

/// What a test puts in place of [`kasama::Repository::record_interactions`] in a
/// [`Hooked`] repository (e.g. a database that fails, or loses the answer to a commit).
#[async_trait::async_trait]
pub trait RecordHook: Send + Sync + 'static {
    async fn record_interactions(
        &self,
        inner: &kasama::InMemoryRepository,
        a: kasama::domain::Actor,
        b: &[kasama::domain::NewAiInteraction],
    ) -> kasama::Result<u64>;
}

/// The in-memory repository with `record_interactions` replaced by `hook`; every other
/// call goes to `inner`.
pub struct Hooked<H> {
    pub inner: kasama::InMemoryRepository,
    pub hook: H,
}

// Every call goes to `inner`, but `record_interactions` to the hook.
macro_rules! to_inner_or_hook {
    ($s:ident, record_interactions($a:ident, $b:ident)) => {
        $s.hook.record_interactions(&$s.inner, $a, $b).await
    };
    ($s:ident, $name:ident($($a:ident),*)) => {
        kasama::Repository::$name(&$s.inner, $($a),*).await
    };
}
kasama::__forward_repository!(impl[H: RecordHook] Hooked<H> => to_inner_or_hook);
