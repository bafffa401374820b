//! [`PgRepository`]: the data layer on PostgreSQL (tokio-postgres + deadpool-postgres),
//! with row-level security, partitioned tables and analytics functions.
//!
//! - [`migrate`] applies the embedded migrations (as the schema owner).
//! - [`PgRepository::connect`] opens a pool for the application role, which must be
//!   neither the tables' owner nor a superuser (see the README, "Database roles").
//! - Every user-scoped call runs in one transaction that first sets `app.user_id`
//!   (transaction-local), so RLS — not the caller — keeps users apart. A single-statement
//!   call sends `BEGIN`, the scope, the statement and `COMMIT` pipelined, in one round
//!   trip; statements are prepared once per connection.

mod maintenance;
mod migrate;
mod queries;
mod rows;
pub(crate) mod tls;

pub use maintenance::{
    MaintenanceConfig, MaintenanceReport, MaintenanceStatus, MaintenanceTask, PartitionMaintainer,
    spawn_partition_maintenance,
};
pub use migrate::{MIGRATIONS, Migration, MigrationReport, migrate, migrate_url};

use std::time::Duration;

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use futures_util::future::join4;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::domain::Actor;
use crate::error::{Error, Result};

/// Connection settings of a [`PgRepository`]. Its `Debug` shows the URL with the
/// password replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct PgConfig {
    /// A libpq-style URL or key=value string, e.g.
    /// `postgres://kasama_login@db.example.com:5432/app?sslmode=verify-full&sslrootcert=/etc/kasama/db-ca.pem`
    /// (`sslmode` and `sslrootcert` as in libpq; see [`PgRepository::connect`]).
    /// Default: `postgres://postgres@127.0.0.1:5432/postgres`.
    pub url: String,
    /// Most connections in the pool. Default: 10.
    pub max_size: usize,
    /// How long a call waits for a free connection before [`Error::Timeout`].
    /// Default: 5 s.
    pub wait_timeout: Option<Duration>,
    /// How long opening a new connection may take. Default: 5 s.
    pub create_timeout: Option<Duration>,
    /// How long checking a returned connection may take. Default: 5 s.
    pub recycle_timeout: Option<Duration>,
    /// **Dangerous.** Accept a role for which row-level security does not apply (a
    /// superuser, a role with `BYPASSRLS`, the owner of the tables, or a role that can
    /// become one of those). Default: `false`: every new connection checks its role and
    /// the pool refuses it with [`Error::Config`]. The repository still filters every
    /// user-scoped statement by the acting user, so users stay apart without RLS, but a
    /// single missed filter would then expose data: set this only for tools
    /// (migrations, one-off maintenance) that need it, never for the app.
    pub allow_rls_bypass: bool,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &tls::RedactedUrl(&self.url))
            .field("max_size", &self.max_size)
            .field("wait_timeout", &self.wait_timeout)
            .field("create_timeout", &self.create_timeout)
            .field("recycle_timeout", &self.recycle_timeout)
            .field("allow_rls_bypass", &self.allow_rls_bypass)
            .finish()
    }
}

impl Default for PgConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            max_size: 10,
            wait_timeout: Some(Duration::from_secs(5)),
            create_timeout: Some(Duration::from_secs(5)),
            recycle_timeout: Some(Duration::from_secs(5)),
            allow_rls_bypass: false,
        }
    }
}

impl PgConfig {
    /// The defaults, with `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// The defaults, with `url` from `$DATABASE_URL` when set.
    pub fn from_env() -> Self {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => Self::new(url),
            _ => Self::default(),
        }
    }
}

/// The PostgreSQL [`Repository`](super::Repository).
#[derive(Clone, Debug)]
pub struct PgRepository {
    pool: Pool,
}

const SCOPE_SQL: &str =
    "SELECT set_config('app.user_id', $1, true), set_config('app.service', $2, true)";

