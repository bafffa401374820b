//! Notifications.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::enums::{NotificationType, PriorityLevel};
use crate::domain::ids::*;
use crate::domain::validate as v;
use crate::error::Result;

/// A notification for a user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Its id.
    pub id: NotificationId,
    /// Whom it is for.
    pub user_id: UserId,
    /// What it is about.
    pub kind: NotificationType,
    /// How urgent.
    pub priority: PriorityLevel,
    /// Title.
    pub title: String,
    /// Body text.
    pub body: String,
    /// Extra data for the client.
    pub data: Value,
    /// Whether read.
    pub read: bool,
    /// When read; set exactly when `read`.
    pub read_at: Option<DateTime<Utc>>,
    /// When created.
    pub created_at: DateTime<Utc>,
}

/// Input for a notification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewNotification {
    /// Whom it is for.
    pub user_id: UserId,
    /// What it is about.
    pub kind: NotificationType,
    /// How urgent.
    pub priority: PriorityLevel,
    /// Title.
    pub title: String,
    /// Body (at most 10,000 characters).
    pub body: String,
    /// Extra data (at most 64 KiB of JSON).
    pub data: Value,
}

impl NewNotification {
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        v::title("title", &self.title)?;
        v::text("body", &self.body, v::MAX_TEXT_CHARS)?;
        v::json("data", &self.data)
    }
}
