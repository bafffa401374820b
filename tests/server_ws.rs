//! The realtime WebSocket's protections, on tokio's paused clock: the server runs on an
//! in-memory listener (duplex pipes instead of TCP), so time only moves when every
//! task waits, and a client that does not read fills its pipe like a stalled peer.
//! Dead peers, slow clients, queue overflow, the incoming size cap, the per-user cap
//! and token expiry.
#![cfg(all(feature = "server", feature = "metrics-facade"))]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kasama::agent::SimulatedAgent;
use kasama::health::HealthMonitor;
use kasama::metrics::{InMemoryMetrics, MetricsSink};
use kasama::pipeline::AiPipeline;
use kasama::prelude::*;
use kasama::realtime::{ChangeEvent, ChangeOp, ChangeTable, Hub, MemoryRealtime};
use kasama::server::{AppState, WsConfig, WsSockets, WsStats, router, token};
use serde_json::Value;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!";

/// An axum listener whose connections are in-memory pipes.
struct Pipes(mpsc::UnboundedReceiver<DuplexStream>);

impl axum::serve::Listener for Pipes {
    type Io = DuplexStream;
    type Addr = ();

    async fn accept(&mut self) -> (DuplexStream, ()) {
        match self.0.recv().await {
            Some(io) => (io, ()),
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Server {
    connect: mpsc::UnboundedSender<DuplexStream>,
    hub: Arc<Hub>,
    ws: Arc<WsSockets>,
}

type Ws = tokio_tungstenite::WebSocketStream<DuplexStream>;

impl Server {
    fn start(config: WsConfig) -> Server {
        let metrics = Arc::new(InMemoryMetrics::new());
        let sink: Arc<dyn MetricsSink> = metrics.clone();
        let hub = Hub::new(256);
        let repo: Arc<dyn Repository> =
            Arc::new(InMemoryRepository::new().with_change_feed(hub.clone()));
        let pipeline = Arc::new(
            AiPipeline::builder(repo.clone())
                .backend(Arc::new(SimulatedAgent::instant("sim")))
                .metrics(sink.clone())
                .build()
                .unwrap(),
        );
        let ws = WsSockets::new(config).unwrap();
        let state = AppState {
            repo,
            pipeline,
            realtime: Arc::new(MemoryRealtime::new(hub.clone())),
            metrics: metrics.clone(),
            sink,
            health: Arc::new(HealthMonitor::new(metrics)),
            jwt: kasama::server::JwtConfig::new(SECRET).unwrap(),
            render_metrics: None,
            ws: ws.clone(),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move { axum::serve(Pipes(rx), router(state)).await.unwrap() });
        Server {
            connect: tx,
            hub,
            ws,
        }
    }

    /// A client over a pipe holding at most `pipe` bytes each way.
    async fn connect(
        &self,
        token: &str,
        pipe: usize,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let (client, server) = tokio::io::duplex(pipe);
        self.connect.send(server).unwrap();
        tokio_tungstenite::client_async(format!("ws://kasama.test/realtime?token={token}"), client)
            .await
            .map(|(ws, _)| ws)
    }

    fn publish(&self, user: UserId, n: usize) {
        for _ in 0..n {
            self.hub.publish(&ChangeEvent {
                table: ChangeTable::Goals,
                op: ChangeOp::Insert,
                id: uuid::Uuid::new_v4(),
                user_id: user,
                seq: 1,
                at: chrono::Utc::now(),
            });
        }
    }

    /// Lets the server's tasks run (paused clock: no real time passes).
    async fn settle(&self) -> WsStats {
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.ws.stats()
    }
}

fn tok(user: UserId, ttl: Duration) -> String {
    token(SECRET, user, ttl)
}

const HOUR: Duration = Duration::from_secs(3600);

/// Reads `w` in a task (which also answers the server's pings) and forwards every
/// message but pings; the channel ends when the socket does.
fn reader(mut w: Ws) -> mpsc::UnboundedReceiver<Message> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = w.next().await {
            if !matches!(m, Message::Ping(_)) && tx.send(m).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next message, within two minutes (of paused time: a missing message fails
/// instead of hanging while the clock runs on).
async fn recv(r: &mut mpsc::UnboundedReceiver<Message>) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(120), r.recv())
        .await
        .expect("a message within 120 s")
}

fn close_code(m: Option<Message>) -> u16 {
    match m {
        Some(Message::Close(Some(f))) => u16::from(f.code),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

fn text(m: Option<Message>) -> Value {
    match m {
        Some(Message::Text(t)) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected text, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_dropped_at_the_pong_deadline_and_a_live_one_stays() {
    // Ping at 15 s; no frame by 25 s → dead.
    let s = Server::start(WsConfig::default());
    let (a, b) = (UserId::new(), UserId::new());
    let mut live = reader(s.connect(&tok(a, HOUR), 64 * 1024).await.unwrap());
    let _silent = s.connect(&tok(b, HOUR), 64 * 1024).await.unwrap();
    assert_eq!(s.settle().await.open, 2);

    tokio::time::sleep(Duration::from_millis(24_900)).await;
    let st = s.settle().await;
    assert_eq!((st.open, st.closed_dead), (2, 0), "not yet: 24.9 s");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let st = s.settle().await;
    assert_eq!((st.open, st.closed_dead), (1, 1), "dropped by 25.1 s");

    // The live one answered every ping for ten minutes and still gets its changes.
    tokio::time::sleep(Duration::from_secs(600)).await;
    s.publish(a, 1);
    let ev = text(recv(&mut live).await);
    assert_eq!(ev["type"], "change");
    let st = s.settle().await;
    assert_eq!((st.open, st.closed_dead), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    let s = Server::start(WsConfig::default()); // send timeout 5 s, queue 64
    let u = UserId::new();
    // A 512-byte pipe: a couple of events fill it, then sends wait.
    let _stalled = s.connect(&tok(u, HOUR), 512).await.unwrap();
    s.publish(u, 10);
    assert_eq!(s.settle().await.closed_slow, 0);
    tokio::time::sleep(Duration::from_millis(4_900)).await;
    assert_eq!(s.settle().await.closed_slow, 0, "not before 5 s");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let st = s.settle().await;
    assert_eq!((st.closed_slow, st.open), (1, 0));
    assert_eq!(s.hub.len(), 0, "its subscription is gone too");
}

#[tokio::test(start_paused = true)]
async fn an_overflowing_queue_sends_lagged_then_closes_with_4008() {
    let s = Server::start(WsConfig {
        queue: 8,
        ..WsConfig::default()
    });
    let (u, other) = (UserId::new(), UserId::new());
    let w = s.connect(&tok(u, HOUR), 1 << 20).await.unwrap();
    let mut fine = reader(s.connect(&tok(other, HOUR), 1 << 20).await.unwrap());
    // 50 events at once, before the socket's task runs: 8 fit and 42 are dropped; the
    // close after `lagged` discards the 8 queued ones, so the client missed all 50.
    s.publish(u, 50);
    s.publish(other, 3);
    let mut r = reader(w);
    let first = text(recv(&mut r).await);
    assert_eq!(first["type"], "lagged");
    assert_eq!(first["missed"], 50);
    assert_eq!(close_code(recv(&mut r).await), kasama::server::CLOSE_LAGGED);
    let st = s.settle().await;
    assert_eq!((st.closed_lagged, st.open), (1, 1));
    // The other user's socket was not held up.
    for _ in 0..3 {
        assert_eq!(text(recv(&mut fine).await)["type"], "change");
    }
}

#[tokio::test(start_paused = true)]
async fn an_oversize_message_closes_with_1009() {
    let s = Server::start(WsConfig::default()); // 1 KiB
    let u = UserId::new();
    let mut w = s.connect(&tok(u, HOUR), 64 * 1024).await.unwrap();
    // Small messages and pings are fine.
    w.send(Message::text("hello")).await.unwrap();
    w.send(Message::Ping(vec![7; 125].into())).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
    {
        Some(Ok(Message::Pong(p))) => assert_eq!(p.len(), 125),
        other => panic!("expected the pong, got {other:?}"),
    }
    assert_eq!(s.settle().await.open, 1);
    w.send(Message::text("x".repeat(1025))).await.unwrap();
    let mut r = reader(w);
    assert_eq!(
        close_code(recv(&mut r).await),
        kasama::server::CLOSE_TOO_BIG
    );
    let st = s.settle().await;
    assert_eq!((st.closed_oversize, st.open), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_user_may_hold_only_max_per_user_sockets() {
    let s = Server::start(WsConfig {
        max_per_user: 2,
        ..WsConfig::default()
    });
    let (u, v) = (UserId::new(), UserId::new());
    let t = tok(u, HOUR);
    let mut first = s.connect(&t, 4096).await.unwrap();
    let _second = s.connect(&t, 4096).await.unwrap();
    match s.connect(&t, 4096).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 429);
            let body: Value = serde_json::from_slice(r.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"], "too_many_sockets");
        }
        other => panic!("expected HTTP 429, got {:?}", other.map(|_| ())),
    }
    // Another user is unaffected.
    let _v = s.connect(&tok(v, HOUR), 4096).await.unwrap();
    let st = s.settle().await;
    assert_eq!((st.open, st.refused_per_user), (3, 1));
    assert_eq!(s.ws.open_for(u), 2);

    // Closing one frees its slot.
    first.close(None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while first.next().await.is_some() {}
    })
    .await
    .unwrap();
    let st = s.settle().await;
    assert_eq!(st.open, 2);
    assert_eq!(s.ws.open_for(u), 1);
    let _third = s.connect(&t, 4096).await.unwrap();
    assert_eq!(s.ws.open_for(u), 2);
}

#[tokio::test(start_paused = true)]
async fn a_socket_closes_with_4001_when_its_token_expires() {
    let s = Server::start(WsConfig::default());
    let u = UserId::new();
    // `exp` has whole seconds: the token lives 59 to 60 s from now.
    let mut r = reader(
        s.connect(&tok(u, Duration::from_secs(60)), 64 * 1024)
            .await
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_secs(58)).await;
    s.publish(u, 1);
    assert_eq!(
        text(recv(&mut r).await)["type"],
        "change",
        "still open at 58 s"
    );
    assert_eq!(s.settle().await.closed_expired, 0);
    let closed = tokio::time::timeout(Duration::from_secs(3), r.recv())
        .await
        .expect("closed by 61 s");
    assert_eq!(close_code(closed), kasama::server::CLOSE_TOKEN_EXPIRED);
    let st = s.settle().await;
    assert_eq!((st.closed_expired, st.open), (1, 0));

    // An expired token never gets a socket.
    let old = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &kasama::server::Claims {
            sub: u.to_string(),
            exp: 1_000_000,
            nbf: None,
            role: None,
        },
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    match s.connect(&old, 4096).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected HTTP 401, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn invalid_settings_name_their_field() {
    let bad = |c: WsConfig| {
        WsSockets::new(c)
            .unwrap_err()
            .invalid_field()
            .map(str::to_string)
    };
    let d = WsConfig::default;
    assert_eq!(
        bad(WsConfig {
            heartbeat: Duration::ZERO,
            ..d()
        }),
        Some("heartbeat".into())
    );
    assert_eq!(bad(WsConfig { queue: 0, ..d() }), Some("queue".into()));
    assert_eq!(
        bad(WsConfig {
            max_per_user: 0,
            ..d()
        }),
        Some("max_per_user".into())
    );
    assert_eq!(
        bad(WsConfig {
            max_incoming: 100,
            ..d()
        }),
        Some("max_incoming".into())
    );
    assert_eq!(
        bad(WsConfig {
            max_write_buffer: 10,
            ..d()
        }),
        Some("max_write_buffer".into())
    );
}
