//! The Redis Cluster (and Valkey cluster) store: `redis+cluster://` and
//! `rediss+cluster://`.
//!
//! Routing, slot discovery and `MOVED`/`ASK` redirects are the redis
//! crate's (its synchronous `ClusterConnection`), pooled per process like
//! [`super::RedisStore`]'s connections and made again after a fork (see
//! [`crate::fork`]); it starts no thread (only the optional near cache does). What
//! this module adds:
//!
//! - **One slot per lookup.** Every key of a [`KeySet`] carries the same
//!   hash tag (the caller builds them so, see [`shard_tag`]), so a lookup
//!   is one `MGET` on one node and the scripts run on one node.
//! - **A breaker per slot.** A dead master must cost only its own keys: its
//!   slots fail fast (the store answers [`StoreError::CircuitOpen`]) for a
//!   cooldown after a failure to reach them, then one call probes, while
//!   the other masters' slots go on answering. (The caller's store-wide
//!   breaker must not count a cluster's failures, or one dead master would
//!   take every slot down with it.)
//! - **A breaker for the whole cluster** on making connections: when no
//!   seed node answers, every slot is down, and paying a connect per slot
//!   would cost each call up to one connect timeout per seed.
//! - **Scripts without `SCRIPT LOAD`.** The crate loads a missing script on
//!   every master at once, which fails while one master is down; here a
//!   `NOSCRIPT` answer is followed by an `EVAL` of the script on that node
//!   only (which also caches it there).
//! - **Deletes confirmed per master** (with
//!   [`RedisConfig::invalidation_replicas`]): a `WAIT` to the master of
//!   each slot a delete reached, on the connection that made it, never
//!   one to every master (a master the delete did not reach says nothing
//!   about it, and a dead one would fail every invalidation).
//!
//! The near cache (optional, [`ClusterStore::with_near_cache`]) has one
//! invalidation channel per master and a lane per slot: see
//! `shared/cluster_near.rs`.
//!
//! Invariants: a slot's breaker is closed (0) or holds the instant (ns
//! after `origin`) until which the slot is skipped; only failures to reach
//! the node ([`StoreError::is_connection_failure`], cluster-down answers)
//! open it, and any answer closes it.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::cluster::{ClusterClient, ClusterConnection};
use ::redis::io::tcp::TcpSettings;
use ::redis::{Cmd, ErrorKind, IntoConnectionInfo, RedisError, ServerErrorKind, Value};

use super::breaker::Breaker;
#[cfg(unix)]
use super::cluster_lookup::{ClusterLookups, Routed};
#[cfg(unix)]
use super::cluster_near::ClusterNear;
#[cfg(unix)]
use super::follow::{started, Follows};
use super::near::NearCache;
use super::payload::Generations;
use super::pool::{Manage, Pool};
use super::redis::{
    classify, counter_names, fetch_names, fetched, generations_answer, holder_kind, millis,
    replicated, wait_command, waiting_for_replicas, writing, written, ForgetAfter, RedisConfig,
    DELETE_ENTRY, FENCE, GENERATIONS, LOCK_SCRIPT, PUT_CURRENT, UNLOCK_SCRIPT,
};
use super::store::{fresh_epoch, Fetched, Holder, KeySet, SharedStore, StoreError, Written};
use super::url::Parts;
use crate::fork::PerProcess;

pub use super::keyspace::{shard_of, shard_tag, SHARDS};

/// The slots of a Redis Cluster.
pub(super) const SLOTS: usize = 16384;

/// How long a slot that could not be reached is skipped before one call
/// probes it again.
const SLOT_COOLDOWN: Duration = Duration::from_secs(1);

/// The seed node URLs of a `redis+cluster://` URL, each a `redis://` (or
/// `rediss://`) URL with the same credentials and query.
#[cfg(test)]
fn seed_urls(url: &str) -> Result<Vec<String>, StoreError> {
    node_urls(url).map(|(seeds, _)| seeds)
}

