//! The AI pipeline keeps its books on the paths an adversarial review of issue 11
//! found: a backend's panic fails only the call it hit (and trips its breaker like
//! any failure), durations and Retry-After values past the clock are refused or end
//! the call instead of panicking, a long answer keeps its row and cost, an answer the
//! provider billed without text is still billed, nothing is charged after shutdown,
//! a high-priority request is never held back by the window, budget holds are priced
//! at the dearest backend, and a database restart of a few seconds loses no row.
//! Tokio's paused clock throughout, except the HTTP test (real loopback server).

mod common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kasama::agent::{AiAgent, AiRequest, AiResponse, Usage};
use kasama::metrics::NoopMetrics;
use kasama::pipeline::{
    AiPipeline, BatchConfig, BreakerConfig, Budgets, Price, PriceTable, RateLimitConfig, Router,
    RouterConfig,
};
use kasama::prelude::*;
use serde_json::json;
use tokio::time::Instant;

const PRICE: Price = Price {
    input_micros_per_1k: 25_000,
    output_micros_per_1k: 75_000,
};

const ONE_CALL: Usage = Usage {
    input_tokens: 120,
    output_tokens: 200,
};

fn cost(p: Price, u: Usage) -> u64 {
    u64::from(u.input_tokens) * p.input_micros_per_1k
        + u64::from(u.output_tokens) * p.output_micros_per_1k
}

/// What a scripted backend does with one request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Act {
    /// Answers with [`ONE_CALL`] usage (billed).
    Answer,
    /// Fails retryably, consuming nothing.
    Fail,
    /// Panics.
    Panic,
    /// 429 with this Retry-After.
    RateLimited(Duration),
    /// Answers with a text of this many characters (billed: 120 in, chars / 4 out).
    Long(usize),
    /// Answers (billed by its provider) but the result is left out of the batch's
    /// results (a batch API that returns one result too few).
    Omit,
}

/// A backend whose `complete` does `single`, and whose `complete_batch` does
/// `batch[i]` for member `i` (or calls `complete` for each when `batch` is empty).
/// It adds up the usage of every answer it produced: what its provider bills.
struct Agent {
    name: String,
    latency: Duration,
    single: Mutex<Act>,
    batch: Mutex<Vec<Act>>,
    calls: AtomicUsize,
    input: AtomicU64,
    output: AtomicU64,
}

impl Agent {
    fn new(name: &str, latency_ms: u64, single: Act) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            latency: Duration::from_millis(latency_ms),
            single: Mutex::new(single),
            batch: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            input: AtomicU64::new(0),
            output: AtomicU64::new(0),
        })
    }
    fn script_batch(&self, acts: Vec<Act>) {
        *self.batch.lock().unwrap() = acts;
    }
    fn billed(&self, p: Price) -> u64 {
        self.input.load(SeqCst) * p.input_micros_per_1k
            + self.output.load(SeqCst) * p.output_micros_per_1k
    }
    fn act(&self, req: &AiRequest, act: Act) -> kasama::Result<AiResponse> {
        let (output, usage) = match act {
            Act::Fail => {
                return Err(Error::Backend {
                    what: "scripted".into(),
                    retryable: true,
                    source: "scripted failure".into(),
                });
            }
            Act::Panic => panic!("the backend fell over"),
            Act::RateLimited(d) => return Err(Error::RateLimited { retry_after: d }),
            Act::Answer | Act::Omit => (
                json!({ "text": format!("answer to {}", req.input) }),
                ONE_CALL,
            ),
            Act::Long(n) => (
                json!({ "text": "x".repeat(n) }),
                Usage {
                    input_tokens: 120,
                    output_tokens: (n / 4) as u32,
                },
            ),
        };
        self.input.fetch_add(u64::from(usage.input_tokens), SeqCst);
        self.output
            .fetch_add(u64::from(usage.output_tokens), SeqCst);
        Ok(AiResponse {
            output,
            usage,
            usage_estimated: false,
            model: "scripted-1".into(),
            backend: String::new(),
            latency: self.latency,
        })
    }
}

