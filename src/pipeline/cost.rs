//! Exact cost: prices, a ledger per user, agent and day, and budgets with
//! reservations taken before a call is made.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::agent::Price;
use crate::domain::{AgentType, SubscriptionTier, UserId};
use crate::error::{Error, Result};

pub use super::budgets::Budgets;
use super::budgets::month_of;

/// Prices per model, with a default for models not listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "config", serde(default, deny_unknown_fields))]
pub struct PriceTable {
    /// Per model name. A dated or versioned name a provider reports
    /// (`gpt-4o-mini-2024-07-18`, `claude-3-5-sonnet-20241022`, `gpt-4-0613`) takes the
    /// price of its undated name (`gpt-4o-mini`) when it is not listed itself.
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

/// `name` without a trailing date or version stamp: `-YYYY-MM-DD`, `-YYYYMMDD` or
/// `-MMDD`.
fn undated(name: &str) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (head, tail) = name.rsplit_once('-')?;
    if digits(tail) && (tail.len() == 8 || tail.len() == 4) {
        // `-YYYYMMDD`, `-MMDD`, or the day of `-YYYY-MM-DD`.
        if tail.len() == 8 {
            return Some(head);
        }
    }
    if digits(tail) && tail.len() == 2 {
        let (h2, month) = head.rsplit_once('-')?;
        let (h3, year) = h2.rsplit_once('-')?;
        if digits(month) && month.len() == 2 && digits(year) && year.len() == 4 {
            return Some(h3);
        }
    }
    if digits(tail) && tail.len() == 4 {
        return Some(head);
    }
    None
}

impl PriceTable {
    /// The price of `model`: its own, its undated name's, or the default.
    pub fn price(&self, model: &str) -> Price {
        self.listed(model).unwrap_or(self.default)
    }

    /// The price of `model` or of its undated name, if either is listed.
    pub fn listed(&self, model: &str) -> Option<Price> {
        if self.models.is_empty() {
            return None;
        }
        if let Some(p) = self.models.get(model) {
            return Some(*p);
        }
        undated(model).and_then(|m| self.models.get(m).copied())
    }

    /// Adds or replaces a model's price.
    #[must_use]
    pub fn with(mut self, model: impl Into<String>, price: Price) -> Self {
        self.models.insert(model.into(), price);
        self
    }
}

/// Totals of one ledger line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spend {
    /// Requests answered (cache hits and coalesced requests included).
    pub requests: u64,
    /// Cost in nano-dollars.
    pub cost_nanos: u64,
    /// Saved by cache hits and by coalescing, in nano-dollars.
    pub saved_nanos: u64,
    /// Requests answered by joining an identical request's backend call (cost 0; what
    /// the call cost is in `saved_nanos`).
    pub coalesced: u64,
    /// Of `saved_nanos`, what coalescing saved (the rest is the cache's).
    pub saved_by_coalescing_nanos: u64,
    /// Of `cost_nanos`, what paid verification of would-be cache hits cost (an LLM
    /// judge asked during a lookup).
    #[serde(default)]
    pub verification_nanos: u64,
}

impl Spend {
    fn add_verification(&mut self, cost: u64) {
        self.cost_nanos = self.cost_nanos.saturating_add(cost);
        self.verification_nanos = self.verification_nanos.saturating_add(cost);
    }

    fn add(&mut self, cost: u64, saved: u64, coalesced: bool) {
        self.requests += 1;
        self.cost_nanos = self.cost_nanos.saturating_add(cost);
        self.saved_nanos = self.saved_nanos.saturating_add(saved);
        self.coalesced += u64::from(coalesced);
        if coalesced {
            self.saved_by_coalescing_nanos = self.saved_by_coalescing_nanos.saturating_add(saved);
        }
    }
}

#[derive(Debug, Default)]
struct LedgerState {
    /// The newest day seen; lines of days before the day before it are forgotten.
    current: Option<NaiveDate>,
    lines: HashMap<(UserId, AgentType, NaiveDate), Spend>,
    user_day: HashMap<(UserId, NaiveDate), u64>,
    global_day: HashMap<NaiveDate, u64>,
    reserved_user: HashMap<(UserId, NaiveDate), u64>,
    reserved_global: HashMap<NaiveDate, u64>,
    /// Per user and month (keyed by the month's first day): spent, and held.
    user_month: HashMap<(UserId, NaiveDate), u64>,
    reserved_user_month: HashMap<(UserId, NaiveDate), u64>,
    global_month: HashMap<NaiveDate, u64>,
    reserved_global_month: HashMap<NaiveDate, u64>,
    total: Spend,
}

