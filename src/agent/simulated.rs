//! [`SimulatedAgent`]: a deterministic stand-in for an LLM backend.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::time::Instant;

use super::{
    AiAgent, AiRequest, AiResponse, AiStream, StreamEvent, Usage, estimate_tokens, output_text,
    token_pieces,
};
use crate::domain::AgentType;
use crate::error::{Error, Result};

/// A simulated backend: seeded latency (log-normal from a median and a p99), token
/// counts, failures at a given rate, outage windows, and plausible per-agent answers.
///
/// Everything random is drawn from the seed, the request's content and how many times
/// that same request was seen, so a run is reproducible however requests interleave.
/// Latency is slept on tokio's clock: under `start_paused` tests it costs no real time.
///
/// # Streaming
///
/// [`AiAgent::stream`] makes the same draws as [`AiAgent::complete`] (a request's
/// n-th call, streamed or not, gets the same latency, failure and answer) and counts
/// in [`calls`](SimulatedAgent::calls). The answer's text
/// ([`output_text`](super::output_text) of the output `complete` returns) arrives in
/// [`token_pieces`](super::token_pieces): the first piece after [`SIMULATED_TTFT_SHARE`] (30 %)
/// of the drawn latency — a call that fails (failure rate, outage) fails then, before
/// the stream starts — the others evenly over the remaining 70 %, and `Done`, with the
/// usage `complete` reports, exactly at the drawn latency.
///
/// Failures after the first byte, for testing what consumes streams:
/// [`fail_streams_after`](SimulatedAgentBuilder::fail_streams_after) (every stream,
/// after a fixed number of pieces) and
/// [`stream_failure_rate`](SimulatedAgentBuilder::stream_failure_rate) (a drawn share
/// of streams, after a drawn number of pieces). Either ends the stream with a
/// retryable [`Error::Backend`] at the moment the next event was due.
#[derive(Debug)]
pub struct SimulatedAgent {
    name: String,
    seed: u64,
    median: Duration,
    p99: Duration,
    failure_rate: f64,
    outages: Vec<(Duration, Duration)>,
    model: String,
    serves: Option<Vec<AgentType>>,
    stream_failure_rate: f64,
    fail_streams_after: Option<usize>,
    started: Instant,
    seen: Mutex<HashMap<u64, u32>>,
    calls: std::sync::atomic::AtomicU64,
}

/// Builder for [`SimulatedAgent`].
#[derive(Clone, Debug)]
#[must_use]
pub struct SimulatedAgentBuilder {
    name: String,
    seed: u64,
    median: Duration,
    p99: Duration,
    failure_rate: f64,
    outages: Vec<(Duration, Duration)>,
    model: String,
    serves: Option<Vec<AgentType>>,
    stream_failure_rate: f64,
    fail_streams_after: Option<usize>,
}

/// The share of a simulated call's latency before its first streamed piece (the
/// "time to first token"): 30 %.
pub const SIMULATED_TTFT_SHARE: f64 = 0.3;

impl SimulatedAgentBuilder {
    /// Seed of every random draw. Default: 0.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Median and 99th-percentile latency. Default: 800 ms and 1,800 ms. Zero and zero
    /// gives an instant backend.
    pub fn latency(mut self, median: Duration, p99: Duration) -> Self {
        self.median = median;
        self.p99 = p99;
        self
    }

