//! The realtime WebSocket and the connection loop against slow, malicious and careless
//! clients (the adversarial review of issue 16): an unfinished request or idle
//! keep-alive is closed by `kasama::server::serve`'s header-read deadline; the global
//! (`max_sockets`, 503) and per-user (429, under concurrent handshakes) caps hold and
//! free their slots; oversize frames and messages close with 1009; a ping flooder is
//! dropped; an expired token gets 401 and an absurd `exp` or ttl neither panics nor
//! expires early; settings that do not fit the clock are refused by name; `lagged`
//! counts every event the client did not get; a commit on PostgreSQL reaches only its
//! user's socket. Same in-memory pipe harness as tests/server_ws.rs (tests/common/ws.rs),
//! served by `kasama::server::serve`.
#![cfg(all(feature = "server", feature = "metrics-facade"))]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fixtures::new_goal;
use common::ws::{
    HOUR, Pipes, Server, app_state, close_code, goal_insert, reader, recv, text, tok, tok_exp,
};
use futures_util::SinkExt;
use kasama::prelude::*;
use kasama::realtime::{Hub, MemoryRealtime, PgRealtime, PgRealtimeConfig};
use kasama::server::{WsConfig, WsSockets, router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

// ---------------------------------------------------------------------------------
// Incoming size cap.

/// Frames of 600 bytes each are under the 1 KiB frame cap; the message they build is
/// not.
#[tokio::test(start_paused = true)]
async fn review16_a_fragmented_message_over_the_cap_closes_with_1009() {
    let s = Server::start(WsConfig::default());
    let u = UserId::new();
    let mut w = s.connect(&tok(u, HOUR), 64 * 1024).await.unwrap();
    w.send(Message::Frame(Frame::message(
        vec![b'a'; 600],
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    w.send(Message::Frame(Frame::message(
        vec![b'a'; 600],
        OpCode::Data(Data::Continue),
        false,
    )))
    .await
    .unwrap();
    let mut r = reader(w);
    assert_eq!(
        close_code(recv(&mut r).await),
        kasama::server::CLOSE_TOO_BIG
    );
    let st = s.settle().await;
    assert_eq!((st.closed_oversize, st.open), (1, 0));
}

/// A frame header announcing 1 GiB is refused before any payload is sent.
#[tokio::test(start_paused = true)]
async fn review16_a_huge_frame_is_refused_from_its_header() {
    let s = Server::start(WsConfig::default());
    let u = UserId::new();
    let mut w = s.connect(&tok(u, HOUR), 64 * 1024).await.unwrap();
    // FIN + binary, masked, 64-bit length 2^30, a mask, and no payload.
    let mut hdr = vec![0x82u8, 0x80 | 127];
    hdr.extend_from_slice(&(1u64 << 30).to_be_bytes());
    hdr.extend_from_slice(&[1, 2, 3, 4]);
    w.get_mut().write_all(&hdr).await.unwrap();
    let mut r = reader(w);
    assert_eq!(
        close_code(recv(&mut r).await),
        kasama::server::CLOSE_TOO_BIG
    );
    assert_eq!(s.settle().await.closed_oversize, 1);
}

/// A client that floods pings and never reads: its pongs fill the pipe, so the
/// server's own ping cannot be sent and the socket is dropped; another user's socket
/// is unaffected.
#[tokio::test(start_paused = true)]
async fn review16_a_ping_flooder_that_never_reads_is_dropped() {
    let s = Server::start(WsConfig::default());
    let (u, v) = (UserId::new(), UserId::new());
    let mut fine = reader(s.connect(&tok(v, HOUR), 64 * 1024).await.unwrap());
    let mut w = s.connect(&tok(u, HOUR), 4096).await.unwrap();
    for _ in 0..2000 {
        // Sending may itself block once the server stops reading; bound it.
        if tokio::time::timeout(
            Duration::from_secs(1),
            w.send(Message::Ping(vec![0; 100].into())),
        )
        .await
        .is_err()
        {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(40)).await;
    let st = s.settle().await;
    assert_eq!(st.open, 1, "the flooder is gone: {st:?}");
    s.publish(v, 1);
    assert_eq!(text(recv(&mut fine).await)["type"], "change");
    drop(w);
}

// ---------------------------------------------------------------------------------
// Per-user cap.

#[tokio::test(start_paused = true)]
async fn review16_simultaneous_connects_with_different_tokens_never_pass_the_cap() {
    let s = Arc::new(Server::start(WsConfig {
        max_per_user: 3,
        ..WsConfig::default()
    }));
    let u = UserId::new();
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let s = s.clone();
        // A different token each time (different exp): the cap is the user's.
        let t = tok(u, HOUR + Duration::from_secs(i));
        tasks.push(tokio::spawn(async move { s.connect(&t, 4096).await.ok() }));
    }
    let mut held = Vec::new();
    for t in tasks {
        if let Some(w) = t.await.unwrap() {
            held.push(w);
        }
    }
    assert_eq!(held.len(), 3);
    let st = s.settle().await;
    assert_eq!((st.open, st.refused_per_user), (3, 37));
    assert_eq!(s.ws.open_for(u), 3);
}

/// A client that sends the handshake and vanishes before reading the 101, and one whose
/// TCP drops right after: neither leaves the user locked out.
#[tokio::test(start_paused = true)]
async fn review16_abandoned_handshakes_and_abrupt_drops_free_their_slot() {
    let s = Server::start(WsConfig {
        max_per_user: 1,
        ..WsConfig::default()
    });
    let u = UserId::new();
    let t = tok(u, HOUR);
    for _ in 0..5 {
        let mut raw = s.raw(4096);
        raw.write_all(
            format!(
                "GET /realtime?token={t} HTTP/1.1\r\nHost: kasama.test\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        drop(raw);
        let w = s.connect(&t, 4096).await.unwrap();
        drop(w); // no close frame: the pipe just goes away
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let st = s.settle().await;
    assert_eq!(st.open, 0, "{st:?}");
    assert_eq!(s.ws.open_for(u), 0);
    let _w = s.connect(&t, 4096).await.expect("not locked out");
}

// ---------------------------------------------------------------------------------
// Connections that never become sockets.

/// The per-socket rules (pong deadline, send timeout, per-user cap) start only after
/// the upgrade. A connection that sends half a request line and then nothing is held by
/// the server for ever: `router` served with `axum::serve` (as `examples/server.rs`
/// does) has no header-read timeout, and nothing counts or caps such connections, so
/// anyone (no token needed) can hold the process' open files (20,000 here) and lock
/// every user out of the realtime socket and the API.
#[tokio::test(start_paused = true)]
async fn review16_an_unfinished_request_is_not_held_for_ever() {
    let s = Server::start(WsConfig::default());
    let mut raw = s.raw(4096);
    raw.write_all(b"GET /realtime?token=").await.unwrap();
    let mut buf = [0u8; 256];
    let r = tokio::time::timeout(HOUR, raw.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(_))),
        "the server still holds a connection that sent 20 bytes an hour ago"
    );
}

/// The global cap: past `max_sockets` a handshake gets 503, counted; a slot freed is
/// usable again.
#[tokio::test(start_paused = true)]
async fn review16_past_max_sockets_a_handshake_gets_503() {
    let s = Server::start(WsConfig {
        max_sockets: 2,
        ..WsConfig::default()
    });
    let a = s.connect(&tok(UserId::new(), HOUR), 4096).await.unwrap();
    let _b = s.connect(&tok(UserId::new(), HOUR), 4096).await.unwrap();
    match s.connect(&tok(UserId::new(), HOUR), 4096).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected HTTP 503, got {:?}", other.map(|_| ())),
    }
    let st = s.settle().await;
    assert_eq!((st.open, st.opened, st.refused_full), (2, 2, 1));
    drop(a);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(s.settle().await.open, 1);
    let _c = s
        .connect(&tok(UserId::new(), HOUR), 4096)
        .await
        .expect("a freed slot is usable");
}

/// A kept-alive connection that never sends its next request is closed too, and a
/// request that completes in time is served.
#[tokio::test(start_paused = true)]
async fn review16_a_complete_request_is_served_and_an_idle_keepalive_closed() {
    let s = Server::start(WsConfig::default());
    let mut raw = s.raw(64 * 1024);
    raw.write_all(b"GET /health HTTP/1.1\r\nHost: kasama.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = raw.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let r = tokio::time::timeout(HOUR, raw.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0))), "idle keep-alive still held: {r:?}");
}

/// `serve` returns once its shutdown future completes, after the request in flight:
/// an upgraded socket is not waited for and keeps working.
#[tokio::test(start_paused = true)]
async fn review16_serve_stops_on_shutdown_without_waiting_for_sockets() {
    let hub = Hub::new(256);
    let repo: Arc<dyn Repository> =
        Arc::new(InMemoryRepository::new().with_change_feed(hub.clone()));
    let realtime = Arc::new(MemoryRealtime::new(hub.clone()));
    let state = app_state(repo, realtime, WsSockets::with_defaults());
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kasama::server::serve(
        Pipes(rx),
        router(state),
        kasama::server::ServeConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let (client, io) = tokio::io::duplex(64 * 1024);
    tx.send(io).unwrap();
    let u = UserId::new();
    let (w, _) = tokio_tungstenite::client_async(
        format!("ws://kasama.test/realtime?token={}", tok(u, HOUR)),
        client,
    )
    .await
    .unwrap();
    let mut r = reader(w);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), server)
        .await
        .expect("serve returned")
        .unwrap()
        .unwrap();
    hub.publish(&goal_insert(u));
    assert_eq!(text(recv(&mut r).await)["type"], "change");
}

/// Bad serve settings are refused, naming the field.
#[tokio::test]
async fn review16_bad_serve_settings_are_refused() {
    for d in [Duration::ZERO, Duration::MAX] {
        let (_tx, rx) = mpsc::unbounded_channel();
        let e = kasama::server::serve(
            Pipes(rx),
            axum::Router::new(),
            kasama::server::ServeConfig {
                header_read_timeout: d,
            },
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("header_read_timeout"), "{e}");
    }
}

// ---------------------------------------------------------------------------------
// Token expiry.

/// `claims()` allows 60 s of leeway, so a token whose `exp` is already 30 s in the past
/// passes the handshake: the client gets a 101, the socket counts as opened, then it is
/// closed with 4001 at once. It should be refused up front (HTTP 401), as the module
/// docs' "close code 4001 at exp" implies no socket exists after exp.
#[tokio::test(start_paused = true)]
async fn review16_a_token_already_past_its_exp_gets_no_socket() {
    let s = Server::start(WsConfig::default());
    let u = UserId::new();
    let exp = (chrono::Utc::now().timestamp() - 30) as u64;
    match s.connect(&tok_exp(u, exp), 4096).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 401);
            assert_eq!(s.settle().await.opened, 0, "not counted as opened");
        }
        Ok(_) => panic!(
            "an expired token got a socket (101): {:?}",
            s.settle().await
        ),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// A token with an absurd `exp` (u64::MAX) neither panics nor closes the socket early.
#[tokio::test(start_paused = true)]
async fn review16_a_far_future_exp_keeps_the_socket() {
    let s = Server::start(WsConfig::default());
    let u = UserId::new();
    let mut r = reader(s.connect(&tok_exp(u, u64::MAX), 4096).await.unwrap());
    tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
    s.publish(u, 1);
    assert_eq!(text(recv(&mut r).await)["type"], "change");
    assert_eq!(s.settle().await.closed_expired, 0);
}

// ---------------------------------------------------------------------------------
// Lagged.

/// The client that lags is told `missed: n` and closed. But the events already in its
/// queue when it lagged are dropped with the socket too and counted nowhere: 50 events
/// for this user, none reached the client, and it is told it missed 42.
#[tokio::test(start_paused = true)]
async fn review16_lagged_tells_the_client_every_event_it_did_not_get() {
    let s = Server::start(WsConfig {
        queue: 8,
        ..WsConfig::default()
    });
    let u = UserId::new();
    let w = s.connect(&tok(u, HOUR), 1 << 20).await.unwrap();
    s.publish(u, 50);
    let mut r = reader(w);
    let mut changes = 0;
    let missed = loop {
        let m = text(recv(&mut r).await);
        match m["type"].as_str() {
            Some("change") => changes += 1,
            Some("lagged") => break m["missed"].as_u64().unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(close_code(recv(&mut r).await), kasama::server::CLOSE_LAGGED);
    assert_eq!(
        changes + missed,
        50,
        "received {changes} changes and was told it missed {missed} of 50"
    );
}

/// A token signed with an absurd ttl neither panics nor comes out already expired.
#[tokio::test(start_paused = true)]
async fn review16_a_token_signed_for_ever_is_valid() {
    let s = Server::start(WsConfig::default());
    let u = UserId::new();
    for ttl in [Duration::MAX, Duration::from_secs(1 << 50)] {
        let mut r = reader(s.connect(&tok(u, ttl), 4096).await.unwrap());
        s.publish(u, 1);
        assert_eq!(text(recv(&mut r).await)["type"], "change");
    }
}

// ---------------------------------------------------------------------------------
// PostgreSQL: a committed write reaches the socket through LISTEN/NOTIFY.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review16_on_postgres_a_commit_reaches_the_socket() {
    let Some(db) = common::pg().await else { return };
    let feed = PgRealtime::start(PgRealtimeConfig {
        url: db.app_config().url,
        ..PgRealtimeConfig::default()
    })
    .unwrap();
    assert!(feed.wait_connected(Duration::from_secs(10)).await);
    let repo: Arc<dyn Repository> = Arc::new(db.repo.clone());
    let s = Server::with(WsConfig::default(), repo.clone(), Arc::new(feed));
    let (u, other) = (UserId::new(), UserId::new());
    for (i, x) in [u, other].into_iter().enumerate() {
        repo.create_profile(
            Actor::Service,
            NewProfile::new(x, format!("r16-{i}-{x}@example.com"), "U"),
        )
        .await
        .unwrap();
    }
    let mut mine = reader(s.connect(&tok(u, HOUR), 64 * 1024).await.unwrap());
    let mut theirs = reader(s.connect(&tok(other, HOUR), 64 * 1024).await.unwrap());
    let g = repo
        .create_goal(Actor::User(u), new_goal(u, "t"))
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), mine.recv())
        .await
        .expect("the change within 10 s");
    let v = text(m);
    assert_eq!(v["type"], "change");
    assert_eq!(v["change"]["id"], g.id.to_string());
    assert!(
        tokio::time::timeout(Duration::from_millis(500), theirs.recv())
            .await
            .is_err(),
        "another user's socket got u's change"
    );
    db.finish().await;
}

// ---------------------------------------------------------------------------------
// Settings.

/// `WsSockets::new` checks durations for zero only. A host that turns pings "off" with
/// a huge heartbeat (or pong deadline) gets a config that is accepted, and then every
/// socket's task panics on `Instant::now() + heartbeat` (tokio's Instant overflows):
/// the socket opens and dies at once. Either refuse the setting or cap it.
#[tokio::test(start_paused = true)]
async fn review16_a_huge_heartbeat_is_refused_or_works() {
    for cfg in [
        WsConfig {
            heartbeat: Duration::MAX,
            ..WsConfig::default()
        },
        WsConfig {
            heartbeat: Duration::from_secs(1),
            pong_timeout: Duration::MAX,
            ..WsConfig::default()
        },
        WsConfig {
            send_timeout: Duration::MAX,
            ..WsConfig::default()
        },
    ] {
        if let Err(e) = WsSockets::new(cfg.clone()) {
            let field = if cfg.heartbeat == Duration::MAX {
                "heartbeat"
            } else if cfg.pong_timeout == Duration::MAX {
                "pong_timeout"
            } else {
                "send_timeout"
            };
            assert!(e.to_string().contains(field), "{e}");
            continue;
        }
        let s = Server::start(cfg.clone());
        let u = UserId::new();
        let mut r = reader(s.connect(&tok(u, HOUR), 64 * 1024).await.unwrap());
        tokio::time::sleep(Duration::from_secs(5)).await;
        s.publish(u, 1);
        let got = tokio::time::timeout(Duration::from_secs(5), r.recv()).await;
        assert!(
            matches!(got, Ok(Some(Message::Text(_)))),
            "{cfg:?} was accepted but the socket did not work: {got:?}"
        );
    }
}
