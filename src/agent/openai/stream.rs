//! [`OpenAiCompatibleAgent`]'s streamed answers: the request, then the server-sent
//! events read from the body as the network delivers them (see the type's docs,
//! "Streaming").

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::sse::{SseEvent, SseParser};
use super::{
    MAX_ANSWER_BYTES, OpenAiCompatibleAgent, body_error, check_status, estimated_usage, http_error,
    parse_output, reported_usage, send_error,
};
use crate::agent::{AiRequest, AiResponse, AiStream, ChatMessage, StreamEvent, Usage};
use crate::error::{Error, Result};

const WHAT: &str = "chat completion";

/// Most characters of a server's error message kept in an error.
const MAX_MESSAGE_CHARS: usize = 300;

impl OpenAiCompatibleAgent {
    /// Sends the streamed request and returns the stream once the headers arrived.
    pub(super) async fn start_stream(&self, req: &AiRequest) -> Result<AiStream> {
        req.validate()?;
        let start = Instant::now();
        let model = self.model_of(req);
        let messages = req.messages();
        let body = Self::body(req, &model, &messages, true);
        let mut http = self
            .client
            .post(&self.url)
            .json(&body)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(k) = &self.api_key {
            http = http.bearer_auth(k);
        }
        // No request-wide timeout: it would cut a long answer that keeps arriving.
        // The headers get `timeout`, each piece of the body `idle_timeout`.
        let resp = match tokio::time::timeout(self.timeout, http.send()).await {
            Err(_) => return Err(Error::Timeout { what: WHAT.into() }),
            Ok(r) => r.map_err(|e| send_error(e, WHAT))?,
        };
        let mut resp = check_status(resp, WHAT)?;
        let idle = self.idle_timeout.unwrap_or(self.timeout);

        let is_json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        if is_json {
            // A server that ignored `stream`: one whole completion.
            let mut bytes = Vec::new();
            while let Some(chunk) = next_chunk(&mut resp, idle).await? {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > MAX_ANSWER_BYTES {
                    return Err(http_error(WHAT, true, "answer too long".into()));
                }
            }
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| http_error(WHAT, true, format!("malformed JSON: {e}")))?;
            return Ok(AiStream::whole(
                self.parse_completion(&v, &messages, &model, start)?,
            ));
        }

        let state = Sse {
            resp: Some(resp),
            idle,
            parser: SseParser::default(),
            pending: VecDeque::new(),
            text: String::new(),
            refusal: String::new(),
            finish_reason: None,
            usage: None,
            saw_chunk: false,
            model,
            messages,
            backend: self.name.clone(),
            api_key: self.api_key.clone(),
            start,
        };
        Ok(AiStream::new(futures_util::stream::unfold(
            state,
            |mut st| async move {
                loop {
                    if let Some(item) = st.pending.pop_front() {
                        return Some((item, st));
                    }
                    let resp = st.resp.as_mut()?;
                    match next_chunk(resp, st.idle).await {
                        Ok(Some(bytes)) => st.feed(&bytes),
                        // A body that ends after the finish reason without `[DONE]`
                        // holds a whole answer (OpenAI's own clients accept it);
                        // one that ends before it was cut.
                        Ok(None) if st.finish_reason.is_some() => {
                            let done = st.done();
                            st.finish(done);
                        }
                        Ok(None) => st.finish(Err(http_error(
                            WHAT,
                            true,
                            "the stream ended before the answer was finished".into(),
                        ))),
                        Err(e) => st.finish(Err(e)),
                    }
                }
            },
        )))
    }
}

/// The next piece of the body within `idle`; `None` at its end.
async fn next_chunk(resp: &mut reqwest::Response, idle: Duration) -> Result<Option<bytes::Bytes>> {
    match tokio::time::timeout(idle, resp.chunk()).await {
        Err(_) => Err(Error::Timeout { what: WHAT.into() }),
        Ok(r) => r.map_err(|e| body_error(e, WHAT)),
    }
}

/// A stream being read. Not `Debug`: it holds the API key (to scrub it from the
/// server's error messages).
struct Sse {
    /// `None` once the stream ended: dropping the response closes the connection.
    resp: Option<reqwest::Response>,
    idle: Duration,
    parser: SseParser,
    pending: VecDeque<Result<StreamEvent>>,
    text: String,
    refusal: String,
    finish_reason: Option<Value>,
    usage: Option<Usage>,
    saw_chunk: bool,
    model: String,
    messages: Vec<ChatMessage>,
    backend: String,
    api_key: Option<String>,
    start: Instant,
}

impl Sse {
    /// Queues the stream's last item and lets the response go.
    fn finish(&mut self, last: Result<StreamEvent>) {
        self.pending.push_back(last);
        self.resp = None;
    }

    fn feed(&mut self, bytes: &[u8]) {
        match self.parser.push(bytes) {
            Ok(events) => {
                for ev in events {
                    if self.resp.is_none() {
                        break;
                    }
                    self.event(ev);
                }
            }
            Err(_) => self.finish(Err(http_error(
                WHAT,
                true,
                format!("an event longer than {} bytes", super::sse::MAX_EVENT_BYTES),
            ))),
        }
    }

