//! Spending caps: [`Budgets`], per UTC day and month, per user tier and global.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::domain::SubscriptionTier;

/// Spending caps per UTC day and per UTC calendar month, in nano-dollars; `None` is
/// no cap.
///
/// In a settings document (feature `config`) `null` is no cap and a missing field
/// takes its default. (Without the feature, the plain serde derive reads a missing
/// field as `None`, no cap.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "config", serde(default, deny_unknown_fields))]
pub struct Budgets {
    /// Per free-tier user. Default: 10,000,000 n$ ($0.01) a day.
    pub free_user_daily: Option<u64>,
    /// Per premium user. Default: 100,000,000 n$ ($0.10) a day.
    pub premium_user_daily: Option<u64>,
    /// Per enterprise user. Default: 1,000,000,000 n$ ($1) a day.
    pub enterprise_user_daily: Option<u64>,
    /// For everyone together. Default: none.
    pub global_daily: Option<u64>,
    /// Per free-tier user per UTC month. Default: 100,000,000 n$ ($0.10: the product's
    /// target cost per user per month).
    pub free_user_monthly: Option<u64>,
    /// Per premium user per UTC month. Default: 1,000,000,000 n$ ($1).
    pub premium_user_monthly: Option<u64>,
    /// Per enterprise user per UTC month. Default: 10,000,000,000 n$ ($10).
    pub enterprise_user_monthly: Option<u64>,
    /// For everyone together per UTC month. Default: none.
    pub global_monthly: Option<u64>,
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            free_user_daily: Some(10_000_000),
            premium_user_daily: Some(100_000_000),
            enterprise_user_daily: Some(1_000_000_000),
            global_daily: None,
            free_user_monthly: Some(100_000_000),
            premium_user_monthly: Some(1_000_000_000),
            enterprise_user_monthly: Some(10_000_000_000),
            global_monthly: None,
        }
    }
}

impl Budgets {
    /// No caps at all.
    pub fn unlimited() -> Self {
        Self {
            free_user_daily: None,
            premium_user_daily: None,
            enterprise_user_daily: None,
            global_daily: None,
            free_user_monthly: None,
            premium_user_monthly: None,
            enterprise_user_monthly: None,
            global_monthly: None,
        }
    }

    /// The daily cap of a user on `tier`.
    pub fn user_daily(&self, tier: SubscriptionTier) -> Option<u64> {
        match tier {
            SubscriptionTier::Free => self.free_user_daily,
            SubscriptionTier::Premium => self.premium_user_daily,
            SubscriptionTier::Enterprise => self.enterprise_user_daily,
        }
    }

    /// The monthly cap of a user on `tier`.
    pub fn user_monthly(&self, tier: SubscriptionTier) -> Option<u64> {
        match tier {
            SubscriptionTier::Free => self.free_user_monthly,
            SubscriptionTier::Premium => self.premium_user_monthly,
            SubscriptionTier::Enterprise => self.enterprise_user_monthly,
        }
    }
}

/// The first day of `day`'s month.
pub(crate) fn month_of(day: NaiveDate) -> NaiveDate {
    use chrono::Datelike;
    day.with_day(1).unwrap_or(day)
}
