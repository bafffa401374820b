//! Embedded migrations, applied in order under an advisory lock.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::db_err;
use crate::error::{Error, Result};

/// One migration: a version, a name and its SQL.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// Its version; applied in ascending order.
    pub version: i32,
    /// A short name.
    pub name: &'static str,
    /// The SQL, run in one transaction.
    pub sql: &'static str,
}

impl Migration {
    /// SHA-256 of the SQL, hex-encoded; recorded when applied.
    pub fn checksum(&self) -> String {
        Sha256::digest(self.sql.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The migrations this build carries, from `migrations/`.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "schema",
        sql: include_str!("../../../migrations/0001_schema.sql"),
    },
    Migration {
        version: 2,
        name: "security",
        sql: include_str!("../../../migrations/0002_security.sql"),
    },
    Migration {
        version: 3,
        name: "functions",
        sql: include_str!("../../../migrations/0003_functions.sql"),
    },
    Migration {
        version: 4,
        name: "cost_nanos",
        sql: include_str!("../../../migrations/0004_cost_nanos.sql"),
    },
    Migration {
        version: 5,
        name: "realtime",
        sql: include_str!("../../../migrations/0005_realtime.sql"),
    },
    Migration {
        version: 6,
        name: "safety",
        sql: include_str!("../../../migrations/0006_safety.sql"),
    },
    Migration {
        version: 7,
        name: "budgets",
        sql: include_str!("../../../migrations/0007_budgets.sql"),
    },
    Migration {
        version: 8,
        name: "semantic_entries",
        sql: include_str!("../../../migrations/0008_semantic_entries.sql"),
    },
    Migration {
        version: 9,
        name: "semantic_context",
        sql: include_str!("../../../migrations/0009_semantic_context.sql"),
    },
    Migration {
        version: 10,
        name: "conversations",
        sql: include_str!("../../../migrations/0010_conversations.sql"),
    },
    Migration {
        version: 11,
        name: "budget_reservations",
        sql: include_str!("../../../migrations/0011_budget_reservations.sql"),
    },
];

/// Checksums of earlier texts of a migration that a database may have applied and
/// that this build accepts as applied: `(version, checksum)`. 0003 once declared
/// `SET app.service = 'on'` on a function, which only a superuser may; the function
/// it defined is replaced by 0006 either way.
const SUPERSEDED: &[(i32, &str)] = &[(
    3,
    "68350a0afc7881b1398bd53b400a261bee3786055fdc4602ba13bcdf1fefdc61",
)];

/// What [`migrate`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this call.
    pub applied: Vec<i32>,
    /// Versions that were already applied.
    pub already_applied: Vec<i32>,
}

/// The advisory-lock key migrations hold ("kasama" in ASCII).
const LOCK_KEY: i64 = 0x0000_6b61_7361_6d61;

/// Applies the pending [`MIGRATIONS`], each in its own transaction, recording each in
/// `kasama_migrations` with its checksum. Connect as the role that should own the
/// schema (not the application role). Safe to run from several processes at once: a
/// session advisory lock serialises them, and the later ones find nothing to do.
///
/// # Errors
/// [`Error::Migration`] when an applied migration's SQL was edited since (checksum
/// mismatch), when the database has a migration this build does not know, or when a
/// migration fails (it is rolled back).
pub async fn migrate(client: &mut Client) -> Result<MigrationReport> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(db_err)?;
    let result = migrate_locked(client).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let report = result?;
    unlock.map_err(db_err)?;
    Ok(report)
}

async fn migrate_locked(client: &mut Client) -> Result<MigrationReport> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS kasama_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(db_err)?;
    let applied: Vec<(i32, String)> = client
        .query(
            "SELECT version, checksum FROM kasama_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut report = MigrationReport::default();
    for (version, checksum) in &applied {
        match MIGRATIONS.iter().find(|m| m.version == *version) {
            None => {
                return Err(Error::Migration {
                    version: *version,
                    reason: "applied in the database but unknown to this build (is the database newer than the code?)".into(),
                });
            }
            Some(m)
                if m.checksum() != *checksum
                    && !SUPERSEDED.contains(&(m.version, checksum.as_str())) =>
            {
                return Err(Error::Migration {
                    version: *version,
                    reason: format!(
                        "{} was edited after it was applied (checksum {} in the database, {} in this build); add a new migration instead",
                        m.name,
                        &checksum[..checksum.len().min(12)],
                        &m.checksum()[..12]
                    ),
                });
            }
            Some(_) => report.already_applied.push(*version),
        }
    }
    for m in MIGRATIONS {
        if report.already_applied.contains(&m.version) {
            continue;
        }
        let tx = client.transaction().await.map_err(db_err)?;
        if let Err(e) = tx.batch_execute(m.sql).await {
            let reason = match e.as_db_error() {
                Some(db) => format!("{}: {}", db.code().code(), db.message()),
                None => "connection failed".into(),
            };
            return Err(Error::Migration {
                version: m.version,
                reason,
            });
        }
        tx.execute(
            "INSERT INTO kasama_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &m.checksum()],
        )
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        report.applied.push(m.version);
    }
    Ok(report)
}

/// Connects to `url` (TLS as its `sslmode`/`sslrootcert` say, like
/// [`PgRepository::connect`](super::PgRepository::connect)), applies the migrations
/// with [`migrate`], and disconnects.
///
/// # Errors
/// As [`migrate`]; [`Error::InvalidInput`] for a bad URL or TLS setting;
/// [`Error::Backend`] when the connection fails.
pub async fn migrate_url(url: &str) -> Result<MigrationReport> {
    let (config, tls) = super::tls::connect_config(url)?;
    let (mut client, conn) = config
        .connect(tls)
        .await
        .map_err(|e| match e.as_db_error() {
            Some(_) => db_err(e),
            None => super::connect_err(e),
        })?;
    let task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "migration connection ended with an error");
        }
    });
    let result = migrate(&mut client).await;
    drop(client);
    let _ = task.await;
    result
}
