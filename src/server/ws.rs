//! The realtime WebSocket, `GET /realtime`: one socket streams its user's changes.
//!
//! Sized for many idle users: buffers fit small JSON events, a socket's queue is
//! allocated only while events wait, and its timers (heartbeat, pong deadline, token
//! expiry) share one tokio timer. What protects the others from one bad client:
//!
//! | rule | default | what happens |
//! |---|---|---|
//! | events queued for one socket | 64 | on overflow the client gets `{"type":"lagged","missed":n}` (`n`: every event it will not get, dropped or still queued), then close code **4008**; it must reconnect and re-read |
//! | a send (event, ping, close) | 5 s | a client that does not read is dropped |
//! | ping every | 15 s | the client's WebSocket library answers with a pong |
//! | pong deadline after a ping | 10 s | no frame from the client by then: dead, dropped — at most 25 s after its last frame |
//! | incoming message or frame | 1 KiB | larger: close code **1009** (a frame is refused from its header, before its payload is buffered); clients send nothing but pings and pongs |
//! | sockets per user | 8 | the 9th handshake gets HTTP 429 `too_many_sockets` |
//! | sockets in all | 50,000 | the next handshake gets HTTP 503 `server_full` (keep it below the process' open-file limit, less what the database pool and the API need) |
//! | token expiry | the token's `exp` | close code **4001** at `exp`; reconnect with a fresh token (a handshake with a token already at or past `exp` gets HTTP 401, without the REST routes' minute of leeway) |
//!
//! Each close is counted in [`WsStats`].
//!
//! # The client's side of the protocol
//!
//! Messages are JSON text: `{"type":"change","change":{table, op, id, user_id, seq, at}}`,
//! `{"type":"resync"}` (the server's feed had a gap: re-read what you show) and
//! `{"type":"lagged","missed":n}` (you fell behind; the server closes next; `n` counts
//! every event you will not get: those dropped when the queue was full and those still
//! queued when it overflowed, which the close discards). A client:
//!
//! 1. connects with `?token=` (or `Authorization: Bearer`); the socket *is* the
//!    subscription to all of its user's changes;
//! 2. after every (re)connect re-reads what it shows over REST (changes during the gap
//!    were not sent), and does the same on `resync` and `lagged`;
//! 3. on close or error reconnects with exponential backoff and full jitter (a random
//!    delay between 0 and min(30 s, 0.5 s × 2^attempt)), so a restarted server is not
//!    hit by every client at once, resetting the attempt count only once a connection
//!    proved healthy (stayed up 30 s or delivered an event: a server that accepts and
//!    drops at once is not hammered); on 4001 it gets a fresh token first, on HTTP 401
//!    it stops, on 429 or 503 (`server_full`) it backs off as on any failure.
//!
//! `examples/realtime_client.rs` does exactly this.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::AppState;
use super::auth::{bearer, claims, user_of};
use super::errors::ApiError;
use super::serve::MAX_DEADLINE;
use crate::domain::{Actor, UserId};
use crate::error::{Error, Result};
use crate::realtime::{Channel, RealtimeEvent, Subscription};

/// Close code: the token expired; reconnect with a fresh one.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// Close code: the client fell behind (its queue overflowed); reconnect and re-read.
pub const CLOSE_LAGGED: u16 = 4008;
/// Close code: a message from the client was over the size cap (RFC 6455's 1009).
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Settings of the realtime WebSocket. Defaults on each field.
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsConfig {
    /// Ping interval. Default: 15 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub heartbeat: Duration,
    /// After a ping, a client that sends no frame (pong or other) within this long is
    /// dropped as dead. Default: 10 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub pong_timeout: Duration,
    /// Longest a send may take before the client is dropped as too slow. Default: 5 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub send_timeout: Duration,
    /// Events queued for one socket before it lags (and is closed). Never more than
    /// the feed's own per-subscriber buffer. Default: 64.
    pub queue: usize,
    /// Open sockets per user. Default: 8.
    pub max_per_user: usize,
    /// Open sockets in all (this server); past it a handshake gets HTTP 503
    /// `server_full`. Keep it below the process' open-file limit, less what the
    /// database pool and the API need, so that a flood of sockets cannot lock the API
    /// out. Default: 50,000.
    pub max_sockets: usize,
    /// Largest incoming message and frame, in bytes (pings carry at most 125).
    /// Default: 1 KiB.
    pub max_incoming: usize,
    /// Initial read buffer per socket, in bytes (grows for a larger frame, up to
    /// `max_incoming`). Default: 256 B.
    pub read_buffer: usize,
    /// Most bytes waiting to be written per socket; beyond it a send fails and the
    /// socket closes. Default: 64 KiB.
    pub max_write_buffer: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            pong_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(5),
            queue: 64,
            max_per_user: 8,
            max_sockets: 50_000,
            max_incoming: 1024,
            read_buffer: 256,
            max_write_buffer: 64 * 1024,
        }
    }
}

