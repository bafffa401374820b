//! The retry loop: one request (or a batch) within one deadline, retried with
//! jittered exponential backoff on retryable failures, on a backend not yet tried for
//! it while one is left; a backend's panic fails its attempt instead of the caller.

use tokio::time::Instant;

use backon::BackoffBuilder;

use super::Router;
use crate::agent::{AiRequest, AiResponse};
use crate::error::{Error, Result};
use crate::pipeline::MAX_DURATION;

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

/// Whether an attempt's error counts against its backend (its breaker and error
/// rate): the caller's mistakes are not the backend's failures.
pub(super) fn backend_fault(e: &Error) -> bool {
    e.is_retryable() || matches!(e, Error::Backend { .. })
}

/// Where a request's retries stand after a failed attempt.
#[derive(Clone, Copy, Debug)]
pub(super) struct Attempted {
    /// The attempt that failed, from 0.
    pub(super) attempt: u32,
    /// Most attempts.
    pub(super) attempts: u32,
    /// Whether it failed by the backend's panic.
    pub(super) panicked: bool,
    /// When the request's time runs out.
    pub(super) deadline: Instant,
}

impl Router {
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

    /// Sends one request, retrying retryable failures with backoff (on a backend not
    /// yet tried for it while one is left, else on one already tried), within the
    /// deadline.
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
        self.call_until(
            req,
            self.deadline_from_now(),
            self.cfg.max_attempts,
            Vec::new(),
            Vec::new(),
        )
        .await
    }

    /// The jittered exponential backoff of one request's retries.
    pub(super) fn backoff(&self) -> backon::ExponentialBackoff {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.cfg.backoff_min)
            .with_max_delay(self.cfg.backoff_max)
            .with_jitter()
            .with_jitter_seed(self.jitter_seed())
            .without_max_times()
            .build()
    }

    /// After an attempt failed with `e` (its backend already in `tried`, and in
    /// `avoid` when it panicked): how long to wait before the next one, or `None` to
    /// end the request with `e` now — it is not retryable, attempts or time ran out,
    /// or it panicked and no other backend is left.
    pub(super) fn retry_wait(
        &self,
        req: &AiRequest,
        e: &Error,
        at: Attempted,
        tried: &[usize],
        avoid: &[usize],
        backoff: &mut backon::ExponentialBackoff,
    ) -> Option<std::time::Duration> {
        // After a panic, give up at once when no other backend is left.
        if !e.is_retryable()
            || at.attempt + 1 == at.attempts
            || (at.panicked && self.pick(req.agent, tried, avoid).is_none())
        {
            return None;
        }
        let wait = backoff.next().unwrap_or(self.cfg.backoff_max);
        // A backend's Retry-After is outside input: an absurd one ends the call with
        // its error instead of overflowing the clock.
        let wait = e.retry_after().map_or(wait, |r| r.max(wait));
        if Instant::now()
            .checked_add(wait)
            .is_none_or(|at_| at_ >= at.deadline)
        {
            return None;
        }
        Some(wait)
    }

    /// Now plus the configured deadline; `validate` keeps the deadline within
    /// [`MAX_DURATION`], but the clock is clamped all the same rather than overflowing.
    pub(crate) fn deadline_from_now(&self) -> Instant {
        let now = Instant::now();
        now.checked_add(self.cfg.deadline)
            .or_else(|| now.checked_add(MAX_DURATION))
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

    /// [`Router::call`] within `deadline` and at most `attempts` attempts, avoiding the
    /// backends in `tried` first and those in `avoid` (they panicked on this request)
    /// always.
    async fn call_until(
        &self,
        req: &AiRequest,
        deadline: Instant,
        attempts: u32,
        mut tried: Vec<usize>,
        mut avoid: Vec<usize>,
    ) -> Result<AiResponse> {
        let mut backoff = self.backoff();
        let mut last: Option<Error> = None;
        for attempt in 0..attempts {
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
                    self.finish(call, !backend_fault(&e));
                    if panicked {
                        avoid.push(i);
                    }
                    let next = Attempted {
                        attempt,
                        attempts,
                        panicked,
                        deadline,
                    };
                    let Some(wait) = self.retry_wait(req, &e, next, &tried, &avoid, &mut backoff)
                    else {
                        return Err(e);
                    };
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
    /// retryably there are retried concurrently, at once (no backoff before their
    /// first retry), elsewhere first, as [`Router::call`] does — all within the one
    /// deadline the batch started with, and the batch call counting as each member's
    /// first attempt. A panic of the backend's `complete_batch` fails every member
    /// retryably (never back to that backend); a panic while retrying one member fails
    /// that member alone.
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
            return futures_util::future::join_all(reqs.iter().map(|r| {
                self.call_until(r, deadline, self.cfg.max_attempts, Vec::new(), Vec::new())
            }))
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
        let retries = self.cfg.max_attempts - 1;
        futures_util::future::join_all(reqs.iter().zip(results).map(|(r, res)| {
            let avoid = avoid.clone();
            async move {
                match res {
                    Ok(mut resp) => {
                        resp.backend = name.to_string();
                        Ok(resp)
                    }
                    // The batch call was the first attempt.
                    Err(e) if e.is_retryable() && retries > 0 && Instant::now() < deadline => {
                        match self.call_until(r, deadline, retries, vec![i], avoid).await {
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
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::Duration;

    use async_trait::async_trait;

    use super::super::RouterConfig;
    use super::*;
    use crate::agent::{AiAgent, Price};
    use crate::domain::{AgentType, UserId};
    use crate::metrics::NoopMetrics;

    /// A backend whose every call fails retryably after 1 s.
    struct Down(AtomicUsize);

    #[async_trait]
    impl AiAgent for Down {
        fn name(&self) -> &str {
            "down"
        }
        async fn complete(&self, _: &AiRequest) -> Result<AiResponse> {
            self.0.fetch_add(1, SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            Err(Error::Backend {
                what: "down".into(),
                retryable: true,
                source: "always".into(),
            })
        }
    }

    /// Calls the backend gets for a failing batch of three under `max_attempts`.
    async fn calls_for_a_failing_batch(max_attempts: u32) -> usize {
        let agent = Arc::new(Down(AtomicUsize::new(0)));
        let price = Price {
            input_micros_per_1k: 1,
            output_micros_per_1k: 1,
        };
        let r = Router::new(
            vec![(agent.clone() as Arc<dyn AiAgent>, price)],
            RouterConfig {
                max_attempts,
                ..Default::default()
            },
            Arc::new(NoopMetrics),
        )
        .unwrap();
        let reqs: Vec<AiRequest> = (0..3)
            .map(|i| AiRequest::new(UserId::new(), AgentType::LearningCoach, format!("q{i}")))
            .collect();
        let out = r.call_batch(&reqs).await;
        assert!(out.iter().all(Result::is_err), "{out:?}");
        agent.0.load(SeqCst)
    }

    /// `max_attempts` counts the batch call as each member's first attempt: a member
    /// is not tried `max_attempts` more times after it.
    #[tokio::test(start_paused = true)]
    async fn a_batch_call_is_each_members_first_attempt() {
        assert_eq!(calls_for_a_failing_batch(1).await, 3, "no retry at all");
        assert_eq!(calls_for_a_failing_batch(2).await, 3 + 3, "one retry each");
        assert_eq!(calls_for_a_failing_batch(3).await, 3 + 3 * 2);
    }
}
