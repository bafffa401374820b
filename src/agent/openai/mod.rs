//! `OpenAiCompatibleAgent`: any server speaking OpenAI's `/chat/completions`, whole
//! ([`AiAgent::complete`]) or streamed as server-sent events ([`AiAgent::stream`],
//! in `stream.rs`, with the event parser in `sse.rs`).

mod sse;
mod stream;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{AiAgent, AiRequest, AiResponse, AiStream, ChatMessage, Usage, estimate_tokens};
use crate::domain::AgentType;
use crate::error::{Error, Result};

/// An [`AiAgent`] over HTTP: `POST {base_url}/chat/completions` with a bearer key.
///
/// - The model is the request's, else the one configured for its agent kind, else the
///   default model.
/// - The answer's `choices[0].message.content` becomes the output: parsed when it is a
///   JSON object, else `{"text": …}`. A message without text (a refusal, a tool call)
///   is still an answer the provider billed: `{"text": "", "refusal": …,
///   "tool_calls": …, "finish_reason": …}` (the fields it sent), not an error a retry
///   would pay for again. `usage` gives the tokens; when a server omits it
///   the tokens are estimated (about four characters a token) and
///   [`AiResponse::usage_estimated`] says so.
/// - 429 → [`Error::RateLimited`] with the server's `Retry-After` (seconds or an HTTP
///   date; 1 s when absent); 5xx, connection failures and malformed bodies → retryable
///   [`Error::Backend`]; other 4xx → non-retryable; no answer within the timeout →
///   [`Error::Timeout`].
///
/// TLS: pass a `reqwest::Client` built with your TLS features to
/// [`OpenAiCompatibleAgentBuilder::client`] (kasama's own reqwest has none, to keep
/// builds lean).
///
/// Its `Debug` shows whether an API key is set, never the key.
#[derive(Clone)]
pub struct OpenAiCompatibleAgent {
    name: String,
    url: String,
    api_key: Option<String>,
    models: HashMap<AgentType, String>,
    default_model: String,
    timeout: Duration,
    idle_timeout: Option<Duration>,
    client: reqwest::Client,
}

/// Builder for [`OpenAiCompatibleAgent`]. Its `Debug` hides the API key.
#[derive(Clone)]
#[must_use]
pub struct OpenAiCompatibleAgentBuilder {
    name: String,
    base_url: String,
    api_key: Option<String>,
    models: HashMap<AgentType, String>,
    default_model: String,
    timeout: Duration,
    idle_timeout: Option<Duration>,
    client: Option<reqwest::Client>,
}

/// Stands for a secret in `Debug` output: `Some("***")` or `None`.
pub(crate) fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "***")
}

impl std::fmt::Debug for OpenAiCompatibleAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiCompatibleAgent")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("api_key", &redacted(&self.api_key))
            .field("models", &self.models)
            .field("default_model", &self.default_model)
            .field("timeout", &self.timeout)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for OpenAiCompatibleAgentBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiCompatibleAgentBuilder")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &redacted(&self.api_key))
            .field("models", &self.models)
            .field("default_model", &self.default_model)
            .field("timeout", &self.timeout)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl OpenAiCompatibleAgent {
    /// A builder for a server at `base_url` (e.g. `https://api.openai.com/v1`).
    pub fn builder(base_url: impl Into<String>) -> OpenAiCompatibleAgentBuilder {
        OpenAiCompatibleAgentBuilder {
            name: "openai".into(),
            base_url: base_url.into(),
            api_key: None,
            models: HashMap::new(),
            default_model: "gpt-4o-mini".into(),
            timeout: Duration::from_secs(30),
            idle_timeout: None,
            client: None,
        }
    }
}

impl OpenAiCompatibleAgentBuilder {
    /// The backend's name. Default: `"openai"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The bearer key.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The model for one agent kind.
    pub fn model_for(mut self, agent: AgentType, model: impl Into<String>) -> Self {
        self.models.insert(agent, model.into());
        self
    }

    /// The model for agent kinds without their own. Default: `"gpt-4o-mini"`.
    pub fn default_model(mut self, model: impl Into<String>) -> Self {
        self.default_model = model.into();
        self
    }

    /// How long one call may take. Default: 30 s. For a streamed call: how long to
    /// wait for the response headers (see [`stream_idle_timeout`](Self::stream_idle_timeout)
    /// for the body).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// How long a streamed answer may go silent: the longest wait for the next piece of
    /// the body after the headers, the first token included. Default: the
    /// [`timeout`](Self::timeout).
    pub fn stream_idle_timeout(mut self, t: Duration) -> Self {
        self.idle_timeout = Some(t);
        self
    }

