//! [`SemanticCache`]: scoped, thresholded, salience-checked answer reuse.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use super::budget::{AuditTicket, ErrorBudget, ErrorEstimate, Evidence};
use super::hnsw::{Hnsw, dot};
use super::verify::{Candidate, RuleVerifier, Verdict, Verifier};
use super::{Embedder, normalise};
use crate::agent::{AiRequest, AiResponse, CacheTier, Scope, Usage};
use crate::domain::{AgentType, UserId};
use crate::error::{Error, Result};

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
}

/// The result of [`SemanticCache::lookup`].
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
    },
    /// Nothing to serve.
    Miss {
        /// The request's embedding, when one was computed: pass it to
        /// [`SemanticCache::store`] to avoid embedding twice.
        embedding: Option<Vec<f32>>,
        /// The best similarity found in the scope, if any entry was seen.
        nearest: Option<f32>,
        /// Why the best candidate above the threshold was refused, if one was.
        rejected: Option<&'static str>,
        /// In error-budget mode: a would-be hit held back for audit. Ask the backend,
        /// then report with [`SemanticCache::resolve_audit`] whether the stored answer
        /// would have done.
        audit: Option<AuditTicket>,
    },
}

/// The decision for one pair of questions, as [`SemanticCache::decide`] computes it.
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

/// Counters of a [`SemanticCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SemanticStats {
    /// Hits on the exact (normalised) text.
    pub exact_hits: u64,
    /// Hits by similarity.
    pub semantic_hits: u64,
    /// Lookups without a hit.
    pub misses: u64,
    /// Misses whose best candidate came within 0.05 of the threshold or passed it
    /// but failed the salience check.
    pub near_misses: u64,
    /// Candidates above the threshold refused by a verifier (the salience and
    /// contrast rules by default).
    pub salience_rejections: u64,
    /// Would-be hits held back for audit (error-budget mode).
    pub audits: u64,
    /// Entries stored now.
    pub entries: u64,
    /// Entries dropped for capacity.
    pub evictions: u64,
    /// Entries dropped because their TTL passed.
    pub expirations: u64,
}

#[derive(Debug)]
struct Entry {
    /// Its number for the eviction queue: unique for the cache's life, unlike its
    /// slot, which compaction renumbers.
    seq: u64,
    question: String,
    norm: String,
    embedding: Vec<f32>,
    answer: CachedAnswer,
    expires: Instant,
}

/// Scopes below this size are scanned exactly; above it an HNSW graph is kept.
const GRAPH_MIN: usize = 512;

#[derive(Debug, Default)]
struct ScopeIndex {
    entries: Vec<Option<Entry>>,
    exact: HashMap<String, u32>,
    /// Slot of each live entry, by its `seq`.
    slots: HashMap<u64, u32>,
    graph: Option<Hnsw>,
    live: usize,
}

impl ScopeIndex {
    fn insert(&mut self, e: Entry, dim: usize) -> u32 {
        let id = self.entries.len() as u32;
        if let Some(g) = &mut self.graph {
            g.insert(&e.embedding);
        } else if self.live + 1 >= GRAPH_MIN {
            let mut g = Hnsw::new(dim);
            for x in &self.entries {
                // Dead slots keep their place so ids stay aligned with the graph.
                match x {
                    Some(x) => g.insert(&x.embedding),
                    None => g.insert(&e.embedding),
                };
            }
            g.insert(&e.embedding);
            self.graph = Some(g);
        }
        self.exact.insert(e.norm.clone(), id);
        self.slots.insert(e.seq, id);
        self.entries.push(Some(e));
        self.live += 1;
        id
    }

    fn remove(&mut self, id: u32) -> bool {
        let Some(slot) = self.entries.get_mut(id as usize) else {
            return false;
        };
        let Some(e) = slot.take() else { return false };
        if self.exact.get(&e.norm) == Some(&id) {
            self.exact.remove(&e.norm);
        }
        self.slots.remove(&e.seq);
        self.live -= 1;
        // Rebuild once dead slots outnumber live ones.
        let dead = self.entries.len() - self.live;
        if dead > self.live && dead > 64 {
            self.compact();
        }
        true
    }

