//! [`ContextProvider`]: the user's own data for an agent's prompt, read **as the user**
//! through the [`Repository`] (so row-level security and the repository's isolation
//! checks apply), bounded by a token budget.
//!
//! What each agent kind gets (a JSON object; lists newest first):
//!
//! | agent | keys |
//! |---|---|
//! | `assessment_analyst` | `assessment`: the one named by the input's `assessment_id`, else the user's latest (or `null`), with its `answers` by question id |
//! | `progress_tracker` | `statistics` (the last [`STATS_DAYS`] whole UTC days), `active_goals` |
//! | `learning_coach` | `learning_path`: the most recently created one not completed (or `null`), with its `next_practices`; `recent_progress` |
//! | `insight_generator` | `statistics`, `recent_progress` |
//! | `communication_advisor` | `profile`: the display name and the [`PROFILE_PREFERENCE_KEYS`] of the preferences (never the email), or `null` for a user without a profile; `active_goals` |
//!
//! Only values that change the answer are included: no ids, no "now"-dependent values
//! (the statistics' range is left out; its window moves once a day), so the same data
//! gives the same context — and the same [`AiRequest::fingerprint`](crate::AiRequest::fingerprint),
//! which is what lets the semantic cache answer it — and changed data gives another.
//! A context over the budget is cut deterministically; see [`truncate`].

pub mod truncate;

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::{Map, Value, json};

use crate::agent::{ChatMessage, Role, estimate_tokens};
use crate::domain::*;
use crate::error::{Error, Result};
use crate::repository::{MAX_CONVERSATION_READ, Repository};

/// The statistics' window: the last 30 whole UTC days, today included.
pub const STATS_DAYS: i64 = 30;
/// Most progress entries in `recent_progress`.
pub const RECENT_PROGRESS: u32 = 10;
/// Most goals in `active_goals`.
pub const ACTIVE_GOALS: usize = 20;
/// Most goals or learning paths a context reads looking for the active ones (20
/// pages of [`Page::MAX_LIMIT`]).
pub const MAX_SCANNED: u32 = 10_000;
/// Most practices in a learning path's `next_practices`.
pub const NEXT_PRACTICES: usize = 5;
/// The profile preferences a `communication_advisor` context carries, when present.
pub const PROFILE_PREFERENCE_KEYS: [&str; 6] = [
    "relationship_status",
    "relationship_goals",
    "relationship_length",
    "partner_name",
    "communication_style",
    "love_language",
];
/// What one history message costs besides its content's tokens (role and framing).
pub const MESSAGE_OVERHEAD_TOKENS: u32 = 4;

/// Builds the user-data context of an agent request and the conversation history
/// that goes with it, reading as the user. Cheap to clone (it holds an `Arc`); one
/// per app is enough.
///
/// ```
/// # async fn demo(repo: std::sync::Arc<dyn kasama::Repository>, user: kasama::domain::UserId) -> kasama::Result<()> {
/// use kasama::{AiRequest, ContextProvider};
/// use kasama::domain::AgentType;
/// use serde_json::json;
///
/// let contexts = ContextProvider::new(repo).token_budget(1_000);
/// let input = json!({"question": "How am I doing?"});
/// let ctx = contexts.context_for(user, AgentType::ProgressTracker, &input).await?;
/// let req = AiRequest::new(user, AgentType::ProgressTracker, input).with_context(ctx);
/// # drop(req); Ok(()) }
/// ```
#[derive(Clone)]
pub struct ContextProvider {
    repo: Arc<dyn Repository>,
    budget: u32,
}

