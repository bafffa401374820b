//! [`AiPipeline::stream`]: an answer streamed through the pipeline, with every
//! guarantee of [`AiPipeline::complete`] (the method's docs say what each case
//! costs). The checks before the first byte are `complete`'s; the backend call
//! belongs to a [`Driver`] task, which forwards the deltas through a bounded channel
//! and settles the call once through [`Books::settle`] when the backend stream ends,
//! fails, or its reader goes away.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::lookup::{Looked, input_tokens};
use super::settle::{Books, Claim, Ended, InflightGuard};
use super::{AiOutcome, AiPipeline, Router};
use crate::agent::{AiRequest, AiResponse, StreamEvent, Usage, estimate_tokens, output_text};
use crate::domain::{AgentType, SubscriptionTier};
use crate::error::{Error, Result};
use crate::metrics::{MetricEvent, MetricsSink};

/// Items a stream of [`AiPipeline::stream`] buffers between the task that owns its
/// backend call and its reader: a reader that falls this far behind holds the
/// backend stream back until it catches up.
pub const CHANNEL: usize = 32;

/// Most chunks a cache hit is replayed in.
const REPLAY_CHUNKS: usize = 4;

/// One event of an answer streamed through the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamItem {
    /// The next piece of the answer's text.
    Delta(String),
    /// The answer is complete: the whole of it, with what it cost and how the cache
    /// answered. The last event of a stream that did not fail.
    Done(AiOutcome),
}

/// An answer streamed through the pipeline (see [`AiPipeline::stream`]): any number
/// of [`StreamItem::Delta`]s, then one [`StreamItem::Done`] or one `Err` (the
/// backend failed mid-answer, or the answer was refused afterwards, e.g. a
/// structured answer of the wrong shape), then the end. A stream that ends without
/// either was given up because its reader left it full until the deadline.
///
/// Dropping it before the end cancels the backend call; what the backend produced
/// is still billed and recorded (see [`AiPipeline::stream`]).
pub struct OutcomeStream {
    rx: mpsc::Receiver<Result<StreamItem>>,
}

impl std::fmt::Debug for OutcomeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutcomeStream").finish_non_exhaustive()
    }
}

