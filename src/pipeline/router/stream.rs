//! Streaming through the router: [`Router::open_stream`] picks a backend as
//! [`Router::call`] does and retries (with failover and backoff) only until the first
//! event of the answer arrives; from then on the stream is committed to its backend,
//! whose breaker and averages learn the outcome when the stream ends.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use tokio::time::Instant;

use super::Router;
use super::load::Call;
use super::retry::{Attempted, CatchUnwind, backend_fault};
use crate::agent::{AiRequest, AiStream, StreamEvent};
use crate::error::{Error, Result};

/// The error of a backend stream that ended without its answer or an error.
fn ended_early() -> Error {
    Error::Backend {
        what: "AI stream".into(),
        retryable: true,
        source: "the stream ended before the answer was complete".into(),
    }
}

fn timed_out() -> Error {
    Error::Timeout {
        what: "AI stream".into(),
    }
}

impl Router {
    /// Opens a streamed answer to `req`: the name of the backend that serves it and
    /// its stream ([`StreamEvent::Delta`]s, then [`StreamEvent::Done`] whose
    /// `backend` is that name, or an error as the last item).
    ///
    /// The backend is picked as for [`Router::call`] (breakers, agent kind, load,
    /// price), and a retryable failure is retried — on another backend first, with
    /// backoff — only **until the first event arrives**: a stream that has begun
    /// cannot be replayed elsewhere without showing its reader text twice, so a
    /// failure after that is the stream's last item. The configured deadline bounds
    /// the whole stream: past it the stream ends with [`Error::Timeout`].
    ///
    /// The backend's breaker and latency average learn the outcome when the stream
    /// ends (its answer: success; an error or a stream cut short: failure, unless the
    /// error is the caller's own, as for `call`); dropping the stream cancels the
    /// backend call and counts against nobody. A backend's panic while streaming
    /// ends the stream with a retryable backend error.
    ///
    /// # Errors
    /// As [`Router::call`], before the first event.
    pub async fn open_stream(self: &Arc<Self>, req: &AiRequest) -> Result<(String, AiStream)> {
        self.open_stream_noting(req, &Mutex::new(None)).await
    }

    /// [`Router::open_stream`], keeping in `sent_to` the backend an attempt is in
    /// flight on (`None` between attempts): whoever drops this future before it
    /// returns knows whether a backend had the request.
    pub(crate) async fn open_stream_noting(
        self: &Arc<Self>,
        req: &AiRequest,
        sent_to: &Mutex<Option<String>>,
    ) -> Result<(String, AiStream)> {
        let note = |v: Option<String>| *sent_to.lock().unwrap_or_else(|e| e.into_inner()) = v;
        let deadline = self.deadline_from_now();
        let attempts = self.cfg.max_attempts;
        let mut backoff = self.backoff();
        let (mut tried, mut avoid) = (Vec::new(), Vec::new());
        let mut last: Option<Error> = None;
        for attempt in 0..attempts {
            let Some(i) = self.pick(req.agent, &tried, &avoid) else {
                break;
            };
            tried.push(i);
            let Some(call) = Router::lease(Arc::clone(self), i) else {
                continue;
            };
            let name = self.backends[i].agent.name().to_string();
            note(Some(name.clone()));
            let (result, panicked) = self.first_event(i, req, deadline).await;
            match result {
                Ok((first, rest)) => {
                    let routed = Routed {
                        call: Some(call),
                        first: Some(first),
                        rest,
                        deadline: Box::pin(tokio::time::sleep_until(deadline)),
                        name: name.clone(),
                    };
                    return Ok((name, AiStream::new(routed)));
                }
                Err(e) => {
                    note(None);
                    call.end(!backend_fault(&e));
                    if panicked {
                        avoid.push(i);
                    }
                    let at = Attempted {
                        attempt,
                        attempts,
                        panicked,
                        deadline,
                    };
                    let Some(wait) = self.retry_wait(req, &e, at, &tried, &avoid, &mut backoff)
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

    /// Opens backend `i`'s stream and waits for its first event, within `deadline`;
    /// `true` in the second field when the backend panicked.
    async fn first_event(
        &self,
        i: usize,
        req: &AiRequest,
        deadline: Instant,
    ) -> (Result<(StreamEvent, AiStream)>, bool) {
        let agent = &self.backends[i].agent;
        let open = async move {
            let mut stream = agent.stream(req).await?;
            match stream.next().await {
                Some(Ok(event)) => Ok((event, stream)),
                Some(Err(e)) => Err(e),
                None => Err(ended_early()),
            }
        };
        match tokio::time::timeout_at(deadline, CatchUnwind::new(open)).await {
            Ok(Ok(r)) => (r, false),
            Ok(Err(_)) => {
                tracing::error!(backend = agent.name(), "AI backend panicked");
                (Err(Self::panicked()), true)
            }
            Err(_) => (Err(timed_out()), false),
        }
    }
}

/// A backend's stream committed to it: its first event (already read), the rest,
/// the call's bookkeeping (ended with the stream's outcome, or released when the
/// stream is dropped unfinished) and the request's deadline.
struct Routed {
    /// `None` once the stream ended.
    call: Option<Call<Arc<Router>>>,
    first: Option<StreamEvent>,
    rest: AiStream,
    deadline: Pin<Box<tokio::time::Sleep>>,
    name: String,
}

impl Routed {
    fn end(&mut self, ok: bool) {
        if let Some(call) = self.call.take() {
            call.end(ok);
        }
    }

    /// An event on its way out: the answer carries the backend's name and ends the
    /// call as a success.
    fn pass(&mut self, event: StreamEvent) -> StreamEvent {
        match event {
            StreamEvent::Done(mut r) => {
                r.backend.clone_from(&self.name);
                self.end(true);
                StreamEvent::Done(r)
            }
            delta => delta,
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<StreamEvent>>> {
        self.end(!backend_fault(&e));
        Poll::Ready(Some(Err(e)))
    }
}

impl Stream for Routed {
    type Item = Result<StreamEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.call.is_none() {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(this.pass(first))));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return this.fail(timed_out());
        }
        let rest = &mut this.rest;
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rest.poll_next_unpin(cx)));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(Some(Ok(event)))) => Poll::Ready(Some(Ok(this.pass(event)))),
            Ok(Poll::Ready(Some(Err(e)))) => this.fail(e),
            Ok(Poll::Ready(None)) => this.fail(ended_early()),
            Err(_) => {
                tracing::error!(backend = %this.name, "AI backend panicked while streaming");
                this.fail(Router::panicked())
            }
        }
    }
}
