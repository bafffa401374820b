//! Every method of [`Repository`](super::Repository), listed once, for the impls that
//! only pass calls on: the `Arc<R>` impl, [`MeteredRepository`](super::MeteredRepository),
//! the two stores (whose methods live in one file per aggregate) and the test
//! suite's wrappers.
//!
//! `__forward_repository!(impl[GENERICS] TYPE => CALL)` writes
//! `impl<GENERICS> Repository for TYPE`, every method's body being
//! `CALL!(self, method(arg, …))`, where `CALL` is a `macro_rules!` of the caller's
//! that says how one call is passed on (and may match a method by name to treat it
//! differently). Adding a method to the trait means adding it to the list below; the
//! compiler then points at every impl that must handle it.
//!
//! ```
//! use kasama::Repository;
//!
//! /// Logs every call's name, then passes it on.
//! struct Logged<R>(R);
//!
//! macro_rules! log_then_pass_on {
//!     ($s:ident, $name:ident($($a:ident),*)) => {{
//!         eprintln!("repository call: {}", stringify!($name));
//!         $s.0.$name($($a),*).await
//!     }};
//! }
//! kasama::__forward_repository!(impl[R: Repository] Logged<R> => log_then_pass_on);
//!
//! let repo: Box<dyn Repository> = Box::new(Logged(kasama::InMemoryRepository::new()));
//! # drop(repo);
//! ```

/// What the expansion of [`__forward_repository!`](crate::__forward_repository) names,
/// reachable from any crate.
#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
    pub use serde_json::Value;
}

/// Writes an `impl Repository` whose every method is `CALL!(self, method(args))`;
/// see the `repository::forward` module.
#[doc(hidden)]
#[macro_export]
macro_rules! __forward_repository {
    (impl[$($gen:tt)*] $ty:ty => $call:ident) => {
        $crate::__forward_repository! { @impl [$($gen)*] [$ty] $call
            // ---- profiles ----
            create_profile(actor: Actor, new: NewProfile) -> Profile;
            get_profile(actor: Actor, id: UserId) -> Profile;
            update_profile(actor: Actor, id: UserId, update: ProfileUpdate) -> Profile;
            // ---- assessments ----
            create_assessment(actor: Actor, new: NewAssessment) -> Assessment;
            get_assessment(actor: Actor, id: AssessmentId) -> Assessment;
            answer_assessment(actor: Actor, id: AssessmentId, answers: Vec<NewAnswer>) -> Vec<AssessmentAnswer>;
            list_answers(actor: Actor, id: AssessmentId) -> Vec<AssessmentAnswer>;
            complete_assessment(actor: Actor, id: AssessmentId, score: i32, insights: Value) -> Assessment;
            list_assessments(actor: Actor, user: UserId, filter: &AssessmentFilter, page: Page) -> Vec<Assessment>;
            // ---- practices ----
            create_practice(actor: Actor, new: NewPractice) -> Practice;
            get_practice(actor: Actor, id: PracticeId) -> Practice;
            search_practices(actor: Actor, query: &str, page: Page) -> Vec<Practice>;
            list_practices(actor: Actor, filter: &PracticeFilter, page: Page) -> Vec<Practice>;
            // ---- goals ----
            create_goal(actor: Actor, new: NewGoal) -> Goal;
            get_goal(actor: Actor, id: GoalId) -> Goal;
            update_goal(actor: Actor, id: GoalId, update: GoalUpdate) -> Goal;
            set_goal_progress(actor: Actor, id: GoalId, progress: i32) -> Goal;
            complete_milestone(actor: Actor, id: GoalId, index: usize) -> Goal;
            delete_goal(actor: Actor, id: GoalId) -> ();
            list_goals(actor: Actor, user: UserId, page: Page) -> Vec<Goal>;
            // ---- progress ----
            log_progress(actor: Actor, new: NewProgress) -> ProgressEntry;
            get_progress_entry(actor: Actor, id: ProgressId) -> ProgressEntry;
            list_progress(actor: Actor, user: UserId, range: Option<DateRange>, page: Page) -> Vec<ProgressEntry>;
            // ---- learning paths ----
            create_learning_path(actor: Actor, new: NewLearningPath) -> LearningPath;
            get_learning_path(actor: Actor, id: LearningPathId) -> LearningPath;
            list_learning_paths(actor: Actor, user: UserId, page: Page) -> Vec<LearningPath>;
            advance_learning_path(actor: Actor, id: LearningPathId, current_step: i32) -> LearningPath;
            // ---- notifications ----
            create_notification(actor: Actor, new: NewNotification) -> Notification;
            get_notification(actor: Actor, id: NotificationId) -> Notification;
            list_unread_notifications(actor: Actor, user: UserId, page: Page) -> Vec<Notification>;
            mark_notifications_read(actor: Actor, user: UserId, ids: &[NotificationId]) -> u64;
            // ---- AI interactions ----
            record_interaction(actor: Actor, new: NewAiInteraction) -> AiInteraction;
            record_interactions(actor: Actor, batch: &[NewAiInteraction]) -> u64;
            list_interactions(actor: Actor, user: UserId, page: Page) -> Vec<AiInteraction>;
            // ---- conversations ----
            create_conversation(actor: Actor, new: NewConversation) -> Conversation;
            get_conversation(actor: Actor, id: ConversationId) -> Conversation;
            list_conversations(actor: Actor, user: UserId, limit: u32) -> Vec<Conversation>;
            add_message(actor: Actor, new: NewConversationMessage) -> ConversationMessage;
            recent_messages(actor: Actor, conversation: ConversationId, limit: u32) -> Vec<ConversationMessage>;
            // ---- analytics ----
            user_statistics(actor: Actor, user: UserId, range: Option<DateRange>) -> UserStatistics;
            learning_recommendations(actor: Actor, user: UserId, limit: u32) -> Vec<Recommendation>;
            ai_cost_analysis(actor: Actor, user: Option<UserId>, range: Option<DateRange>) -> CostAnalysis;
            system_health(actor: Actor) -> SystemHealth;
            // ---- erasure ----
            erase_user(actor: Actor, user: UserId) -> ErasureReport;
        }
    };
    (@impl [$($gen:tt)*] [$ty:ty] $call:ident
        $( $name:ident($($arg:ident : $t:ty),*) -> $ret:ty; )*
    ) => {
        // In a block of its own, so the short type names above resolve whatever the
        // caller has imported.
        const _: () = {
            use $crate::domain::*;
            use $crate::error::Result;
            use $crate::repository::__private::Value;

            #[$crate::repository::__private::async_trait]
            impl<$($gen)*> $crate::repository::Repository for $ty {
                $(
                    async fn $name(&self $(, $arg: $t)*) -> Result<$ret> {
                        $call!(self, $name($($arg),*))
                    }
                )*
            }
        };
    };
}