impl PgRepository {
    /// Builds the pool. Connections open lazily, on first use; each new connection
    /// first checks the role it runs as (see [`PgConfig::allow_rls_bypass`]) and sets
    /// the session's default isolation to READ COMMITTED (the crate's SQL is written
    /// for it, whatever the database's default). Call [`PgRepository::verify`] at
    /// start-up to fail fast.
    ///
    /// TLS follows the URL's `sslmode` and `sslrootcert` as libpq does (see the
    /// README, "TLS"): `disable`, `prefer` (the default), `require`, `verify-ca`,
    /// `verify-full`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an unparsable URL (naming `url`; the URL itself,
    /// which may hold a password, is never echoed), an unknown `sslmode`, a
    /// `verify-ca`/`verify-full` without a readable `sslrootcert`, or a pool size of 0.
    pub fn connect(config: &PgConfig) -> Result<Self> {
        let (pg, tls) = tls::connect_config(&config.url)?;
        if config.max_size == 0 {
            return Err(Error::invalid("max_size", "must be at least 1"));
        }
        let mgr = Manager::from_config(
            pg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let allow_bypass = config.allow_rls_bypass;
        let pool = Pool::builder(mgr)
            .post_create(Hook::async_fn(move |client, _| {
                Box::pin(async move {
                    // The crate's SQL is written for READ COMMITTED (the shared
                    // budget's reservation refuses any other level): a database or
                    // role that defaults to another does not change these sessions.
                    client
                        .batch_execute("SET default_transaction_isolation = 'read committed'")
                        .await
                        .map_err(HookError::Backend)?;
                    match check_role(client, allow_bypass).await {
                        Ok(()) => Ok(()),
                        Err(RoleCheck::Db(e)) => Err(HookError::Backend(e)),
                        Err(RoleCheck::Refused(msg)) => Err(HookError::message(msg)),
                    }
                })
            }))
            .max_size(config.max_size)
            .wait_timeout(config.wait_timeout)
            .create_timeout(config.create_timeout)
            .recycle_timeout(config.recycle_timeout)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| backend("building the pool", false, e))?;
        Ok(Self { pool })
    }

    /// Wraps an existing pool (its connections must use the application role; the
    /// pool's own hooks decide whether they are checked). Its sessions must run at
    /// READ COMMITTED, PostgreSQL's default (a shared budget's reservation refuses any
    /// other level; [`PgRepository::connect`] sets it on every connection).
    pub fn from_pool(pool: Pool) -> Self {
        Self { pool }
    }

    /// Opens (or reuses) a connection, which checks the database role: call it at
    /// start-up so a misconfigured deployment refuses to start instead of failing on
    /// the first request.
    ///
    /// # Errors
    /// [`Error::Config`] when the role bypasses row-level security (and
    /// [`PgConfig::allow_rls_bypass`] is off); `Backend`/`Timeout` when the database
    /// cannot be reached.
    pub async fn verify(&self) -> Result<()> {
        self.client().await.map(drop)
    }

    /// The underlying pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Creates the partitions for this month and `months_ahead` more (assessments)
    /// and this week and `weeks_ahead` more (AI interactions), plus any that rows in a
    /// DEFAULT partition need, moving those rows (writers wait for the move; moved rows
    /// send no change events). Bounds are in UTC whatever the session's time zone.
    /// Idempotent; call it at start-up and daily ([`spawn_partition_maintenance`]
    /// does). Returns how many partitions were created.
    ///
    /// # Errors
    /// `InvalidInput` for more than 120 months or 520 weeks; `Backend` on database errors.
    pub async fn ensure_partitions(&self, months_ahead: u32, weeks_ahead: u32) -> Result<u32> {
        if months_ahead > 120 || weeks_ahead > 520 {
            return Err(Error::invalid("ahead", "at most 120 months and 520 weeks"));
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT kasama_ensure_partitions($1, $2)")
            .await
            .map_err(db_err)?;
        let row = client
            .query_one(&stmt, &[&(months_ahead as i32), &(weeks_ahead as i32)])
            .await
            .map_err(db_err)?;
        Ok(row.get::<_, i32>(0) as u32)
    }

    /// Switches the change feed of `ai_interactions` (the hottest table) on or off;
    /// off by default.
    ///
    /// # Errors
    /// `Backend` on database errors.
    pub async fn set_ai_interactions_feed(&self, on: bool) -> Result<()> {
        let client = self.client().await?;
        client
            .execute("SELECT kasama_ai_interactions_feed($1)", &[&on])
            .await
            .map_err(db_err)?;
        Ok(())
    }

    pub(crate) async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(pool_err)
    }

