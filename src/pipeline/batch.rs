//! The batcher: collects requests per agent kind for a short window (or until a batch
//! is full), sends each batch as one `complete_batch` call, and coalesces identical
//! requests in flight into one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::AiOutcome;
use super::router::{CatchUnwind, Router};
use super::settle::{Books, Claim};
use crate::agent::AiRequest;
use crate::agent::Scope;
use crate::domain::{AgentType, PriorityLevel};
use crate::error::{Error, Result};

/// Batching settings. Defaults on each field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct BatchConfig {
    /// How long the first request of a batch waits for company. Default: 150 ms.
    /// Zero sends every request at once (coalescing still applies).
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub window: Duration,
    /// Most requests per backend call. Default: 10.
    pub max_batch: usize,
    /// Most distinct requests waiting (queued or in flight); more are refused with
    /// [`Error::Overloaded`] at once. A request identical to one already waiting
    /// joins it without counting here. Default: 10,000.
    pub max_queue: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_millis(150),
            max_batch: 10,
            max_queue: 10_000,
        }
    }
}

impl BatchConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// `InvalidInput` naming the field for a zero `max_batch` or `max_queue`, or a
    /// `window` past [`MAX_DURATION`](super::MAX_DURATION).
    pub fn validate(&self) -> Result<()> {
        if self.max_batch == 0 {
            return Err(Error::invalid("batch.max_batch", "must be at least 1"));
        }
        if self.max_queue == 0 {
            return Err(Error::invalid("batch.max_queue", "must be at least 1"));
        }
        super::check_duration("batch.window", self.window)
    }
}

/// The batcher's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Requests submitted.
    pub logical_requests: u64,
    /// Distinct requests sent to backends.
    pub distinct_requests: u64,
    /// Backend calls made (a batch counts once).
    pub backend_calls: u64,
    /// Requests answered by joining an identical one already waiting or in flight.
    pub coalesced: u64,
    /// Distinct requests queued or in flight now (not yet settled).
    pub pending: u64,
}

/// One caller waiting on a backend call: its claim (settled by the call's task) and
/// where its answer goes (nobody may be listening any more).
type Waiter = (Claim, oneshot::Sender<Result<AiOutcome>>);

/// The answer a caller awaits from [`Batcher::enqueue`].
pub(crate) type Ticket = oneshot::Receiver<Result<AiOutcome>>;

/// Identical requests: same scope (which holds the user for personal agents) and
/// the same input.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    scope: Scope,
    input: String,
}

#[derive(Default)]
struct Queue {
    reqs: Vec<(Key, AiRequest)>,
    /// Bumped at each flush, so a stale window timer flushes nothing.
    generation: u64,
}

#[derive(Default)]
struct State {
    queues: HashMap<AgentType, Queue>,
    /// Waiters of every request queued or in flight, by key.
    waiters: HashMap<Key, Vec<Waiter>>,
    pending: usize,
    /// Set by [`Batcher::close`]: nothing more is taken.
    closed: bool,
}

