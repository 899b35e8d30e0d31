//! Cluster lookups on the single-node store's lookup connections: one pool
//! of [`LookupConnection`]s per master, chosen by the key's slot.
//!
//! Why: a hit through the client crate's `ClusterConnection` cost up to
//! ~1.8x a single-node hit on the benchmark machine (the crate's routing
//! and bookkeeping per command, and a thread that always sleeps in `recv`
//! for the answer, where the single-node store may busy-wait briefly: see
//! [`super::spin`]). Here a lookup is the single-node one, sent to the
//! master that owns the slot: the same connection, the same busy-wait.
//!
//! The slot map is read with `CLUSTER SLOTS` (through the crate's
//! connection, which knows which nodes answer) and kept until it proves
//! wrong: a `MOVED`/`ASK` answer (resharding, a failover) or a node that
//! cannot be reached drops it, and that lookup goes through the crate's
//! connection, which follows the redirect. The next lookup reads the map
//! again, at most once per [`REREAD_AFTER`] when reading it fails.
//!
//! Invariants: `routes` holds a map that was the cluster's at some point,
//! or nothing; its lock is held only to clone or swap the `Arc`, never
//! across a round trip. Per process (see [`crate::fork`]): a forked child
//! reads the map and connects itself.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ::redis::{Client, IntoConnectionInfo, Value};

use super::cluster::NodeUrl;
use super::pool::Pool;
use super::redis::{on_live_connection, LookupManager};
use super::spin::SpinPolicy;
use super::store::StoreError;

/// How long after failing to read the slot map lookups go through the
/// crate's connection before the map is read again.
const REREAD_AFTER: Duration = Duration::from_secs(1);

/// Marks a slot no known master serves.
const NO_NODE: u16 = u16::MAX;

/// The masters and which slot each serves.
struct Routes {
    /// Per slot: an index into `nodes`, or [`NO_NODE`].
    node_of: Box<[u16]>,
    nodes: Vec<Pool<LookupManager>>,
}

/// One process's cluster lookups.
pub struct ClusterLookups {
    url: NodeUrl,
    pool_size: usize,
    connect_timeout: Duration,
    read_timeout: Duration,
    spin: SpinPolicy,
    routes: RwLock<Option<Arc<Routes>>>,
    /// ns after `origin` before which the map is not read again (0: now).
    reread_at: AtomicI64,
    origin: Instant,
}

/// What a lookup on a master's connection came to.
pub enum Routed {
    /// The master's answer.
    Answer(Value),
    /// The master could not be reached (the map is dropped).
    Failed(StoreError),
    /// No route (no map, a slot no master serves, a redirect): ask the
    /// crate's connection.
    Elsewhere,
}

impl ClusterLookups {
    pub fn new(
        url: NodeUrl,
        pool_size: usize,
        connect_timeout: Duration,
        read_timeout: Duration,
        read_spin: Duration,
    ) -> Self {
        ClusterLookups {
            url,
            pool_size,
            connect_timeout,
            read_timeout,
            spin: SpinPolicy::new(read_spin),
            routes: RwLock::new(None),
            reread_at: AtomicI64::new(0),
            origin: Instant::now(),
        }
    }

    fn now(&self) -> i64 {
        self.origin.elapsed().as_nanos() as i64
    }

    /// Sends `packed` to the master of `slot`, reading the slot map first
    /// (with `read_map`) when there is none.
    pub fn query(
        &self,
        slot: usize,
        packed: &[u8],
        read_map: impl FnOnce() -> Result<Value, StoreError>,
    ) -> Routed {
        let Some(routes) = self.routes(read_map) else {
            return Routed::Elsewhere;
        };
        let Some(pool) = routes
            .node_of
            .get(slot)
            .and_then(|&node| routes.nodes.get(usize::from(node)))
        else {
            return Routed::Elsewhere;
        };
        // A connection the node closed while it sat idle is replaced.
        let answer = on_live_connection(pool, true, |conn| {
            conn.query(packed, self.read_timeout, &self.spin)
        });
        match answer {
            // A redirect (resharding, a failover), or the cluster saying it
            // cannot serve the slot now: the crate follows, retries and
            // classifies these; the map is read again.
            Ok(Value::ServerError(_)) => {
                self.forget(&routes);
                Routed::Elsewhere
            }
            Ok(value) => Routed::Answer(value),
            Err(error) => {
                if error.is_connection_failure() {
                    self.forget(&routes);
                }
                Routed::Failed(error)
            }
        }
    }

