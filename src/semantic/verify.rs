//! The verification tier: a would-be semantic hit (a stored question above the
//! similarity threshold) is served only when every [`Verifier`] of the cache accepts it.
//!
//! - [`RuleVerifier`] (the default): the salience check ([`salience::conflict`]) and
//!   the coaching contrast rules ([`salience::contrast`]); local, microseconds.
//! - [`EmbedderVerifier`]: a second embedding model as a tie-breaker — the pair must
//!   also be similar by its cosine.
//! - [`LlmJudgeVerifier`]: asks a cheap model over any [`AiAgent`] whether one answer
//!   serves both questions; its tokens and cost are counted.
//!
//! Verifiers only ever turn a would-be hit into a miss.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Embedder, cosine, normalise, salience};
use crate::agent::Price;
use crate::agent::{AiAgent, AiRequest, ModelParams};
use crate::domain::{AgentType, UserId};
use crate::error::{Error, Result};

/// A would-be hit, as a [`Verifier`] sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// The question asked now.
    pub question: &'a str,
    /// The stored question whose answer would be served.
    pub stored_question: &'a str,
    /// The stored answer (the agent's output).
    pub stored_answer: &'a Value,
    /// Cosine similarity of the two questions by the cache's embedder.
    pub similarity: f32,
}

/// A verifier's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// The stored answer may be served.
    Accept,
    /// It may not; why.
    Reject(&'static str),
}

/// Decides whether a would-be hit may be served. Object safe.
#[async_trait]
pub trait Verifier: Send + Sync + 'static {
    /// A short name, e.g. `"rules"`.
    fn name(&self) -> &str;

    /// Accepts or rejects `candidate`.
    ///
    /// # Errors
    /// A verifier that cannot decide returns an error; the cache then treats the
    /// candidate as rejected (a miss), never as a hit.
    async fn verify(&self, candidate: &Candidate<'_>) -> Result<Verdict>;

    /// The most one call may cost, in nano-dollars (a paid judge's worst case).
    /// `AiPipeline` holds it against the user's budget before a lookup that may ask
    /// this verifier, and asks paid verifiers only when the hold was granted.
    /// Default: 0 (free).
    fn max_cost_nanos(&self) -> u64 {
        0
    }

    /// As [`verify`](Self::verify), with what the call cost in nano-dollars, which
    /// the cache reports in [`Lookup`](super::Lookup) and the pipeline charges to the
    /// user. Default: `verify`, at no cost; a paid verifier overrides this one.
    ///
    /// # Errors
    /// As [`verify`](Self::verify).
    async fn verify_priced(&self, candidate: &Candidate<'_>) -> Result<(Verdict, u64)> {
        Ok((self.verify(candidate).await?, 0))
    }
}

fn _object_safe(_: &dyn Verifier) {}

#[async_trait]
impl<V: Verifier + ?Sized> Verifier for Arc<V> {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn verify(&self, candidate: &Candidate<'_>) -> Result<Verdict> {
        (**self).verify(candidate).await
    }
    fn max_cost_nanos(&self) -> u64 {
        (**self).max_cost_nanos()
    }
    async fn verify_priced(&self, candidate: &Candidate<'_>) -> Result<(Verdict, u64)> {
        (**self).verify_priced(candidate).await
    }
}

/// Decides, for an audit of the error-budget mode, whether the stored answer would
/// have served the question as well as the fresh one the backend just gave (see
/// [`SemanticCache::judge_audit`](super::SemanticCache::judge_audit)). Object safe.
#[async_trait]
pub trait AnswerComparer: Send + Sync + 'static {
    /// A short name, e.g. `"same-output"`.
    fn name(&self) -> &str;

    /// Whether `stored` answers `question` as well as `fresh` does. What a comparer
    /// spends (an LLM asked) is not counted by the cache or the pipeline: account for
    /// it in the comparer.
    ///
    /// # Errors
    /// A comparer that cannot decide returns an error; the audit is then not counted
    /// either way.
    async fn same(&self, question: &str, stored: &Value, fresh: &Value) -> Result<bool>;
}