impl LedgerState {
    /// Moves to `day`, forgetting every day before the previous one.
    fn advance(&mut self, day: NaiveDate) {
        if self.current.is_some_and(|c| c >= day) {
            return;
        }
        self.current = Some(day);
        let Some(keep) = day.pred_opt() else { return };
        self.lines.retain(|k, _| k.2 >= keep);
        self.user_day.retain(|k, _| k.1 >= keep);
        self.global_day.retain(|k, _| *k >= keep);
        self.reserved_user.retain(|k, _| k.1 >= keep);
        self.reserved_global.retain(|k, _| *k >= keep);
        let keep_month = month_of(keep);
        self.user_month.retain(|k, _| k.1 >= keep_month);
        self.reserved_user_month.retain(|k, _| k.1 >= keep_month);
        self.global_month.retain(|k, _| *k >= keep_month);
        self.reserved_global_month.retain(|k, _| *k >= keep_month);
        self.user_month.shrink_to_fit();
        self.reserved_user_month.shrink_to_fit();
        self.lines.shrink_to_fit();
        self.user_day.shrink_to_fit();
        self.reserved_user.shrink_to_fit();
    }

    fn kept(&self, day: NaiveDate) -> bool {
        self.current
            .and_then(|c| c.pred_opt())
            .is_none_or(|keep| day >= keep)
    }
}

type Today = Box<dyn Fn() -> NaiveDate + Send + Sync>;

struct Shared {
    budgets: Budgets,
    today: Today,
    state: Mutex<LedgerState>,
}

/// Spending per user, agent and UTC day, and the budgets that cap it.
///
/// Before a backend call the pipeline [reserves](Ledger::reserve) the request's
/// worst-case cost (estimated input tokens and `max_tokens` output). The call is
/// refused with [`Error::BudgetExceeded`] when the budget is already reached: what was
/// spent plus what calls in flight hold is at or above the cap. (A soft cap: the calls
/// admitted just below it may pass it by at most their own cost; a hard cap on the
/// worst case would refuse most calls, as `max_tokens` is rarely used up.) When the
/// answer arrives the reservation is settled at the exact cost, by the task that owns
/// the backend call (so a caller that goes away cannot hide a cost); a dropped
/// reservation (a call never made, or failed) is released.
///
/// The ledger keeps lines for today and yesterday (UTC) only: memory stays flat however
/// long the process runs. [`Ledger::total`] covers its whole life; the history per
/// user and day lives in the recorded interactions.
pub struct Ledger {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("budgets", &self.shared.budgets)
            .field("tracked", &self.tracked())
            .finish_non_exhaustive()
    }
}

/// A hold on budget for one call; settle it with [`Ledger::settle`] (or
/// [`Ledger::settle_coalesced`]) or drop it to release it. It owns its share of the
/// ledger, so it can move to whichever task ends up settling the call.
pub struct Reservation {
    ledger: Arc<Shared>,
    user: UserId,
    day: NaiveDate,
    amount: u64,
    done: bool,
    /// The same hold in the shared ledger, when the pipeline has one.
    shared: Option<super::pg_budget::BudgetHold>,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("day", &self.day)
            .field("amount", &self.amount)
            .finish_non_exhaustive()
    }
}

impl Reservation {
    /// The nano-dollars held.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// Adds the shared ledger's hold for the same call: settled and released with
    /// this one.
    pub(crate) fn attach(&mut self, hold: super::pg_budget::BudgetHold) {
        self.shared = Some(hold);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.ledger.release(self.user, self.day, self.amount);
        }
    }
}

