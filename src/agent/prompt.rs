//! What reaches the model: [`ChatMessage`]s rendered from an [`AiRequest`] through a
//! per-agent [`PromptTemplate`], and the canonical [`fingerprint`](AiRequest::fingerprint) of everything in
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

/// The version of [`AiRequest::messages`]' rendering that fingerprints carry.
pub const FINGERPRINT_VERSION: &str = "1";

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

    /// Whether the input is an object with a string question field.
    fn has_question_field(&self) -> bool {
        QUESTION_FIELDS
            .iter()
            .any(|k| self.input.get(*k).is_some_and(Value::is_string))
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
    /// structured answer is asked for. An input that is neither a string nor an object
    /// with a question field is its own question *and* data, so it is fingerprinted
    /// whole (canonically). The same question over different data has a
    /// different fingerprint; key order and whitespace in the context do not matter.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        let mut put = |tag: &str, s: &str| {
            h.update(tag.as_bytes());
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        // How messages are rendered: a change of rendering gets a new version, so answers
        // cached (and shared through PostgreSQL) under the old one are not served again.
        put("version", FINGERPRINT_VERSION);
        put("context", &self.context_text().unwrap_or_default());
        if !self.input.is_string() && !self.has_question_field() {
            // Without a question field the whole input is the question, data and all:
            // it must scope the answer exactly, or `{"scores": 97}` and `{"scores": 12}`
            // (texts that mean nearly the same) would share an answer.
            put("input", &canonical_json(&self.input));
        }
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
                self.wants_structured()
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::UserId;

    fn req(context: Value) -> AiRequest {
        AiRequest::new(
            UserId::new(),
            AgentType::AssessmentAnalyst,
            "What do my results say about how I communicate?",
        )
        .with_context(context)
    }

    fn parsed(text: &str) -> Value {
        serde_json::from_str(text).expect("test JSON parses")
    }

    #[test]
    fn key_order_and_whitespace_do_not_change_the_fingerprint() {
        let a = parsed(
            r#"{"scores":{"communication":97,"conflict":40},"answers":[1,2,{"q":"x","a":3}]}"#,
        );
        let b = parsed(
            "{\n  \"answers\" : [ 1, 2, { \"a\" : 3, \"q\" : \"x\" } ],\n\t\"scores\" : {\n    \"conflict\": 40,\n    \"communication\": 97\n  }\n}",
        );
        assert_eq!(
            canonical_json(&a),
            r#"{"answers":[1,2,{"a":3,"q":"x"}],"scores":{"communication":97,"conflict":40}}"#
        );
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(req(a).fingerprint(), req(b).fingerprint());

        // The same holds for the context fields of an object input.
        let user = UserId::new();
        let i1 = parsed(r#"{"question":"Why?","mood":3,"topic":{"b":1,"a":2}}"#);
        let i2 = parsed(r#"{ "topic" : { "a" : 2, "b" : 1 }, "mood" : 3, "question" : "Why?" }"#);
        assert_eq!(
            AiRequest::new(user, AgentType::LearningCoach, i1).fingerprint(),
            AiRequest::new(user, AgentType::LearningCoach, i2).fingerprint()
        );
    }

    #[test]
    fn the_fingerprint_is_32_hex_digits_and_stable() {
        let f = req(json!({"scores": {"communication": 97}})).fingerprint();
        assert_eq!(f.len(), 32);
        assert!(
            f.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(
            f,
            req(json!({"scores": {"communication": 97}})).fingerprint()
        );
    }

    #[test]
    fn everything_but_the_question_changes_the_fingerprint() {
        let base = req(json!({"scores": {"communication": 97}}));
        let f = base.fingerprint();

        let other_data = req(json!({"scores": {"communication": 12}}));
        assert_ne!(other_data.fingerprint(), f, "different context value");
        assert_ne!(req(Value::Null).fingerprint(), f, "no context");
        // A number and the same digits as a string are different data.
        assert_ne!(
            req(json!({"scores": {"communication": "97"}})).fingerprint(),
            f
        );

        let turns = vec![
            ChatMessage::new(Role::User, "I argue with my partner."),
            ChatMessage::new(Role::Assistant, "What happens first?"),
        ];
        let with_history = base.clone().with_history(turns.clone());
        assert_ne!(with_history.fingerprint(), f, "history");
        let mut reversed = turns.clone();
        reversed.reverse();
        assert_ne!(
            base.clone().with_history(reversed).fingerprint(),
            with_history.fingerprint(),
            "history order"
        );
        let mut roles_swapped = turns.clone();
        roles_swapped[0].role = Role::Assistant;
        assert_ne!(
            base.clone().with_history(roles_swapped).fingerprint(),
            with_history.fingerprint(),
            "who said a turn"
        );
        let mut longer = turns;
        longer.push(ChatMessage::new(Role::User, "And with my mother?"));
        assert_ne!(
            base.clone().with_history(longer).fingerprint(),
            with_history.fingerprint(),
            "one more turn"
        );

        let mut system = base.clone();
        system.params.system_prompt = Some("You are terse.".into());
        assert_ne!(system.fingerprint(), f, "system prompt");
        let mut system2 = base.clone();
        system2.params.system_prompt = Some("You are kind.".into());
        assert_ne!(system2.fingerprint(), system.fingerprint());

        let mut tokens = base.clone();
        tokens.params.max_tokens = 513;
        assert_ne!(tokens.fingerprint(), f, "max_tokens");

        let mut temperature = base.clone();
        temperature.params.temperature = 0.9;
        assert_ne!(temperature.fingerprint(), f, "temperature");

        let mut model = base.clone();
        model.params.model = "gpt-4o".into();
        assert_ne!(model.fingerprint(), f, "model");
    }

    #[test]
    fn the_question_does_not_change_the_fingerprint() {
        let base = req(json!({"scores": {"communication": 97}}));
        let mut other = base.clone();
        other.input = Value::from("Am I a good listener? Be honest.");
        assert_ne!(base.question(), other.question());
        assert_eq!(base.fingerprint(), other.fingerprint());

        // An object input: its question field is the question, the rest is context.
        let user = UserId::new();
        let ask = |q: &str, mood: u8| {
            AiRequest::new(
                user,
                AgentType::CommunicationAdvisor,
                json!({"message": q, "mood": mood}),
            )
            .fingerprint()
        };
        assert_eq!(ask("How do I start?", 3), ask("Where do I begin?", 3));
        assert_ne!(ask("How do I start?", 3), ask("How do I start?", 4));
    }

    #[test]
    fn an_input_without_a_question_field_is_fingerprinted_whole() {
        // Its question is its canonical JSON, data and all: the data must scope it.
        let user = UserId::new();
        let f =
            |input: Value| AiRequest::new(user, AgentType::InsightGenerator, input).fingerprint();
        assert_ne!(
            f(json!({"scores": {"communication": 97}})),
            f(json!({"scores": {"communication": 12}}))
        );
        assert_eq!(
            f(parsed(r#"{"a": 1, "b": [2, 3]}"#)),
            f(parsed(r#"{ "b" : [2,3], "a" : 1 }"#)),
            "canonically"
        );
        // A question field that is not a string is data too.
        assert_ne!(f(json!({"question": 1})), f(json!({"question": 2})));
    }
}