/// The default [`AnswerComparer`]: the two outputs are the same JSON once every
/// string in them is trimmed, lower-cased and its whitespace collapsed. Sound but
/// strict: it never calls a different answer right, and calls most rewordings wrong
/// (a backend sampling at temperature > 0 rarely repeats itself word for word), so
/// with it the error-budget mode serves only where the backend answers a paraphrase
/// exactly as it answered the stored question. Hosts with a better judge (an LLM,
/// their users' feedback) plug it in with
/// [`SemanticCacheBuilder::audit_comparer`](super::SemanticCacheBuilder::audit_comparer).
#[derive(Clone, Copy, Debug, Default)]
pub struct SameOutput;

impl SameOutput {
    fn canonical(v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(
                s.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(Self::canonical).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), Self::canonical(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

#[async_trait]
impl AnswerComparer for SameOutput {
    fn name(&self) -> &str {
        "same-output"
    }
    async fn same(&self, _: &str, stored: &Value, fresh: &Value) -> Result<bool> {
        Ok(Self::canonical(stored) == Self::canonical(fresh))
    }
}

/// The local rules: the salience check (numbers, identifiers, names, negation, the
/// people involved) and the coaching contrast rules (polarity, time, ordinals,
/// feelings, general vs mine, added or swapped content). The cache's default
/// verifier.
#[derive(Clone, Copy, Debug, Default)]
pub struct RuleVerifier;

impl RuleVerifier {
    /// Why `a` and `b` must not share an answer, or `None`.
    pub fn check(a: &str, b: &str) -> Option<&'static str> {
        salience::texts_conflict(a, b).or_else(|| salience::contrast(a, b))
    }
}

#[async_trait]
impl Verifier for RuleVerifier {
    fn name(&self) -> &str {
        "rules"
    }
    async fn verify(&self, c: &Candidate<'_>) -> Result<Verdict> {
        Ok(match Self::check(c.stored_question, c.question) {
            Some(why) => Verdict::Reject(why),
            None => Verdict::Accept,
        })
    }
}

/// A second embedder as a tie-breaker: the two questions must also reach `threshold`
/// by its cosine (e.g. a stronger local model, or a hosted one behind
/// `OpenAiCompatibleEmbedder`). Costs one embedding call of two texts per would-be hit.
pub struct EmbedderVerifier {
    embedder: Arc<dyn Embedder>,
    threshold: f32,
}

impl std::fmt::Debug for EmbedderVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedderVerifier")
            .field("embedder", &self.embedder.name())
            .field("threshold", &self.threshold)
            .finish()
    }
}

impl EmbedderVerifier {
    /// Checks with `embedder` at `threshold`.
    ///
    /// # Errors
    /// `InvalidInput` for a threshold outside (0, 1].
    pub fn new(embedder: Arc<dyn Embedder>, threshold: f32) -> Result<Self> {
        if !(threshold > 0.0 && threshold <= 1.0) {
            return Err(Error::invalid(
                "threshold",
                format!("{threshold} is outside (0, 1]"),
            ));
        }
        Ok(Self {
            embedder,
            threshold,
        })
    }
}

#[async_trait]
impl Verifier for EmbedderVerifier {
    fn name(&self) -> &str {
        "embedder"
    }
    async fn verify(&self, c: &Candidate<'_>) -> Result<Verdict> {
        let v = self
            .embedder
            .embed(&[c.stored_question.to_string(), c.question.to_string()])
            .await?;
        let dim = self.embedder.dimension();
        let (Some(a), Some(b)) = (v.first(), v.get(1)) else {
            return Err(Error::Backend {
                what: "verifier embedder".into(),
                retryable: false,
                source: "returned fewer vectors than texts".into(),
            });
        };
        let sim = cosine(&normalise(a.clone(), dim)?, &normalise(b.clone(), dim)?);
        Ok(if sim >= self.threshold {
            Verdict::Accept
        } else {
            Verdict::Reject("second embedder disagrees")
        })
    }
}

/// What an [`LlmJudgeVerifier`] has cost so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeCost {
    /// Questions put to the judge.
    pub calls: u64,
    /// Calls that failed or gave no clear yes or no (each counted as a rejection).
    pub failures: u64,
    /// Prompt tokens billed.
    pub input_tokens: u64,
    /// Completion tokens billed.
    pub output_tokens: u64,
    /// Their cost in nano-dollars, at the judge's price.
    pub cost_nanos: u64,
}