impl Stream for OutcomeStream {
    type Item = Result<StreamItem>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl AiPipeline {
    /// Answers `req` for a user on `tier` as a stream, with every guarantee of
    /// [`AiPipeline::complete`].
    ///
    /// **Before the first byte**, as `complete`: shutdown, validation, the prompt
    /// template, the AI rate limit, the semantic cache — a hit is replayed as a
    /// stream (its text in a few chunks, then [`StreamItem::Done`] with the hit's
    /// tier and no cost) — and the budget hold at the same worst case. A refusal is
    /// this method's `Err`: no backend is asked.
    ///
    /// **The backend call is a task's, not the caller's.** On a miss, a task spawned
    /// for the request opens the backend's stream through the router (breakers,
    /// agent kind, load, price; retries and failover only until the first event, see
    /// [`Router::open_stream`]), forwards each delta through a bounded channel
    /// ([`STREAM_CHANNEL`](super::STREAM_CHANNEL) items: a slow reader holds the
    /// backend back rather than filling memory), and settles the call once when the
    /// backend stream ends:
    ///
    /// - **completed**: the answer is checked (structured output), stored in the
    ///   semantic cache, charged at the usage the backend reported and recorded; the
    ///   last item is [`StreamItem::Done`]. A structured answer of the wrong shape is
    ///   an error item instead, billed, not cached.
    /// - **failed before any text**: as `complete`'s failures — the hold is released,
    ///   nothing is billed, a failed row is recorded; the last item is the error.
    /// - **failed after some text** (an error, a backend panic, the router's
    ///   deadline): the backend produced part of an answer and its provider bills it,
    ///   so the user is charged for it — the estimated input tokens of every message
    ///   sent plus [`estimate_tokens`] of the text produced, at the price of the
    ///   requested model when the price table lists it, else of the backend. The row
    ///   is recorded with `success = false`, that cost, those tokens and the partial
    ///   text; nothing is cached. The last item is the error.
    /// - **the reader dropped the stream** (the client went away): the task notices
    ///   at once, drops the backend's stream — which cancels the backend call — and
    ///   bills and records what was produced as for a failure, counted as
    ///   [`CANCELLED`](crate::metrics::CANCELLED) (not an AI failure). Nothing is
    ///   cached. An answer the backend had already completed when the reader left
    ///   is settled as completed (charged as reported, cached, recorded).
    ///
    /// A reader that **stops reading** holds the backend back (the channel is
    /// bounded); one that has left it full until the router's deadline is treated as
    /// gone at that moment (billed and recorded as above; its last item, a
    /// `Timeout`, is sent only if there is room), so a stalled client holds neither
    /// the call nor [`AiPipeline::shutdown`] past the deadline.
    ///
    /// A reader that goes away **before the first delta cancels the call too**
    /// (finishing it would bill output nobody will read). If a backend had the
    /// request at that moment, the user is charged its estimated input tokens:
    /// providers bill the prompt of a request they accepted, cancelled or not. If
    /// none had it (between attempts, waiting out a backoff), nothing is charged.
    /// Either way one row is recorded, `success = false`.
    ///
    /// Streams are **not batched and not coalesced** with identical requests in
    /// flight: each is its own backend call, charged to its own request (a joined
    /// stream would replay text already sent, and its time to first token would be
    /// another call's). They count as in flight, so [`AiPipeline::shutdown`] waits
    /// until every stream's books are kept.
    ///
    /// [`MetricEvent::FirstToken`] is recorded when the first chunk reaches the
    /// stream's channel (a replayed hit's at once), from the request's start.
    ///
    /// # Example
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> kasama::Result<()> {
    /// use std::sync::Arc;
    ///
    /// use futures_util::StreamExt;
    /// use kasama::agent::{AiRequest, SimulatedAgent};
    /// use kasama::pipeline::{AiPipeline, StreamItem};
    /// use kasama::prelude::*;
    ///
    /// let repo: Arc<dyn Repository> = Arc::new(InMemoryRepository::new());
    /// let user = UserId::new();
    /// repo.create_profile(Actor::Service, NewProfile::new(user, "ana@example.com", "Ana"))
    ///     .await?;
    /// let pipeline = AiPipeline::builder(repo)
    ///     .backend(Arc::new(SimulatedAgent::instant("sim")))
    ///     .build()?;
    ///
    /// let req = AiRequest::new(user, AgentType::CommunicationAdvisor, "How do I listen better?");
    /// let mut answer = pipeline.stream(req, SubscriptionTier::Free).await?;
    /// let mut text = String::new();
    /// while let Some(item) = answer.next().await {
    ///     match item? {
    ///         StreamItem::Delta(piece) => text.push_str(&piece), // send it on to the client
    ///         StreamItem::Done(outcome) => assert!(outcome.cost_nanos > 0),
    ///     }
    /// }
    /// assert!(!text.is_empty());
    /// pipeline.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// Before the first event, as [`AiPipeline::complete`]: `InvalidInput`,
    /// `RateLimited { retry_after }`, `BudgetExceeded`, `Overloaded` (after
    /// [`AiPipeline::shutdown`]). A backend failure (`CircuitOpen`, `Timeout`,
    /// `Backend`) is the stream's last item.
    pub async fn stream(&self, req: AiRequest, tier: SubscriptionTier) -> Result<OutcomeStream> {
        let start = Instant::now();
        let req = self.stamp(req);
        // Counted in flight until the driver has kept the books: shutdown waits.
        let inflight = self.admit(&req, tier, start).await?;
        let (embedding, audit, verified) = match self.look_up(&req, tier, start).await {
            Looked::Answered(outcome) => return Ok(self.replay(req.agent, outcome, start)),
            Looked::Go {
                embedding,
                audit,
                verified,
            } => (embedding, audit, verified),
        };
        let hold = self.hold_call(&req, tier, start, verified).await?;
        let claim = Claim {
            req,
            hold: Some(hold),
            start,
            embedding,
            audit,
            verified,
        };
        let (tx, rx) = mpsc::channel(CHANNEL);
        let driver = Driver {
            books: self.books.clone(),
            router: self.router.clone(),
            metrics: self.metrics.clone(),
            tx,
            _inflight: inflight,
        };
        // From here the claim is the driver's: whatever happens to the caller, the
        // call is settled and recorded.
        tokio::spawn(driver.run(claim));
        Ok(OutcomeStream { rx })
    }

    /// A cache hit (already recorded and counted) as a stream: its text in a few
    /// chunks, then the outcome.
    fn replay(&self, agent: AgentType, outcome: AiOutcome, start: Instant) -> OutcomeStream {
        let chunks = chunks(&output_text(&outcome.response.output), REPLAY_CHUNKS);
        let (tx, rx) = mpsc::channel(chunks.len() + 1);
        let cache = outcome.cache;
        // The channel holds every event: no send can fail or wait.
        for c in chunks {
            let _ = tx.try_send(Ok(StreamItem::Delta(c)));
        }
        let _ = tx.try_send(Ok(StreamItem::Done(outcome)));
        self.metrics.record(&MetricEvent::FirstToken {
            agent,
            latency: start.elapsed(),
            cache,
        });
        OutcomeStream { rx }
    }
}

/// `text` in at most `n` pieces of about as many words each (whitespace kept with
/// the word before it); none for an empty text.
fn chunks(text: &str, n: usize) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(char::is_whitespace).collect();
    if words.is_empty() {
        return Vec::new();
    }
    let per = words.len().div_ceil(n.max(1));
    words.chunks(per).map(<[&str]>::concat).collect()
}

/// What the backend produced of an answer cut short, as the response it is billed
/// as: the estimated input tokens of every message sent, [`estimate_tokens`] of the
/// text produced (none for no text), priced by the requested model or else the
/// backend (see [`Books::cost_of`]).
fn produced(req: &AiRequest, backend: &str, text: &str, start: Instant) -> AiResponse {
    AiResponse {
        output: serde_json::json!({ "text": text }),
        usage: Usage {
            input_tokens: input_tokens(req),
            output_tokens: if text.is_empty() {
                0
            } else {
                estimate_tokens(text)
            },
        },
        usage_estimated: true,
        model: req.params.model.clone(),
        backend: backend.to_string(),
        latency: start.elapsed(),
    }
}

/// The error settled for a stream whose reader went away (nobody receives it).
fn gone() -> Error {
    Error::Backend {
        what: "AI stream".into(),
        retryable: false,
        source: "the client went away".into(),
    }
}

/// The error of a stream whose reader took nothing until the deadline.
fn stuck() -> Error {
    Error::Timeout {
        what: "AI stream (the reader took nothing until the deadline)".into(),
    }
}

/// What became of an item handed to the reader.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Delivery {
    /// It is in the channel.
    Sent,
    /// The reader dropped the stream.
    Gone,
    /// The channel stayed full until the deadline.
    Stuck,
}

