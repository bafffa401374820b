//! [`InMemoryRepository`]: the whole data model in process memory.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::RwLock;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Duration, NaiveDate, SubsecRound, Utc};
use serde_json::Value;

use super::{Repository, checks, cost_recommendations};
use crate::domain::*;
use crate::error::{Error, Result};
use crate::realtime::{ChangeOp as Op, ChangeTable as T};
use crate::text::terms;

/// A complete, concurrent [`Repository`] in memory: the same validation, isolation and
/// analytics as [`PgRepository`](super::PgRepository), nothing to set up, nothing kept
/// after the process ends.
///
/// Readers share a lock; each write holds it briefly and never across an `.await`.
/// Full-text search approximates PostgreSQL's English stemming with a small suffix
/// stripper, so results agree on ordinary words but may differ on exotic ones.
#[derive(Debug, Default)]
pub struct InMemoryRepository {
    state: RwLock<State>,
    feed: Option<std::sync::Arc<crate::realtime::Hub>>,
    ai_feed: bool,
}

#[derive(Debug, Default)]
struct State {
    profiles: HashMap<UserId, Profile>,
    emails: HashMap<String, UserId>,
    assessments: HashMap<AssessmentId, Assessment>,
    answers: HashMap<AssessmentId, Vec<AssessmentAnswer>>,
    practices: HashMap<PracticeId, Practice>,
    goals: HashMap<GoalId, Goal>,
    progress: HashMap<UserId, Vec<ProgressEntry>>,
    paths: HashMap<LearningPathId, LearningPath>,
    notifications: HashMap<NotificationId, Notification>,
    interactions: HashMap<UserId, Vec<AiInteraction>>,
    interaction_keys: HashSet<(InteractionId, DateTime<Utc>)>,
}

/// Now, at the microsecond precision PostgreSQL stores.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

fn page<T: Clone>(items: impl Iterator<Item = T>, p: Page) -> Vec<T> {
    items
        .skip(p.offset as usize)
        .take(p.limit as usize)
        .collect()
}

fn newest_first<T>(v: &mut [T], key: impl Fn(&T) -> (DateTime<Utc>, uuid::Uuid)) {
    v.sort_by_key(|x| std::cmp::Reverse(key(x)));
}

fn not_found(entity: &'static str) -> Error {
    Error::NotFound { entity }
}

impl InMemoryRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes every committed change to `hub`, as PostgreSQL's triggers do (see
    /// [`MemoryRealtime`](crate::realtime::MemoryRealtime)). AI interactions are left
    /// out unless [`with_ai_interactions_feed`](Self::with_ai_interactions_feed).
    #[must_use]
    pub fn with_change_feed(mut self, hub: std::sync::Arc<crate::realtime::Hub>) -> Self {
        self.feed = Some(hub);
        self
    }

    /// Also publishes AI interactions (the hottest table; off by default, as in
    /// PostgreSQL, where `kasama_ai_interactions_feed(true)` switches it on).
    #[must_use]
    pub fn with_ai_interactions_feed(mut self, on: bool) -> Self {
        self.ai_feed = on;
        self
    }

    fn emit(
        &self,
        table: crate::realtime::ChangeTable,
        op: crate::realtime::ChangeOp,
        id: uuid::Uuid,
        user: UserId,
    ) {
        if let Some(hub) = &self.feed {
            if table == crate::realtime::ChangeTable::AiInteractions && !self.ai_feed {
                return;
            }
            hub.publish(&crate::realtime::ChangeEvent {
                table,
                op,
                id,
                user_id: user,
                seq: hub.next_seq(),
                at: now(),
            });
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-written record: every
        // write builds the new value first and inserts it last.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn require_profile(&self, user: UserId) -> Result<()> {
        if self.profiles.contains_key(&user) {
            Ok(())
        } else {
            Err(Error::invalid("user_id", "no profile for this user"))
        }
    }

    fn assessment_mut(&mut self, actor: Actor, id: AssessmentId) -> Result<&mut Assessment> {
        match self.assessments.get_mut(&id) {
            Some(a) if actor.may_access(a.user_id) => Ok(a),
            _ => Err(not_found("assessment")),
        }
    }

    fn goal_mut(&mut self, actor: Actor, id: GoalId) -> Result<&mut Goal> {
        match self.goals.get_mut(&id) {
            Some(g) if actor.may_access(g.user_id) => Ok(g),
            _ => Err(not_found("goal")),
        }
    }

    fn path_mut(&mut self, actor: Actor, id: LearningPathId) -> Result<&mut LearningPath> {
        match self.paths.get_mut(&id) {
            Some(p) if actor.may_access(p.user_id) => Ok(p),
            _ => Err(not_found("learning path")),
        }
    }

    fn completed_entries(&self, user: UserId) -> impl Iterator<Item = &ProgressEntry> {
        self.progress
            .get(&user)
            .into_iter()
            .flatten()
            .filter(|e| e.completed)
    }

    fn top_categories(&self, entries: impl Iterator<Item = ProgressEntry>) -> Vec<CategoryCount> {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for e in entries {
            if let Some(p) = e.practice_id.and_then(|p| self.practices.get(&p)) {
                *counts.entry(p.category.clone()).or_default() += 1;
            }
        }
        let mut v: Vec<CategoryCount> = counts
            .into_iter()
            .map(|(category, count)| CategoryCount { category, count })
            .collect();
        v.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.category.cmp(&b.category))
        });
        v.truncate(3);
        v
    }
}

