//! The AI pipeline keeps its books on the paths an adversarial review of issue 11
//! found: a backend's panic fails only the call it hit (and trips its breaker like
//! any failure), durations and Retry-After values past the clock are refused or end
//! the call instead of panicking, a long answer keeps its row and cost, an answer the
//! provider billed without text is still billed, nothing is charged after shutdown,
//! a high-priority request is never held back by the window, budget holds are priced
//! at the dearest backend, and a database restart of a few seconds loses no row.
//! Tokio's paused clock throughout, except the HTTP test (real loopback server).
//!
//! This file holds the scripted backend the parts share; each theme is a module.

#[path = "../common/mod.rs"]
mod common;

mod billing;
mod panics;
mod timing;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kasama::agent::{AiAgent, AiRequest, AiResponse, Usage};
use kasama::pipeline::Price;
use kasama::prelude::*;
use serde_json::json;

use common::pipeline::ONE_CALL;

pub(crate) fn cost(p: Price, u: Usage) -> u64 {
    u64::from(u.input_tokens) * p.input_micros_per_1k
        + u64::from(u.output_tokens) * p.output_micros_per_1k
}

/// What a scripted backend does with one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Act {
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
pub(crate) struct Agent {
    name: String,
    latency: Duration,
    single: Mutex<Act>,
    batch: Mutex<Vec<Act>>,
    pub(crate) calls: AtomicUsize,
    input: AtomicU64,
    output: AtomicU64,
}

impl Agent {
    pub(crate) fn new(name: &str, latency_ms: u64, single: Act) -> Arc<Self> {
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
    pub(crate) fn script_batch(&self, acts: Vec<Act>) {
        *self.batch.lock().unwrap() = acts;
    }
    pub(crate) fn billed(&self, p: Price) -> u64 {
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

pub(crate) fn ask(u: UserId, q: &str) -> AiRequest {
    AiRequest::new(u, AgentType::LearningCoach, q.to_string())
}