    fn event(&mut self, ev: SseEvent) {
        let data = ev.data.trim();
        if data == "[DONE]" {
            let done = self.done();
            self.finish(done);
            return;
        }
        let v: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) if ev.event.as_deref() == Some("error") => {
                let msg = self.scrub(data);
                return self.finish(Err(http_error(
                    WHAT,
                    false,
                    format!("error event mid-stream ({e}): {msg}"),
                )));
            }
            Err(e) => {
                return self.finish(Err(http_error(
                    WHAT,
                    true,
                    format!("malformed event JSON: {e}"),
                )));
            }
        };
        if ev.event.as_deref() == Some("error") || v.get("error").is_some_and(|e| !e.is_null()) {
            let e = self.error_event(&v);
            return self.finish(Err(e));
        }
        self.saw_chunk = true;
        if let Some(m) = v.get("model").and_then(Value::as_str)
            && !m.is_empty()
        {
            self.model = m.to_string();
        }
        if let Some(u) = reported_usage(v.get("usage")) {
            self.usage = Some(u);
        }
        let choice = v.pointer("/choices/0");
        if let Some(r) = choice
            .and_then(|c| c.get("finish_reason"))
            .filter(|r| !r.is_null())
        {
            self.finish_reason = Some(r.clone());
        }
        let delta = choice.and_then(|c| c.get("delta"));
        if let Some(r) = delta.and_then(|d| d.get("refusal")).and_then(Value::as_str) {
            // Bounded as the text is: a server streaming an endless refusal cannot make
            // the client buffer without bound either.
            if self.text.len() + self.refusal.len() + r.len() > MAX_ANSWER_BYTES {
                return self.finish(Err(http_error(
                    WHAT,
                    true,
                    format!("an answer (refusal) longer than {MAX_ANSWER_BYTES} bytes"),
                )));
            }
            self.refusal.push_str(r);
        }
        if let Some(t) = delta.and_then(|d| d.get("content")).and_then(Value::as_str)
            && !t.is_empty()
        {
            if self.text.len() + self.refusal.len() + t.len() > MAX_ANSWER_BYTES {
                return self.finish(Err(http_error(
                    WHAT,
                    true,
                    format!("an answer longer than {MAX_ANSWER_BYTES} bytes"),
                )));
            }
            self.text.push_str(t);
            self.pending
                .push_back(Ok(StreamEvent::Delta(t.to_string())));
        }
    }

    /// The whole answer at `[DONE]`.
    fn done(&mut self) -> Result<StreamEvent> {
        if !self.saw_chunk {
            return Err(http_error(WHAT, true, "[DONE] before any chunk".into()));
        }
        let output = if self.text.is_empty() {
            let mut o = serde_json::Map::new();
            o.insert("text".into(), Value::from(""));
            if !self.refusal.is_empty() {
                o.insert("refusal".into(), Value::from(self.refusal.as_str()));
            }
            if let Some(r) = &self.finish_reason {
                o.insert("finish_reason".into(), r.clone());
            }
            Value::Object(o)
        } else {
            parse_output(&self.text)
        };
        let (usage, usage_estimated) = match self.usage {
            Some(u) => (u, false),
            None => {
                tracing::warn!(backend = %self.backend, "stream without usage; tokens estimated");
                (estimated_usage(&self.messages, &self.text), true)
            }
        };
        Ok(StreamEvent::Done(AiResponse {
            output,
            usage,
            usage_estimated,
            model: std::mem::take(&mut self.model),
            backend: self.backend.clone(),
            latency: self.start.elapsed(),
        }))
    }

    /// The error an `{"error": …}` event stands for.
    fn error_event(&self, v: &Value) -> Error {
        let e = v.get("error").filter(|e| e.is_object()).unwrap_or(v);
        let field = |k: &str| match e.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let kind = field("type");
        let code = field("code");
        let message = e
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| v.get("error").and_then(Value::as_str))
            .unwrap_or("");
        let transient = |s: &str| {
            let s = s.to_ascii_lowercase();
            [
                "server",
                "overload",
                "timeout",
                "rate_limit",
                "unavailable",
                "internal",
            ]
            .iter()
            .any(|w| s.contains(w))
                || s.parse::<u16>()
                    .is_ok_and(|n| n == 429 || (500..600).contains(&n))
        };
        let retryable =
            kind.as_deref().is_some_and(transient) || code.as_deref().is_some_and(transient);
        http_error(
            WHAT,
            retryable,
            format!(
                "error event mid-stream (type {}, code {}): {}",
                kind.as_deref().unwrap_or("-"),
                code.as_deref().unwrap_or("-"),
                self.scrub(message)
            ),
        )
    }

    /// A server's message, shortened, with the API key (if it echoes it) hidden.
    fn scrub(&self, message: &str) -> String {
        let whole = match self.api_key.as_deref().filter(|k| !k.is_empty()) {
            Some(k) => message.replace(k, "***"),
            None => message.to_string(),
        };
        whole.chars().take(MAX_MESSAGE_CHARS).collect()
    }
}
