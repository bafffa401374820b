//! [`MemoryCache`]: sharded `lru` maps with per-entry expiry.

use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use lru::LruCache;
use tokio::time::Instant;

use super::{Cache, CacheStats};
use crate::error::{Error, Result};

/// An in-process [`Cache`]: `shards` independent `lru::LruCache`s behind their own
/// mutexes (a key's shard is picked by its hash), each entry with its own expiry on
/// tokio's clock (so paused-time tests drive it). Bounded by entries and by bytes
/// (key + value); when a bound is hit the shard's least recently used entries go.
///
/// Lookups never wait on I/O; a lock is held only for the map operation.
#[derive(Debug)]
pub struct MemoryCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: lru::DefaultHasher,
    default_ttl: Duration,
    shard_bytes: usize,
}

#[derive(Debug)]
struct Shard {
    map: LruCache<Box<str>, Entry>,
    bytes: usize,
    // Counted under the shard's lock: no shared atomics for threads to fight over.
    hits: u64,
    misses: u64,
    evictions: u64,
    expirations: u64,
}

#[derive(Debug)]
struct Entry {
    value: Bytes,
    expires: Instant,
}

fn cost(key: &str, value: &Bytes) -> usize {
    key.len() + value.len()
}

/// Builder for [`MemoryCache`]; every setter has the documented default.
#[derive(Clone, Debug)]
#[must_use]
pub struct MemoryCacheBuilder {
    max_entries: usize,
    max_bytes: usize,
    shards: usize,
    default_ttl: Duration,
}

impl Default for MemoryCacheBuilder {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
            shards: 16,
            default_ttl: Duration::from_secs(300),
        }
    }
}

impl MemoryCacheBuilder {
    /// Most entries held. Default: 10,000.
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }

    /// Most bytes (keys + values) held. Default: 64 MiB.
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n;
        self
    }

    /// Number of independently locked shards. Default: 16.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n;
        self
    }

    /// TTL of entries set without one. Default: 300 s.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// # Errors
    /// `InvalidInput` when a bound or the shard count is 0, when there are more shards
    /// than entries, or for a zero TTL.
    pub fn build(self) -> Result<MemoryCache> {
        if self.shards == 0 || self.shards > self.max_entries {
            return Err(Error::invalid(
                "shards",
                "must be between 1 and max_entries",
            ));
        }
        if self.max_bytes < self.shards {
            return Err(Error::invalid(
                "max_bytes",
                "must be at least one byte per shard",
            ));
        }
        if self.default_ttl.is_zero() {
            return Err(Error::invalid("default_ttl", "must be positive"));
        }
        let per_shard = NonZeroUsize::new(self.max_entries.div_ceil(self.shards))
            .expect("max_entries >= shards >= 1");
        Ok(MemoryCache {
            shards: (0..self.shards)
                .map(|_| {
                    Mutex::new(Shard {
                        map: LruCache::new(per_shard),
                        bytes: 0,
                        hits: 0,
                        misses: 0,
                        evictions: 0,
                        expirations: 0,
                    })
                })
                .collect(),
            hasher: Default::default(),
            default_ttl: self.default_ttl,
            shard_bytes: self.max_bytes / self.shards,
        })
    }
}

impl Default for MemoryCache {
    fn default() -> Self {
        MemoryCacheBuilder::default()
            .build()
            .expect("defaults are valid")
    }
}

impl MemoryCache {
    /// A cache with the defaults: 10,000 entries, 64 MiB, 16 shards, TTL 300 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder to set bounds, shards and the default TTL.
    pub fn builder() -> MemoryCacheBuilder {
        MemoryCacheBuilder::default()
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) % self.shards.len() as u64) as usize;
        // A panic inside a shard operation cannot leave it inconsistent in a way
        // that matters for a cache; keep serving.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value under `key`, synchronously (the same as [`Cache::get`]).
    pub fn get_now(&self, key: &str) -> Option<Bytes> {
        let now = Instant::now();
        let mut s = self.shard(key);
        let found = match s.map.get(key) {
            Some(e) if e.expires > now => Some(e.value.clone()),
            Some(_) => {
                let (k, e) = s.map.pop_entry(key).expect("present");
                s.bytes -= cost(&k, &e.value);
                s.expirations += 1;
                None
            }
            None => None,
        };
        match &found {
            Some(_) => s.hits += 1,
            None => s.misses += 1,
        };
        found
    }

    /// Stores `value` under `key`, synchronously (the same as [`Cache::set`]).
    ///
    /// # Errors
    /// `InvalidInput` when the entry alone exceeds a shard's byte budget
    /// (`max_bytes / shards`), or for a zero TTL.
    pub fn set_now(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        let ttl = ttl.unwrap_or(self.default_ttl);
        if ttl.is_zero() {
            return Err(Error::invalid("ttl", "must be positive"));
        }
        let c = cost(key, &value);
        if c > self.shard_bytes {
            return Err(Error::invalid(
                "value",
                format!(
                    "{c} bytes, more than the {} a shard holds",
                    self.shard_bytes
                ),
            ));
        }
        // A TTL past what the clock can hold is "as long as possible" (a year), not a
        // panic.
        let now = Instant::now();
        let expires = now
            .checked_add(ttl)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 86_400));
        let mut s = self.shard(key);
        if let Some((k, old)) = s.map.push(key.into(), Entry { value, expires }) {
            s.bytes -= cost(&k, &old.value);
            if &*k != key {
                s.evictions += 1;
            }
        }
        s.bytes += c;
        while s.bytes > self.shard_bytes {
            let Some((k, old)) = s.map.pop_lru() else {
                break;
            };
            s.bytes -= cost(&k, &old.value);
            s.evictions += 1;
        }
        Ok(())
    }

    /// Removes `key`, synchronously.
    pub fn remove_now(&self, key: &str) -> bool {
        let mut s = self.shard(key);
        match s.map.pop_entry(key) {
            Some((k, e)) => {
                s.bytes -= cost(&k, &e.value);
                true
            }
            None => false,
        }
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.get_now(key))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        self.set_now(key, value, ttl)
    }

    async fn remove(&self, key: &str) -> Result<bool> {
        Ok(self.remove_now(key))
    }

    fn stats(&self) -> CacheStats {
        let mut st = CacheStats::default();
        for s in self.shards.iter() {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            st.entries += s.map.len() as u64;
            st.bytes += s.bytes as u64;
            st.hits += s.hits;
            st.misses += s.misses;
            st.evictions += s.evictions;
            st.expirations += s.expirations;
        }
        st
    }
}