    /// The slot map, read now if there is none and it is time to.
    fn routes(&self, read_map: impl FnOnce() -> Result<Value, StoreError>) -> Option<Arc<Routes>> {
        if let Some(routes) = &*self.routes.read().unwrap_or_else(PoisonError::into_inner) {
            return Some(Arc::clone(routes));
        }
        let at = self.reread_at.load(Ordering::Acquire);
        let now = self.now();
        // One caller reads the map; the others go through the crate meanwhile.
        if now < at
            || self
                .reread_at
                .compare_exchange(
                    at,
                    now + REREAD_AFTER.as_nanos() as i64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
        {
            return None;
        }
        let routes = Arc::new(read_map().ok().and_then(|map| self.routes_from(&map))?);
        *self.routes.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&routes));
        // Read again at once the next time it is dropped.
        self.reread_at.store(0, Ordering::Release);
        Some(routes)
    }

    /// Drops `routes` if it is still the map (dropped outside the lock: it
    /// closes its connections).
    fn forget(&self, routes: &Arc<Routes>) {
        let mut current = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|r| Arc::ptr_eq(r, routes)) {
            let forgotten = current.take();
            drop(current);
            drop(forgotten);
        }
    }

    /// The routes of a `CLUSTER SLOTS` answer: `[[start, end, [host,
    /// port, ...], replicas...], ...]`. `None` when it is not one, or a
    /// master is not plain TCP.
    fn routes_from(&self, map: &Value) -> Option<Routes> {
        let Value::Array(ranges) = map else {
            return None;
        };
        let mut node_of = vec![NO_NODE; super::cluster::SLOTS].into_boxed_slice();
        let mut addresses: Vec<String> = Vec::new();
        for range in ranges {
            let Value::Array(fields) = range else {
                return None;
            };
            let [Value::Int(start), Value::Int(end), Value::Array(master), ..] = fields.as_slice()
            else {
                return None;
            };
            let [host, Value::Int(port), ..] = master.as_slice() else {
                return None;
            };
            let host = match host {
                Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok()?,
                Value::SimpleString(text) => text.clone(),
                _ => return None,
            };
            if host.is_empty() || host == "?" {
                // A master that does not know its address: leave its
                // slots to the crate.
                continue;
            }
            let address = format!("{host}:{port}");
            let node = match addresses.iter().position(|a| *a == address) {
                Some(node) => node,
                None => {
                    addresses.push(address);
                    addresses.len() - 1
                }
            };
            let node = u16::try_from(node).ok().filter(|&n| n != NO_NODE)?;
            let slots = usize::try_from(*start).ok()?..=usize::try_from(*end).ok()?;
            node_of.get_mut(slots)?.fill(node);
        }
        let nodes = addresses
            .iter()
            .map(|address| self.pool(address))
            .collect::<Option<Vec<_>>>()?;
        Some(Routes { node_of, nodes })
    }

    /// A pool of lookup connections to the node at `address`; `None` when
    /// it is not plain TCP.
    fn pool(&self, address: &str) -> Option<Pool<LookupManager>> {
        let NodeUrl {
            scheme,
            credentials,
            query,
        } = &self.url;
        let info = format!("{scheme}://{credentials}{address}{query}")
            .as_str()
            .into_connection_info()
            .ok()?;
        if !matches!(info.addr(), ::redis::ConnectionAddr::Tcp(..)) {
            return None;
        }
        let manager = LookupManager {
            client: Client::open(info).ok()?,
            connect_timeout: self.connect_timeout,
        };
        Some(Pool::new(manager, self.pool_size, self.connect_timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookups() -> ClusterLookups {
        let url = NodeUrl {
            scheme: "redis",
            credentials: String::new(),
            query: String::new(),
        };
        let second = Duration::from_secs(1);
        ClusterLookups::new(url, 2, second, second, Duration::ZERO)
    }

    fn range(start: i64, end: i64, host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(start),
            Value::Int(end),
            Value::Array(vec![
                Value::BulkString(host.into()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ]),
        ])
    }

    #[test]
    fn the_slot_map_names_each_slots_master() {
        let map = Value::Array(vec![
            range(0, 99, "127.0.0.1", 7000),
            range(100, 16383, "127.0.0.1", 7001),
            range(200, 200, "127.0.0.1", 7000),
        ]);
        let routes = lookups().routes_from(&map).expect("a map");
        assert_eq!(routes.nodes.len(), 2);
        assert_eq!(
            [0, 99, 100, 200, 16383].map(|slot| routes.node_of[slot]),
            [0, 0, 1, 0, 1]
        );
    }

    #[test]
    fn slots_of_a_master_without_an_address_are_left_to_the_crate() {
        let map = Value::Array(vec![
            range(0, 99, "?", 7000),
            range(100, 16383, "127.0.0.1", 7001),
        ]);
        let routes = lookups().routes_from(&map).expect("a map");
        assert_eq!((routes.node_of[5], routes.node_of[100]), (NO_NODE, 0));
        assert!(lookups().routes_from(&Value::Nil).is_none());
        assert!(lookups()
            .routes_from(&Value::Array(vec![range(0, 16384, "h", 1)]))
            .is_none());
    }
}
