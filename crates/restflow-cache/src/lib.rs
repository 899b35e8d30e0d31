//! # restflow-cache
//!
//! The engine behind restflow, a result cache for Django REST Framework
//! services, usable on its own from Rust.
//!
//! An [`Engine`] serves values by key through the lifecycle of a cached
//! result:
//!
//! * **fresh** (`now < cached_at + ttl`): served as [`Status::Hit`];
//! * **stale** (inside the stale-while-revalidate window that follows): served
//!   at once as [`Status::Stale`] while exactly one background refresh runs on
//!   the engine's [`Refresher`];
//! * **expired** or absent: computed once ([`SingleFlight`]) while every
//!   concurrent caller for the same key waits for that one computation and
//!   gets its value or its error ([`Status::Miss`]).
//!
//! An entry stored with early refresh ([`Lifetime::refreshing_early`]) is
//! also refreshed in the background while still fresh, by the one reader
//! whose draw says so ([`early`]: XFetch, weighted by the compute time the
//! engine measured), and that reader is served a [`Status::Hit`].
//!
//! Time comes from one injectable [`Clock`], so tests freeze and advance it
//! instead of sleeping. Keys are the canonical, type-tagged bytes written by
//! [`key::KeyWriter`]; [`key::render`] and [`key::compose`] turn them into
//! stable key strings. Entries live in a [`Store`]; [`MemoryStore`] is the
//! bounded in-process one. Invalidation is by [`Scope`] generations, so it
//! costs the same at any number of entries.
//!
//! The same lifecycle across processes and hosts is [`shared::SharedCache`]
//! over a [`shared::SharedStore`] such as [`shared::RedisStore`] (feature
//! `redis`, on by default; feature `tls`, also on by default, adds
//! `rediss://` URLs over rustls): entries are signed, carry the generations they
//! were computed under, and one process computes a missing key while the
//! others wait for it.
//!
//! ## Examples
//!
//! The crate's `examples/` directory holds two complete programs:
//!
//! * `memory`: an [`Engine`] over [`MemoryStore`] on a frozen clock: MISS,
//!   HIT, STALE with a background refresh once the clock is advanced, and a
//!   MISS after invalidating the scope.
//!   `cargo run -p restflow-cache --example memory`
//! * `redis_two_processes`: a [`shared::SharedCache`] over Redis used by two
//!   processes (the program starts a second copy of itself): one process's
//!   stored value is the other's HIT, and an invalidation in one is seen by
//!   the other. Its keys are named by [`shared::KeySpace`], the schema
//!   every restflow process shares (entries, locks, generation counters,
//!   cluster hash tags), and invalidated with [`shared::SharedCache::retire`].
//!   `cargo run -p restflow-cache --example redis_two_processes [REDIS_URL]`
//!   (default `redis://127.0.0.1:6379`, or `RESTFLOW_REDIS_URL`).
//!
//! In short:
//!
//! ```
//! use std::sync::Arc;
//! use restflow_cache::{
//!     Cache, Clock, Computed, Engine, Lifetime, MemoryStore, Refresher, Span, Status, Timestamp,
//! };
//!
//! let cache = Cache::new(MemoryStore::new(1_000), Clock::frozen(Timestamp::EPOCH));
//! let engine: Arc<Engine<String, String, _>> = Arc::new(Engine::new(cache, Refresher::new(1, 64)));
//! let lifetime = Some(Lifetime::new(Span::from_secs(60), Span::ZERO));
//! let compute = || Ok(Computed { value: "payload".to_string(), lifetime });
//!
//! let first = engine.get(b"user:1", compute, |waiter| waiter.wait()).unwrap();
//! assert_eq!(first.status, Status::Miss);
//! let second = engine.get(b"user:1", compute, |waiter| waiter.wait()).unwrap();
//! assert_eq!(second.status, Status::Hit);
//! assert_eq!(second.entry.value(), "payload");
//! ```

#![deny(missing_docs)]

mod cache;
mod clock;
mod decision;
pub mod early;
mod engine;
mod entry;
mod fence;
mod flight;
pub mod fork;
pub mod key;
pub mod layout;
mod memory;
pub mod moment;
pub mod once;
mod refresh;
mod role;
mod scope;
pub mod settings;
pub mod shared;
pub mod signature;
pub mod stats;
mod store;
mod timestamp;
pub mod value;
pub mod value_classes;

pub use cache::{Cache, Lookup};
pub use clock::{Clock, JUDGING_MARGIN};
pub use decision::{BadTtl, Decision, LifetimeRule, Lifetimes};
pub use early::{Beta, Dice, Early};
pub use engine::{
    follow, Computed, Engine, Found, GetError, Lead, MemoryRole, RefreshClaim, Served, Shared,
    Start, Status,
};
pub use entry::{Entry, Freshness, Lifetime, Stamps};
pub use fence::{Fences, Ticket};
pub use flight::{Callback, Join, LeaderGuard, Outcome, Owner, SingleFlight, Waiter};
pub use memory::MemoryStore;
pub use refresh::{timeout_from_secs, Job, Refresher, Runner};
pub use role::{Abandon, Joined, Role, RoleError};
pub use scope::{FunctionNames, Scope, ScopeLabels, Scopes};
pub use stats::{Counter, Stats};
pub use store::Store;
pub use timestamp::{Span, Timestamp};
