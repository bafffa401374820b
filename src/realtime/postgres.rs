//! [`PgRealtime`]: LISTEN/NOTIFY on a dedicated connection, with reconnect, heartbeat
//! and resync.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder;
use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::AsyncMessage;

use super::{Channel, FeedState, Realtime, RealtimeStatus};
use crate::domain::Actor;
use crate::error::Result;
use crate::feed::{Hub, Subscription, parse_payload};
use crate::metrics::{MetricEvent, MetricsSink, NoopMetrics};
use crate::repository::postgres::tls::{Connector, connect_config};
use crate::repository::postgres::{RoleCheck, check_role};

/// The channel `kasama_notify_change()` sends on.
pub(crate) const CHANNEL: &str = "kasama_changes";

/// Settings of [`PgRealtime`]. Defaults on each field. Its `Debug` hides the
/// connection string's password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgRealtimeConfig {
    /// Connection string of the listener (any role that may connect; LISTEN needs no
    /// table privilege), with `sslmode`/`sslrootcert` as for
    /// [`PgRepository::connect`](crate::PgRepository::connect). Default:
    /// `postgres://postgres@127.0.0.1:5432/postgres`.
    pub url: String,
    /// First reconnect delay; doubles per failed attempt. Each wait is drawn at
    /// random between half and all of the delay (jitter, so that instances that
    /// lost the server together do not come back together). Default: 1 s.
    pub reconnect_min: Duration,
    /// Longest reconnect delay: no wait is longer. Default: 30 s.
    pub reconnect_max: Duration,
    /// Heartbeat interval. Default: 30 s.
    pub heartbeat: Duration,
    /// A heartbeat that takes longer counts the connection as dead. Default: 5 s.
    pub heartbeat_timeout: Duration,
    /// Events buffered per subscriber before it lags. Default: 256.
    pub buffer: usize,
    /// **Dangerous.** Accept a listener role for which row-level security does not
    /// apply (superuser, `BYPASSRLS`, the tables' owner). Default: `false`: such a role
    /// stops the feed in [`FeedState::Refused`], as
    /// [`PgConfig::allow_rls_bypass`](crate::PgConfig::allow_rls_bypass) refuses it
    /// for the repository.
    pub allow_rls_bypass: bool,
}

impl std::fmt::Debug for PgRealtimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRealtimeConfig")
            .field(
                "url",
                &crate::repository::postgres::tls::RedactedUrl(&self.url),
            )
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("heartbeat", &self.heartbeat)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("buffer", &self.buffer)
            .field("allow_rls_bypass", &self.allow_rls_bypass)
            .finish()
    }
}

impl Default for PgRealtimeConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            heartbeat: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(5),
            buffer: 256,
            allow_rls_bypass: false,
        }
    }
}

/// The PostgreSQL change feed. Dropping it stops the listener.
pub struct PgRealtime {
    hub: Arc<Hub>,
    status: Arc<Mutex<RealtimeStatus>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for PgRealtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRealtime")
            .field("status", &self.status())
            .finish()
    }
}

impl Drop for PgRealtime {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgRealtime {
    /// Starts the listener (needs a tokio runtime). Connection failures are retried
    /// in the background; see [`Realtime::status`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for a connection string
    /// that cannot work whatever the server does: unparsable, an unknown `sslmode`, or
    /// `verify-ca`/`verify-full` without a readable `sslrootcert`.
    pub fn start(config: PgRealtimeConfig) -> Result<Self> {
        Self::start_with_metrics(config, Arc::new(NoopMetrics))
    }

    /// As [`PgRealtime::start`], recording delivery latency (database clock to
    /// arrival) and reconnects into `metrics`.
    ///
    /// # Errors
    /// As [`PgRealtime::start`].
    pub fn start_with_metrics(
        config: PgRealtimeConfig,
        metrics: Arc<dyn MetricsSink>,
    ) -> Result<Self> {
        let conn = connect_config(&config.url)?;
        let hub = Hub::new(config.buffer);
        let status = Arc::new(Mutex::new(RealtimeStatus {
            state: FeedState::Connecting,
            attempts: 0,
            reconnects: 0,
            last_heartbeat: None,
            last_event: None,
            backend_pid: None,
            subscribers: 0,
        }));
        let task = tokio::spawn(supervise(
            config,
            conn,
            hub.clone(),
            status.clone(),
            metrics,
        ));
        Ok(Self { hub, status, task })
    }

    /// Waits until the listener is connected (or `timeout` passes); returns whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.status().state == FeedState::Connected {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Realtime for PgRealtime {
    fn subscribe(&self, actor: Actor, channel: Channel) -> Result<Subscription> {
        channel.authorise(actor)?;
        Ok(self.hub.subscribe(channel))
    }

