//! Exact cost: prices, a ledger per user, agent and day, and budgets with
//! reservations taken before a call is made.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::agent::Usage;
use crate::domain::{AgentType, SubscriptionTier, UserId};
use crate::error::{Error, Result};

/// A model's price, in **micro-dollars per 1,000 tokens** (so $0.02 per 1K is
/// `20_000`). In these units one token costs exactly that many nano-dollars, so every
/// cost is an exact integer and sums never drift.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// Input (prompt) tokens, µ$ per 1K.
    pub input_micros_per_1k: u64,
    /// Output (completion) tokens, µ$ per 1K.
    pub output_micros_per_1k: u64,
}

impl Price {
    /// The cost of `usage`, in nano-dollars (exact).
    pub fn cost_nanos(&self, usage: Usage) -> u64 {
        u64::from(usage.input_tokens) * self.input_micros_per_1k
            + u64::from(usage.output_tokens) * self.output_micros_per_1k
    }
}

/// Prices per model, with a default for models not listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceTable {
    /// Per model name.
    pub models: HashMap<String, Price>,
    /// For any other model. Default: $0.02 per 1K input tokens, $0.06 per 1K output
    /// tokens (the product's agents run $0.02–$0.08 per 1K).
    pub default: Price,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self {
            models: HashMap::new(),
            default: Price {
                input_micros_per_1k: 20_000,
                output_micros_per_1k: 60_000,
            },
        }
    }
}

impl PriceTable {
    /// The price of `model`.
    pub fn price(&self, model: &str) -> Price {
        self.models.get(model).copied().unwrap_or(self.default)
    }

    /// Adds or replaces a model's price.
    #[must_use]
    pub fn with(mut self, model: impl Into<String>, price: Price) -> Self {
        self.models.insert(model.into(), price);
        self
    }
}

/// Spending caps per UTC day, in nano-dollars; `None` is no cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budgets {
    /// Per free-tier user. Default: 10,000,000 n$ ($0.01) a day.
    pub free_user_daily: Option<u64>,
    /// Per premium user. Default: 100,000,000 n$ ($0.10) a day.
    pub premium_user_daily: Option<u64>,
    /// Per enterprise user. Default: 1,000,000,000 n$ ($1) a day.
    pub enterprise_user_daily: Option<u64>,
    /// For everyone together. Default: none.
    pub global_daily: Option<u64>,
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            free_user_daily: Some(10_000_000),
            premium_user_daily: Some(100_000_000),
            enterprise_user_daily: Some(1_000_000_000),
            global_daily: None,
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
        }
    }

    fn user_cap(&self, tier: SubscriptionTier) -> Option<u64> {
        match tier {
            SubscriptionTier::Free => self.free_user_daily,
            SubscriptionTier::Premium => self.premium_user_daily,
            SubscriptionTier::Enterprise => self.enterprise_user_daily,
        }
    }
}

/// Totals of one ledger line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spend {
    /// Requests answered (cache hits included).
    pub requests: u64,
    /// Cost in nano-dollars.
    pub cost_nanos: u64,
    /// Saved by cache hits, in nano-dollars.
    pub saved_nanos: u64,
}

#[derive(Debug, Default)]
struct LedgerState {
    lines: HashMap<(UserId, AgentType, NaiveDate), Spend>,
    user_day: HashMap<(UserId, NaiveDate), u64>,
    global_day: HashMap<NaiveDate, u64>,
    reserved_user: HashMap<(UserId, NaiveDate), u64>,
    reserved_global: HashMap<NaiveDate, u64>,
}

/// Spending per user, agent and UTC day, and the budgets that cap it.
///
/// Before a backend call the pipeline [reserves](Ledger::reserve) the request's
/// worst-case cost (estimated input tokens and `max_tokens` output). The call is
/// refused with [`Error::BudgetExceeded`] when the budget is already reached: what was
/// spent plus what calls in flight hold is at or above the cap. (A soft cap: the calls
/// admitted just below it may pass it by at most their own cost; a hard cap on the
/// worst case would refuse most calls, as `max_tokens` is rarely used up.) When the
/// answer arrives the reservation is settled at the exact cost; a dropped reservation
/// (failed call) is released.
#[derive(Debug)]
pub struct Ledger {
    budgets: Budgets,
    state: Mutex<LedgerState>,
}