#[async_trait]
impl AiAgent for Agent {
    fn name(&self) -> &str {
        &self.name
    }
    async fn complete(&self, req: &AiRequest) -> kasama::Result<AiResponse> {
        self.calls.fetch_add(1, SeqCst);
        tokio::time::sleep(self.latency).await;
        let act = *self.single.lock().unwrap();
        self.act(req, act)
    }
    async fn complete_batch(&self, reqs: &[AiRequest]) -> Vec<kasama::Result<AiResponse>> {
        let script = self.batch.lock().unwrap().clone();
        if script.is_empty() {
            let mut out = Vec::new();
            for r in reqs {
                out.push(self.complete(r).await);
            }
            return out;
        }
        self.calls.fetch_add(1, SeqCst);
        tokio::time::sleep(self.latency).await;
        let mut out = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            let act = script.get(i).copied().unwrap_or(Act::Answer);
            let res = self.act(r, act);
            if act != Act::Omit {
                out.push(res);
            }
        }
        out
    }
}

async fn users(repo: &Arc<dyn Repository>, n: usize) -> Vec<UserId> {
    let mut v = Vec::new();
    for i in 0..n {
        let u = UserId::new();
        repo.create_profile(
            Actor::Service,
            NewProfile::new(u, format!("r{i}-{u}@example.com"), format!("R{i}")),
        )
        .await
        .unwrap();
        v.push(u);
    }
    v
}

fn memory() -> Arc<dyn Repository> {
    Arc::new(InMemoryRepository::new())
}

fn builder(repo: Arc<dyn Repository>) -> kasama::pipeline::AiPipelineBuilder {
    AiPipeline::builder(repo)
        .rate_limits(RateLimitConfig::unlimited())
        .budgets(Budgets::unlimited())
        .prices(PriceTable {
            default: PRICE,
            ..Default::default()
        })
}

async fn rows(repo: &Arc<dyn Repository>, u: UserId) -> Vec<AiInteraction> {
    repo.list_interactions(
        Actor::Service,
        u,
        Page {
            limit: 500,
            offset: 0,
        },
    )
    .await
    .unwrap()
}

fn ask(u: UserId, q: &str) -> AiRequest {
    AiRequest::new(u, AgentType::LearningCoach, q.to_string())
}

// ---- a panic while retrying one member wipes its batch mates' billed answers ----

/// A batch of two goes to the backend; member 0 is answered (the provider bills it),
/// member 1 fails retryably and its retry panics. The panic is caught around the whole
/// `call_batch`, so member 0's answer is thrown away: its caller gets an error and the
/// ledger never sees a cost the provider billed.
#[tokio::test(start_paused = true)]
async fn a_panic_while_retrying_one_member_does_not_wipe_its_batch_mates_answer() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let a = Agent::new("a", 100, Act::Panic);
    a.script_batch(vec![Act::Answer, Act::Fail]);
    let p = builder(repo.clone())
        .backend(a.clone())
        .batching(BatchConfig {
            window: Duration::from_millis(50),
            max_batch: 2,
            ..Default::default()
        })
        .build()
        .unwrap();
    let (r0, r1) = tokio::join!(
        p.complete(ask(u, "question zero"), SubscriptionTier::Free),
        p.complete(ask(u, "question one"), SubscriptionTier::Free),
    );
    assert!(r1.is_err());
    let billed = a.billed(PRICE);
    assert_eq!(
        billed,
        cost(PRICE, ONE_CALL),
        "the provider billed member 0"
    );
    let _ = p.shutdown().await;
    assert!(r0.is_ok(), "member 0 was answered by the backend: {r0:?}");
    assert_eq!(
        p.ledger().total().cost_nanos,
        billed,
        "the ledger holds what the backend billed"
    );
}

// ---- a backend that panics every time is never tripped and stays preferred ----

