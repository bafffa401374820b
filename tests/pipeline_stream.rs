//! Streamed answers through the pipeline keep the books of `complete` (tokio's paused
//! clock throughout): a completed stream is paid once, recorded once and then served
//! from the cache as a replayed stream; a stream that fails mid-answer or whose reader
//! goes away is billed for what the backend produced (exactly: the estimated input
//! plus the text produced), recorded as failed and never cached; a failure before the
//! first delta is not billed and may fail over; refusals come before any byte; shutdown
//! waits for a stream; time to first token is measured with percentiles.
//!
//! The backends here are this file's own: scripted streams with `tokio::time::sleep`
//! between deltas, so the tests depend on no agent's streaming.

mod common;

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
    AiOutcome, Budgets, OutcomeStream, Price, Quota, RateLimitConfig, RouterConfig, StreamItem,
    TierQuotas,
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

#[tokio::test(start_paused = true)]
async fn a_completed_stream_is_paid_once_recorded_and_then_replayed_from_the_cache() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Arc::new(Scripted::new("s", &WORDS, 100, End::Done));
    let metrics = Arc::new(InMemoryMetrics::new());
    let cache = cache();
    let p = builder(repo.clone())
        .backend(agent.clone())
        .semantic_cache(cache.clone())
        .metrics(metrics.clone())
        .build()
        .unwrap();
    let q = "How do I start a hard conversation?";

    let (deltas, done) = drain(p.stream(ask(u, q), SubscriptionTier::Free).await.unwrap()).await;
    let o = done.unwrap();
    assert_eq!(deltas, WORDS, "the backend's deltas, in order");
    assert_eq!(output_text(&o.response.output), deltas.concat());
    assert_eq!(o.cache, CacheTier::Miss);
    assert_eq!(o.response.backend, "s");
    let call = cost_at(PRICE, USAGE.input_tokens, USAGE.output_tokens);
    assert_eq!(
        o.cost_nanos, call,
        "charged at the usage the backend reported"
    );
    assert_eq!(
        p.ledger().user_today(u),
        call,
        "the ledger holds what Done says"
    );
    assert_eq!(p.ledger().user_reserved(u), 0, "the hold is settled");
    assert_eq!(
        p.batch_stats().logical_requests,
        0,
        "streams skip the batcher"
    );

    // The same question again: answered by the cache, as a stream.
    let (again, done) = drain(p.stream(ask(u, q), SubscriptionTier::Free).await.unwrap()).await;
    let hit = done.unwrap();
    assert_eq!(hit.cache, CacheTier::Exact);
    assert_eq!((hit.cost_nanos, hit.saved_nanos), (0, call));
    assert_eq!(again.concat(), WORDS.concat());
    assert!(again.len() > 1, "replayed in chunks: {again:?}");
    assert_eq!(agent.calls(), 1, "no second backend call");
    assert_eq!(agent.finished(), 1);
    assert_eq!(p.ledger().user_today(u), call);

    let ttft = metrics.snapshot().ai_first_token;
    assert_eq!(
        (ttft.all.count, ttft.backend.count, ttft.cache.count),
        (2, 1, 1)
    );
    assert!(near(ttft.backend.p50_ms, 100.0), "{ttft:?}");

    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 2);
    let paid: Vec<_> = rows.iter().filter(|r| !r.cache_hit).collect();
    assert_eq!(paid.len(), 1);
    assert!(paid[0].success);
    assert_eq!(paid[0].cost_nanos, call as i64);
    assert_eq!(paid[0].output, json!({ "text": WORDS.concat() }));
}

