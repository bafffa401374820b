//! [`RedisCache`] (feature `redis`): the [`Cache`] trait over Redis, so every instance
//! of the host's server shares one query cache.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Cache, CacheStats};
use crate::error::{Error, Result};

/// A [`Cache`] held in Redis and shared by every instance that uses the same Redis
/// and key prefix. Through [`CachedRepository`](super::CachedRepository), a write on
/// one instance invalidates what every other instance cached of that user's data.
///
/// - **Keys** are `<prefix>:<key>`; one prefix per deployment (two deployments with
///   different data must not share one, or they serve each other's entries).
/// - **Expiry** is Redis' own: `SET … PX <ttl>`; `remove` is `DEL`.
/// - **Size**: a value over [`max_value_bytes`](RedisCacheBuilder::max_value_bytes) is
///   refused with [`Error::InvalidInput`]. The cache as a whole is bounded by Redis,
///   not here: set `maxmemory` and an eviction policy (`allkeys-lru` or
///   `volatile-lru`; every key this cache writes has a TTL) on the server. Without
///   them Redis grows until it refuses writes, which this cache reports as
///   [`Error::Backend`].
/// - **Failures**: every call waits at most [`timeout`](RedisCacheBuilder::timeout)
///   (default 100 ms); a Redis that errs, is unreachable or answers late is an
///   [`Error::Backend`] (retryable), never a hang. The connection
///   ([`redis::aio::ConnectionManager`]) is made lazily and re-made by the `redis`
///   crate after a failure.
/// - **Stats** are this instance's own: hits and misses of its `get`s, and its
///   failed calls ([`RedisCache::errors`]). `entries`, `bytes`, `evictions` and
///   `expirations` stay 0: Redis knows them for all instances together (`INFO
///   keyspace`, `INFO stats`), not per prefix, so they are not reported as this
///   cache's.
///
/// - **Persistence and replicas**: run this cache's Redis without persistence
///   (`save ""`, `appendonly no`) and without failing over to replicas. A Redis
///   restored from a snapshot or an append-only file, or a replica that lags, brings
///   back generations a write had replaced — and with them values older than that
///   write (`tests/review13b_redis_restart.rs`, ignored: a known gap).
///
/// Redis Cluster is not supported. Its `Debug` shows the prefix and settings, never
/// the URL (which may hold a password).
pub struct RedisCache {
    conn: ConnectionManager,
    prefix: String,
    default_ttl: Duration,
    max_value_bytes: usize,
    timeout: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .field("default_ttl", &self.default_ttl)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("timeout", &self.timeout)
            .field("stats", &self.stats())
            .field("errors", &self.errors())
            .finish_non_exhaustive()
    }
}

/// Builder for [`RedisCache`]; every setter has the documented default. Its `Debug`
/// never shows the URL.
#[must_use]
pub struct RedisCacheBuilder {
    url: String,
    prefix: String,
    default_ttl: Duration,
    max_value_bytes: usize,
    timeout: Duration,
}