/// What the realtime sockets have done since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WsStats {
    /// Sockets open now (counting handshakes admitted and being upgraded).
    pub open: u64,
    /// Sockets accepted since start.
    pub opened: u64,
    /// Handshakes refused because the user had `max_per_user` sockets open.
    pub refused_per_user: u64,
    /// Handshakes refused (HTTP 503) because `max_sockets` sockets were open.
    pub refused_full: u64,
    /// Closed because the client's queue overflowed (after a `lagged` message).
    pub closed_lagged: u64,
    /// Dropped because a send took longer than `send_timeout`.
    pub closed_slow: u64,
    /// Dropped because no pong came within `pong_timeout` of a ping.
    pub closed_dead: u64,
    /// Closed because an incoming message exceeded `max_incoming`.
    pub closed_oversize: u64,
    /// Closed because the token expired.
    pub closed_expired: u64,
}

/// The realtime sockets' settings, per-user counts and [`WsStats`]; one per server,
/// shared through [`AppState::ws`](super::AppState::ws).
#[derive(Debug)]
pub struct WsSockets {
    config: WsConfig,
    per_user: Mutex<HashMap<UserId, u32>>,
    open: AtomicU64,
    opened: AtomicU64,
    refused_per_user: AtomicU64,
    refused_full: AtomicU64,
    closed_lagged: AtomicU64,
    closed_slow: AtomicU64,
    closed_dead: AtomicU64,
    closed_oversize: AtomicU64,
    closed_expired: AtomicU64,
}

