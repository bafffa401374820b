//! The change feed's vocabulary and its fan-out: what a committed change looks like
//! ([`ChangeEvent`]), what a subscriber asks for ([`Channel`]) and receives
//! ([`RealtimeEvent`]), and the [`Hub`] that routes one to the other.
//!
//! This module sits below both the repositories (the in-memory one publishes into a
//! [`Hub`]) and `kasama::realtime` (the feeds, and `hydrate`, which reads rows back
//! through a repository); it imports neither. Its public items are re-exported from
//! `kasama::realtime`, their public home.

mod hub;

pub use hub::{Hub, Subscription};

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Actor, UserId};
use crate::error::{Error, Result};

/// A table whose changes are published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeTable {
    /// `assessments`.
    Assessments,
    /// `progress`.
    Progress,
    /// `goals`.
    Goals,
    /// `notifications`.
    Notifications,
    /// `learning_paths`.
    LearningPaths,
    /// `ai_interactions` (only when its feed is switched on).
    AiInteractions,
}

impl ChangeTable {
    /// Every table with its SQL name, in declaration order. The SQL name is also the
    /// JSON name (serde's `snake_case` of the variant; a test checks they agree).
    const NAMES: [(ChangeTable, &'static str); 6] = [
        (ChangeTable::Assessments, "assessments"),
        (ChangeTable::Progress, "progress"),
        (ChangeTable::Goals, "goals"),
        (ChangeTable::Notifications, "notifications"),
        (ChangeTable::LearningPaths, "learning_paths"),
        (ChangeTable::AiInteractions, "ai_interactions"),
    ];

    /// Every table, in declaration order.
    pub const ALL: [ChangeTable; 6] = {
        let mut all = [ChangeTable::Assessments; 6];
        let mut i = 0;
        while i < all.len() {
            all[i] = Self::NAMES[i].0;
            i += 1;
        }
        all
    };

    /// The table's SQL name.
    pub fn as_str(&self) -> &'static str {
        Self::NAMES[*self as usize].1
    }
}

// `as_str` indexes `NAMES` by discriminant: the table must list the variants in order.
const _: () = {
    let mut i = 0;
    while i < ChangeTable::NAMES.len() {
        assert!(ChangeTable::NAMES[i].0 as usize == i);
        i += 1;
    }
};

impl std::fmt::Display for ChangeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChangeTable {
    type Err = Error;

    /// The table of an SQL name.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `table` for any other string.
    fn from_str(s: &str) -> Result<Self> {
        Self::NAMES
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(t, _)| *t)
            .ok_or_else(|| Error::invalid("table", format!("unknown table {s:?}")))
    }
}

/// What happened to the row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    /// Inserted.
    Insert,
    /// Updated.
    Update,
    /// Deleted.
    Delete,
}

/// One committed change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The table.
    pub table: ChangeTable,
    /// The operation.
    pub op: ChangeOp,
    /// The row's id.
    pub id: Uuid,
    /// The row's owner.
    pub user_id: UserId,
    /// A database-wide increasing number (assigned at write time; delivery is in
    /// commit order).
    pub seq: i64,
    /// When the row was written (database clock).
    pub at: DateTime<Utc>,
}

/// What a subscription yields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum RealtimeEvent {
    /// A change.
    Change(ChangeEvent),
    /// The feed reconnected: changes during the gap were not seen; re-read.
    Resync,
    /// This subscriber's buffer overflowed and `missed` events were dropped; re-read.
    Lagged {
        /// Events dropped.
        missed: u64,
    },
}

/// What to subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Channel {
    /// One user's changes, of one table or (`None`) all of them.
    User {
        /// Whose.
        user: UserId,
        /// Which table; `None` for everything of that user.
        table: Option<ChangeTable>,
    },
    /// Every change of a table (service only).
    Table(ChangeTable),
}

impl Channel {
    fn matches(&self, e: &ChangeEvent) -> bool {
        match self {
            Channel::User { user, table } => {
                *user == e.user_id && table.is_none_or(|t| t == e.table)
            }
            Channel::Table(t) => *t == e.table,
        }
    }

    /// `Ok` if `actor` may subscribe to this channel: a user to their own changes,
    /// the service to anything.
    pub(crate) fn authorise(&self, actor: Actor) -> Result<()> {
        match self {
            Channel::User { user, .. } if actor.may_access(*user) => Ok(()),
            Channel::User { .. } => Err(Error::forbidden(
                "a user may only subscribe to their own changes",
            )),
            Channel::Table(_) => {
                actor.require_service("only the service may subscribe to a whole table")
            }
        }
    }
}

/// Parses a NOTIFY payload from `kasama_notify_change()`.
pub(crate) fn parse_payload(p: &str) -> Option<ChangeEvent> {
    #[derive(Deserialize)]
    struct Raw<'a> {
        t: &'a str,
        op: ChangeOp,
        id: Uuid,
        user: Uuid,
        seq: i64,
        ts: i64,
    }
    let r: Raw<'_> = serde_json::from_str(p).ok()?;
    Some(ChangeEvent {
        table: r.t.parse().ok()?,
        op: r.op,
        id: r.id,
        user_id: UserId(r.user),
        seq: r.seq,
        at: DateTime::from_timestamp_micros(r.ts)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_names_are_the_json_names_and_parse_back() {
        for t in ChangeTable::ALL {
            let json = serde_json::to_value(t).unwrap();
            assert_eq!(json, serde_json::Value::from(t.as_str()), "{t:?}");
            assert_eq!(t.as_str().parse::<ChangeTable>().unwrap(), t);
            assert_eq!(t.to_string(), t.as_str());
        }
        assert_eq!(
            "Goals".parse::<ChangeTable>().unwrap_err().invalid_field(),
            Some("table")
        );
    }

    #[test]
    fn payloads_parse_with_the_sql_names() {
        let id = Uuid::new_v4();
        let user = Uuid::new_v4();
        let p = format!(
            r#"{{"t":"learning_paths","op":"update","id":"{id}","user":"{user}","seq":7,"ts":1700000000000000}}"#
        );
        let e = parse_payload(&p).unwrap();
        assert_eq!(
            (e.table, e.op, e.id, e.user_id, e.seq),
            (
                ChangeTable::LearningPaths,
                ChangeOp::Update,
                id,
                UserId(user),
                7
            )
        );
        for bad in [
            p.replace("learning_paths", "LearningPaths"),
            p.replace("update", "upsert"),
            p.replace("\"seq\":7,", ""),
        ] {
            assert!(parse_payload(&bad).is_none(), "{bad}");
        }
    }
}