    /// Share of calls that fail with a retryable error, 0–1. Default: 0.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = rate;
        self
    }

    /// A window, from `start` after creation for `length`, in which every call fails.
    pub fn outage(mut self, start: Duration, length: Duration) -> Self {
        self.outages.push((start, length));
        self
    }

    /// The model name it reports. Default: `"sim-1"`.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Serve only these agent kinds. Default: all.
    pub fn serves(mut self, agents: &[AgentType]) -> Self {
        self.serves = Some(agents.to_vec());
        self
    }

    /// Share of streams, 0–1, that fail after their first byte: a stream drawn to
    /// fail (from the seed, like every draw) ends with a retryable [`Error::Backend`]
    /// after a drawn number of its pieces, at least one, in place of the next piece or
    /// of `Done`. Calls to `complete` are not affected. Default: 0.
    pub fn stream_failure_rate(mut self, rate: f64) -> Self {
        self.stream_failure_rate = rate;
        self
    }

    /// Every stream fails after `chunks` pieces of text: its next event (a piece, or
    /// `Done` when the answer has no more than `chunks` pieces) is a retryable
    /// [`Error::Backend`], at the moment that event was due. `0` fails a stream after
    /// it started but before any text. Takes precedence over
    /// [`stream_failure_rate`](Self::stream_failure_rate). Calls to `complete` are not
    /// affected. Default: off.
    pub fn fail_streams_after(mut self, chunks: usize) -> Self {
        self.fail_streams_after = Some(chunks);
        self
    }

    /// # Errors
    /// `InvalidInput` for a failure rate or stream failure rate outside 0–1 or a p99
    /// below the median.
    pub fn build(self) -> Result<SimulatedAgent> {
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return Err(Error::invalid("failure_rate", "must be within 0..=1"));
        }
        if !(0.0..=1.0).contains(&self.stream_failure_rate) {
            return Err(Error::invalid(
                "stream_failure_rate",
                "must be within 0..=1",
            ));
        }
        if self.p99 < self.median {
            return Err(Error::invalid(
                "latency",
                "p99 must not be below the median",
            ));
        }
        if self.name.is_empty() {
            return Err(Error::invalid("name", "must not be empty"));
        }
        Ok(SimulatedAgent {
            name: self.name,
            seed: self.seed,
            median: self.median,
            p99: self.p99,
            failure_rate: self.failure_rate,
            outages: self.outages,
            model: self.model,
            serves: self.serves,
            stream_failure_rate: self.stream_failure_rate,
            fail_streams_after: self.fail_streams_after,
            started: Instant::now(),
            seen: Mutex::new(HashMap::new()),
            calls: Default::default(),
        })
    }
}

/// SplitMix64: a small, well-mixed, deterministic generator.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

impl SimulatedAgent {
    /// A builder for a backend called `name`.
    pub fn builder(name: impl Into<String>) -> SimulatedAgentBuilder {
        SimulatedAgentBuilder {
            name: name.into(),
            seed: 0,
            median: Duration::from_millis(800),
            p99: Duration::from_millis(1800),
            failure_rate: 0.0,
            outages: Vec::new(),
            model: "sim-1".into(),
            serves: None,
            stream_failure_rate: 0.0,
            fail_streams_after: None,
        }
    }

    /// An instant, never-failing backend called `name`.
    pub fn instant(name: impl Into<String>) -> Self {
        Self::builder(name)
            .latency(Duration::ZERO, Duration::ZERO)
            .build()
            .expect("valid settings")
    }

    /// Calls answered or failed so far, streams included.
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn draws(&self, req: &AiRequest) -> [u64; 5] {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        req.user_id.hash(&mut h);
        req.agent.hash(&mut h);
        req.input.to_string().hash(&mut h);
        req.params.model.hash(&mut h);
        req.fingerprint().hash(&mut h);
        let key = h.finish();
        let n = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let n = seen.entry(key).or_insert(0);
            *n += 1;
            *n
        };
        let base = mix(self.seed ^ mix(key) ^ mix(u64::from(n)));
        let d2 = mix(base);
        let d3 = mix(d2);
        let d4 = mix(d3);
        [base, d2, d3, d4, mix(d4)]
    }

    fn latency(&self, u1: f64, u2: f64) -> Duration {
        if self.median.is_zero() {
            return Duration::ZERO;
        }
        // Log-normal: the p99 sits 2.326 standard deviations above the median.
        let sigma = (self.p99.as_secs_f64() / self.median.as_secs_f64()).ln() / 2.326;
        let z = (-2.0 * u1.max(1e-12).ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        Duration::from_secs_f64(self.median.as_secs_f64() * (sigma * z).exp())
    }

    fn in_outage(&self, at: Instant) -> bool {
        let t = at.saturating_duration_since(self.started);
        self.outages.iter().any(|(s, l)| t >= *s && t < *s + *l)
    }
}

