//! The server side: the `--serve` process, and starting and killing it from the load
//! tool.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use kasama::agent::SimulatedAgent;
use kasama::health::HealthMonitor;
use kasama::metrics::{InMemoryMetrics, MetricsSink};
use kasama::pipeline::AiPipeline;
use kasama::prelude::*;
use kasama::realtime::{Hub, MemoryRealtime, PgRealtime, PgRealtimeConfig, Realtime};
use kasama::server::{AppState, WsConfig, WsSockets, router};
use tokio::net::{TcpSocket, TcpStream};

use crate::BoxError;
use crate::args::Args;

/// The server process (`--serve`): the router over an in-memory or PostgreSQL store,
/// on `--addr`; prints `listening <addr>` once it accepts.
pub(crate) async fn serve(args: Args) -> Result<(), BoxError> {
    let metrics = Arc::new(InMemoryMetrics::new());
    let sink: Arc<dyn MetricsSink> = metrics.clone();
    let (repo, realtime): (Arc<dyn Repository>, Arc<dyn Realtime>) = match &args.app_url {
        Some(url) => {
            let repo = PgRepository::connect(&PgConfig::new(url.clone()))?;
            let feed = PgRealtime::start_with_metrics(
                PgRealtimeConfig {
                    url: url.clone(),
                    ..Default::default()
                },
                sink.clone(),
            )?;
            if !feed.wait_connected(Duration::from_secs(10)).await {
                return Err("the LISTEN connection did not come up in 10 s".into());
            }
            (Arc::new(repo), Arc::new(feed))
        }
        None => {
            let hub = Hub::new(256);
            (
                Arc::new(InMemoryRepository::new().with_change_feed(hub.clone())),
                Arc::new(MemoryRealtime::new(hub)),
            )
        }
    };
    let pipeline = Arc::new(
        AiPipeline::builder(repo.clone())
            .backend(Arc::new(SimulatedAgent::instant("sim")))
            .metrics(sink.clone())
            .build()?,
    );
    let state = AppState {
        repo: repo.clone(),
        pipeline,
        realtime,
        metrics: metrics.clone(),
        sink,
        health: Arc::new(HealthMonitor::new(metrics).with_repository(repo)),
        jwt: kasama::server::JwtConfig::new(args.secret.clone())?,
        render_metrics: None,
        ws: WsSockets::new(WsConfig {
            heartbeat: Duration::from_secs(args.heartbeat),
            read_buffer: args.read_buffer,
            ..WsConfig::default()
        })?,
    };
    let addr: SocketAddr = args.addr.parse()?;
    let sock = TcpSocket::new_v4()?;
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    // A storm of reconnects arrives at once: a backlog of 1,024 (tokio's default) drops
    // SYNs and costs the clients a one-second retransmission.
    let listener = sock.listen(4096)?;
    println!("listening {}", listener.local_addr()?);
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|s: &mut TcpStream| {
        let _ = s.set_nodelay(true);
    });
    // The library's loop, as examples/server.rs: request heads have a deadline.
    kasama::server::serve(
        listener,
        router(state),
        kasama::server::ServeConfig::default(),
        std::future::pending(),
    )
    .await?;
    Ok(())
}

/// A server this tool started; killed when dropped.
pub(crate) struct ServerProc {
    pub(crate) child: std::process::Child,
    pub(crate) addr: SocketAddr,
}

impl ServerProc {
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts this binary with `--serve` on `addr` and waits (30 s at most) until it
/// listens.
pub(crate) async fn start_server(args: &Args, addr: &str) -> Result<ServerProc, BoxError> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args([
        "--serve",
        "--addr",
        addr,
        "--heartbeat",
        &args.heartbeat.to_string(),
        "--read-buffer",
        &args.read_buffer.to_string(),
    ])
    .env("KASAMA_JWT_SECRET", &args.secret)
    .stdout(Stdio::piped());
    if let Some(u) = &args.app_url {
        cmd.args(["--app-url", u]);
    }
    let mut child = cmd.spawn()?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(out).lines();
        let _ = tx.send(lines.next());
        // Keep draining, so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let line = match tokio::time::timeout(Duration::from_secs(30), rx).await {
        Ok(Ok(Some(Ok(line)))) => line,
        Ok(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the server exited before listening".into());
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the server did not start in 30 s".into());
        }
    };
    let addr = line
        .strip_prefix("listening ")
        .ok_or_else(|| format!("unexpected server output: {line}"))?
        .parse()?;
    Ok(ServerProc { child, addr })
}