fn utc_today() -> NaiveDate {
    Utc::now().date_naive()
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, user: UserId, day: NaiveDate, amount: u64) {
        Self::release_locked(&mut self.lock(), user, day, amount);
    }

    /// Releases `r` and books its call, under one lock.
    fn settle(&self, r: &Reservation, agent: AgentType, cost: u64, saved: u64, co: bool) {
        let mut s = self.lock();
        Self::release_locked(&mut s, r.user, r.day, r.amount);
        Self::add_locked(&mut s, r.user, agent, r.day, cost, saved, co);
    }

    fn release_locked(s: &mut LedgerState, user: UserId, day: NaiveDate, amount: u64) {
        if let Some(r) = s.reserved_user.get_mut(&(user, day)) {
            *r = r.saturating_sub(amount);
            if *r == 0 {
                s.reserved_user.remove(&(user, day));
            }
        }
        if let Some(r) = s.reserved_global.get_mut(&day) {
            *r = r.saturating_sub(amount);
        }
        let month = month_of(day);
        if let Some(r) = s.reserved_user_month.get_mut(&(user, month)) {
            *r = r.saturating_sub(amount);
            if *r == 0 {
                s.reserved_user_month.remove(&(user, month));
            }
        }
        if let Some(r) = s.reserved_global_month.get_mut(&month) {
            *r = r.saturating_sub(amount);
        }
    }

    /// Releases `r` and books what verifying a lookup cost (no request counted).
    fn settle_verification(&self, r: &Reservation, agent: AgentType, cost: u64) {
        let mut s = self.lock();
        Self::release_locked(&mut s, r.user, r.day, r.amount);
        s.advance(r.day);
        if cost > 0 {
            Self::book_locked(&mut s, r.user, agent, r.day, cost, |sp| {
                sp.add_verification(cost);
            });
        }
    }

    fn add(&self, user: UserId, agent: AgentType, day: NaiveDate, cost: u64, saved: u64, co: bool) {
        Self::add_locked(&mut self.lock(), user, agent, day, cost, saved, co);
    }

    fn add_locked(
        s: &mut LedgerState,
        user: UserId,
        agent: AgentType,
        day: NaiveDate,
        cost: u64,
        saved: u64,
        co: bool,
    ) {
        Self::book_locked(s, user, agent, day, cost, |sp| sp.add(cost, saved, co));
    }

    /// Books `cost` on `day` with `book` applied to the total and to the user's line
    /// (a line of a day already forgotten counts in the total only).
    fn book_locked(
        s: &mut LedgerState,
        user: UserId,
        agent: AgentType,
        day: NaiveDate,
        cost: u64,
        book: impl Fn(&mut Spend),
    ) {
        s.advance(day);
        book(&mut s.total);
        if !s.kept(day) {
            return;
        }
        book(s.lines.entry((user, agent, day)).or_default());
        if cost > 0 {
            let u = s.user_day.entry((user, day)).or_default();
            *u = u.saturating_add(cost);
            let g = s.global_day.entry(day).or_default();
            *g = g.saturating_add(cost);
            let month = month_of(day);
            let u = s.user_month.entry((user, month)).or_default();
            *u = u.saturating_add(cost);
            let g = s.global_month.entry(month).or_default();
            *g = g.saturating_add(cost);
        }
    }
}

impl Ledger {
    /// A ledger enforcing `budgets`, on UTC days of the system clock.
    pub fn new(budgets: Budgets) -> Self {
        Self::with_clock(budgets, utc_today)
    }