#[tokio::test(start_paused = true)]
async fn a_stream_failing_mid_answer_is_billed_for_what_was_produced_and_not_cached() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Arc::new(Scripted::new("s", &WORDS[..3], 100, End::Fail));
    let metrics = Arc::new(InMemoryMetrics::new());
    let cache = cache();
    let p = builder(repo.clone())
        .backend(agent.clone())
        .semantic_cache(cache.clone())
        .metrics(metrics.clone())
        .build()
        .unwrap();
    let req = ask(u, "What do I say when I am hurt?");

    let (deltas, end) = drain(p.stream(req.clone(), SubscriptionTier::Free).await.unwrap()).await;
    assert_eq!(deltas, WORDS[..3]);
    let e = end.unwrap_err();
    assert!(e.is_retryable(), "the backend's error: {e:?}");
    assert_eq!(agent.calls(), 1, "no retry once text was sent");
    let b = &p.backends()[0];
    assert_eq!(b.in_flight, 0);
    assert!(b.error_rate > 0.0, "counted against the backend: {b:?}");

    let produced = WORDS[..3].concat();
    let (input, output) = (input_of(&req), estimate_tokens(&produced));
    let billed = cost_at(PRICE, input, output);
    assert_eq!(p.ledger().user_today(u), billed);
    assert_eq!(p.ledger().user_reserved(u), 0);
    assert!(
        matches!(cache.lookup(&req).await.unwrap(), Lookup::Miss { .. }),
        "a failed stream is not cached"
    );
    let s = metrics.snapshot();
    assert_eq!((s.ai.count, s.ai.errors, s.ai_cost_nanos), (1, 1, billed));

    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert!(!r.success);
    assert_eq!(r.cost_nanos, billed as i64);
    assert_eq!(
        (r.input_tokens, r.output_tokens),
        (input as i32, output as i32)
    );
    assert_eq!(r.output, json!({ "error": "backend", "text": produced }));
}

#[tokio::test(start_paused = true)]
async fn a_failure_before_the_first_delta_is_not_billed_and_fails_over() {
    let repo = memory();
    let us = users(&repo, 2).await;
    let cheap_price = Price {
        input_micros_per_1k: 1_000,
        output_micros_per_1k: 2_000,
    };
    let dear_price = Price {
        input_micros_per_1k: 30_000,
        output_micros_per_1k: 60_000,
    };
    // The cheap one is picked first (same latency, lower price) and fails at once.
    let cheap = Arc::new(Scripted::new("cheap", &WORDS, 50, End::Done).failing_open());
    let dear = Arc::new(Scripted::new("dear", &WORDS, 50, End::Done));
    let p = builder(repo.clone())
        .backend_priced(cheap.clone(), cheap_price)
        .backend_priced(dear.clone(), dear_price)
        .build()
        .unwrap();
    let (deltas, done) = drain(
        p.stream(ask(us[0], "How do I apologise?"), SubscriptionTier::Free)
            .await
            .unwrap(),
    )
    .await;
    let o = done.unwrap();
    assert_eq!(
        deltas.concat(),
        WORDS.concat(),
        "no text of the failed attempt"
    );
    assert_eq!(o.response.backend, "dear");
    assert_eq!((cheap.calls(), dear.calls()), (1, 1));
    let call = cost_at(dear_price, USAGE.input_tokens, USAGE.output_tokens);
    assert_eq!(o.cost_nanos, call, "priced by the backend that answered");
    assert_eq!(
        p.ledger().user_today(us[0]),
        call,
        "the failed attempt is free"
    );
    p.shutdown().await.unwrap();

    // Every backend fails before any text: the error is the stream's only item.
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let down = Arc::new(Scripted::new("down", &WORDS, 50, End::Done).failing_open());
    let p = builder(repo.clone())
        .backend(down.clone())
        .routing(RouterConfig {
            max_attempts: 2,
            ..Default::default()
        })
        .build()
        .unwrap();
    let (deltas, end) = drain(
        p.stream(ask(u, "How do I apologise?"), SubscriptionTier::Free)
            .await
            .unwrap(),
    )
    .await;
    assert!(deltas.is_empty());
    assert!(end.unwrap_err().is_retryable());
    assert_eq!(down.calls(), 2, "retried before the first delta");
    assert_eq!(p.ledger().user_today(u), 0, "not billed");
    assert_eq!(p.ledger().user_reserved(u), 0, "the hold is released");
    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].success);
    assert_eq!((rows[0].cost_nanos, rows[0].output_tokens), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_reader_that_goes_away_mid_stream_cancels_the_call_and_is_billed_for_what_was_produced() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let words: Vec<String> = (0..10).map(|i| format!("word{i} ")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let agent = Arc::new(Scripted::new("s", &words, 100, End::Done));
    let metrics = Arc::new(InMemoryMetrics::new());
    let cache = cache();
    let p = builder(repo.clone())
        .backend(agent.clone())
        .semantic_cache(cache.clone())
        .metrics(metrics.clone())
        .build()
        .unwrap();
    let req = ask(u, "Why do we keep having the same fight?");
    let mut s = p.stream(req.clone(), SubscriptionTier::Free).await.unwrap();
    let mut read = String::new();
    for _ in 0..3 {
        match s.next().await {
            Some(Ok(StreamItem::Delta(d))) => read.push_str(&d),
            other => panic!("{other:?}"),
        }
    }
    drop(s);
    tokio::time::sleep(Duration::from_secs(5)).await;

    assert_eq!(agent.cancelled(), 1, "the backend's stream was dropped");
    assert_eq!(agent.finished(), 0);
    let b = &p.backends()[0];
    assert_eq!(b.in_flight, 0, "its slot is given back");
    assert_eq!(
        b.error_rate, 0.0,
        "a reader leaving is not the backend's fault"
    );
    assert_eq!(read, words[..3].concat());
    let billed = cost_at(PRICE, input_of(&req), estimate_tokens(&read));
    assert_eq!(p.ledger().user_today(u), billed);
    assert_eq!(p.ledger().user_reserved(u), 0);
    assert!(matches!(
        cache.lookup(&req).await.unwrap(),
        Lookup::Miss { .. }
    ));
    let snap = metrics.snapshot();
    assert_eq!(snap.ai_cancelled, 1);
    assert_eq!(snap.ai.count, 0, "a reader going away is not an AI failure");
    assert_eq!(snap.ai_cost_nanos, billed, "but its cost counts");

    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].success);
    assert_eq!(rows[0].cost_nanos, billed as i64);
    assert_eq!(
        rows[0].output,
        json!({ "error": "cancelled", "text": read })
    );
}