impl std::fmt::Debug for RedisCacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCacheBuilder")
            .field("prefix", &self.prefix)
            .field("default_ttl", &self.default_ttl)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisCacheBuilder {
    /// Key prefix: every key is `<prefix>:<key>`. 1 to 64 ASCII letters, digits,
    /// `-`, `_`, `.` or `:`. Default: `"kasama"`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// TTL of entries set without one. Default: 300 s.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Largest value `set` accepts, in bytes (the key not counted). Default: 1 MiB.
    pub fn max_value_bytes(mut self, n: usize) -> Self {
        self.max_value_bytes = n;
        self
    }

    /// Longest wait for Redis per call (connecting included). Default: 100 ms.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// The cache. Connects lazily: a Redis that is down now fails calls later (each
    /// after at most the timeout), not this.
    ///
    /// # Errors
    /// `InvalidInput` naming `url` when it is not a `redis://`/`rediss://` URL (the
    /// error never quotes it), `prefix` when it breaks the rule above,
    /// `default_ttl`/`timeout` when zero, `max_value_bytes` when zero or over Redis'
    /// limit of 512 MiB; `Config` when called outside a Tokio runtime.
    pub fn build(self) -> Result<RedisCache> {
        if self.prefix.is_empty()
            || self.prefix.len() > 64
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(Error::invalid(
                "prefix",
                "1 to 64 ASCII letters, digits, '-', '_', '.' or ':'",
            ));
        }
        if self.default_ttl.is_zero() {
            return Err(Error::invalid("default_ttl", "must be positive"));
        }
        if self.timeout.is_zero() {
            return Err(Error::invalid("timeout", "must be positive"));
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > 512 * 1024 * 1024 {
            return Err(Error::invalid(
                "max_value_bytes",
                format!("{}, must be 1 to 512 MiB", self.max_value_bytes),
            ));
        }
        // The connection manager spawns its task at once: without a runtime it would
        // panic.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Config {
                what: "redis cache".into(),
                reason: "build it inside a Tokio runtime (it starts a connection task)".into(),
            });
        }
        // The parse error may quote the URL (and its password): not passed on.
        let client = redis::Client::open(self.url.as_str())
            .map_err(|_| Error::invalid("url", "not a redis:// or rediss:// URL"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| {
            Error::Backend {
                what: "redis cache".into(),
                retryable: false,
                source: format!("{:?}", e.kind()).into(),
            }
        })?;
        Ok(RedisCache {
            conn,
            prefix: self.prefix,
            default_ttl: self.default_ttl,
            max_value_bytes: self.max_value_bytes,
            timeout: self.timeout,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }
}

impl RedisCache {
    /// A cache in Redis at `url` (`redis://[:password@]host:port[/db]`) with the
    /// defaults: prefix `"kasama"`, TTL 300 s, values up to 1 MiB, 100 ms per call.
    ///
    /// # Errors
    /// As [`RedisCacheBuilder::build`].
    pub fn connect(url: &str) -> Result<Self> {
        Self::builder(url).build()
    }

    /// A builder for the cache at `url`, to set the prefix, TTL, size limit and
    /// timeout.
    pub fn builder(url: &str) -> RedisCacheBuilder {
        RedisCacheBuilder {
            url: url.to_string(),
            prefix: "kasama".into(),
            default_ttl: Duration::from_secs(300),
            max_value_bytes: 1024 * 1024,
            timeout: Duration::from_millis(100),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Calls of this instance that failed (Redis erred, was unreachable or late).
    pub fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }

    /// The last failure of this instance, if any (never holds the URL).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + 1 + key.len());
        k.push_str(&self.prefix);
        k.push(':');
        k.push_str(key);
        k
    }

    /// Runs one command within the timeout; a failure becomes a retryable `Backend`.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        let mut conn = self.conn.clone();
        let why = match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => return Ok(v),
            // Kind and server message; a RedisError never holds the URL.
            Ok(Err(e)) => format!("redis: {e}"),
            Err(_) => format!("redis: no answer within {:?}", self.timeout),
        };
        self.errors.fetch_add(1, Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
        Err(Error::Backend {
            what: "redis cache".into(),
            retryable: true,
            source: why.into(),
        })
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let v: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(self.key(key))).await?;
        match &v {
            Some(_) => self.hits.fetch_add(1, Relaxed),
            None => self.misses.fetch_add(1, Relaxed),
        };
        Ok(v.map(Bytes::from))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        let ttl = ttl.unwrap_or(self.default_ttl);
        if ttl.is_zero() {
            return Err(Error::invalid("ttl", "must be positive"));
        }
        if value.len() > self.max_value_bytes {
            return Err(Error::invalid(
                "value",
                format!(
                    "{} bytes, more than the {} this cache holds",
                    value.len(),
                    self.max_value_bytes
                ),
            ));
        }
        // Whole milliseconds, rounded up: a TTL under 1 ms still expires.
        let ms = u64::try_from(ttl.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        // Redis refuses an expiry past i64 milliseconds from now; cap far below.
        let ms = ms.min(u64::from(u32::MAX) * 1000);
        self.run::<()>(
            redis::cmd("SET")
                .arg(self.key(key))
                .arg(&value[..])
                .arg("PX")
                .arg(ms),
        )
        .await
    }

    async fn remove(&self, key: &str) -> Result<bool> {
        let n: u64 = self.run(redis::cmd("DEL").arg(self.key(key))).await?;
        Ok(n > 0)
    }

    fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            ..CacheStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_runtime_build_is_an_error_not_a_panic() {
        let e = RedisCache::connect("redis://127.0.0.1:6379").unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn bad_settings_are_refused_naming_the_field() {
        let url = "redis://127.0.0.1:6379";
        for p in ["", "has space", &"x".repeat(65), "ünï"] {
            let e = RedisCache::builder(url).prefix(p).build().unwrap_err();
            assert_eq!(e.invalid_field(), Some("prefix"), "{p:?}");
        }
        let e = RedisCache::builder(url)
            .default_ttl(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(e.invalid_field(), Some("default_ttl"));
        let e = RedisCache::builder(url)
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(e.invalid_field(), Some("timeout"));
        for n in [0, 512 * 1024 * 1024 + 1] {
            let e = RedisCache::builder(url)
                .max_value_bytes(n)
                .build()
                .unwrap_err();
            assert_eq!(e.invalid_field(), Some("max_value_bytes"));
        }
        let e = RedisCache::connect("http://user:hunter2@host").unwrap_err();
        assert_eq!(e.invalid_field(), Some("url"));
        assert!(!format!("{e} {e:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn keys_carry_the_prefix() {
        let c = RedisCache::builder("redis://127.0.0.1:6379")
            .prefix("dep-1")
            .build()
            .unwrap();
        assert_eq!(c.key("kasama:gen:u:1"), "dep-1:kasama:gen:u:1");
        assert_eq!(c.prefix(), "dep-1");
    }
}
