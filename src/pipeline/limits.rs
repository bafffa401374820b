//! Rate limits (governor): global, per user by subscription tier, for AI calls and
//! for API requests. The limiters read tokio's clock, so paused-time tests drive them,
//! and a refusal carries the wait ([`Error::RateLimited`]`{ retry_after }`).

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use governor::clock::Clock;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::domain::{SubscriptionTier, UserId};
use crate::error::{Error, Result};

/// governor's clock on tokio's time (so `tokio::time::pause` and `advance` apply).
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;
    fn now(&self) -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }
}

type Keyed = RateLimiter<UserId, DashMapStateStore<UserId>, TokioClock>;

/// The global limiter: GCRA on one atomic, like governor's, but able to give a cell
/// back — a request it admitted and the user's limiter then refused must not use up
/// everyone's allowance (governor has no refund).
struct Global {
    base: tokio::time::Instant,
    /// Theoretical arrival time, in nanoseconds since `base`.
    tat: AtomicU64,
    /// Nanoseconds per cell.
    interval: u64,
    /// How far ahead of now the TAT may run: `interval × (burst − 1)`.
    tolerance: u64,
}

impl Global {
    fn new(q: Quota) -> Self {
        let interval = u64::try_from(q.replenish_interval().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let burst = u64::from(q.burst_size().get());
        Self {
            base: tokio::time::Instant::now(),
            tat: AtomicU64::new(0),
            interval,
            tolerance: interval.saturating_mul(burst - 1),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Takes one cell, or says how long until one is free.
    fn take(&self) -> std::result::Result<(), Duration> {
        let now = self.now();
        let mut cur = self.tat.load(Relaxed);
        loop {
            let tat = cur.max(now);
            if tat - now > self.tolerance {
                return Err(Duration::from_nanos(tat - now - self.tolerance));
            }
            match self.tat.compare_exchange_weak(
                cur,
                tat.saturating_add(self.interval),
                Relaxed,
                Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(x) => cur = x,
            }
        }
    }

    /// Gives back a cell taken by [`Global::take`].
    fn give_back(&self) {
        let now = self.now();
        let _ = self.tat.fetch_update(Relaxed, Relaxed, |t| {
            Some(t.saturating_sub(self.interval).max(now))
        });
    }
}

/// A quota for each subscription tier.
///
/// In a settings document (feature `config`) each quota reads
/// `{ "rate": 10, "per": "1m", "burst": 5 }` (10 a minute, bursts of 5; `burst`
/// defaults to `rate`). Inside a [`RateLimitConfig`] a tier left out keeps its
/// default; a `TierQuotas` read on its own needs all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct TierQuotas {
    /// Free users.
    #[cfg_attr(
        feature = "config",
        serde(deserialize_with = "crate::config_serde::quota")
    )]
    pub free: Quota,
    /// Premium users.
    #[cfg_attr(
        feature = "config",
        serde(deserialize_with = "crate::config_serde::quota")
    )]
    pub premium: Quota,
    /// Enterprise users.
    #[cfg_attr(
        feature = "config",
        serde(deserialize_with = "crate::config_serde::quota")
    )]
    pub enterprise: Quota,
}

impl TierQuotas {
    /// The quota of `tier`.
    pub fn of(&self, tier: SubscriptionTier) -> Quota {
        match tier {
            SubscriptionTier::Free => self.free,
            SubscriptionTier::Premium => self.premium,
            SubscriptionTier::Enterprise => self.enterprise,
        }
    }
}

/// [`TierQuotas`] as a document may give them: any tier may be left out.
#[cfg(feature = "config")]
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SomeTiers {
    free: Option<crate::config_serde::QuotaSetting>,
    premium: Option<crate::config_serde::QuotaSetting>,
    enterprise: Option<crate::config_serde::QuotaSetting>,
}

#[cfg(feature = "config")]
impl SomeTiers {
    /// `defaults` with the tiers given here.
    fn over(self, defaults: TierQuotas) -> TierQuotas {
        TierQuotas {
            free: self.free.map_or(defaults.free, |q| q.0),
            premium: self.premium.map_or(defaults.premium, |q| q.0),
            enterprise: self.enterprise.map_or(defaults.enterprise, |q| q.0),
        }
    }
}

/// [`RateLimitConfig::ai_per_user`] from a document: the tiers given, the others
/// their defaults.
#[cfg(feature = "config")]
fn ai_tiers<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<TierQuotas, D::Error> {
    use serde::Deserialize;
    Ok(SomeTiers::deserialize(d)?.over(RateLimitConfig::default().ai_per_user))
}

/// [`RateLimitConfig::api_per_user`] from a document: the tiers given, the others
/// their defaults.
#[cfg(feature = "config")]
fn api_tiers<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<TierQuotas, D::Error> {
    use serde::Deserialize;
    Ok(SomeTiers::deserialize(d)?.over(RateLimitConfig::default().api_per_user))
}

fn per_minute(n: u32, burst: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).expect("non-zero"))
        .allow_burst(NonZeroU32::new(burst).expect("non-zero"))
}

