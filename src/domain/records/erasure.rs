//! What erasing a user removed.

use serde::{Deserialize, Serialize};

/// What erasing a user (the repository's `erase_user`) removed: rows per table. All
/// zero when the user had no data (erasing is idempotent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureReport {
    /// The profile (0 or 1).
    pub profiles: u64,
    /// Assessments.
    pub assessments: u64,
    /// Assessment answers.
    pub answers: u64,
    /// Goals.
    pub goals: u64,
    /// Progress entries.
    pub progress: u64,
    /// Learning paths.
    pub learning_paths: u64,
    /// Notifications.
    pub notifications: u64,
    /// AI interactions.
    pub ai_interactions: u64,
    /// Conversations.
    pub conversations: u64,
    /// Messages of those conversations.
    pub conversation_messages: u64,
}

impl ErasureReport {
    /// Rows removed in all.
    pub fn total(&self) -> u64 {
        self.profiles
            + self.assessments
            + self.answers
            + self.goals
            + self.progress
            + self.learning_paths
            + self.notifications
            + self.ai_interactions
            + self.conversations
            + self.conversation_messages
    }
}
