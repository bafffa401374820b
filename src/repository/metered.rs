//! [`MeteredRepository`]: times every repository call into a [`MetricsSink`].

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;

use super::Repository;
use crate::domain::*;
use crate::error::{Error, Result};
use crate::metrics::{MetricEvent, MetricsSink};

/// Wraps a [`Repository`] and records a [`MetricEvent::Database`] per call: the
/// method's name as the operation, its latency, and whether the database succeeded
/// (a refusal of the caller's input — invalid, not found, forbidden, conflict — is a
/// success of the database; a backend failure or timeout is not).
#[derive(Debug)]
pub struct MeteredRepository<R> {
    inner: R,
    sink: Arc<dyn MetricsSink>,
}

impl<R> MeteredRepository<R> {
    /// Meters `inner` into `sink`.
    pub fn new(inner: R, sink: Arc<dyn MetricsSink>) -> Self {
        Self { inner, sink }
    }

    /// The wrapped repository.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    fn observe(&self, operation: &'static str, start: Instant, err: Option<&Error>) {
        let ok = !matches!(
            err,
            Some(Error::Backend { .. } | Error::Timeout { .. } | Error::Overloaded { .. })
        );
        self.sink.record(&MetricEvent::Database {
            operation,
            latency: start.elapsed(),
            ok,
        });
    }
}

macro_rules! metered {
    ($( fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty; )*) => {
        #[async_trait]
        impl<R: Repository> Repository for MeteredRepository<R> {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    let start = Instant::now();
                    let r = self.inner.$name($($arg),*).await;
                    self.observe(stringify!($name), start, r.as_ref().err());
                    r
                }
            )*
        }
    };
}

metered! {
    fn create_profile(&self, a: Actor, n: NewProfile) -> Result<Profile>;
    fn get_profile(&self, a: Actor, id: UserId) -> Result<Profile>;
    fn update_profile(&self, a: Actor, id: UserId, u: ProfileUpdate) -> Result<Profile>;
    fn create_assessment(&self, a: Actor, n: NewAssessment) -> Result<Assessment>;
    fn get_assessment(&self, a: Actor, id: AssessmentId) -> Result<Assessment>;
    fn answer_assessment(&self, a: Actor, id: AssessmentId, n: Vec<NewAnswer>) -> Result<Vec<AssessmentAnswer>>;
    fn list_answers(&self, a: Actor, id: AssessmentId) -> Result<Vec<AssessmentAnswer>>;
    fn complete_assessment(&self, a: Actor, id: AssessmentId, score: i32, insights: Value) -> Result<Assessment>;
    fn list_assessments(&self, a: Actor, u: UserId, f: &AssessmentFilter, p: Page) -> Result<Vec<Assessment>>;
    fn create_practice(&self, a: Actor, n: NewPractice) -> Result<Practice>;
    fn get_practice(&self, a: Actor, id: PracticeId) -> Result<Practice>;
    fn search_practices(&self, a: Actor, q: &str, p: Page) -> Result<Vec<Practice>>;
    fn list_practices(&self, a: Actor, f: &PracticeFilter, p: Page) -> Result<Vec<Practice>>;
    fn create_goal(&self, a: Actor, n: NewGoal) -> Result<Goal>;
    fn get_goal(&self, a: Actor, id: GoalId) -> Result<Goal>;
    fn update_goal(&self, a: Actor, id: GoalId, u: GoalUpdate) -> Result<Goal>;
    fn set_goal_progress(&self, a: Actor, id: GoalId, p: i32) -> Result<Goal>;
    fn complete_milestone(&self, a: Actor, id: GoalId, i: usize) -> Result<Goal>;
    fn delete_goal(&self, a: Actor, id: GoalId) -> Result<()>;
    fn list_goals(&self, a: Actor, u: UserId, p: Page) -> Result<Vec<Goal>>;
    fn log_progress(&self, a: Actor, n: NewProgress) -> Result<ProgressEntry>;
    fn list_progress(&self, a: Actor, u: UserId, r: Option<DateRange>, p: Page) -> Result<Vec<ProgressEntry>>;
    fn get_progress_entry(&self, a: Actor, id: ProgressId) -> Result<ProgressEntry>;
    fn get_notification(&self, a: Actor, id: NotificationId) -> Result<Notification>;
    fn create_learning_path(&self, a: Actor, n: NewLearningPath) -> Result<LearningPath>;
    fn get_learning_path(&self, a: Actor, id: LearningPathId) -> Result<LearningPath>;
    fn list_learning_paths(&self, a: Actor, u: UserId, p: Page) -> Result<Vec<LearningPath>>;
    fn advance_learning_path(&self, a: Actor, id: LearningPathId, s: i32) -> Result<LearningPath>;
    fn create_notification(&self, a: Actor, n: NewNotification) -> Result<Notification>;
    fn list_unread_notifications(&self, a: Actor, u: UserId, p: Page) -> Result<Vec<Notification>>;
    fn mark_notifications_read(&self, a: Actor, u: UserId, ids: &[NotificationId]) -> Result<u64>;
    fn record_interaction(&self, a: Actor, n: NewAiInteraction) -> Result<AiInteraction>;
    fn record_interactions(&self, a: Actor, b: &[NewAiInteraction]) -> Result<u64>;
    fn list_interactions(&self, a: Actor, u: UserId, p: Page) -> Result<Vec<AiInteraction>>;
    fn user_statistics(&self, a: Actor, u: UserId, r: Option<DateRange>) -> Result<UserStatistics>;
    fn learning_recommendations(&self, a: Actor, u: UserId, l: u32) -> Result<Vec<Recommendation>>;
    fn ai_cost_analysis(&self, a: Actor, u: Option<UserId>, r: Option<DateRange>) -> Result<CostAnalysis>;
    fn system_health(&self, a: Actor) -> Result<SystemHealth>;
    fn erase_user(&self, a: Actor, u: UserId) -> Result<ErasureReport>;
}
