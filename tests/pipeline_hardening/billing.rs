//! What the provider billed stays on the books: a long answer keeps its row and cost,
//! budget holds are priced at the dearest backend, an answer billed without readable
//! text is still billed, and a short batch's answers are not bought twice.

use std::sync::Arc;
use std::time::Duration;

use kasama::agent::Usage;
use kasama::pipeline::{BatchConfig, Budgets, Price, RouterConfig};
use kasama::prelude::*;
use serde_json::json;

use super::{Act, Agent, ask, cost};
use crate::common::pipeline::{ONE_CALL, PRICE, builder, memory, rows, users};

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
    let Some(db) = crate::common::pg().await else {
        return;
    };
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
