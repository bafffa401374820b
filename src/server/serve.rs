//! Serving the [`router`](super::router) with deadlines on the connections themselves.
//!
//! `axum::serve` reads a request's head for as long as the client likes: a client that
//! opens a connection and sends half a request line (or nothing) holds one of the
//! process' open files for ever, before any token is checked. [`serve`] is the same
//! loop (HTTP/1.1 with upgrades, so `/realtime` works) on hyper's connection builder
//! with a header-read deadline: a connection whose request head (or next request head
//! on a kept-alive connection) is not complete within
//! [`ServeConfig::header_read_timeout`] is closed. Once upgraded, a WebSocket is
//! governed by [`WsConfig`](super::WsConfig) instead.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

use crate::error::{Error, Result};

/// Settings of [`serve`]. Defaults on each field.
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeConfig {
    /// Longest a client may take to send a complete request head, counted from the
    /// moment the server starts reading it (the connection's start, or the end of the
    /// previous response on a kept-alive connection). Past it the connection is
    /// closed. This also bounds how long an idle kept-alive connection is held.
    /// Default: 10 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub header_read_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

impl ServeConfig {
    fn validate(&self) -> Result<()> {
        let d = self.header_read_timeout;
        if d.is_zero() {
            return Err(Error::invalid(
                "header_read_timeout",
                "must be more than zero",
            ));
        }
        if d > MAX_DEADLINE {
            return Err(Error::invalid(
                "header_read_timeout",
                "must be at most one day",
            ));
        }
        Ok(())
    }
}

/// Longest deadline accepted from a setting: far below what the clock can add.
pub(super) const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// Serves `router` on `listener` (a `tokio::net::TcpListener` or any
/// [`axum::serve::Listener`]) until `shutdown` completes, then stops accepting, lets
/// each connection finish its request in flight (upgraded WebSockets are no longer
/// connections of this loop and are not waited for) and returns.
///
/// Each connection is HTTP/1.1 with upgrades and a header-read deadline
/// ([`ServeConfig::header_read_timeout`]).
///
/// # Errors
/// [`Error::InvalidInput`] naming the field for a bad [`ServeConfig`]; nothing is served.
pub async fn serve<L, F>(
    mut listener: L,
    router: Router,
    config: ServeConfig,
    shutdown: F,
) -> Result<()>
where
    L: Listener,
    F: Future<Output = ()> + Send + 'static,
{
    config.validate()?;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    // Receivers are held by connection tasks: `closed()` is when all have finished.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (io, _addr) = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let conn = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            let done = tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = stop.wait_for(|s| *s) => None,
            };
            let r = match done {
                Some(r) => r,
                None => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(stop);
        });
    }
    drop(stop_rx);
    let _ = stop_tx.send(true);
    stop_tx.closed().await;
    Ok(())
}
