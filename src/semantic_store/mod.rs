//! [`PgSemanticStore`]: semantic-cache entries shared between app instances through
//! PostgreSQL (table `semantic_entries`, migration 0008).
//!
//! Each instance's [`SemanticCache`](crate::semantic::SemanticCache) keeps its own
//! bounded index; built with
//! [`build_shared`](crate::semantic::SemanticCacheBuilder::build_shared) over this
//! store it persists what it stores, loads the live entries at start-up, and follows
//! the other instances: every insert and every forgotten user is announced with
//! `NOTIFY kasama_semantic` (a small payload: the entry's id, or the user's), which a
//! dedicated listener connection per store hears, reads and passes on. After the
//! listener (re)connects the caches catch up, since NOTIFY is lost while nobody
//! listens. A sweep deletes expired rows and keeps the table under
//! [`PgSemanticStoreConfig::max_rows`].
//!
//! Reads and writes run as the service (`app.service`), through the
//! [`PgRepository`]'s pool, so the application role and its row-level security
//! apply.

mod listen;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::agent::Scope;
use crate::domain::{Actor, AgentType, UserId};
use crate::error::{Error, Result};
use crate::repository::PgRepository;
use crate::repository::postgres::tls::{RedactedUrl, connect_config};
use crate::semantic::{CachedAnswer, LoadQuery, SemanticStore, SharedChange, SharedEntry};

/// The NOTIFY channel of semantic-cache changes.
pub(crate) const CHANNEL: &str = "kasama_semantic";

/// Settings of [`PgSemanticStore`]. Defaults on each field. Its `Debug` hides the
/// connection string's password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgSemanticStoreConfig {
    /// Connection string of the listener connection (a role that passes the same
    /// check as the repository's: a member of `kasama_app`, not an owner or
    /// superuser), `sslmode`/`sslrootcert` as for
    /// [`PgRepository::connect`](crate::PgRepository::connect). Default:
    /// `postgres://postgres@127.0.0.1:5432/postgres`.
    pub url: String,
    /// First reconnect delay; doubles per failed attempt (with jitter). Default: 1 s.
    pub reconnect_min: Duration,
    /// Longest reconnect delay. Default: 30 s.
    pub reconnect_max: Duration,
    /// Heartbeat interval of the listener. Default: 30 s.
    pub heartbeat: Duration,
    /// A heartbeat that takes longer counts the connection as dead. Default: 5 s.
    pub heartbeat_timeout: Duration,
    /// How often expired rows are deleted and the table cut to
    /// [`max_rows`](Self::max_rows). Default: 5 min.
    pub sweep_every: Duration,
    /// Most rows the table keeps; the sweep deletes the oldest beyond it. Default:
    /// 1,000,000.
    pub max_rows: u64,
    /// Changes buffered per subscribing cache before it falls behind, and
    /// notifications buffered by the listener before it drops them (either way the
    /// caches then catch up from the table). Default: 1024.
    pub buffer: usize,
    /// **Dangerous.** Accept a listener role for which row-level security does not
    /// apply, as [`PgConfig::allow_rls_bypass`](crate::PgConfig::allow_rls_bypass).
    /// Default: `false`: such a role is refused and the store does not listen.
    pub allow_rls_bypass: bool,
}

impl std::fmt::Debug for PgSemanticStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSemanticStoreConfig")
            .field("url", &RedactedUrl(&self.url))
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("heartbeat", &self.heartbeat)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("sweep_every", &self.sweep_every)
            .field("max_rows", &self.max_rows)
            .field("buffer", &self.buffer)
            .field("allow_rls_bypass", &self.allow_rls_bypass)
            .finish()
    }
}

impl Default for PgSemanticStoreConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            heartbeat: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(5),
            sweep_every: Duration::from_secs(300),
            max_rows: 1_000_000,
            buffer: 1024,
            allow_rls_bypass: false,
        }
    }
}

impl PgSemanticStoreConfig {
    /// The defaults, with `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

/// The state of a [`PgSemanticStore`]'s listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenerStatus {
    /// Whether it is connected and listening.
    pub listening: bool,
    /// The server process of its connection, while connected.
    pub backend_pid: Option<i32>,
    /// Times it connected again after losing its connection.
    pub reconnects: u64,
    /// Why it stopped for good (a role that bypasses row-level security), if it did.
    pub refused: Option<String>,
}

/// Semantic-cache entries in PostgreSQL, shared between instances — see the module
/// docs. Dropping it stops its listener and sweep.
pub struct PgSemanticStore {
    repo: PgRepository,
    changes: broadcast::Sender<SharedChange>,
    status: Arc<Mutex<ListenerStatus>>,
    max_rows: i64,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for PgSemanticStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSemanticStore")
            .field("status", &self.status())
            .field("max_rows", &self.max_rows)
            .finish_non_exhaustive()
    }
}

