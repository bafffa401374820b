//! What the router knows of each backend and how it picks one: a peak-EWMA latency and
//! a decayed error share per backend, its calls in flight, its price and its circuit
//! breaker; power of two choices over the cost they make; and the bookkeeping of one
//! call (the in-flight slot, the breaker's probe, the averages once it ends).

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::Router;
use crate::agent::{AiAgent, Price};
use crate::domain::AgentType;
use crate::metrics::MetricEvent;
use crate::pipeline::breaker::{Breaker, BreakerConfig, BreakerState};

/// Peak-EWMA latency and the error share, decayed the same way.
#[derive(Debug)]
pub(super) struct Ewma {
    /// Latency estimate in seconds; a new backend starts optimistic.
    value: f64,
    at: Instant,
    /// Recent error share, decayed the same way.
    errors: f64,
}

impl Ewma {
    fn new(now: Instant) -> Self {
        Self {
            value: 0.0,
            at: now,
            errors: 0.0,
        }
    }

    /// The weight the estimates kept from their last update until `now`.
    fn decay(&self, now: Instant, decay_time: f64) -> f64 {
        (-(now.duration_since(self.at).as_secs_f64()) / decay_time).exp()
    }

    /// The latency estimate (seconds) and error share at `now`, decayed towards zero
    /// since the last call ended (so an idle backend is tried again).
    pub(super) fn at(&self, now: Instant, decay_time: f64) -> (f64, f64) {
        let d = self.decay(now, decay_time);
        (self.value * d, self.errors * d)
    }

    /// Takes one call's round trip (seconds) and outcome.
    fn observe(&mut self, rtt: f64, ok: bool, now: Instant, decay_time: f64) {
        let decay = self.decay(now, decay_time);
        // Peak EWMA: jump up to a slow sample at once, decay towards fast ones.
        self.value = if rtt > self.value {
            rtt
        } else {
            self.value * decay + rtt * (1.0 - decay)
        };
        self.errors = self.errors * decay + if ok { 0.0 } else { 1.0 - decay };
        self.at = now;
    }
}

/// One backend and what the router knows of it.
pub(super) struct Backend {
    pub(super) agent: Arc<dyn AiAgent>,
    pub(super) price: Price,
    pub(super) in_flight: AtomicUsize,
    pub(super) ewma: Mutex<Ewma>,
    pub(super) breaker: Mutex<Breaker>,
    pub(super) calls: AtomicU64,
}

impl Backend {
    pub(super) fn new(
        agent: Arc<dyn AiAgent>,
        price: Price,
        breaker: BreakerConfig,
        now: Instant,
    ) -> Self {
        Self {
            agent,
            price,
            in_flight: AtomicUsize::new(0),
            ewma: Mutex::new(Ewma::new(now)),
            breaker: Mutex::new(Breaker::new(breaker)),
            calls: AtomicU64::new(0),
        }
    }