    /// Runs one statement in its own transaction scoped to `actor`: BEGIN, scope,
    /// statement, COMMIT, pipelined in one round trip. A failed statement makes the
    /// server turn the COMMIT into a rollback, so nothing is left behind.
    pub(crate) async fn scoped(
        &self,
        actor: Actor,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let client = self.client().await?;
        let begin = client.prepare_cached("BEGIN").await.map_err(db_err)?;
        let scope = client.prepare_cached(SCOPE_SQL).await.map_err(db_err)?;
        let stmt = client.prepare_cached(sql).await.map_err(db_err)?;
        let commit = client.prepare_cached("COMMIT").await.map_err(db_err)?;
        let (uid, svc) = scope_params(actor);
        // join4 polls its futures in order, so the four requests are queued on the
        // connection in this order on the first poll; once queued they all reach the
        // server even if this future is dropped, so no transaction is left open.
        let (b, s, q, c) = join4(
            client.execute(&begin, &[]),
            client.execute(&scope, &[&uid, &svc]),
            client.query(&stmt, params),
            client.execute(&commit, &[]),
        )
        .await;
        b.map_err(db_err)?;
        s.map_err(db_err)?;
        let rows = q.map_err(db_err)?;
        c.map_err(db_err)?;
        Ok(rows)
    }

    /// Starts a transaction on `client` scoped to `actor`.
    pub(crate) async fn begin<'a>(
        client: &'a mut Object,
        actor: Actor,
    ) -> Result<deadpool_postgres::Transaction<'a>> {
        let tx = client.transaction().await.map_err(db_err)?;
        let scope = tx.prepare_cached(SCOPE_SQL).await.map_err(db_err)?;
        let (uid, svc) = scope_params(actor);
        tx.execute(&scope, &[&uid, &svc]).await.map_err(db_err)?;
        Ok(tx)
    }
}

/// The user tables row-level security must protect.
const USER_TABLES: &str = "'profiles', 'assessments', 'assessment_answers', 'goals', \
    'learning_paths', 'progress', 'notifications', 'ai_interactions', 'ai_budget_spend', \
    'ai_budget_holds', 'ai_budget_settled', 'semantic_entries', 'conversations', \
    'conversation_messages'";

/// Why [`check_role`] refused.
pub(crate) enum RoleCheck {
    Db(tokio_postgres::Error),
    Refused(String),
}

/// Refuses a role for which row-level security would not keep users apart: a
/// superuser, a `BYPASSRLS` role, an owner of a user table, a role named in a policy
/// of a user table (e.g. `kasama_readonly`, which reads every row), a `CREATEROLE`
/// role (on PostgreSQL 15 it can grant itself any of those) — or a role that can
/// become one of those (`SET ROLE` to a role it is a member of). With `allow_bypass`
/// it only warns.
pub(crate) async fn check_role(
    client: &tokio_postgres::Client,
    allow_bypass: bool,
) -> std::result::Result<(), RoleCheck> {
    let sql = format!(
        "WITH t AS (SELECT to_regclass(t) AS oid FROM unnest(ARRAY[{USER_TABLES}]) AS t),
              mine AS (SELECT r.* FROM pg_roles r WHERE pg_has_role(current_user, r.oid, 'MEMBER'))
         SELECT current_user::text,
            (SELECT string_agg(rolname::text, ', ' ORDER BY rolname) FROM mine WHERE rolsuper),
            (SELECT string_agg(rolname::text, ', ' ORDER BY rolname) FROM mine WHERE rolbypassrls),
            (SELECT string_agg(DISTINCT c.relowner::regrole::text, ', ') FROM pg_class c
              WHERE c.oid IN (SELECT oid FROM t) AND c.relowner IN (SELECT oid FROM mine)),
            (SELECT string_agg(DISTINCT m.rolname::text, ', ') FROM pg_policy p
              JOIN mine m ON m.oid = ANY (p.polroles)
              WHERE p.polrelid IN (SELECT oid FROM t)),
            (SELECT string_agg(rolname::text, ', ' ORDER BY rolname) FROM mine WHERE rolcreaterole)"
    );
    let row = client.query_one(&sql, &[]).await.map_err(RoleCheck::Db)?;
    let role: String = row.get(0);
    let found = |i: usize| row.get::<_, Option<String>>(i);
    let why = if let Some(r) = found(1) {
        format!("is or can become the superuser {r}")
    } else if let Some(r) = found(2) {
        format!("is or can become {r}, which has BYPASSRLS")
    } else if let Some(r) = found(3) {
        format!("is or can become {r}, the owner of the app's tables")
    } else if let Some(r) = found(4) {
        format!("is or can become {r}, for which a policy opens other users' rows")
    } else if let Some(r) = found(5) {
        format!(
            "is or can become {r}, which has CREATEROLE and so can grant itself the owner's role"
        )
    } else {
        return Ok(());
    };
    let msg = format!(
        "the database role \"{role}\" {why}, so row-level security would not keep users apart. \
         Connect as a login role that is only a member of kasama_app (README, \"Database roles\"); \
         a tool that must bypass RLS can set PgConfig::allow_rls_bypass"
    );
    if allow_bypass {
        tracing::warn!(%role, "allow_rls_bypass is set: {why}; row-level security does not apply");
        return Ok(());
    }
    Err(RoleCheck::Refused(msg))
}

