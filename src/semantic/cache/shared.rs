//! Sharing a [`SemanticCache`] between app instances: the [`SemanticStore`] trait (a
//! durable home for entries that tells every instance what changed) and how a cache
//! follows it — warm start, remote entries into the local index, forgotten users,
//! catch-up after a gap.
//!
//! Each instance keeps its own bounded index (its capacity and TTL apply to remote
//! entries as to its own); the store is the truth between them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use uuid::Uuid;

use super::index::normalise_text;
use super::types::CachedAnswer;
use super::{SemanticCache, SemanticCacheBuilder};
use crate::agent::Scope;
use crate::domain::UserId;
use crate::error::Result;
use crate::semantic::normalise;

/// How far back a catch-up reads before the newest entry already seen, for rows
/// committed late (their `created_at` is their transaction's start).
const CATCH_UP_MARGIN: chrono::Duration = chrono::Duration::seconds(30);

/// One semantic-cache entry as a [`SemanticStore`] keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedEntry {
    /// Its id (a new one each time a question is stored again in its scope).
    pub id: Uuid,
    /// Where it may be served: only lookups in this scope see it.
    pub scope: Scope,
    /// The question as asked.
    pub question: String,
    /// The question, normalised for exact matching (case, spaces, trailing
    /// punctuation): the store keeps one entry per scope, embedder and this text.
    pub normalised: String,
    /// The question's unit vector.
    pub embedding: Vec<f32>,
    /// The answer.
    pub answer: CachedAnswer,
    /// The [`Embedder::name`](crate::semantic::Embedder::name) that made `embedding`:
    /// a cache ignores entries of another embedder.
    pub embedder: String,
    /// When it was stored (the store's clock).
    pub created_at: DateTime<Utc>,
    /// When it expires (the store's clock).
    pub expires_at: DateTime<Utc>,
}

/// What changed in a [`SemanticStore`], as its subscribers hear it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum SharedChange {
    /// An entry was stored (by any instance, this one included).
    Stored(Box<SharedEntry>),
    /// Every entry of this user was deleted.
    Forgot(UserId),
    /// Changes may have been missed (the store's listener (re)connected, or a
    /// subscriber fell behind): catch up with [`SemanticStore::load`] and
    /// [`SemanticStore::live`].
    Resync,
}

/// Which entries [`SemanticStore::load`] returns: live (unexpired) ones of one
/// embedder and dimension, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadQuery {
    /// The embedder's name.
    pub embedder: String,
    /// The embedding dimension.
    pub dimension: usize,
    /// At most this many.
    pub limit: usize,
    /// Only entries stored at or after this instant, when given.
    pub since: Option<DateTime<Utc>>,
}

/// A durable home for semantic-cache entries that several app instances share, and
/// that tells each of them what the others changed. Object safe; `PgSemanticStore`
/// (PostgreSQL, LISTEN/NOTIFY) is the crate's implementation.
#[async_trait]
pub trait SemanticStore: Send + Sync + 'static {
    /// Persists `entry`, replacing the entry of the same normalised question in the
    /// same scope and embedder, and tells the subscribers.
    ///
    /// # Errors
    /// The backend's errors.
    async fn persist(&self, entry: &SharedEntry) -> Result<()>;

    /// Deletes every entry of `user` and tells the subscribers; returns how many
    /// entries were deleted.
    ///
    /// # Errors
    /// The backend's errors.
    async fn forget_user(&self, user: UserId) -> Result<u64>;

    /// Live entries as `query` says, newest first. Rows that cannot be read (a
    /// corrupt embedding, an unknown agent) are left out.
    ///
    /// # Errors
    /// The backend's errors.
    async fn load(&self, query: &LoadQuery) -> Result<Vec<SharedEntry>>;

    /// Which of `ids` are still stored and unexpired.
    ///
    /// # Errors
    /// The backend's errors.
    async fn live(&self, ids: &[Uuid]) -> Result<Vec<Uuid>>;

    /// A receiver of the changes made from now on, by any instance.
    fn subscribe(&self) -> broadcast::Receiver<SharedChange>;
}

fn _object_safe(_: &dyn SemanticStore) {}

