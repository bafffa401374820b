//! [`RedisRateLimits`] (feature `redis`): the limits of [`RateLimits`] held in Redis,
//! so that every instance of the host's server draws on one allowance per user.
//!
//! Each check is one call of one Lua script (GCRA, the algorithm governor uses): it
//! reads Redis' own clock, tests the user's key and — for AI calls — the global key,
//! and updates both only when both admit, so a refusal uses up nothing and there is
//! no read-then-write race between instances. Keys are
//! `<prefix>:rl:<ai|api>:<tier>:<user>` and `<prefix>:rl:ai:global`, and expire when
//! their allowance is full again.
//!
//! **When Redis is unreachable** (an error, or no answer within
//! [`RedisRateLimits::timeout`]) the check falls back to this instance's own
//! [`RateLimits`] with the same quotas — requests keep flowing, but each instance
//! then admits a full allowance, so N instances admit up to N times the limit — and
//! the limiter reports itself degraded ([`SharedLimitStatus`]) until Redis answers
//! again. After a failure Redis is not asked again for [`RedisRateLimits::cooldown`]
//! (default 1 s), so an outage costs one timeout, not one per request. A check never
//! returns a Redis error and never waits longer than the timeout.
//!
//! Redis Cluster is not supported (the user's and the global key sit in different
//! hash slots).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use governor::Quota;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

use super::limits::{RateLimitConfig, RateLimits, limited};
use crate::domain::{SubscriptionTier, UserId};
use crate::error::{Error, Result};

/// GCRA over one or two keys, on Redis' clock (microseconds). KEYS[1]: the user's key;
/// KEYS[2] (optional): the global key. ARGV: the user's interval and tolerance, then the
/// global's. Returns -1 when admitted (both keys advanced), else the wait in µs.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function probe(key, interval, tol)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  if tat - now > tol then return tat, tat - now - tol end
  return tat, -1
end
local ui, ut = tonumber(ARGV[1]), tonumber(ARGV[2])
local utat, wait = probe(KEYS[1], ui, ut)
local gtat = 0
if #KEYS > 1 then
  local gwait
  gtat, gwait = probe(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
  if gwait > wait then wait = gwait end
end
if wait >= 0 then return math.max(1, math.ceil(wait)) end
local unew = utat + ui
redis.call('SET', KEYS[1], string.format('%.0f', unew), 'PX', math.floor((unew - now) / 1000) + 1)
if #KEYS > 1 then
  local gnew = gtat + tonumber(ARGV[3])
  redis.call('SET', KEYS[2], string.format('%.0f', gnew), 'PX', math.floor((gnew - now) / 1000) + 1)
end
return -1
";

/// How [`RedisRateLimits`] is doing: checks decided in Redis, checks that fell back
/// to the local limiter, and whether it is degraded now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedLimitStatus {
    /// Checks decided by Redis.
    pub shared: u64,
    /// Checks decided by the local fallback because Redis failed or was cooling down.
    pub fallbacks: u64,
    /// Whether the last attempt to reach Redis failed (the limits are per instance
    /// until it answers again). A health check should alert on it.
    pub degraded: bool,
    /// The last Redis failure, if degraded (never holds the connection string).
    pub last_error: Option<String>,
}

