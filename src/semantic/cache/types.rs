//! What the cache hands out: stored answers, lookup results, decisions and counters.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::{CacheTier, Usage};
use crate::domain::UserId;
use crate::semantic::budget::AuditTicket;

/// A stored answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// The agent's output.
    pub output: Value,
    /// The model that produced it.
    pub model: String,
    /// What producing it cost in tokens (what a hit saves).
    pub usage: Usage,
    /// The question it answered.
    pub question: String,
    /// The backend that produced it, so a hit's saving is priced as the call was
    /// charged (a backend's own price applies when the price table does not list the
    /// model); `None` in entries stored without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// In a shared scope (no user), the user whose request stored it: the prompt
    /// carried their own data (a [`ContextProvider`](crate::context::ContextProvider)
    /// context, their conversation), so forgetting them
    /// ([`SemanticCache::forget_user`](super::SemanticCache::forget_user)) drops it
    /// too. `None` in personal scopes (the scope holds the user) and in entries
    /// stored without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<UserId>,
}

/// The result of [`SemanticCache::lookup`](super::SemanticCache::lookup).
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// A stored answer may be served.
    Hit {
        /// The answer.
        answer: CachedAnswer,
        /// How it was found.
        tier: CacheTier,
        /// Cosine similarity of the questions (1 for exact hits).
        similarity: f32,
        /// What paid verifiers (an LLM judge) cost during this lookup, in
        /// nano-dollars.
        verification_nanos: u64,
    },
    /// Nothing to serve.
    Miss {
        /// The request's embedding, when one was computed: pass it to
        /// [`SemanticCache::store`](super::SemanticCache::store) to avoid embedding
        /// twice.
        embedding: Option<Vec<f32>>,
        /// The best similarity found in the scope, if any entry was seen (`None`
        /// when the cache serves exact repeats only: nothing is searched then).
        nearest: Option<f32>,
        /// Why the best candidate above the threshold was refused, if one was.
        rejected: Option<&'static str>,
        /// In error-budget mode: a would-be hit held back for audit. Ask the backend,
        /// then report with
        /// [`SemanticCache::resolve_audit`](super::SemanticCache::resolve_audit)
        /// whether the stored answer would have done.
        audit: Option<AuditTicket>,
        /// What paid verifiers (an LLM judge) cost during this lookup, in
        /// nano-dollars.
        verification_nanos: u64,
    },
}

/// The decision for one pair of questions, as
/// [`SemanticCache::decide`](super::SemanticCache::decide) computes it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// Cosine similarity of the two texts.
    pub similarity: f32,
    /// The threshold used.
    pub threshold: f32,
    /// Why a verifier refused (or `"exact repeats only"` when the cache serves no
    /// semantic hits), if one did.
    pub rejected: Option<&'static str>,
    /// Whether the cache would answer the second text from the first's entry.
    pub hit: bool,
    /// 1.0 exactly for a hit; otherwise `similarity / threshold` capped below 1,
    /// halved when refused.
    pub score: f32,
}

/// Counters of a [`SemanticCache`](super::SemanticCache).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemanticStats {
    /// Hits on the exact (normalised) text.
    pub exact_hits: u64,
    /// Hits by similarity.
    pub semantic_hits: u64,
    /// Lookups without a hit.
    pub misses: u64,
    /// Misses whose best candidate came within 0.05 of the threshold, or where a
    /// verifier refused a candidate (audits not included).
    pub near_misses: u64,
    /// Candidates above the threshold refused by a verifier (the salience and
    /// contrast rules by default).
    pub salience_rejections: u64,
    /// Would-be hits held back for audit (error-budget mode).
    pub audits: u64,
    /// Entries held now (expired ones included until a later store drops them; an
    /// expired entry is never served).
    pub entries: u64,
    /// Entries dropped for capacity.
    pub evictions: u64,
    /// Entries dropped because their TTL passed (they are dropped when a later
    /// answer is stored).
    pub expirations: u64,
}
