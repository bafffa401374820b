//! The measurements, one after the other: connecting, memory per socket, heartbeat CPU,
//! delivery latency (single writes and bursts) and the reconnect storm.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use futures_util::StreamExt;
use kasama::prelude::*;
use kasama::server::token;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::BoxError;
use crate::args::Args;
use crate::client::{Shared, client, connect_once};
use crate::measure::{cpu_seconds, summary, vm_rss_kib, wait_for};
use crate::nofile;
use crate::pg::{LOGIN, OWNER, pg_setup};
use crate::server::start_server;

/// The load tool: sets up PostgreSQL when asked, measures, and drops the database.
pub(crate) async fn load(mut args: Args) -> Result<(), BoxError> {
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

/// Starts the server (unless told about one), opens the sockets and measures.
pub(crate) async fn run_load(args: &Args) -> Result<(), BoxError> {
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
