//! The realtime WebSocket harness of tests/server_ws*.rs, for tokio's paused clock: the
//! server runs on an in-memory listener (duplex pipes instead of TCP), so time only
//! moves when every task waits, and a client that does not read fills its pipe like a
//! stalled peer.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kasama::agent::SimulatedAgent;
use kasama::health::HealthMonitor;
use kasama::metrics::{InMemoryMetrics, MetricsSink};
use kasama::pipeline::{AiPipeline, AiPipelineBuilder, RateLimitConfig};
use kasama::prelude::*;
use kasama::realtime::{ChangeEvent, ChangeOp, ChangeTable, Hub, MemoryRealtime, Realtime};
use kasama::server::{AppState, WsConfig, WsSockets, WsStats, router, token};
use serde_json::Value;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// The JWT secret of every harness server.
pub const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!";
/// A token lifetime that outlasts any test.
pub const HOUR: Duration = Duration::from_secs(3600);

/// The tests' JWT settings (HS256 with [`SECRET`]).
pub fn jwt() -> kasama::server::JwtConfig {
    kasama::server::JwtConfig::new(SECRET).unwrap()
}

/// An axum listener whose connections are in-memory pipes.
pub struct Pipes(pub mpsc::UnboundedReceiver<DuplexStream>);

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

/// A client's end of a socket.
pub type Ws = tokio_tungstenite::WebSocketStream<DuplexStream>;

/// Which connection loop serves the router.
#[derive(Clone, Copy, Debug)]
pub enum Loop {
    /// `axum::serve`: no deadline before the upgrade.
    Axum,
    /// `kasama::server::serve` (as examples/server.rs uses it): deadlines on the
    /// connection before it becomes a socket.
    Kasama,
}

/// The app's state around `repo` and `realtime`: a pipeline on an instant simulated
/// backend, in-memory metrics, JWTs signed with [`SECRET`], sockets managed by `ws`.
pub fn app_state(
    repo: Arc<dyn Repository>,
    realtime: Arc<dyn Realtime>,
    ws: Arc<WsSockets>,
) -> AppState {
    app_state_limited(repo, realtime, ws, RateLimitConfig::default())
}

/// [`app_state`] with the pipeline's rate limits set to `limits`.
pub fn app_state_limited(
    repo: Arc<dyn Repository>,
    realtime: Arc<dyn Realtime>,
    ws: Arc<WsSockets>,
    limits: RateLimitConfig,
) -> AppState {
    app_state_with(repo, realtime, ws, |b| b.rate_limits(limits))
}

/// [`app_state`] with the pipeline's builder (an instant backend, the state's
/// metrics) finished by `finish`.
pub fn app_state_with(
    repo: Arc<dyn Repository>,
    realtime: Arc<dyn Realtime>,
    ws: Arc<WsSockets>,
    finish: impl FnOnce(AiPipelineBuilder) -> AiPipelineBuilder,
) -> AppState {
    let metrics = Arc::new(InMemoryMetrics::new());
    let sink: Arc<dyn MetricsSink> = metrics.clone();
    let pipeline = Arc::new(
        finish(
            AiPipeline::builder(repo.clone())
                .backend(Arc::new(SimulatedAgent::instant("sim")))
                .metrics(sink.clone()),
        )
        .build()
        .unwrap(),
    );
    AppState {
        repo,
        pipeline,
        realtime,
        metrics: metrics.clone(),
        sink,
        health: Arc::new(HealthMonitor::new(metrics)),
        jwt: kasama::server::JwtConfig::new(SECRET).unwrap(),
        render_metrics: None,
        ws,
    }
}

/// A running server; each `connect` or `raw` is a new pipe to it.
pub struct Server {
    connect: mpsc::UnboundedSender<DuplexStream>,
    hub: Option<Arc<Hub>>,
    /// The server's sockets (for their stats and per-user counts).
    pub ws: Arc<WsSockets>,
}

impl Server {
    /// An in-memory repository whose change feed is a hub, served by
    /// `kasama::server::serve`.
    pub fn start(config: WsConfig) -> Server {
        Self::in_memory(config, Loop::Kasama)
    }

    /// As [`Server::start`], served by `axum::serve`.
    pub fn start_axum(config: WsConfig) -> Server {
        Self::in_memory(config, Loop::Axum)
    }

    fn in_memory(config: WsConfig, serve: Loop) -> Server {
        let hub = Hub::new(256);
        let repo: Arc<dyn Repository> =
            Arc::new(InMemoryRepository::new().with_change_feed(hub.clone()));
        let realtime = Arc::new(MemoryRealtime::new(hub.clone()));
        let mut s = Self::spawn(config, repo, realtime, serve);
        s.hub = Some(hub);
        s
    }