    pub(super) fn ewma(&self) -> std::sync::MutexGuard<'_, Ewma> {
        self.ewma.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Releases the in-flight slot and records the outcome when a call ends (or is dropped).
/// `R` is how the call holds its router: borrowed for a call awaited in place, an
/// `Arc` for a stream that outlives the attempt that opened it.
pub(super) struct Call<R: Deref<Target = Router>> {
    router: R,
    i: usize,
    start: Instant,
    done: bool,
}

impl<R: Deref<Target = Router>> Drop for Call<R> {
    fn drop(&mut self) {
        self.router.backends[self.i].in_flight.fetch_sub(1, Relaxed);
        if !self.done {
            // Abandoned mid-call: not the backend's fault; give the probe back.
            let change = self.router.backends[self.i]
                .breaker()
                .release_probe(Instant::now());
            self.router.emit(self.i, change);
        }
    }
}

impl Call<Arc<Router>> {
    /// Ends this call with its outcome (see [`Router::finish`]).
    pub(super) fn end(self, ok: bool) {
        let router = Arc::clone(&self.router);
        router.finish(self, ok);
    }
}

impl Router {
    fn random(&self) -> u64 {
        // xorshift64* on a shared atomic: cheap and good enough for picking two.
        let mut x = self.rng.load(Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Relaxed);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A seed for the backoff's jitter.
    pub(super) fn jitter_seed(&self) -> u64 {
        self.random()
    }

    /// The load- and performance-weighted cost of sending one more call to `i`:
    /// latency × (calls in flight + 1) × (1 + 10 × error share) × a price factor
    /// (0.5 plus half the price relative to $0.08 per 1K tokens, at least 0.505).
    fn score(&self, i: usize, now: Instant) -> f64 {
        let b = &self.backends[i];
        let (latency, errors) = b.ewma().at(now, self.cfg.ewma_decay.as_secs_f64());
        let latency = latency.max(0.001);
        let price = (b.price.input_micros_per_1k + b.price.output_micros_per_1k) as f64 / 80_000.0;
        latency
            * (b.in_flight.load(Relaxed) + 1) as f64
            * (1.0 + 10.0 * errors)
            * (0.5 + 0.5 * price.max(0.01))
    }

    /// Picks a backend for `agent` by power of two choices among those whose breaker
    /// would let a call through, never one in `avoid` (it panicked on this request),
    /// and avoiding `tried` when others remain.
    pub(crate) fn pick(&self, agent: AgentType, tried: &[usize], avoid: &[usize]) -> Option<usize> {
        let now = Instant::now();
        let eligible: Vec<usize> = (0..self.backends.len())
            .filter(|i| !avoid.contains(i))
            .filter(|&i| self.backends[i].agent.serves(agent))
            .filter(|&i| self.backends[i].breaker().available(now))
            .collect();
        let fresh: Vec<usize> = eligible
            .iter()
            .copied()
            .filter(|i| !tried.contains(i))
            .collect();
        let pool = if fresh.is_empty() { &eligible } else { &fresh };
        match pool.len() {
            0 => None,
            1 => Some(pool[0]),
            n => {
                let a = (self.random() % n as u64) as usize;
                let mut b = (self.random() % (n as u64 - 1)) as usize;
                if b >= a {
                    b += 1;
                }
                let (a, b) = (pool[a], pool[b]);
                Some(if self.score(a, now) <= self.score(b, now) {
                    a
                } else {
                    b
                })
            }
        }
    }

    /// Takes backend `i`'s breaker (its probe, when half open) and an in-flight slot,
    /// or `None` when the breaker refuses the call.
    pub(super) fn begin(&self, i: usize) -> Option<Call<&Router>> {
        Self::lease(self, i)
    }

    /// [`Router::begin`] through any handle on the router (an `Arc` for a call that
    /// outlives the caller's borrow).
    pub(super) fn lease<R: Deref<Target = Router>>(router: R, i: usize) -> Option<Call<R>> {
        let now = Instant::now();
        let (ok, change) = router.backends[i].breaker().try_acquire(now);
        router.emit(i, change);
        if !ok {
            return None;
        }
        router.backends[i].in_flight.fetch_add(1, Relaxed);
        router.backends[i].calls.fetch_add(1, Relaxed);
        Some(Call {
            router,
            i,
            start: now,
            done: false,
        })
    }

    pub(super) fn emit(&self, i: usize, change: Option<BreakerState>) {
        if let Some(s) = change {
            self.metrics.record(&MetricEvent::Breaker {
                backend: self.backends[i].agent.name().to_string(),
                state: s.as_str(),
            });
        }
    }

    /// Ends `call`: its round trip and outcome go into the backend's averages and its
    /// breaker.
    pub(super) fn finish<R: Deref<Target = Router>>(&self, mut call: Call<R>, ok: bool) {
        call.done = true;
        let now = Instant::now();
        let i = call.i;
        let rtt = now.duration_since(call.start).as_secs_f64();
        self.backends[i]
            .ewma()
            .observe(rtt, ok, now, self.cfg.ewma_decay.as_secs_f64());
        let change = {
            let mut b = self.backends[i].breaker();
            if ok {
                b.on_success(now)
            } else {
                b.on_failure(now)
            }
        };
        self.emit(i, change);
    }
}
