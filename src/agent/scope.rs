//! [`Scope`]: where an answer to a request may be reused, and [`CacheTier`]: how a
//! cached answer was found. Both are keyed on [`AiRequest`] alone, so the batcher, the
//! semantic cache and the metrics share them without depending on each other.

use serde::{Deserialize, Serialize};

use super::AiRequest;
use crate::domain::{AgentType, UserId};
use crate::text::fnv1a;

/// Where a cached answer may be reused: the agent, the model, the parameters that
/// change an answer, and — for personal agents — the user. A lookup only ever sees
/// entries of its own scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scope {
    /// The agent kind.
    pub agent: AgentType,
    /// The model asked for (`""`: the backend's default).
    pub model: String,
    /// A fingerprint of the answer-changing parameters (max tokens, temperature,
    /// system prompt).
    pub params: String,
    /// The user, for personal agents; `None` for shared ones.
    pub user: Option<UserId>,
    /// [`AiRequest::fingerprint`]: everything else that reaches the model (context,
    /// history, system prompt, parameters). The same question over other data is
    /// another scope.
    pub context: String,
}

impl Scope {
    /// The scope of `req`; `personal` puts the user in it.
    pub fn of(req: &AiRequest, personal: bool) -> Self {
        let p = &req.params;
        let system = p
            .system_prompt
            .as_deref()
            .map_or(0, |s| fnv1a(s.as_bytes()));
        Self {
            agent: req.agent,
            model: p.model.clone(),
            params: format!("{}|{:.3}|{system:016x}", p.max_tokens, p.temperature),
            user: personal.then_some(req.user_id),
            context: req.fingerprint(),
        }
    }
}

/// How the answer to an AI request was found: in a cache (and which tier) or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CacheTier {
    /// The same text, after normalising case, spaces and trailing punctuation.
    Exact,
    /// A different text above the similarity threshold that every verifier accepted.
    Semantic,
    /// Not cached: a backend answered.
    Miss,
    /// No semantic cache configured.
    Off,
}