    /// `repo` and `realtime` (e.g. PostgreSQL and its LISTEN feed), served by
    /// `kasama::server::serve`. [`Server::publish`] needs a hub: not available here.
    pub fn with(
        config: WsConfig,
        repo: Arc<dyn Repository>,
        realtime: Arc<dyn Realtime>,
    ) -> Server {
        Self::spawn(config, repo, realtime, Loop::Kasama)
    }

    fn spawn(
        config: WsConfig,
        repo: Arc<dyn Repository>,
        realtime: Arc<dyn Realtime>,
        serve: Loop,
    ) -> Server {
        let ws = WsSockets::new(config).unwrap();
        let app = router(app_state(repo, realtime, ws.clone()));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            match serve {
                Loop::Axum => axum::serve(Pipes(rx), app).await.unwrap(),
                Loop::Kasama => kasama::server::serve(
                    Pipes(rx),
                    app,
                    kasama::server::ServeConfig::default(),
                    std::future::pending(),
                )
                .await
                .unwrap(),
            }
        });
        Server {
            connect: tx,
            hub: None,
            ws,
        }
    }

    /// The hub of a server made by [`Server::start`] or [`Server::start_axum`].
    pub fn hub(&self) -> &Arc<Hub> {
        self.hub.as_ref().expect("an in-memory server has a hub")
    }

    /// A bare connection over a pipe holding at most `pipe` bytes each way.
    pub fn raw(&self, pipe: usize) -> DuplexStream {
        let (client, server) = tokio::io::duplex(pipe);
        self.connect.send(server).unwrap();
        client
    }

    /// A client socket over a pipe holding at most `pipe` bytes each way.
    pub async fn connect(
        &self,
        token: &str,
        pipe: usize,
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let client = self.raw(pipe);
        tokio_tungstenite::client_async(format!("ws://kasama.test/realtime?token={token}"), client)
            .await
            .map(|(ws, _)| ws)
    }

    /// Publishes `n` goal inserts of `user` on the hub.
    pub fn publish(&self, user: UserId, n: usize) {
        for _ in 0..n {
            self.hub().publish(&goal_insert(user));
        }
    }

    /// Lets the server's tasks run (paused clock: no real time passes).
    pub async fn settle(&self) -> WsStats {
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.ws.stats()
    }
}

/// A change event: a new goal of `user`.
pub fn goal_insert(user: UserId) -> ChangeEvent {
    ChangeEvent {
        table: ChangeTable::Goals,
        op: ChangeOp::Insert,
        id: uuid::Uuid::new_v4(),
        user_id: user,
        seq: 1,
        at: chrono::Utc::now(),
    }
}

/// A token for `user`, valid for `ttl`.
pub fn tok(user: UserId, ttl: Duration) -> String {
    token(SECRET, user, ttl)
}

/// A token for `user` with this `exp` (seconds since the epoch), however absurd.
pub fn tok_exp(user: UserId, exp: u64) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &kasama::server::Claims {
            sub: user.to_string(),
            exp,
            nbf: None,
            role: None,
        },
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

/// Reads `w` in a task (which also answers the server's pings) and forwards every
/// message but pings; the channel ends when the socket does.
pub fn reader(mut w: Ws) -> mpsc::UnboundedReceiver<Message> {
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
pub async fn recv(r: &mut mpsc::UnboundedReceiver<Message>) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(120), r.recv())
        .await
        .expect("a message within 120 s")
}

/// The code of a close frame; panics on anything else.
pub fn close_code(m: Option<Message>) -> u16 {
    match m {
        Some(Message::Close(Some(f))) => u16::from(f.code),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// A text message's JSON; panics on anything else.
pub fn text(m: Option<Message>) -> Value {
    match m {
        Some(Message::Text(t)) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// One request through `app` (no socket): `method` on `path` with `tok` as the bearer
/// token; a POST carries a new-profile body. Returns the status, the `Retry-After`
/// header and the JSON body (`Null` when there is none).
pub async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    tok: Option<&str>,
) -> (u16, Option<String>, Value) {
    use axum::body::Body;
    use axum::http::{Request, header};
    use tower::ServiceExt;
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = tok {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = if method == "POST" {
        req = req.header(header::CONTENT_TYPE, "application/json");
        Body::from(serde_json::json!({"email": "new@example.com", "display_name": "N"}).to_string())
    } else {
        Body::empty()
    };
    let r = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, retry, body)
}