    /// The HTTP client (bring TLS here). Default: a plain `reqwest::Client`.
    pub fn client(mut self, c: reqwest::Client) -> Self {
        self.client = Some(c);
        self
    }

    /// # Errors
    /// `InvalidInput` for a base URL that is not `http(s)://…`, or a zero timeout or
    /// idle timeout.
    pub fn build(self) -> Result<OpenAiCompatibleAgent> {
        let base = self.base_url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://"))
            || reqwest::Url::parse(base).is_err()
        {
            return Err(Error::invalid("base_url", "must be an http(s) URL"));
        }
        if self.timeout.is_zero() {
            return Err(Error::invalid("timeout", "must be positive"));
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::invalid("stream_idle_timeout", "must be positive"));
        }
        Ok(OpenAiCompatibleAgent {
            name: self.name,
            url: format!("{base}/chat/completions"),
            api_key: self.api_key,
            models: self.models,
            default_model: self.default_model,
            timeout: self.timeout,
            idle_timeout: self.idle_timeout,
            client: self.client.unwrap_or_default(),
        })
    }
}

/// Parses a `Retry-After` value: delay seconds or an HTTP date.
pub(crate) fn retry_after(v: Option<&reqwest::header::HeaderValue>) -> Duration {
    let Some(s) = v.and_then(|v| v.to_str().ok()) else {
        return Duration::from_secs(1);
    };
    if let Ok(secs) = s.trim().parse::<u64>() {
        return Duration::from_secs(secs);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc2822(s.trim()) {
        let d = t.with_timezone(&chrono::Utc) - chrono::Utc::now();
        return d.to_std().unwrap_or(Duration::ZERO);
    }
    Duration::from_secs(1)
}

pub(crate) fn http_error(what: &'static str, retryable: bool, msg: String) -> Error {
    Error::Backend {
        what: what.into(),
        retryable,
        source: msg.into(),
    }
}

/// The error of a request that got no response.
pub(crate) fn send_error(e: reqwest::Error, what: &'static str) -> Error {
    if e.is_timeout() {
        Error::Timeout { what: what.into() }
    } else {
        http_error(what, true, format!("request failed: {}", e.without_url()))
    }
}

/// Maps an HTTP error status: 429 → [`Error::RateLimited`] with its `Retry-After`,
/// 5xx → retryable [`Error::Backend`], other non-2xx → non-retryable.
pub(crate) fn check_status(
    resp: reqwest::Response,
    what: &'static str,
) -> Result<reqwest::Response> {
    let status = resp.status();
    if status.as_u16() == 429 {
        return Err(Error::RateLimited {
            retry_after: retry_after(resp.headers().get(reqwest::header::RETRY_AFTER)),
        });
    }
    if !status.is_success() {
        return Err(http_error(
            what,
            status.is_server_error(),
            format!("HTTP {status}"),
        ));
    }
    Ok(resp)
}

/// The error of a body that could not be read to its end.
pub(crate) fn body_error(e: reqwest::Error, what: &'static str) -> Error {
    if e.is_timeout() {
        Error::Timeout { what: what.into() }
    } else {
        http_error(
            what,
            true,
            format!("reading the body failed: {}", e.without_url()),
        )
    }
}

/// Most bytes of a completion's body, streamed or whole (a server that never stops
/// cannot make the client buffer without bound): 8 MiB, far above any `max_tokens`.
pub(crate) const MAX_ANSWER_BYTES: usize = 8 << 20;

/// Sends `body` to `url` and returns the parsed JSON, mapping HTTP failures; a
/// response body longer than `max_bytes` is a retryable error, not read further.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: &Value,
    timeout: Duration,
    what: &'static str,
    max_bytes: usize,
) -> Result<Value> {
    let mut req = client.post(url).json(body).timeout(timeout);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.map_err(|e| send_error(e, what))?;
    let mut resp = check_status(resp, what)?;
    let too_long = || http_error(what, true, format!("a body longer than {max_bytes} bytes"));
    if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
        return Err(too_long());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| body_error(e, what))? {
        if bytes.len() + chunk.len() > max_bytes {
            return Err(too_long());
        }
        bytes.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| http_error(what, true, format!("malformed JSON: {e}")))
}

/// An answer's text as its output: the JSON object it is, else `{"text": …}`.
pub(crate) fn parse_output(content: &str) -> Value {
    match serde_json::from_str::<Value>(content) {
        Ok(o @ Value::Object(_)) => o,
        _ => json!({ "text": content }),
    }
}