#[async_trait]
impl<S: SemanticStore + ?Sized> SemanticStore for Arc<S> {
    async fn persist(&self, entry: &SharedEntry) -> Result<()> {
        (**self).persist(entry).await
    }
    async fn forget_user(&self, user: UserId) -> Result<u64> {
        (**self).forget_user(user).await
    }
    async fn load(&self, query: &LoadQuery) -> Result<Vec<SharedEntry>> {
        (**self).load(query).await
    }
    async fn live(&self, ids: &[Uuid]) -> Result<Vec<Uuid>> {
        (**self).live(ids).await
    }
    fn subscribe(&self) -> broadcast::Receiver<SharedChange> {
        (**self).subscribe()
    }
}

/// A cache's link to its shared store.
pub(super) struct Sharing {
    pub(super) store: Arc<dyn SemanticStore>,
    /// The newest `created_at` received from the store: catch-up reads from there.
    seen: Mutex<Option<DateTime<Utc>>>,
    follower: Mutex<Option<AbortHandle>>,
}

impl Drop for Sharing {
    fn drop(&mut self) {
        if let Some(h) = self
            .follower
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.abort();
        }
    }
}

impl Sharing {
    /// Deletes `user`'s rows without waiting (`forget_user` is synchronous).
    pub(super) fn forget_in_background(&self, user: UserId) {
        let store = self.store.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = store.forget_user(user).await {
                        tracing::error!(error = %e, "semantic cache: a forgotten user's shared entries could not be deleted");
                    }
                });
            }
            Err(_) => tracing::error!(
                "semantic cache: forget_user outside a tokio runtime; the shared entries stay (use forget_user_everywhere)"
            ),
        }
    }
}

impl SemanticCacheBuilder {
    /// The cache, sharing its entries with other instances through `store`: what it
    /// stores is persisted there and reaches the others; it loads the live entries of
    /// its embedder (newest first, up to its capacity) and then follows the store's
    /// changes in a background task (needs a tokio runtime; ends when the cache is
    /// dropped). Remote entries go to their own scope only, within this cache's
    /// capacity and TTL; entries of another embedder or dimension, and of a scope
    /// this cache would not build (an agent personal here but shared there, or the
    /// other way round), are ignored.
    ///
    /// A failed warm start is logged, not returned: the store announces a
    /// [`SharedChange::Resync`] once it can be read, and the cache catches up then.
    ///
    /// # Errors
    /// As [`build`](Self::build).
    pub async fn build_shared(self, store: Arc<dyn SemanticStore>) -> Result<Arc<SemanticCache>> {
        let mut cache = self.build()?;
        // Subscribed before loading, so nothing stored meanwhile is missed.
        let rx = store.subscribe();
        cache.sharing = Some(Sharing {
            store,
            seen: Mutex::new(None),
            follower: Mutex::new(None),
        });
        let cache = Arc::new(cache);
        if let Err(e) = cache.catch_up().await {
            tracing::warn!(error = %e, "semantic cache: warm start from the shared store failed; catching up later");
        }
        let task = tokio::spawn(follow(Arc::downgrade(&cache), rx));
        if let Some(s) = &cache.sharing {
            *s.follower.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
        }
        Ok(cache)
    }
}

/// Applies the store's changes to the cache until either is gone.
async fn follow(cache: Weak<SemanticCache>, mut rx: broadcast::Receiver<SharedChange>) {
    loop {
        let change = match rx.recv().await {
            Ok(c) => c,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "semantic cache: fell behind the shared store; catching up"
                );
                SharedChange::Resync
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(cache) = cache.upgrade() else { return };
        cache.apply(change).await;
    }
}

impl SemanticCache {
    /// As [`forget_user`](Self::forget_user), and waits until the shared store (if
    /// any) has deleted the user's rows and told the other instances.
    ///
    /// # Errors
    /// The shared store's errors (this instance has forgotten the user regardless).
    pub async fn forget_user_everywhere(&self, user: UserId) -> Result<usize> {
        let n = self.forget_locally(user);
        if let Some(s) = &self.sharing {
            s.store.forget_user(user).await?;
        }
        Ok(n)
    }

    /// Applies one change heard from the shared store.
    async fn apply(&self, change: SharedChange) {
        match change {
            SharedChange::Stored(e) => {
                self.accept(*e);
            }
            SharedChange::Forgot(user) => {
                self.forget_locally(user);
            }
            SharedChange::Resync => {
                if let Err(e) = self.catch_up().await {
                    tracing::warn!(error = %e, "semantic cache: catching up with the shared store failed");
                }
            }
        }
    }

