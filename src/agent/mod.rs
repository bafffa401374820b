//! AI backends: the [`AiAgent`] trait, its request and response types,
//! [`SimulatedAgent`] (deterministic, for the quickstart, tests and benches) and, with
//! the `openai` feature, `OpenAiCompatibleAgent` for any OpenAI-style
//! `/chat/completions` server.

#[cfg(feature = "openai")]
pub(crate) mod openai;
mod price;
pub mod prompt;
mod scope;
mod simulated;
mod stream;
pub mod structured;

#[cfg(feature = "openai")]
pub use openai::{OpenAiCompatibleAgent, OpenAiCompatibleAgentBuilder};
pub use price::Price;
pub use prompt::{ChatMessage, PromptTemplate, PromptTemplates, Role};
pub use scope::{CacheTier, Scope};
pub use simulated::{SIMULATED_TTFT_SHARE, SimulatedAgent, SimulatedAgentBuilder};
pub use stream::{AiStream, StreamEvent, output_text, token_pieces};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{AgentType, PriorityLevel, UserId, validate};
use crate::error::{Error, Result};

/// Model parameters of a request. Two requests that differ here may get different
/// answers, so these are part of a cached answer's scope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelParams {
    /// The model, e.g. `"gpt-4o-mini"` (1–100 characters). Default: `""`, meaning the
    /// backend's model for the agent kind.
    pub model: String,
    /// Most output tokens, 1–32,768. Default: 512.
    pub max_tokens: u32,
    /// Sampling temperature, 0–2. Default: 0.3.
    pub temperature: f32,
    /// A system prompt replacing the agent's own (at most 10,000 characters).
    pub system_prompt: Option<String>,
    /// Ask for a text answer even of an agent kind that answers in structure (the
    /// assessment analyst, see [`structured`]): no `response_format` is sent and the
    /// answer's shape is not checked — for a host's own free-text call on that kind,
    /// such as an LLM judge's YES/NO. Such answers are cached in a scope of their own,
    /// and not loaded by other instances from a shared store (a miss there). Default:
    /// `false`.
    #[serde(default)]
    pub text_only: bool,
}

impl Default for ModelParams {
    fn default() -> Self {
        Self {
            model: String::new(),
            max_tokens: 512,
            temperature: 0.3,
            system_prompt: None,
            text_only: false,
        }
    }
}

/// One request to an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AiRequest {
    /// Who asks.
    pub user_id: UserId,
    /// Which agent.
    pub agent: AgentType,
    /// The input: a string (the question) or a JSON object (at most 64 KiB) whose
    /// `question`, `message`, `text` or `prompt` field is the question and whose other
    /// fields are context the model sees (see [`prompt`]).
    pub input: Value,
    /// The user's data the answer draws on (JSON, at most 64 KiB; `null`: none), as a
    /// [`ContextProvider`](crate::context::ContextProvider) reads it. It reaches the
    /// model in the system message and is part of a cached answer's scope.
    #[serde(default)]
    pub context: Value,
    /// The conversation so far, oldest first (at most 200 turns): sent between the
    /// system message and the question, and part of a cached answer's scope.
    #[serde(default)]
    pub history: Vec<ChatMessage>,
    /// Model parameters.
    pub params: ModelParams,
    /// Priority (high is never held back by batching).
    pub priority: PriorityLevel,
}

impl AiRequest {
    /// A medium-priority request with default parameters.
    pub fn new(user_id: UserId, agent: AgentType, input: impl Into<Value>) -> Self {
        Self {
            user_id,
            agent,
            input: input.into(),
            context: Value::Null,
            history: Vec::new(),
            params: ModelParams::default(),
            priority: PriorityLevel::Medium,
        }
    }

    /// Whether the answer must be the agent kind's structured object (see
    /// [`structured`]): the kind answers in structure and the request is not
    /// [`text_only`](ModelParams::text_only).
    pub fn wants_structured(&self) -> bool {
        structured::wants_structured(self.agent) && !self.params.text_only
    }

    /// This request with `context` as its user data.
    #[must_use]
    pub fn with_context(mut self, context: Value) -> Self {
        self.context = context;
        self
    }

    /// This request with `history` as its conversation so far.
    #[must_use]
    pub fn with_history(mut self, history: Vec<ChatMessage>) -> Self {
        self.history = history;
        self
    }

