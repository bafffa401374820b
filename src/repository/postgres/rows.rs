//! Column lists and row → record conversions. Enums are read as text and parsed,
//! so no custom PostgreSQL type mapping is needed.

use tokio_postgres::Row;
use uuid::Uuid;

use crate::domain::*;
use crate::error::{Error, Result};

pub(super) const PROFILE_COLS: &str =
    "id, email, display_name, subscription_tier::text, preferences, created_at, updated_at";

pub(super) fn profile(r: &Row) -> Result<Profile> {
    Ok(Profile {
        id: UserId(r.get(0)),
        email: r.get(1),
        display_name: r.get(2),
        subscription_tier: r.get::<_, &str>(3).parse()?,
        preferences: r.get(4),
        created_at: r.get(5),
        updated_at: r.get(6),
    })
}

pub(super) const ASSESSMENT_COLS: &str = "id, user_id, assessment_type, title, completed, completed_at, score, insights, created_at, updated_at";

pub(super) fn assessment(r: &Row) -> Result<Assessment> {
    Ok(Assessment {
        id: AssessmentId(r.get(0)),
        user_id: UserId(r.get(1)),
        assessment_type: r.get(2),
        title: r.get(3),
        completed: r.get(4),
        completed_at: r.get(5),
        score: r.get(6),
        insights: r.get(7),
        created_at: r.get(8),
        updated_at: r.get(9),
    })
}

pub(super) const ANSWER_COLS: &str =
    "id, assessment_id, user_id, question_id, answer, score, created_at";

pub(super) fn answer(r: &Row) -> Result<AssessmentAnswer> {
    Ok(AssessmentAnswer {
        id: AnswerId(r.get(0)),
        assessment_id: AssessmentId(r.get(1)),
        user_id: UserId(r.get(2)),
        question_id: r.get(3),
        answer: r.get(4),
        score: r.get(5),
        created_at: r.get(6),
    })
}

pub(super) const PRACTICE_COLS: &str = "id, title, description, category, difficulty::text, tags, duration_minutes, created_at, updated_at";

pub(super) fn practice(r: &Row) -> Result<Practice> {
    Ok(Practice {
        id: PracticeId(r.get(0)),
        title: r.get(1),
        description: r.get(2),
        category: r.get(3),
        difficulty: r.get::<_, &str>(4).parse()?,
        tags: r.get(5),
        duration_minutes: r.get(6),
        created_at: r.get(7),
        updated_at: r.get(8),
    })
}

pub(super) const GOAL_COLS: &str = "id, user_id, title, description, category, target_date, progress, completed, completed_at, milestones, created_at, updated_at";

pub(super) fn goal(r: &Row) -> Result<Goal> {
    Ok(Goal {
        id: GoalId(r.get(0)),
        user_id: UserId(r.get(1)),
        title: r.get(2),
        description: r.get(3),
        category: r.get(4),
        target_date: r.get(5),
        progress: r.get(6),
        completed: r.get(7),
        completed_at: r.get(8),
        milestones: from_json("milestones", r.get(9))?,
        created_at: r.get(10),
        updated_at: r.get(11),
    })
}

pub(super) const PROGRESS_COLS: &str = "id, user_id, practice_id, goal_id, learning_path_id, duration_minutes, rating, mood_before, mood_after, notes, completed, completed_at, created_at";

pub(super) fn progress(r: &Row) -> Result<ProgressEntry> {
    Ok(ProgressEntry {
        id: ProgressId(r.get(0)),
        user_id: UserId(r.get(1)),
        practice_id: r.get::<_, Option<Uuid>>(2).map(PracticeId),
        goal_id: r.get::<_, Option<Uuid>>(3).map(GoalId),
        learning_path_id: r.get::<_, Option<Uuid>>(4).map(LearningPathId),
        duration_minutes: r.get(5),
        rating: r.get(6),
        mood_before: r.get(7),
        mood_after: r.get(8),
        notes: r.get(9),
        completed: r.get(10),
        completed_at: r.get(11),
        created_at: r.get(12),
    })
}

pub(super) const PATH_COLS: &str = "id, user_id, title, description, practice_ids, current_step, progress, completed, completed_at, created_at, updated_at";

pub(super) fn path(r: &Row) -> Result<LearningPath> {
    Ok(LearningPath {
        id: LearningPathId(r.get(0)),
        user_id: UserId(r.get(1)),
        title: r.get(2),
        description: r.get(3),
        practice_ids: r
            .get::<_, Vec<Uuid>>(4)
            .into_iter()
            .map(PracticeId)
            .collect(),
        current_step: r.get(5),
        progress: r.get(6),
        completed: r.get(7),
        completed_at: r.get(8),
        created_at: r.get(9),
        updated_at: r.get(10),
    })
}

pub(super) const NOTIFICATION_COLS: &str =
    "id, user_id, kind::text, priority::text, title, body, data, read, read_at, created_at";

pub(super) fn notification(r: &Row) -> Result<Notification> {
    Ok(Notification {
        id: NotificationId(r.get(0)),
        user_id: UserId(r.get(1)),
        kind: r.get::<_, &str>(2).parse()?,
        priority: r.get::<_, &str>(3).parse()?,
        title: r.get(4),
        body: r.get(5),
        data: r.get(6),
        read: r.get(7),
        read_at: r.get(8),
        created_at: r.get(9),
    })
}

pub(super) const INTERACTION_COLS: &str = "id, user_id, agent_type::text, model, input, output, input_tokens, output_tokens, cost_nanos, saved_nanos, latency_ms, cache_hit, success, created_at";

pub(super) fn interaction(r: &Row) -> Result<AiInteraction> {
    Ok(AiInteraction {
        id: InteractionId(r.get(0)),
        user_id: UserId(r.get(1)),
        agent_type: r.get::<_, &str>(2).parse()?,
        model: r.get(3),
        input: r.get(4),
        output: r.get(5),
        input_tokens: r.get(6),
        output_tokens: r.get(7),
        cost_nanos: r.get(8),
        saved_nanos: r.get(9),
        latency_ms: r.get(10),
        cache_hit: r.get(11),
        success: r.get(12),
        created_at: r.get(13),
    })
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    v: serde_json::Value,
) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::Backend {
        what: what.into(),
        retryable: false,
        source: Box::new(e),
    })
}

pub(super) fn all<T>(rows: &[Row], f: fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}

pub(super) fn one<T>(rows: &[Row], entity: &'static str, f: fn(&Row) -> Result<T>) -> Result<T> {
    match rows.first() {
        Some(r) => f(r),
        None => Err(Error::NotFound { entity }),
    }
}

pub(super) const CONVERSATION_COLS: &str =
    "id, user_id, agent::text, title, created_at, updated_at";

pub(super) fn conversation(r: &Row) -> Result<Conversation> {
    Ok(Conversation {
        id: ConversationId(r.get(0)),
        user_id: UserId(r.get(1)),
        agent: r.get::<_, &str>(2).parse()?,
        title: r.get(3),
        created_at: r.get(4),
        updated_at: r.get(5),
    })
}

pub(super) const MESSAGE_COLS: &str = "id, conversation_id, user_id, role, content, created_at";

pub(super) fn message(r: &Row) -> Result<ConversationMessage> {
    Ok(ConversationMessage {
        id: MessageId(r.get(0)),
        conversation_id: ConversationId(r.get(1)),
        user_id: UserId(r.get(2)),
        role: r.get::<_, &str>(3).parse()?,
        content: r.get(4),
        created_at: r.get(5),
    })
}
