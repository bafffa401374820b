//! Load tool for the realtime WebSocket: N authenticated sockets against a server
//! process, measured from the outside.
//!
//! ```text
//! cargo run --release --features server --example realtime_load -- --sockets 15000
//! cargo run --release --features server --example realtime_load -- --sockets 15000 --pg
//! ```
//!
//! By default it starts the server itself (this binary with `--serve`, composing
//! `kasama::server::router` like `examples/server.rs`, in memory or, with `--pg`, on
//! PostgreSQL: a throwaway database migrated by a non-superuser owner role, the server
//! connected as a login role that is only a member of `kasama_app`, changes arriving
//! through LISTEN/NOTIFY). Or it is told about a running server:
//! `--url http://127.0.0.1:8080 --pid <pid> --secret <KASAMA_JWT_SECRET>` (no restart
//! then, so no reconnect storm).
//!
//! It raises its own open-file limit to the hard limit, opens `--sockets` sockets from
//! `--sources` loopback addresses (127.0.0.10, .11, …: the client side binds before it
//! connects, so the ephemeral ports of one address do not run out), and reports:
//! - server memory per idle socket: VmRSS of `/proc/<pid>/status` before and after;
//! - delivery latency of a REST write (`POST /api/goals`) to its user's socket among N
//!   idle, one at a time (`--samples`), and for bursts of writes to 1 % of the users at
//!   once (`--bursts`);
//! - heartbeat CPU: the server's utime + stime (`/proc/<pid>/stat`) over `--idle` seconds
//!   with every socket idle but for pings (every `--heartbeat` seconds);
//! - the reconnect storm: the server is killed and started again; every client
//!   reconnects with exponential backoff and full jitter; the time until all are back.
//!
//! `--read-buffer <bytes>` sets the server's per-socket read buffer (default 256;
//! tungstenite's own default, 131072, shows what the buffers cost before they were
//! sized for this traffic). Every wait is bounded; everything is on loopback.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use futures_util::StreamExt;
use kasama::agent::SimulatedAgent;
use kasama::health::HealthMonitor;
use kasama::metrics::{InMemoryMetrics, MetricsSink};
use kasama::pipeline::AiPipeline;
use kasama::prelude::*;
use kasama::realtime::{Hub, MemoryRealtime, PgRealtime, PgRealtimeConfig, Realtime};
use kasama::server::{AppState, WsConfig, WsSockets, router, token};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Debug)]
struct Args {
    serve: bool,
    addr: String,
    sockets: usize,
    sources: u8,
    samples: usize,
    bursts: usize,
    idle: u64,
    heartbeat: u64,
    pg: bool,
    database_url: String,
    app_url: Option<String>,
    url: Option<String>,
    pid: Option<u32>,
    secret: String,
    connect_concurrency: usize,
    read_buffer: usize,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut a = Args {
        serve: false,
        addr: "127.0.0.1:0".into(),
        sockets: 15_000,
        sources: 4,
        samples: 200,
        bursts: 5,
        idle: 30,
        heartbeat: 15,
        pg: false,
        database_url: std::env::var("DATABASE_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        app_url: None,
        url: None,
        pid: None,
        secret: std::env::var("KASAMA_JWT_SECRET")
            .unwrap_or_else(|_| "kasama-load-test-secret-0123456789abcdef".into()),
        connect_concurrency: 256,
        read_buffer: WsConfig::default().read_buffer,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--serve" => a.serve = true,
            "--pg" => a.pg = true,
            "--addr" => a.addr = val()?,
            "--sockets" => a.sockets = val()?.parse()?,
            "--sources" => a.sources = val()?.parse()?,
            "--samples" => a.samples = val()?.parse()?,
            "--bursts" => a.bursts = val()?.parse()?,
            "--idle" => a.idle = val()?.parse()?,
            "--heartbeat" => a.heartbeat = val()?.parse()?,
            "--database-url" => a.database_url = val()?,
            "--app-url" => a.app_url = Some(val()?),
            "--url" => a.url = Some(val()?),
            "--pid" => a.pid = Some(val()?.parse()?),
            "--secret" => a.secret = val()?,
            "--connect-concurrency" => a.connect_concurrency = val()?.parse()?,
            "--read-buffer" => a.read_buffer = val()?.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if a.sources == 0 || a.sources > 200 {
        return Err("--sources must be 1 to 200".into());
    }
    if a.heartbeat == 0 || a.connect_concurrency == 0 {
        return Err("--heartbeat and --connect-concurrency must be more than 0".into());
    }
    Ok(a)
}

fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.serve {
        rt.block_on(serve(args))
    } else {
        rt.block_on(load(args))
    }
}

/// Raises the soft open-file limit to the hard one (a process here may hold 20,000).
fn raise_nofile() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            eprintln!("could not raise RLIMIT_NOFILE: {e}");
        }
    }
}