impl WsSockets {
    /// Sockets with `config`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the field for a zero duration or count, a
    /// duration over one day (`heartbeat`, `pong_timeout`, `send_timeout`: a longer one
    /// would not fit the clock, and a day is already "never" for a socket), a
    /// `max_incoming` below 125 bytes (a ping's payload), a `read_buffer` of zero or a
    /// `max_write_buffer` below 4 KiB.
    pub fn new(config: WsConfig) -> Result<Arc<Self>> {
        let c = &config;
        for (field, d) in [
            ("heartbeat", c.heartbeat),
            ("pong_timeout", c.pong_timeout),
            ("send_timeout", c.send_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::invalid(field, "must be more than zero"));
            }
            if d > MAX_DEADLINE {
                return Err(Error::invalid(field, "must be at most one day"));
            }
        }
        if c.queue == 0 {
            return Err(Error::invalid("queue", "must be at least 1"));
        }
        if c.max_per_user == 0 || c.max_per_user > u32::MAX as usize {
            return Err(Error::invalid("max_per_user", "must be 1 to 2^32-1"));
        }
        if c.max_sockets == 0 {
            return Err(Error::invalid("max_sockets", "must be at least 1"));
        }
        if c.max_incoming < 125 {
            return Err(Error::invalid(
                "max_incoming",
                "must be at least 125 bytes (a ping's payload)",
            ));
        }
        if c.read_buffer == 0 {
            return Err(Error::invalid("read_buffer", "must be at least 1 byte"));
        }
        if c.max_write_buffer < 4096 {
            return Err(Error::invalid("max_write_buffer", "must be at least 4 KiB"));
        }
        Ok(Arc::new(Self {
            config,
            per_user: Mutex::new(HashMap::new()),
            open: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            refused_per_user: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
            closed_lagged: AtomicU64::new(0),
            closed_slow: AtomicU64::new(0),
            closed_dead: AtomicU64::new(0),
            closed_oversize: AtomicU64::new(0),
            closed_expired: AtomicU64::new(0),
        }))
    }

    /// The defaults of [`WsConfig`].
    pub fn with_defaults() -> Arc<Self> {
        Self::new(WsConfig::default()).expect("the defaults are valid")
    }

    /// The settings.
    pub fn config(&self) -> &WsConfig {
        &self.config
    }

    /// What the sockets have done since start.
    pub fn stats(&self) -> WsStats {
        WsStats {
            open: self.open.load(Relaxed),
            opened: self.opened.load(Relaxed),
            refused_per_user: self.refused_per_user.load(Relaxed),
            refused_full: self.refused_full.load(Relaxed),
            closed_lagged: self.closed_lagged.load(Relaxed),
            closed_slow: self.closed_slow.load(Relaxed),
            closed_dead: self.closed_dead.load(Relaxed),
            closed_oversize: self.closed_oversize.load(Relaxed),
            closed_expired: self.closed_expired.load(Relaxed),
        }
    }

    /// Open sockets of `user`.
    pub fn open_for(&self, user: UserId) -> usize {
        self.lock().get(&user).map_or(0, |n| *n as usize)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, u32>> {
        self.per_user.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one of `user`'s socket slots and one of the server's, or says which
    /// cap refused it. `open` changes only under the lock, so the caps hold under
    /// concurrent handshakes.
    fn admit(self: &Arc<Self>, user: UserId) -> std::result::Result<Permit, Refused> {
        let mut m = self.lock();
        if self.open.load(Relaxed) as usize >= self.config.max_sockets {
            drop(m);
            self.refused_full.fetch_add(1, Relaxed);
            return Err(Refused::Full);
        }
        let n = m.entry(user).or_insert(0);
        if *n as usize >= self.config.max_per_user {
            drop(m);
            self.refused_per_user.fetch_add(1, Relaxed);
            return Err(Refused::PerUser);
        }
        *n += 1;
        self.open.fetch_add(1, Relaxed);
        drop(m);
        self.opened.fetch_add(1, Relaxed);
        Ok(Permit {
            sockets: self.clone(),
            user,
        })
    }

    fn count(&self, end: End) {
        let c = match end {
            End::Lagged => &self.closed_lagged,
            End::Slow => &self.closed_slow,
            End::Dead => &self.closed_dead,
            End::Oversize => &self.closed_oversize,
            End::Expired => &self.closed_expired,
            End::PeerClosed | End::FeedEnded | End::Failed => return,
        };
        c.fetch_add(1, Relaxed);
    }
}

/// One open socket's slot in its user's count; released on drop (also when the
/// handshake never completes).
struct Permit {
    sockets: Arc<WsSockets>,
    user: UserId,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut m = self.sockets.lock();
        if let Some(n) = m.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.user);
            }
        }
        self.sockets.open.fetch_sub(1, Relaxed);
        drop(m);
    }
}

/// Which cap refused a handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    PerUser,
    Full,
}

/// Why a socket ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    PeerClosed,
    FeedEnded,
    Failed,
    Lagged,
    Slow,
    Dead,
    Oversize,
    Expired,
}

#[derive(Deserialize)]
pub(super) struct WsQuery {
    token: Option<String>,
}

/// `GET /realtime`: authenticates, takes a per-user slot, subscribes, upgrades.
pub(super) async fn realtime_ws(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> std::result::Result<Response, ApiError> {
    let tok = bearer(&headers)
        .map(str::to_string)
        .or(q.token)
        .ok_or_else(|| ApiError::unauthorized("missing token"))?;
    // The same checks as every other route (signature, exp, nbf, iss/aud); `exp` also
    // closes the socket later.
    let c = claims(&s.jwt, &tok)?;
    let user = user_of(&c)?;
    let exp = c.exp;
    // `claims` allows the REST routes a minute of clock skew past `exp`; a socket would
    // be closed at `exp` anyway, so one is not opened for a token already past it.
    if i64::try_from(exp).is_ok_and(|e| e <= chrono::Utc::now().timestamp()) {
        return Err(ApiError::unauthorized("the token has expired"));
    }
    let permit = s.ws.admit(user).map_err(|r| match r {
        Refused::PerUser => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_sockets",
            format!(
                "at most {} realtime sockets per user are open at once",
                s.ws.config.max_per_user
            ),
        ),
        Refused::Full => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_full",
            "this server holds as many realtime sockets as it may; retry later",
        ),
    })?;
    let mut sub = s
        .realtime
        .subscribe(Actor::User(user), Channel::User { user, table: None })?;
    let c = &s.ws.config;
    sub.limit_buffer(c.queue);
    let expires = instant_of(exp);
    Ok(ws
        .read_buffer_size(c.read_buffer)
        // Every send flushes at once: nothing is held back to batch small events.
        .write_buffer_size(0)
        .max_write_buffer_size(c.max_write_buffer)
        .max_message_size(c.max_incoming)
        .max_frame_size(c.max_incoming)
        .on_upgrade(move |socket| serve(socket, sub, permit, expires)))
}

