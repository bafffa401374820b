//! A minimal realtime client that follows the protocol (see `kasama::server::ws`):
//! reconnect with exponential backoff and full jitter, re-read after every (re)connect,
//! on `resync` and on `lagged`, stop on 401. The backoff starts over only after a
//! connection proved healthy (it stayed up [`STABLE`] or delivered an event): a server
//! that accepts and drops at once is not hammered at the base delay.
//!
//! On close code 4001 (the token expired) a real client gets a fresh token from its
//! sign-in (e.g. with its refresh token) and reconnects at once; this example only has
//! the token it was given on the command line, so it stops there.
//!
//! ```text
//! KASAMA_JWT_SECRET=<32 bytes or more> cargo run --features server,metrics-facade --example server  # prints a token
//! cargo run --features server --example realtime_client -- http://127.0.0.1:8080 <token>
//! ```
//!
//! Ctrl-C stops it.

use std::time::Duration;

use futures_util::StreamExt;
use kasama::server::{CLOSE_LAGGED, CLOSE_TOKEN_EXPIRED};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message};

/// First backoff ceiling; doubles per failed attempt.
const BASE: Duration = Duration::from_millis(500);
/// Highest backoff ceiling.
const CAP: Duration = Duration::from_secs(30);
/// A connection up this long (or that delivered an event) resets the backoff.
const STABLE: Duration = Duration::from_secs(30);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the app shows, re-read in full: here, the user's goals.
async fn resync(http: &reqwest::Client, base: &str, token: &str) -> Result<(), BoxError> {
    let goals: Vec<Value> = http
        .get(format!("{base}/api/goals"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    println!("resynced: {} goals", goals.len());
    Ok(())
}

enum Next {
    /// Reconnect after a backoff.
    Retry,
    /// Give up (needs a human or a new token).
    Stop(String),
}

/// One connection. The `bool` says whether it proved healthy: up for [`STABLE`] or
/// delivered an event.
async fn session(http: &reqwest::Client, base: &str, token: &str) -> (bool, Next) {
    let url = format!("{}/realtime?token={token}", base.replacen("http", "ws", 1));
    let mut ws = match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => ws,
        Err(tungstenite::Error::Http(r)) if r.status() == 401 => {
            return (false, Next::Stop("the token was refused (401)".into()));
        }
        // 429: this user has too many sockets open; one may close soon.
        Err(e) => {
            eprintln!("connect failed: {e}");
            return (false, Next::Retry);
        }
    };
    println!("connected");
    let since = tokio::time::Instant::now();
    let mut delivered = false;
    let healthy = |delivered: bool| delivered || since.elapsed() >= STABLE;
    // Changes made while we were away were not sent: read the current state.
    if let Err(e) = resync(http, base, token).await {
        eprintln!("resync failed: {e}");
    }
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(t)) => {
                delivered = true;
                let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                match v["type"].as_str() {
                    Some("change") => println!(
                        "{} {} {}",
                        v["change"]["op"], v["change"]["table"], v["change"]["id"]
                    ),
                    Some("resync") | Some("lagged") => {
                        if let Err(e) = resync(http, base, token).await {
                            eprintln!("resync failed: {e}");
                        }
                    }
                    _ => eprintln!("unknown message: {t}"),
                }
            }
            Ok(Message::Close(Some(f))) if u16::from(f.code) == CLOSE_TOKEN_EXPIRED => {
                // A real client fetches a fresh token here and reconnects; this example
                // has only the one it was given.
                return (
                    healthy(delivered),
                    Next::Stop("the token expired: sign in again".into()),
                );
            }
            Ok(Message::Close(Some(f))) if u16::from(f.code) == CLOSE_LAGGED => {
                eprintln!("fell behind; reconnecting");
                return (healthy(delivered), Next::Retry);
            }
            Ok(Message::Close(_)) | Err(_) => break,
            // Pings are answered by the library.
            Ok(_) => {}
        }
    }
    (healthy(delivered), Next::Retry)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let (Some(base), Some(token)) = (args.next(), args.next()) else {
        return Err("usage: realtime_client <http://host:port> <token>".into());
    };
    let base = base.trim_end_matches('/').to_string();
    let http = reqwest::Client::new();
    let mut attempt: u32 = 0;
    loop {
        let run = async {
            let (healthy, next) = session(&http, &base, &token).await;
            if healthy {
                attempt = 0;
            }
            next
        };
        let next = tokio::select! {
            n = run => n,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        if let Next::Stop(why) = next {
            return Err(why.into());
        }
        // Full jitter: anywhere in [0, min(CAP, BASE × 2^attempt)], so a restarted
        // server is not hit by every client in the same instant.
        let ceiling = BASE.saturating_mul(1 << attempt.min(16)).min(CAP);
        attempt += 1;
        let delay = ceiling.mul_f64(fastrand::f64());
        println!("reconnecting in {:.1} s", delay.as_secs_f64());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
