//! How entries are kept: per scope, a slot list with an exact-text map and, from
//! [`GRAPH_MIN`] entries, an HNSW graph; and across scopes, the insertion order that
//! expiry and capacity eviction follow.

use std::collections::{HashMap, VecDeque};

use tokio::time::Instant;

use super::types::CachedAnswer;
use crate::agent::Scope;
use crate::semantic::hnsw::{Hnsw, dot};

/// One stored question and its answer.
#[derive(Debug)]
pub(super) struct Entry {
    /// Its number for the eviction queue: unique for the cache's life, unlike its
    /// slot, which compaction renumbers.
    pub(super) seq: u64,
    pub(super) question: String,
    pub(super) norm: String,
    pub(super) embedding: Vec<f32>,
    pub(super) answer: CachedAnswer,
    pub(super) expires: Instant,
    /// Its row in a shared store, when the cache has one.
    pub(super) shared_id: Option<uuid::Uuid>,
}

/// Scopes below this size are scanned exactly; above it an HNSW graph is kept.
const GRAPH_MIN: usize = 512;

#[derive(Debug, Default)]
pub(super) struct ScopeIndex {
    pub(super) entries: Vec<Option<Entry>>,
    pub(super) exact: HashMap<String, u32>,
    /// Slot of each live entry, by its `seq`.
    pub(super) slots: HashMap<u64, u32>,
    graph: Option<Hnsw>,
    pub(super) live: usize,
}

impl ScopeIndex {
    pub(super) fn insert(&mut self, e: Entry, dim: usize) -> u32 {
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

    pub(super) fn remove(&mut self, id: u32) -> bool {
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
    pub(super) fn nearest(&self, q: &[f32], k: usize, ef: usize, now: Instant) -> Vec<(u32, f32)> {
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
pub(super) struct State {
    pub(super) scopes: HashMap<Scope, ScopeIndex>,
    /// Insertion order, for expiry and capacity eviction (oldest first), by entry
    /// `seq`; an item whose entry is gone (replaced, forgotten) is skipped.
    pub(super) order: VecDeque<(Scope, u64, Instant)>,
    pub(super) entries: usize,
    pub(super) next_seq: u64,
}

/// Lowercase, single spaces, no trailing punctuation.
pub(super) fn normalise_text(s: &str) -> String {
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
