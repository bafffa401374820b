//! [`Hub`]: fan-out of change events to bounded per-subscriber buffers.
//!
//! A subscriber's buffer is a `VecDeque` that allocates only when an event is waiting
//! and gives its memory back once drained, so an idle subscription costs a few dozen
//! bytes, not a buffer sized for a burst (100,000 idle WebSockets each hold one).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use chrono::{DateTime, Utc};
use futures_util::Stream;

use super::{ChangeEvent, ChangeTable, Channel, RealtimeEvent};
use crate::domain::UserId;

/// A drained queue keeps at most this many slots of capacity.
const KEEP_CAPACITY: usize = 4;

/// One subscriber's buffer, shared by the hub (producer) and the [`Subscription`].
struct Slot {
    inner: Mutex<SlotInner>,
}

struct SlotInner {
    queue: VecDeque<RealtimeEvent>,
    /// At most this many events wait; more are counted in `missed`.
    cap: usize,
    missed: u64,
    waker: Option<Waker>,
    /// The hub is gone: no more events will come.
    closed: bool,
}

impl Slot {
    fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(SlotInner {
                queue: VecDeque::new(),
                cap,
                missed: 0,
                waker: None,
                closed: false,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `e`, or counts it missed when the buffer is full. Never waits.
    fn push(&self, e: RealtimeEvent) {
        let waker = {
            let mut s = self.lock();
            if s.queue.len() >= s.cap {
                s.missed += 1;
            } else {
                s.queue.push_back(e);
            }
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn close(&self) {
        let waker = {
            let mut s = self.lock();
            s.closed = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

struct Sub {
    channel: Channel,
    slot: Arc<Slot>,
}

impl Drop for Sub {
    fn drop(&mut self) {
        // Dropped by the hub (the hub itself is gone) or by unsubscribe (then nobody
        // polls the slot any more): either way the stream has ended.
        self.slot.close();
    }
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

    /// A new subscription to `channel`. Authorisation is the caller's: the feeds
    /// check the actor ([`Channel`]'s rules) before they subscribe.
    pub fn subscribe(self: &Arc<Self>, channel: Channel) -> Subscription {
        let slot = Slot::new(self.buffer);
        let id = self.next.fetch_add(1, Relaxed);
        let mut s = self.lock();
        match channel {
            Channel::User { user, .. } => s.by_user.entry(user).or_default().push(id),
            Channel::Table(t) => s.by_table.entry(t).or_default().push(id),
        }
        s.subs.insert(
            id,
            Sub {
                channel,
                slot: slot.clone(),
            },
        );
        Subscription {
            slot,
            hub: Arc::downgrade(self),
            id,
        }
    }

    fn unsubscribe(&self, id: u64) {
        let mut s = self.lock();
        let Some(sub) = s.subs.remove(&id) else {
            return;
        };
        let channel = sub.channel;
        drop(sub);
        let list = match channel {
            Channel::User { user, .. } => s.by_user.get_mut(&user),
            Channel::Table(t) => s.by_table.get_mut(&t),
        };
        if let Some(l) = list {
            l.retain(|x| *x != id);
        }
        match channel {
            Channel::User { user, .. } if s.by_user.get(&user).is_some_and(Vec::is_empty) => {
                s.by_user.remove(&user);
            }
            Channel::Table(t) if s.by_table.get(&t).is_some_and(Vec::is_empty) => {
                s.by_table.remove(&t);
            }
            _ => {}
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
            sub.slot.push(RealtimeEvent::Change(e.clone()));
        }
    }

    /// Tells every subscription to re-read (after a gap in the feed).
    pub fn resync(&self) {
        let s = self.lock();
        for sub in s.subs.values() {
            sub.slot.push(RealtimeEvent::Resync);
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
    slot: Arc<Slot>,
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

    /// Events queued for this subscription and not yet taken (a consumer that stops
    /// early can tell how many it leaves behind).
    pub fn queued(&self) -> usize {
        self.slot.lock().queue.len()
    }

    /// Lowers this subscription's buffer to `events` (at least 1) from the hub's size;
    /// never raises it. A consumer that forwards events over a network (a WebSocket)
    /// keeps its own, smaller bound this way.
    pub fn limit_buffer(&mut self, events: usize) {
        let mut s = self.slot.lock();
        s.cap = s.cap.min(events.max(1));
    }
}

impl Stream for Subscription {
    type Item = RealtimeEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RealtimeEvent>> {
        let mut s = self.slot.lock();
        if s.missed > 0 {
            let missed = std::mem::take(&mut s.missed);
            return Poll::Ready(Some(RealtimeEvent::Lagged { missed }));
        }
        if let Some(e) = s.queue.pop_front() {
            if s.queue.is_empty() && s.queue.capacity() > KEEP_CAPACITY {
                // Give a burst's memory back: idle subscriptions stay small.
                s.queue = VecDeque::new();
            }
            return Poll::Ready(Some(e));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(h) = self.hub.upgrade() {
            h.unsubscribe(self.id);
        }
    }
}