/// A backend that fails (an `Err`) is tripped after 5 consecutive failures and its
/// requests are retried on the other backend. One that *panics* is neither: the
/// abandoned call guard treats every panic as "caller went away", so the breaker never
/// counts it, the EWMA never sees it (it stays the fastest-looking backend) and the
/// request is not retried elsewhere.
#[tokio::test(start_paused = true)]
async fn a_backend_that_always_panics_is_tripped_and_avoided_like_one_that_fails() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let bad = Agent::new("bad", 0, Act::Panic);
    let good = Agent::new("good", 100, Act::Answer);
    let p = builder(repo)
        .backend(bad.clone())
        .backend(good.clone())
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .build()
        .unwrap();
    let mut failed = 0;
    for i in 0..30 {
        if p.complete(ask(u, &format!("question {i}")), SubscriptionTier::Free)
            .await
            .is_err()
        {
            failed += 1;
        }
    }
    let status = p.backends();
    let bad_status = status.iter().find(|b| b.name == "bad").unwrap();
    assert!(
        failed <= 5 && bad_status.trips >= 1,
        "{failed} of 30 requests failed on a backend that panics every time \
         (a backend that returns errors instead: 0 failed); its status: {bad_status:?}"
    );
}

// ---- a huge Retry-After panics the router ----

/// `Retry-After: 18446744073709551615` (OpenAiCompatibleAgent parses it to
/// `Duration::from_secs(u64::MAX)`) makes `Instant::now() + wait` overflow in
/// `Router::call_until`: a panic, not a `RateLimited` error (inside a batch it also
/// wipes the batch mates' answers, see above).
#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_from_a_backend_is_an_error_not_a_panic() {
    let a = Agent::new("a", 10, Act::RateLimited(Duration::from_secs(u64::MAX)));
    let r = Arc::new(
        Router::new(
            vec![(a as Arc<dyn AiAgent>, PRICE)],
            RouterConfig::default(),
            Arc::new(NoopMetrics),
        )
        .unwrap(),
    );
    let req = ask(UserId::new(), "slow down?");
    let out = tokio::spawn(async move { r.call(&req).await }).await;
    let out = out.expect("Router::call panicked on a backend's Retry-After");
    assert!(matches!(out, Err(Error::RateLimited { .. })), "{out:?}");
}

// ---- a long answer is billed but its row is refused: the cost leaves the books ----

/// The answer's output over 64 KiB of JSON (an answer near `max_tokens` = 32,768 is
/// ~130 KB): the ledger charges the call, but `NewAiInteraction::validate` refuses the
/// row, the recorder sets it aside as "rejected", and the interaction log — the only
/// history of money per user per month, since the ledger forgets past days — never
/// holds the cost. The row should be kept with its output truncated.
async fn a_long_answer_is_recorded_with_its_cost(repo: Arc<dyn Repository>) {
    let u = users(&repo, 1).await[0];
    let a = Agent::new("a", 10, Act::Long(70_000));
    let p = builder(repo.clone()).backend(a.clone()).build().unwrap();
    let mut req = ask(u, "Tell me everything about listening.");
    req.params.max_tokens = 32_768;
    let o = p.complete(req, SubscriptionTier::Free).await.unwrap();
    assert_eq!(o.cost_nanos, a.billed(PRICE));
    let s = p.shutdown().await;
    let rows = rows(&repo, u).await;
    assert_eq!(
        rows.iter().map(|r| r.cost_nanos as u64).collect::<Vec<_>>(),
        vec![o.cost_nanos],
        "the billed call has its row with its cost (recorder: {s:?})"
    );
}