/// A quota as GCRA parameters in microseconds: (interval, tolerance).
fn gcra(q: Quota) -> (u64, u64) {
    let interval = u64::try_from(q.replenish_interval().as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    let burst = u64::from(q.burst_size().get());
    (interval, interval.saturating_mul(burst - 1))
}

/// Rate limits shared by every instance through Redis, with a local fallback — see
/// the module docs. Its `Debug` shows the key prefix and status, never the URL.
pub struct RedisRateLimits {
    conn: ConnectionManager,
    script: redis::Script,
    config: RateLimitConfig,
    prefix: String,
    timeout: Duration,
    cooldown: Duration,
    local: RateLimits,
    shared: AtomicU64,
    fallbacks: AtomicU64,
    /// Set after a failure: Redis is not asked before this instant.
    down: Mutex<Option<(Instant, String)>>,
}

impl std::fmt::Debug for RedisRateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimits")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// Default longest wait for Redis per check.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);

impl RedisRateLimits {
    /// Limits with `config`, in Redis at `url` (`redis://[:password@]host:port[/db]`),
    /// keys under `prefix` (one per deployment, e.g. `"kasama-prod"`). Connects
    /// lazily: a Redis that is down now is a fallback later, not an error here.
    ///
    /// # Errors
    /// `InvalidInput` naming `url` when it cannot be parsed, or `prefix` when it is
    /// empty, longer than 64 bytes or holds anything but ASCII letters, digits, `-`,
    /// `_`, `.` and `:`; `Config` outside a tokio runtime.
    pub fn new(url: &str, prefix: &str, config: RateLimitConfig) -> Result<Self> {
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(Error::invalid(
                "prefix",
                "1 to 64 ASCII letters, digits, '-', '_', '.' or ':'",
            ));
        }
        // The parse error may quote the URL (and its password): not passed on.
        let client = redis::Client::open(url)
            .map_err(|_| Error::invalid("url", "not a redis:// or rediss:// URL"))?;
        // The connection manager runs as a task: outside a runtime it would panic.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Config {
                what: "redis rate limits".into(),
                reason: "build them inside a tokio runtime".into(),
            });
        }
        let timeout = DEFAULT_REDIS_TIMEOUT;
        let conn = ConnectionManager::new_lazy_with_config(client, Self::manager(timeout))
            .map_err(|e| Error::Backend {
                what: "redis".into(),
                retryable: false,
                source: e.to_string().into(),
            })?;
        Ok(Self {
            conn,
            script: redis::Script::new(GCRA),
            local: RateLimits::new(config),
            config,
            prefix: prefix.to_string(),
            timeout,
            cooldown: Duration::from_secs(1),
            shared: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            down: Mutex::new(None),
        })
    }

    fn manager(timeout: Duration) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100))
    }

    /// The longest wait for Redis per check before falling back (default 50 ms).
    /// A zero duration keeps the default.
    #[must_use]
    pub fn timeout(mut self, t: Duration) -> Self {
        if !t.is_zero() {
            self.timeout = t;
        }
        self
    }

    /// How long after a failure checks go straight to the local fallback before Redis
    /// is tried again (default 1 s).
    #[must_use]
    pub fn cooldown(mut self, t: Duration) -> Self {
        self.cooldown = t;
        self
    }

    /// Admits one AI call for `user` across all instances, or says how long to wait.
    /// A refusal uses up nothing of the global allowance.
    ///
    /// # Errors
    /// [`Error::RateLimited`] only (a Redis failure falls back, see the module docs).
    pub async fn check_ai(&self, user: UserId, tier: SubscriptionTier) -> Result<()> {
        let (ui, ut) = gcra(self.config.ai_per_user.of(tier));
        let (gi, gt) = gcra(self.config.global_ai);
        let keys = [
            format!("{}:rl:ai:{}:{}", self.prefix, tier.as_str(), user.0),
            format!("{}:rl:ai:global", self.prefix),
        ];
        match self.shared_check(&keys, &[ui, ut, gi, gt]).await {
            Some(r) => r,
            None => self.local.check_ai(user, tier),
        }
    }

    /// Admits one API request for `user` across all instances, or says how long to
    /// wait.
    ///
    /// # Errors
    /// [`Error::RateLimited`] only.
    pub async fn check_api(&self, user: UserId, tier: SubscriptionTier) -> Result<()> {
        let (ui, ut) = gcra(self.config.api_per_user.of(tier));
        let keys = [format!(
            "{}:rl:api:{}:{}",
            self.prefix,
            tier.as_str(),
            user.0
        )];
        match self.shared_check(&keys, &[ui, ut]).await {
            Some(r) => r,
            None => self.local.check_api(user, tier),
        }
    }

    /// The decision from Redis, or `None` to fall back.
    async fn shared_check(&self, keys: &[String], args: &[u64]) -> Option<Result<()>> {
        {
            let down = self.down.lock().unwrap_or_else(|e| e.into_inner());
            if down
                .as_ref()
                .is_some_and(|(until, _)| Instant::now() < *until)
            {
                self.fallbacks.fetch_add(1, Relaxed);
                return None;
            }
        }
        let mut inv = self.script.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        for a in args {
            inv.arg(*a);
        }
        let mut conn = self.conn.clone();
        let answer = tokio::time::timeout(self.timeout, inv.invoke_async::<i64>(&mut conn)).await;
        let failure = match answer {
            Ok(Ok(wait)) => {
                self.shared.fetch_add(1, Relaxed);
                *self.down.lock().unwrap_or_else(|e| e.into_inner()) = None;
                return Some(if wait < 0 {
                    Ok(())
                } else {
                    Err(limited(Duration::from_micros(wait.unsigned_abs())))
                });
            }
            Ok(Err(e)) => format!("redis: {:?}", e.kind()),
            Err(_) => format!("redis: no answer within {:?}", self.timeout),
        };
        tracing::warn!(error = %failure, "rate limits: Redis failed; this instance's own limits apply");
        self.fallbacks.fetch_add(1, Relaxed);
        *self.down.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now() + self.cooldown, failure));
        None
    }

    /// Checks decided in Redis and by the fallback, and whether it is degraded now.
    pub fn status(&self) -> SharedLimitStatus {
        let down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        SharedLimitStatus {
            shared: self.shared.load(Relaxed),
            fallbacks: self.fallbacks.load(Relaxed),
            degraded: down.is_some(),
            last_error: down.as_ref().map(|(_, e)| e.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    #[test]
    fn quotas_become_gcra_parameters_in_microseconds() {
        let q = Quota::per_minute(NonZeroU32::new(10).unwrap())
            .allow_burst(NonZeroU32::new(5).unwrap());
        assert_eq!(gcra(q), (6_000_000, 24_000_000));
        let fast = Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap());
        assert_eq!(gcra(fast).0, 1, "never a zero interval");
    }

    #[test]
    fn bad_prefixes_and_urls_are_refused_naming_the_field() {
        let c = RateLimitConfig::default();
        for p in ["", "has space", &"x".repeat(65), "ünï"] {
            let e = RedisRateLimits::new("redis://127.0.0.1:6379", p, c).unwrap_err();
            assert_eq!(e.invalid_field(), Some("prefix"), "{p:?}");
        }
        let e = RedisRateLimits::new("http://user:hunter2@host", "p", c).unwrap_err();
        assert_eq!(e.invalid_field(), Some("url"));
        assert!(!e.to_string().contains("hunter2"));
    }
}
