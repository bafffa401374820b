//! The rows most tests create only to have one: a goal, a learning path, a reminder,
//! an assessment and its answers, with the plain values the tests used to spell out
//! (change a field with struct update syntax: `NewGoal { milestones, ..new_goal(u, "G") }`);
//! and a user's subscription to their own change feed.

use chrono::{DateTime, Utc};
use kasama::prelude::*;
use kasama::realtime::{ChangeTable, Channel, Realtime, Subscription};
use serde_json::{Value, json};

/// A goal of `user` titled `title`: category "c", no description, target date or
/// milestones.
pub fn new_goal(user: UserId, title: &str) -> NewGoal {
    NewGoal {
        user_id: user,
        title: title.into(),
        description: String::new(),
        category: "c".into(),
        target_date: None,
        milestones: vec![],
    }
}

/// A learning path "L" of `user` through `practices`, no description.
pub fn new_learning_path(user: UserId, practices: Vec<PracticeId>) -> NewLearningPath {
    NewLearningPath {
        user_id: user,
        title: "L".into(),
        description: String::new(),
        practice_ids: practices,
    }
}

/// A low-priority reminder for `user` titled `title`: no body, data `{}`.
pub fn new_reminder(user: UserId, title: &str) -> NewNotification {
    NewNotification {
        user_id: user,
        kind: NotificationType::Reminder,
        priority: PriorityLevel::Low,
        title: title.into(),
        body: String::new(),
        data: json!({}),
    }
}

/// An assessment of `user`, of type `kind`, titled `title`, created at `at` (`None`:
/// now).
pub fn new_assessment(
    user: UserId,
    kind: &str,
    title: &str,
    at: Option<DateTime<Utc>>,
) -> NewAssessment {
    NewAssessment {
        user_id: user,
        assessment_type: kind.into(),
        title: title.into(),
        created_at: at,
    }
}

/// An unscored answer `answer` to question `question`.
pub fn new_answer(question: &str, answer: Value) -> NewAnswer {
    NewAnswer {
        question_id: question.into(),
        answer,
        score: None,
    }
}

/// `user`'s subscription to their own changes (of `table`, or all), as that user.
pub fn own_feed(rt: &dyn Realtime, user: UserId, table: Option<ChangeTable>) -> Subscription {
    rt.subscribe(Actor::User(user), Channel::User { user, table })
        .unwrap()
}