// ---- text search: an approximation of PostgreSQL's english configuration ----

fn text_match(p: &Practice, q: &str) -> Option<bool> {
    let title_hit = p.title.to_lowercase().contains(&q.to_lowercase());
    let qt = terms(q);
    let doc: BTreeSet<String> = terms(&format!(
        "{} {} {}",
        p.title,
        p.description,
        p.tags.join(" ")
    ))
    .into_iter()
    .collect();
    let fts = !qt.is_empty() && qt.iter().all(|t| doc.contains(t));
    (title_hit || fts).then_some(title_hit)
}

// ---- analytics ----

fn streaks(days: &BTreeSet<NaiveDate>, last_day: NaiveDate) -> (i32, i32) {
    let mut longest = 0;
    let mut current = 0;
    let mut run = 0;
    let mut prev: Option<NaiveDate> = None;
    for d in days {
        run = match prev {
            Some(p) if *d == p + Duration::days(1) => run + 1,
            _ => 1,
        };
        longest = longest.max(run);
        if *d >= last_day - Duration::days(1) {
            current = run;
        }
        prev = Some(*d);
    }
    (current, longest)
}

fn week_start(d: NaiveDate) -> NaiveDate {
    d - Duration::days(i64::from(d.weekday().num_days_from_monday()))
}

fn mean(sum: i64, n: i64) -> Option<f64> {
    (n > 0).then(|| sum as f64 / n as f64)
}

