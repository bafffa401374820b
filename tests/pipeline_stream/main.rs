//! Streamed answers through the pipeline keep the books of `complete` (tokio's paused
//! clock throughout): a completed stream is paid once, recorded once and then served
//! from the cache as a replayed stream; a stream that fails mid-answer or whose reader
//! goes away is billed for what the backend produced (exactly: the estimated input
//! plus the text produced), recorded as failed and never cached; a failure before the
//! first delta is not billed and may fail over; refusals come before any byte; shutdown
//! waits for a stream; time to first token is measured with percentiles.
//!
//! The backends here are this file's own: scripted streams with `tokio::time::sleep`
//! between deltas, so the tests depend on no agent's streaming. This file holds them
//! and the helpers; each theme is a module.

#[path = "../common/mod.rs"]
mod common;

mod completing;
mod failing;
mod guarding;
mod leaving;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use kasama::agent::{
    AiAgent, AiRequest, AiResponse, AiStream, StreamEvent, Usage, estimate_tokens, output_text,
};
use kasama::metrics::{CacheTier, InMemoryMetrics};
use kasama::pipeline::{
    AiOutcome, Budgets, OutcomeStream, Price, Quota, RateLimitConfig, RouterConfig, STREAM_CHANNEL,
    StreamItem, TierQuotas,
};
use kasama::prelude::*;
use kasama::semantic::{HashingEmbedder, Lookup, SemanticCache};
use serde_json::json;

use common::pipeline::{PRICE, builder, memory, rows, users};

/// What a completed stream's provider bills.
const USAGE: Usage = Usage {
    input_tokens: 120,
    output_tokens: 200,
};

/// Nano-dollars of `usage` at `price`.
fn cost_at(price: Price, input: u32, output: u32) -> u64 {
    u64::from(input) * price.input_micros_per_1k + u64::from(output) * price.output_micros_per_1k
}

/// How a scripted stream ends after its deltas.
#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    /// The whole answer, `{"text": <the deltas>}`.
    Done,
    /// A retryable backend error.
    Fail,
    /// Never: the stream waits forever.
    Hang,
    /// The backend's code panics.
    Panic,
}

/// What a backend's streams did.
#[derive(Debug, Default)]
struct Seen {
    /// `stream` calls.
    calls: AtomicUsize,
    /// Streams that reached their end (answer or error).
    finished: AtomicUsize,
    /// Streams dropped before their end (the backend call cancelled).
    cancelled: AtomicUsize,
}

/// Marks its stream's fate when dropped.
struct Watch {
    seen: Arc<Seen>,
    finished: bool,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.finished {
            self.seen.finished.fetch_add(1, SeqCst);
        } else {
            self.seen.cancelled.fetch_add(1, SeqCst);
        }
    }
}

/// A backend streaming scripted deltas, `gap` apart (the first after `first`, or
/// after `gap × the call's number` when `ramp`), then ending as `end`; with
/// `open_fails`, every call fails retryably before any event instead.
struct Scripted {
    name: &'static str,
    deltas: Vec<String>,
    first: Duration,
    gap: Duration,
    ramp: bool,
    end: End,
    open_fails: bool,
    seen: Arc<Seen>,
}

impl Scripted {
    fn new(name: &'static str, deltas: &[&str], gap_ms: u64, end: End) -> Self {
        Self {
            name,
            deltas: deltas.iter().map(|d| d.to_string()).collect(),
            first: Duration::from_millis(gap_ms),
            gap: Duration::from_millis(gap_ms),
            ramp: false,
            end,
            open_fails: false,
            seen: Arc::default(),
        }
    }

    fn first(mut self, ms: u64) -> Self {
        self.first = Duration::from_millis(ms);
        self
    }

    fn ramp(mut self) -> Self {
        self.ramp = true;
        self
    }

    fn failing_open(mut self) -> Self {
        self.open_fails = true;
        self
    }

    fn text(&self) -> String {
        self.deltas.concat()
    }

    fn calls(&self) -> usize {
        self.seen.calls.load(SeqCst)
    }

    fn cancelled(&self) -> usize {
        self.seen.cancelled.load(SeqCst)
    }

    fn finished(&self) -> usize {
        self.seen.finished.load(SeqCst)
    }