/// The seed node URLs of a cluster URL, and how to make the URL of any
/// other node.
fn node_urls(url: &str) -> Result<(Vec<String>, NodeUrl), StoreError> {
    let bad = |why: &str| {
        StoreError::Protocol(format!(
            "bad Redis Cluster URL {url:?}: {why} (expected \
             redis+cluster://[user:password@]host:port[,host:port...][?options], or \
             rediss+cluster:// for TLS)"
        ))
    };
    let parts = super::url::split(url, "cluster").map_err(bad)?;
    if !matches!(parts.path, "" | "0") {
        return Err(bad("a cluster has only database 0"));
    }
    let Parts {
        scheme,
        credentials,
        query,
        ..
    } = &parts;
    let seeds = parts
        .hosts
        .iter()
        .map(|host| format!("{scheme}://{credentials}{host}{query}"))
        .collect();
    let template = NodeUrl {
        scheme,
        credentials: credentials.clone(),
        query: query.clone(),
    };
    Ok((seeds, template))
}

/// A cluster URL's scheme, credentials and query, which every node's URL
/// shares: a node's URL is them around its `host:port`.
#[derive(Clone)]
pub(super) struct NodeUrl {
    pub(super) scheme: &'static str,
    pub(super) credentials: String,
    pub(super) query: String,
}

/// A pooled cluster connection that remembers whether it failed, so the
/// pool makes a fresh one (a fresh slot map too) instead of reusing it.
pub struct PooledCluster {
    inner: ClusterConnection,
    broken: Cell<bool>,
}

struct Manager {
    client: ClusterClient,
    read_timeout: Duration,
    /// Failures to make any cluster connection (no seed node answers): the
    /// whole cluster is unreachable, and is skipped as a whole, like a dead
    /// single Redis, rather than one slot at a time.
    reachable: Arc<Breaker>,
}

impl Manage for Manager {
    type Conn = PooledCluster;

    fn connect(&self) -> Result<PooledCluster, StoreError> {
        if !self.reachable.allow() {
            return Err(StoreError::CircuitOpen);
        }
        let connect = || {
            let inner = self.client.get_connection()?;
            inner.set_write_timeout(Some(self.read_timeout))?;
            Ok(PooledCluster {
                inner,
                broken: Cell::new(false),
            })
        };
        match connect() {
            Ok(conn) => {
                self.reachable.succeeded();
                Ok(conn)
            }
            Err(error) => {
                let error = cluster_classify(&error);
                if error.is_connection_failure() {
                    self.reachable.failed();
                }
                Err(error)
            }
        }
    }

    fn has_broken(&self, conn: &PooledCluster) -> bool {
        conn.broken.get()
    }
}

/// Like [`classify`], with a cluster's own ways of being unreachable: no
/// connection to the slot's node, or the cluster saying it cannot serve
/// the slot now (`CLUSTERDOWN`, `TRYAGAIN`, `MASTERDOWN` after the crate's
/// retries).
fn cluster_classify(error: &RedisError) -> StoreError {
    let unreachable = error.kind() == ErrorKind::ClusterConnectionNotFound
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::ClusterDown
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
            )
        );
    if unreachable {
        StoreError::Unavailable(error.to_string())
    } else {
        classify(error)
    }
}

/// A Lua script, sent as `EVALSHA` and, on `NOSCRIPT`, as `EVAL` to the
/// same node.
struct Lua {
    code: &'static str,
    hash: String,
}

impl Lua {
    fn new(code: &'static str) -> Self {
        Lua {
            code,
            hash: ::redis::Script::new(code).get_hash().to_owned(),
        }
    }

    /// Runs the script on the node of `keys` (which share one slot), with
    /// `args` added by `push_args`.
    fn run<T: ::redis::FromRedisValue>(
        &self,
        conn: &mut ClusterConnection,
        keys: &[&str],
        push_args: impl Fn(&mut Cmd),
    ) -> ::redis::RedisResult<T> {
        let command = |name: &str, body: &str| {
            let mut cmd = ::redis::cmd(name);
            cmd.arg(body).arg(keys.len()).arg(keys);
            push_args(&mut cmd);
            cmd
        };
        match command("EVALSHA", &self.hash).query(conn) {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                command("EVAL", self.code).query(conn)
            }
            answer => answer,
        }
    }
}