fn range_weeks(r: &DateRange) -> f64 {
    (r.to - r.from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6 / 604_800.0
}

#[async_trait]
impl Repository for InMemoryRepository {
    async fn create_profile(&self, actor: Actor, new: NewProfile) -> Result<Profile> {
        new.validate()?;
        actor.check_write(new.id)?;
        if actor != Actor::Service && new.subscription_tier != SubscriptionTier::Free {
            return Err(Error::forbidden("only the service may set a paid tier"));
        }
        let mut s = self.write();
        if s.profiles.contains_key(&new.id) {
            return Err(Error::Conflict {
                what: "a profile with this id exists".into(),
            });
        }
        let key = new.email.to_lowercase();
        if s.emails.contains_key(&key) {
            return Err(Error::Conflict {
                what: "email already in use".into(),
            });
        }
        let t = now();
        let p = Profile {
            id: new.id,
            email: new.email,
            display_name: new.display_name,
            subscription_tier: new.subscription_tier,
            preferences: new.preferences,
            created_at: t,
            updated_at: t,
        };
        s.emails.insert(key, p.id);
        s.profiles.insert(p.id, p.clone());
        Ok(p)
    }

    async fn get_profile(&self, actor: Actor, id: UserId) -> Result<Profile> {
        let s = self.read();
        match s.profiles.get(&id) {
            Some(p) if actor.may_access(id) => Ok(p.clone()),
            _ => Err(not_found("profile")),
        }
    }

    async fn update_profile(&self, actor: Actor, id: UserId, u: ProfileUpdate) -> Result<Profile> {
        u.validate()?;
        if u.subscription_tier.is_some() {
            actor.require_service("only the service may change the subscription tier")?;
        }
        let mut s = self.write();
        let mut p = match s.profiles.get(&id) {
            Some(p) if actor.may_access(id) => p.clone(),
            _ => return Err(not_found("profile")),
        };
        if let Some(e) = u.email {
            let key = e.to_lowercase();
            if let Some(owner) = s.emails.get(&key)
                && *owner != id
            {
                return Err(Error::Conflict {
                    what: "email already in use".into(),
                });
            }
            s.emails.remove(&p.email.to_lowercase());
            s.emails.insert(key, id);
            p.email = e;
        }
        if let Some(n) = u.display_name {
            p.display_name = n;
        }
        if let Some(t) = u.subscription_tier {
            p.subscription_tier = t;
        }
        if let Some(pr) = u.preferences {
            p.preferences = pr;
        }
        p.updated_at = now();
        s.profiles.insert(id, p.clone());
        Ok(p)
    }

    async fn create_assessment(&self, actor: Actor, new: NewAssessment) -> Result<Assessment> {
        new.validate()?;
        actor.check_write(new.user_id)?;
        let mut s = self.write();
        s.require_profile(new.user_id)?;
        let t = now();
        let a = Assessment {
            id: AssessmentId::new(),
            user_id: new.user_id,
            assessment_type: new.assessment_type,
            title: new.title,
            completed: false,
            completed_at: None,
            score: None,
            insights: Value::Null,
            created_at: new.created_at.map_or(t, micros),
            updated_at: t,
        };
        s.assessments.insert(a.id, a.clone());
        self.emit(T::Assessments, Op::Insert, a.id.0, a.user_id);
        Ok(a)
    }

    async fn get_assessment(&self, actor: Actor, id: AssessmentId) -> Result<Assessment> {
        let s = self.read();
        match s.assessments.get(&id) {
            Some(a) if actor.may_access(a.user_id) => Ok(a.clone()),
            _ => Err(not_found("assessment")),
        }
    }

    async fn answer_assessment(
        &self,
        actor: Actor,
        id: AssessmentId,
        answers: Vec<NewAnswer>,
    ) -> Result<Vec<AssessmentAnswer>> {
        checks::answers(&answers)?;
        let mut s = self.write();
        let a = s.assessment_mut(actor, id)?;
        if a.completed {
            return Err(Error::invalid("assessment", "already completed"));
        }
        let user = a.user_id;
        let t = now();
        let stored = s.answers.entry(id).or_default();
        let mut out = Vec::with_capacity(answers.len());
        for n in answers {
            let row = AssessmentAnswer {
                id: AnswerId::new(),
                assessment_id: id,
                user_id: user,
                question_id: n.question_id,
                answer: n.answer,
                score: n.score,
                created_at: t,
            };
            match stored.iter_mut().find(|x| x.question_id == row.question_id) {
                Some(old) => {
                    old.answer = row.answer.clone();
                    old.score = row.score;
                    old.created_at = t;
                    out.push(old.clone());
                }
                None => {
                    stored.push(row.clone());
                    out.push(row);
                }
            }
        }
        Ok(out)
    }

    async fn list_answers(&self, actor: Actor, id: AssessmentId) -> Result<Vec<AssessmentAnswer>> {
        let s = self.read();
        match s.assessments.get(&id) {
            Some(a) if actor.may_access(a.user_id) => {}
            _ => return Err(not_found("assessment")),
        }
        let mut v = s.answers.get(&id).cloned().unwrap_or_default();
        v.sort_by(|a, b| a.question_id.cmp(&b.question_id));
        Ok(v)
    }

    async fn complete_assessment(
        &self,
        actor: Actor,
        id: AssessmentId,
        score: i32,
        insights: Value,
    ) -> Result<Assessment> {
        checks::complete_score(score, &insights)?;
        let mut s = self.write();
        let a = s.assessment_mut(actor, id)?;
        if a.completed {
            return Err(Error::invalid("assessment", "already completed"));
        }
        let t = now();
        a.completed = true;
        a.completed_at = Some(t);
        a.score = Some(score);
        a.insights = insights;
        a.updated_at = t;
        let a = a.clone();
        self.emit(T::Assessments, Op::Update, a.id.0, a.user_id);
        Ok(a)
    }

    async fn list_assessments(
        &self,
        actor: Actor,
        user: UserId,
        f: &AssessmentFilter,
        p: Page,
    ) -> Result<Vec<Assessment>> {
        p.validate()?;
        checks::list_owner(actor, user)?;
        if let Some(t) = &f.assessment_type {
            crate::domain::assessment_type(t)?;
        }
        let s = self.read();
        let mut v: Vec<Assessment> = s
            .assessments
            .values()
            .filter(|a| a.user_id == user)
            .filter(|a| {
                f.assessment_type
                    .as_ref()
                    .is_none_or(|t| *t == a.assessment_type)
            })
            .filter(|a| f.completed.is_none_or(|c| c == a.completed))
            .filter(|a| f.from.is_none_or(|t| a.created_at >= t))
            .filter(|a| f.to.is_none_or(|t| a.created_at < t))
            .cloned()
            .collect();
        newest_first(&mut v, |a| (a.created_at, a.id.0));
        Ok(page(v.into_iter(), p))
    }

    async fn create_practice(&self, actor: Actor, new: NewPractice) -> Result<Practice> {
        new.validate()?;
        actor.require_service("only the service may add practices")?;
        let t = now();
        let p = Practice {
            id: PracticeId::new(),
            title: new.title,
            description: new.description,
            category: new.category,
            difficulty: new.difficulty,
            tags: new.tags.iter().map(|t| t.to_lowercase()).collect(),
            duration_minutes: new.duration_minutes,
            created_at: t,
            updated_at: t,
        };
        self.write().practices.insert(p.id, p.clone());
        Ok(p)
    }

    async fn get_practice(&self, _actor: Actor, id: PracticeId) -> Result<Practice> {
        self.read()
            .practices
            .get(&id)
            .cloned()
            .ok_or_else(|| not_found("practice"))
    }

    async fn search_practices(&self, _actor: Actor, q: &str, p: Page) -> Result<Vec<Practice>> {
        p.validate()?;
        checks::search_query(q)?;
        let s = self.read();
        let mut hits: Vec<(bool, &Practice)> = s
            .practices
            .values()
            .filter_map(|pr| text_match(pr, q).map(|title| (title, pr)))
            .collect();
        hits.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| a.1.title.cmp(&b.1.title))
                .then_with(|| a.1.id.cmp(&b.1.id))
        });
        Ok(page(hits.into_iter().map(|(_, p)| p.clone()), p))
    }

    async fn list_practices(
        &self,
        _actor: Actor,
        f: &PracticeFilter,
        p: Page,
    ) -> Result<Vec<Practice>> {
        p.validate()?;
        let tag = f.tag.as_ref().map(|t| t.to_lowercase());
        let s = self.read();
        let mut v: Vec<Practice> = s
            .practices
            .values()
            .filter(|x| f.category.as_ref().is_none_or(|c| *c == x.category))
            .filter(|x| f.difficulty.is_none_or(|d| d == x.difficulty))
            .filter(|x| tag.as_ref().is_none_or(|t| x.tags.contains(t)))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.title.cmp(&b.title).then_with(|| a.id.cmp(&b.id)));
        Ok(page(v.into_iter(), p))
    }

    async fn create_goal(&self, actor: Actor, new: NewGoal) -> Result<Goal> {
        new.validate()?;
        actor.check_write(new.user_id)?;
        let mut s = self.write();
        s.require_profile(new.user_id)?;
        let t = now();
        let g = Goal {
            id: GoalId::new(),
            user_id: new.user_id,
            title: new.title,
            description: new.description,
            category: new.category,
            target_date: new.target_date,
            progress: 0,
            completed: false,
            completed_at: None,
            milestones: new
                .milestones
                .into_iter()
                .map(|title| Milestone {
                    title,
                    completed: false,
                    completed_at: None,
                })
                .collect(),
            created_at: t,
            updated_at: t,
        };
        s.goals.insert(g.id, g.clone());
        self.emit(T::Goals, Op::Insert, g.id.0, g.user_id);
        Ok(g)
    }

    async fn get_goal(&self, actor: Actor, id: GoalId) -> Result<Goal> {
        let s = self.read();
        match s.goals.get(&id) {
            Some(g) if actor.may_access(g.user_id) => Ok(g.clone()),
            _ => Err(not_found("goal")),
        }
    }

    async fn update_goal(&self, actor: Actor, id: GoalId, u: GoalUpdate) -> Result<Goal> {
        u.validate()?;
        let mut s = self.write();
        let g = s.goal_mut(actor, id)?;
        if let Some(t) = u.title {
            g.title = t;
        }
        if let Some(d) = u.description {
            g.description = d;
        }
        if let Some(c) = u.category {
            g.category = c;
        }
        if let Some(td) = u.target_date {
            g.target_date = td;
        }
        g.updated_at = now();
        let g = g.clone();
        self.emit(T::Goals, Op::Update, g.id.0, g.user_id);
        Ok(g)
    }

    async fn set_goal_progress(&self, actor: Actor, id: GoalId, progress: i32) -> Result<Goal> {
        validate::range("progress", progress.into(), 0, 100)?;
        let mut s = self.write();
        let g = s.goal_mut(actor, id)?;
        let t = now();
        g.progress = progress;
        g.completed = progress == 100;
        g.completed_at = if g.completed {
            g.completed_at.or(Some(t))
        } else {
            None
        };
        g.updated_at = t;
        let g = g.clone();
        self.emit(T::Goals, Op::Update, g.id.0, g.user_id);
        Ok(g)
    }

    async fn complete_milestone(&self, actor: Actor, id: GoalId, index: usize) -> Result<Goal> {
        let mut s = self.write();
        let g = s.goal_mut(actor, id)?;
        let t = now();
        let Some(m) = g.milestones.get_mut(index) else {
            return Err(Error::invalid(
                "milestone",
                format!("no milestone {index}; the goal has {}", g.milestones.len()),
            ));
        };
        let changed = !m.completed;
        if changed {
            m.completed = true;
            m.completed_at = Some(t);
            g.updated_at = t;
        }
        let g = g.clone();
        if changed {
            self.emit(T::Goals, Op::Update, g.id.0, g.user_id);
        }
        Ok(g)
    }

    async fn delete_goal(&self, actor: Actor, id: GoalId) -> Result<()> {
        let mut s = self.write();
        let user = s.goal_mut(actor, id)?.user_id;
        s.goals.remove(&id);
        let (mut deleted, mut updated) = (Vec::new(), Vec::new());
        if let Some(v) = s.progress.get_mut(&user) {
            v.retain(|e| {
                let goal_only = e.goal_id == Some(id)
                    && e.practice_id.is_none()
                    && e.learning_path_id.is_none();
                if goal_only {
                    deleted.push(e.id);
                }
                !goal_only
            });
            for e in v.iter_mut().filter(|e| e.goal_id == Some(id)) {
                e.goal_id = None;
                updated.push(e.id);
            }
        }
        for p in deleted {
            self.emit(T::Progress, Op::Delete, p.0, user);
        }
        self.emit(T::Goals, Op::Delete, id.0, user);
        for p in updated {
            self.emit(T::Progress, Op::Update, p.0, user);
        }
        Ok(())
    }

    async fn list_goals(&self, actor: Actor, user: UserId, p: Page) -> Result<Vec<Goal>> {
        p.validate()?;
        checks::list_owner(actor, user)?;
        let s = self.read();
        let mut v: Vec<Goal> = s
            .goals
            .values()
            .filter(|g| g.user_id == user)
            .cloned()
            .collect();
        newest_first(&mut v, |g| (g.created_at, g.id.0));
        Ok(page(v.into_iter(), p))
    }

    async fn log_progress(&self, actor: Actor, new: NewProgress) -> Result<ProgressEntry> {
        new.validate()?;
        actor.check_write(new.user_id)?;
        let mut s = self.write();
        s.require_profile(new.user_id)?;
        if let Some(p) = new.practice_id
            && !s.practices.contains_key(&p)
        {
            return Err(Error::invalid("practice_id", "no such practice"));
        }
        if let Some(g) = new.goal_id
            && s.goals.get(&g).is_none_or(|g| g.user_id != new.user_id)
        {
            return Err(Error::invalid("goal_id", "no such goal for this user"));
        }
        if let Some(l) = new.learning_path_id
            && s.paths.get(&l).is_none_or(|l| l.user_id != new.user_id)
        {
            return Err(Error::invalid(
                "learning_path_id",
                "no such learning path for this user",
            ));
        }
        let e = ProgressEntry {
            id: ProgressId::new(),
            user_id: new.user_id,
            practice_id: new.practice_id,
            goal_id: new.goal_id,
            learning_path_id: new.learning_path_id,
            duration_minutes: new.duration_minutes,
            rating: new.rating,
            mood_before: new.mood_before,
            mood_after: new.mood_after,
            notes: new.notes,
            completed: new.completed,
            completed_at: new.completed_at.map(micros),
            created_at: new.created_at.map_or_else(now, micros),
        };
        s.progress.entry(e.user_id).or_default().push(e.clone());
        self.emit(T::Progress, Op::Insert, e.id.0, e.user_id);
        Ok(e)
    }

    async fn list_progress(
        &self,
        actor: Actor,
        user: UserId,
        range: Option<DateRange>,
        p: Page,
    ) -> Result<Vec<ProgressEntry>> {
        p.validate()?;
        checks::list_owner(actor, user)?;
        if let Some(r) = &range {
            r.validate()?;
        }
        let s = self.read();
        let mut v: Vec<ProgressEntry> = s
            .progress
            .get(&user)
            .into_iter()
            .flatten()
            .filter(|e| range.is_none_or(|r| e.created_at >= r.from && e.created_at < r.to))
            .cloned()
            .collect();
        newest_first(&mut v, |e| (e.created_at, e.id.0));
        Ok(page(v.into_iter(), p))
    }

    async fn get_progress_entry(&self, actor: Actor, id: ProgressId) -> Result<ProgressEntry> {
        let s = self.read();
        let found = match actor {
            Actor::User(u) => s
                .progress
                .get(&u)
                .and_then(|v| v.iter().find(|e| e.id == id)),
            Actor::Service => s.progress.values().flatten().find(|e| e.id == id),
        };
        found.cloned().ok_or_else(|| not_found("progress entry"))
    }

    async fn get_notification(&self, actor: Actor, id: NotificationId) -> Result<Notification> {
        let s = self.read();
        match s.notifications.get(&id) {
            Some(n) if actor.may_access(n.user_id) => Ok(n.clone()),
            _ => Err(not_found("notification")),
        }
    }

    async fn create_learning_path(
        &self,
        actor: Actor,
        new: NewLearningPath,
    ) -> Result<LearningPath> {
        new.validate()?;
        actor.check_write(new.user_id)?;
        let mut s = self.write();
        s.require_profile(new.user_id)?;
        if new
            .practice_ids
            .iter()
            .any(|p| !s.practices.contains_key(p))
        {
            return Err(Error::invalid("practice_ids", "unknown practice"));
        }
        let t = now();
        let l = LearningPath {
            id: LearningPathId::new(),
            user_id: new.user_id,
            title: new.title,
            description: new.description,
            practice_ids: new.practice_ids,
            current_step: 0,
            progress: 0,
            completed: false,
            completed_at: None,
            created_at: t,
            updated_at: t,
        };
        s.paths.insert(l.id, l.clone());
        self.emit(T::LearningPaths, Op::Insert, l.id.0, l.user_id);
        Ok(l)
    }

    async fn get_learning_path(&self, actor: Actor, id: LearningPathId) -> Result<LearningPath> {
        let s = self.read();
        match s.paths.get(&id) {
            Some(l) if actor.may_access(l.user_id) => Ok(l.clone()),
            _ => Err(not_found("learning path")),
        }
    }

    async fn list_learning_paths(
        &self,
        actor: Actor,
        user: UserId,
        p: Page,
    ) -> Result<Vec<LearningPath>> {
        p.validate()?;
        checks::list_owner(actor, user)?;
        let s = self.read();
        let mut v: Vec<LearningPath> = s
            .paths
            .values()
            .filter(|l| l.user_id == user)
            .cloned()
            .collect();
        newest_first(&mut v, |l| (l.created_at, l.id.0));
        Ok(page(v.into_iter(), p))
    }

    async fn advance_learning_path(
        &self,
        actor: Actor,
        id: LearningPathId,
        step: i32,
    ) -> Result<LearningPath> {
        checks::step(step)?;
        let mut s = self.write();
        let l = s.path_mut(actor, id)?;
        let progress = checks::path_progress(step, l.practice_ids.len())?;
        let t = now();
        l.current_step = step;
        l.progress = progress;
        l.completed = step as usize == l.practice_ids.len();
        l.completed_at = if l.completed {
            l.completed_at.or(Some(t))
        } else {
            None
        };
        l.updated_at = t;
        let l = l.clone();
        self.emit(T::LearningPaths, Op::Update, l.id.0, l.user_id);
        Ok(l)
    }

    async fn create_notification(
        &self,
        actor: Actor,
        new: NewNotification,
    ) -> Result<Notification> {
        new.validate()?;
        actor.check_write(new.user_id)?;
        let mut s = self.write();
        s.require_profile(new.user_id)?;
        let n = Notification {
            id: NotificationId::new(),
            user_id: new.user_id,
            kind: new.kind,
            priority: new.priority,
            title: new.title,
            body: new.body,
            data: new.data,
            read: false,
            read_at: None,
            created_at: now(),
        };
        s.notifications.insert(n.id, n.clone());
        self.emit(T::Notifications, Op::Insert, n.id.0, n.user_id);
        Ok(n)
    }

    async fn list_unread_notifications(
        &self,
        actor: Actor,
        user: UserId,
        p: Page,
    ) -> Result<Vec<Notification>> {
        p.validate()?;
        checks::list_owner(actor, user)?;
        let s = self.read();
        let mut v: Vec<Notification> = s
            .notifications
            .values()
            .filter(|n| n.user_id == user && !n.read)
            .cloned()
            .collect();
        newest_first(&mut v, |n| (n.created_at, n.id.0));
        Ok(page(v.into_iter(), p))
    }

    async fn mark_notifications_read(
        &self,
        actor: Actor,
        user: UserId,
        ids: &[NotificationId],
    ) -> Result<u64> {
        checks::note_ids(ids)?;
        actor.check_write(user)?;
        let mut s = self.write();
        let t = now();
        let mut n = 0;
        let unique: BTreeSet<&NotificationId> = ids.iter().collect();
        for id in unique {
            if let Some(x) = s.notifications.get_mut(id)
                && x.user_id == user
                && !x.read
            {
                x.read = true;
                x.read_at = Some(t);
                n += 1;
                self.emit(T::Notifications, Op::Update, id.0, user);
            }
        }
        Ok(n)
    }

    async fn record_interaction(
        &self,
        actor: Actor,
        new: NewAiInteraction,
    ) -> Result<AiInteraction> {
        checks::interactions(actor, std::slice::from_ref(&new))?;
        let mut s = self.write();
        let rows = insert_interactions(&mut s, std::slice::from_ref(&new))?;
        for r in &rows {
            self.emit(T::AiInteractions, Op::Insert, r.id.0, r.user_id);
        }
        Ok(rows.into_iter().next().expect("one row in, one row out"))
    }

    async fn record_interactions(&self, actor: Actor, batch: &[NewAiInteraction]) -> Result<u64> {
        checks::interactions(actor, batch)?;
        let mut s = self.write();
        let rows = insert_interactions(&mut s, batch)?;
        for r in &rows {
            self.emit(T::AiInteractions, Op::Insert, r.id.0, r.user_id);
        }
        Ok(rows.len() as u64)
    }

    async fn list_interactions(
        &self,
        actor: Actor,
        user: UserId,
        p: Page,
    ) -> Result<Vec<AiInteraction>> {
        p.validate()?;
        checks::list_owner(actor, user)?;
        let s = self.read();
        let mut v: Vec<AiInteraction> = s
            .interactions
            .get(&user)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        newest_first(&mut v, |i| (i.created_at, i.id.0));
        Ok(page(v.into_iter(), p))
    }

    async fn user_statistics(
        &self,
        actor: Actor,
        user: UserId,
        range: Option<DateRange>,
    ) -> Result<UserStatistics> {
        checks::list_owner(actor, user)?;
        let r = checks::range(range)?;
        let s = self.read();
        let entries: Vec<ProgressEntry> = s
            .progress
            .get(&user)
            .into_iter()
            .flatten()
            .filter(|e| e.created_at >= r.from && e.created_at < r.to)
            .cloned()
            .collect();
        let total = entries.len() as i64;
        let completed: Vec<&ProgressEntry> = entries.iter().filter(|e| e.completed).collect();
        let n_completed = completed.len() as i64;
        let rated: Vec<i64> = entries
            .iter()
            .filter_map(|e| e.rating.map(i64::from))
            .collect();
        let moods: Vec<i64> = entries
            .iter()
            .filter_map(|e| Some(i64::from(e.mood_after?) - i64::from(e.mood_before?)))
            .collect();
        let days: BTreeSet<NaiveDate> = completed
            .iter()
            .map(|e| e.created_at.date_naive())
            .collect();
        let last_day = (r.to - Duration::microseconds(1)).date_naive();
        let (current, longest) = streaks(&days, last_day);
        let mut weeks: BTreeMap<NaiveDate, WeekPoint> = BTreeMap::new();
        for e in &entries {
            let w = week_start(e.created_at.date_naive());
            let p = weeks.entry(w).or_insert(WeekPoint {
                week_start: w,
                sessions: 0,
                completed: 0,
                minutes: 0,
            });
            p.sessions += 1;
            p.completed += i64::from(e.completed);
            p.minutes += i64::from(e.duration_minutes);
        }
        Ok(UserStatistics {
            user_id: user,
            from: r.from,
            to: r.to,
            total_sessions: total,
            total_practices: completed.iter().filter(|e| e.practice_id.is_some()).count() as i64,
            completion_rate: mean(n_completed, total).unwrap_or(0.0),
            average_rating: mean(rated.iter().sum(), rated.len() as i64),
            session_minutes: entries.iter().map(|e| i64::from(e.duration_minutes)).sum(),
            current_streak_days: current,
            longest_streak_days: longest,
            top_categories: s.top_categories(completed.iter().map(|e| (*e).clone())),
            weekly_trend: weeks.into_values().collect(),
            mood_improvement: mean(moods.iter().sum(), moods.len() as i64),
            learning_velocity: n_completed as f64 / range_weeks(&r),
        })
    }

    async fn learning_recommendations(
        &self,
        actor: Actor,
        user: UserId,
        limit: u32,
    ) -> Result<Vec<Recommendation>> {
        checks::list_owner(actor, user)?;
        checks::recommendation_limit(limit)?;
        let s = self.read();
        let cutoff = now() - Duration::days(30);
        let recent: BTreeSet<PracticeId> = s
            .completed_entries(user)
            .filter(|e| e.created_at >= cutoff)
            .filter_map(|e| e.practice_id)
            .collect();
        let n_done = s
            .completed_entries(user)
            .filter(|e| e.practice_id.is_some())
            .count() as i64;
        let level = checks::level(n_done);
        let top: Vec<String> = s
            .top_categories(s.completed_entries(user).cloned())
            .into_iter()
            .map(|c| c.category)
            .collect();
        let mut v: Vec<Recommendation> = s
            .practices
            .values()
            .filter(|p| !recent.contains(&p.id))
            .map(|p| {
                let in_top = top.contains(&p.category);
                let fits = p.difficulty == level;
                Recommendation {
                    practice_id: p.id,
                    title: p.title.clone(),
                    category: p.category.clone(),
                    difficulty: p.difficulty,
                    score: 2 * i32::from(in_top) + i32::from(fits),
                    reason: checks::recommendation_reason(
                        in_top,
                        fits,
                        &p.category,
                        level.as_str(),
                    ),
                }
            })
            .collect();
        v.sort_by(|a, b| {
            b.score
                .cmp(&a.score)
                .then_with(|| a.title.cmp(&b.title))
                .then_with(|| a.practice_id.cmp(&b.practice_id))
        });
        v.truncate(limit as usize);
        Ok(v)
    }

    async fn ai_cost_analysis(
        &self,
        actor: Actor,
        user: Option<UserId>,
        range: Option<DateRange>,
    ) -> Result<CostAnalysis> {
        match user {
            Some(u) => checks::list_owner(actor, u)?,
            None => actor.require_service("only the service may analyse every user's cost")?,
        }
        let r = checks::range(range)?;
        let s = self.read();
        let rows: Vec<&AiInteraction> = s
            .interactions
            .iter()
            .filter(|(u, _)| user.is_none_or(|x| x == **u))
            .flat_map(|(_, v)| v)
            .filter(|i| i.created_at >= r.from && i.created_at < r.to)
            .collect();
        let total = rows.len() as i64;
        let hits = rows.iter().filter(|i| i.cache_hit).count() as i64;
        let mut agents: BTreeMap<AgentType, (i64, i64, i64, i64)> = BTreeMap::new();
        let mut days: BTreeMap<NaiveDate, (i64, i64)> = BTreeMap::new();
        for i in &rows {
            let a = agents.entry(i.agent_type).or_default();
            a.0 += 1;
            a.1 += i64::from(i.cache_hit);
            a.2 += i.cost_nanos;
            a.3 += i64::from(i.latency_ms);
            let d = days.entry(i.created_at.date_naive()).or_default();
            d.0 += 1;
            d.1 += i.cost_nanos;
        }
        let mut per_agent: Vec<AgentCost> = agents
            .into_iter()
            .map(|(agent_type, (n, h, c, l))| AgentCost {
                agent_type,
                requests: n,
                cache_hits: h,
                cost_nanos: c,
                average_latency_ms: l as f64 / n as f64,
            })
            .collect();
        per_agent.sort_by(|a, b| {
            b.cost_nanos
                .cmp(&a.cost_nanos)
                .then_with(|| a.agent_type.as_str().cmp(b.agent_type.as_str()))
        });
        let mut c = CostAnalysis {
            user_id: user,
            from: r.from,
            to: r.to,
            total_requests: total,
            successful_requests: rows.iter().filter(|i| i.success).count() as i64,
            cache_hits: hits,
            cache_hit_rate: mean(hits, total).unwrap_or(0.0),
            total_cost_nanos: rows.iter().map(|i| i.cost_nanos).sum(),
            saved_nanos: rows.iter().map(|i| i.saved_nanos).sum(),
            input_tokens: rows.iter().map(|i| i64::from(i.input_tokens)).sum(),
            output_tokens: rows.iter().map(|i| i64::from(i.output_tokens)).sum(),
            average_latency_ms: mean(rows.iter().map(|i| i64::from(i.latency_ms)).sum(), total),
            per_agent,
            daily_trend: days
                .into_iter()
                .map(|(date, (requests, cost_nanos))| DailyCost {
                    date,
                    requests,
                    cost_nanos,
                })
                .collect(),
            recommendations: Vec::new(),
        };
        c.recommendations = cost_recommendations(&c);
        Ok(c)
    }

    async fn system_health(&self, actor: Actor) -> Result<SystemHealth> {
        actor.require_service("only the service may read system health")?;
        let s = self.read();
        let t = now();
        let day = t - Duration::hours(24);
        let hour = t - Duration::hours(1);
        let mut active: BTreeSet<UserId> = BTreeSet::new();
        for (u, v) in &s.progress {
            if v.iter().any(|e| e.created_at >= day) {
                active.insert(*u);
            }
        }
        let (mut n, mut failed, mut lat) = (0i64, 0i64, 0i64);
        for (u, v) in &s.interactions {
            if v.iter().any(|i| i.created_at >= day) {
                active.insert(*u);
            }
            for i in v.iter().filter(|i| i.created_at >= hour) {
                n += 1;
                failed += i64::from(!i.success);
                lat += i64::from(i.latency_ms);
            }
        }
        Ok(SystemHealth {
            measured_at: t,
            profiles: s.profiles.len() as i64,
            active_users_24h: active.len() as i64,
            ai_requests_1h: n,
            ai_error_rate_1h: mean(failed, n).unwrap_or(0.0),
            ai_average_latency_ms_1h: mean(lat, n),
            unread_notifications: s.notifications.values().filter(|x| !x.read).count() as i64,
            database: None,
        })
    }

    async fn erase_user(&self, actor: Actor, user: UserId) -> Result<ErasureReport> {
        actor.require_service("only the service may erase a user")?;
        let mut s = self.write();
        let mut r = ErasureReport::default();
        let mut events: Vec<(T, uuid::Uuid)> = Vec::new();
        // Same order as PostgreSQL's statements, so the feed reports the same events.
        let assessments: Vec<AssessmentId> = s
            .assessments
            .values()
            .filter(|a| a.user_id == user)
            .map(|a| a.id)
            .collect();
        for id in assessments {
            s.assessments.remove(&id);
            r.answers += s.answers.remove(&id).map_or(0, |v| v.len() as u64);
            r.assessments += 1;
            events.push((T::Assessments, id.0));
        }
        for e in s.progress.remove(&user).unwrap_or_default() {
            r.progress += 1;
            events.push((T::Progress, e.id.0));
        }
        s.goals.retain(|id, g| {
            let mine = g.user_id == user;
            if mine {
                r.goals += 1;
                events.push((T::Goals, id.0));
            }
            !mine
        });
        s.paths.retain(|id, p| {
            let mine = p.user_id == user;
            if mine {
                r.learning_paths += 1;
                events.push((T::LearningPaths, id.0));
            }
            !mine
        });
        s.notifications.retain(|id, n| {
            let mine = n.user_id == user;
            if mine {
                r.notifications += 1;
                events.push((T::Notifications, id.0));
            }
            !mine
        });
        for i in s.interactions.remove(&user).unwrap_or_default() {
            s.interaction_keys.remove(&(i.id, i.created_at));
            r.ai_interactions += 1;
            events.push((T::AiInteractions, i.id.0));
        }
        if let Some(p) = s.profiles.remove(&user) {
            s.emails.remove(&p.email.to_lowercase());
            r.profiles = 1;
        }
        for (table, id) in events {
            self.emit(table, Op::Delete, id, user);
        }
        Ok(r)
    }
}