#[tokio::test(start_paused = true)]
async fn a_long_answer_is_recorded_with_its_cost_in_memory() {
    a_long_answer_is_recorded_with_its_cost(memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_answer_is_recorded_with_its_cost_in_postgres() {
    let Some(db) = common::pg().await else { return };
    a_long_answer_is_recorded_with_its_cost(Arc::new(db.repo.clone())).await;
    db.finish().await;
}

// ---- budgets: reservations priced at the table's default, calls at the backend's ----

/// The reservation is priced by `prices.price(req.params.model)` (the default for the
/// default model `""`), the call by the backend's own price (`backend_priced`) or the
/// reported model's. With a backend 100× the default, ten concurrent requests all fit
/// under a cap that one call passes: the user spends 20 times the cap. The ledger's
/// docs promise the admitted calls pass the cap "by at most their own cost".
#[tokio::test(start_paused = true)]
async fn concurrent_calls_on_a_pricier_backend_pass_the_budget_by_at_most_one_call() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let expensive = Price {
        input_micros_per_1k: 100 * PRICE.input_micros_per_1k,
        output_micros_per_1k: 100 * PRICE.output_micros_per_1k,
    };
    let one = cost(expensive, ONE_CALL);
    let cap = one / 2;
    let a = Agent::new("a", 100, Act::Answer);
    let p = Arc::new(
        builder(repo)
            .backend_priced(a.clone(), expensive)
            .budgets(Budgets {
                free_user_daily: Some(cap),
                ..Budgets::unlimited()
            })
            .build()
            .unwrap(),
    );
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                p.complete(ask(u, &format!("question {i}")), SubscriptionTier::Free)
                    .await
            })
        })
        .collect();
    let mut answered = 0;
    for t in tasks {
        answered += usize::from(t.await.unwrap().is_ok());
    }
    let spent = p.ledger().user_today(u);
    assert_eq!(spent, a.billed(expensive));
    assert!(
        spent <= cap + one,
        "spent {spent} n$ against a daily cap of {cap} n$ (one call costs {one} n$): \
         {answered} of 10 concurrent calls admitted"
    );
}

// ---- a failed attempt the provider billed is not billed ----

/// An OpenAI-style server answers 200 with usage but no `message.content` (a refusal:
/// `content: null, refusal: "…"`, or a tool call). The provider bills the tokens; the
/// agent turns it into a *retryable* error, the router tries twice more (billed twice
/// more), and the ledger records 0.
#[cfg(feature = "openai")]
#[tokio::test]
async fn an_answer_the_provider_billed_but_the_agent_could_not_read_is_still_billed() {
    use kasama::agent::OpenAiCompatibleAgent;
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "model": "coach-model",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": null, "refusal": "I can't help with that."
            }}],
            "usage": {"prompt_tokens": 31, "completion_tokens": 12, "total_tokens": 43}
        })))
        .mount(&server)
        .await;
    let agent = OpenAiCompatibleAgent::builder(format!("{}/v1", server.uri()))
        .api_key("sk-test")
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let p = builder(repo)
        .backend(Arc::new(agent))
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .routing(RouterConfig {
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(2),
            ..Default::default()
        })
        .build()
        .unwrap();
    let r = p
        .complete(
            ask(u, "How do I win every argument?"),
            SubscriptionTier::Free,
        )
        .await;
    let calls = server.received_requests().await.unwrap().len() as u64;
    let billed = calls
        * cost(
            PRICE,
            Usage {
                input_tokens: 31,
                output_tokens: 12,
            },
        );
    let _ = p.shutdown().await;
    assert_eq!(
        p.ledger().total().cost_nanos,
        billed,
        "{calls} billed responses from the provider; the request ended {r:?}"
    );
}

// ---- a batch API that returns one result too few: its answers are billed twice ----

/// `complete_batch` answers members 0 and 1 but leaves member 2 out: the router
/// throws away both billed answers ("wrong number of results") and asks all three
/// again one by one. The provider bills five answers, the ledger three.
#[tokio::test(start_paused = true)]
#[ignore = "keeping a short batch's answers by position would hand a misaligned answer \
            to another member (this very backend omits a middle one); see CHANGELOG"]
async fn answers_of_a_short_batch_are_kept_not_bought_twice() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let a = Agent::new("a", 100, Act::Answer);
    a.script_batch(vec![Act::Answer, Act::Answer, Act::Omit]);
    let p = builder(repo)
        .backend(a.clone())
        .batching(BatchConfig {
            window: Duration::from_millis(50),
            max_batch: 3,
            ..Default::default()
        })
        .build()
        .unwrap();
    let (r0, r1, r2) = tokio::join!(
        p.complete(ask(u, "q0"), SubscriptionTier::Free),
        p.complete(ask(u, "q1"), SubscriptionTier::Free),
        p.complete(ask(u, "q2"), SubscriptionTier::Free),
    );
    assert!(r0.is_ok() && r1.is_ok() && r2.is_ok());
    let _ = p.shutdown().await;
    assert_eq!(
        p.ledger().total().cost_nanos,
        a.billed(PRICE),
        "the ledger holds what the backend billed"
    );
}