fn answer(agent: AgentType, pick: u64, question: &str) -> serde_json::Value {
    if agent == AgentType::AssessmentAnalyst {
        return analysis(pick);
    }
    let (field, options): (&str, &[&str]) = match agent {
        AgentType::AssessmentAnalyst => unreachable!("answered above"),
        AgentType::LearningCoach => (
            "advice",
            &[
                "Try ten minutes of active listening tonight: reflect back before you reply.",
                "Start with the breathing-together practice before difficult conversations.",
                "Pick one appreciation to share each day this week and note how it lands.",
            ],
        ),
        AgentType::ProgressTracker => (
            "summary",
            &[
                "You practised on five of the last seven days; your streak is growing.",
                "Your mood after sessions rose by about one point on average this month.",
                "Communication practices are your strongest area; conflict skills are next.",
            ],
        ),
        AgentType::InsightGenerator => (
            "insight",
            &[
                "Your best conversations happen after shared activities, not at the end of the day.",
                "Short daily check-ins correlate with your highest relationship ratings.",
                "Stressful weeks show fewer completed practices; plan lighter ones then.",
            ],
        ),
        AgentType::CommunicationAdvisor => (
            "suggestion",
            &[
                "Open with how you feel rather than what they did: \"I felt alone when…\".",
                "Ask one curious question before offering a solution.",
                "Agree on a pause word you can both use when a talk gets heated.",
            ],
        ),
    };
    json!({
        field: options[(pick % options.len() as u64) as usize],
        "about": question.chars().take(120).collect::<String>(),
    })
}

/// The assessment analyst's structured answer
/// ([`AssessmentAnalysis`](super::structured::AssessmentAnalysis)).
fn analysis(pick: u64) -> serde_json::Value {
    const INSIGHTS: [&str; 3] = [
        "Your answers point to a secure attachment style with some anxious moments under stress.",
        "You value quality time most; small daily rituals will matter more than big gestures.",
        "Conflict tends to escalate when needs go unspoken; naming them early helps.",
    ];
    const STRENGTHS: [&str; 3] = [
        "You listen closely when your partner is upset.",
        "You repair quickly after a disagreement.",
        "You say thank you often and mean it.",
    ];
    const GROWTH: [&str; 3] = [
        "Saying what you need before frustration builds.",
        "Slowing down when a talk gets heated.",
        "Asking for reassurance directly.",
    ];
    const PRACTICES: [&str; 3] = [
        "Daily ten-minute check-in",
        "Active listening: reflect before you reply",
        "Weekly appreciation letter",
    ];
    let i = (pick % 3) as usize;
    json!({
        "insights": [INSIGHTS[i]],
        "strengths": [STRENGTHS[i], STRENGTHS[(i + 1) % 3]],
        "growth_areas": [GROWTH[i]],
        "suggested_practices": [PRACTICES[i], PRACTICES[(i + 2) % 3]],
    })
}