    fn compact(&mut self) {
        let dim = self
            .entries
            .iter()
            .flatten()
            .next()
            .map(|e| e.embedding.len());
        let old = std::mem::take(&mut self.entries);
        self.exact.clear();
        self.slots.clear();
        self.graph = None;
        self.live = 0;
        for e in old.into_iter().flatten() {
            self.insert(e, dim.unwrap_or(0));
        }
    }

    /// Up to `k` live, unexpired candidates, most similar first.
    fn nearest(&self, q: &[f32], k: usize, ef: usize, now: Instant) -> Vec<(u32, f32)> {
        let alive = |id: u32| {
            self.entries[id as usize]
                .as_ref()
                .is_some_and(|e| e.expires > now)
        };
        match &self.graph {
            Some(g) => g.search(q, k, ef, alive),
            None => {
                let mut all: Vec<(u32, f32)> = self
                    .entries
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| {
                        let e = e.as_ref()?;
                        (e.expires > now).then(|| (i as u32, dot(q, &e.embedding)))
                    })
                    .collect();
                all.sort_by(|a, b| b.1.total_cmp(&a.1));
                all.truncate(k);
                all
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    scopes: HashMap<Scope, ScopeIndex>,
    /// Insertion order, for expiry and capacity eviction (oldest first), by entry
    /// `seq`; an item whose entry is gone (replaced, forgotten) is skipped.
    order: VecDeque<(Scope, u64, Instant)>,
    entries: usize,
    next_seq: u64,
}

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

    /// How long an answer is kept. Default: 24 h.
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

    /// Error-budget mode: learn thresholds per agent and model from audited
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

    /// # Errors
    /// `InvalidInput` for a threshold outside (0, 1], a zero TTL or capacity.
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
            budget: self.budget,
            evidence: Mutex::default(),
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
        })
    }
}

#[derive(Debug, Default)]
struct Counters {
    exact: AtomicU64,
    semantic: AtomicU64,
    misses: AtomicU64,
    near: AtomicU64,
    rejected: AtomicU64,
    audits: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
}

/// Reuses AI answers for paraphrased requests within a [`Scope`] — see the module docs.
pub struct SemanticCache {
    embedder: Arc<dyn Embedder>,
    dim: usize,
    threshold: f32,
    per_agent: HashMap<AgentType, f32>,
    shared: HashSet<AgentType>,
    ttl: Duration,
    capacity: usize,
    ef_search: usize,
    semantic: bool,
    verifiers: Vec<Arc<dyn Verifier>>,
    budget: Option<ErrorBudget>,
    evidence: Mutex<HashMap<(AgentType, String), Evidence>>,
    rng: AtomicU64,
    state: RwLock<State>,
    counters: Counters,
}

impl std::fmt::Debug for SemanticCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemanticCache")
            .field("embedder", &self.embedder.name())
            .field("threshold", &self.threshold)
            .field("semantic", &self.semantic)
            .field("budget", &self.budget)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Lowercase, single spaces, no trailing punctuation.