#[tokio::test(start_paused = true)]
async fn a_reader_that_goes_away_before_the_first_delta_pays_the_input_it_sent() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Arc::new(Scripted::new("s", &WORDS, 100, End::Done).first(2_000));
    let p = builder(repo.clone())
        .backend(agent.clone())
        .build()
        .unwrap();
    let req = ask(u, "Is it normal to argue about chores?");
    let s = p.stream(req.clone(), SubscriptionTier::Free).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(s);
    tokio::time::sleep(Duration::from_secs(5)).await;

    assert_eq!(agent.cancelled(), 1, "the call was cancelled");
    let billed = cost_at(PRICE, input_of(&req), 0);
    assert_eq!(
        p.ledger().user_today(u),
        billed,
        "the prompt the backend had"
    );
    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].success);
    assert_eq!(
        (rows[0].cost_nanos, rows[0].output_tokens),
        (billed as i64, 0)
    );
}

/// Between attempts (a backoff after a failed one) no backend has the request: a
/// reader that goes away then costs nothing, and is still recorded.
#[tokio::test(start_paused = true)]
async fn a_reader_that_goes_away_between_attempts_pays_nothing() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    // Fails after 50 ms; the retry waits at least `backoff_min` (100 ms) more.
    let agent = Arc::new(
        Scripted::new("s", &WORDS, 50, End::Done)
            .first(50)
            .failing_open(),
    );
    let p = builder(repo.clone())
        .backend(agent.clone())
        .build()
        .unwrap();
    let s = p
        .stream(ask(u, "Should I wait?"), SubscriptionTier::Free)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        agent.calls(),
        1,
        "the first attempt failed; waiting to retry"
    );
    drop(s);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(agent.calls(), 1, "no retry for a reader that left");
    assert_eq!(p.ledger().user_today(u), 0);
    assert_eq!(p.ledger().user_reserved(u), 0);
    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].success);
    assert_eq!(rows[0].cost_nanos, 0);
    assert_eq!(rows[0].output, json!({ "error": "cancelled" }));
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_never_ends_is_cut_at_the_deadline_and_billed() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Arc::new(Scripted::new("s", &WORDS[..2], 100, End::Hang));
    let p = builder(repo.clone())
        .backend(agent.clone())
        .routing(RouterConfig {
            deadline: Duration::from_secs(5),
            ..Default::default()
        })
        .build()
        .unwrap();
    let req = ask(u, "Will this ever end?");
    let (deltas, end) = drain(p.stream(req.clone(), SubscriptionTier::Free).await.unwrap()).await;
    assert_eq!(deltas, WORDS[..2]);
    assert!(matches!(end, Err(Error::Timeout { .. })), "{end:?}");
    assert_eq!(agent.cancelled(), 1);
    let billed = cost_at(PRICE, input_of(&req), estimate_tokens(&WORDS[..2].concat()));
    assert_eq!(p.ledger().user_today(u), billed);
    p.shutdown().await.unwrap();
}

