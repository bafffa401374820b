//! [`SemanticCache`]: scoped, thresholded, salience-checked answer reuse.
//!
//! This file holds the cache and its lookup (exact text, then the nearest stored
//! questions, each checked by the verifiers); `index.rs` how entries are kept,
//! `store.rs` how they are added and dropped, `builder.rs` the settings, `types.rs`
//! what the cache hands out, `shared.rs` how instances share entries through a
//! [`SemanticStore`].

mod builder;
mod index;
mod shared;
mod store;
mod types;

pub use builder::{MAX_TTL, SemanticCacheBuilder};
pub use shared::{LoadQuery, SemanticStore, SharedChange, SharedEntry};
pub use types::{CachedAnswer, Decision, Lookup, SemanticStats};

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::budget::{AuditTicket, ErrorBudget, ErrorEstimate, Evidence};
use super::hnsw::dot;
use super::verify::{AnswerComparer, Candidate, Verdict, Verifier};
use super::{Embedder, normalise};
use crate::agent::{AiRequest, CacheTier, Scope};
use crate::domain::AgentType;
use crate::error::{Error, Result};
use index::{State, normalise_text};

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

/// Stored questions a lookup checks, at most (nearest first).
const CANDIDATES: usize = 4;

/// Audits waiting for their outcome: what each ticket was issued for.
#[derive(Debug, Default)]
struct Pending {
    issued: HashMap<uuid::Uuid, (Scope, f32, Instant)>,
    order: VecDeque<uuid::Uuid>,
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
    comparer: Arc<dyn AnswerComparer>,
    budget: Option<ErrorBudget>,
    evidence: Mutex<HashMap<Scope, Evidence>>,
    pending: Mutex<Pending>,
    rng: AtomicU64,
    state: RwLock<State>,
    counters: Counters,
    /// The store shared with other instances, when built with
    /// [`SemanticCacheBuilder::build_shared`].
    sharing: Option<shared::Sharing>,
}