/// Usage estimated from the text sent and received (about four characters a token).
pub(crate) fn estimated_usage(messages: &[ChatMessage], answer: &str) -> Usage {
    Usage {
        input_tokens: messages
            .iter()
            .fold(0u32, |n, m| n.saturating_add(estimate_tokens(&m.content))),
        output_tokens: estimate_tokens(answer),
    }
}

/// A token count from a `usage` object; past `u32::MAX` it saturates rather than
/// wrapping to a small bill.
pub(crate) fn usage_tokens(usage: Option<&Value>, key: &str) -> Option<u32> {
    usage
        .and_then(|u| u.get(key))
        .and_then(Value::as_u64)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// The exact usage in a `usage` object, if it has both counts.
pub(crate) fn reported_usage(usage: Option<&Value>) -> Option<Usage> {
    Some(Usage {
        input_tokens: usage_tokens(usage, "prompt_tokens")?,
        output_tokens: usage_tokens(usage, "completion_tokens")?,
    })
}

impl OpenAiCompatibleAgent {
    /// The model a request is sent with: its own, else its kind's, else the default.
    fn model_of(&self, req: &AiRequest) -> String {
        if !req.params.model.is_empty() {
            req.params.model.clone()
        } else {
            self.models
                .get(&req.agent)
                .cloned()
                .unwrap_or_else(|| self.default_model.clone())
        }
    }

    /// The `/chat/completions` body of a request, streamed or not: the same model,
    /// messages, parameters and `response_format` either way.
    fn body(req: &AiRequest, model: &str, messages: &[ChatMessage], stream: bool) -> Value {
        let mut body = json!({
            "model": model,
            "messages": messages
                .iter()
                .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
                .collect::<Vec<_>>(),
            "max_tokens": req.params.max_tokens,
            "temperature": req.params.temperature,
        });
        if req.wants_structured()
            && let Some(format) = super::structured::response_format(req.agent)
        {
            body["response_format"] = format;
        }
        if stream {
            body["stream"] = Value::Bool(true);
            body["stream_options"] = json!({ "include_usage": true });
        }
        body
    }

    /// A whole (non-streamed) completion's answer.
    fn parse_completion(
        &self,
        v: &Value,
        messages: &[ChatMessage],
        model: &str,
        start: Instant,
    ) -> Result<AiResponse> {
        let message = v.pointer("/choices/0/message");
        let content = message
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str);
        let output = match content {
            Some(content) => parse_output(content),
            // A 200 with a message but no text (a refusal, a tool call) or with usage
            // but no message is an answer the provider billed: an empty text with
            // what it said instead, never a retryable error (a retry is billed again).
            None if message.is_some() || v.get("usage").is_some() => {
                let mut o = serde_json::Map::new();
                o.insert("text".into(), Value::from(""));
                for k in ["refusal", "tool_calls"] {
                    if let Some(x) = message.and_then(|m| m.get(k)).filter(|x| !x.is_null()) {
                        o.insert(k.into(), x.clone());
                    }
                }
                if let Some(r) = v
                    .pointer("/choices/0/finish_reason")
                    .filter(|x| !x.is_null())
                {
                    o.insert("finish_reason".into(), r.clone());
                }
                Value::Object(o)
            }
            None => {
                return Err(http_error(
                    "chat completion",
                    true,
                    "no choices[0].message".into(),
                ));
            }
        };
        let content = content.unwrap_or("");
        let (usage, estimated) = match reported_usage(v.get("usage")) {
            Some(u) => (u, false),
            None => {
                tracing::warn!(backend = %self.name, "response without usage; tokens estimated");
                (estimated_usage(messages, content), true)
            }
        };
        Ok(AiResponse {
            output,
            usage,
            usage_estimated: estimated,
            model: v
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or(model)
                .to_string(),
            backend: self.name.clone(),
            latency: start.elapsed(),
        })
    }
}

#[async_trait]
impl AiAgent for OpenAiCompatibleAgent {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(&self, req: &AiRequest) -> Result<AiResponse> {
        req.validate()?;
        let start = Instant::now();
        let model = self.model_of(req);
        let messages = req.messages();
        let body = Self::body(req, &model, &messages, false);
        let v = post_json(
            &self.client,
            &self.url,
            self.api_key.as_deref(),
            &body,
            self.timeout,
            "chat completion",
            MAX_ANSWER_BYTES,
        )
        .await?;
        self.parse_completion(&v, &messages, &model, start)
    }

    async fn stream(&self, req: &AiRequest) -> Result<AiStream> {
        self.start_stream(req).await
    }
}
