//! [`PgBudget`]: the budgets held in PostgreSQL, shared by every app instance and
//! kept across restarts.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{NaiveDate, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use uuid::Uuid;

use super::budgets::{Budgets, month_of};
use crate::domain::{SubscriptionTier, UserId};
use crate::error::{Error, Result, with_sources};

type Today = Box<dyn Fn() -> NaiveDate + Send + Sync>;

/// What [`PgBudget::status`] reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SharedBudgetStatus {
    /// Reservations the database granted.
    pub reserved: u64,
    /// Reservations the database refused (a cap reached).
    pub refused: u64,
    /// Reservations that failed because the database could not be reached (the
    /// request was refused: see [`PgBudget`]'s outage policy).
    pub unavailable: u64,
    /// Settlements (and releases) written.
    pub settled: u64,
    /// Settlements still being written (retried while the database is away).
    pub pending: usize,
    /// Settlements given up after [`PgBudget::settle_patience`]: their holds expire and
    /// their cost is missing from the shared ledger (it is in this instance's ledger
    /// and the recorded interaction).
    pub abandoned: u64,
    /// The last database error, if any (never carries the connection string).
    pub last_error: Option<String>,
}

/// One user's spend in the shared ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SharedSpend {
    /// Today (UTC), in nano-dollars.
    pub day: u64,
    /// This month (UTC), in nano-dollars.
    pub month: u64,
    /// Held by calls in flight today (holds not expired).
    pub held: u64,
}

struct Inner {
    pool: Pool,
    hold_ttl: Duration,
    timeout: Duration,
    patience: Duration,
    today: Today,
    reserved: AtomicU64,
    refused: AtomicU64,
    unavailable: AtomicU64,
    settled: AtomicU64,
    abandoned: AtomicU64,
    pending: AtomicUsize,
    idle: tokio::sync::Notify,
    last_error: Mutex<Option<String>>,
}

/// Budgets in PostgreSQL (tables `ai_budget_spend` and `ai_budget_holds`, migration
/// 0007), so every instance of the app enforces the same caps on the same spend, and
/// a restarted instance still knows what was spent today and this month.
///
/// Given to the pipeline with
/// [`AiPipelineBuilder::shared_budget`](super::AiPipelineBuilder::shared_budget), it is
/// asked after the instance's own [`Ledger`](super::Ledger) (which keeps the lines,
/// totals and metrics, and applies the same caps to this instance's spend):
///
/// - **Reservation**: one call of `kasama_budget_hold` (migration 0011), which takes a
///   lock on the user (a transaction-scoped advisory lock, so concurrent reservations
///   of one user, from any instance, queue without writing a row), reads what is
///   spent and held today and this month in one statement, and inserts the hold or
///   names the cap it would pass — the caps of the pipeline's [`Budgets`], daily and
///   monthly, per user and global (the global caps take a second, global lock). A
///   retried reservation (same hold id) is not held twice. It needs READ COMMITTED
///   (the default; [`PgRepository`](crate::PgRepository)'s pools set it): under
///   another isolation level it fails rather than decide on a stale snapshot.
/// - **A reservation commits asynchronously; spend is durable.** The hold is written
///   to the WAL but the reservation does not wait for the flush to disk (the WAL
///   writer does it within one to three `wal_writer_delay`s, 200 ms each by default),
///   so it costs about one plain `UPDATE`. A PostgreSQL crash (or a failover, or one
///   backend killed, which makes the server recover) can forget the holds reserved in
///   that last fraction of a second: those calls are still booked when they settle,
///   but until then they do not count against the caps. A database that predates
///   migration 0011 is served by the 0007 functions (durable reservations, about 1.7×
///   slower) until it is migrated.
/// - **Settlement**: books the exact cost and ends the hold in one durable
///   transaction (synchronous whatever the database's `synchronous_commit`), with a record of the settled hold, so a retry after a lost reply
///   books nothing and money is never counted twice; the cost is booked even when
///   the hold is gone (forgotten by a crash, or swept a day after it expired), so
///   money is never lost. Written by a task of its own, retried with exponential
///   backoff (`backon`) for up to [`settle_patience`](Self::settle_patience) while the
///   database is away; [`AiPipeline::shutdown`](super::AiPipeline::shutdown) waits
///   for them.
/// - **Holds expire** after [`hold_ttl`](Self::hold_ttl) (default 5 min, longer than
///   any call): the hold of an instance that died stops counting then. A settlement
///   that arrives after its hold expired is still booked.
/// - **Outage policy: fail closed.** When the database cannot be reached within
///   [`timeout`](Self::timeout) (default 2 s), the request is refused with a
///   retryable `Backend` error (HTTP 503) before any backend call: money is never
///   spent unaccounted. (The app cannot serve much with its database away anyway.)
/// - Days and months are UTC, from this instance's clock.
pub struct PgBudget {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBudget")
            .field("hold_ttl", &self.inner.hold_ttl)
            .field("timeout", &self.inner.timeout)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// A hold on the shared budgets for one call: [`settle`](Self::settle) it at the
/// call's exact cost, or drop it to release it. The pipeline attaches one to each
/// [`Reservation`](super::Reservation); hosts may take their own for costs outside
/// the pipeline ([`PgBudget::reserve`]).
pub struct BudgetHold {
    inner: Arc<Inner>,
    key: HoldKey,
    done: bool,
}

/// A settlement's hold, user and day (its cost is booked even when the hold is gone).
#[derive(Clone, Copy, Debug)]
struct HoldKey {
    id: Uuid,
    user: Uuid,
    day: NaiveDate,
}

impl std::fmt::Debug for BudgetHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetHold")
            .field("id", &self.key.id)
            .finish()
    }
}