/// A backend that panics mid-stream fails the stream, not the pipeline: billed for
/// what it produced, counted against its breaker, its slot given back.
#[tokio::test(start_paused = true)]
async fn a_backend_panicking_mid_stream_ends_the_stream_with_an_error_and_is_billed() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Arc::new(Scripted::new("s", &WORDS[..2], 100, End::Panic));
    let p = builder(repo.clone())
        .backend(agent.clone())
        .build()
        .unwrap();
    let req = ask(u, "What if it breaks?");
    let (deltas, end) = drain(p.stream(req.clone(), SubscriptionTier::Free).await.unwrap()).await;
    assert_eq!(deltas, WORDS[..2]);
    let e = end.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    let billed = cost_at(PRICE, input_of(&req), estimate_tokens(&WORDS[..2].concat()));
    assert_eq!(p.ledger().user_today(u), billed);
    let b = &p.backends()[0];
    assert_eq!((b.calls, b.in_flight), (1, 0));
    assert!(b.error_rate > 0.0, "the breaker and averages saw it: {b:?}");
    // The pipeline still answers.
    let (_, next) = drain(
        p.stream(ask(u, "Again?"), SubscriptionTier::Free)
            .await
            .unwrap(),
    )
    .await;
    assert!(next.is_err(), "the same script panics again");
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_structured_answer_of_the_wrong_shape_is_an_error_item_billed_and_not_cached() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Arc::new(Scripted::new("s", &WORDS, 10, End::Done));
    let cache = cache();
    let p = builder(repo.clone())
        .backend(agent.clone())
        .semantic_cache(cache.clone())
        .build()
        .unwrap();
    let req = AiRequest::new(u, AgentType::AssessmentAnalyst, "What do my results say?");
    let (deltas, end) = drain(p.stream(req.clone(), SubscriptionTier::Free).await.unwrap()).await;
    assert_eq!(deltas.concat(), WORDS.concat());
    let e = end.unwrap_err();
    assert!(e.to_string().contains("structured output"), "{e}");
    let call = cost_at(PRICE, USAGE.input_tokens, USAGE.output_tokens);
    assert_eq!(p.ledger().user_today(u), call, "the provider billed it");
    assert!(matches!(
        cache.lookup(&req).await.unwrap(),
        Lookup::Miss { .. }
    ));
    p.shutdown().await.unwrap();
    let rows = rows(&repo, u).await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].success);
    assert_eq!(rows[0].cost_nanos, call as i64);
}