impl std::fmt::Debug for ContextProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextProvider")
            .field("token_budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl ContextProvider {
    /// The default token budget of a context: 1,500 tokens (about 6,000 characters of
    /// canonical JSON, as [`estimate_tokens`] counts).
    pub const DEFAULT_TOKEN_BUDGET: u32 = 1_500;
    /// The smallest budget accepted; a smaller one is raised to it.
    pub const MIN_TOKEN_BUDGET: u32 = 16;

    /// Reads through `repo`, with the default budget.
    pub fn new(repo: Arc<dyn Repository>) -> Self {
        Self {
            repo,
            budget: Self::DEFAULT_TOKEN_BUDGET,
        }
    }

    /// Sets the token budget of a context. Default: 1,500; at least
    /// [`MIN_TOKEN_BUDGET`](Self::MIN_TOKEN_BUDGET).
    #[must_use]
    pub fn token_budget(mut self, tokens: u32) -> Self {
        self.budget = tokens.max(Self::MIN_TOKEN_BUDGET);
        self
    }

    /// The token budget of a context.
    pub fn budget(&self) -> u32 {
        self.budget
    }

    /// The context of a request of `user` to `agent` with `input` (see the module
    /// docs for what each kind gets), within the token budget. Every read is made as
    /// `Actor::User(user)`: pass the authenticated user, never an id from the request
    /// body.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `assessment_id` when the input's is not a UUID
    /// string; [`Error::NotFound`] when the assessment named is not the user's (or does
    /// not exist); whatever the repository returns otherwise.
    pub async fn context_for(
        &self,
        user: UserId,
        agent: AgentType,
        input: &Value,
    ) -> Result<Value> {
        let reader = Reader {
            repo: self.repo.as_ref(),
            user,
            actor: Actor::User(user),
        };
        let mut ctx = Map::new();
        match agent {
            AgentType::AssessmentAnalyst => {
                ctx.insert("assessment".into(), reader.assessment(input).await?);
            }
            AgentType::ProgressTracker => {
                ctx.insert("statistics".into(), reader.statistics().await?);
                ctx.insert("active_goals".into(), reader.active_goals().await?);
            }
            AgentType::LearningCoach => {
                ctx.insert("learning_path".into(), reader.learning_path().await?);
                ctx.insert("recent_progress".into(), reader.recent_progress().await?);
            }
            AgentType::InsightGenerator => {
                ctx.insert("statistics".into(), reader.statistics().await?);
                ctx.insert("recent_progress".into(), reader.recent_progress().await?);
            }
            AgentType::CommunicationAdvisor => {
                ctx.insert("profile".into(), reader.profile().await?);
                ctx.insert("active_goals".into(), reader.active_goals().await?);
            }
        }
        Ok(truncate::fit(Value::Object(ctx), self.budget))
    }

    /// The last turns of `user`'s conversation that fit `token_budget`, oldest first:
    /// the newest message is taken first, then older ones while the sum of
    /// `estimate_tokens(content) +` [`MESSAGE_OVERHEAD_TOKENS`] stays within the
    /// budget; the first that does not fit ends the history (the oldest are dropped,
    /// never a turn in the middle). At most [`MAX_HISTORY`](crate::agent::MAX_HISTORY)
    /// are kept, of at most [`MAX_HISTORY_BYTES`](crate::agent::MAX_HISTORY_BYTES)
    /// of text together (the most a request may carry), so a long conversation stays
    /// answerable. Only the newest messages that could fit are read: at most
    /// `token_budget / (1 +` [`MESSAGE_OVERHEAD_TOKENS`]`)` of them (at least one).
    ///
    /// Call it before storing the user's new question, which the request carries as
    /// its question.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the conversation is not the user's (or does not exist).
    pub async fn history_for(
        &self,
        user: UserId,
        conversation: ConversationId,
        token_budget: u32,
    ) -> Result<Vec<ChatMessage>> {
        // No more than could be kept: every message costs at least one token plus
        // the overhead, and a request carries at most `MAX_HISTORY`. At least one is
        // read, so another user's conversation is `NotFound` whatever the budget.
        let most = (token_budget / (1 + MESSAGE_OVERHEAD_TOKENS))
            .min(MAX_CONVERSATION_READ)
            .min(u32::try_from(crate::agent::MAX_HISTORY).unwrap_or(u32::MAX))
            .max(1);
        let msgs = self
            .repo
            .recent_messages(Actor::User(user), conversation, most)
            .await?;
        let (mut used, mut bytes) = (0u64, 0usize);
        let mut kept = Vec::new();
        for m in msgs.iter().rev().take(crate::agent::MAX_HISTORY) {
            let cost = u64::from(estimate_tokens(&m.content)) + u64::from(MESSAGE_OVERHEAD_TOKENS);
            if used + cost > u64::from(token_budget)
                || bytes + m.content.len() > crate::agent::MAX_HISTORY_BYTES
            {
                break;
            }
            used += cost;
            bytes += m.content.len();
            kept.push(ChatMessage::new(m.role.into(), m.content.clone()));
        }
        kept.reverse();
        Ok(kept)
    }
}