/// The limits' settings. Every default is documented on its field.
///
/// In a settings document (feature `config`) a quota reads
/// `{ "rate": 500, "per": "1s", "burst": 1000 }`; see [`TierQuotas`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "config",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct RateLimitConfig {
    /// All AI calls together. Default: 500 a second, bursts of 1,000.
    #[cfg_attr(
        feature = "config",
        serde(deserialize_with = "crate::config_serde::quota")
    )]
    pub global_ai: Quota,
    /// AI calls per user. Default: free 10 a minute (bursts of 5), premium 60 (20),
    /// enterprise 600 (100).
    #[cfg_attr(feature = "config", serde(deserialize_with = "ai_tiers"))]
    pub ai_per_user: TierQuotas,
    /// API requests per user. Default: free 60 a minute (bursts of 30), premium 300
    /// (60), enterprise 1,200 (200).
    #[cfg_attr(feature = "config", serde(deserialize_with = "api_tiers"))]
    pub api_per_user: TierQuotas,
    /// Idle users' state is pruned every this many checks. Default: 10,000.
    pub prune_every: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            global_ai: Quota::per_second(NonZeroU32::new(500).expect("non-zero"))
                .allow_burst(NonZeroU32::new(1000).expect("non-zero")),
            ai_per_user: TierQuotas {
                free: per_minute(10, 5),
                premium: per_minute(60, 20),
                enterprise: per_minute(600, 100),
            },
            api_per_user: TierQuotas {
                free: per_minute(60, 30),
                premium: per_minute(300, 60),
                enterprise: per_minute(1200, 200),
            },
            prune_every: 10_000,
        }
    }
}

impl RateLimitConfig {
    /// Limits so high they never bite (a billion a second): for tests, benchmarks and
    /// hosts that limit elsewhere.
    pub fn unlimited() -> Self {
        let q = Quota::per_second(NonZeroU32::new(1_000_000_000).expect("non-zero"));
        let t = TierQuotas {
            free: q,
            premium: q,
            enterprise: q,
        };
        Self {
            global_ai: q,
            ai_per_user: t,
            api_per_user: t,
            prune_every: 10_000,
        }
    }
}

struct PerTier {
    free: Keyed,
    premium: Keyed,
    enterprise: Keyed,
}

impl PerTier {
    fn new(q: TierQuotas) -> Self {
        Self {
            free: RateLimiter::dashmap_with_clock(q.free, TokioClock),
            premium: RateLimiter::dashmap_with_clock(q.premium, TokioClock),
            enterprise: RateLimiter::dashmap_with_clock(q.enterprise, TokioClock),
        }
    }

    fn get(&self, t: SubscriptionTier) -> &Keyed {
        match t {
            SubscriptionTier::Free => &self.free,
            SubscriptionTier::Premium => &self.premium,
            SubscriptionTier::Enterprise => &self.enterprise,
        }
    }

    fn all(&self) -> [&Keyed; 3] {
        [&self.free, &self.premium, &self.enterprise]
    }
}

/// The rate limiters.
pub struct RateLimits {
    global_ai: Global,
    ai: PerTier,
    api: PerTier,
    prune_every: u64,
    checks: AtomicU64,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("tracked_users", &self.tracked())
            .finish_non_exhaustive()
    }
}

/// The refusal for a wait of `wait` (also [`RedisRateLimits`](super::RedisRateLimits)'s).
pub(super) fn limited(wait: Duration) -> Error {
    // Round up to whole milliseconds so a client that waits exactly this long succeeds.
    let ms = wait.as_nanos().div_ceil(1_000_000) as u64;
    Error::RateLimited {
        retry_after: Duration::from_millis(ms.max(1)),
    }
}

impl RateLimits {
    /// Limiters with `config`.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            global_ai: Global::new(config.global_ai),
            ai: PerTier::new(config.ai_per_user),
            api: PerTier::new(config.api_per_user),
            prune_every: config.prune_every.max(1),
            checks: AtomicU64::new(0),
        }
    }

    fn check(&self, limiter: &Keyed, user: UserId) -> Result<()> {
        if self.checks.fetch_add(1, Relaxed) % self.prune_every == self.prune_every - 1 {
            self.prune();
        }
        limiter
            .check_key(&user)
            .map_err(|n| limited(n.wait_time_from(TokioClock.now())))
    }

    /// Admits one AI call for `user`, or says how long to wait. A refusal uses up
    /// nothing: the global allowance is taken first and given back when the user's
    /// own limit refuses, and a global refusal never reaches the user's limiter.
    ///
    /// # Errors
    /// [`Error::RateLimited`].
    pub fn check_ai(&self, user: UserId, tier: SubscriptionTier) -> Result<()> {
        self.global_ai.take().map_err(limited)?;
        self.check(self.ai.get(tier), user).inspect_err(|_| {
            self.global_ai.give_back();
        })
    }

    /// Admits one API request for `user`, or says how long to wait.
    ///
    /// # Errors
    /// [`Error::RateLimited`].
    pub fn check_api(&self, user: UserId, tier: SubscriptionTier) -> Result<()> {
        self.check(self.api.get(tier), user)
    }

    /// Drops the state of users whose allowance is full again (they would be admitted
    /// as if new), and returns the memory. Runs every `prune_every` checks by itself.
    pub fn prune(&self) {
        for l in self.ai.all().into_iter().chain(self.api.all()) {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Users with state in any limiter now.
    pub fn tracked(&self) -> usize {
        self.ai
            .all()
            .iter()
            .chain(self.api.all().iter())
            .map(|l| l.len())
            .sum()
    }
}