    /// A ledger whose "today" comes from `today` (for simulations and tests).
    pub fn with_clock(
        budgets: Budgets,
        today: impl Fn() -> NaiveDate + Send + Sync + 'static,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                budgets,
                today: Box::new(today),
                state: Mutex::new(LedgerState::default()),
            }),
        }
    }

    fn today(&self) -> NaiveDate {
        (self.shared.today)()
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
    ) -> Result<Reservation> {
        self.hold(user, tier, amount, false)
    }

    /// As [`Ledger::reserve`], but refuses unless the whole `amount` fits under every
    /// cap (spent + held + `amount` ≤ cap): for costs the user must be able to
    /// afford before they are incurred at all (a paid verifier of a cache lookup).
    ///
    /// # Errors
    /// [`Error::BudgetExceeded`] naming the cap that would be passed.
    pub fn reserve_within(
        &self,
        user: UserId,
        tier: SubscriptionTier,
        amount: u64,
    ) -> Result<Reservation> {
        self.hold(user, tier, amount, true)
    }

    /// Holds `amount` unless spent + held (+ `amount`, when `whole`) passes a cap.
    fn hold(
        &self,
        user: UserId,
        tier: SubscriptionTier,
        amount: u64,
        whole: bool,
    ) -> Result<Reservation> {
        let day = self.today();
        let budgets = &self.shared.budgets;
        let mut s = self.shared.lock();
        s.advance(day);
        // Refused when what is spent and held reaches the cap (a soft cap: the last
        // call admitted may pass it by its own cost), or, for `whole`, when adding
        // `amount` would pass it.
        let refused = |spent: u64, held: u64, cap: u64| {
            let used = spent.saturating_add(held);
            if whole {
                used.saturating_add(amount) > cap
            } else {
                used >= cap
            }
        };
        let month = month_of(day);
        let get = |m: &HashMap<(UserId, NaiveDate), u64>, k| m.get(&k).copied().unwrap_or(0);
        let checks = [
            (
                "user daily",
                budgets.user_daily(tier),
                get(&s.user_day, (user, day)),
                get(&s.reserved_user, (user, day)),
            ),
            (
                "user monthly",
                budgets.user_monthly(tier),
                get(&s.user_month, (user, month)),
                get(&s.reserved_user_month, (user, month)),
            ),
            (
                "global daily",
                budgets.global_daily,
                s.global_day.get(&day).copied().unwrap_or(0),
                s.reserved_global.get(&day).copied().unwrap_or(0),
            ),
            (
                "global monthly",
                budgets.global_monthly,
                s.global_month.get(&month).copied().unwrap_or(0),
                s.reserved_global_month.get(&month).copied().unwrap_or(0),
            ),
        ];
        for (scope, cap, spent, held) in checks {
            if cap.is_some_and(|cap| refused(spent, held, cap)) {
                return Err(Error::BudgetExceeded {
                    scope: scope.into(),
                });
            }
        }
        let st = &mut *s;
        for (m, k) in [
            (&mut st.reserved_user, (user, day)),
            (&mut st.reserved_user_month, (user, month)),
        ] {
            let r = m.entry(k).or_default();
            *r = r.saturating_add(amount);
        }
        for (m, k) in [
            (&mut st.reserved_global, day),
            (&mut st.reserved_global_month, month),
        ] {
            let r = m.entry(k).or_default();
            *r = r.saturating_add(amount);
        }
        Ok(Reservation {
            ledger: self.shared.clone(),
            user,
            day,
            amount,
            done: false,
            shared: None,
        })
    }

    /// Turns a reservation into the exact cost of the answered call.
    pub fn settle(&self, mut r: Reservation, agent: AgentType, cost_nanos: u64) {
        r.done = true;
        if let Some(h) = r.shared.take() {
            h.settle(cost_nanos);
        }
        self.shared.settle(&r, agent, cost_nanos, 0, false);
    }

    /// Settles a request that was answered by joining another request's backend call:
    /// it costs nothing (the call is charged once, to the request that caused it) and
    /// saves `saved_nanos`, what the call cost.
    pub fn settle_coalesced(&self, mut r: Reservation, agent: AgentType, saved_nanos: u64) {
        r.done = true;
        if let Some(h) = r.shared.take() {
            h.settle(0);
        }
        self.shared.settle(&r, agent, 0, saved_nanos, true);
    }

    /// Turns a reservation for verifying a cache lookup into what the verification
    /// cost (`Spend::verification_nanos`; no request is counted: the request itself
    /// is booked by [`Ledger::settle`] or [`Ledger::record_hit`]).
    pub fn settle_verification(&self, mut r: Reservation, agent: AgentType, cost_nanos: u64) {
        r.done = true;
        if let Some(h) = r.shared.take() {
            h.settle(cost_nanos);
        }
        self.shared.settle_verification(&r, agent, cost_nanos);
    }

    /// Records a cache hit: no cost, `saved_nanos` saved.
    pub fn record_hit(&self, user: UserId, agent: AgentType, saved_nanos: u64) {
        self.shared
            .add(user, agent, self.today(), 0, saved_nanos, false);
    }

    /// One user's spending on one agent on one day (today or yesterday; older days
    /// are forgotten and read as zero).
    pub fn line(&self, user: UserId, agent: AgentType, day: NaiveDate) -> Spend {
        self.shared
            .lock()
            .lines
            .get(&(user, agent, day))
            .copied()
            .unwrap_or_default()
    }

    /// Everyone's spending over the ledger's whole life.
    pub fn total(&self) -> Spend {
        self.shared.lock().total
    }

    /// One user's cost today, in nano-dollars.
    pub fn user_today(&self, user: UserId) -> u64 {
        let day = self.today();
        self.shared
            .lock()
            .user_day
            .get(&(user, day))
            .copied()
            .unwrap_or(0)
    }

    /// One user's cost this month (UTC), in nano-dollars.
    pub fn user_this_month(&self, user: UserId) -> u64 {
        let month = month_of(self.today());
        self.shared
            .lock()
            .user_month
            .get(&(user, month))
            .copied()
            .unwrap_or(0)
    }

    /// The budgets this ledger enforces.
    pub fn budgets(&self) -> &Budgets {
        &self.shared.budgets
    }

    /// Nano-dollars held by calls in flight for `user` today.
    pub fn user_reserved(&self, user: UserId) -> u64 {
        let day = self.today();
        self.shared
            .lock()
            .reserved_user
            .get(&(user, day))
            .copied()
            .unwrap_or(0)
    }

    /// Entries the ledger holds (lines, per-user days, reservations): what its memory
    /// grows with.
    pub fn tracked(&self) -> usize {
        let s = self.shared.lock();
        s.lines.len()
            + s.user_day.len()
            + s.global_day.len()
            + s.reserved_user.len()
            + s.reserved_global.len()
            + s.user_month.len()
            + s.reserved_user_month.len()
            + s.global_month.len()
            + s.reserved_global_month.len()
    }
}