/// A hold on budget for one call; settle it with [`Ledger::settle`] or drop it.
#[derive(Debug)]
pub struct Reservation<'a> {
    ledger: &'a Ledger,
    user: UserId,
    day: NaiveDate,
    amount: u64,
    done: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.ledger.release(self.user, self.day, self.amount);
        }
    }
}

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

impl Ledger {
    /// A ledger enforcing `budgets`.
    pub fn new(budgets: Budgets) -> Self {
        Self {
            budgets,
            state: Mutex::new(LedgerState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `amount` nano-dollars of today's budget for `user`.
    ///
    /// # Errors
    /// [`Error::BudgetExceeded`] naming the cap that would be passed.
    pub fn reserve(
        &self,
        user: UserId,
        tier: SubscriptionTier,
        amount: u64,
    ) -> Result<Reservation<'_>> {
        let day = today();
        let mut s = self.lock();
        let spent_u = s.user_day.get(&(user, day)).copied().unwrap_or(0);
        let held_u = s.reserved_user.get(&(user, day)).copied().unwrap_or(0);
        if let Some(cap) = self.budgets.user_cap(tier)
            && spent_u + held_u >= cap
        {
            return Err(Error::BudgetExceeded {
                scope: "user daily".into(),
            });
        }
        let spent_g = s.global_day.get(&day).copied().unwrap_or(0);
        let held_g = s.reserved_global.get(&day).copied().unwrap_or(0);
        if let Some(cap) = self.budgets.global_daily
            && spent_g + held_g >= cap
        {
            return Err(Error::BudgetExceeded {
                scope: "global daily".into(),
            });
        }
        *s.reserved_user.entry((user, day)).or_default() += amount;
        *s.reserved_global.entry(day).or_default() += amount;
        Ok(Reservation {
            ledger: self,
            user,
            day,
            amount,
            done: false,
        })
    }

    fn release(&self, user: UserId, day: NaiveDate, amount: u64) {
        let mut s = self.lock();
        if let Some(r) = s.reserved_user.get_mut(&(user, day)) {
            *r = r.saturating_sub(amount);
        }
        if let Some(r) = s.reserved_global.get_mut(&day) {
            *r = r.saturating_sub(amount);
        }
    }

    /// Turns a reservation into the exact cost of the answered call.
    pub fn settle(&self, mut r: Reservation<'_>, agent: AgentType, cost_nanos: u64) {
        r.done = true;
        self.release(r.user, r.day, r.amount);
        self.add(r.user, agent, r.day, cost_nanos, 0);
    }

    /// Records a cache hit: no cost, `saved_nanos` saved.
    pub fn record_hit(&self, user: UserId, agent: AgentType, saved_nanos: u64) {
        self.add(user, agent, today(), 0, saved_nanos);
    }

    fn add(&self, user: UserId, agent: AgentType, day: NaiveDate, cost: u64, saved: u64) {
        let mut s = self.lock();
        let line = s.lines.entry((user, agent, day)).or_default();
        line.requests += 1;
        line.cost_nanos += cost;
        line.saved_nanos += saved;
        *s.user_day.entry((user, day)).or_default() += cost;
        *s.global_day.entry(day).or_default() += cost;
    }

    /// One user's spending on one agent on one day.
    pub fn line(&self, user: UserId, agent: AgentType, day: NaiveDate) -> Spend {
        self.lock()
            .lines
            .get(&(user, agent, day))
            .copied()
            .unwrap_or_default()
    }

    /// Everyone's spending, summed over every line.
    pub fn total(&self) -> Spend {
        let s = self.lock();
        s.lines.values().fold(Spend::default(), |mut t, l| {
            t.requests += l.requests;
            t.cost_nanos += l.cost_nanos;
            t.saved_nanos += l.saved_nanos;
            t
        })
    }

    /// One user's cost today, in nano-dollars.
    pub fn user_today(&self, user: UserId) -> u64 {
        self.lock()
            .user_day
            .get(&(user, today()))
            .copied()
            .unwrap_or(0)
    }
}
