//! The realtime WebSocket's protections, on tokio's paused clock: the server runs on an
//! in-memory listener (duplex pipes instead of TCP), so time only moves when every
//! task waits, and a client that does not read fills its pipe like a stalled peer.
//! Dead peers, slow clients, queue overflow, the incoming size cap, the per-user cap
//! and token expiry. The harness (pipes, server, client helpers) is tests/common/ws.rs;
//! these tests serve it with `axum::serve`.
#![cfg(all(feature = "server", feature = "metrics-facade"))]

mod common;

use std::time::Duration;

use common::ws::{HOUR, Server, close_code, reader, recv, text, tok, tok_exp};
use futures_util::{SinkExt, StreamExt};
use kasama::prelude::*;
use kasama::server::{WsConfig, WsSockets};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_dropped_at_the_pong_deadline_and_a_live_one_stays() {
    // Ping at 15 s; no frame by 25 s → dead.
    let s = Server::start_axum(WsConfig::default());
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
    let s = Server::start_axum(WsConfig::default()); // send timeout 5 s, queue 64
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
    assert_eq!(s.hub().len(), 0, "its subscription is gone too");
}

#[tokio::test(start_paused = true)]
async fn an_overflowing_queue_sends_lagged_then_closes_with_4008() {
    let s = Server::start_axum(WsConfig {
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
    let s = Server::start_axum(WsConfig::default()); // 1 KiB
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
    let s = Server::start_axum(WsConfig {
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
    let s = Server::start_axum(WsConfig::default());
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
    let old = tok_exp(u, 1_000_000);
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