    fn status(&self) -> RealtimeStatus {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        s.subscribers = self.hub.len();
        s
    }
}

fn set(status: &Mutex<RealtimeStatus>, f: impl FnOnce(&mut RealtimeStatus)) {
    f(&mut status.lock().unwrap_or_else(|e| e.into_inner()));
}

/// The reconnect waits: `reconnect_min` doubling up to `reconnect_max`, each drawn
/// between half and all of it. backon's jitter adds up to 100 % to a delay, so it
/// runs on half the configured delays: `[d/2, d)`, never past `reconnect_max`.
fn reconnect_backoff(cfg: &PgRealtimeConfig) -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(cfg.reconnect_min / 2)
        .with_max_delay(cfg.reconnect_max / 2)
        .with_jitter()
        .without_max_times()
        .build()
}

async fn supervise(
    cfg: PgRealtimeConfig,
    conn: (tokio_postgres::Config, Connector),
    hub: Arc<Hub>,
    status: Arc<Mutex<RealtimeStatus>>,
    metrics: Arc<dyn MetricsSink>,
) {
    let mut first = true;
    let mut attempts: u32 = 0;
    let mut waits = reconnect_backoff(&cfg);
    loop {
        match listen(&cfg, &conn, &hub, &status, &metrics, first).await {
            Ok(()) => {
                // Connected, then lost: start the backoff afresh.
                attempts = 0;
                waits = reconnect_backoff(&cfg);
                first = false;
            }
            Err(Listen::Db(e)) => {
                tracing::warn!(error = %e, "realtime: connecting failed");
            }
            Err(Listen::Refused(why)) => {
                tracing::error!("realtime: not listening: {why}");
                set(&status, |s| {
                    s.state = FeedState::Refused;
                    s.backend_pid = None;
                });
                return;
            }
        }
        attempts = attempts.saturating_add(1);
        set(&status, |s| {
            s.state = if first {
                FeedState::Connecting
            } else {
                FeedState::Reconnecting
            };
            s.attempts = attempts;
            s.backend_pid = None;
        });
        let wait = waits.next().unwrap_or(cfg.reconnect_max);
        tokio::time::sleep(wait.min(cfg.reconnect_max)).await;
    }
}

/// Why a listener connection ended before it was established.
enum Listen {
    Db(tokio_postgres::Error),
    Refused(String),
}

impl From<tokio_postgres::Error> for Listen {
    fn from(e: tokio_postgres::Error) -> Self {
        Listen::Db(e)
    }
}

/// One connection's life: connect, LISTEN, deliver, heartbeat, until it fails.
/// `Ok` once it had connected (and then was lost), `Err` if it never connected.
async fn listen(
    cfg: &PgRealtimeConfig,
    (config, tls): &(tokio_postgres::Config, Connector),
    hub: &Hub,
    status: &Mutex<RealtimeStatus>,
    metrics: &Arc<dyn MetricsSink>,
    first: bool,
) -> std::result::Result<(), Listen> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    // The connection must be polled for notifications to arrive; this task does it.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "realtime: listener connection failed");
                    break;
                }
            }
        }
    });
    let setup = async {
        check_role(&client, cfg.allow_rls_bypass)
            .await
            .map_err(|e| match e {
                RoleCheck::Db(e) => Listen::Db(e),
                RoleCheck::Refused(why) => Listen::Refused(why),
            })?;
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        Ok::<_, Listen>(
            client
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .map(|r| r.get::<_, i32>(0))?,
        )
    };
    let pid = match setup.await {
        Ok(pid) => pid,
        Err(e) => {
            driver.abort();
            return Err(e);
        }
    };
    set(status, |s| {
        s.state = FeedState::Connected;
        s.attempts = 0;
        s.backend_pid = Some(pid);
        if !first {
            s.reconnects += 1;
        }
    });
    if !first {
        // NOTIFY is not durable: whatever happened while we were away is lost.
        hub.resync();
        metrics.record(&MetricEvent::RealtimeReconnect);
    }
    let mut heartbeat = tokio::time::interval_at(Instant::now() + cfg.heartbeat, cfg.heartbeat);
    loop {
        tokio::select! {
            payload = rx.recv() => {
                let Some(p) = payload else { break };
                match parse_payload(&p) {
                    Some(e) => {
                        let now = Utc::now();
                        if let Ok(d) = (now - e.at).to_std() {
                            metrics.record(&MetricEvent::RealtimeDelivery { latency: d });
                        }
                        hub.publish(&e);
                        set(status, |s| s.last_event = Some(now));
                    }
                    None => tracing::warn!(payload = %p, "realtime: unreadable payload"),
                }
            }
            _ = heartbeat.tick() => {
                let t = Instant::now();
                match tokio::time::timeout(cfg.heartbeat_timeout, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => set(status, |s| s.last_heartbeat = Some(t.elapsed())),
                    _ => {
                        tracing::warn!("realtime: heartbeat failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }
    driver.abort();
    Ok(())
}
