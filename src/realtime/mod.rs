//! The realtime change feed: subscribe to a user's changes (or, as the service, to a
//! whole table) and receive a [`Stream`](futures_util::Stream) of [`RealtimeEvent`]s.
//!
//! - [`PgRealtime`]: one dedicated LISTEN connection (outside the pool: pooled
//!   connections never see notifications) shared by every subscription; reconnects
//!   with exponential backoff and jitter, re-LISTENs and tells every subscriber to
//!   [resync](RealtimeEvent::Resync); a heartbeat round trip checks the connection.
//! - [`MemoryRealtime`]: the same feed from an [`InMemoryRepository`](crate::InMemoryRepository)
//!   built with [`with_change_feed`](crate::InMemoryRepository::with_change_feed).
//! - [`hydrate`] turns an event into its row, read as the subscriber (RLS applies).
//!
//! Events carry ids, not rows. A slow subscriber cannot hold up others: each has a
//! bounded buffer, and when it overflows the subscriber gets
//! [`RealtimeEvent::Lagged`] and should re-read what it shows.

mod postgres;

pub use crate::feed::{
    ChangeEvent, ChangeOp, ChangeTable, Channel, Hub, RealtimeEvent, Subscription,
};
pub use postgres::{PgRealtime, PgRealtimeConfig};

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::*;
use crate::error::Result;
use crate::repository::Repository;

/// Whether the feed is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum FeedState {
    /// Connecting for the first time.
    Connecting,
    /// Listening.
    Connected,
    /// Lost the connection; trying again.
    Reconnecting,
    /// Stopped for good: the listener's database role bypasses row-level security
    /// (see [`PgRealtimeConfig::allow_rls_bypass`](crate::realtime::PgRealtimeConfig)).
    /// The reason was logged; fix the configuration and start a new feed.
    Refused,
}

/// The feed's observable status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RealtimeStatus {
    /// Connected or not.
    pub state: FeedState,
    /// Failed connection attempts since the last success.
    pub attempts: u32,
    /// Reconnects since start.
    pub reconnects: u64,
    /// The last heartbeat's round trip.
    pub last_heartbeat: Option<Duration>,
    /// When the last event arrived.
    pub last_event: Option<DateTime<Utc>>,
    /// The listener's server process id (for operators; `None` in memory).
    pub backend_pid: Option<i32>,
    /// Live subscriptions.
    pub subscribers: usize,
}

/// A source of change events. Object safe.
pub trait Realtime: Send + Sync + 'static {
    /// Subscribes `actor` to `channel`. Dropping the subscription unsubscribes.
    ///
    /// # Errors
    /// [`Error::Forbidden`](crate::Error::Forbidden) for another user's channel, or a table channel for a user.
    fn subscribe(&self, actor: Actor, channel: Channel) -> Result<Subscription>;

    /// The feed's status.
    fn status(&self) -> RealtimeStatus;
}

fn _object_safe(_: &dyn Realtime) {}

/// The in-memory feed: [`InMemoryRepository`](crate::InMemoryRepository) writes, through
/// a shared [`Hub`].
#[derive(Debug, Clone)]
pub struct MemoryRealtime {
    hub: Arc<Hub>,
}

impl MemoryRealtime {
    /// A feed over `hub` (give the same hub to
    /// [`InMemoryRepository::with_change_feed`](crate::InMemoryRepository::with_change_feed)).
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

impl Realtime for MemoryRealtime {
    fn subscribe(&self, actor: Actor, channel: Channel) -> Result<Subscription> {
        channel.authorise(actor)?;
        Ok(self.hub.subscribe(channel))
    }

    fn status(&self) -> RealtimeStatus {
        RealtimeStatus {
            state: FeedState::Connected,
            attempts: 0,
            reconnects: 0,
            last_heartbeat: None,
            last_event: self.hub.last_event(),
            backend_pid: None,
            subscribers: self.hub.len(),
        }
    }
}

/// A changed row, read back.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum ChangedRow {
    /// An assessment.
    Assessment(Assessment),
    /// A progress entry.
    Progress(ProgressEntry),
    /// A goal.
    Goal(Goal),
    /// A notification.
    Notification(Notification),
    /// A learning path.
    LearningPath(LearningPath),
}

/// Reads the row an event names, as `actor` (so RLS and isolation apply). `None` for
/// deletions, rows gone since, rows the actor may not see, and AI interactions
/// (which are not read back one by one).
///
/// # Errors
/// The repository's errors other than "not found".
pub async fn hydrate(
    repo: &dyn Repository,
    actor: Actor,
    e: &ChangeEvent,
) -> Result<Option<ChangedRow>> {
    if e.op == ChangeOp::Delete {
        return Ok(None);
    }
    let r = match e.table {
        ChangeTable::Assessments => repo
            .get_assessment(actor, AssessmentId(e.id))
            .await
            .map(ChangedRow::Assessment),
        ChangeTable::Progress => repo
            .get_progress_entry(actor, ProgressId(e.id))
            .await
            .map(ChangedRow::Progress),
        ChangeTable::Goals => repo
            .get_goal(actor, GoalId(e.id))
            .await
            .map(ChangedRow::Goal),
        ChangeTable::Notifications => repo
            .get_notification(actor, NotificationId(e.id))
            .await
            .map(ChangedRow::Notification),
        ChangeTable::LearningPaths => repo
            .get_learning_path(actor, LearningPathId(e.id))
            .await
            .map(ChangedRow::LearningPath),
        ChangeTable::AiInteractions => return Ok(None),
    };
    match r {
        Ok(row) => Ok(Some(row)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}