impl BudgetHold {
    /// Books `cost` for the call (0: released), in a task of its own (retried while
    /// the database is away; [`PgBudget::flush`] waits for it). Needs a tokio runtime;
    /// without one the hold just expires.
    pub fn settle(mut self, cost: u64) {
        self.done = true;
        Inner::spawn_settle(&self.inner, self.key, cost);
    }
}

impl Drop for BudgetHold {
    fn drop(&mut self) {
        if !self.done {
            Inner::spawn_settle(&self.inner, self.key, 0);
        }
    }
}

fn db_error(e: &dyn std::fmt::Display) -> Error {
    Error::Backend {
        what: "shared budget".into(),
        retryable: true,
        source: e.to_string().into(),
    }
}

/// A database error with PostgreSQL's code and message (tokio-postgres' own text is
/// just "db error"); never the connection string.
fn pg_error(e: &tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(d) => db_error(&format!("{}: {}", d.code().code(), d.message())),
        None => db_error(e),
    }
}

/// Whether `e` says a function is missing: a database that predates migration 0011.
fn undefined_function(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_FUNCTION)
}

fn nanos(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Inner {
    fn note(&self, e: &Error) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(with_sources(e));
    }

    fn spawn_settle(this: &Arc<Self>, key: HoldKey, cost: u64) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime (dropped outside one): the hold expires on its own.
            this.abandoned.fetch_add(1, SeqCst);
            return;
        };
        this.pending.fetch_add(1, SeqCst);
        let inner = this.clone();
        rt.spawn(async move {
            let ok = inner.settle_retrying(key, cost).await;
            if ok {
                inner.settled.fetch_add(1, SeqCst);
            } else {
                inner.abandoned.fetch_add(1, SeqCst);
                tracing::error!(
                    hold = %key.id,
                    cost_nanos = cost,
                    "shared budget: settlement abandoned; the hold will expire"
                );
            }
            if inner.pending.fetch_sub(1, SeqCst) == 1 {
                inner.idle.notify_waiters();
            }
        });
    }

    /// Prepares (once per connection) `current`, a call of a migration 0011 function,
    /// or `before` (its 0007 form) on a database that predates it; says which. Asked
    /// afresh each time: once 0011 is applied, the next call uses it.
    async fn prepare(
        c: &deadpool_postgres::Object,
        current: &str,
        before: &str,
    ) -> Result<(tokio_postgres::Statement, bool)> {
        match c.prepare_cached(current).await {
            Ok(st) => return Ok((st, true)),
            Err(e) if undefined_function(&e) => {}
            Err(e) => return Err(pg_error(&e)),
        }
        let st = c.prepare_cached(before).await.map_err(|e| pg_error(&e))?;
        Ok((st, false))
    }

    async fn settle_once(&self, key: HoldKey, cost: u64) -> Result<()> {
        let work = async {
            let c = self.pool.get().await.map_err(|e| db_error(&e))?;
            // Before migration 0011: the 0007 settlement (which books nothing when
            // the hold is gone).
            let (st, current) = Self::prepare(
                &c,
                "SELECT kasama_budget_settle($1, $2, $3, $4)",
                "SELECT kasama_budget_settle($1, $2)",
            )
            .await?;
            let r = if current {
                c.query_one(&st, &[&key.id, &key.user, &key.day, &nanos(cost)])
                    .await
            } else {
                c.query_one(&st, &[&key.id, &nanos(cost)]).await
            };
            r.map_err(|e| pg_error(&e))?;
            Ok(())
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                what: "shared budget settlement".into(),
            }),
        }
    }

    /// Settles, retrying with backoff for up to `patience`; whether it was written.
    async fn settle_retrying(&self, key: HoldKey, cost: u64) -> bool {
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times()
            .with_total_delay(Some(self.patience))
            .build();
        loop {
            match self.settle_once(key, cost).await {
                Ok(()) => return true,
                Err(e) => {
                    self.note(&e);
                    tracing::warn!(error = %with_sources(&e), hold = %key.id, "shared budget: settlement failed; retrying");
                    match backoff.next() {
                        Some(d) => tokio::time::sleep(d).await,
                        None => return false,
                    }
                }
            }
        }
    }
}