/// Asks a (cheap) model over any [`AiAgent`] whether the answer to the stored question
/// also answers the new one; serves the hit only on a clear "yes". Every call's
/// tokens and cost are counted ([`LlmJudgeVerifier::cost`]); an error, an unclear reply
/// or no reply within [`LlmJudgeVerifier::timeout`] (default 2 s) is a rejection, and
/// counted as a failure. A call abandoned at that timeout reported no usage and is
/// counted as costing nothing, though a provider may still bill it. The request goes out as agent
/// `judge_agent` for `judge_user` (a service account of the host), with the model
/// parameters given — temperature 0 and 3 output tokens by default.
///
/// The questions are users' text: one written to talk the judge into "YES" can at
/// worst get its asker an answer from the asker's own scope (their own earlier
/// answers, or a shared agent's) — never another user's personal answer, since
/// candidates only ever come from the request's scope. Run the judge after the
/// [`RuleVerifier`] (the cache's order), so that only candidates the rules let
/// through cost a call.
pub struct LlmJudgeVerifier {
    agent: Arc<dyn AiAgent>,
    params: ModelParams,
    price: Price,
    judge_agent: AgentType,
    judge_user: UserId,
    timeout: Duration,
    counters: [AtomicU64; 5],
}

impl std::fmt::Debug for LlmJudgeVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmJudgeVerifier")
            .field("agent", &self.agent.name())
            .field("model", &self.params.model)
            .field("cost", &self.cost())
            .finish_non_exhaustive()
    }
}

/// The longest question [`LlmJudgeVerifier`] puts to its judge, in UTF-8 bytes; a
/// longer one (asked or stored) is rejected without a call, so a call's cost is
/// bounded ([`Verifier::max_cost_nanos`]).
pub const MAX_JUDGED_BYTES: usize = 2_000;

/// How long [`LlmJudgeVerifier`] waits for a verdict by default.
pub const DEFAULT_JUDGE_TIMEOUT: Duration = Duration::from_secs(2);

/// The judge's instructions; the two questions follow.
pub const JUDGE_PROMPT: &str = "You check a cache of answers for a relationship-coaching app. \
Question A was answered before. Would exactly that answer also fully and correctly answer \
question B — same person, same situation, same time, same request, same meaning (a \
negation, a different person, number, time, feeling or action asked for means NO)? \
Reply with one word: YES or NO.";

impl LlmJudgeVerifier {
    /// A judge over `agent`, billed at `price`, asking as `judge_agent` for
    /// `judge_user`.
    pub fn new(
        agent: Arc<dyn AiAgent>,
        price: Price,
        judge_agent: AgentType,
        judge_user: UserId,
    ) -> Self {
        Self {
            agent,
            params: ModelParams {
                model: String::new(),
                max_tokens: 3,
                temperature: 0.0,
                system_prompt: Some(JUDGE_PROMPT.to_string()),
                // YES or NO, whatever the kind it asks as.
                text_only: true,
            },
            price,
            judge_agent,
            judge_user,
            timeout: DEFAULT_JUDGE_TIMEOUT,
            counters: Default::default(),
        }
    }

    /// How long the judge may take before its silence counts as "no" (the lookup then
    /// misses instead of waiting on a hung backend). Default: 2 s; a zero duration is
    /// taken as the default.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = if timeout.is_zero() {
            DEFAULT_JUDGE_TIMEOUT
        } else {
            timeout
        };
        self
    }

    /// The model to ask (default: the backend's default).
    #[must_use]
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.params.model = model.into();
        self
    }

    /// Tokens and cost so far.
    pub fn cost(&self) -> JudgeCost {
        let c = |i: usize| self.counters[i].load(Relaxed);
        JudgeCost {
            calls: c(0),
            failures: c(1),
            input_tokens: c(2),
            output_tokens: c(3),
            cost_nanos: c(4),
        }
    }

    /// Reads a yes or no from the judge's output (a string, or `{"text"|"answer": …}`).
    fn read(output: &Value) -> Option<bool> {
        let text = output
            .as_str()
            .or_else(|| output.get("text").and_then(Value::as_str))
            .or_else(|| output.get("answer").and_then(Value::as_str))?;
        let first = text
            .trim_start_matches(|c: char| !c.is_alphabetic())
            .split(|c: char| !c.is_alphabetic())
            .next()?
            .to_ascii_lowercase();
        match first.as_str() {
            "yes" => Some(true),
            "no" => Some(false),
            _ => None,
        }
    }
}

