//! The AI pipeline keeps its books on every path (tokio's paused clock throughout):
//! coalesced calls are paid once, a dropped caller is still billed, one bad row never
//! loses the others, a failing part degrades instead of failing requests, refusals are
//! not failures, the ledger and configuration stay bounded and valid, and a global
//! refusal uses up nothing of the user's allowance.
//!
//! This file holds the scripted backend the parts share; each theme is a module.

#[path = "../common/mod.rs"]
mod common;

mod billing;
mod degrading;
mod limits;
mod recording;
mod semantic;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use async_trait::async_trait;
use kasama::agent::{AiAgent, AiRequest, AiResponse, Usage};
use kasama::prelude::*;
use serde_json::json;

use common::pipeline::ONE_CALL;

pub(crate) fn cost(u: Usage) -> u64 {
    u64::from(u.input_tokens) * 25_000 + u64::from(u.output_tokens) * 75_000
}

/// A backend with a fixed latency whose behaviour a test switches: answer, fail
/// retryably, panic, or answer with a NUL and an over-long model name.
pub(crate) struct Scripted {
    name: String,
    latency: Duration,
    mode: Mutex<Mode>,
    pub(crate) calls: AtomicUsize,
    /// Usage of every answer it gave (what its provider would bill).
    input: AtomicU64,
    output: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Mode {
    Answer,
    Fail,
    PanicOnce,
    Dirty,
    /// `complete_batch` fails every member retryably; `complete` answers.
    BatchFails,
}

impl Scripted {
    pub(crate) fn new(name: &str, latency_ms: u64, mode: Mode) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            latency: Duration::from_millis(latency_ms),
            mode: Mutex::new(mode),
            calls: AtomicUsize::new(0),
            input: AtomicU64::new(0),
            output: AtomicU64::new(0),
        })
    }
    pub(crate) fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
    pub(crate) fn billed(&self) -> Usage {
        Usage {
            input_tokens: self.input.load(SeqCst) as u32,
            output_tokens: self.output.load(SeqCst) as u32,
        }
    }
}

pub(crate) fn flaky() -> Error {
    Error::Backend {
        what: "scripted".into(),
        retryable: true,
        source: "scripted failure".into(),
    }
}

#[async_trait]
impl AiAgent for Scripted {
    fn name(&self) -> &str {
        &self.name
    }
    async fn complete(&self, req: &AiRequest) -> kasama::Result<AiResponse> {
        self.calls.fetch_add(1, SeqCst);
        tokio::time::sleep(self.latency).await;
        let mode = *self.mode.lock().unwrap();
        let (output, model) = match mode {
            Mode::Fail => return Err(flaky()),
            Mode::PanicOnce => {
                self.set(Mode::Answer);
                panic!("the backend fell over");
            }
            Mode::Dirty => (json!({ "text": "nul \0 here" }), "m".repeat(150)),
            Mode::Answer | Mode::BatchFails => (
                json!({ "text": format!("answer to {}", req.input) }),
                "scripted-1".to_string(),
            ),
        };
        let usage = ONE_CALL;
        self.input.fetch_add(u64::from(usage.input_tokens), SeqCst);
        self.output
            .fetch_add(u64::from(usage.output_tokens), SeqCst);
        Ok(AiResponse {
            output,
            usage,
            usage_estimated: false,
            model,
            backend: String::new(),
            latency: self.latency,
        })
    }
    async fn complete_batch(&self, reqs: &[AiRequest]) -> Vec<kasama::Result<AiResponse>> {
        if *self.mode.lock().unwrap() == Mode::BatchFails {
            self.calls.fetch_add(1, SeqCst);
            tokio::time::sleep(self.latency).await;
            return reqs.iter().map(|_| Err(flaky())).collect();
        }
        let mut out = Vec::new();
        for r in reqs {
            out.push(self.complete(r).await);
        }
        out
    }
}