    /// Drops the entries the store no longer has (forgotten, swept), then loads the
    /// ones stored since the newest seen (all live ones, up to the capacity, the first
    /// time).
    async fn catch_up(&self) -> Result<()> {
        let Some(shared) = &self.sharing else {
            return Ok(());
        };
        let held: Vec<Uuid> = {
            let s = self.read();
            s.scopes
                .values()
                .flat_map(|i| i.entries.iter().flatten().filter_map(|e| e.shared_id))
                .collect()
        };
        if !held.is_empty() {
            let live: HashSet<Uuid> = shared.store.live(&held).await?.into_iter().collect();
            let mut s = self.write();
            let gone: Vec<(Scope, u64)> = s
                .scopes
                .iter()
                .flat_map(|(k, i)| {
                    i.entries
                        .iter()
                        .flatten()
                        .filter(|e| e.shared_id.is_some_and(|id| !live.contains(&id)))
                        .map(|e| (k.clone(), e.seq))
                })
                .collect();
            for (scope, seq) in gone {
                Self::drop_entry(&mut s, &scope, seq);
            }
        }
        let since = shared
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t - CATCH_UP_MARGIN);
        let rows = shared
            .store
            .load(&LoadQuery {
                embedder: self.embedder.name().to_string(),
                dimension: self.dim,
                limit: self.capacity,
                since,
            })
            .await?;
        // Oldest first, so that capacity eviction drops the oldest.
        for e in rows.into_iter().rev() {
            self.accept(e);
        }
        Ok(())
    }

    /// Puts an entry from the shared store in this instance's index, without
    /// persisting it again. Returns whether it was taken: an entry of another embedder
    /// or dimension, with an answer of the wrong shape for its agent, with an unusable
    /// vector, of a scope this cache would not build,
    /// already expired (by its own expiry or this cache's TTL), or already held is not.
    fn accept(&self, e: SharedEntry) -> bool {
        if let Some(s) = &self.sharing {
            let mut seen = s.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.is_none_or(|t| e.created_at > t) {
                *seen = Some(e.created_at);
            }
        }
        if e.embedder != self.embedder.name()
            || e.scope.user.is_some() != self.is_personal(e.scope.agent)
        {
            return false;
        }
        // A row written by an older or foreign writer may hold an answer of the wrong
        // shape for its agent (an assessment analysis that is not one): never served.
        if let Err(why) = crate::agent::structured::check_output(e.scope.agent, &e.answer.output) {
            tracing::warn!(id = %e.id, error = %why, "semantic cache: a shared entry of the wrong shape was skipped");
            return false;
        }
        let Ok(embedding) = normalise(e.embedding, self.dim) else {
            tracing::warn!(id = %e.id, "semantic cache: a shared entry with an unusable embedding was skipped");
            return false;
        };
        let now = Utc::now();
        let ends = e.expires_at.min(
            e.created_at
                .checked_add_signed(
                    chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX),
                )
                .unwrap_or(e.expires_at),
        );
        let Ok(left) = (ends - now).to_std() else {
            return false;
        };
        if left.is_zero() {
            return false;
        }
        let norm = normalise_text(&e.question);
        {
            let s = self.read();
            if let Some(idx) = s.scopes.get(&e.scope)
                && let Some(&slot) = idx.exact.get(&norm)
                && idx.entries[slot as usize]
                    .as_ref()
                    .is_some_and(|x| x.shared_id == Some(e.id))
            {
                return false;
            }
        }
        self.insert(e.scope, e.question, embedding, e.answer, left, Some(e.id));
        true
    }

    /// The entry a store persists for an answer stored here.
    pub(super) fn shared_entry(
        &self,
        scope: Scope,
        question: String,
        embedding: Vec<f32>,
        answer: CachedAnswer,
    ) -> SharedEntry {
        let now = Utc::now();
        SharedEntry {
            id: Uuid::new_v4(),
            scope,
            normalised: normalise_text(&question),
            question,
            embedding,
            answer,
            embedder: self.embedder.name().to_string(),
            created_at: now,
            expires_at: now
                + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::days(366)),
        }
    }
}