#[async_trait]
impl Verifier for LlmJudgeVerifier {
    fn name(&self) -> &str {
        "llm-judge"
    }
    async fn verify(&self, c: &Candidate<'_>) -> Result<Verdict> {
        Ok(self.verify_priced(c).await?.0)
    }
    fn max_cost_nanos(&self) -> u64 {
        // The instructions, both questions at their longest and the framing, at one
        // token per byte — the most a byte-level tokenizer bills — plus 64 tokens of
        // chat template.
        let bytes = JUDGE_PROMPT.len() + 2 * MAX_JUDGED_BYTES + 16;
        self.price.cost_nanos(crate::agent::Usage {
            input_tokens: u32::try_from(bytes + 64).unwrap_or(u32::MAX),
            output_tokens: self.params.max_tokens,
        })
    }
    async fn verify_priced(&self, c: &Candidate<'_>) -> Result<(Verdict, u64)> {
        if c.question.len() > MAX_JUDGED_BYTES || c.stored_question.len() > MAX_JUDGED_BYTES {
            return Ok((Verdict::Reject("too long to judge"), 0));
        }
        let mut req = AiRequest::new(
            self.judge_user,
            self.judge_agent,
            format!("A: {}\nB: {}", c.stored_question, c.question),
        );
        req.params = self.params.clone();
        self.counters[0].fetch_add(1, Relaxed);
        let resp = match tokio::time::timeout(self.timeout, self.agent.complete(&req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.counters[1].fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "semantic cache: the judge failed; a miss");
                return Ok((Verdict::Reject("judge unavailable"), 0));
            }
            Err(_) => {
                self.counters[1].fetch_add(1, Relaxed);
                tracing::warn!(timeout = ?self.timeout, "semantic cache: the judge did not answer in time; a miss");
                return Ok((Verdict::Reject("judge timed out"), 0));
            }
        };
        self.counters[2].fetch_add(resp.usage.input_tokens.into(), Relaxed);
        self.counters[3].fetch_add(resp.usage.output_tokens.into(), Relaxed);
        let cost = self.price.cost_nanos(resp.usage);
        self.counters[4].fetch_add(cost, Relaxed);
        let verdict = match Self::read(&resp.output) {
            Some(true) => Verdict::Accept,
            Some(false) => Verdict::Reject("judge said no"),
            None => {
                self.counters[1].fetch_add(1, Relaxed);
                Verdict::Reject("judge unclear")
            }
        };
        Ok((verdict, cost))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A judge backend that never answers.
    struct Hung;

    #[async_trait]
    impl AiAgent for Hung {
        fn name(&self) -> &str {
            "hung"
        }
        async fn complete(&self, _: &AiRequest) -> Result<crate::agent::AiResponse> {
            std::future::pending().await
        }
    }

    /// No verdict within the timeout is a rejection, counted as a failure, costing
    /// nothing; the caller waits exactly the timeout (paused clock).
    #[tokio::test(start_paused = true)]
    async fn a_judge_that_never_answers_is_a_rejection_after_its_timeout() {
        let price = Price {
            input_micros_per_1k: 150,
            output_micros_per_1k: 600,
        };
        let judge = LlmJudgeVerifier::new(
            Arc::new(Hung),
            price,
            AgentType::InsightGenerator,
            UserId::new(),
        )
        .timeout(Duration::from_secs(3));
        let answer = json!({"text": "reflect back"});
        let c = Candidate {
            question: "how do I listen better",
            stored_question: "how can I listen better",
            stored_answer: &answer,
            similarity: 0.9,
        };
        let started = tokio::time::Instant::now();
        let v = judge.verify(&c).await.unwrap();
        assert_eq!(v, Verdict::Reject("judge timed out"));
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        let cost = judge.cost();
        assert_eq!((cost.calls, cost.failures, cost.cost_nanos), (1, 1, 0));
    }

    #[test]
    fn judge_replies_are_read_strictly() {
        assert_eq!(LlmJudgeVerifier::read(&json!("YES")), Some(true));
        assert_eq!(
            LlmJudgeVerifier::read(&json!({"text": " no."})),
            Some(false)
        );
        assert_eq!(
            LlmJudgeVerifier::read(&json!({"answer": "Yes, same"})),
            Some(true)
        );
        assert_eq!(LlmJudgeVerifier::read(&json!("yesterday")), None);
        assert_eq!(LlmJudgeVerifier::read(&json!("maybe")), None);
        assert_eq!(LlmJudgeVerifier::read(&json!(3)), None);
    }
}