fn nofile() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

// ---------------------------------------------------------------------------------
// The server process.

async fn serve(args: Args) -> Result<(), BoxError> {
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
struct ServerProc {
    child: std::process::Child,
    addr: SocketAddr,
}

impl ServerProc {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn start_server(args: &Args, addr: &str) -> Result<ServerProc, BoxError> {
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

// ---------------------------------------------------------------------------------
// /proc readings.

fn vm_rss_kib(pid: u32) -> Result<u64, BoxError> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64, BoxError> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &s[s.rfind(')').ok_or("bad stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

// ---------------------------------------------------------------------------------
// The clients.

struct Shared {
    server: watch::Receiver<SocketAddr>,
    stop: watch::Receiver<bool>,
    connected: AtomicUsize,
    connects: AtomicU64,
    failed_attempts: AtomicU64,
    pings: AtomicU64,
    /// (user index, arrival, arrival minus the change's own timestamp).
    deliveries: mpsc::UnboundedSender<(usize, Instant, Duration)>,
}

fn client_config() -> WebSocketConfig {
    // The client side is small too, or 15,000 clients would hold 2 GiB of buffers.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
}

async fn connect_once(
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
async fn client(
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

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while !done() {
        if Instant::now() >= end {
            eprintln!("gave up waiting for {what} after {limit:?}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "n={} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        v.len(),
        ms(pct(&v, 0.50)),
        ms(pct(&v, 0.99)),
        ms(v.last().copied().unwrap_or_default())
    )
}

struct PgSetup {
    admin: tokio_postgres::Client,
    db: String,
}

const OWNER: &str = "kasama_load_owner";
const LOGIN: &str = "kasama_load_login";

fn with_user_db(base: &str, user: &str, db: &str) -> Result<String, BoxError> {
    let c: tokio_postgres::Config = base.parse()?;
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let mut out = format!("host={host} port={port} user={user} dbname={db}");
    // Keep the admin URL's TLS choice (`?sslmode=disable` measures without TLS).
    if let Some(mode) = base
        .split(['?', '&', ' '])
        .find_map(|kv| kv.strip_prefix("sslmode="))
    {
        out.push_str(&format!(" sslmode={mode}"));
    }
    Ok(out)
}

async fn pg_setup(args: &Args) -> Result<(PgSetup, String), BoxError> {
    let (admin, conn) = tokio_postgres::connect(&args.database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let role = |name: &str, opts: &str| {
        format!(
            "DO $$ BEGIN CREATE ROLE {name} {opts}; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        )
    };
    admin
        .batch_execute(&role(OWNER, "LOGIN CREATEROLE NOSUPERUSER NOBYPASSRLS"))
        .await?;
    let db = format!("kasama_load_{}", std::process::id());
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {db} OWNER {OWNER}"))
        .await?;
    kasama::repository::postgres::migrate_url(&with_user_db(&args.database_url, OWNER, &db)?)
        .await?;
    // kasama_app exists once migrated.
    admin
        .batch_execute(&role(
            LOGIN,
            "LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE kasama_app",
        ))
        .await?;
    let app = with_user_db(&args.database_url, LOGIN, &db)?;
    Ok((PgSetup { admin, db }, app))
}

async fn load(mut args: Args) -> Result<(), BoxError> {
    let pg = if args.pg {
        let (setup, app) = pg_setup(&args).await?;
        println!(
            "PostgreSQL: throwaway database {} migrated as {OWNER}; the server connects as {LOGIN}",
            setup.db
        );
        args.app_url = Some(app);
        Some(setup)
    } else {
        None
    };
    let result = run_load(&args).await;
    if let Some(pg) = pg {
        // The server is gone by now; its connections with it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Err(e) = pg
            .admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg.db))
            .await
        {
            eprintln!("could not drop {}: {e}", pg.db);
        }
    }
    result
}

async fn run_load(args: &Args) -> Result<(), BoxError> {
    let n = args.sockets;
    println!(
        "open-file limit {:?}; {n} sockets from {} source addresses",
        nofile(),
        args.sources
    );
    let (mut server, pid, base) = match (&args.url, args.pid) {
        (Some(url), Some(pid)) => (None, pid, url.trim_end_matches('/').to_string()),
        (Some(_), None) | (None, Some(_)) => {
            return Err("--url and --pid go together".into());
        }
        (None, None) => {
            let s = start_server(args, &args.addr).await?;
            let pid = s.child.id();
            let base = format!("http://{}", s.addr);
            (Some(s), pid, base)
        }
    };
    let server_addr: SocketAddr = base
        .trim_start_matches("http://")
        .parse()
        .map_err(|_| "--url must be http://<ip>:<port>")?;
    let mode = if args.url.is_some() {
        "outside server"
    } else if args.pg {
        "PostgreSQL"
    } else {
        "in memory"
    };
    println!("server pid {pid} at {base} ({mode})");

    let users: Vec<UserId> = (0..n).map(|_| UserId::new()).collect();
    let week = Duration::from_secs(7 * 24 * 3600);
    let tokens: Vec<String> = users
        .iter()
        .map(|u| token(args.secret.as_bytes(), *u, week))
        .collect();
    let sources: Vec<IpAddr> = (0..args.sources)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + i)))
        .collect();

    let (server_tx, server_rx) = watch::channel(server_addr);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (dtx, mut drx) = mpsc::unbounded_channel();
    let sh = Arc::new(Shared {
        server: server_rx,
        stop: stop_rx,
        connected: AtomicUsize::new(0),
        connects: AtomicU64::new(0),
        failed_attempts: AtomicU64::new(0),
        pings: AtomicU64::new(0),
        deliveries: dtx,
    });

    // Warm up the server's allocator and runtime with a few sockets, then measure.
    {
        let mut warm = Vec::new();
        for (i, t) in tokens.iter().take(200).enumerate() {
            warm.push(connect_once(sources[i % sources.len()], server_addr, t).await?);
        }
        for mut w in warm {
            let _ = w.close(None).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rss_before = vm_rss_kib(pid)?;

    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    let gate = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency));
    for (i, t) in tokens.iter().enumerate() {
        // Pace the first connects: at most `connect_concurrency` handshakes in flight.
        let permit = gate.clone().acquire_owned().await?;
        let (src, tok) = (sources[i % sources.len()], t.clone());
        tasks.push(tokio::spawn(client(i, src, tok, sh.clone(), Some(permit))));
    }
    let all = wait_for("every socket", Duration::from_secs(300), || {
        sh.connected.load(Relaxed) >= n
    })
    .await;
    let connect_time = t0.elapsed();
    println!(
        "connected {}/{n} in {:.2} s ({} failed attempts)",
        sh.connected.load(Relaxed),
        connect_time.as_secs_f64(),
        sh.failed_attempts.load(Relaxed)
    );
    if !all {
        let _ = stop_tx.send(true);
        return Err("not every socket connected".into());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = vm_rss_kib(pid)?;
    let per_socket = (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / n as f64;
    println!(
        "server VmRSS {rss_before} KiB → {rss_after} KiB: {:.1} KiB per idle socket \
         (×100,000 = {:.2} GiB)",
        per_socket / 1024.0,
        per_socket * 100_000.0 / f64::from(1u32 << 30)
    );

    // Heartbeat CPU over an idle interval.
    let (cpu0, pings0, w0) = (cpu_seconds(pid)?, sh.pings.load(Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.idle)).await;
    let (cpu1, pings1, wall) = (cpu_seconds(pid)?, sh.pings.load(Relaxed), w0.elapsed());
    let cpu_pct = (cpu1 - cpu0) / wall.as_secs_f64() * 100.0;
    println!(
        "heartbeat: {} pings in {:.1} s idle ({:.0}/s), server CPU {:.2} s = {:.2} % of one core",
        pings1 - pings0,
        wall.as_secs_f64(),
        (pings1 - pings0) as f64 / wall.as_secs_f64(),
        cpu1 - cpu0,
        cpu_pct
    );

    // Delivery latency: profiles first (REST, untimed), then writes.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()?;
    let burst_size = (n / 100).max(1);
    let needed = (args.samples + args.bursts * burst_size).min(n);
    let step = (n / needed.max(1)).max(1);
    let chosen: Vec<usize> = (0..needed).map(|k| k * step).collect();
    futures_util::stream::iter(chosen.iter().copied())
        .map(|i| {
            let (http, base, t, u) = (&http, &base, &tokens[i], users[i]);
            async move {
                let r = http
                    .post(format!("{base}/api/profile"))
                    .bearer_auth(t)
                    .json(&serde_json::json!({
                        "email": format!("{u}@example.com"),
                        "display_name": "Load"
                    }))
                    .send()
                    .await?;
                if !r.status().is_success() {
                    return Err(format!("profile: HTTP {}", r.status()).into());
                }
                Ok::<_, BoxError>(())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    while drx.try_recv().is_ok() {}

    let write = |i: usize| {
        let (http, base, t) = (&http, &base, &tokens[i]);
        async move {
            let r = http
                .post(format!("{base}/api/goals"))
                .bearer_auth(t)
                .json(&serde_json::json!({"title": "load", "category": "communication"}))
                .send()
                .await?;
            if !r.status().is_success() {
                return Err::<(), BoxError>(format!("goal: HTTP {}", r.status()).into());
            }
            Ok(())
        }
    };
    let (mut single, mut single_commit) = (Vec::new(), Vec::new());
    for &i in chosen.iter().take(args.samples) {
        let t = Instant::now();
        write(i).await?;
        loop {
            let (j, at, since) = tokio::time::timeout(Duration::from_secs(10), drx.recv())
                .await
                .map_err(|_| "a change did not arrive in 10 s")?
                .ok_or("delivery channel closed")?;
            if j == i {
                single.push(at - t);
                single_commit.push(since);
                break;
            }
        }
    }
    println!(
        "delivery, one write among {n} idle sockets, REST request sent → socket: {}",
        summary(single)
    );
    println!(
        "                                 change written (its `at`) → socket: {}",
        summary(single_commit)
    );

    let (mut burst, mut burst_commit) = (Vec::new(), Vec::new());
    for b in 0..args.bursts {
        let start = args.samples + b * burst_size;
        let group: Vec<usize> = chosen
            .iter()
            .copied()
            .skip(start)
            .take(burst_size)
            .collect();
        let t = Instant::now();
        futures_util::future::try_join_all(group.iter().map(|&i| write(i))).await?;
        let mut left: std::collections::HashSet<usize> = group.iter().copied().collect();
        while !left.is_empty() {
            let (j, at, since) = tokio::time::timeout(Duration::from_secs(10), drx.recv())
                .await
                .map_err(|_| "a burst change did not arrive in 10 s")?
                .ok_or("delivery channel closed")?;
            if left.remove(&j) {
                burst.push(at - t);
                burst_commit.push(since);
            }
        }
    }
    println!(
        "delivery, bursts of {burst_size} writes (1 %) at once, burst start → socket: {}",
        summary(burst)
    );
    println!(
        "                                 change written (its `at`) → socket: {}",
        summary(burst_commit)
    );

    // The reconnect storm.
    if let Some(s) = server.take() {
        let addr = s.addr;
        let mut old = s;
        let killed = Instant::now();
        old.kill();
        let _ = wait_for("every client to notice", Duration::from_secs(60), || {
            sh.connected.load(Relaxed) == 0
        })
        .await;
        let noticed = killed.elapsed();
        let connects0 = sh.connects.load(Relaxed);
        let failed0 = sh.failed_attempts.load(Relaxed);
        let started = Instant::now();
        let new = start_server(args, &addr.to_string()).await?;
        let up = started.elapsed();
        let _ = server_tx.send(new.addr);
        let ok = wait_for(
            "every client to reconnect",
            Duration::from_secs(300),
            || sh.connected.load(Relaxed) >= n,
        )
        .await;
        let back = started.elapsed();
        println!(
            "reconnect storm: server killed, every client saw it in {:.2} s; restarted (listening \
             after {:.2} s); {}/{n} reconnected {:.2} s after the restart ({:.2} s after the kill), \
             {} reconnects, {} failed attempts while down or busy",
            noticed.as_secs_f64(),
            up.as_secs_f64(),
            sh.connected.load(Relaxed),
            back.as_secs_f64(),
            killed.elapsed().as_secs_f64(),
            sh.connects.load(Relaxed) - connects0,
            sh.failed_attempts.load(Relaxed) - failed0,
        );
        if ok {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let pid = new.child.id();
            println!(
                "after the storm: server VmRSS {} KiB with {n} sockets",
                vm_rss_kib(pid)?
            );
        }
        server = Some(new);
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    drop(server);
    Ok(())
}
