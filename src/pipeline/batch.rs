//! The batcher: collects requests per agent kind for a short window (or until a batch
//! is full), sends each batch as one `complete_batch` call, and coalesces identical
//! requests in flight into one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::router::Router;
use crate::agent::{AiRequest, AiResponse};
use crate::domain::{AgentType, PriorityLevel};
use crate::error::{Error, Result};
use crate::semantic::Scope;

/// Batching settings. Defaults on each field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// How long the first request of a batch waits for company. Default: 150 ms.
    /// Zero sends every request at once (coalescing still applies).
    pub window: Duration,
    /// Most requests per backend call. Default: 10.
    pub max_batch: usize,
    /// Most requests waiting (queued or in flight); more are refused with
    /// [`Error::Overloaded`] at once. Default: 10,000.
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
}

type Waiter = oneshot::Sender<Result<AiResponse>>;

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
}

/// Groups and coalesces requests in front of a [`Router`].
pub struct Batcher {
    router: Arc<Router>,
    cfg: BatchConfig,
    personal: Arc<dyn Fn(AgentType) -> bool + Send + Sync>,
    state: Mutex<State>,
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
    /// A batcher in front of `router`; `personal(agent)` says whether an agent's
    /// identical requests from different users must stay apart.
    ///
    /// # Errors
    /// `InvalidInput` for a zero `max_batch` or `max_queue`.
    pub fn new(
        router: Arc<Router>,
        cfg: BatchConfig,
        personal: Arc<dyn Fn(AgentType) -> bool + Send + Sync>,
    ) -> Result<Arc<Self>> {
        if cfg.max_batch == 0 || cfg.max_queue == 0 {
            return Err(Error::invalid(
                "batch",
                "max_batch and max_queue must be positive",
            ));
        }
        Ok(Arc::new(Self {
            router,
            cfg,
            personal,
            state: Mutex::new(State::default()),
            logical: AtomicU64::new(0),
            distinct: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Submits one request and waits for its answer. Dropping the returned future
    /// only drops this caller's interest: the batch goes on for the others.
    ///
    /// # Errors
    /// [`Error::Overloaded`] at once when `max_queue` requests are waiting; the
    /// backend's error otherwise.
    pub async fn submit(self: &Arc<Self>, req: AiRequest) -> Result<AiResponse> {
        self.logical.fetch_add(1, Relaxed);
        let key = Key {
            scope: Scope::of(&req, (self.personal)(req.agent)),
            input: req.input.to_string(),
        };
        let (tx, rx) = oneshot::channel();
        let flush_now = {
            let mut s = self.lock();
            if let Some(w) = s.waiters.get_mut(&key) {
                w.push(tx);
                self.coalesced.fetch_add(1, Relaxed);
                None
            } else {
                if s.pending >= self.cfg.max_queue {
                    return Err(Error::Overloaded {
                        what: "AI request queue".into(),
                    });
                }
                s.pending += 1;
                s.waiters.insert(key.clone(), vec![tx]);
                self.distinct.fetch_add(1, Relaxed);
                let agent = req.agent;
                let high = req.priority == PriorityLevel::High;
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
                let at = Instant::now() + self.cfg.window;
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
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(Error::Backend {
                what: "AI batch".into(),
                retryable: true,
                source: "the batch ended without an answer".into(),
            }),
        }
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
            let chunk = chunk.to_vec();
            let me = Arc::clone(self);
            self.calls.fetch_add(1, Relaxed);
            tokio::spawn(async move {
                let (keys, reqs): (Vec<Key>, Vec<AiRequest>) = chunk.into_iter().unzip();
                let results = me.router.call_batch(&reqs).await;
                let mut s = me.lock();
                for (key, result) in keys.into_iter().zip(results) {
                    s.pending -= 1;
                    let Some(waiters) = s.waiters.remove(&key) else {
                        continue;
                    };
                    let mut result = Some(result);
                    let n = waiters.len();
                    for (i, w) in waiters.into_iter().enumerate() {
                        let r = if i + 1 == n {
                            result.take().expect("one result")
                        } else {
                            match result.as_ref().expect("one result") {
                                Ok(v) => Ok(v.clone()),
                                Err(e) => Err(e.duplicate()),
                            }
                        };
                        // A waiter that gave up has dropped its receiver: ignore.
                        let _ = w.send(r);
                    }
                }
            });
        }
    }

    /// The counters.
    pub fn stats(&self) -> BatchStats {
        BatchStats {
            logical_requests: self.logical.load(Relaxed),
            distinct_requests: self.distinct.load(Relaxed),
            backend_calls: self.calls.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
        }
    }
}