impl std::fmt::Debug for SemanticCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemanticCache")
            .field("embedder", &self.embedder.name())
            .field("threshold", &self.threshold)
            .field("semantic", &self.semantic)
            .field("budget", &self.budget)
            .field("shared", &self.sharing.is_some())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SemanticCache {
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

    /// Looks `req` up: exact text first, then by similarity, every verifier asked.
    ///
    /// # Errors
    /// `InvalidInput` for an invalid request; the embedder's errors.
    pub async fn lookup(&self, req: &AiRequest) -> Result<Lookup> {
        self.lookup_within(req, true).await
    }

    /// The most the paid verifiers may cost in one lookup, in nano-dollars: each of
    /// the (up to four) candidates a lookup checks may be put to each of them.
    pub fn max_verification_cost(&self) -> u64 {
        self.verifiers
            .iter()
            .map(|v| v.max_cost_nanos())
            .fold(0u64, u64::saturating_add)
            .saturating_mul(CANDIDATES as u64)
    }

    /// As [`lookup`](Self::lookup); with `paid` false, a candidate that would need a
    /// paid verifier ([`Verifier::max_cost_nanos`] above 0) is refused instead of
    /// asking it (`AiPipeline` does this for a user whose budget cannot hold
    /// [`max_verification_cost`](Self::max_verification_cost)).
    ///
    /// # Errors
    /// As [`lookup`](Self::lookup).
    pub async fn lookup_within(&self, req: &AiRequest, paid: bool) -> Result<Lookup> {
        self.lookup_metered(req, paid, &AtomicU64::new(0)).await
    }

    /// As [`lookup_within`](Self::lookup_within), adding what paid verifiers cost to
    /// `spent` as each call returns (so a caller still knows what was spent when the
    /// lookup does not finish).
    pub(crate) async fn lookup_metered(
        &self,
        req: &AiRequest,
        paid: bool,
        spent: &AtomicU64,
    ) -> Result<Lookup> {
        req.validate()?;
        let scope = self.scope_of(req);
        let question = req.question();
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
                    verification_nanos: 0,
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
                verification_nanos: 0,
            });
        }
        let threshold = self.threshold_for(req.agent);
        let floor = self.budget.as_ref().map_or(threshold, |b| b.floor);
        // The candidates are copied out so that no lock is held while verifiers run.
        let candidates: Vec<(u32, f32, String, CachedAnswer)> = {
            let s = self.read();
            s.scopes.get(&scope).map_or_else(Vec::new, |idx| {
                idx.nearest(&embedding, CANDIDATES, self.ef_search, now)
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
            let refused = self.refusal(&cand, paid, spent).await;
            if let Some(why) = refused {
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
                    verification_nanos: spent.load(Relaxed),
                });
            };
            let (learned, share) = self.seen(&scope, b, sim);
            if learned.is_some_and(|t| sim >= t) && !self.draw(share) {
                self.counters.semantic.fetch_add(1, Relaxed);
                return Ok(Lookup::Hit {
                    answer,
                    tier: CacheTier::Semantic,
                    similarity: sim,
                    verification_nanos: spent.load(Relaxed),
                });
            }
            self.counters.audits.fetch_add(1, Relaxed);
            self.counters.misses.fetch_add(1, Relaxed);
            return Ok(Lookup::Miss {
                embedding: Some(embedding),
                nearest,
                rejected,
                audit: Some(AuditTicket {
                    id: self.issue(b, &scope, sim),
                    similarity: sim,
                    stored_question: stored,
                    stored_answer: answer.output,
                }),
                verification_nanos: spent.load(Relaxed),
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
            verification_nanos: spent.load(Relaxed),
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

    /// Why the verifiers refuse `cand` (`None` when all accept), and what paid ones
    /// cost. An error is a refusal; without `paid`, a paid verifier refuses uncalled.
    async fn refusal(
        &self,
        cand: &Candidate<'_>,
        paid: bool,
        spent: &AtomicU64,
    ) -> Option<&'static str> {
        for v in &self.verifiers {
            if !paid && v.max_cost_nanos() > 0 {
                return Some("no budget for verification");
            }
            match v.verify_priced(cand).await {
                Ok((verdict, cost)) => {
                    spent.fetch_add(cost, Relaxed);
                    if let Verdict::Reject(why) = verdict {
                        return Some(why);
                    }
                }
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

    /// The learned threshold of `scope` and the audit share to draw with.
    /// Registers a pending audit; returns its ticket's id (random, from the OS).
    fn issue(&self, b: &ErrorBudget, scope: &Scope, similarity: f32) -> uuid::Uuid {
        let id = uuid::Uuid::new_v4();
        let now = Instant::now();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        while p.order.len() >= b.max_pending {
            if let Some(old) = p.order.pop_front() {
                p.issued.remove(&old);
            }
        }
        p.issued.insert(id, (scope.clone(), similarity, now));
        p.order.push_back(id);
        id
    }

    /// Reports how an audited would-be hit turned out: `correct` when the stored
    /// answer would have served the new question as well as the fresh one.
    ///
    /// Returns whether the outcome was counted: only the first report of a ticket the
    /// cache issued, within [`ErrorBudget::ticket_ttl`], counts (in the scope and at
    /// the similarity the cache recorded when issuing it, whatever the ticket's
    /// fields say now); a repeat, an invented or expired ticket, a ticket of a user
    /// forgotten since, or any ticket outside error-budget mode returns `false`.
    pub fn resolve_audit(&self, ticket: AuditTicket, correct: bool) -> bool {
        let Some(b) = &self.budget else { return false };
        let issued = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let found = p.issued.remove(&ticket.id);
            if found.is_some() {
                p.order.retain(|id| *id != ticket.id);
            }
            found
        };
        let Some((scope, similarity, at)) = issued else {
            return false;
        };
        if at.elapsed() > b.ticket_ttl {
            return false;
        }
        let mut ev = self.evidence.lock().unwrap_or_else(|e| e.into_inner());
        Self::evidence_of(&mut ev, scope, b).record(similarity, !correct, b);
        true
    }

    /// The evidence of `scope`, made room for (the scope updated least recently is
    /// forgotten past [`ErrorBudget::max_scopes`]).
    fn evidence_of<'a>(
        ev: &'a mut HashMap<Scope, Evidence>,
        scope: Scope,
        b: &ErrorBudget,
    ) -> &'a mut Evidence {
        if !ev.contains_key(&scope)
            && ev.len() >= b.max_scopes
            && let Some(old) = ev
                .iter()
                .min_by_key(|(_, e)| e.touched)
                .map(|(k, _)| k.clone())
        {
            ev.remove(&old);
        }
        ev.entry(scope).or_default()
    }

    /// Counts a would-be hit in `scope`'s traffic (what its level's audits weigh) and
    /// returns the scope's learned threshold and the audit share to draw with — one
    /// lock per would-be hit, none for a lookup without one.
    fn seen(&self, scope: &Scope, b: &ErrorBudget, similarity: f32) -> (Option<f32>, f64) {
        let mut ev = self.evidence.lock().unwrap_or_else(|e| e.into_inner());
        let e = Self::evidence_of(&mut ev, scope.clone(), b);
        e.seen(similarity);
        (e.threshold(), e.audit_share(b))
    }

    /// Settles an audit from the backend's fresh answer to the audited question: the
    /// [audit comparer](SemanticCacheBuilder::audit_comparer) decides whether the
    /// stored answer would have done, and the outcome is reported with
    /// [`resolve_audit`](Self::resolve_audit). Returns whether it counted (a
    /// comparer that fails or an unknown ticket count nothing).
    pub async fn judge_audit(&self, ticket: AuditTicket, question: &str, fresh: &Value) -> bool {
        match self
            .comparer
            .same(question, &ticket.stored_answer, fresh)
            .await
        {
            Ok(same) => self.resolve_audit(ticket, same),
            Err(e) => {
                tracing::warn!(comparer = self.comparer.name(), error = %e, "semantic cache: an audit could not be judged");
                false
            }
        }
    }

    /// The estimated wrong-answer share of semantic hits in `scope` (see
    /// [`SemanticCache::scope_of`]); error-budget mode only, `None` otherwise.
    pub fn error_estimate(&self, scope: &Scope) -> Option<ErrorEstimate> {
        let b = self.budget.as_ref()?;
        let ev = self.evidence.lock().unwrap_or_else(|e| e.into_inner());
        Some(
            ev.get(scope)
                .map_or_else(|| Evidence::default().estimate(b), |e| e.estimate(b)),
        )
    }

    /// Drops the audit evidence and pending audits of `user`'s scopes.
    fn forget_evidence(&self, user: crate::domain::UserId) {
        self.evidence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| k.user != Some(user));
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.issued.retain(|_, (k, _, _)| k.user != Some(user));
        let Pending { issued, order } = &mut *p;
        order.retain(|id| issued.contains_key(id));
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

    /// Whether the cache, as configured, would answer `b` with the answer stored for
    /// `a` (same scope, the cache-wide threshold — not a per-agent one —, every
    /// verifier asked; error-budget thresholds are not used here).
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
            self.refusal(
                &Candidate {
                    question: b,
                    stored_question: a,
                    stored_answer: &answer,
                    similarity,
                },
                true,
                &AtomicU64::new(0),
            )
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
