//! Storing answers, and dropping them: on expiry, for capacity (oldest first), and
//! when a user is forgotten.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;

use super::SemanticCache;
use super::index::{Entry, State, normalise_text};
use super::types::CachedAnswer;
use crate::agent::{AiRequest, AiResponse, Scope};
use crate::domain::UserId;
use crate::error::Result;
use crate::semantic::normalise;

impl SemanticCache {
    /// Stores `resp` as the answer to `req`, reusing `embedding` from a miss when given.
    ///
    /// With a shared store ([`SemanticCacheBuilder::build_shared`]) the answer is
    /// then persisted there too, which tells the other instances; it is held in this
    /// instance's memory either way.
    ///
    /// # Errors
    /// `InvalidInput` for an invalid request or embedding; the error of
    /// [`check_answer`](crate::agent::structured::check_answer) for an answer not of the
    /// shape its request asks for (an assessment analysis), which is never stored;
    /// the embedder's errors; the shared store's errors (the answer is kept in memory
    /// all the same).
    ///
    /// [`SemanticCacheBuilder::build_shared`]: super::SemanticCacheBuilder::build_shared
    pub async fn store(
        &self,
        req: &AiRequest,
        resp: &AiResponse,
        embedding: Option<Vec<f32>>,
    ) -> Result<()> {
        req.validate()?;
        // Only answers of the right shape are ever served from the cache.
        crate::agent::structured::check_answer(req, &resp.output)?;
        let question = req.question();
        let embedding = match embedding {
            Some(v) => normalise(v, self.dim)?,
            None => self.embed_one(&question).await?,
        };
        let scope = self.scope_of(req);
        let answer = CachedAnswer {
            output: resp.output.clone(),
            model: resp.model.clone(),
            usage: resp.usage,
            question: question.clone(),
            backend: Some(resp.backend.clone()),
            origin: scope.user.is_none().then_some(req.user_id),
        };
        match &self.sharing {
            None => {
                self.insert(scope, question, embedding, answer, self.ttl, None);
                Ok(())
            }
            Some(shared) => {
                let entry = self.shared_entry(scope, question, embedding, answer);
                self.insert(
                    entry.scope.clone(),
                    entry.question.clone(),
                    entry.embedding.clone(),
                    entry.answer.clone(),
                    self.ttl,
                    Some(entry.id),
                );
                shared.store.persist(&entry).await
            }
        }
    }

    /// Puts one entry in `scope`, replacing the entry of the same (normalised)
    /// question, then drops expired entries at the front of the queue and the oldest
    /// past the capacity. `ttl` is at most the cache's.
    pub(super) fn insert(
        &self,
        scope: Scope,
        question: String,
        embedding: Vec<f32>,
        answer: CachedAnswer,
        ttl: Duration,
        shared_id: Option<uuid::Uuid>,
    ) {
        let now = Instant::now();
        let expires = now + ttl.min(self.ttl);
        let mut s = self.write();
        let seq = s.next_seq;
        s.next_seq += 1;
        let entry = Entry {
            seq,
            norm: normalise_text(&question),
            embedding,
            answer,
            question,
            expires,
            shared_id,
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
        s.order.push_back((scope, seq, expires));
        while s.entries > self.capacity {
            let Some((sc, seq, _)) = s.order.pop_front() else {
                break;
            };
            if Self::drop_entry(&mut s, &sc, seq) {
                self.counters.evictions.fetch_add(1, Relaxed);
            }
        }
        Self::tidy_order(&mut s);
    }

    /// Drops queue items of entries that are gone once they outnumber the live ones,
    /// so the queue stays as small as the cache.
    fn tidy_order(s: &mut State) {
        if s.order.len() > 2 * s.entries + 64 {
            let State { scopes, order, .. } = s;
            order.retain(|(sc, seq, _)| scopes.get(sc).is_some_and(|i| i.slots.contains_key(seq)));
        }
    }

    pub(super) fn drop_entry(s: &mut State, scope: &Scope, seq: u64) -> bool {
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

    /// Removes every entry of `user` (e.g. when they delete their account): their
    /// personal entries, and the shared entries their requests stored (whose prompts
    /// carried their data).
    ///
    /// With a shared store, the user's rows are deleted there too, which tells the
    /// other instances — in the background, as this call does not wait: await
    /// [`forget_user_everywhere`](Self::forget_user_everywhere) to know it is done.
    pub fn forget_user(&self, user: UserId) -> usize {
        let n = self.forget_locally(user);
        if let Some(shared) = &self.sharing {
            shared.forget_in_background(user);
        }
        n
    }

    /// Removes `user`'s entries from this instance's memory only.
    pub(super) fn forget_locally(&self, user: UserId) -> usize {
        self.forget_evidence(user);
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
        // Shared entries stored by the user's requests, over their data.
        let theirs: Vec<(Scope, u64)> = s
            .scopes
            .iter()
            .filter(|(k, _)| k.user.is_none())
            .flat_map(|(k, idx)| {
                idx.entries
                    .iter()
                    .flatten()
                    .filter(|e| e.answer.origin == Some(user))
                    .map(|e| (k.clone(), e.seq))
            })
            .collect();
        for (k, seq) in theirs {
            if Self::drop_entry(&mut s, &k, seq) {
                n += 1;
            }
        }
        n
    }
}