/// The task that owns one stream's backend call and keeps its books.
struct Driver {
    books: Arc<Books>,
    router: Arc<Router>,
    metrics: Arc<dyn MetricsSink>,
    tx: mpsc::Sender<Result<StreamItem>>,
    /// Counts the stream in flight until its books are kept.
    _inflight: InflightGuard,
}

impl Driver {
    async fn run(self, claim: Claim) {
        let (agent, start) = (claim.req.agent, claim.start);
        // The reader's deadline: a reader that leaves the channel full until then is
        // treated as gone, so a client that stops reading cannot hold the call (nor
        // shutdown) past the time the router gives the backend.
        let deadline = self.router.deadline_from_now();
        // The backend an attempt is in flight on, while the stream is being opened.
        let sent_to = Mutex::new(None);
        let opened = tokio::select! {
            biased;
            () = self.tx.closed() => None,
            r = self.router.open_stream_noting(&claim.req, &sent_to) => Some(r),
        };
        let (backend, mut stream) = match opened {
            Some(Ok(s)) => s,
            // Failed before the first event: not billed, as `complete`'s failures.
            Some(Err(e)) => {
                self.settle(claim, Ended::from(Err(e)), deadline).await;
                return;
            }
            // The reader went away first; the opening attempt is dropped (cancelled).
            // The input of a request a backend had is billed (see `stream`'s docs).
            None => {
                let had = sent_to.into_inner().unwrap_or_else(|e| e.into_inner());
                let billed = had.map(|b| produced(&claim.req, &b, "", start));
                let ended = Ended::Failed {
                    error: gone(),
                    billed,
                    cancelled: true,
                };
                self.settle(claim, ended, deadline).await;
                return;
            }
        };
        let mut text = String::new();
        let mut first = true;
        let cut = |text: &str, error, cancelled| Ended::Failed {
            error,
            billed: Some(produced(&claim.req, &backend, text, start)),
            cancelled,
        };
        let ended = loop {
            // The backend first: an answer already complete when the reader leaves is
            // settled as the answer it is (charged as reported, cached), not cut. A
            // reader that left is noticed here while the backend is slow, else at the
            // next delivery.
            let event = tokio::select! {
                biased;
                event = stream.next() => event,
                () = self.tx.closed() => break cut(&text, gone(), true),
            };
            match event {
                // Nothing to show: not a chunk (nor a first token).
                Some(Ok(StreamEvent::Delta(d))) if d.is_empty() => {}
                Some(Ok(StreamEvent::Delta(d))) => {
                    text.push_str(&d);
                    match self.deliver(Ok(StreamItem::Delta(d)), deadline).await {
                        Delivery::Sent => {}
                        Delivery::Gone => break cut(&text, gone(), true),
                        Delivery::Stuck => break cut(&text, stuck(), true),
                    }
                    if std::mem::take(&mut first) {
                        self.first_token(agent, start);
                    }
                }
                Some(Ok(StreamEvent::Done(r))) => break Ended::Answered(r),
                Some(Err(e)) => break cut(&text, e, false),
                // The router's streams end with an answer or an error; all the same:
                None => {
                    let e = Error::Backend {
                        what: "AI stream".into(),
                        retryable: true,
                        source: "the stream ended before the answer was complete".into(),
                    };
                    break cut(&text, e, false);
                }
            }
        };
        // Cancels the backend call if it is still going (the reader went away).
        drop(stream);
        let delivered = self.settle(claim, ended, deadline).await;
        if first && delivered {
            // An answer without text: its whole is the first chunk.
            self.first_token(agent, start);
        }
    }