// ---- the recorder gives up during a routine database restart ----

/// `record_interactions` fails as a restarting PostgreSQL does (connection refused,
/// retryable) until `up_at`.
struct Restarting {
    up_at: Instant,
    refused: AtomicUsize,
}

#[async_trait]
impl common::RecordHook for Restarting {
    async fn record_interactions(
        &self,
        inner: &InMemoryRepository,
        a: Actor,
        b: &[NewAiInteraction],
    ) -> kasama::Result<u64> {
        if Instant::now() < self.up_at {
            self.refused.fetch_add(1, SeqCst);
            return Err(Error::Backend {
                what: "database connection".into(),
                retryable: true,
                source: "connection refused".into(),
            });
        }
        inner.record_interactions(a, b).await
    }
}

/// PostgreSQL restarting for 3 s (a minor-version upgrade, a failover, a container
/// restart) with the buffer nearly empty: the recorder's default 5 attempts back off
/// 0.1 + 0.2 + 0.4 + 0.8 s = 1.5 s and give the rows up as "failed". Every
/// interaction (and its cost) made during a few seconds of database downtime is lost,
/// though the buffer (100,000 rows) had all the room to hold them until it came back.
#[tokio::test(start_paused = true)]
async fn a_three_second_database_restart_loses_no_interaction() {
    let repo = Arc::new(common::Hooked {
        inner: InMemoryRepository::new(),
        hook: Restarting {
            up_at: Instant::now() + Duration::from_secs(3),
            refused: AtomicUsize::new(0),
        },
    });
    let dynrepo: Arc<dyn Repository> = repo.clone();
    let u = users(&dynrepo, 1).await[0];
    let p = builder(dynrepo.clone())
        .backend(Agent::new("a", 10, Act::Answer))
        .build()
        .unwrap();
    for i in 0..10 {
        p.complete(ask(u, &format!("question {i}")), SubscriptionTier::Free)
            .await
            .unwrap();
    }
    let spent = p.ledger().total().cost_nanos;
    let s = p.shutdown().await;
    assert!(repo.hook.refused.load(SeqCst) > 0, "the restart happened");
    let rows = rows(&dynrepo, u).await;
    assert_eq!(
        (
            rows.len(),
            rows.iter().map(|r| r.cost_nanos as u64).sum::<u64>()
        ),
        (10, spent),
        "rows made during a 3 s restart; recorder: {s:?}"
    );
}

// ---- durations too long for the clock ----

/// `window: Duration::MAX` ("only send full batches") passes `build()`; the first
/// request's `Instant::now() + window` then panics in `Batcher::enqueue` — after its
/// claim (and budget reservation) went into the waiters map and `pending`. The
/// reservation is never settled nor released, and `shutdown()` waits for ever.
#[tokio::test(start_paused = true)]
async fn a_batch_window_past_the_clock_is_refused_or_leaks_nothing() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let built = builder(repo)
        .backend(Agent::new("a", 10, Act::Answer))
        .batching(BatchConfig {
            window: Duration::MAX,
            max_batch: 2,
            ..Default::default()
        })
        .build();
    let Ok(p) = built else { return }; // refused, naming the field: fine
    let p = Arc::new(p);
    let joined = {
        let p = p.clone();
        tokio::spawn(async move { p.complete(ask(u, "alone"), SubscriptionTier::Free).await }).await
    };
    let held = p.ledger().user_reserved(u);
    let shut = tokio::time::timeout(Duration::from_secs(60), p.shutdown()).await;
    assert!(
        joined.is_ok() && held == 0 && shut.is_ok(),
        "complete panicked: {}; {held} n$ still reserved; shutdown finished: {}",
        joined.is_err(),
        shut.is_ok()
    );
}

