#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod agent;
pub mod cache;
pub mod context;
pub mod domain;
pub mod error;
mod feed;
pub mod health;
pub mod metrics;
pub mod pipeline;
pub mod realtime;
pub mod repository;
pub mod semantic;
pub mod semantic_store;
#[cfg(feature = "server")]
pub mod server;
mod text;

#[cfg(feature = "config")]
mod config_serde;

pub use agent::{AiAgent, AiRequest, AiResponse, SimulatedAgent};
#[cfg(feature = "redis")]
pub use cache::RedisCache;
pub use cache::{Cache, CachedRepository, MemoryCache};
pub use context::ContextProvider;
pub use error::{Error, Result};
pub use pipeline::AiPipeline;
pub use repository::{InMemoryRepository, PgConfig, PgRepository, Repository};

/// Re-exported: cache values are `bytes::Bytes`.
pub use bytes;
/// Re-exported so hosts use the same versions as kasama's public API.
pub use deadpool_postgres;
/// Re-exported so hosts use the same versions as kasama's public API.
pub use tokio_postgres;

/// The names most hosts need, in one import.
pub mod prelude {
    pub use crate::agent::{AiAgent, AiRequest, AiResponse, ModelParams, SimulatedAgent, Usage};
    pub use crate::cache::{Cache, CacheStats, CachedRepository, MemoryCache};
    pub use crate::context::ContextProvider;
    pub use crate::domain::*;
    pub use crate::error::{Error, Result};
    pub use crate::pipeline::{AiOutcome, AiPipeline};
    pub use crate::repository::{InMemoryRepository, PgConfig, PgRepository, Repository};
}