#[async_trait]
impl AiAgent for SimulatedAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn serves(&self, agent: AgentType) -> bool {
        self.serves.as_ref().is_none_or(|s| s.contains(&agent))
    }

    async fn complete(&self, req: &AiRequest) -> Result<AiResponse> {
        let call = self.call(req)?;
        if !call.latency.is_zero() {
            tokio::time::sleep(call.latency).await;
        }
        if call.fails {
            return Err(self.failure("simulated failure (503)"));
        }
        let mut response = call.response;
        response.latency = call.start.elapsed();
        Ok(response)
    }

    async fn stream(&self, req: &AiRequest) -> Result<AiStream> {
        let call = self.call(req)?;
        let ttft = call.latency.mul_f64(SIMULATED_TTFT_SHARE);
        tokio::time::sleep_until(call.start + ttft).await;
        if call.fails {
            return Err(self.failure("simulated failure (503)"));
        }
        let pieces: Vec<String> = token_pieces(&output_text(&call.response.output))
            .into_iter()
            .map(str::to_string)
            .collect();
        let n = pieces.len();
        let fail_at = match self.fail_streams_after {
            Some(k) => Some(k.min(n)),
            None if unit(call.stream_draw) < self.stream_failure_rate => {
                // After at least one piece (when there is one), at most all of them.
                Some(if n == 0 {
                    0
                } else {
                    1 + (mix(call.stream_draw) % n as u64) as usize
                })
            }
            None => None,
        };
        let state = Emit {
            pieces,
            next: 0,
            fail_at,
            failure: Some(self.failure("simulated failure mid-stream")),
            start: call.start,
            ttft,
            latency: call.latency,
            response: Some(call.response),
        };
        Ok(AiStream::new(futures_util::stream::unfold(
            state,
            |mut st| async move {
                let i = st.next;
                let n = st.pieces.len();
                if i > n {
                    return None;
                }
                st.next += 1;
                // Piece i at ttft + i/n of the rest; `Done` at the whole latency.
                let due = if i < n {
                    let rest = st.latency.saturating_sub(st.ttft);
                    st.start + st.ttft + rest.mul_f64(i as f64 / n as f64)
                } else {
                    st.start + st.latency
                };
                tokio::time::sleep_until(due).await;
                if st.fail_at == Some(i) {
                    st.next = n + 1;
                    return st.failure.take().map(|e| (Err(e), st));
                }
                if i < n {
                    let piece = std::mem::take(&mut st.pieces[i]);
                    return Some((Ok(StreamEvent::Delta(piece)), st));
                }
                let mut response = st.response.take()?;
                response.latency = st.start.elapsed();
                Some((Ok(StreamEvent::Done(response)), st))
            },
        )))
    }
}

/// One call's draws, shared by `complete` and `stream`.
struct Call {
    start: Instant,
    latency: Duration,
    /// Fails before answering (failure rate or outage).
    fails: bool,
    /// Decides whether and where a stream fails mid-way.
    stream_draw: u64,
    /// The answer (its latency set when it is given).
    response: AiResponse,
}

/// A simulated stream's state.
struct Emit {
    pieces: Vec<String>,
    next: usize,
    fail_at: Option<usize>,
    failure: Option<Error>,
    start: Instant,
    ttft: Duration,
    latency: Duration,
    response: Option<AiResponse>,
}

impl SimulatedAgent {
    /// Validates, counts and draws one call.
    fn call(&self, req: &AiRequest) -> Result<Call> {
        req.validate()?;
        let start = Instant::now();
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let [a, b, c, d, e] = self.draws(req);
        let latency = self.latency(unit(a), unit(b));
        let fails = self.in_outage(start) || unit(c) < self.failure_rate;
        let question = req.question();
        let prompt = req
            .messages()
            .iter()
            .fold(0u32, |n, m| n.saturating_add(estimate_tokens(&m.content)));
        let output = answer(req.agent, d, &question);
        let out_tokens = (estimate_tokens(&output.to_string()).saturating_add((d % 40) as u32))
            .min(req.params.max_tokens);
        Ok(Call {
            start,
            latency,
            fails,
            stream_draw: e,
            response: AiResponse {
                output,
                usage: Usage {
                    input_tokens: prompt,
                    output_tokens: out_tokens,
                },
                usage_estimated: false,
                model: if req.params.model.is_empty() {
                    self.model.clone()
                } else {
                    req.params.model.clone()
                },
                backend: self.name.clone(),
                latency: Duration::ZERO,
            },
        })
    }

    fn failure(&self, why: &'static str) -> Error {
        Error::Backend {
            what: format!("simulated backend {}", self.name).into(),
            retryable: true,
            source: why.into(),
        }
    }
}
