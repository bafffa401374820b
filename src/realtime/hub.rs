//! [`Hub`]: fan-out of change events to bounded per-subscriber buffers.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use chrono::{DateTime, Utc};
use futures_util::Stream;
use tokio::sync::mpsc;

use super::{ChangeEvent, ChangeTable, Channel, RealtimeEvent};
use crate::domain::UserId;

struct Sub {
    channel: Channel,
    tx: mpsc::Sender<RealtimeEvent>,
    missed: Arc<AtomicU64>,
}

#[derive(Default)]
struct State {
    subs: HashMap<u64, Sub>,
    by_user: HashMap<UserId, Vec<u64>>,
    by_table: HashMap<ChangeTable, Vec<u64>>,
}

/// Routes events to subscriptions by user and by table. Publishing never waits: a full
/// subscriber misses the event and is told ([`RealtimeEvent::Lagged`]).
pub struct Hub {
    state: Mutex<State>,
    buffer: usize,
    next: AtomicU64,
    seq: AtomicI64,
    last_event_micros: AtomicI64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("subscribers", &self.len())
            .field("buffer", &self.buffer)
            .finish()
    }
}

impl Hub {
    /// A hub whose subscribers each buffer at most `buffer` events (at least 1).
    /// 256 is a sensible default.
    pub fn new(buffer: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            buffer: buffer.max(1),
            next: AtomicU64::new(1),
            seq: AtomicI64::new(0),
            last_event_micros: AtomicI64::new(i64::MIN),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new subscription to `channel` (authorisation is the caller's, see
    /// [`Realtime::subscribe`](super::Realtime::subscribe)).
    pub fn subscribe(self: &Arc<Self>, channel: Channel) -> Subscription {
        let (tx, rx) = mpsc::channel(self.buffer);
        let id = self.next.fetch_add(1, Relaxed);
        let missed = Arc::new(AtomicU64::new(0));
        let mut s = self.lock();
        match channel {
            Channel::User { user, .. } => s.by_user.entry(user).or_default().push(id),
            Channel::Table(t) => s.by_table.entry(t).or_default().push(id),
        }
        s.subs.insert(
            id,
            Sub {
                channel,
                tx,
                missed: missed.clone(),
            },
        );
        Subscription {
            rx,
            missed,
            hub: Arc::downgrade(self),
            id,
        }
    }

    fn unsubscribe(&self, id: u64) {
        let mut s = self.lock();
        let Some(sub) = s.subs.remove(&id) else {
            return;
        };
        let list = match sub.channel {
            Channel::User { user, .. } => s.by_user.get_mut(&user),
            Channel::Table(t) => s.by_table.get_mut(&t),
        };
        if let Some(l) = list {
            l.retain(|x| *x != id);
        }
        if let Channel::User { user, .. } = sub.channel
            && s.by_user.get(&user).is_some_and(Vec::is_empty)
        {
            s.by_user.remove(&user);
        }
    }

    /// Delivers `e` to every matching subscription.
    pub fn publish(&self, e: &ChangeEvent) {
        self.last_event_micros
            .store(Utc::now().timestamp_micros(), Relaxed);
        let s = self.lock();
        let ids = s
            .by_user
            .get(&e.user_id)
            .into_iter()
            .flatten()
            .chain(s.by_table.get(&e.table).into_iter().flatten());
        for id in ids {
            let Some(sub) = s.subs.get(id) else { continue };
            if !sub.channel.matches(e) {
                continue;
            }
            if let Err(mpsc::error::TrySendError::Full(_)) =
                sub.tx.try_send(RealtimeEvent::Change(e.clone()))
            {
                sub.missed.fetch_add(1, Relaxed);
            }
        }
    }

    /// Tells every subscription to re-read (after a gap in the feed).
    pub fn resync(&self) {
        let s = self.lock();
        for sub in s.subs.values() {
            if let Err(mpsc::error::TrySendError::Full(_)) = sub.tx.try_send(RealtimeEvent::Resync)
            {
                sub.missed.fetch_add(1, Relaxed);
            }
        }
    }

    /// Live subscriptions.
    pub fn len(&self) -> usize {
        self.lock().subs.len()
    }

    /// Whether nobody is subscribed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the last event was published.
    pub fn last_event(&self) -> Option<DateTime<Utc>> {
        match self.last_event_micros.load(Relaxed) {
            i64::MIN => None,
            t => DateTime::from_timestamp_micros(t),
        }
    }

    /// The next in-process sequence number (for in-memory sources).
    pub(crate) fn next_seq(&self) -> i64 {
        self.seq.fetch_add(1, Relaxed) + 1
    }
}

/// A live subscription: a [`Stream`] of [`RealtimeEvent`]s. Dropping it unsubscribes.
pub struct Subscription {
    rx: mpsc::Receiver<RealtimeEvent>,
    missed: Arc<AtomicU64>,
    hub: Weak<Hub>,
    id: u64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish()
    }
}

impl Subscription {
    /// The next event; `None` when the feed has shut down.
    pub async fn next_event(&mut self) -> Option<RealtimeEvent> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for Subscription {
    type Item = RealtimeEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RealtimeEvent>> {
        let missed = self.missed.swap(0, Relaxed);
        if missed > 0 {
            return Poll::Ready(Some(RealtimeEvent::Lagged { missed }));
        }
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(h) = self.hub.upgrade() {
            h.unsubscribe(self.id);
        }
    }
}
