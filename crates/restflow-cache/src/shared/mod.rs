//! Stores shared between processes and hosts: the payload format, the
//! circuit breaker, the store trait, the Redis store, and the lifecycle on
//! top of them.

pub mod backend;
mod background;
mod breaker;
mod cache;
#[cfg(feature = "redis")]
pub mod cluster;
#[cfg(all(feature = "redis", unix))]
mod cluster_lookup;
#[cfg(all(feature = "redis", unix))]
mod cluster_near;
mod codec;
mod counted;
mod decode;
#[cfg(all(feature = "redis", unix))]
mod follow;
pub mod hot;
pub mod keyspace;
pub mod kv;
mod lead;
#[cfg(all(feature = "redis", unix))]
mod lookup;
#[cfg(all(feature = "redis", unix))]
pub mod loop_conn;
pub mod near;
mod payload;
#[cfg(feature = "redis")]
mod pool;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod sentinel;
#[cfg(all(feature = "redis", unix))]
mod sentinel_near;
pub mod settings;
#[cfg(feature = "redis")]
mod spin;
pub mod steps;
mod store;
#[cfg(all(feature = "redis", unix))]
mod tracking;
pub mod unfaithful;
#[cfg(feature = "redis")]
mod url;
mod warn;

pub use backend::{Backend, BackendSettings};
pub use background::{RefreshClaim, Refreshed};
pub use breaker::Breaker;
pub use cache::{
    Answer, Handoff, NearMode, Peeked, Produced, SharedCache, SharedError, SharedOptions,
    SharedStats,
};
#[cfg(feature = "redis")]
pub use cluster::ClusterStore;
pub use codec::{Codec, Policy, Refusal, Serializes, Skipped};
pub use counted::count_near_hit;
pub use decode::{Served, Undecodable};
pub use hot::{Hot, HotCache};
pub use keyspace::{FunctionKeys, KeySpace};
pub use kv::{KvCache, KvStore, KvValue, KvWrite, LONGEST_NAME};
pub use lead::{HeldRefresh, SharedLead};
/// For the Python bindings' event-loop socket only; not part of the API.
#[cfg(all(feature = "redis", unix))]
#[doc(hidden)]
pub use lookup::connect_tcp;
pub use near::{Epoch, NearCache, NearCounts, NearEntry, NearStats, Ticket};
pub use payload::{Decoded, Generations, Rejected, Signer};
#[cfg(feature = "redis")]
pub use redis::{fetch_command, fetched_from, RedisConfig, RedisStore};
#[cfg(feature = "redis")]
pub use sentinel::SentinelStore;
pub use steps::{Begin, ComputeClaim, OwnedClaim};
pub use store::{
    fresh_epoch, parse_epoch, Fetched, Holder, KeySet, SharedStore, StoreError, Written,
    EPOCH_LIMIT,
};
pub use warn::WarnLog;