fn normalise_text(s: &str) -> String {
    let joined = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    // Trailing punctuation does not change a question ("…?" and "…." are one), but a
    // text that is nothing else keeps it: "?" must not be an exact repeat of "...".
    match joined.trim_end_matches(['?', '!', '.', ' ']) {
        "" => joined,
        t => t.to_string(),
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
            semantic: None,
            budget: None,
            seed: 0,
        }
    }

    /// Whether questions that are not exact repeats may be served (see
    /// [`SemanticCacheBuilder::semantic_hits`]).
    pub fn serves_semantic_hits(&self) -> bool {
        self.semantic || self.budget.is_some()
    }

    /// The verifiers a would-be hit must pass, in order.
    pub fn verifiers(&self) -> &[Arc<dyn Verifier>] {
        &self.verifiers
    }

    /// The embedder.
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// The threshold that applies to `agent`.
    pub fn threshold_for(&self, agent: AgentType) -> f32 {
        self.per_agent
            .get(&agent)
            .copied()
            .unwrap_or(self.threshold)
    }

    /// Whether `agent`'s answers are personal (scoped to the user).
    pub fn is_personal(&self, agent: AgentType) -> bool {
        !self.shared.contains(&agent)
    }

    /// The scope `req` is looked up in.
    pub fn scope_of(&self, req: &AiRequest) -> Scope {
        Scope::of(req, self.is_personal(req.agent))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks `req` up: exact text first, then by similarity.
    ///
    /// # Errors
    /// `InvalidInput` for an invalid request; the embedder's errors.
    pub async fn lookup(&self, req: &AiRequest) -> Result<Lookup> {
        req.validate()?;
        let scope = self.scope_of(req);
        let question = req.prompt_text();
        let norm = normalise_text(&question);
        let now = Instant::now();
        {
            let s = self.read();
            if let Some(idx) = s.scopes.get(&scope)
                && let Some(&id) = idx.exact.get(&norm)
                && let Some(e) = idx.entries[id as usize].as_ref()
                && e.expires > now
            {
                self.counters.exact.fetch_add(1, Relaxed);
                return Ok(Lookup::Hit {
                    answer: e.answer.clone(),
                    tier: CacheTier::Exact,
                    similarity: 1.0,
                });
            }
        }
        let embedding = self.embed_one(&question).await?;
        if !self.serves_semantic_hits() {
            self.counters.misses.fetch_add(1, Relaxed);
            return Ok(Lookup::Miss {
                embedding: Some(embedding),
                nearest: None,
                rejected: None,
                audit: None,
            });
        }
        let threshold = self.threshold_for(req.agent);
        let key = (req.agent, req.params.model.clone());
        let (floor, learned) = match &self.budget {
            Some(b) => (b.floor, self.learned(&key)),
            None => (threshold, None),
        };
        // The candidates are copied out so that no lock is held while verifiers run.
        let candidates: Vec<(u32, f32, String, CachedAnswer)> = {
            let s = self.read();
            s.scopes.get(&scope).map_or_else(Vec::new, |idx| {
                idx.nearest(&embedding, 4, self.ef_search, now)
                    .into_iter()
                    .filter_map(|(id, sim)| {
                        let e = idx.entries[id as usize].as_ref()?;
                        Some((id, sim, e.question.clone(), e.answer.clone()))
                    })
                    .collect()
            })
        };
        let nearest = candidates.first().map(|c| c.1);
        let mut rejected = None;
        for (id, sim, stored, answer) in candidates {
            if sim < floor {
                break;
            }
            let cand = Candidate {
                question: &question,
                stored_question: &stored,
                stored_answer: &answer.output,
                similarity: sim,
            };
            if let Some(why) = self.refusal(&cand).await {
                rejected.get_or_insert(why);
                self.counters.rejected.fetch_add(1, Relaxed);
                continue;
            }
            // Verifiers ran without the lock: serve nothing that was removed meanwhile
            // (`forget_user`, expiry, replacement).
            if !self.still_stored(&scope, id, &stored) {
                continue;
            }
            let Some(b) = &self.budget else {
                self.counters.semantic.fetch_add(1, Relaxed);
                return Ok(Lookup::Hit {
                    answer,
                    tier: CacheTier::Semantic,
                    similarity: sim,
                });
            };
            if learned.is_some_and(|t| sim >= t) && !self.draw(b.audit_share) {
                self.counters.semantic.fetch_add(1, Relaxed);
                return Ok(Lookup::Hit {
                    answer,
                    tier: CacheTier::Semantic,
                    similarity: sim,
                });
            }
            self.counters.audits.fetch_add(1, Relaxed);
            self.counters.misses.fetch_add(1, Relaxed);
            return Ok(Lookup::Miss {
                embedding: Some(embedding),
                nearest,
                rejected,
                audit: Some(AuditTicket {
                    key,
                    similarity: sim,
                    stored_question: stored,
                    stored_answer: answer.output,
                }),
            });
        }
        self.counters.misses.fetch_add(1, Relaxed);
        if rejected.is_some() || nearest.is_some_and(|n| n >= threshold - 0.05) {
            self.counters.near.fetch_add(1, Relaxed);
        }
        Ok(Lookup::Miss {
            embedding: Some(embedding),
            nearest,
            rejected,
            audit: None,
        })
    }

    fn still_stored(&self, scope: &Scope, id: u32, question: &str) -> bool {
        let now = Instant::now();
        let s = self.read();
        s.scopes
            .get(scope)
            .and_then(|idx| idx.entries.get(id as usize))
            .and_then(Option::as_ref)
            .is_some_and(|e| e.question == question && e.expires > now)
    }

    /// Why the verifiers refuse `cand`, or `None` when all accept. An error is a
    /// refusal.
    async fn refusal(&self, cand: &Candidate<'_>) -> Option<&'static str> {
        for v in &self.verifiers {
            match v.verify(cand).await {
                Ok(Verdict::Accept) => {}
                Ok(Verdict::Reject(why)) => return Some(why),
                Err(e) => {
                    tracing::warn!(verifier = v.name(), error = %e, "semantic cache: verifier failed; a miss");
                    return Some("verifier failed");
                }
            }
        }
        None
    }

    /// A uniform draw below `share` (splitmix64 over a counter; seeded).
    fn draw(&self, share: f64) -> bool {
        let mut z = self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) < share
    }

    fn learned(&self, key: &(AgentType, String)) -> Option<f32> {
        let ev = self.evidence.lock().unwrap_or_else(|e| e.into_inner());
        ev.get(key).and_then(Evidence::threshold)
    }

    /// Reports how an audited would-be hit turned out: `correct` when the stored
    /// answer would have served the new question as well as the fresh one. The ticket
    /// is consumed, so one outcome counts once. Ignored outside error-budget mode.
    pub fn resolve_audit(&self, ticket: AuditTicket, correct: bool) {
        let Some(b) = &self.budget else { return };
        let mut ev = self.evidence.lock().unwrap_or_else(|e| e.into_inner());
        ev.entry(ticket.key.clone())
            .or_default()
            .record(ticket.similarity, !correct, b);
    }

    /// The estimated wrong-answer share of semantic hits for `agent` and `model`
    /// (error-budget mode; `None` otherwise).
    pub fn error_estimate(&self, agent: AgentType, model: &str) -> Option<ErrorEstimate> {
        let b = self.budget.as_ref()?;
        let ev = self.evidence.lock().unwrap_or_else(|e| e.into_inner());
        Some(
            ev.get(&(agent, model.to_string()))
                .map_or_else(|| Evidence::default().estimate(b), |e| e.estimate(b)),
        )
    }

    /// Stores `resp` as the answer to `req`, reusing `embedding` from a miss when given.
    ///
    /// # Errors
    /// `InvalidInput` for an invalid request or embedding; the embedder's errors.
    pub async fn store(
        &self,
        req: &AiRequest,
        resp: &AiResponse,
        embedding: Option<Vec<f32>>,
    ) -> Result<()> {
        req.validate()?;
        let question = req.prompt_text();
        let embedding = match embedding {
            Some(v) => normalise(v, self.dim)?,
            None => self.embed_one(&question).await?,
        };
        let scope = self.scope_of(req);
        let now = Instant::now();
        let mut s = self.write();
        let seq = s.next_seq;
        s.next_seq += 1;
        let entry = Entry {
            seq,
            norm: normalise_text(&question),
            embedding,
            answer: CachedAnswer {
                output: resp.output.clone(),
                model: resp.model.clone(),
                usage: resp.usage,
                question: question.clone(),
            },
            question,
            expires: now + self.ttl,
        };
        self.expire(&mut s, now);
        let idx = s.scopes.entry(scope.clone()).or_default();
        if let Some(&old) = idx.exact.get(&entry.norm) {
            idx.remove(old);
            s.entries -= 1;
        }
        let idx = s.scopes.get_mut(&scope).expect("just inserted");
        idx.insert(entry, self.dim);
        s.entries += 1;
        s.order.push_back((scope, seq, now + self.ttl));
        while s.entries > self.capacity {
            let Some((sc, seq, _)) = s.order.pop_front() else {
                break;
            };
            if Self::drop_entry(&mut s, &sc, seq) {
                self.counters.evictions.fetch_add(1, Relaxed);
            }
        }
        Self::tidy_order(&mut s);
        Ok(())
    }

    /// Drops queue items of entries that are gone once they outnumber the live ones,
    /// so the queue stays as small as the cache.
    fn tidy_order(s: &mut State) {
        if s.order.len() > 2 * s.entries + 64 {
            let State { scopes, order, .. } = s;
            order.retain(|(sc, seq, _)| scopes.get(sc).is_some_and(|i| i.slots.contains_key(seq)));
        }
    }

    fn drop_entry(s: &mut State, scope: &Scope, seq: u64) -> bool {
        let Some(idx) = s.scopes.get_mut(scope) else {
            return false;
        };
        let Some(&id) = idx.slots.get(&seq) else {
            return false;
        };
        let removed = idx.remove(id);
        if removed {
            s.entries -= 1;
        }
        if idx.live == 0 {
            s.scopes.remove(scope);
        }
        removed
    }

    fn expire(&self, s: &mut State, now: Instant) {
        while s.order.front().is_some_and(|(_, _, exp)| *exp <= now) {
            let (sc, seq, _) = s.order.pop_front().expect("checked");
            if Self::drop_entry(s, &sc, seq) {
                self.counters.expirations.fetch_add(1, Relaxed);
            }
        }
    }

    async fn embed_one(&self, text: &str) -> Result<Vec<f32>> {
        let mut v = self.embedder.embed(&[text.to_string()]).await?;
        let v = v.pop().ok_or_else(|| Error::Backend {
            what: "embedder".into(),
            retryable: false,
            source: "returned no vector".into(),
        })?;
        normalise(v, self.dim).map_err(|e| Error::Backend {
            what: "embedder".into(),
            retryable: false,
            source: Box::new(e),
        })
    }

    /// Removes every entry of `user` (e.g. when they delete their account).
    pub fn forget_user(&self, user: UserId) -> usize {
        let mut s = self.write();
        let doomed: Vec<Scope> = s
            .scopes
            .keys()
            .filter(|k| k.user == Some(user))
            .cloned()
            .collect();
        let mut n = 0;
        for k in doomed {
            if let Some(idx) = s.scopes.remove(&k) {
                n += idx.live;
            }
        }
        s.entries -= n;
        s.order.retain(|(sc, _, _)| sc.user != Some(user));
        n
    }

    /// Whether the cache, as configured, would answer `b` with the answer stored for
    /// `a` (same scope, fixed threshold, every verifier asked; error-budget
    /// thresholds are not used here).
    ///
    /// # Errors
    /// The embedder's errors.
    pub async fn decide(&self, a: &str, b: &str) -> Result<Decision> {
        let v = self.embedder.embed(&[a.to_string(), b.to_string()]).await?;
        let (va, vb) = (
            normalise(v[0].clone(), self.dim)?,
            normalise(v[1].clone(), self.dim)?,
        );
        let exact = normalise_text(a) == normalise_text(b);
        let similarity = if exact { 1.0 } else { dot(&va, &vb) };
        let rejected = if exact || similarity < self.threshold {
            None
        } else if !self.semantic {
            Some("exact repeats only")
        } else {
            let answer = Value::Null;
            self.refusal(&Candidate {
                question: b,
                stored_question: a,
                stored_answer: &answer,
                similarity,
            })
            .await
        };
        let hit = exact || (similarity >= self.threshold && rejected.is_none());
        let mut score = if hit {
            1.0
        } else {
            (similarity.max(0.0) / self.threshold).min(0.999_999)
        };
        if rejected.is_some() {
            score *= 0.5;
        }
        Ok(Decision {
            similarity,
            threshold: self.threshold,
            rejected,
            hit,
            score,
        })
    }

    /// The counters.
    pub fn stats(&self) -> SemanticStats {
        SemanticStats {
            exact_hits: self.counters.exact.load(Relaxed),
            semantic_hits: self.counters.semantic.load(Relaxed),
            misses: self.counters.misses.load(Relaxed),
            near_misses: self.counters.near.load(Relaxed),
            salience_rejections: self.counters.rejected.load(Relaxed),
            audits: self.counters.audits.load(Relaxed),
            entries: self.read().entries as u64,
            evictions: self.counters.evictions.load(Relaxed),
            expirations: self.counters.expirations.load(Relaxed),
        }
    }
}
