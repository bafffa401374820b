//! Performance-based routing across backends: power of two choices over a cost that
//! combines peak-EWMA latency, in-flight calls, recent errors and price; a circuit
//! breaker per backend; retries of retryable errors on another backend, with backoff,
//! within an overall deadline.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::time::Instant;

use super::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::agent::Price;
use crate::agent::{AiAgent, AiRequest, AiResponse};
use crate::domain::AgentType;
use crate::error::{Error, Result};
use crate::metrics::{MetricEvent, MetricsSink};

/// Routing settings. Defaults on each field.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RouterConfig {
    /// Most attempts per request (the first included). Default: 3.
    pub max_attempts: u32,
    /// Everything, retries included, must finish within this. Default: 30 s.
    pub deadline: Duration,
    /// First backoff before a retry; doubles each time. Default: 100 ms.
    pub backoff_min: Duration,
    /// Longest backoff. Default: 2 s.
    pub backoff_max: Duration,
    /// Decay time of the latency average. Default: 10 s.
    pub ewma_decay: Duration,
    /// The circuit breakers' settings.
    pub breaker: BreakerConfig,
}

impl RouterConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// `InvalidInput` naming the field: zero attempts, a zero deadline or latency
    /// decay (the decay divides), a zero backoff or one whose minimum passes its
    /// maximum, a duration past [`MAX_DURATION`](super::MAX_DURATION), or an invalid
    /// [`BreakerConfig`].
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::invalid("routing.max_attempts", "must be at least 1"));
        }
        if self.deadline.is_zero() {
            return Err(Error::invalid("routing.deadline", "must be positive"));
        }
        if self.ewma_decay.is_zero() {
            return Err(Error::invalid("routing.ewma_decay", "must be positive"));
        }
        if self.backoff_min.is_zero() {
            return Err(Error::invalid("routing.backoff_min", "must be positive"));
        }
        if self.backoff_min > self.backoff_max {
            return Err(Error::invalid(
                "routing.backoff_max",
                format!(
                    "{:?}, must not be below backoff_min ({:?})",
                    self.backoff_max, self.backoff_min
                ),
            ));
        }
        for (field, d) in [
            ("routing.deadline", self.deadline),
            ("routing.backoff_min", self.backoff_min),
            ("routing.backoff_max", self.backoff_max),
            ("routing.ewma_decay", self.ewma_decay),
        ] {
            super::check_duration(field, d)?;
        }
        self.breaker.validate()
    }
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            deadline: Duration::from_secs(30),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            ewma_decay: Duration::from_secs(10),
            breaker: BreakerConfig::default(),
        }
    }
}

#[derive(Debug)]
struct Ewma {
    /// Latency estimate in seconds; a new backend starts optimistic.
    value: f64,
    at: Instant,
    /// Recent error share, decayed the same way.
    errors: f64,
}

struct Backend {
    agent: Arc<dyn AiAgent>,
    price: Price,
    in_flight: AtomicUsize,
    ewma: Mutex<Ewma>,
    breaker: Mutex<Breaker>,
    calls: AtomicU64,
}

/// A backend's state, for dashboards and tests.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendStatus {
    /// Its name.
    pub name: String,
    /// Its breaker's state.
    pub breaker: BreakerState,
    /// Times its breaker opened.
    pub trips: u64,
    /// Calls sent to it (batches count once).
    pub calls: u64,
    /// Peak-EWMA latency estimate.
    pub latency: Duration,
    /// Decayed error share, 0–1.
    pub error_rate: f64,
    /// Calls in flight.
    pub in_flight: usize,
}

/// Picks a backend per call and retries elsewhere on retryable failure.
pub struct Router {
    backends: Vec<Backend>,
    cfg: RouterConfig,
    metrics: Arc<dyn MetricsSink>,
    rng: AtomicU64,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("backends", &self.status())
            .finish()
    }
}

/// A future that turns a panic while polling `F` into an `Err` (what
/// `futures::FutureExt::catch_unwind` does; futures-util is built without `std` here).
pub(crate) struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<F> CatchUnwind<F> {
    pub(crate) fn new(f: F) -> Self {
        Self(Box::pin(f))
    }
}

impl<F: std::future::Future> std::future::Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let f = self.get_mut().0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Err(p) => std::task::Poll::Ready(Err(p)),
        }
    }
}