/// The tokio instant of `exp` (seconds since the epoch, wall clock).
fn instant_of(exp: u64) -> Instant {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let exp_ms = i64::try_from(exp).unwrap_or(i64::MAX).saturating_mul(1000);
    let left = u64::try_from(exp_ms.saturating_sub(now_ms)).unwrap_or(0);
    // Past about two years tokio's timer clamps anyway; a year is far enough.
    let left = Duration::from_millis(left).min(YEAR);
    after(Instant::now(), left)
}

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// `now + d` without a panic: a deadline the clock cannot hold is a year away (at
/// worst now, which no validated setting reaches).
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(YEAR))
        .unwrap_or(now)
}

async fn serve(mut socket: WebSocket, mut sub: Subscription, permit: Permit, expires: Instant) {
    let end = run(&mut socket, &mut sub, &permit.sockets.config, expires).await;
    permit.sockets.count(end);
    drop(sub);
    drop(permit);
}

async fn send(socket: &mut WebSocket, msg: Message, c: &WsConfig) -> std::result::Result<(), End> {
    match tokio::time::timeout(c.send_timeout, socket.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Failed),
        Err(_) => Err(End::Slow),
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str, c: &WsConfig) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = send(socket, Message::Close(Some(frame)), c).await;
}

fn too_long(e: axum::Error) -> bool {
    matches!(
        e.into_inner().downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(
            tungstenite::error::CapacityError::MessageTooLong { .. }
        ))
    )
}

async fn run(
    socket: &mut WebSocket,
    sub: &mut Subscription,
    c: &WsConfig,
    expires: Instant,
) -> End {
    let mut next_ping = after(Instant::now(), c.heartbeat);
    let mut pong_due: Option<Instant> = None;
    // One timer for the heartbeat, the pong deadline and the token's expiry.
    let timer = tokio::time::sleep_until(next_ping.min(expires));
    tokio::pin!(timer);
    loop {
        let deadline = pong_due.unwrap_or(next_ping).min(expires);
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            ev = sub.next_event() => {
                let Some(ev) = ev else {
                    close(socket, 1001, "the change feed stopped", c).await;
                    return End::FeedEnded;
                };
                let (body, lagged) = match ev {
                    RealtimeEvent::Change(ch) => (json!({ "type": "change", "change": ch }), false),
                    RealtimeEvent::Resync => (json!({ "type": "resync" }), false),
                    RealtimeEvent::Lagged { missed } => {
                        // The socket closes next: what is still queued is lost too.
                        let missed = missed.saturating_add(sub.queued() as u64);
                        (json!({ "type": "lagged", "missed": missed }), true)
                    }
                };
                if let Err(end) = send(socket, Message::Text(body.to_string().into()), c).await {
                    return end;
                }
                if lagged {
                    close(socket, CLOSE_LAGGED, "lagged: reconnect and re-read", c).await;
                    return End::Lagged;
                }
            }
            msg = socket.recv() => match msg {
                None | Some(Ok(Message::Close(_))) => return End::PeerClosed,
                Some(Err(e)) => {
                    if too_long(e) {
                        close(socket, CLOSE_TOO_BIG, "message too big", c).await;
                        return End::Oversize;
                    }
                    return End::Failed;
                }
                // A pong, or anything else: the peer is alive.
                Some(Ok(_)) => pong_due = None,
            },
            () = &mut timer => {
                let now = Instant::now();
                if now >= expires {
                    close(socket, CLOSE_TOKEN_EXPIRED, "token expired", c).await;
                    return End::Expired;
                }
                if pong_due.is_some_and(|d| now >= d) {
                    return End::Dead;
                }
                if now >= next_ping {
                    if let Err(end) = send(socket, Message::Ping(Default::default()), c).await {
                        return end;
                    }
                    pong_due.get_or_insert(after(now, c.pong_timeout));
                    next_ping = after(now, c.heartbeat);
                }
            }
        }
    }
}
