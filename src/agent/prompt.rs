//! What reaches the model: [`ChatMessage`]s rendered from an [`AiRequest`] through a
//! per-agent [`PromptTemplate`], and the canonical [`fingerprint`] of everything in
//! them but the question, which scopes a cached answer.
//!
//! A request's messages are, in order:
//!
//! 1. the **system** message: the request's `system_prompt` if it has one, else its
//!    agent kind's template, with `{context}` replaced by the context rendered as
//!    canonical JSON (keys sorted, no whitespace) — or by `(none)` when there is none;
//!    a template without `{context}` gets the context appended after a blank line when
//!    there is one;
//! 2. the **conversation history**, oldest first, as the request carries it (the
//!    conversation layer trims it to its token budget, oldest turns first);
//! 3. the **question** as the user's message.
//!
//! The context is the request's [`context`](AiRequest::context) (the user's data, from a
//! [`ContextProvider`](crate::context::ContextProvider) or the host) together with every
//! field of an object input other than its question field, under `"input"`.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::AiRequest;
use crate::domain::AgentType;

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role's name as OpenAI-style APIs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a chat: what the backend receives.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

impl ChatMessage {
    /// A message.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// The placeholder a template's system text puts the context in.
pub const CONTEXT_PLACEHOLDER: &str = "{context}";

/// How one agent kind speaks to the model: its system text, with
/// [`CONTEXT_PLACEHOLDER`] where the user's data goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PromptTemplate {
    /// The system message's text.
    pub system: String,
}

impl PromptTemplate {
    /// A template with this system text.
    pub fn new(system: impl Into<String>) -> Self {
        Self {
            system: system.into(),
        }
    }

    /// The system message for `context` (canonical JSON, or `None`).
    pub fn render_system(&self, context: Option<&str>) -> String {
        render_system(&self.system, context)
    }
}

fn render_system(template: &str, context: Option<&str>) -> String {
    if template.contains(CONTEXT_PLACEHOLDER) {
        template.replace(CONTEXT_PLACEHOLDER, context.unwrap_or("(none)"))
    } else {
        match context {
            Some(c) => format!("{template}\n\n{c}"),
            None => template.to_string(),
        }
    }
}

/// The templates of the five agent kinds. [`Default`] ships the product's; a host
/// replaces one with [`PromptTemplates::set`] and gives the set to the pipeline
/// ([`AiPipelineBuilder::prompts`](crate::pipeline::AiPipelineBuilder::prompts)),
/// which stamps each request's `system_prompt` with its kind's template, so every
/// backend sees it and the cache scope covers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptTemplates {
    by_agent: HashMap<AgentType, PromptTemplate>,
}

impl Default for PromptTemplates {
    fn default() -> Self {
        let by_agent = AgentType::ALL
            .iter()
            .map(|&a| (a, PromptTemplate::new(default_system(a))))
            .collect();
        Self { by_agent }
    }
}

impl PromptTemplates {
    /// Replaces `agent`'s template.
    #[must_use]
    pub fn set(mut self, agent: AgentType, template: PromptTemplate) -> Self {
        self.by_agent.insert(agent, template);
        self
    }

    /// `agent`'s template.
    pub fn get(&self, agent: AgentType) -> &PromptTemplate {
        // Every kind has one: `Default` fills all five and `set` only replaces.
        &self.by_agent[&agent]
    }
}

/// The shipped system text of each agent kind.
pub fn default_system(agent: AgentType) -> &'static str {
    match agent {
        AgentType::AssessmentAnalyst => {
            "You analyse relationship assessments and explain the results kindly and \
             precisely. Answer only with a JSON object with the keys \"insights\", \
             \"strengths\", \"growth_areas\" and \"suggested_practices\", each a list \
             of short sentences, grounded in the assessment below.\n\n\
             The user's data (JSON):\n{context}"
        }
        AgentType::LearningCoach => {
            "You are a relationship coach who suggests concrete, small practices that \
             fit the user's learning path and what they practised recently.\n\n\
             The user's data (JSON):\n{context}"
        }
        AgentType::ProgressTracker => {
            "You summarise a user's practice progress from their statistics and active \
             goals, and encourage them.\n\nThe user's data (JSON):\n{context}"
        }
        AgentType::InsightGenerator => {
            "You find patterns in a user's relationship data and state them clearly, \
             citing the data.\n\nThe user's data (JSON):\n{context}"
        }
        AgentType::CommunicationAdvisor => {
            "You help people phrase difficult conversations with empathy, in the \
             user's own situation.\n\nThe user's data (JSON):\n{context}"
        }
    }
}

