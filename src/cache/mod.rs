//! Key → bytes caching with a TTL: the [`Cache`] trait, [`MemoryCache`] (sharded
//! `lru` with per-entry expiry, bounded by entries and bytes), `RedisCache`
//! (feature `redis`: one cache shared by every instance), and [`CachedRepository`],
//! read-through caching of [`Repository`](crate::Repository) reads that a write to
//! the same user's data invalidates.

mod memory;
#[cfg(feature = "redis")]
mod redis;
mod repository;

#[cfg(feature = "redis")]
pub use self::redis::{RedisCache, RedisCacheBuilder};
pub use memory::{MemoryCache, MemoryCacheBuilder};
pub use repository::CachedRepository;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A key → bytes cache with per-entry expiry. Object safe: hosts hold an
/// `Arc<dyn Cache>`. An I/O trait (a shared, e.g. Redis-backed, cache implements it
/// too), so every call is async and may fail.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The value under `key`, if present and not expired.
    ///
    /// # Errors
    /// `Backend` when a remote cache fails; the in-memory cache never fails.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;

    /// Stores `value` under `key` for `ttl` (`None`: the cache's default TTL).
    ///
    /// # Errors
    /// `InvalidInput` for a value larger than the cache can ever hold; `Backend`.
    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()>;

    /// Removes `key`; returns whether it was present.
    ///
    /// # Errors
    /// `Backend` when a remote cache fails.
    async fn remove(&self, key: &str) -> Result<bool>;

    /// Counters since the cache was created.
    fn stats(&self) -> CacheStats;
}

fn _object_safe(_: &dyn Cache) {}

#[async_trait]
impl<C: Cache + ?Sized> Cache for Arc<C> {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        (**self).get(key).await
    }
    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        (**self).set(key, value, ttl).await
    }
    async fn remove(&self, key: &str) -> Result<bool> {
        (**self).remove(key).await
    }
    fn stats(&self) -> CacheStats {
        (**self).stats()
    }
}

/// A cache's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that found nothing (expired entries included).
    pub misses: u64,
    /// Entries pushed out to respect the entry or byte bound.
    pub evictions: u64,
    /// Entries found expired (and dropped) on lookup.
    pub expirations: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now (keys and values).
    pub bytes: u64,
}

impl CacheStats {
    /// `hits ÷ (hits + misses)`; 0 before the first lookup.
    pub fn hit_rate(&self) -> f64 {
        let n = self.hits + self.misses;
        if n == 0 {
            0.0
        } else {
            self.hits as f64 / n as f64
        }
    }
}