/// `routing.deadline = Duration::MAX` ("no overall deadline") and
/// `breaker.cool_down = Duration::MAX` ("stay open until restarted") pass `build()`,
/// then `Instant::now() + …` panics on every call (deadline) or on the first trip
/// (cool-down): every request fails as "the backend call panicked". `build()` should
/// refuse them naming the field, as it does a zero.
#[tokio::test(start_paused = true)]
async fn durations_past_the_clock_are_refused_by_build() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let deadline = builder(repo.clone())
        .backend(Agent::new("a", 10, Act::Answer))
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .routing(RouterConfig {
            deadline: Duration::MAX,
            ..Default::default()
        })
        .build();
    if let Ok(p) = deadline {
        let r = p
            .complete(ask(u, "any deadline"), SubscriptionTier::Free)
            .await;
        panic!("routing.deadline = Duration::MAX accepted; a request then ends {r:?}");
    }
    let cool = builder(repo)
        .backend(Agent::new("b", 10, Act::Fail))
        .batching(BatchConfig {
            window: Duration::ZERO,
            ..Default::default()
        })
        .routing(RouterConfig {
            max_attempts: 1,
            breaker: BreakerConfig {
                consecutive_failures: 1,
                cool_down: Duration::MAX,
                ..Default::default()
            },
            ..Default::default()
        })
        .build();
    if let Ok(p) = cool {
        let r = p.complete(ask(u, "trip me"), SubscriptionTier::Free).await;
        panic!("breaker.cool_down = Duration::MAX accepted; a failing call then ends {r:?}");
    }
}

// ---- shutdown: later requests are answered and billed, their rows lost uncounted ----

/// After `shutdown()` the pipeline still takes requests: it calls the backend, charges
/// the ledger, and drops the row on the floor (the recorder is gone) without counting
/// it anywhere — not in `RecorderStats`, not in `interactions_lost`. A host that shuts
/// the pipeline down before its HTTP server drains (the usual order is the other way,
/// but nothing enforces it) bills users for calls the books never hold.
#[tokio::test(start_paused = true)]
async fn a_request_after_shutdown_is_refused_or_its_lost_row_counted() {
    use kasama::metrics::InMemoryMetrics;
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let metrics = Arc::new(InMemoryMetrics::new());
    let p = builder(repo.clone())
        .backend(Agent::new("a", 10, Act::Answer))
        .metrics(metrics.clone())
        .build()
        .unwrap();
    p.shutdown().await.unwrap();
    let r = p
        .complete(ask(u, "late question"), SubscriptionTier::Free)
        .await;
    if r.is_err() {
        return; // refused after shutdown: fine
    }
    let lost = metrics.snapshot().interactions_lost;
    let rows = rows(&repo, u).await.len();
    assert!(
        rows == 1 || lost.dropped + lost.failed == 1,
        "answered and charged {} n$ after shutdown: {rows} rows, lost counted {lost:?}",
        p.ledger().total().cost_nanos
    );
}

// ---- a high-priority request that joins a queued identical one waits for the window ----

/// "High priority flushes at once" — unless an identical medium request is already
/// queued: the high one joins its waiters and waits out the 150 ms window with it.
#[tokio::test(start_paused = true)]
async fn a_high_priority_request_joining_a_queued_one_is_not_held_back() {
    let repo = memory();
    let u = users(&repo, 1).await[0];
    let p = Arc::new(
        builder(repo)
            .backend(Agent::new("a", 100, Act::Answer))
            .build()
            .unwrap(),
    );
    let medium = {
        let p = p.clone();
        tokio::spawn(async move {
            p.complete(ask(u, "same question"), SubscriptionTier::Free)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    let mut high = ask(u, "same question");
    high.priority = PriorityLevel::High;
    let t = Instant::now();
    p.complete(high, SubscriptionTier::Free).await.unwrap();
    assert_eq!(
        t.elapsed(),
        Duration::from_millis(100),
        "a high-priority request held back by the batch window"
    );
    medium.await.unwrap().unwrap();
}