/// What the near cache is made of, in each process that uses it.
struct NearSetting {
    capacity: usize,
    prefixes: Vec<String>,
    /// The first seed's settings (credentials, database), for every node.
    seed: ::redis::ConnectionInfo,
    seeds: Vec<(String, u16)>,
}

/// A Redis Cluster store.
pub struct ClusterStore {
    config: RedisConfig,
    near_setting: Option<NearSetting>,
    #[cfg(unix)]
    near: PerProcess<Option<ClusterNear>>,
    client: ClusterClient,
    connections: PerProcess<Pool<Manager>>,
    /// Whether any seed node answers (see [`Manager`]).
    reachable: Arc<Breaker>,
    /// Per slot: 0, or until when (ns after `origin`) it is skipped.
    down_until: Box<[AtomicI64]>,
    origin: Instant,
    lock: Lua,
    unlock: Lua,
    generations: Lua,
    put_current: Lua,
    delete_entry: Lua,
    fence: Lua,
    /// The seeds' URL parts, when they are plain TCP: lookups then go to
    /// each slot's master on a lookup connection ([`ClusterLookups`]).
    lookup_nodes: Option<NodeUrl>,
    #[cfg(unix)]
    lookups: PerProcess<ClusterLookups>,
}

/// The slot of `key`: CRC16 (XMODEM) of its hash tag, as Redis Cluster
/// computes it. Written here because the redis crate keeps the number to
/// itself; it is only used to pick the slot's breaker.
pub(super) fn slot_of(key: &str) -> usize {
    let bytes = key.as_bytes();
    let tagged = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let inside = &bytes[open + 1..];
            let close = inside.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &inside[..close])
        })
        .unwrap_or(bytes);
    usize::from(crc16::State::<crc16::XMODEM>::calculate(tagged)) % SLOTS
}

