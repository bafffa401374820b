//! What a model costs: [`Price`], exact integer arithmetic in nano-dollars.

use serde::{Deserialize, Serialize};

use super::Usage;

/// A model's price, in **micro-dollars per 1,000 tokens** (so $0.02 per 1K is
/// `20_000`). In these units one token costs exactly that many nano-dollars, so every
/// cost is an exact integer and sums never drift.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// Input (prompt) tokens, µ$ per 1K.
    pub input_micros_per_1k: u64,
    /// Output (completion) tokens, µ$ per 1K.
    pub output_micros_per_1k: u64,
}

impl Price {
    /// The cost of `usage`, in nano-dollars (exact). A cost past `u64::MAX`
    /// nano-dollars (18 billion dollars) saturates there rather than wrapping; see
    /// [`Price::checked_cost_nanos`].
    pub fn cost_nanos(&self, usage: Usage) -> u64 {
        self.checked_cost_nanos(usage).unwrap_or(u64::MAX)
    }

    /// The cost of `usage`, in nano-dollars, or `None` when it does not fit a `u64`.
    pub fn checked_cost_nanos(&self, usage: Usage) -> Option<u64> {
        u64::from(usage.input_tokens)
            .checked_mul(self.input_micros_per_1k)?
            .checked_add(u64::from(usage.output_tokens).checked_mul(self.output_micros_per_1k)?)
    }
}