    /// Hands `item` to the reader: at once when the channel has room, else when the
    /// reader makes room — or not at all, when it goes away or the deadline passes.
    async fn deliver(&self, item: Result<StreamItem>, deadline: Instant) -> Delivery {
        use mpsc::error::TrySendError;
        let item = match self.tx.try_send(item) {
            Ok(()) => return Delivery::Sent,
            Err(TrySendError::Closed(_)) => return Delivery::Gone,
            Err(TrySendError::Full(item)) => item,
        };
        tokio::select! {
            biased;
            r = self.tx.send(item) => if r.is_ok() { Delivery::Sent } else { Delivery::Gone },
            () = tokio::time::sleep_until(deadline) => Delivery::Stuck,
        }
    }

    fn first_token(&self, agent: AgentType, start: Instant) {
        self.metrics.record(&MetricEvent::FirstToken {
            agent,
            latency: start.elapsed(),
            cache: self.books.tier(),
        });
    }

    /// Settles the call once and hands its end to the reader, if still there (and
    /// taking items before the deadline); whether an answer was handed over.
    async fn settle(&self, claim: Claim, ended: Ended, deadline: Instant) -> bool {
        let mut last = None;
        self.books
            .settle(vec![(claim, ())], ended, |(), r| last = Some(r))
            .await;
        let Some(r) = last else { return false };
        let answered = r.is_ok();
        let sent = self.deliver(r.map(StreamItem::Done), deadline).await;
        answered && sent == Delivery::Sent
    }
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn a_replayed_text_is_cut_into_a_few_chunks_that_concatenate_to_it() {
        let text = "Listen first, then ask one open question.  Then wait.";
        let c = chunks(text, 4);
        assert_eq!(c.len(), 4);
        assert_eq!(c.concat(), text);
        assert_eq!(chunks("one", 4), vec!["one".to_string()]);
        assert!(chunks("", 4).is_empty());
    }
}