fn insert_interactions(s: &mut State, batch: &[NewAiInteraction]) -> Result<Vec<AiInteraction>> {
    let t = now();
    let rows: Vec<AiInteraction> = batch
        .iter()
        .map(|n| AiInteraction {
            id: n.id.unwrap_or_default(),
            user_id: n.user_id,
            agent_type: n.agent_type,
            model: n.model.clone(),
            input: n.input.clone(),
            output: n.output.clone(),
            input_tokens: n.input_tokens,
            output_tokens: n.output_tokens,
            cost_nanos: n.cost_nanos,
            saved_nanos: n.saved_nanos,
            latency_ms: n.latency_ms,
            cache_hit: n.cache_hit,
            success: n.success,
            created_at: n.created_at.map_or(t, micros),
        })
        .collect();
    // Check everything first, so a refused batch writes nothing. The key is
    // (id, created_at), as on the partitioned PostgreSQL table.
    let mut seen = HashSet::new();
    for r in &rows {
        if !s.profiles.contains_key(&r.user_id) {
            return Err(Error::invalid("user_id", "no profile for this user"));
        }
        let key = (r.id, r.created_at);
        if s.interaction_keys.contains(&key) || !seen.insert(key) {
            return Err(Error::Conflict {
                what: "interaction id already recorded".into(),
            });
        }
    }
    for r in &rows {
        s.interaction_keys.insert((r.id, r.created_at));
        s.interactions.entry(r.user_id).or_default().push(r.clone());
    }
    Ok(rows)
}