impl ClusterStore {
    /// A store for `config`, whose URL is `redis+cluster://host:port[,host:port…][?query]`
    /// (or `rediss+cluster://`): seed nodes, the rest is discovered.
    /// Lookups busy-wait for their answer as `read_spin` allows, as on a
    /// single node. Nothing is connected until the first command.
    pub fn new(config: RedisConfig) -> Result<Self, StoreError> {
        let (seeds, template) = node_urls(&config.url)?;
        let plain_tcp = seeds.iter().all(|seed| {
            seed.as_str()
                .into_connection_info()
                .is_ok_and(|info| matches!(info.addr(), ::redis::ConnectionAddr::Tcp(..)))
        });
        let client = ClusterClient::builder(seeds)
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.read_timeout)
            .tcp_settings(TcpSettings::default().set_nodelay(true))
            // Enough to follow a MOVED and then an ASK during resharding;
            // few, because each retry against a dead node costs a connect.
            .retries(2)
            .min_retry_wait(5)
            .max_retry_wait(50)
            .build()
            .map_err(|e| {
                StoreError::Protocol(format!("bad Redis Cluster URL {:?}: {e}", config.url))
            })?;
        Ok(ClusterStore {
            config,
            near_setting: None,
            #[cfg(unix)]
            near: PerProcess::new(),
            client,
            connections: PerProcess::new(),
            reachable: Arc::new(Breaker::new(3, SLOT_COOLDOWN)),
            down_until: (0..SLOTS).map(|_| AtomicI64::new(0)).collect(),
            origin: Instant::now(),
            lock: Lua::new(LOCK_SCRIPT),
            unlock: Lua::new(UNLOCK_SCRIPT),
            generations: Lua::new(GENERATIONS),
            put_current: Lua::new(PUT_CURRENT),
            delete_entry: Lua::new(DELETE_ENTRY),
            fence: Lua::new(FENCE),
            lookup_nodes: (plain_tcp && cfg!(unix)).then_some(template),
            #[cfg(unix)]
            lookups: PerProcess::new(),
        })
    }

    /// Keeps a near cache of at most `capacity` entries in each process,
    /// coherent through each master's invalidation messages for the keys
    /// that start with one of `prefixes` (every key when empty); see
    /// `shared/cluster_near.rs`. Only over plain TCP (`redis+cluster://`):
    /// over TLS there is no near cache.
    pub fn with_near_cache(mut self, capacity: usize, prefixes: Vec<String>) -> Self {
        use ::redis::{ConnectionAddr, IntoConnectionInfo};
        let Ok((urls, _)) = node_urls(&self.config.url) else {
            return self;
        };
        let infos: Vec<::redis::ConnectionInfo> = urls
            .iter()
            .filter_map(|url| url.as_str().into_connection_info().ok())
            .collect();
        let seeds: Option<Vec<(String, u16)>> = infos
            .iter()
            .map(|info| match info.addr() {
                ConnectionAddr::Tcp(host, port) => Some((host.clone(), *port)),
                _ => None,
            })
            .collect();
        if let (Some(seeds), Some(seed), true) = (seeds, infos.first(), cfg!(unix)) {
            self.near_setting = Some(NearSetting {
                capacity,
                prefixes,
                seed: seed.clone(),
                seeds,
            });
        }
        self
    }

    /// This process's cluster near cache, started on first call.
    #[cfg(unix)]
    fn cluster_near(&self) -> Option<&ClusterNear> {
        let setting = self.near_setting.as_ref()?;
        self.near
            .get_or_init(|| {
                let marker = format!(
                    "{}restflow:near-sync:{}:",
                    setting.prefixes.first().map_or("", String::as_str),
                    std::process::id()
                );
                // No thread to be had: no near cache (calls go to Redis).
                ClusterNear::start(
                    setting.capacity,
                    marker,
                    setting.seed.clone(),
                    setting.seeds.clone(),
                    self.config.connect_timeout.max(self.config.read_timeout),
                    setting.prefixes.clone(),
                )
            })
            .as_ref()
    }

    /// Forgets `keys` in this process's near cache when dropped (see
    /// [`ForgetAfter`]).
    fn forget_after<'a, const N: usize>(&'a self, keys: [&'a str; N]) -> ForgetAfter<'a, N> {
        ForgetAfter::new(self.near_if_started(), keys)
    }

    fn now(&self) -> i64 {
        self.origin.elapsed().as_nanos() as i64
    }

    /// Whether `slot` may be asked now: closed, or past its cooldown (then
    /// one caller per cooldown probes it).
    fn allow(&self, slot: usize) -> bool {
        let cell = &self.down_until[slot];
        let until = cell.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now();
        now >= until
            && cell
                .compare_exchange(
                    until,
                    now + SLOT_COOLDOWN.as_nanos() as i64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Runs `run` on a pooled connection for the slot of `key`, through
    /// that slot's breaker.
    fn with<T>(
        &self,
        key: &str,
        run: impl FnOnce(&mut ClusterConnection) -> ::redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.through_breaker(slot_of(key), || self.on_crate(run))
    }

    /// [`Self::with`] for a command that writes `len` bytes of payload, on
    /// a large one waiting as [`writing`] says (see
    /// `RedisStore::with_payload`).
    fn with_payload<T>(
        &self,
        key: &str,
        len: usize,
        run: impl FnOnce(&mut ClusterConnection) -> ::redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let sized = (self.config.read_timeout, len);
        self.with(key, |c| writing(c, sized, run))
    }

    /// Runs `run` on a pooled (crate) cluster connection.
    fn on_crate<T>(
        &self,
        run: impl FnOnce(&mut ClusterConnection) -> ::redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.connections().get().and_then(|mut conn| {
            run(&mut conn.inner).map_err(|error| {
                let error = cluster_classify(&error);
                if error.is_connection_failure() {
                    conn.broken.set(true);
                }
                error
            })
        })
    }

    /// Runs `call` (a command on `slot`) through that slot's breaker.
    fn through_breaker<T>(
        &self,
        slot: usize,
        call: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if !self.allow(slot) {
            return Err(StoreError::CircuitOpen);
        }
        let answer = call();
        let cell = &self.down_until[slot];
        match &answer {
            Err(error) if error.is_connection_failure() => {
                // A node lost: the slot map may have changed (a failover).
                #[cfg(unix)]
                if let Some(Some(near)) = self.near.get() {
                    near.prompt();
                }
                cell.store(
                    (self.now() + SLOT_COOLDOWN.as_nanos() as i64).max(1),
                    Ordering::Release,
                );
            }
            _ => {
                if cell.load(Ordering::Relaxed) != 0 {
                    cell.store(0, Ordering::Release);
                }
            }
        }
        answer
    }

    /// With [`RedisConfig::invalidation_replicas`] set, the fewest
    /// replicas that acknowledged the deletes `conn` made on the masters
    /// of `slots`: one `WAIT` per slot, on the crate's connection to its
    /// master (the one that made the deletes: `WAIT` counts its own
    /// connection's writes), stopping at the first short answer. `None`
    /// when the setting is 0 (nothing asked).
    fn acknowledged(
        &self,
        conn: &mut ClusterConnection,
        slots: &[usize],
    ) -> ::redis::RedisResult<Option<u64>> {
        use ::redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        let wanted = self.config.invalidation_replicas;
        if wanted == 0 {
            return Ok(None);
        }
        let wait = wait_command(wanted, self.config.read_timeout);
        waiting_for_replicas(conn, self.config.read_timeout, |c| {
            let mut fewest = u64::MAX;
            for &slot in slots {
                // A slot number below SLOTS (16384) fits a u16.
                let master = Route::new(slot as u16, SlotAddr::Master);
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(master));
                let answer = c.route_command(&wait, route)?;
                fewest = fewest.min(::redis::from_redis_value::<u64>(answer)?);
                if fewest < u64::from(wanted) {
                    break;
                }
            }
            Ok(Some(fewest))
        })
    }

    /// An answer of [`Self::acknowledged`] as the delete's outcome.
    fn replicated(&self, acknowledged: Option<u64>) -> Result<(), StoreError> {
        match acknowledged {
            Some(n) => replicated(
                self.config.invalidation_replicas,
                n,
                self.config.read_timeout,
            ),
            None => Ok(()),
        }
    }

    /// This process's connections, made on first use.
    fn connections(&self) -> &Pool<Manager> {
        self.connections.get_or_init(|| {
            let manager = Manager {
                client: self.client.clone(),
                read_timeout: self.config.read_timeout,
                reachable: Arc::clone(&self.reachable),
            };
            Pool::new(
                manager,
                self.config.pool_size as usize,
                self.config.connect_timeout,
            )
        })
    }
}

impl ClusterStore {
    /// The lookup of `names` (keys of one slot) on the slot's master's
    /// lookup connection; through the crate's connection when there is
    /// none (not plain TCP, no slot map) or the master redirected it.
    #[cfg(unix)]
    fn lookup(&self, names: &[&str]) -> Result<Value, StoreError> {
        let slot = slot_of(names[0]);
        let on_crate = || self.on_crate(|c| ::redis::cmd("MGET").arg(names).query(c));
        let Some(template) = &self.lookup_nodes else {
            return self.through_breaker(slot, on_crate);
        };
        let lookups = self.lookups.get_or_init(|| {
            ClusterLookups::new(
                template.clone(),
                self.config.pool_size as usize,
                self.config.connect_timeout,
                self.config.read_timeout,
                self.config.read_spin,
            )
        });
        let packed = ::redis::cmd("MGET").arg(names).get_packed_command();
        let read_map = || self.on_crate(|c| ::redis::cmd("CLUSTER").arg("SLOTS").query(c));
        self.through_breaker(slot, || match lookups.query(slot, &packed, read_map) {
            Routed::Answer(value) => Ok(value),
            Routed::Failed(error) => Err(error),
            Routed::Elsewhere => on_crate(),
        })
    }

    #[cfg(not(unix))]
    fn lookup(&self, names: &[&str]) -> Result<Value, StoreError> {
        self.with(names[0], |c| ::redis::cmd("MGET").arg(names).query(c))
    }
}

impl SharedStore for ClusterStore {
    fn fetch(&self, keys: &KeySet) -> Result<Fetched, StoreError> {
        let names = fetch_names(keys);
        let answer = self.lookup(&names)?;
        fetched(answer, Some(names.len()))
    }

    fn put(&self, key: &str, payload: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
        let _forget = self.forget_after([key]);
        self.with_payload(key, payload.len(), |c| {
            let mut cmd = ::redis::cmd("SET");
            cmd.arg(key).arg(payload);
            if let Some(ttl) = ttl {
                cmd.arg("PX").arg(millis(ttl));
            }
            cmd.query::<()>(c)
        })
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let _forget = self.forget_after([key]);
        let (removed, acknowledged) = self.with(key, |c| {
            let removed = ::redis::cmd("DEL").arg(key).query::<u64>(c)?;
            Ok((removed, self.acknowledged(c, &[slot_of(key)])?))
        })?;
        self.replicated(acknowledged).map(|()| removed > 0)
    }

    /// One script: the entry and its claims share the entry's hash tag,
    /// so one slot.
    fn delete_entry(&self, keys: &KeySet) -> Result<bool, StoreError> {
        let fence = keys.fence();
        let names: [&str; 4] = [&keys.data, &keys.lock, &keys.refresh, &fence];
        let _forget = self.forget_after([names[0], names[1], names[2]]);
        let (existed, acknowledged) = self.with(&keys.data, |c| {
            let existed = self.delete_entry.run::<u64>(c, &names, |_| {})?;
            Ok((existed, self.acknowledged(c, &[slot_of(&keys.data)])?))
        })?;
        self.replicated(acknowledged).map(|()| existed > 0)
    }

    /// The fence shares the entry's hash tag: one slot.
    fn fence(&self, keys: &KeySet, candidate: &str, ttl: Duration) -> Result<String, StoreError> {
        let fence = keys.fence();
        self.with(&fence, |c| {
            self.fence.run::<String>(c, &[&fence], |cmd| {
                cmd.arg(candidate).arg(millis(ttl));
            })
        })
    }

    /// One pipelined batch per master (the crate groups the commands by
    /// node), not one round trip per key. Not through the slot breakers:
    /// an invalidation tries every key, and fails if one cannot be
    /// deleted.
    fn delete_many(&self, keys: &[String]) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut pipe = ::redis::cluster::cluster_pipe();
        for key in keys {
            pipe.cmd("DEL").arg(key);
        }
        let mut slots: Vec<usize> = keys.iter().map(|key| slot_of(key)).collect();
        slots.sort_unstable();
        slots.dedup();
        let mut conn = self.connections().get()?;
        let removed = pipe
            .query::<Vec<u64>>(&mut conn.inner)
            .and_then(|removed| {
                let acknowledged = self.acknowledged(&mut conn.inner, &slots)?;
                Ok((removed.iter().sum(), acknowledged))
            })
            .map_err(|error| {
                conn.broken.set(true);
                cluster_classify(&error)
            })
            .and_then(|(removed, acknowledged)| self.replicated(acknowledged).map(|()| removed));
        // After the deletes (made, or maybe made): this process reads its
        // own invalidation at once, as after every write.
        if let Some(near) = self.near_if_started() {
            near.invalidate(keys.iter().map(|key| key.as_bytes()));
        }
        removed
    }

    fn generations(&self, keys: &KeySet, floor: Duration) -> Result<Generations, StoreError> {
        let names = counter_names(keys);
        let partitioned = keys.partition.is_some();
        let answer: Value = self.with(&keys.scope, |c| {
            self.generations.run(c, &names, |cmd| {
                cmd.arg(fresh_epoch()).arg(0).arg(fresh_epoch()).arg(0);
                if partitioned {
                    cmd.arg(fresh_epoch()).arg(millis(floor));
                }
            })
        })?;
        generations_answer(answer, names.len())
    }

    fn put_current(
        &self,
        keys: &KeySet,
        generations: Generations,
        payload: &[u8],
        ttl: Option<Duration>,
        holder: Option<Holder<'_>>,
    ) -> Result<Written, StoreError> {
        let mut names: Vec<&str> = vec![&keys.data, &keys.scope, &keys.version];
        if let Some(partition) = &keys.partition {
            names.push(partition);
        }
        if let Some(holder) = holder {
            names.push(holder.parts().0);
        }
        let partitioned = keys.partition.is_some();
        let _forget = self.forget_after([keys.data.as_str()]);
        self.with_payload(&keys.data, payload.len(), |c| {
            self.put_current.run::<u8>(c, &names, |cmd| {
                cmd.arg(payload)
                    .arg(ttl.map_or(0, millis))
                    .arg(2 + u8::from(partitioned))
                    .arg(generations.scope)
                    .arg(generations.version);
                if partitioned {
                    cmd.arg(generations.partition);
                }
                if let Some(holder) = holder {
                    cmd.arg(holder.parts().1).arg(holder_kind(holder));
                }
            })
        })
        .map(written)
    }

    fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        let millis = millis(ttl);
        self.with(key, |c| {
            self.lock.run::<i64>(c, &[key], |cmd| {
                cmd.arg(token).arg(millis);
            })
        })
        .map(|taken| taken == 1)
    }

    fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        self.with(key, |c| {
            self.unlock.run::<()>(c, &[key], |cmd| {
                cmd.arg(token);
            })
        })
    }

    fn near(&self) -> Option<&NearCache> {
        #[cfg(unix)]
        return self.cluster_near().map(Follows::cache);
        #[cfg(not(unix))]
        None
    }

    fn near_if_started(&self) -> Option<&NearCache> {
        #[cfg(unix)]
        return started(&self.near);
        #[cfg(not(unix))]
        None
    }

    /// Writes a sync key on every master (each in one of its slots) and
    /// waits for each one's invalidation on that master's channel: true
    /// once every master's channel is up and has delivered every change
    /// made on it before this call; false at the timeout (a master's
    /// channel still down: its slots are not served near meanwhile).
    fn near_sync(&self, timeout: Duration) -> Result<bool, StoreError> {
        #[cfg(unix)]
        {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let Some(near) = self.cluster_near() else {
                return Ok(false);
            };
            let cache = near.cache();
            let deadline = Instant::now() + timeout;
            while let Some(ticket) = cache.wait_all_live(deadline) {
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                let keys = near.sync_keys(&format!("{}{n}:", cache.sync_marker()));
                let written = keys.iter().try_for_each(|key| {
                    self.with(key, |c| {
                        ::redis::cmd("SET")
                            .arg(key)
                            .arg(1)
                            .arg("PX")
                            .arg(millis(timeout))
                            .query::<()>(c)
                    })
                });
                match written {
                    Ok(()) if keys.iter().all(|k| cache.wait_synced(ticket, k, deadline)) => {
                        return Ok(true);
                    }
                    Ok(()) => {}
                    Err(error) if Instant::now() >= deadline => return Err(error),
                    // A node that failed with its channel is asked again.
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            Ok(false)
        }
        #[cfg(not(unix))]
        {
            let _ = timeout;
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_urls_keep_credentials_and_options() {
        assert_eq!(
            seed_urls("redis+cluster://u:p@a:1,b:2?protocol=resp3").unwrap(),
            vec![
                "redis://u:p@a:1?protocol=resp3",
                "redis://u:p@b:2?protocol=resp3"
            ]
        );
        assert_eq!(
            seed_urls("rediss+cluster://a:1/0").unwrap(),
            vec!["rediss://a:1"]
        );
        for bad in [
            "redis+cluster://a:1/2",
            "redis+cluster://a:1,,b:2",
            "redis://a:1",
        ] {
            assert!(seed_urls(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slots_follow_the_hash_tag() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
        assert_eq!(slot_of("a{}b"), slot_of("a{}b"));
        let tag = shard_tag("f00d", 3);
        assert_eq!(
            slot_of(&format!("p:{tag}gen")),
            slot_of(&format!("{tag}data"))
        );
    }

    #[test]
    fn shards_are_stable_and_in_range() {
        assert_eq!(shard_of("x"), shard_of("x"));
        assert!((0..200).all(|i| shard_of(&i.to_string()) < SHARDS));
    }
}
