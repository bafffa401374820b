//! [`SemanticCacheBuilder`]: the cache's settings, their defaults and their checks.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::SemanticCache;
use super::index::State;
use crate::domain::AgentType;
use crate::error::{Error, Result};
use crate::semantic::Embedder;
use crate::semantic::budget::ErrorBudget;
use crate::semantic::verify::{AnswerComparer, RuleVerifier, SameOutput, Verifier};

/// The longest TTL a cache takes: the crate-wide
/// [`MAX_DURATION`](crate::domain::validate::MAX_DURATION), 366 days. A longer one (such
/// as `Duration::MAX` for "never") would overflow the clock when an answer is stored.
pub const MAX_TTL: Duration = crate::domain::validate::MAX_DURATION;

/// Builder for [`SemanticCache`].
#[must_use]
pub struct SemanticCacheBuilder {
    embedder: Arc<dyn Embedder>,
    threshold: Option<f32>,
    per_agent: HashMap<AgentType, f32>,
    shared: HashSet<AgentType>,
    ttl: Duration,
    capacity: usize,
    salience: bool,
    ef_search: usize,
    verifiers: Vec<Arc<dyn Verifier>>,
    comparer: Arc<dyn AnswerComparer>,
    semantic: Option<bool>,
    budget: Option<ErrorBudget>,
    seed: u64,
}

