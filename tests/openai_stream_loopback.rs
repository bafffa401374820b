//! `OpenAiCompatibleAgent::stream` against a tiny hand-written HTTP/1.1 server on
//! loopback, for what wiremock cannot do: write the stream in pieces with delays
//! (a long answer outlives the timeout, an idle one times out), send no headers, and
//! notice that the client went away (dropping the stream closes the connection).
//! Real time, as every test against a real server: the delays are the server's pace,
//! never a wait for synchronisation.
#![cfg(feature = "openai")]

use std::time::Duration;

use futures_util::StreamExt;
use kasama::agent::{AiAgent, AiRequest, AiResponse, AiStream, OpenAiCompatibleAgent, StreamEvent};
use kasama::prelude::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn agent_at(base: &str) -> OpenAiCompatibleAgent {
    OpenAiCompatibleAgent::builder(format!("{base}/v1"))
        .api_key("sk-test-secret")
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

fn req() -> AiRequest {
    AiRequest::new(
        UserId::new(),
        AgentType::LearningCoach,
        "How do I listen better?",
    )
    .with_context(json!({"scores": {"communication": 97}}))
}

fn chunk(content: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "coach-model-2026",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]
    })
}

async fn collect(mut s: AiStream) -> Vec<Result<StreamEvent>> {
    let mut out = Vec::new();
    while let Some(item) = s.next().await {
        out.push(item);
    }
    out
}

fn deltas(items: &[Result<StreamEvent>]) -> Vec<&str> {
    items
        .iter()
        .filter_map(|i| match i {
            Ok(StreamEvent::Delta(d)) => Some(d.as_str()),
            _ => None,
        })
        .collect()
}

fn done(items: &[Result<StreamEvent>]) -> &AiResponse {
    match items.last() {
        Some(Ok(StreamEvent::Done(r))) => r,
        other => panic!("expected Done last, got {other:?}"),
    }
}

/// Reads one request (headers and a `content-length` body) from `sock`.
async fn read_request(sock: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = sock.read(&mut tmp).await.unwrap();
        assert!(n > 0, "client closed before sending its request");
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = sock.read(&mut tmp).await.unwrap();
                assert!(n > 0);
                buf.extend_from_slice(&tmp[..n]);
            }
            return;
        }
    }
}

const SSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    (l, base)
}

#[tokio::test]
async fn dropping_a_slow_stream_closes_the_connection() {
    let (listener, base) = listener().await;
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<usize>();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        read_request(&mut sock).await;
        sock.write_all(SSE_HEAD).await.unwrap();
        let (mut rd, mut wr) = sock.into_split();
        // The client never sends more: a read returns only when it closes.
        let closed = tokio::spawn(async move {
            let mut b = [0u8; 64];
            matches!(rd.read(&mut b).await, Ok(0) | Err(_))
        });
        let mut written = 0;
        for i in 0..500 {
            let ev = format!("data: {}\n\n", chunk(&format!(" piece{i}")));
            if wr.write_all(ev.as_bytes()).await.is_err() {
                break;
            }
            written += 1;
            if closed.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(closed.await.unwrap(), "the server saw the socket closed");
        let _ = closed_tx.send(written);
    });

    let a = agent_at(&base);
    let mut s = a.stream(&req()).await.unwrap();
    for i in 0..3 {
        match s.next().await {
            Some(Ok(StreamEvent::Delta(d))) => assert_eq!(d, format!(" piece{i}")),
            other => panic!("expected a delta, got {other:?}"),
        }
    }
    drop(s);
    let written = tokio::time::timeout(Duration::from_secs(10), closed_rx)
        .await
        .expect("the server notices the client went away")
        .unwrap();
    assert!(
        written < 100,
        "the server stopped soon after the drop ({written} chunks written)"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn a_long_stream_that_keeps_arriving_outlives_the_timeout() {
    // Timeout 500 ms; the stream takes about a second in pieces 100 ms apart.
    let (listener, base) = listener().await;
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        read_request(&mut sock).await;
        sock.write_all(SSE_HEAD).await.unwrap();
        for i in 0..10 {
            let ev = format!("data: {}\n\n", chunk(&format!("{i}")));
            sock.write_all(ev.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sock.write_all(b"data: [DONE]\n\n").await.unwrap();
    });
    let start = std::time::Instant::now();
    let items = collect(agent_at(&base).stream(&req()).await.unwrap()).await;
    assert!(start.elapsed() > Duration::from_millis(500));
    assert_eq!(deltas(&items).concat(), "0123456789");
    assert!(done(&items).usage_estimated);
}

#[tokio::test]
async fn a_stream_that_goes_silent_times_out() {
    let (listener, base) = listener().await;
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        read_request(&mut sock).await;
        sock.write_all(SSE_HEAD).await.unwrap();
        let ev = format!("data: {}\n\n", chunk("Hi"));
        sock.write_all(ev.as_bytes()).await.unwrap();
        // Silent until the test is over.
        let _ = release_rx.await;
    });
    let a = OpenAiCompatibleAgent::builder(format!("{base}/v1"))
        .timeout(Duration::from_secs(5))
        .stream_idle_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let items = collect(a.stream(&req()).await.unwrap()).await;
    assert_eq!(deltas(&items), ["Hi"]);
    assert!(
        matches!(items.last().unwrap(), Err(Error::Timeout { .. })),
        "{items:?}"
    );
    let _ = release_tx.send(());
}

#[tokio::test]
async fn no_headers_within_the_timeout_is_a_timeout() {
    let (listener, base) = listener().await;
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        read_request(&mut sock).await;
        let _ = release_rx.await;
    });
    let e = agent_at(&base).stream(&req()).await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    let _ = release_tx.send(());

    assert_eq!(
        OpenAiCompatibleAgent::builder("http://localhost")
            .stream_idle_timeout(Duration::ZERO)
            .build()
            .unwrap_err()
            .invalid_field(),
        Some("stream_idle_timeout")
    );
}