impl From<MessageRole> for Role {
    fn from(r: MessageRole) -> Self {
        match r {
            MessageRole::User => Role::User,
            MessageRole::Assistant => Role::Assistant,
        }
    }
}

impl TryFrom<Role> for MessageRole {
    type Error = Error;

    /// The stored role of a chat role.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `role` for [`Role::System`]: system messages are
    /// never stored.
    fn try_from(r: Role) -> Result<Self> {
        match r {
            Role::User => Ok(MessageRole::User),
            Role::Assistant => Ok(MessageRole::Assistant),
            Role::System => Err(Error::invalid(
                "role",
                "system messages are not stored; only user and assistant turns are",
            )),
        }
    }
}

/// One context's reads, as the user.
struct Reader<'a> {
    repo: &'a dyn Repository,
    user: UserId,
    actor: Actor,
}

/// Reads pages of [`Page::MAX_LIMIT`] from `page_at`, newest first, handing each to
/// `take` until it says it has enough, a page comes back short, or [`MAX_SCANNED`]
/// items were read.
async fn scan<T, F>(
    mut page_at: impl FnMut(Page) -> F,
    mut take: impl FnMut(Vec<T>) -> bool,
) -> Result<()>
where
    F: std::future::Future<Output = Result<Vec<T>>>,
{
    let mut offset = 0;
    while offset < MAX_SCANNED {
        let got = page_at(Page {
            limit: Page::MAX_LIMIT,
            offset,
        })
        .await?;
        let full = got.len() == Page::MAX_LIMIT as usize;
        if take(got) || !full {
            break;
        }
        offset += Page::MAX_LIMIT;
    }
    Ok(())
}