impl PgBudget {
    /// Budgets in the database `pool` reaches (as the app role, migrated to 0011 or
    /// later).
    pub fn new(pool: Pool) -> Self {
        Self::with_clock(pool, || Utc::now().date_naive())
    }

    /// As [`PgBudget::new`], with "today" from `today` (for simulations and tests).
    pub fn with_clock(pool: Pool, today: impl Fn() -> NaiveDate + Send + Sync + 'static) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                hold_ttl: Duration::from_secs(300),
                timeout: Duration::from_secs(2),
                patience: Duration::from_secs(60),
                today: Box::new(today),
                reserved: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                unavailable: AtomicU64::new(0),
                settled: AtomicU64::new(0),
                abandoned: AtomicU64::new(0),
                pending: AtomicUsize::new(0),
                idle: tokio::sync::Notify::new(),
                last_error: Mutex::new(None),
            }),
        }
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.inner).expect("settings are set before the budget is shared")
    }

    /// How long a hold counts if its call is never settled (an instance that died).
    /// Default 5 min; at least 1 s, at most a day.
    ///
    /// # Errors
    /// `InvalidInput` outside those bounds.
    pub fn hold_ttl(mut self, ttl: Duration) -> Result<Self> {
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(86_400) {
            return Err(Error::invalid("hold_ttl", "between 1 s and 1 day"));
        }
        self.inner_mut().hold_ttl = ttl;
        Ok(self)
    }

    /// The longest wait for the database per reservation or settlement attempt.
    /// Default 2 s; positive, at most a minute.
    ///
    /// # Errors
    /// `InvalidInput` outside those bounds.
    pub fn timeout(mut self, t: Duration) -> Result<Self> {
        if t.is_zero() || t > Duration::from_secs(60) {
            return Err(Error::invalid("timeout", "positive, at most 60 s"));
        }
        self.inner_mut().timeout = t;
        Ok(self)
    }

    /// How long a settlement is retried while the database is away before it is
    /// given up (counted in [`SharedBudgetStatus::abandoned`]). Default 60 s; at most
    /// a day.
    ///
    /// # Errors
    /// `InvalidInput` past a day.
    pub fn settle_patience(mut self, p: Duration) -> Result<Self> {
        if p > Duration::from_secs(86_400) {
            return Err(Error::invalid("settle_patience", "at most 1 day"));
        }
        self.inner_mut().patience = p;
        Ok(self)
    }

    /// Holds `amount` nano-dollars for one call of `user` under `budgets`: refused
    /// once what is spent and held reaches a cap (the soft cap of
    /// [`Ledger::reserve`](super::Ledger::reserve)).
    ///
    /// # Errors
    /// [`Error::BudgetExceeded`] naming the cap (`user daily`, `user monthly`,
    /// `global daily`, `global monthly`); a retryable `Backend` or `Timeout` when the
    /// database cannot be reached; `InvalidInput` naming `user` for the nil uuid (the
    /// shared ledger's line for everyone).
    pub async fn reserve(
        &self,
        user: UserId,
        tier: SubscriptionTier,
        amount: u64,
        budgets: &Budgets,
    ) -> Result<BudgetHold> {
        self.hold(user, tier, amount, false, budgets).await
    }

    /// As [`PgBudget::reserve`], but refused unless the whole `amount` fits under
    /// every cap (as [`Ledger::reserve_within`](super::Ledger::reserve_within)).
    ///
    /// # Errors
    /// As [`PgBudget::reserve`].
    pub async fn reserve_within(
        &self,
        user: UserId,
        tier: SubscriptionTier,
        amount: u64,
        budgets: &Budgets,
    ) -> Result<BudgetHold> {
        self.hold(user, tier, amount, true, budgets).await
    }

    pub(crate) async fn hold(
        &self,
        user: UserId,
        tier: SubscriptionTier,
        amount: u64,
        whole: bool,
        budgets: &Budgets,
    ) -> Result<BudgetHold> {
        let inner = &self.inner;
        if user.as_uuid().is_nil() {
            // The nil uuid keeps everyone's totals in the shared ledger.
            return Err(Error::invalid("user", "the nil uuid is not a user"));
        }
        let id = Uuid::new_v4();
        let day = (inner.today)();
        let cap = |c: Option<u64>| c.map(nanos);
        let ttl_ms = i64::try_from(inner.hold_ttl.as_millis()).unwrap_or(i64::MAX);
        let user_id = user.as_uuid();
        // Released (by a task) unless handed out: a reservation that timed out, failed
        // or whose caller went away may still land in the database later, and the
        // release then finds it, or marks its id so it cannot land.
        let mut guard = BudgetHold {
            inner: inner.clone(),
            key: HoldKey {
                id,
                user: user_id,
                day,
            },
            done: false,
        };
        let work = async {
            let c = inner.pool.get().await.map_err(|e| db_error(&e))?;
            // Prepared once per connection: one round trip per reservation. Before
            // migration 0011 there is only the 0007 function (durable, slower).
            let (st, _) = Inner::prepare(
                &c,
                "SELECT kasama_budget_hold($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                "SELECT kasama_budget_reserve($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .await?;
            let row = c
                .query_one(
                    &st,
                    &[
                        &id,
                        &user_id,
                        &day,
                        &nanos(amount),
                        &whole,
                        &ttl_ms,
                        &cap(budgets.user_daily(tier)),
                        &cap(budgets.user_monthly(tier)),
                        &cap(budgets.global_daily),
                        &cap(budgets.global_monthly),
                    ],
                )
                .await
                .map_err(|e| pg_error(&e))?;
            Ok::<Option<String>, Error>(row.get(0))
        };
        let refused = match tokio::time::timeout(inner.timeout, work).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                inner.unavailable.fetch_add(1, SeqCst);
                inner.note(&e);
                return Err(e);
            }
            Err(_) => {
                inner.unavailable.fetch_add(1, SeqCst);
                let e = Error::Timeout {
                    what: "shared budget reservation".into(),
                };
                inner.note(&e);
                return Err(e);
            }
        };
        if let Some(scope) = refused {
            // Refused: nothing was held.
            guard.done = true;
            inner.refused.fetch_add(1, SeqCst);
            return Err(Error::BudgetExceeded {
                scope: scope.into(),
            });
        }
        inner.reserved.fetch_add(1, SeqCst);
        Ok(guard)
    }

    /// `user`'s spend in the shared ledger today and this month.
    ///
    /// # Errors
    /// `Backend` when the database cannot be reached.
    pub async fn spent(&self, user: UserId) -> Result<SharedSpend> {
        self.spent_of(user.as_uuid()).await
    }

    /// Everyone's spend together today and this month.
    ///
    /// # Errors
    /// `Backend` when the database cannot be reached.
    pub async fn global_spent(&self) -> Result<SharedSpend> {
        self.spent_of(Uuid::nil()).await
    }

    async fn spent_of(&self, user: Uuid) -> Result<SharedSpend> {
        let day = (self.inner.today)();
        let month = month_of(day);
        let mut c = self.inner.pool.get().await.map_err(|e| db_error(&e))?;
        let tx = c.transaction().await.map_err(|e| db_error(&e))?;
        tx.execute("SELECT set_config('app.service', 'on', true)", &[])
            .await
            .map_err(|e| db_error(&e))?;
        let row = tx
            .query_one(
                "SELECT \
                   coalesce((SELECT spent_nanos FROM ai_budget_spend \
                      WHERE user_id = $1 AND period = 'day' AND starts = $2), 0), \
                   coalesce((SELECT spent_nanos FROM ai_budget_spend \
                      WHERE user_id = $1 AND period = 'month' AND starts = $3), 0), \
                   coalesce((SELECT sum(amount_nanos)::bigint FROM ai_budget_holds \
                      WHERE ($1 = '00000000-0000-0000-0000-000000000000'::uuid OR user_id = $1) \
                        AND day = $2 AND expires_at > now()), 0)",
                &[&user, &day, &month],
            )
            .await
            .map_err(|e| db_error(&e))?;
        tx.commit().await.map_err(|e| db_error(&e))?;
        let u = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        Ok(SharedSpend {
            day: u(0),
            month: u(1),
            held: u(2),
        })
    }

    /// Forgets holds expired over a day ago and lines no cap reads any more; returns
    /// the rows removed. Run it now and then (daily is plenty) from one instance.
    ///
    /// # Errors
    /// `Backend` when the database cannot be reached.
    pub async fn sweep(&self) -> Result<u64> {
        let c = self.inner.pool.get().await.map_err(|e| db_error(&e))?;
        let row = c
            .query_one("SELECT kasama_budget_sweep()", &[])
            .await
            .map_err(|e| db_error(&e))?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    /// Waits until every settlement started so far is written or given up.
    pub async fn flush(&self) {
        loop {
            let idle = self.inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.inner.pending.load(SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Counters and the last error.
    pub fn status(&self) -> SharedBudgetStatus {
        let i = &self.inner;
        SharedBudgetStatus {
            reserved: i.reserved.load(SeqCst),
            refused: i.refused.load(SeqCst),
            unavailable: i.unavailable.load(SeqCst),
            settled: i.settled.load(SeqCst),
            pending: i.pending.load(SeqCst),
            abandoned: i.abandoned.load(SeqCst),
            last_error: i
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}