impl std::fmt::Debug for SemanticCacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemanticCacheBuilder")
            .field("embedder", &self.embedder.name())
            .field("threshold", &self.threshold)
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl SemanticCacheBuilder {
    /// The cosine threshold for every agent, when semantic hits are on. Default: the
    /// embedder's calibrated [`Embedder::default_threshold`] (0.88 for MiniLM, 0.60
    /// for hashing). Setting it does not turn semantic hits on: see
    /// [`semantic_hits`](Self::semantic_hits).
    pub fn threshold(mut self, t: f32) -> Self {
        self.threshold = Some(t);
        self
    }

    /// The threshold for one agent.
    pub fn agent_threshold(mut self, agent: AgentType, t: f32) -> Self {
        self.per_agent.insert(agent, t);
        self
    }

    /// Makes `agent`'s answers shareable between users (its scope leaves the user
    /// out). Default: every agent is personal.
    pub fn shared(mut self, agent: AgentType) -> Self {
        self.shared.insert(agent);
        self
    }

    /// How long an answer is kept: at most [`MAX_TTL`] (366 days). Default: 24 h.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Most entries over all scopes; the oldest go first. Default: 100,000.
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n;
        self
    }

    /// Whether the default [`RuleVerifier`] (salience and contrast rules) runs before
    /// the verifiers added with [`verifier`](Self::verifier). Default: on. (Off only
    /// to measure it.)
    pub fn salience_check(mut self, on: bool) -> Self {
        self.salience = on;
        self
    }

    /// How an audit's fresh answer is compared with the stored one in error-budget
    /// mode ([`SemanticCache::judge_audit`], which `AiPipeline` calls for every
    /// audited request it answers). Default: [`SameOutput`].
    pub fn audit_comparer(mut self, c: Arc<dyn AnswerComparer>) -> Self {
        self.comparer = c;
        self
    }

    /// Adds a verifier: a would-be semantic hit is served only when every verifier
    /// accepts it (in order: the rules, then these). An error from a verifier is a
    /// miss.
    pub fn verifier(mut self, v: Arc<dyn Verifier>) -> Self {
        self.verifiers.push(v);
        self
    }

    /// Whether questions that are not exact repeats may be answered from the cache.
    /// Default: [`Embedder::semantic_by_default`] — **off** for every embedder the
    /// crate ships (the lexical `HashingEmbedder`, MiniLM, the OpenAI-compatible one):
    /// none has met the 5 % wrong-answer bar on questions it was not tuned on, so
    /// the cache serves exact repeats only. Turning it on is the host's explicit
    /// choice (see the README's table for what it costs).
    pub fn semantic_hits(mut self, on: bool) -> Self {
        self.semantic = Some(on);
        self
    }

    /// Error-budget mode: learn thresholds per scope from audited
    /// outcomes instead of using a fixed one (see [`ErrorBudget`]). Turns semantic
    /// hits on, but only as far as the evidence supports.
    pub fn error_budget(mut self, budget: ErrorBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The seed of the audit sampling (default 0): the same seed and the same calls
    /// audit the same lookups.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// HNSW search breadth for large scopes. Default: 32 (at 100,000 entries it finds
    /// the true nearest neighbour for 97.5 % of queries; see `benches/semantic.rs`).
    pub fn ef_search(mut self, ef: usize) -> Self {
        self.ef_search = ef;
        self
    }

    /// The cache.
    ///
    /// # Errors
    /// `InvalidInput` naming the field: a threshold outside (0, 1], a zero TTL or one
    /// past [`MAX_TTL`], a zero capacity or `ef_search`, an invalid [`ErrorBudget`].
    pub fn build(self) -> Result<SemanticCache> {
        let t = self
            .threshold
            .unwrap_or_else(|| self.embedder.default_threshold());
        for (field, v) in std::iter::once(("threshold", t))
            .chain(self.per_agent.values().map(|v| ("agent_threshold", *v)))
        {
            if !(v > 0.0 && v <= 1.0) {
                return Err(Error::invalid(field, format!("{v} is outside (0, 1]")));
            }
        }
        if self.ttl.is_zero() {
            return Err(Error::invalid("ttl", "must be positive"));
        }
        crate::domain::validate::duration("ttl", self.ttl)?;
        if self.capacity == 0 || self.ef_search == 0 {
            return Err(Error::invalid(
                "capacity",
                "capacity and ef_search must be positive",
            ));
        }
        if let Some(b) = &self.budget {
            b.validate()?;
        }
        let mut verifiers: Vec<Arc<dyn Verifier>> = Vec::new();
        if self.salience {
            verifiers.push(Arc::new(RuleVerifier));
        }
        verifiers.extend(self.verifiers);
        Ok(SemanticCache {
            semantic: self
                .semantic
                .unwrap_or_else(|| self.embedder.semantic_by_default()),
            verifiers,
            comparer: self.comparer,
            budget: self.budget,
            evidence: Mutex::default(),
            pending: Mutex::default(),
            rng: AtomicU64::new(self.seed),
            dim: self.embedder.dimension(),
            embedder: self.embedder,
            threshold: t,
            per_agent: self.per_agent,
            shared: self.shared,
            ttl: self.ttl,
            capacity: self.capacity,
            ef_search: self.ef_search,
            state: RwLock::new(State::default()),
            counters: Default::default(),
            sharing: None,
        })
    }
}

impl SemanticCache {
    /// A builder over `embedder`, with the defaults.
    pub fn builder(embedder: Arc<dyn Embedder>) -> SemanticCacheBuilder {
        SemanticCacheBuilder {
            embedder,
            threshold: None,
            per_agent: HashMap::new(),
            shared: HashSet::new(),
            ttl: Duration::from_secs(24 * 3600),
            capacity: 100_000,
            salience: true,
            ef_search: 32,
            verifiers: Vec::new(),
            comparer: Arc::new(SameOutput),
            semantic: None,
            budget: None,
            seed: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::semantic::HashingEmbedder;

    /// A TTL of "never" (`Duration::MAX`) used to be accepted and then panic on the
    /// first store (the expiry instant overflowed the clock): it is refused, named.
    #[test]
    fn a_ttl_past_the_clock_is_refused_naming_the_field() {
        let builder = || SemanticCache::builder(Arc::new(HashingEmbedder::new()));
        for ttl in [Duration::MAX, MAX_TTL + Duration::from_secs(1)] {
            let e = builder().ttl(ttl).build().expect_err("refused");
            assert_eq!(e.invalid_field(), Some("ttl"), "{e}");
        }
        assert!(builder().ttl(MAX_TTL).build().is_ok());
    }
}
