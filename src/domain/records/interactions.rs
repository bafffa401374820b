//! Recorded AI interactions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::enums::AgentType;
use crate::domain::ids::*;
use crate::domain::validate as v;
use crate::error::Result;

/// One recorded AI request and its answer, stored in weekly partitions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AiInteraction {
    /// Its id.
    pub id: InteractionId,
    /// Who asked.
    pub user_id: UserId,
    /// Which agent answered.
    pub agent_type: AgentType,
    /// Which model.
    pub model: String,
    /// The request.
    pub input: Value,
    /// The answer.
    pub output: Value,
    /// Input tokens billed.
    pub input_tokens: i32,
    /// Output tokens billed.
    pub output_tokens: i32,
    /// What it cost, in nano-dollars (1e-9 $) (exact).
    pub cost_nanos: i64,
    /// What a cache hit saved, in nano-dollars (1e-9 $).
    pub saved_nanos: i64,
    /// End-to-end latency in milliseconds.
    pub latency_ms: i32,
    /// Whether it was answered from a cache.
    pub cache_hit: bool,
    /// Whether it succeeded.
    pub success: bool,
    /// When it happened (also its partition key).
    pub created_at: DateTime<Utc>,
}

/// Input for recording an AI interaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewAiInteraction {
    /// Its id; `None` assigns a new one. Set it to make a retried write idempotent.
    pub id: Option<InteractionId>,
    /// Who asked.
    pub user_id: UserId,
    /// Which agent answered.
    pub agent_type: AgentType,
    /// Which model (1–100 characters).
    pub model: String,
    /// The request (at most 64 KiB of JSON).
    pub input: Value,
    /// The answer (at most 64 KiB of JSON).
    pub output: Value,
    /// Input tokens, ≥ 0.
    pub input_tokens: i32,
    /// Output tokens, ≥ 0.
    pub output_tokens: i32,
    /// Cost in nano-dollars (1e-9 $), ≥ 0.
    pub cost_nanos: i64,
    /// Saved by a cache hit, in nano-dollars (1e-9 $), ≥ 0.
    pub saved_nanos: i64,
    /// Latency in milliseconds, ≥ 0.
    pub latency_ms: i32,
    /// Whether answered from a cache.
    pub cache_hit: bool,
    /// Whether it succeeded.
    pub success: bool,
    /// When it happened; `None` means now.
    pub created_at: Option<DateTime<Utc>>,
}

impl NewAiInteraction {
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        v::title("model", &self.model)?;
        v::text("model", &self.model, 100)?;
        v::json("input", &self.input)?;
        v::json("output", &self.output)?;
        v::range("input_tokens", self.input_tokens.into(), 0, i32::MAX.into())?;
        v::range(
            "output_tokens",
            self.output_tokens.into(),
            0,
            i32::MAX.into(),
        )?;
        v::range("cost_nanos", self.cost_nanos, 0, i64::MAX)?;
        v::range("saved_nanos", self.saved_nanos, 0, i64::MAX)?;
        v::range("latency_ms", self.latency_ms.into(), 0, i32::MAX.into())
    }
}