/// Writes `v` as canonical JSON: object keys sorted by their UTF-8 bytes, no
/// whitespace, numbers and strings as `serde_json` writes them. Two documents that
/// differ only in key order or whitespace render the same.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                write_canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The input fields that name the question, in the order they are looked for.
pub const QUESTION_FIELDS: [&str; 4] = ["question", "message", "text", "prompt"];

impl AiRequest {
    /// The question: the input itself when it is a string, else its `question`,
    /// `message`, `text` or `prompt` field, else the whole input as canonical JSON.
    pub fn question(&self) -> String {
        if let Some(s) = self.input.as_str() {
            return s.to_string();
        }
        for k in QUESTION_FIELDS {
            if let Some(s) = self.input.get(k).and_then(Value::as_str) {
                return s.to_string();
            }
        }
        canonical_json(&self.input)
    }

    /// Everything that reaches the model besides the question and the history: the
    /// request's [`context`](AiRequest::context) under `"data"` and the other fields
    /// of an object input under `"input"`; `None` when there is neither.
    pub fn context_value(&self) -> Option<Value> {
        let mut out = serde_json::Map::new();
        if let Value::Object(m) = &self.input {
            let q = QUESTION_FIELDS
                .iter()
                .find(|k| m.get(**k).is_some_and(Value::is_string));
            if q.is_some() {
                let rest: serde_json::Map<String, Value> = m
                    .iter()
                    .filter(|(k, _)| Some(&k.as_str()) != q)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !rest.is_empty() {
                    out.insert("input".into(), Value::Object(rest));
                }
            }
        }
        if !self.context.is_null() {
            out.insert("data".into(), self.context.clone());
        }
        (!out.is_empty()).then_some(Value::Object(out))
    }

    /// The context as canonical JSON, if there is any.
    pub fn context_text(&self) -> Option<String> {
        self.context_value().map(|v| canonical_json(&v))
    }

    /// The system text this request is sent with: its `system_prompt`, else its
    /// kind's shipped template, with the context rendered in (see the module docs).
    pub fn system_message(&self) -> String {
        let template = self
            .params
            .system_prompt
            .as_deref()
            .unwrap_or(default_system(self.agent));
        render_system(template, self.context_text().as_deref())
    }

    /// The messages the backend receives: system, history, question.
    pub fn messages(&self) -> Vec<ChatMessage> {
        let mut m = Vec::with_capacity(self.history.len() + 2);
        m.push(ChatMessage::new(Role::System, self.system_message()));
        m.extend(self.history.iter().cloned());
        m.push(ChatMessage::new(Role::User, self.question()));
        m
    }

    /// A canonical fingerprint (SHA-256, 32 hex digits) of everything that reaches
    /// the model except the question's words: the context, the history, the system
    /// prompt (or the kind's template), the model and its parameters, and whether a
    /// structured answer is asked for. The same question over different data has a
    /// different fingerprint; key order and whitespace in the context do not matter.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        let mut put = |tag: &str, s: &str| {
            h.update(tag.as_bytes());
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        put("context", &self.context_text().unwrap_or_default());
        for m in &self.history {
            put(m.role.as_str(), &m.content);
        }
        put(
            "system",
            self.params
                .system_prompt
                .as_deref()
                .unwrap_or(default_system(self.agent)),
        );
        put("model", &self.params.model);
        put(
            "params",
            &format!(
                "{}|{:.3}|{}",
                self.params.max_tokens,
                self.params.temperature,
                super::structured::wants_structured(self.agent)
            ),
        );
        let digest = h.finalize();
        let mut out = String::with_capacity(32);
        for b in &digest[..16] {
            let _ = write!(out, "{b:02x}");
        }
        out
    }
}
