//! The store's listener: a dedicated connection that LISTENs on [`CHANNEL`], reads
//! the entries announced and passes them to the subscribed caches; it reconnects with
//! backoff, checks itself with a heartbeat, and announces a resync on every connect.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use backon::BackoffBuilder;
use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use super::{CHANNEL, ListenerStatus, PgSemanticStoreConfig, fetch};
use crate::domain::UserId;
use crate::repository::PgRepository;
use crate::repository::postgres::tls::Connector;
use crate::repository::postgres::{RoleCheck, check_role};
use crate::semantic::SharedChange;

fn set(status: &Mutex<ListenerStatus>, f: impl FnOnce(&mut ListenerStatus)) {
    f(&mut status.lock().unwrap_or_else(|e| e.into_inner()));
}

/// Keeps a listener connection up until the store is dropped (or its role is refused).
pub(super) async fn supervise(
    cfg: PgSemanticStoreConfig,
    conn: (tokio_postgres::Config, Connector),
    repo: PgRepository,
    changes: broadcast::Sender<SharedChange>,
    status: Arc<Mutex<ListenerStatus>>,
) {
    let fresh = || {
        backon::ExponentialBuilder::default()
            .with_min_delay(cfg.reconnect_min)
            .with_max_delay(cfg.reconnect_max)
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut backoff = fresh();
    let mut connected_before = false;
    loop {
        match listen(&cfg, &conn, &repo, &changes, &status, connected_before).await {
            Ok(()) => {
                // Connected, then lost: start the backoff afresh.
                connected_before = true;
                backoff = fresh();
            }
            Err(Listen::Db(e)) => {
                tracing::warn!(error = %e, "semantic store: listener could not connect");
            }
            Err(Listen::Refused(why)) => {
                tracing::error!("semantic store: not listening: {why}");
                set(&status, |s| {
                    s.listening = false;
                    s.backend_pid = None;
                    s.refused = Some(why);
                });
                return;
            }
        }
        set(&status, |s| {
            s.listening = false;
            s.backend_pid = None;
        });
        let wait = backoff.next().unwrap_or(cfg.reconnect_max);
        tokio::time::sleep(wait).await;
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

/// What a notification announces.
enum Notice {
    Stored(Uuid),
    Forgot(UserId),
}

fn parse(payload: &str) -> Option<Notice> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    let uuid = |k: &str| v.get(k)?.as_str()?.parse::<Uuid>().ok();
    match v.get("op")?.as_str()? {
        "store" => uuid("id").map(Notice::Stored),
        "forget" => uuid("user").map(|u| Notice::Forgot(UserId(u))),
        _ => None,
    }
}

/// One connection's life: connect, LISTEN, announce a resync, pass changes on,
/// heartbeat, until it fails. `Ok` once it had connected, `Err` if it never did.
async fn listen(
    cfg: &PgSemanticStoreConfig,
    (config, tls): &(tokio_postgres::Config, Connector),
    repo: &PgRepository,
    changes: &broadcast::Sender<SharedChange>,
    status: &Mutex<ListenerStatus>,
    reconnect: bool,
) -> std::result::Result<(), Listen> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    // Bounded: past `buffer` waiting notifications the rest are dropped and the
    // caches catch up from the table instead.
    let (tx, mut rx) = mpsc::channel::<String>(cfg.buffer);
    let overflowed = Arc::new(AtomicBool::new(false));
    let overflow = overflowed.clone();
    // The connection must be polled for notifications to arrive; this task does it.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => match tx.try_send(n.payload().to_string()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => overflow.store(true, SeqCst),
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                },
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "semantic store: listener connection failed");
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
        s.listening = true;
        s.backend_pid = Some(pid);
        if reconnect {
            s.reconnects += 1;
        }
    });
    // NOTIFY is not durable: whatever was announced before this point is lost to us,
    // so the caches catch up from the table (on the first connect too: a cache may
    // have loaded before the listener was up).
    let _ = changes.send(SharedChange::Resync);
    let mut heartbeat = tokio::time::interval_at(Instant::now() + cfg.heartbeat, cfg.heartbeat);
    loop {
        tokio::select! {
            payload = rx.recv() => {
                let Some(first) = payload else { break };
                // Everything already waiting is read in one query.
                let mut stored = Vec::new();
                let mut next = Some(first);
                while let Some(p) = next.take().or_else(|| rx.try_recv().ok()) {
                    match parse(&p) {
                        Some(Notice::Stored(id)) => stored.push(id),
                        Some(Notice::Forgot(user)) => {
                            pass_on(repo, changes, &mut stored).await;
                            let _ = changes.send(SharedChange::Forgot(user));
                        }
                        None => tracing::warn!("semantic store: unreadable notification skipped"),
                    }
                }
                pass_on(repo, changes, &mut stored).await;
                if overflowed.swap(false, SeqCst) {
                    tracing::warn!("semantic store: notifications came faster than they were read; resync");
                    let _ = changes.send(SharedChange::Resync);
                }
            }
            _ = heartbeat.tick() => {
                match tokio::time::timeout(cfg.heartbeat_timeout, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    _ => {
                        tracing::warn!("semantic store: listener heartbeat failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }
    driver.abort();
    Ok(())
}

/// Reads the entries announced in `ids` and passes them on; when they cannot be read,
/// asks the caches to catch up instead.
async fn pass_on(
    repo: &PgRepository,
    changes: &broadcast::Sender<SharedChange>,
    ids: &mut Vec<Uuid>,
) {
    if ids.is_empty() {
        return;
    }
    match fetch(repo, ids).await {
        Ok(entries) => {
            for e in entries {
                let _ = changes.send(SharedChange::Stored(Box::new(e)));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "semantic store: announced entries could not be read; resync");
            let _ = changes.send(SharedChange::Resync);
        }
    }
    ids.clear();
}
