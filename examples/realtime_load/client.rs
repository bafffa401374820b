//! The clients: one task per user, reconnecting with backoff until told to stop.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::BoxError;

/// What every client shares with the load tool.
pub(crate) struct Shared {
    pub(crate) server: watch::Receiver<SocketAddr>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) connected: AtomicUsize,
    pub(crate) connects: AtomicU64,
    pub(crate) failed_attempts: AtomicU64,
    pub(crate) pings: AtomicU64,
    /// (user index, arrival, arrival minus the change's own timestamp).
    pub(crate) deliveries: mpsc::UnboundedSender<(usize, Instant, Duration)>,
}

/// Small buffers: 15,000 clients share this process.
pub(crate) fn client_config() -> WebSocketConfig {
    // The client side is small too, or 15,000 clients would hold 2 GiB of buffers.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
}

/// One connection and handshake from `src` (10 s for each at most).
pub(crate) async fn connect_once(
    src: IpAddr,
    server: SocketAddr,
    tok: &str,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, BoxError> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src, 0))?;
    let stream = tokio::time::timeout(Duration::from_secs(10), sock.connect(server))
        .await
        .map_err(|_| "connect timed out")??;
    stream.set_nodelay(true)?;
    let url = format!("ws://{server}/realtime?token={tok}");
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async_with_config(url, stream, Some(client_config())),
    )
    .await
    .map_err(|_| "handshake timed out")??;
    Ok(ws)
}

/// One user's client: connect, read, and on loss reconnect with exponential backoff
/// and full jitter (0.5 s × 2^attempt, at most 30 s), until told to stop.
/// `first` is dropped after the first attempt (it paces the initial connects).
pub(crate) async fn client(
    idx: usize,
    src: IpAddr,
    tok: String,
    sh: Arc<Shared>,
    mut first: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let mut stop = sh.stop.clone();
    let mut rng = fastrand::Rng::with_seed(idx as u64 ^ 0x9e37_79b9_7f4a_7c15);
    let mut attempt: u32 = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        let server = *sh.server.borrow();
        let ws = tokio::select! {
            r = connect_once(src, server, &tok) => r,
            _ = stop.changed() => return,
        };
        first.take();
        match ws {
            Ok(mut ws) => {
                attempt = 0;
                sh.connects.fetch_add(1, Relaxed);
                sh.connected.fetch_add(1, Relaxed);
                // A real client re-reads its data over REST here (see
                // examples/realtime_client.rs); the load tool only counts.
                loop {
                    let m = tokio::select! {
                        m = ws.next() => m,
                        _ = stop.changed() => {
                            sh.connected.fetch_sub(1, Relaxed);
                            return;
                        }
                    };
                    match m {
                        Some(Ok(Message::Text(t))) => {
                            if t.contains("\"type\":\"change\"") {
                                let now = Instant::now();
                                // Server and client share the machine's clock: the
                                // change's `at` (set when it was written) to arrival.
                                let since_write = serde_json::from_str::<serde_json::Value>(&t)
                                    .ok()
                                    .and_then(|v| {
                                        v["change"]["at"].as_str().and_then(|a| {
                                            a.parse::<chrono::DateTime<chrono::Utc>>().ok()
                                        })
                                    })
                                    .and_then(|at| (chrono::Utc::now() - at).to_std().ok())
                                    .unwrap_or_default();
                                let _ = sh.deliveries.send((idx, now, since_write));
                            }
                        }
                        Some(Ok(Message::Ping(_))) => {
                            sh.pings.fetch_add(1, Relaxed);
                        }
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                        Some(Ok(_)) => {}
                    }
                }
                sh.connected.fetch_sub(1, Relaxed);
            }
            Err(_) => {
                sh.failed_attempts.fetch_add(1, Relaxed);
            }
        }
        let cap = Duration::from_millis(500)
            .saturating_mul(1 << attempt.min(6))
            .min(Duration::from_secs(30));
        attempt += 1;
        let delay = cap.mul_f64(rng.f64());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}