fn scope_params(actor: Actor) -> (String, &'static str) {
    match actor {
        Actor::User(u) => (u.to_string(), ""),
        Actor::Service => (String::new(), "on"),
    }
}

pub(crate) fn backend(
    what: &'static str,
    retryable: bool,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::Backend {
        what: what.into(),
        retryable,
        source: Box::new(e),
    }
}

fn pool_err(e: PoolError) -> Error {
    match e {
        PoolError::Timeout(_) => Error::Timeout {
            what: "waiting for a database connection".into(),
        },
        PoolError::Backend(e) if e.as_db_error().is_none() => connect_err(e),
        PoolError::Backend(e) => db_err(e),
        PoolError::PostCreateHook(HookError::Message(msg)) => Error::Config {
            what: "database role".into(),
            reason: msg.into_owned(),
        },
        PoolError::PostCreateHook(HookError::Backend(e)) => db_err(e),
        other => backend("database pool", true, SafeError(other.to_string())),
    }
}

/// A failure to open a connection (refused, unreachable, TLS). tokio-postgres's
/// connection-phase messages name no credentials, so the reason is kept (a TLS
/// certificate refusal says why); a refused certificate is not worth retrying.
pub(crate) fn connect_err(e: tokio_postgres::Error) -> Error {
    let retryable = !tls::is_certificate_error(&e);
    // tokio-postgres's Display leaves out the cause ("error performing TLS handshake"):
    // add the chain, which says which certificate check failed.
    let msg = crate::error::with_sources(&e);
    backend("connecting to PostgreSQL", retryable, SafeError(msg))
}

/// A database error reduced to its SQLSTATE and primary message: no DETAIL (it can
/// hold another row's values), no query text.
#[derive(Debug)]
struct SafeError(String);

impl std::fmt::Display for SafeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SafeError {}

/// Maps a driver error to the crate's error, by SQLSTATE and constraint name
/// (`ck_<field>`, `fk_<field>`).
pub(crate) fn db_err(e: tokio_postgres::Error) -> Error {
    let Some(db) = e.as_db_error() else {
        // I/O, closed connection, protocol: the next connection may work.
        let closed = e.is_closed();
        return backend(
            "database connection",
            true,
            SafeError(if closed {
                "connection closed".into()
            } else {
                "connection error".into()
            }),
        );
    };
    let constraint = db.constraint().unwrap_or("");
    let code = db.code();
    if *code == SqlState::UNIQUE_VIOLATION {
        let what = match constraint {
            "profiles_pkey" => "a profile with this id exists",
            "profiles_email_key" => "email already in use",
            c if c.starts_with("ai_interactions") => "interaction id already recorded",
            _ => "duplicate record",
        };
        return Error::Conflict { what: what.into() };
    }
    if *code == SqlState::FOREIGN_KEY_VIOLATION {
        let field = constraint
            .strip_prefix("fk_")
            .unwrap_or("reference")
            .to_string();
        let reason = if field == "user_id" {
            "no profile for this user"
        } else {
            "refers to nothing this user has"
        };
        return Error::invalid(field, reason);
    }
    if *code == SqlState::CHECK_VIOLATION || *code == SqlState::NOT_NULL_VIOLATION {
        let field = constraint
            .strip_prefix("ck_")
            .map(str::to_string)
            .or_else(|| db.column().map(str::to_string))
            .unwrap_or_else(|| "record".into());
        return Error::invalid(field, "refused by the database's constraints");
    }
    if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        return Error::forbidden("refused by row-level security");
    }
    if *code == SqlState::QUERY_CANCELED {
        return Error::Timeout {
            what: "database statement".into(),
        };
    }
    let retryable = matches!(
        code.code(),
        "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03" | "53300"
    ) || code.code().starts_with("08");
    backend(
        "database query",
        retryable,
        SafeError(format!("{}: {}", code.code(), db.message())),
    )
}