    /// Checks the request's bounds: a question that is not blank (the string input,
    /// or an object's question field), the input and context JSON, the parameters
    /// and the history.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        validate::json("input", &self.input)?;
        // Also an object's question field: the model would be sent an empty message,
        // and the semantic cache cannot embed one.
        if self.input.is_null() || self.question().trim().is_empty() {
            return Err(Error::invalid("input", "must not be empty"));
        }
        validate::text("model", &self.params.model, 100)?;
        validate::range("max_tokens", self.params.max_tokens.into(), 1, 32_768)?;
        let t = self.params.temperature;
        if !t.is_finite() || !(0.0..=2.0).contains(&t) {
            return Err(Error::invalid(
                "temperature",
                format!("{t} is outside 0..=2"),
            ));
        }
        if let Some(p) = &self.params.system_prompt {
            validate::text("system_prompt", p, validate::MAX_TEXT_CHARS)?;
        }
        validate::json("context", &self.context)?;
        if self.history.len() > MAX_HISTORY {
            return Err(Error::invalid(
                "history",
                format!("{} turns (most {MAX_HISTORY})", self.history.len()),
            ));
        }
        let bytes: usize = self.history.iter().map(|m| m.content.len()).sum();
        if bytes > MAX_HISTORY_BYTES {
            return Err(Error::invalid(
                "history",
                format!("{bytes} bytes of text, at most {MAX_HISTORY_BYTES} allowed"),
            ));
        }
        Ok(())
    }
}

/// Most conversation turns a request carries.
pub const MAX_HISTORY: usize = 200;
/// Most bytes of text in the turns of a request's history, together: 256 KiB.
pub const MAX_HISTORY_BYTES: usize = validate::MAX_JSON_BYTES * 4;

/// Tokens billed for one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Completion tokens.
    pub output_tokens: u32,
}

/// An agent's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AiResponse {
    /// The answer (JSON when the backend returned JSON, else `{"text": …}`).
    pub output: Value,
    /// Tokens billed.
    pub usage: Usage,
    /// Whether `usage` was estimated because the backend did not report it.
    #[serde(default)]
    pub usage_estimated: bool,
    /// The model that answered.
    pub model: String,
    /// The backend that answered ([`AiAgent::name`]).
    pub backend: String,
    /// How long the call took.
    pub latency: Duration,
}

/// One LLM backend serving one or more agent kinds. Object safe: hosts hold an
/// `Arc<dyn AiAgent>`.
#[async_trait]
pub trait AiAgent: Send + Sync + 'static {
    /// The backend's name, unique among the backends of a pipeline.
    fn name(&self) -> &str;

    /// Whether this backend serves `agent`. Default: every agent.
    fn serves(&self, agent: AgentType) -> bool {
        let _ = agent;
        true
    }

    /// Answers one request.
    ///
    /// # Errors
    /// `InvalidInput` (refused by the backend, not retryable), `RateLimited`
    /// (with the backend's `Retry-After`), `Timeout`, `Backend` (retryable for 5xx and
    /// connection failures).
    async fn complete(&self, request: &AiRequest) -> Result<AiResponse>;

    /// Answers several requests; one result per request, in order. Default: the single
    /// calls, concurrently.
    async fn complete_batch(&self, requests: &[AiRequest]) -> Vec<Result<AiResponse>> {
        futures_util::future::join_all(requests.iter().map(|r| self.complete(r))).await
    }

    /// Answers one request as a stream: text as it is produced, then the whole
    /// answer (see [`AiStream`]). Errors before the first event as
    /// [`complete`](AiAgent::complete)'s; an error mid-stream is the stream's last
    /// item. Dropping the stream cancels the call. Default: [`complete`](AiAgent::complete),
    /// then the whole answer as one chunk.
    ///
    /// # Errors
    /// As [`complete`](AiAgent::complete).
    async fn stream(&self, request: &AiRequest) -> Result<AiStream> {
        Ok(AiStream::whole(self.complete(request).await?))
    }
}

fn _object_safe(_: &dyn AiAgent) {}

#[async_trait]
impl<A: AiAgent + ?Sized> AiAgent for Arc<A> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn serves(&self, agent: AgentType) -> bool {
        (**self).serves(agent)
    }
    async fn complete(&self, request: &AiRequest) -> Result<AiResponse> {
        (**self).complete(request).await
    }
    async fn complete_batch(&self, requests: &[AiRequest]) -> Vec<Result<AiResponse>> {
        (**self).complete_batch(requests).await
    }
    async fn stream(&self, request: &AiRequest) -> Result<AiStream> {
        (**self).stream(request).await
    }
}

/// Rough token count of a text (about four characters a token, as OpenAI's
/// tokenizers average on English), at least 1.
pub fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.chars().count().div_ceil(4))
        .unwrap_or(u32::MAX)
        .max(1)
}
