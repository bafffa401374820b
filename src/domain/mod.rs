//! The product's data: typed records, ids, enums, inputs and their validation.

pub mod analytics;
mod enums;
mod ids;
mod records;
pub mod validate;

pub use analytics::{
    AgentCost, CategoryCount, CostAnalysis, DailyCost, DatabaseHealth, Recommendation,
    SystemHealth, UserStatistics, WeekPoint,
};
pub use enums::*;
pub use ids::*;
pub use records::*;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Who performs a call. Every call on user data takes one, and the repository
/// enforces what it may touch: a user only their own rows, the service everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Actor {
    /// An end user, acting on their own data.
    User(UserId),
    /// The backend itself (workers, admin jobs): may act on every user's data.
    Service,
}

impl Actor {
    /// The user, if a user acts.
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Actor::User(u) => Some(*u),
            Actor::Service => None,
        }
    }

    /// Whether this actor may act on `owner`'s data.
    pub fn may_access(&self, owner: UserId) -> bool {
        match self {
            Actor::User(u) => *u == owner,
            Actor::Service => true,
        }
    }

    /// `Ok` if this actor may write `owner`'s data.
    ///
    /// # Errors
    /// [`Error::Forbidden`] when a user writes another user's data.
    pub fn check_write(&self, owner: UserId) -> Result<()> {
        if self.may_access(owner) {
            Ok(())
        } else {
            Err(Error::forbidden("a user may only write their own data"))
        }
    }

    /// `Ok` if this is the service.
    ///
    /// # Errors
    /// [`Error::Forbidden`] for a user.
    pub fn require_service(&self, what: &'static str) -> Result<()> {
        match self {
            Actor::Service => Ok(()),
            Actor::User(_) => Err(Error::forbidden(what)),
        }
    }
}

/// Offset pagination. Default: the first 50.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Rows to return, 1 to [`Page::MAX_LIMIT`]. Default: 50.
    pub limit: u32,
    /// Rows to skip. Default: 0.
    pub offset: u32,
}

impl Page {
    /// Largest accepted `limit`.
    pub const MAX_LIMIT: u32 = 500;

    /// The first `limit` rows.
    pub fn first(limit: u32) -> Self {
        Self { limit, offset: 0 }
    }

    /// # Errors
    /// [`Error::InvalidInput`] for a limit of 0 or above [`Page::MAX_LIMIT`].
    pub fn validate(&self) -> Result<()> {
        validate::range("limit", self.limit.into(), 1, Self::MAX_LIMIT.into())
    }
}

impl Default for Page {
    fn default() -> Self {
        Self {
            limit: 50,
            offset: 0,
        }
    }
}

/// A half-open time range `[from, to)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateRange {
    /// Start (inclusive).
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
}

impl DateRange {
    /// The default range of the analytics calls, in days.
    pub const DEFAULT_DAYS: i64 = 30;

    /// The last `days` days, ending now.
    pub fn last_days(days: i64) -> Self {
        let to = Utc::now();
        Self {
            from: to - Duration::days(days),
            to,
        }
    }

    /// # Errors
    /// [`Error::InvalidInput`] when `from` is not before `to`.
    pub fn validate(&self) -> Result<()> {
        if self.from >= self.to {
            return Err(Error::invalid("range", "from must be before to"));
        }
        Ok(())
    }

    /// The given range, or the last [`DateRange::DEFAULT_DAYS`] days.
    pub fn or_default(range: Option<DateRange>) -> Self {
        range.unwrap_or_else(|| Self::last_days(Self::DEFAULT_DAYS))
    }
}
