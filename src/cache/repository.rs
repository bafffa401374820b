//! [`CachedRepository`]: read-through caching of a [`Repository`] with per-user
//! generations, so a read after a write never returns the old value.
//!
//! Longer than 600 lines because the `Repository` impl must list every method in one block:
//! each is a few lines saying whether it is a cached read (and under which key) or a
//! write (and whose generation it replaces); the machinery above it is one piece.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Cache;
use crate::domain::*;
use crate::error::Result;
use crate::repository::Repository;

/// Wraps a [`Repository`] and caches its reads in a [`Cache`].
///
/// **What is cached**: reads made by a user ([`Actor::User`]) of their own data — single
/// records, lists, statistics and cost analyses over an explicit range — under keys
/// that carry the acting user, plus the practice catalogue (shared by everyone).
/// Service reads, recommendations, system health and the analytics over the default
/// (moving) range always go to the repository. Errors are never cached.
///
/// **Invalidation**: every key of a user carries that user's *generation*, a random
/// number stored in the cache itself. A write to a user's data — by that user or by
/// the service — replaces the generation once the write has returned, so every entry
/// cached before it becomes unreachable (and ages out). A read racing with the write
/// may store the old value, but under the old generation, where no later read looks.
/// A lost generation (evicted, expired) is replaced by a fresh random one, which again
/// only hides entries. With a cache shared by several app instances
/// (`RedisCache`, feature `redis`), this holds across instances: once a write has
/// returned on one instance, no instance serves what was cached before it. With one
/// [`MemoryCache`](super::MemoryCache) per instance, a write on one instance does not
/// invalidate another's copy before its TTL. The generation is replaced by a task of
/// its own, so a caller that goes away after its write committed still invalidates.
///
/// Known gaps (tests in `tests/review13b_*.rs`, ignored): a change-feed event goes
/// out at commit, one cache round trip before the writing instance replaces the
/// generation, so a read it prompts on another instance may still be served the old
/// value; erasing a user hides their cached values (a new generation) until their TTL
/// rather than deleting them from the cache.
///
/// **Failures**: a cache that fails is treated as a miss (reads) or skipped (stores);
/// the repository's answer always wins. A read whose generation could not be read or
/// stored is answered by the repository and not cached. The one thing a failing
/// cache can cost is freshness: if the cache cannot be reached to replace the
/// generation after a write (logged as an error), other instances may serve the old
/// value until its TTL.
#[derive(Debug)]
pub struct CachedRepository<R, C> {
    inner: R,
    cache: std::sync::Arc<C>,
    ttl: Duration,
    metrics: Option<std::sync::Arc<dyn crate::metrics::MetricsSink>>,
}

const CATALOGUE: &str = "kasama:gen:catalogue";

impl<R: Repository, C: Cache> CachedRepository<R, C> {
    /// Caches `inner`'s reads in `cache` for `ttl` each (default of the crate: 300 s).
    pub fn new(inner: R, cache: C, ttl: Duration) -> Self {
        Self {
            inner,
            cache: std::sync::Arc::new(cache),
            ttl,
            metrics: None,
        }
    }

    /// Records a [`MetricEvent::Cache`](crate::metrics::MetricEvent::Cache) (tier
    /// `"query"`) for every cached read's hit or miss.
    #[must_use]
    pub fn with_metrics(mut self, sink: std::sync::Arc<dyn crate::metrics::MetricsSink>) -> Self {
        self.metrics = Some(sink);
        self
    }

    fn count(&self, hit: bool) {
        if let Some(m) = &self.metrics {
            m.record(&crate::metrics::MetricEvent::Cache {
                tier: "query",
                outcome: if hit {
                    crate::metrics::CacheOutcome::Hit
                } else {
                    crate::metrics::CacheOutcome::Miss
                },
            });
        }
    }

    /// The wrapped repository.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// The cache.
    pub fn cache(&self) -> &C {
        &self.cache
    }