/// Releases the in-flight slot and records the outcome when a call ends (or is dropped).
struct Call<'a> {
    router: &'a Router,
    i: usize,
    start: Instant,
    done: bool,
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.router.backends[self.i].in_flight.fetch_sub(1, Relaxed);
        if !self.done {
            // Abandoned mid-call: not the backend's fault; give the probe back.
            let change = self.router.backends[self.i]
                .breaker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .release_probe(Instant::now());
            self.router.emit(self.i, change);
        }
    }
}

impl Router {
    /// A router over `backends` (each with its price).
    ///
    /// # Errors
    /// `InvalidInput` when there is no backend, two share a name, or `max_attempts` is 0.
    pub fn new(
        backends: Vec<(Arc<dyn AiAgent>, Price)>,
        cfg: RouterConfig,
        metrics: Arc<dyn MetricsSink>,
    ) -> Result<Self> {
        if backends.is_empty() {
            return Err(Error::invalid("backends", "at least one is needed"));
        }
        let mut names: Vec<&str> = backends.iter().map(|b| b.0.name()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::invalid("backends", "names must be unique"));
        }
        cfg.validate()?;
        let now = Instant::now();
        Ok(Self {
            backends: backends
                .into_iter()
                .map(|(agent, price)| Backend {
                    agent,
                    price,
                    in_flight: AtomicUsize::new(0),
                    ewma: Mutex::new(Ewma {
                        value: 0.0,
                        at: now,
                        errors: 0.0,
                    }),
                    breaker: Mutex::new(Breaker::new(cfg.breaker)),
                    calls: AtomicU64::new(0),
                })
                .collect(),
            cfg,
            metrics,
            rng: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
        })
    }

    fn random(&self) -> u64 {
        // xorshift64* on a shared atomic: cheap and good enough for picking two.
        let mut x = self.rng.load(Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Relaxed);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The load- and performance-weighted cost of sending one more call to `i`.
    fn score(&self, i: usize, now: Instant) -> f64 {
        let b = &self.backends[i];
        let e = b.ewma.lock().unwrap_or_else(|e| e.into_inner());
        let decay =
            (-(now.duration_since(e.at).as_secs_f64()) / self.cfg.ewma_decay.as_secs_f64()).exp();
        let latency = (e.value * decay).max(0.001);
        let errors = e.errors * decay;
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
            .filter(|&i| {
                self.backends[i]
                    .breaker
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .available(now)
            })
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

    /// The error a request gets when the backend's code panicked while answering it:
    /// a backend failure (it counts against the backend's breaker and error rate),
    /// retried on another backend, never on the one that panicked.
    pub(crate) fn panicked() -> Error {
        Error::Backend {
            what: "AI backend".into(),
            retryable: true,
            source: "the backend call panicked".into(),
        }
    }

    fn begin(&self, i: usize) -> Option<Call<'_>> {
        let now = Instant::now();
        let (ok, change) = self.backends[i]
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_acquire(now);
        self.emit(i, change);
        if !ok {
            return None;
        }
        self.backends[i].in_flight.fetch_add(1, Relaxed);
        self.backends[i].calls.fetch_add(1, Relaxed);
        Some(Call {
            router: self,
            i,
            start: now,
            done: false,
        })
    }

    fn emit(&self, i: usize, change: Option<BreakerState>) {
        if let Some(s) = change {
            self.metrics.record(&MetricEvent::Breaker {
                backend: self.backends[i].agent.name().to_string(),
                state: s.as_str(),
            });
        }
    }

    fn finish(&self, mut call: Call<'_>, ok: bool) {
        call.done = true;
        let now = Instant::now();
        let i = call.i;
        let rtt = now.duration_since(call.start).as_secs_f64();
        {
            let mut e = self.backends[i]
                .ewma
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let decay = (-(now.duration_since(e.at).as_secs_f64())
                / self.cfg.ewma_decay.as_secs_f64())
            .exp();
            // Peak EWMA: jump up to a slow sample at once, decay towards fast ones.
            e.value = if rtt > e.value {
                rtt
            } else {
                e.value * decay + rtt * (1.0 - decay)
            };
            e.errors = e.errors * decay + if ok { 0.0 } else { 1.0 - decay };
            e.at = now;
        }
        let change = {
            let mut b = self.backends[i]
                .breaker
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if ok {
                b.on_success(now)
            } else {
                b.on_failure(now)
            }
        };
        self.emit(i, change);
    }

    /// Sends one request, retrying retryable failures on other backends with backoff,
    /// within the deadline.
    ///
    /// A backend that panics fails this attempt as a retryable backend failure (its
    /// breaker and error rate count it); the request is retried on another backend,
    /// never on that one.
    ///
    /// # Errors
    /// [`Error::CircuitOpen`] at once when no backend for the agent would take a call;
    /// the last backend error when attempts or time run out (a backend's `Retry-After`
    /// that ends past the deadline ends the call with that `RateLimited` error at once);
    /// [`Error::Timeout`] when the deadline passes.
    pub async fn call(&self, req: &AiRequest) -> Result<AiResponse> {
        self.call_until(req, self.deadline_from_now(), Vec::new(), Vec::new())
            .await
    }

    /// Now plus the configured deadline; `validate` keeps the deadline within
    /// [`MAX_DURATION`](super::MAX_DURATION), but the clock is clamped all the same rather than overflowing.
    fn deadline_from_now(&self) -> Instant {
        let now = Instant::now();
        now.checked_add(self.cfg.deadline)
            .or_else(|| now.checked_add(super::MAX_DURATION))
            .unwrap_or(now)
    }

    /// One attempt on backend `i`: its answer, or its error, with a panic of the
    /// backend's code turned into [`Router::panicked`] (`true` in the second field).
    async fn attempt(
        &self,
        i: usize,
        req: &AiRequest,
        deadline: Instant,
    ) -> (Result<AiResponse>, bool) {
        let call = CatchUnwind::new(self.backends[i].agent.complete(req));
        match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(r)) => (r, false),
            Ok(Err(_)) => {
                tracing::error!(
                    backend = self.backends[i].agent.name(),
                    "AI backend panicked"
                );
                (Err(Self::panicked()), true)
            }
            Err(_) => (
                Err(Error::Timeout {
                    what: "AI call".into(),
                }),
                false,
            ),
        }
    }

    /// [`Router::call`] within `deadline`, avoiding the backends in `tried` first and
    /// those in `avoid` (they panicked on this request) always.
    async fn call_until(
        &self,
        req: &AiRequest,
        deadline: Instant,
        mut tried: Vec<usize>,
        mut avoid: Vec<usize>,
    ) -> Result<AiResponse> {
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(self.cfg.backoff_min)
            .with_max_delay(self.cfg.backoff_max)
            .with_jitter()
            .with_jitter_seed(self.random())
            .without_max_times()
            .build();
        let mut last: Option<Error> = None;
        for attempt in 0..self.cfg.max_attempts {
            let Some(i) = self.pick(req.agent, &tried, &avoid) else {
                return Err(last.unwrap_or(Error::CircuitOpen {
                    backend: "all".into(),
                }));
            };
            tried.push(i);
            let Some(call) = self.begin(i) else { continue };
            let (result, panicked) = self.attempt(i, req, deadline).await;
            match result {
                Ok(mut resp) => {
                    self.finish(call, true);
                    resp.backend = self.backends[i].agent.name().to_string();
                    return Ok(resp);
                }
                Err(e) => {
                    // The caller's mistakes are not the backend's failures.
                    let backend_fault = e.is_retryable() || matches!(e, Error::Backend { .. });
                    self.finish(call, !backend_fault);
                    if panicked {
                        avoid.push(i);
                    }
                    // After a panic, give up at once when no other backend is left.
                    if !e.is_retryable()
                        || attempt + 1 == self.cfg.max_attempts
                        || (panicked && self.pick(req.agent, &tried, &avoid).is_none())
                    {
                        return Err(e);
                    }
                    let wait = backoff.next().unwrap_or(self.cfg.backoff_max);
                    // A backend's Retry-After is outside input: an absurd one ends the
                    // call with its error instead of overflowing the clock.
                    let wait = e.retry_after().map_or(wait, |r| r.max(wait));
                    if Instant::now()
                        .checked_add(wait)
                        .is_none_or(|at| at >= deadline)
                    {
                        return Err(e);
                    }
                    tokio::time::sleep(wait).await;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(Error::CircuitOpen {
            backend: "all".into(),
        }))
    }

    /// Sends a batch (all for the same agent) to one backend; requests that fail
    /// retryably there are retried concurrently, elsewhere first, as [`Router::call`]
    /// does — all within the one deadline the batch started with. A panic of the
    /// backend's `complete_batch` fails every member retryably (never back to that
    /// backend); a panic while retrying one member fails that member alone.
    pub async fn call_batch(&self, reqs: &[AiRequest]) -> Vec<Result<AiResponse>> {
        let Some(first) = reqs.first() else {
            return Vec::new();
        };
        let deadline = self.deadline_from_now();
        if reqs.len() == 1 {
            return vec![self.call(first).await];
        }
        let Some(i) = self.pick(first.agent, &[], &[]) else {
            return reqs
                .iter()
                .map(|_| {
                    Err(Error::CircuitOpen {
                        backend: "all".into(),
                    })
                })
                .collect();
        };
        let Some(call) = self.begin(i) else {
            return futures_util::future::join_all(
                reqs.iter()
                    .map(|r| self.call_until(r, deadline, Vec::new(), Vec::new())),
            )
            .await;
        };
        let mut panicked = false;
        let batch = CatchUnwind::new(self.backends[i].agent.complete_batch(reqs));
        let results = match tokio::time::timeout_at(deadline, batch).await {
            Ok(Ok(r)) if r.len() == reqs.len() => r,
            Ok(Ok(_)) => reqs
                .iter()
                .map(|_| {
                    Err(Error::Backend {
                        what: "AI batch".into(),
                        retryable: true,
                        source: "wrong number of results".into(),
                    })
                })
                .collect(),
            Ok(Err(_)) => {
                tracing::error!(
                    backend = self.backends[i].agent.name(),
                    "AI backend panicked"
                );
                panicked = true;
                reqs.iter().map(|_| Err(Self::panicked())).collect()
            }
            Err(_) => reqs
                .iter()
                .map(|_| {
                    Err(Error::Timeout {
                        what: "AI batch".into(),
                    })
                })
                .collect(),
        };
        // The backend worked if any request of the batch got an answer.
        self.finish(call, results.iter().any(|r| r.is_ok()));
        let name = self.backends[i].agent.name();
        let avoid = if panicked { vec![i] } else { Vec::new() };
        futures_util::future::join_all(reqs.iter().zip(results).map(|(r, res)| {
            let avoid = avoid.clone();
            async move {
                match res {
                    Ok(mut resp) => {
                        resp.backend = name.to_string();
                        Ok(resp)
                    }
                    Err(e) if e.is_retryable() && Instant::now() < deadline => {
                        match self.call_until(r, deadline, vec![i], avoid).await {
                            // Nowhere else to go after a panic: the panic is the answer.
                            Err(Error::CircuitOpen { .. }) if panicked => Err(e),
                            other => other,
                        }
                    }
                    Err(e) => Err(e),
                }
            }
        }))
        .await
    }

    /// The backend a call for `agent` would go to now (what the router's pick costs is
    /// measured in `benches/pipeline.rs`).
    pub fn choose(&self, agent: AgentType) -> Option<&str> {
        self.pick(agent, &[], &[])
            .map(|i| self.backends[i].agent.name())
    }

    /// The highest price, input and output each, among the backends serving `agent`
    /// (what a call for it may cost per token at worst, wherever it is routed).
    pub fn max_price(&self, agent: AgentType) -> Option<Price> {
        self.backends
            .iter()
            .filter(|b| b.agent.serves(agent))
            .map(|b| b.price)
            .reduce(|a, b| Price {
                input_micros_per_1k: a.input_micros_per_1k.max(b.input_micros_per_1k),
                output_micros_per_1k: a.output_micros_per_1k.max(b.output_micros_per_1k),
            })
    }

    /// The price of the backend called `name`.
    pub fn price_of(&self, name: &str) -> Option<Price> {
        self.backends
            .iter()
            .find(|b| b.agent.name() == name)
            .map(|b| b.price)
    }

    /// Every backend's state.
    pub fn status(&self) -> Vec<BackendStatus> {
        let now = Instant::now();
        self.backends
            .iter()
            .map(|b| {
                let br = b.breaker.lock().unwrap_or_else(|e| e.into_inner());
                let e = b.ewma.lock().unwrap_or_else(|e| e.into_inner());
                let decay = (-(now.duration_since(e.at).as_secs_f64())
                    / self.cfg.ewma_decay.as_secs_f64())
                .exp();
                BackendStatus {
                    name: b.agent.name().to_string(),
                    breaker: br.state(),
                    trips: br.trips,
                    calls: b.calls.load(Relaxed),
                    latency: Duration::from_secs_f64(e.value * decay),
                    error_rate: e.errors * decay,
                    in_flight: b.in_flight.load(Relaxed),
                }
            })
            .collect()
    }
}