impl Reader<'_> {
    async fn assessment(&self, input: &Value) -> Result<Value> {
        let a = match input.get("assessment_id") {
            None | Some(Value::Null) => {
                let latest = self
                    .repo
                    .list_assessments(
                        self.actor,
                        self.user,
                        &AssessmentFilter::default(),
                        Page::first(1),
                    )
                    .await?;
                match latest.into_iter().next() {
                    Some(a) => a,
                    None => return Ok(Value::Null),
                }
            }
            Some(v) => {
                let id: AssessmentId = v
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| Error::invalid("assessment_id", "must be a UUID string"))?;
                self.repo.get_assessment(self.actor, id).await?
            }
        };
        let answers = self.repo.list_answers(self.actor, a.id).await?;
        Ok(json!({
            "assessment_type": a.assessment_type,
            "title": a.title,
            "completed": a.completed,
            "score": a.score,
            "insights": a.insights,
            "answers": answers.iter().map(|x| json!({
                "question_id": x.question_id,
                "answer": x.answer,
                "score": x.score,
            })).collect::<Vec<_>>(),
        }))
    }

    async fn statistics(&self) -> Result<Value> {
        // Whole UTC days, so the range (and the cached value) is the same all day.
        let today = Utc::now()
            .date_naive()
            .and_time(chrono::NaiveTime::MIN)
            .and_utc();
        let range = DateRange {
            from: today - Duration::days(STATS_DAYS - 1),
            to: today + Duration::days(1),
        };
        let s = self
            .repo
            .user_statistics(self.actor, self.user, Some(range))
            .await?;
        let mut weeks = s.weekly_trend;
        weeks.reverse();
        Ok(json!({
            "days": STATS_DAYS,
            "total_sessions": s.total_sessions,
            "total_practices": s.total_practices,
            "completion_rate": round3(s.completion_rate),
            "average_rating": s.average_rating.map(round3),
            "session_minutes": s.session_minutes,
            "current_streak_days": s.current_streak_days,
            "longest_streak_days": s.longest_streak_days,
            "top_categories": s.top_categories,
            "weekly_trend": weeks,
            "mood_improvement": s.mood_improvement.map(round3),
            "learning_velocity": round3(s.learning_velocity),
        }))
    }

    async fn active_goals(&self) -> Result<Value> {
        // Page by page until enough active goals are found: active ones may be older
        // than a page of completed ones.
        let mut goals = Vec::new();
        scan(
            |page| self.repo.list_goals(self.actor, self.user, page),
            |got| {
                goals.extend(got.into_iter().filter(|g| !g.completed));
                goals.len() >= ACTIVE_GOALS
            },
        )
        .await?;
        Ok(Value::Array(
            goals
                .iter()
                .take(ACTIVE_GOALS)
                .map(|g| {
                    json!({
                        "title": g.title,
                        "description": g.description,
                        "category": g.category,
                        "target_date": g.target_date,
                        "progress": g.progress,
                        "milestones": g.milestones.iter().map(|m| json!({
                            "title": m.title,
                            "completed": m.completed,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        ))
    }

    async fn learning_path(&self) -> Result<Value> {
        // The newest path not completed, however many completed ones are newer.
        let mut found = None;
        scan(
            |page| self.repo.list_learning_paths(self.actor, self.user, page),
            |got| {
                found = got.into_iter().find(|p| !p.completed);
                found.is_some()
            },
        )
        .await?;
        let Some(p) = found else {
            return Ok(Value::Null);
        };
        let step = usize::try_from(p.current_step).unwrap_or(0);
        let mut next = Vec::new();
        for id in p.practice_ids.iter().skip(step).take(NEXT_PRACTICES) {
            match self.repo.get_practice(self.actor, *id).await {
                Ok(x) => next.push(json!({
                    "title": x.title,
                    "category": x.category,
                    "difficulty": x.difficulty,
                    "duration_minutes": x.duration_minutes,
                })),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(json!({
            "title": p.title,
            "description": p.description,
            "steps": p.practice_ids.len(),
            "current_step": p.current_step,
            "progress": p.progress,
            "next_practices": next,
        }))
    }

    async fn recent_progress(&self) -> Result<Value> {
        let entries = self
            .repo
            .list_progress(self.actor, self.user, None, Page::first(RECENT_PROGRESS))
            .await?;
        let mut titles: BTreeMap<PracticeId, Option<String>> = BTreeMap::new();
        let mut out = Vec::with_capacity(entries.len());
        for e in &entries {
            let mut o = Map::new();
            o.insert("date".into(), json!(e.created_at.date_naive()));
            if let Some(pid) = e.practice_id {
                if let Entry::Vacant(slot) = titles.entry(pid) {
                    slot.insert(match self.repo.get_practice(self.actor, pid).await {
                        Ok(p) => Some(p.title),
                        Err(e) if e.is_not_found() => None,
                        Err(e) => return Err(e),
                    });
                }
                if let Some(Some(t)) = titles.get(&pid) {
                    o.insert("practice".into(), json!(t));
                }
            }
            o.insert("duration_minutes".into(), json!(e.duration_minutes));
            o.insert("completed".into(), json!(e.completed));
            for (k, v) in [
                ("rating", e.rating),
                ("mood_before", e.mood_before),
                ("mood_after", e.mood_after),
            ] {
                if let Some(v) = v {
                    o.insert(k.into(), json!(v));
                }
            }
            if let Some(n) = &e.notes {
                o.insert("notes".into(), json!(n));
            }
            out.push(Value::Object(o));
        }
        Ok(Value::Array(out))
    }

    async fn profile(&self) -> Result<Value> {
        // A signed-in user need not have a profile (the server serves them on the
        // free plan): no profile is no data, as for the other kinds, not an error.
        let p = match self.repo.get_profile(self.actor, self.user).await {
            Ok(p) => p,
            Err(e) if e.is_not_found() => return Ok(Value::Null),
            Err(e) => return Err(e),
        };
        let mut prefs = Map::new();
        for k in PROFILE_PREFERENCE_KEYS {
            if let Some(v) = p.preferences.get(k).filter(|v| !v.is_null()) {
                prefs.insert(k.into(), v.clone());
            }
        }
        Ok(json!({
            "display_name": p.display_name,
            "preferences": prefs,
        }))
    }
}

/// `x` to three decimals, so float noise never changes a fingerprint.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