#[tokio::test(start_paused = true)]
async fn rate_limits_and_budgets_refuse_a_stream_before_any_backend_call() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Arc::new(Scripted::new("s", &WORDS, 10, End::Done));
    let one = Quota::per_hour(NonZeroU32::new(1).unwrap());
    let limits = RateLimitConfig {
        ai_per_user: TierQuotas {
            free: one,
            premium: one,
            enterprise: one,
        },
        ..RateLimitConfig::unlimited()
    };
    let p = builder(repo.clone())
        .backend(agent.clone())
        .rate_limits(limits)
        .build()
        .unwrap();
    let (_, done) = drain(
        p.stream(ask(u, "first"), SubscriptionTier::Free)
            .await
            .unwrap(),
    )
    .await;
    done.unwrap();
    let refused = p.stream(ask(u, "second"), SubscriptionTier::Free).await;
    assert!(
        matches!(refused, Err(Error::RateLimited { .. })),
        "{refused:?}"
    );
    assert_eq!(agent.calls(), 1);
    p.shutdown().await.unwrap();

    // A budget the first call uses up (a soft cap: the last call admitted may pass
    // it by its own cost); the second is refused.
    let agent = Arc::new(Scripted::new("s", &WORDS, 10, End::Done));
    let p = builder(repo.clone())
        .backend(agent.clone())
        .budgets(Budgets {
            free_user_daily: Some(1_000),
            ..Budgets::unlimited()
        })
        .build()
        .unwrap();
    let (_, done) = drain(
        p.stream(ask(u, "third"), SubscriptionTier::Free)
            .await
            .unwrap(),
    )
    .await;
    done.unwrap();
    let refused = p.stream(ask(u, "fourth"), SubscriptionTier::Free).await;
    assert!(
        matches!(refused, Err(Error::BudgetExceeded { .. })),
        "{refused:?}"
    );
    assert_eq!(agent.calls(), 1, "no backend call for the refused one");
    assert_eq!(p.ledger().user_reserved(u), 0);
    p.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_an_active_stream() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let agent = Arc::new(Scripted::new("s", &WORDS, 1_000, End::Done));
    let p = Arc::new(
        builder(repo.clone())
            .backend(agent.clone())
            .build()
            .unwrap(),
    );
    let mut s = p
        .stream(ask(u, "Can we talk later?"), SubscriptionTier::Free)
        .await
        .unwrap();
    assert!(matches!(s.next().await, Some(Ok(StreamItem::Delta(_)))));
    let closing = tokio::spawn({
        let p = p.clone();
        async move { p.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!closing.is_finished(), "shutdown waits for the stream");
    let refused = p.stream(ask(u, "And now?"), SubscriptionTier::Free).await;
    assert!(
        matches!(refused, Err(Error::Overloaded { .. })),
        "{refused:?}"
    );
    let (rest, done) = drain(s).await;
    assert_eq!(rest.len(), WORDS.len() - 1);
    done.unwrap();
    let stats = closing.await.unwrap().unwrap();
    assert_eq!(
        stats.written, 1,
        "the stream's row is written before shutdown ends"
    );
    assert_eq!(rows(&repo, u).await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn time_to_first_token_is_kept_with_percentiles() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    // Call k's first delta comes after 10 ms × k.
    let agent = Arc::new(Scripted::new("s", &WORDS, 10, End::Done).ramp());
    let metrics = Arc::new(InMemoryMetrics::new());
    let p = builder(repo.clone())
        .backend(agent.clone())
        .metrics(metrics.clone())
        .build()
        .unwrap();
    for i in 0..100 {
        let s = p
            .stream(ask(u, &format!("question {i}")), SubscriptionTier::Free)
            .await
            .unwrap();
        drain(s).await.1.unwrap();
    }
    let t = metrics.snapshot().ai_first_token;
    assert_eq!((t.all.count, t.backend.count, t.cache.count), (100, 100, 0));
    assert!(near(t.backend.p50_ms, 500.0), "{t:?}");
    assert!(near(t.backend.p95_ms, 950.0), "{t:?}");
    assert!(near(t.backend.p99_ms, 990.0), "{t:?}");
    assert!(near(t.backend.max_ms, 1000.0), "{t:?}");
    p.shutdown().await.unwrap();
}