    fn answer(&self) -> AiResponse {
        AiResponse {
            output: json!({ "text": self.text() }),
            usage: USAGE,
            usage_estimated: false,
            model: "stream-1".into(),
            backend: String::new(),
            latency: self.first + self.gap * self.deltas.len() as u32,
        }
    }
}

fn flaky() -> Error {
    Error::Backend {
        what: "scripted".into(),
        retryable: true,
        source: "scripted failure".into(),
    }
}

/// One scripted stream's state.
struct Play {
    next: usize,
    deltas: Vec<String>,
    first: Duration,
    gap: Duration,
    end: End,
    answer: Option<AiResponse>,
    watch: Watch,
}

#[async_trait]
impl AiAgent for Scripted {
    fn name(&self) -> &str {
        self.name
    }

    async fn complete(&self, _: &AiRequest) -> kasama::Result<AiResponse> {
        self.seen.calls.fetch_add(1, SeqCst);
        tokio::time::sleep(self.first + self.gap * self.deltas.len() as u32).await;
        match self.end {
            End::Done => Ok(self.answer()),
            End::Fail => Err(flaky()),
            End::Hang => std::future::pending().await,
            End::Panic => panic!("the backend fell over"),
        }
    }

    async fn stream(&self, _: &AiRequest) -> kasama::Result<AiStream> {
        let n = self.seen.calls.fetch_add(1, SeqCst) + 1;
        if self.open_fails {
            tokio::time::sleep(self.first).await;
            return Err(flaky());
        }
        let play = Play {
            next: 0,
            deltas: self.deltas.clone(),
            first: if self.ramp {
                self.gap * n as u32
            } else {
                self.first
            },
            gap: self.gap,
            end: self.end,
            answer: Some(self.answer()),
            watch: Watch {
                seen: self.seen.clone(),
                finished: false,
            },
        };
        Ok(AiStream::new(futures_util::stream::unfold(
            play,
            |mut p| async move {
                if p.watch.finished {
                    return None;
                }
                if p.next < p.deltas.len() {
                    let wait = if p.next == 0 { p.first } else { p.gap };
                    tokio::time::sleep(wait).await;
                    let d = p.deltas[p.next].clone();
                    p.next += 1;
                    return Some((Ok(StreamEvent::Delta(d)), p));
                }
                tokio::time::sleep(p.gap).await;
                let last = match p.end {
                    End::Done => Ok(StreamEvent::Done(p.answer.take().expect("one answer"))),
                    End::Fail => Err(flaky()),
                    End::Hang => std::future::pending().await,
                    End::Panic => panic!("the backend fell over mid-stream"),
                };
                p.watch.finished = true;
                Some((last, p))
            },
        )))
    }
}

const WORDS: [&str; 4] = ["Listen ", "first, ", "then ", "ask."];

fn ask(u: UserId, q: &str) -> AiRequest {
    AiRequest::new(u, AgentType::CommunicationAdvisor, q)
}

/// The estimated input tokens of `req` as the pipeline sends it (no templates given).
fn input_of(req: &AiRequest) -> u32 {
    req.messages()
        .iter()
        .map(|m| estimate_tokens(&m.content))
        .sum()
}

fn cache() -> Arc<SemanticCache> {
    Arc::new(
        SemanticCache::builder(Arc::new(HashingEmbedder::new()))
            .salience_check(false)
            .build()
            .unwrap(),
    )
}

/// Reads a stream to its end: the deltas, then the last item (`Done`'s outcome or
/// the error).
async fn drain(mut s: OutcomeStream) -> (Vec<String>, kasama::Result<AiOutcome>) {
    let mut deltas = Vec::new();
    while let Some(item) = s.next().await {
        match item {
            Ok(StreamItem::Delta(d)) => deltas.push(d),
            Ok(StreamItem::Done(o)) => {
                assert!(s.next().await.is_none(), "Done is the last item");
                return (deltas, Ok(o));
            }
            Err(e) => {
                assert!(s.next().await.is_none(), "an error is the last item");
                return (deltas, Err(e));
            }
        }
    }
    panic!("the stream ended without Done or an error");
}

fn near(ms: f64, want: f64) -> bool {
    (ms - want).abs() <= want * 0.01 + 0.01
}