impl Drop for PgSemanticStore {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

const COLUMNS: &str = "id, agent, model, params, context, user_id, embedder, norm, question, embedding, \
    answer, created_at, expires_at";

impl PgSemanticStore {
    /// Starts the store over `repo`'s pool (needs a tokio runtime): its listener
    /// connects (and reconnects) in the background, and the sweep runs every
    /// [`sweep_every`](PgSemanticStoreConfig::sweep_every).
    ///
    /// # Errors
    /// `InvalidInput` for a listener URL that cannot work whatever the server does
    /// (unparsable, an unknown `sslmode`, `verify-ca`/`verify-full` without a readable
    /// `sslrootcert`), a zero `buffer`, `heartbeat`, `sweep_every` or `max_rows`, or
    /// a `max_rows` past `i64::MAX`; `Config` outside a tokio runtime.
    pub fn start(repo: PgRepository, config: PgSemanticStoreConfig) -> Result<Arc<Self>> {
        // The listener runs as a task: outside a runtime spawning it would panic.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Config {
                what: "semantic store".into(),
                reason: "start it inside a tokio runtime".into(),
            });
        }
        let conn = connect_config(&config.url)?;
        if config.buffer == 0 {
            return Err(Error::invalid("buffer", "must be at least 1"));
        }
        if config.heartbeat.is_zero() || config.sweep_every.is_zero() {
            return Err(Error::invalid(
                "heartbeat",
                "heartbeat and sweep_every must be positive",
            ));
        }
        let max_rows = i64::try_from(config.max_rows)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| Error::invalid("max_rows", "must be 1..=i64::MAX"))?;
        let (changes, _) = broadcast::channel(config.buffer);
        let status = Arc::new(Mutex::new(ListenerStatus::default()));
        let listener = tokio::spawn(listen::supervise(
            config.clone(),
            conn,
            repo.clone(),
            changes.clone(),
            status.clone(),
        ));
        let sweeper = {
            let repo = repo.clone();
            let every = config.sweep_every;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    if let Err(e) = sweep(&repo, max_rows).await {
                        tracing::warn!(error = %e, "semantic store: sweep failed");
                    }
                }
            })
        };
        Ok(Arc::new(Self {
            repo,
            changes,
            status,
            max_rows,
            tasks: vec![listener, sweeper],
        }))
    }

    /// The listener's state.
    pub fn status(&self) -> ListenerStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the listener is listening (or `timeout` passes); returns whether
    /// it is.
    pub async fn wait_listening(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.status().listening {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Deletes expired rows, then the oldest beyond
    /// [`max_rows`](PgSemanticStoreConfig::max_rows) (what the background sweep
    /// does); returns how many rows went. Instances keep what they hold in memory
    /// until their own TTL or capacity drops it.
    ///
    /// # Errors
    /// The database's errors.
    pub async fn sweep(&self) -> Result<u64> {
        sweep(&self.repo, self.max_rows).await
    }
}

async fn sweep(repo: &PgRepository, max_rows: i64) -> Result<u64> {
    let rows = repo
        .scoped(
            Actor::Service,
            "WITH expired AS (DELETE FROM semantic_entries WHERE expires_at <= now() RETURNING 1),
                  excess AS (DELETE FROM semantic_entries WHERE id IN (
                      SELECT id FROM semantic_entries ORDER BY created_at DESC OFFSET $1)
                      RETURNING 1)
             SELECT (SELECT count(*) FROM expired) + (SELECT count(*) FROM excess)",
            &[&max_rows],
        )
        .await?;
    Ok(rows
        .first()
        .map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
}

/// Live rows with these ids, as entries (unreadable rows left out).
pub(crate) async fn fetch(repo: &PgRepository, ids: &[Uuid]) -> Result<Vec<SharedEntry>> {
    let rows = repo
        .scoped(
            Actor::Service,
            &format!(
                "SELECT {COLUMNS} FROM semantic_entries WHERE id = ANY($1) AND expires_at > now()"
            ),
            &[&ids],
        )
        .await?;
    Ok(rows.iter().filter_map(entry_of).collect())
}

/// A row as an entry; `None` (logged) for one that cannot be read.
fn entry_of(r: &Row) -> Option<SharedEntry> {
    let read = || -> std::result::Result<SharedEntry, String> {
        let id: Uuid = r.try_get("id").map_err(|e| e.to_string())?;
        let agent: String = r.try_get("agent").map_err(|e| e.to_string())?;
        let agent: AgentType = agent
            .parse()
            .map_err(|_| format!("unknown agent {agent:?}"))?;
        let answer: serde_json::Value = r.try_get("answer").map_err(|e| e.to_string())?;
        let answer: CachedAnswer =
            serde_json::from_value(answer).map_err(|e| format!("answer: {e}"))?;
        let user: Option<Uuid> = r.try_get("user_id").map_err(|e| e.to_string())?;
        Ok(SharedEntry {
            id,
            scope: Scope {
                agent,
                model: r.try_get("model").map_err(|e| e.to_string())?,
                params: r.try_get("params").map_err(|e| e.to_string())?,
                user: user.map(UserId),
                context: r.try_get("context").map_err(|e| e.to_string())?,
            },
            question: r.try_get("question").map_err(|e| e.to_string())?,
            normalised: r.try_get("norm").map_err(|e| e.to_string())?,
            embedding: r
                .try_get("embedding")
                .map_err(|e| format!("embedding: {e}"))?,
            answer,
            embedder: r.try_get("embedder").map_err(|e| e.to_string())?,
            created_at: r.try_get("created_at").map_err(|e| e.to_string())?,
            expires_at: r.try_get("expires_at").map_err(|e| e.to_string())?,
        })
    };
    match read() {
        Ok(e) => Some(e),
        Err(why) => {
            let id = r.try_get::<_, Uuid>("id").ok();
            tracing::warn!(?id, %why, "semantic store: an unreadable row was skipped");
            None
        }
    }
}

#[async_trait]
impl SemanticStore for PgSemanticStore {
    async fn persist(&self, e: &SharedEntry) -> Result<()> {
        let answer = serde_json::to_value(&e.answer).map_err(|err| Error::Backend {
            what: "semantic store".into(),
            retryable: false,
            source: Box::new(err),
        })?;
        let ttl_ms = (e.expires_at - e.created_at).num_milliseconds().max(1);
        let user = e.scope.user.map(|u| u.as_uuid());
        self.repo
            .scoped(
                Actor::Service,
                "WITH up AS (
                    INSERT INTO semantic_entries
                        (id, agent, model, params, user_id, embedder, norm, question, embedding,
                         answer, created_at, expires_at, context)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now(),
                            now() + $11::bigint * interval '1 millisecond', $12)
                    ON CONFLICT (agent, model, params, context, user_id, embedder, md5(norm)) DO UPDATE SET
                        id = EXCLUDED.id, norm = EXCLUDED.norm, question = EXCLUDED.question,
                        embedding = EXCLUDED.embedding, answer = EXCLUDED.answer,
                        created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
                    RETURNING id)
                 SELECT pg_notify('kasama_semantic',
                        json_build_object('op', 'store', 'id', id)::text) FROM up",
                &[
                    &e.id,
                    &e.scope.agent.as_str(),
                    &e.scope.model,
                    &e.scope.params,
                    &user,
                    &e.embedder,
                    &e.normalised,
                    &e.question,
                    &e.embedding,
                    &answer,
                    &ttl_ms,
                    &e.scope.context,
                ],
            )
            .await?;
        Ok(())
    }

    async fn forget_user(&self, user: UserId) -> Result<u64> {
        let rows = self
            .repo
            .scoped(
                Actor::Service,
                // Their personal rows, and the shared rows their requests stored
                // (over their data; see `CachedAnswer::origin`).
                "WITH gone AS (DELETE FROM semantic_entries
                               WHERE user_id = $1
                                  OR (user_id IS NULL AND answer->>'origin' = $1::uuid::text)
                               RETURNING 1)
                 SELECT (SELECT count(*) FROM gone),
                        pg_notify('kasama_semantic',
                            json_build_object('op', 'forget', 'user', $1::uuid)::text)",
                &[&user.as_uuid()],
            )
            .await?;
        Ok(rows
            .first()
            .map_or(0, |r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0)))
    }

    async fn load(&self, q: &LoadQuery) -> Result<Vec<SharedEntry>> {
        let dim = i32::try_from(q.dimension).unwrap_or(i32::MAX);
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let rows = self
            .repo
            .scoped(
                Actor::Service,
                &format!(
                    "SELECT {COLUMNS} FROM semantic_entries
                     WHERE embedder = $1 AND cardinality(embedding) = $2 AND expires_at > now()
                       AND ($4::timestamptz IS NULL OR created_at >= $4)
                     ORDER BY created_at DESC LIMIT $3"
                ),
                &[&q.embedder, &dim, &limit, &q.since],
            )
            .await?;
        Ok(rows.iter().filter_map(entry_of).collect())
    }

    async fn live(&self, ids: &[Uuid]) -> Result<Vec<Uuid>> {
        let mut live = Vec::with_capacity(ids.len());
        // In slices, so one statement's parameter stays a few hundred kilobytes.
        for chunk in ids.chunks(10_000) {
            let rows = self
                .repo
                .scoped(
                    Actor::Service,
                    "SELECT id FROM semantic_entries WHERE id = ANY($1) AND expires_at > now()",
                    &[&chunk],
                )
                .await?;
            live.extend(rows.iter().map(|r| r.get::<_, Uuid>(0)));
        }
        Ok(live)
    }

    fn subscribe(&self) -> broadcast::Receiver<SharedChange> {
        self.changes.subscribe()
    }
}
