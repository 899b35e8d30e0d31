//! Stores shared between processes and hosts: the payload format, the
//! circuit breaker, the store trait, the Redis store, and the lifecycle on
//! top of them.

mod breaker;
mod cache;
#[cfg(feature = "redis")]
pub mod cluster;
#[cfg(all(feature = "redis", unix))]
mod cluster_lookup;
#[cfg(all(feature = "redis", unix))]
pub mod lookup;
pub mod near;
mod payload;
#[cfg(feature = "redis")]
mod pool;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod sentinel;
pub mod spin;
mod store;
#[cfg(all(feature = "redis", unix))]
mod tracking;
#[cfg(feature = "redis")]
mod url;

pub use breaker::Breaker;
pub use cache::{
    Answer, Handoff, NearMode, Peeked, Produced, SharedCache, SharedError, SharedOptions,
    SharedStats,
};
#[cfg(feature = "redis")]
pub use cluster::ClusterStore;
pub use near::{NearCache, NearCounts, NearEntry, NearStats, Ticket};
pub use payload::{Decoded, Generations, Rejected, Signer};
#[cfg(feature = "redis")]
pub use redis::{fetch_command, fetched_from, RedisConfig, RedisStore};
#[cfg(feature = "redis")]
pub use sentinel::SentinelStore;
pub use store::{fresh_epoch, parse_epoch, Fetched, KeySet, SharedStore, StoreError, EPOCH_LIMIT};