    // Why read-after-write holds with a cache shared by several instances (each step
    // below is one cache call, applied atomically by the cache, e.g. one Redis
    // command):
    //
    // 1. A generation value is random and never reused, so it becomes current at one
    //    moment: when the cache applies the SET that stores it.
    // 2. A value is stored under generation `g` only by a read that *saw* `g` current
    //    before it began loading: it got `g` from the cache, or its own SET of `g`
    //    was confirmed. So everything under `g` was loaded after `g` became current.
    // 3. A write replaces the generation after it has committed and before it
    //    returns. Any generation current after the write returned became current at
    //    or after that replacement, so after the commit; by (2) every value under it
    //    was loaded after the commit.
    //
    // (2) is why a read that could not confirm its generation stores nothing: a SET
    // the cache call gave up on (timeout) may still be applied later — after another
    // instance's write replaced the generation — and would make current again a
    // generation under which this read, loading before that write, stored the old
    // value. (3) fails only when the cache cannot be reached after a write; that is
    // logged and ages out with the TTL.

    /// The current generation under `gen_key`, creating one if there is none;
    /// `None` when the cache failed (then nothing may be stored, see above).
    async fn generation(&self, gen_key: &str) -> Option<u64> {
        match self.cache.get(gen_key).await {
            Ok(Some(b)) => {
                if let Ok(arr) = <[u8; 8]>::try_from(&b[..]) {
                    return Some(u64::from_le_bytes(arr));
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cache: generation lookup failed; reading through");
                return None;
            }
        }
        self.bump_key(gen_key).await
    }

    /// Stores a fresh generation under `gen_key`; `None` when the cache did not
    /// confirm it.
    async fn bump_key(&self, gen_key: &str) -> Option<u64> {
        let g = rand_u64();
        // Generations outlive the entries they guard, so losing one early is rare;
        // losing one is safe anyway (see the type's docs).
        match self
            .cache
            .set(
                gen_key,
                Bytes::copy_from_slice(&g.to_le_bytes()),
                Some(self.ttl.saturating_mul(4)),
            )
            .await
        {
            Ok(()) => Some(g),
            Err(e) => {
                tracing::warn!(error = %e, "cache: could not store a generation");
                None
            }
        }
    }

    /// Invalidates what is cached under `gen_key` after a write: a new generation,
    /// or, failing that, none (the next read makes a fresh one). Done by a task of its
    /// own, so a caller that goes away once its write has committed (a client that
    /// disconnects, a timeout) does not leave other instances serving the old value.
    async fn invalidate(&self, gen_key: &str) {
        let (cache, key, ttl) = (self.cache.clone(), gen_key.to_string(), self.ttl);
        let task = async move {
            let g = rand_u64();
            let set = cache
                .set(
                    &key,
                    Bytes::copy_from_slice(&g.to_le_bytes()),
                    Some(ttl.saturating_mul(4)),
                )
                .await;
            if let Err(e) = set {
                tracing::warn!(error = %e, "cache: could not store a generation");
                if let Err(e) = cache.remove(&key).await {
                    tracing::error!(
                        error = %e,
                        "cache: could not invalidate after a write; other instances may serve the old value until its TTL"
                    );
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let _ = rt.spawn(task).await;
            }
            Err(_) => task.await,
        }
    }

    async fn bump(&self, user: UserId) {
        self.invalidate(&user_gen(user)).await;
    }

    async fn through<T, F>(&self, gen_key: String, what: String, load: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: Future<Output = Result<T>>,
    {
        let Some(g) = self.generation(&gen_key).await else {
            self.count(false);
            return load.await;
        };
        let key = format!("{gen_key}:{g:016x}:{what}");
        match self.cache.get(&key).await {
            Ok(Some(b)) => {
                if let Ok(v) = serde_json::from_slice(&b) {
                    self.count(true);
                    return Ok(v);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cache: lookup failed; reading through"),
        }
        self.count(false);
        let v = load.await?;
        match serde_json::to_vec(&v) {
            Ok(bytes) => {
                if let Err(e) = self.cache.set(&key, bytes.into(), Some(self.ttl)).await {
                    tracing::debug!(error = %e, "cache: not stored");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cache: value does not serialise"),
        }
        Ok(v)
    }

    /// Caches a read when a user acts; passes it through for the service.
    async fn user_read<T, F>(&self, actor: Actor, what: String, load: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: Future<Output = Result<T>>,
    {
        match actor {
            Actor::User(u) => self.through(user_gen(u), what, load).await,
            Actor::Service => load.await,
        }
    }

    /// Runs a write, then invalidates the acting user and the owners it names.
    async fn write<T>(
        &self,
        actor: Actor,
        owners: impl IntoIterator<Item = UserId>,
        r: Result<T>,
        owner_of: impl Fn(&T) -> Option<UserId>,
    ) -> Result<T> {
        if let Actor::User(u) = actor {
            self.bump(u).await;
        }
        for o in owners {
            if Some(o) != actor.user_id() {
                self.bump(o).await;
            }
        }
        if let Ok(v) = &r
            && let Some(o) = owner_of(v)
            && Some(o) != actor.user_id()
        {
            self.bump(o).await;
        }
        r
    }
}

fn user_gen(u: UserId) -> String {
    format!("kasama:gen:u:{u}")
}

fn rand_u64() -> u64 {
    let u = uuid::Uuid::new_v4();
    let b = u.as_bytes();
    u64::from_le_bytes(b[..8].try_into().expect("16 bytes"))
        ^ u64::from_le_bytes(b[8..].try_into().expect("16 bytes"))
}

fn page(p: Page) -> String {
    format!("{}:{}", p.limit, p.offset)
}

#[async_trait]
impl<R: Repository, C: Cache> Repository for CachedRepository<R, C> {
    async fn create_profile(&self, a: Actor, n: NewProfile) -> Result<Profile> {
        let id = n.id;
        let r = self.inner.create_profile(a, n).await;
        self.write(a, [id], r, |_| None).await
    }
    async fn get_profile(&self, a: Actor, id: UserId) -> Result<Profile> {
        self.user_read(a, format!("profile:{id}"), self.inner.get_profile(a, id))
            .await
    }
    async fn update_profile(&self, a: Actor, id: UserId, u: ProfileUpdate) -> Result<Profile> {
        let r = self.inner.update_profile(a, id, u).await;
        self.write(a, [id], r, |_| None).await
    }
    async fn create_assessment(&self, a: Actor, n: NewAssessment) -> Result<Assessment> {
        let owner = n.user_id;
        let r = self.inner.create_assessment(a, n).await;
        self.write(a, [owner], r, |_| None).await
    }
    async fn get_assessment(&self, a: Actor, id: AssessmentId) -> Result<Assessment> {
        self.user_read(
            a,
            format!("assessment:{id}"),
            self.inner.get_assessment(a, id),
        )
        .await
    }
    async fn answer_assessment(
        &self,
        a: Actor,
        id: AssessmentId,
        n: Vec<NewAnswer>,
    ) -> Result<Vec<AssessmentAnswer>> {
        let r = self.inner.answer_assessment(a, id, n).await;
        self.write(a, [], r, |v| v.first().map(|x| x.user_id)).await
    }
    async fn list_answers(&self, a: Actor, id: AssessmentId) -> Result<Vec<AssessmentAnswer>> {
        self.user_read(a, format!("answers:{id}"), self.inner.list_answers(a, id))
            .await
    }
    async fn complete_assessment(
        &self,
        a: Actor,
        id: AssessmentId,
        score: i32,
        insights: Value,
    ) -> Result<Assessment> {
        let r = self.inner.complete_assessment(a, id, score, insights).await;
        self.write(a, [], r, |v| Some(v.user_id)).await
    }
    async fn list_assessments(
        &self,
        a: Actor,
        u: UserId,
        f: &AssessmentFilter,
        p: Page,
    ) -> Result<Vec<Assessment>> {
        let what = format!(
            "assessments:{u}:{}:{}",
            serde_json::to_string(f).unwrap_or_default(),
            page(p)
        );
        self.user_read(a, what, self.inner.list_assessments(a, u, f, p))
            .await
    }
    async fn create_practice(&self, a: Actor, n: NewPractice) -> Result<Practice> {
        let r = self.inner.create_practice(a, n).await;
        if r.is_ok() {
            self.invalidate(CATALOGUE).await;
        }
        r
    }
    async fn get_practice(&self, a: Actor, id: PracticeId) -> Result<Practice> {
        self.through(
            CATALOGUE.into(),
            format!("practice:{id}"),
            self.inner.get_practice(a, id),
        )
        .await
    }
    async fn search_practices(&self, a: Actor, q: &str, p: Page) -> Result<Vec<Practice>> {
        let what = format!(
            "search:{}:{}",
            page(p),
            serde_json::to_string(q).unwrap_or_default()
        );
        self.through(CATALOGUE.into(), what, self.inner.search_practices(a, q, p))
            .await
    }
    async fn list_practices(&self, a: Actor, f: &PracticeFilter, p: Page) -> Result<Vec<Practice>> {
        let what = format!(
            "practices:{}:{}",
            serde_json::to_string(f).unwrap_or_default(),
            page(p)
        );
        self.through(CATALOGUE.into(), what, self.inner.list_practices(a, f, p))
            .await
    }
    async fn create_goal(&self, a: Actor, n: NewGoal) -> Result<Goal> {
        let owner = n.user_id;
        let r = self.inner.create_goal(a, n).await;
        self.write(a, [owner], r, |_| None).await
    }
    async fn get_goal(&self, a: Actor, id: GoalId) -> Result<Goal> {
        self.user_read(a, format!("goal:{id}"), self.inner.get_goal(a, id))
            .await
    }
    async fn update_goal(&self, a: Actor, id: GoalId, u: GoalUpdate) -> Result<Goal> {
        let r = self.inner.update_goal(a, id, u).await;
        self.write(a, [], r, |g| Some(g.user_id)).await
    }
    async fn set_goal_progress(&self, a: Actor, id: GoalId, p: i32) -> Result<Goal> {
        let r = self.inner.set_goal_progress(a, id, p).await;
        self.write(a, [], r, |g| Some(g.user_id)).await
    }
    async fn complete_milestone(&self, a: Actor, id: GoalId, i: usize) -> Result<Goal> {
        let r = self.inner.complete_milestone(a, id, i).await;
        self.write(a, [], r, |g| Some(g.user_id)).await
    }
    async fn delete_goal(&self, a: Actor, id: GoalId) -> Result<()> {
        // The service may delete anyone's goal: learn the owner first.
        let owner = match a {
            Actor::Service => self.inner.get_goal(a, id).await.ok().map(|g| g.user_id),
            Actor::User(_) => None,
        };
        let r = self.inner.delete_goal(a, id).await;
        self.write(a, owner, r, |_| None).await
    }
    async fn list_goals(&self, a: Actor, u: UserId, p: Page) -> Result<Vec<Goal>> {
        self.user_read(
            a,
            format!("goals:{u}:{}", page(p)),
            self.inner.list_goals(a, u, p),
        )
        .await
    }
    async fn log_progress(&self, a: Actor, n: NewProgress) -> Result<ProgressEntry> {
        let owner = n.user_id;
        let r = self.inner.log_progress(a, n).await;
        self.write(a, [owner], r, |_| None).await
    }
    async fn list_progress(
        &self,
        a: Actor,
        u: UserId,
        range: Option<DateRange>,
        p: Page,
    ) -> Result<Vec<ProgressEntry>> {
        let what = format!(
            "progress:{u}:{}:{}",
            serde_json::to_string(&range).unwrap_or_default(),
            page(p)
        );
        self.user_read(a, what, self.inner.list_progress(a, u, range, p))
            .await
    }
    async fn get_progress_entry(&self, a: Actor, id: ProgressId) -> Result<ProgressEntry> {
        self.user_read(
            a,
            format!("progress_entry:{id}"),
            self.inner.get_progress_entry(a, id),
        )
        .await
    }
    async fn get_notification(&self, a: Actor, id: NotificationId) -> Result<Notification> {
        self.user_read(
            a,
            format!("notification:{id}"),
            self.inner.get_notification(a, id),
        )
        .await
    }
    async fn create_learning_path(&self, a: Actor, n: NewLearningPath) -> Result<LearningPath> {
        let owner = n.user_id;
        let r = self.inner.create_learning_path(a, n).await;
        self.write(a, [owner], r, |_| None).await
    }
    async fn get_learning_path(&self, a: Actor, id: LearningPathId) -> Result<LearningPath> {
        self.user_read(a, format!("path:{id}"), self.inner.get_learning_path(a, id))
            .await
    }
    async fn list_learning_paths(&self, a: Actor, u: UserId, p: Page) -> Result<Vec<LearningPath>> {
        self.user_read(
            a,
            format!("paths:{u}:{}", page(p)),
            self.inner.list_learning_paths(a, u, p),
        )
        .await
    }
    async fn advance_learning_path(
        &self,
        a: Actor,
        id: LearningPathId,
        s: i32,
    ) -> Result<LearningPath> {
        let r = self.inner.advance_learning_path(a, id, s).await;
        self.write(a, [], r, |l| Some(l.user_id)).await
    }
    async fn create_notification(&self, a: Actor, n: NewNotification) -> Result<Notification> {
        let owner = n.user_id;
        let r = self.inner.create_notification(a, n).await;
        self.write(a, [owner], r, |_| None).await
    }
    async fn list_unread_notifications(
        &self,
        a: Actor,
        u: UserId,
        p: Page,
    ) -> Result<Vec<Notification>> {
        let what = format!("unread:{u}:{}", page(p));
        self.user_read(a, what, self.inner.list_unread_notifications(a, u, p))
            .await
    }
    async fn mark_notifications_read(
        &self,
        a: Actor,
        u: UserId,
        ids: &[NotificationId],
    ) -> Result<u64> {
        let r = self.inner.mark_notifications_read(a, u, ids).await;
        self.write(a, [u], r, |_| None).await
    }
    async fn record_interaction(&self, a: Actor, n: NewAiInteraction) -> Result<AiInteraction> {
        let owner = n.user_id;
        let r = self.inner.record_interaction(a, n).await;
        self.write(a, [owner], r, |_| None).await
    }
    async fn record_interactions(&self, a: Actor, b: &[NewAiInteraction]) -> Result<u64> {
        let mut owners: Vec<UserId> = b.iter().map(|n| n.user_id).collect();
        owners.sort();
        owners.dedup();
        let r = self.inner.record_interactions(a, b).await;
        self.write(a, owners, r, |_| None).await
    }
    async fn list_interactions(&self, a: Actor, u: UserId, p: Page) -> Result<Vec<AiInteraction>> {
        let what = format!("interactions:{u}:{}", page(p));
        self.user_read(a, what, self.inner.list_interactions(a, u, p))
            .await
    }
    async fn create_conversation(&self, a: Actor, n: NewConversation) -> Result<Conversation> {
        let owner = n.user_id;
        let r = self.inner.create_conversation(a, n).await;
        self.write(a, [owner], r, |_| None).await
    }
    async fn get_conversation(&self, a: Actor, id: ConversationId) -> Result<Conversation> {
        let what = format!("conversation:{id}");
        self.user_read(a, what, self.inner.get_conversation(a, id))
            .await
    }
    async fn list_conversations(&self, a: Actor, u: UserId, l: u32) -> Result<Vec<Conversation>> {
        let what = format!("conversations:{u}:{l}");
        self.user_read(a, what, self.inner.list_conversations(a, u, l))
            .await
    }
    async fn add_message(
        &self,
        a: Actor,
        n: NewConversationMessage,
    ) -> Result<ConversationMessage> {
        let r = self.inner.add_message(a, n).await;
        self.write(a, [], r, |m| Some(m.user_id)).await
    }
    async fn recent_messages(
        &self,
        a: Actor,
        c: ConversationId,
        l: u32,
    ) -> Result<Vec<ConversationMessage>> {
        let what = format!("messages:{c}:{l}");
        self.user_read(a, what, self.inner.recent_messages(a, c, l))
            .await
    }
    async fn user_statistics(
        &self,
        a: Actor,
        u: UserId,
        range: Option<DateRange>,
    ) -> Result<UserStatistics> {
        match range {
            Some(r) => {
                let what = format!(
                    "stats:{u}:{}:{}",
                    r.from.timestamp_micros(),
                    r.to.timestamp_micros()
                );
                self.user_read(a, what, self.inner.user_statistics(a, u, range))
                    .await
            }
            None => self.inner.user_statistics(a, u, None).await,
        }
    }
    async fn learning_recommendations(
        &self,
        a: Actor,
        u: UserId,
        l: u32,
    ) -> Result<Vec<Recommendation>> {
        self.inner.learning_recommendations(a, u, l).await
    }
    async fn ai_cost_analysis(
        &self,
        a: Actor,
        u: Option<UserId>,
        range: Option<DateRange>,
    ) -> Result<CostAnalysis> {
        match (u, range) {
            (Some(user), Some(r)) => {
                let what = format!(
                    "cost:{user}:{}:{}",
                    r.from.timestamp_micros(),
                    r.to.timestamp_micros()
                );
                self.user_read(a, what, self.inner.ai_cost_analysis(a, u, range))
                    .await
            }
            _ => self.inner.ai_cost_analysis(a, u, range).await,
        }
    }
    async fn system_health(&self, a: Actor) -> Result<SystemHealth> {
        self.inner.system_health(a).await
    }
    async fn erase_user(&self, a: Actor, u: UserId) -> Result<ErasureReport> {
        let r = self.inner.erase_user(a, u).await;
        self.write(a, [u], r, |_| None).await
    }
}