/// Groups and coalesces requests in front of a [`Router`]; the task that owns each
/// backend call settles it (see `settle.rs`).
pub(crate) struct Batcher {
    router: Arc<Router>,
    books: Arc<Books>,
    cfg: BatchConfig,
    personal: Arc<dyn Fn(AgentType) -> bool + Send + Sync>,
    state: Mutex<State>,
    idle: tokio::sync::Notify,
    logical: AtomicU64,
    distinct: AtomicU64,
    calls: AtomicU64,
    coalesced: AtomicU64,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("cfg", &self.cfg)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Batcher {
    /// A batcher in front of `router`, settling through `books`; `personal(agent)`
    /// says whether an agent's identical requests from different users must stay apart.
    ///
    /// # Errors
    /// `InvalidInput` naming the field ([`BatchConfig::validate`]).
    pub(crate) fn new(
        router: Arc<Router>,
        books: Arc<Books>,
        cfg: BatchConfig,
        personal: Arc<dyn Fn(AgentType) -> bool + Send + Sync>,
    ) -> Result<Arc<Self>> {
        cfg.validate()?;
        Ok(Arc::new(Self {
            router,
            books,
            cfg,
            personal,
            state: Mutex::new(State::default()),
            idle: tokio::sync::Notify::new(),
            logical: AtomicU64::new(0),
            distinct: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one claim (or joins an identical one waiting or in flight) and returns
    /// where its answer will arrive. From here on the claim belongs to the batcher:
    /// the backend call is made, settled and recorded whether or not the caller still
    /// waits for the answer.
    ///
    /// # Errors
    /// [`Error::Overloaded`] at once when `max_queue` requests are waiting or the
    /// batcher is closed (the claim is dropped, so its reservation is released).
    pub(crate) fn enqueue(self: &Arc<Self>, claim: Claim) -> Result<Ticket> {
        self.logical.fetch_add(1, Relaxed);
        let key = Key {
            scope: Scope::of(&claim.req, (self.personal)(claim.req.agent)),
            input: claim.req.input.to_string(),
        };
        let (tx, rx) = oneshot::channel();
        let flush_now = {
            let mut s = self.lock();
            if s.closed {
                return Err(shut_down());
            }
            if let Some(w) = s.waiters.get_mut(&key) {
                let agent = claim.req.agent;
                let high = claim.req.priority == PriorityLevel::High;
                w.push((claim, tx));
                self.coalesced.fetch_add(1, Relaxed);
                // A high-priority request joining one still queued is not held back
                // by the window: the queue leaves now.
                let queued = high
                    && s.queues
                        .get(&agent)
                        .is_some_and(|q| q.reqs.iter().any(|(k, _)| *k == key));
                queued.then_some((agent, None))
            } else {
                if s.pending >= self.cfg.max_queue {
                    return Err(Error::Overloaded {
                        what: "AI request queue".into(),
                    });
                }
                s.pending += 1;
                let agent = claim.req.agent;
                let high = claim.req.priority == PriorityLevel::High;
                let req = claim.req.clone();
                s.waiters.insert(key.clone(), vec![(claim, tx)]);
                self.distinct.fetch_add(1, Relaxed);
                let q = s.queues.entry(agent).or_default();
                q.reqs.push((key, req));
                if high || q.reqs.len() >= self.cfg.max_batch || self.cfg.window.is_zero() {
                    Some((agent, None))
                } else if q.reqs.len() == 1 {
                    Some((agent, Some(q.generation)))
                } else {
                    None
                }
            }
        };
        match flush_now {
            Some((agent, None)) => self.flush(agent),
            Some((agent, Some(generation))) => {
                // The first request of a batch starts the window.
                let me = Arc::clone(self);
                // `new` keeps the window within MAX_DURATION; saturate all the same.
                let now = Instant::now();
                let at = now.checked_add(self.cfg.window).unwrap_or(now);
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    let current = me.lock().queues.get(&agent).map(|q| q.generation);
                    if current == Some(generation) {
                        me.flush(agent);
                    }
                });
            }
            None => {}
        }
        Ok(rx)
    }

    /// Sends everything queued for `agent`, in batches of at most `max_batch`.
    fn flush(self: &Arc<Self>, agent: AgentType) {
        let items = {
            let mut s = self.lock();
            let Some(q) = s.queues.get_mut(&agent) else {
                return;
            };
            q.generation += 1;
            std::mem::take(&mut q.reqs)
        };
        for chunk in items.chunks(self.cfg.max_batch) {
            let (keys, reqs): (Vec<Key>, Vec<AiRequest>) = chunk.iter().cloned().unzip();
            let me = Arc::clone(self);
            self.calls.fetch_add(1, Relaxed);
            tokio::spawn(async move {
                let n = reqs.len();
                // Counts the call out of `pending` once settled — or if this task ends
                // any other way — so `pending == 0` means every call's books are kept.
                let done = Settled { batcher: &me, n };
                // The router catches a backend's panic per call and fails only the
                // members it hit; this is the last guard (a bug in the router itself),
                // so the waiters get an error instead of waiting behind a dead entry.
                let results = match CatchUnwind::new(me.router.call_batch(&reqs)).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::error!("AI routing panicked");
                        (0..n).map(|_| Err(Router::panicked())).collect()
                    }
                };
                let groups: Vec<Vec<Waiter>> = {
                    let mut s = me.lock();
                    keys.iter()
                        .map(|key| s.waiters.remove(key).unwrap_or_default())
                        .collect()
                };
                for (waiters, result) in groups.into_iter().zip(results) {
                    // A caller that gave up has dropped its receiver: its share is
                    // settled and recorded all the same.
                    me.books
                        .settle(waiters, result, |tx, answer| {
                            let _ = tx.send(answer);
                        })
                        .await;
                }
                drop(done);
            });
        }
    }

    /// The counters.
    pub(crate) fn stats(&self) -> BatchStats {
        BatchStats {
            logical_requests: self.logical.load(Relaxed),
            distinct_requests: self.distinct.load(Relaxed),
            backend_calls: self.calls.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            pending: self.lock().pending as u64,
        }
    }

    /// Takes no more requests: [`Batcher::enqueue`] refuses them from now on, so once
    /// [`Batcher::idle`] returns nothing more is settled.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
    }

    /// Waits until every queued or in-flight call has been settled.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().pending == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// The refusal of a request that comes after `shutdown()`.
pub(crate) fn shut_down() -> Error {
    Error::Overloaded {
        what: "AI pipeline (shut down)".into(),
    }
}

/// Takes a settled call's requests out of `pending` when dropped.
struct Settled<'a> {
    batcher: &'a Batcher,
    n: usize,
}

impl Drop for Settled<'_> {
    fn drop(&mut self) {
        let idle = {
            let mut s = self.batcher.lock();
            s.pending -= self.n;
            s.pending == 0
        };
        if idle {
            self.batcher.idle.notify_waiters();
        }
    }
}
