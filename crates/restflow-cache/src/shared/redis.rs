//! The Redis (and Valkey) store: pooled synchronous connections with
//! `TCP_NODELAY`, a read timeout on every command, fresh connections after
//! a fork. Over plain TCP, lookups go through their own pool of
//! [`LookupConnection`]s, which may busy-wait briefly for the answer.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use ::redis::io::tcp::TcpSettings;
use ::redis::{Client, Connection, ConnectionLike, IntoConnectionInfo, Script, Value};

#[cfg(unix)]
use super::lookup::LookupConnection;
use super::near::NearCache;
use super::payload::Generations;
use super::pool::{Manage, Pool};
use super::spin::SpinPolicy;
use super::store::{
    fresh_epoch, parse_epoch, Fetched, Holder, KeySet, SharedStore, StoreError, Written,
};
#[cfg(unix)]
use super::tracking::Tracking;
use crate::fork::PerProcess;

/// How to reach Redis.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://host:port/db` (or `rediss://`).
    pub url: String,
    /// Connections kept per process.
    pub pool_size: u32,
    /// Longest wait for a connection to be made or handed out.
    pub connect_timeout: Duration,
    /// Longest wait for any answer.
    pub read_timeout: Duration,
    /// Longest busy-wait for a lookup's answer before the thread sleeps
    /// (`Duration::ZERO`, the default restflow uses: always sleep). A spin
    /// that succeeds saves the thread's wake-up but burns the round trip
    /// as CPU; at saturation that CPU is worth more than the latency.
    pub read_spin: Duration,
    /// How many replicas must acknowledge every delete (an invalidation)
    /// before it counts as made: each is followed, on its connection, by
    /// `WAIT <n> <read_timeout>`, and one fewer replicas acknowledged is
    /// [`StoreError::Unreplicated`]. 0 (the default): no `WAIT`, a delete
    /// is made once the master made it. Why: replication is asynchronous,
    /// and a replica promoted before it received a delete (a failover)
    /// serves what the delete retired again.
    pub invalidation_replicas: u32,
}

/// A pooled connection that remembers whether it failed, so the pool
/// throws it away instead of handing out a socket with an unread reply.
pub struct PooledConn {
    inner: Connection,
    broken: Cell<bool>,
}

/// Makes command connections.
#[derive(Debug)]
struct Manager {
    client: Client,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl Manage for Manager {
    type Conn = PooledConn;

    fn connect(&self) -> Result<PooledConn, StoreError> {
        let connect = || {
            let inner = self
                .client
                .get_connection_with_timeout(self.connect_timeout)?;
            inner.set_read_timeout(Some(self.read_timeout))?;
            inner.set_write_timeout(Some(self.read_timeout))?;
            Ok(PooledConn {
                inner,
                broken: Cell::new(false),
            })
        };
        connect().map_err(|e: redis::RedisError| classify(&e))
    }

    fn has_broken(&self, conn: &PooledConn) -> bool {
        conn.broken.get() || !conn.inner.is_open()
    }
}

/// Makes lookup connections (to one node of a cluster too: see
/// [`super::cluster_lookup`]).
#[cfg(unix)]
#[derive(Debug)]
pub(super) struct LookupManager {
    pub(super) client: Client,
    pub(super) connect_timeout: Duration,
}

#[cfg(unix)]
impl Manage for LookupManager {
    type Conn = LookupConnection;

    fn connect(&self) -> Result<LookupConnection, StoreError> {
        LookupConnection::connect(self.client.get_connection_info(), self.connect_timeout)
            .unwrap_or_else(|| Err(std::io::Error::other("not a plain TCP address")))
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    fn has_broken(&self, conn: &LookupConnection) -> bool {
        conn.is_broken()
    }
}

/// One process's connections: a forked child makes its own, and neither
/// uses nor closes its parent's (see [`crate::fork`]).
struct Connections {
    commands: Pool<Manager>,
    /// Lookup connections, when the address is plain TCP.
    #[cfg(unix)]
    lookups: Option<Pool<LookupManager>>,
    spin: SpinPolicy,
}

/// What a near cache is made of, in each process that uses it.
struct NearSetting {
    capacity: usize,
    prefixes: Vec<String>,
}

/// One process's near cache and the channel that keeps it coherent.
struct Near {
    cache: Arc<NearCache>,
    /// Stops the channel's thread when the store is dropped.
    #[cfg(unix)]
    _tracking: Option<Tracking>,
}

/// A Redis store.
pub struct RedisStore {
    config: RedisConfig,
    client: Client,
    connections: PerProcess<Connections>,
    near_setting: Option<NearSetting>,
    near: PerProcess<Near>,
    lock: Script,
    unlock: Script,
    delete: Script,
    delete_entry: Script,
    fence: Script,
    generations: Script,
    put_current: Script,
    /// Whether a connection the server closed while it sat idle is
    /// replaced (see [`on_live_connection`]); off under Sentinel, where
    /// the closing is the news: see [`RedisStore::reporting_closed_idle`].
    replace_closed_idle: bool,
}

/// Reads counters, starting each missing or unreadable one at the epoch
/// given for it: `KEYS` are counters, `ARGV` holds for each an epoch and an
/// expiry in milliseconds (0: none). One script, so concurrent callers
/// agree on one epoch. A counter's text is valid as [`parse_epoch`] reads
/// it: a number below 10^19 in canonical decimal. (`pcall`: a counter of another type is garbage too;
/// `SET` replaces it.)
pub(super) const GENERATIONS: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.pcall('get', key)
  if type(v) ~= 'string' or #v > 19 or not (v == '0' or string.match(v, '^[1-9]%d*$')) then
    v = ARGV[2 * i - 1]
    local ttl = tonumber(ARGV[2 * i])
    if ttl > 0 then redis.call('set', key, v, 'px', ttl) else redis.call('set', key, v) end
  end
  out[i] = v
end
return out
";

/// Writes an entry only under current counters and an undeleted claim:
/// `KEYS` are the entry, the scope and version counters, the partition
/// counter if any, and the claim (lock or refresh key) or the fence
/// ([`FENCE`]) of the writer if it holds one; `ARGV` the payload, its
/// expiry in milliseconds (0: none), how many counters there are, the epoch
/// each counter must hold, then, with a claim or fence, its token and
/// `claim` or `fence`. A claim a delete of the entry marked
/// ([`DELETE_ENTRY`]: it holds `deleted:<token>`), or a fence that no
/// longer holds the token (a delete removed it), refuses the write: the
/// value was computed before the delete. The partition counter is made to
/// live at least as long as the entry: when it would not, it is given the
/// entry's expiry again on top (at most a day more), so the writes that
/// follow close behind leave it alone. Lengthening it is a change of the
/// counter to Redis, which tells every process's near cache to drop what
/// it read under it: extending it to the entry's expiry exactly made
/// every write in a partition drop the partition's near copies everywhere.
/// Returns 1 if it wrote, 2 if it
/// wrote over a key of another type (a list, a hash...: `MGET` reads one
/// as a missing entry, so only here can it be counted), 0 if a counter
/// moved on or the entry was deleted since the claim or fence was taken.
pub(super) const PUT_CURRENT: &str = r"
local counters = tonumber(ARGV[3])
for i = 1, counters do
  if redis.pcall('get', KEYS[i + 1]) ~= ARGV[i + 3] then return 0 end
end
if #KEYS > counters + 1 then
  local held = redis.pcall('get', KEYS[#KEYS])
  local token = ARGV[#ARGV - 1]
  if ARGV[#ARGV] == 'fence' then
    if held ~= token then return 0 end
  elseif held == 'deleted:' .. token then
    return 0
  end
end
local kind = redis.call('type', KEYS[1])['ok']
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('set', KEYS[1], ARGV[1], 'px', ttl)
else
  redis.call('set', KEYS[1], ARGV[1])
end
if counters == 3 then
  local partition = KEYS[4]
  if ttl == 0 then
    redis.call('persist', partition)
  else
    local left = redis.call('pttl', partition)
    if left >= 0 and left < ttl then
      redis.call('pexpire', partition, ttl + math.min(ttl, 86400000))
    end
  end
end
if kind ~= 'string' and kind ~= 'none' then return 2 end
return 1
";

/// What [`PUT_CURRENT`]'s answer says it did.
pub(super) fn written(answer: u8) -> Written {
    match answer {
        0 => Written::Refused,
        2 => Written::Replaced,
        _ => Written::Stored,
    }
}

/// How [`PUT_CURRENT`] checks what a writer holds.
pub(super) fn holder_kind(holder: Holder<'_>) -> &'static str {
    match holder {
        Holder::Claim(..) => "claim",
        Holder::Fence(..) => "fence",
    }
}

/// Values below this size are written under the plain read timeout.
const LARGE_PAYLOAD: usize = 1 << 20;

/// How long a write of `len` bytes may wait for its answer (and for room
/// to send), when that is longer than `read_timeout`: `read_timeout` plus
/// 10 ms per MB written.
///
/// Why: the server takes in a payload in time that grows with its size
/// (about 3 ms per MB through a script's arguments on loopback, more on a
/// loaded server), and the read timeout guards against a server that stopped
/// answering, not against a large value. Under the plain read timeout, a
/// 30 MB value timed out and counted as the store being down, which opens
/// the circuit breaker for every function on the store.
pub(super) fn payload_timeout(read_timeout: Duration, len: usize) -> Option<Duration> {
    (len >= LARGE_PAYLOAD).then(|| read_timeout + Duration::from_nanos(len as u64 * 10))
}

/// A connection whose read and write timeouts can be set: one server's, or
/// a cluster's (all its nodes').
pub(super) trait Timeouts {
    /// Sets both timeouts to `timeout`.
    fn set_timeouts(&self, timeout: Duration) -> redis::RedisResult<()>;
}

impl Timeouts for Connection {
    fn set_timeouts(&self, timeout: Duration) -> redis::RedisResult<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

impl Timeouts for ::redis::cluster::ClusterConnection {
    fn set_timeouts(&self, timeout: Duration) -> redis::RedisResult<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

/// Runs `run` (a command that writes `len` bytes of payload) on `conn`
/// under [`payload_timeout`], then puts `conn` back on `read_timeout`.
pub(super) fn writing<C: Timeouts, T>(
    conn: &mut C,
    (read_timeout, len): (Duration, usize),
    run: impl FnOnce(&mut C) -> redis::RedisResult<T>,
) -> redis::RedisResult<T> {
    match payload_timeout(read_timeout, len) {
        Some(longer) => waiting_longer(conn, (longer, read_timeout), run),
        None => run(conn),
    }
}

/// Asks the server for the replicas' acknowledgement of every write made
/// on `conn` so far (`WAIT`): how many of them acknowledged, waiting at
/// most `read_timeout` for `replicas` of them. The server answers once
/// they did or the time is up, so the connection waits for that answer
/// `read_timeout` longer than its usual read timeout: a `WAIT` that runs
/// its course is an answer, never a store that stopped answering.
pub(super) fn replicas_acknowledged<C: Timeouts + ConnectionLike>(
    conn: &mut C,
    replicas: u32,
    read_timeout: Duration,
) -> redis::RedisResult<u64> {
    let wait = wait_command(replicas, read_timeout);
    waiting_for_replicas(conn, read_timeout, |c| wait.query(c))
}

/// `WAIT <replicas> <read_timeout in ms>`.
pub(super) fn wait_command(replicas: u32, read_timeout: Duration) -> redis::Cmd {
    let mut wait = redis::cmd("WAIT");
    wait.arg(replicas).arg(millis(read_timeout));
    wait
}

/// Runs `run` (`WAIT`s of [`wait_command`]) on `conn` waiting
/// `read_timeout` longer than usual for each answer (see
/// [`replicas_acknowledged`]).
pub(super) fn waiting_for_replicas<C: Timeouts, T>(
    conn: &mut C,
    read_timeout: Duration,
    run: impl FnOnce(&mut C) -> redis::RedisResult<T>,
) -> redis::RedisResult<T> {
    let longer = read_timeout.saturating_add(read_timeout);
    waiting_longer(conn, (longer, read_timeout), run)
}

/// A delete that `acknowledged` replicas acknowledged, where `wanted` had
/// to (within `read_timeout`): made, or [`StoreError::Unreplicated`]
/// saying what that means and what to change.
pub(super) fn replicated(
    wanted: u32,
    acknowledged: u64,
    read_timeout: Duration,
) -> Result<(), StoreError> {
    if acknowledged >= u64::from(wanted) {
        return Ok(());
    }
    Err(StoreError::Unreplicated(format!(
        "the master made it, but only {acknowledged} of the {wanted} replicas \
         invalidation_replicas asks for acknowledged it within {} ms (the read timeout): \
         should the master fail before they receive it, a promoted replica serves the \
         invalidated entries again until they expire. Invalidate again once the replicas \
         are back (check the master's INFO replication), or lower invalidation_replicas to \
         the replicas that are up",
        millis(read_timeout)
    )))
}

/// Runs `run` on `conn` under the timeout `longer`, then puts `conn` back
/// on `read_timeout`.
fn waiting_longer<C: Timeouts, T>(
    conn: &mut C,
    (longer, read_timeout): (Duration, Duration),
    run: impl FnOnce(&mut C) -> redis::RedisResult<T>,
) -> redis::RedisResult<T> {
    conn.set_timeouts(longer)?;
    let answer = run(conn);
    // The command's own error wins (it says whether the store is down); a
    // connection that fails either is marked broken by the caller.
    let restored = conn.set_timeouts(read_timeout);
    answer.and_then(|value| restored.map(|()| value))
}

/// Milliseconds for Redis: at least 1 (0 would mean "no expiry" to the
/// scripts, and `PX 0` is refused).
pub(super) fn millis(ttl: Duration) -> u64 {
    ttl.as_millis().clamp(1, u128::from(u64::MAX)) as u64
}

/// Takes a lock (`KEYS[1]`) for a token (`ARGV[1]`) for `ARGV[2]` ms. A
/// lock without an expiry, or of another type than a string, is taken
/// over: no restflow holder makes one (every lock is a token set with
/// `PX`), so it is left over from something else, and respecting it would
/// make every caller wait, forever or until it expires, and compute
/// without storing.
pub(super) const LOCK_SCRIPT: &str = "\
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end \
if redis.call('pttl', KEYS[1]) == -1 or redis.call('type', KEYS[1])['ok'] ~= 'string' then \
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end \
return 0";

/// Deletes a key (`KEYS[1]`) and answers whether it existed. A key that is
/// already missing is written and deleted again, so that the delete is
/// still announced on every near cache's invalidation channel: a plain
/// `DEL` of a missing key changes nothing and announces nothing, yet a
/// near cache may hold a copy read under that key (the key vanished
/// without a message: `SWAPDB` replaced the database) and must hear that
/// the entry or counter was deleted. (`pcall`: a write refused under
/// `noeviction` leaves the delete done, only unannounced.)
pub(super) const DELETE_SCRIPT: &str = "\
if redis.call('del', KEYS[1]) == 1 then return 1 end \
local written = redis.pcall('set', KEYS[1], '', 'PX', 1000) \
if type(written) == 'table' and written.ok then redis.call('del', KEYS[1]) end \
return 0";

/// Releases a lock (`KEYS[1]`) if the token `ARGV[1]` still holds it, or
/// holds it marked by a delete of its entry ([`DELETE_ENTRY`]).
pub(super) const UNLOCK_SCRIPT: &str = "local holder = redis.pcall('get', KEYS[1]) \
if holder == ARGV[1] or holder == 'deleted:' .. ARGV[1] then \
     return redis.call('del', KEYS[1]) else return 0 end";

/// Deletes an entry (`KEYS[1]`, announced as [`DELETE_SCRIPT`] does),
/// marks the claims of its computations under way (`KEYS[2]`, `KEYS[3]`:
/// its lock and refresh keys) and removes the fence of its forced
/// refreshes (`KEYS[4]`, [`FENCE`]): a claim held by `token` is left
/// holding `deleted:<token>` for the rest of its life, so its holder's
/// write of the value it computed from the data before the delete is
/// refused ([`PUT_CURRENT`]), while other processes still see the key
/// locked until the holder frees it ([`UNLOCK_SCRIPT`]) or it expires, as
/// before; a forced refresh under way no longer finds its token in the
/// fence, and its write is refused too. A lock without an expiry (never
/// restflow's) is left alone. Returns 1 if the entry existed.
pub(super) const DELETE_ENTRY: &str = r"
local existed = redis.call('del', KEYS[1])
if existed == 0 then
  local written = redis.pcall('set', KEYS[1], '', 'PX', 1000)
  if type(written) == 'table' and written.ok then redis.call('del', KEYS[1]) end
end
redis.call('del', KEYS[4])
for i = 2, 3 do
  local holder = redis.pcall('get', KEYS[i])
  if type(holder) == 'string' and string.sub(holder, 1, 8) ~= 'deleted:' then
    local left = redis.call('pttl', KEYS[i])
    if left > 0 then redis.pcall('set', KEYS[i], 'deleted:' .. holder, 'PX', left) end
  end
end
return existed
";

/// Joins the fence of an entry's forced refreshes (`KEYS[1]`, see
/// [`SharedStore::fence`]): answers the token it holds, after starting it
/// at `ARGV[1]` when it holds none (missing, or not a string: garbage is
/// replaced), and makes it live at least `ARGV[2]` ms.
pub(super) const FENCE: &str = r"
local held = redis.pcall('get', KEYS[1])
if type(held) ~= 'string' then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
if redis.call('pttl', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('pexpire', KEYS[1], ARGV[2])
end
return held
";

pub(super) fn classify(error: &redis::RedisError) -> StoreError {
    if is_read_only(error) {
        StoreError::ReadOnly(error.to_string())
    } else if error.is_timeout() {
        StoreError::Timeout(error.to_string())
    } else if error.is_io_error() || error.is_connection_refusal() || error.is_connection_dropped()
    {
        StoreError::Unavailable(error.to_string())
    } else {
        StoreError::Protocol(error.to_string())
    }
}

/// Whether `error` is a replica refusing a write: `READONLY`, or, from a
/// script, Redis's `ERR Error running script ... -READONLY ...` (Redis 6
/// and 7 wrap the refusal of a write a script makes; Valkey does not).
fn is_read_only(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        || error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
            && error
                .detail()
                .is_some_and(|detail| detail.contains("-READONLY "))
}

impl RedisStore {
    /// A store for `config`. Nothing is connected until the first command.
    pub fn new(config: RedisConfig) -> Result<Self, StoreError> {
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| StoreError::Protocol(format!("bad Redis URL {:?}: {e}", config.url)))?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        // No `CLIENT SETINFO` pair when connecting: the crate reads each
        // set-up answer with the whole connect timeout, going on after one
        // times out, so against a stalled server each set-up command costs
        // a CONNECT_TIMEOUT (and Redis before 7.2 refuses the pair anyway).
        let redis_settings = info.redis_settings().clone().set_skip_set_lib_name();
        let info = info.set_redis_settings(redis_settings);
        let client = Client::open(info).map_err(|e| classify(&e))?;
        Ok(RedisStore {
            config,
            client,
            connections: PerProcess::new(),
            lock: Script::new(LOCK_SCRIPT),
            unlock: Script::new(UNLOCK_SCRIPT),
            delete: Script::new(DELETE_SCRIPT),
            delete_entry: Script::new(DELETE_ENTRY),
            fence: Script::new(FENCE),
            generations: Script::new(GENERATIONS),
            put_current: Script::new(PUT_CURRENT),
            near_setting: None,
            near: PerProcess::new(),
            replace_closed_idle: true,
        })
    }

    /// Fails a call whose pooled connection the server closed while it sat
    /// idle, instead of making it again on another connection. For the
    /// Sentinel store: Sentinel closes every client connection of a master
    /// it demotes, and the failed call is what makes that store ask the
    /// sentinels for the new master; made again at the same address, a
    /// lookup would read the demoted master, a replica now, whose data may
    /// lag behind an invalidation made on the new master.
    pub(super) fn reporting_closed_idle(mut self) -> Self {
        self.replace_closed_idle = false;
        self
    }

    /// The server's address (`host:port`, or a socket's path): never its
    /// credentials, so it may be logged.
    pub(super) fn address(&self) -> String {
        self.client.get_connection_info().addr().to_string()
    }

    /// Keeps a near cache of at most `capacity` entries in each process
    /// (see [`super::near`]), coherent through Redis's invalidation
    /// messages for the keys that start with one of `prefixes` (every key
    /// when empty: give the prefixes of every key this store reads, or
    /// none). Only over plain TCP (`redis://`): over TLS or a Unix socket
    /// there is no near cache.
    pub fn with_near_cache(mut self, capacity: usize, prefixes: Vec<String>) -> Self {
        let tcp = matches!(
            self.client.get_connection_info().addr(),
            ::redis::ConnectionAddr::Tcp(..)
        );
        if tcp && cfg!(unix) {
            self.near_setting = Some(NearSetting { capacity, prefixes });
        }
        self
    }

    /// This process's connections, made on first use.
    fn connections(&self) -> &Connections {
        self.connections.get_or_init(|| {
            let size = self.config.pool_size as usize;
            let wait = self.config.connect_timeout;
            let manager = Manager {
                client: self.client.clone(),
                connect_timeout: self.config.connect_timeout,
                read_timeout: self.config.read_timeout,
            };
            #[cfg(unix)]
            let lookups = matches!(
                self.client.get_connection_info().addr(),
                ::redis::ConnectionAddr::Tcp(..)
            )
            .then(|| {
                let manager = LookupManager {
                    client: self.client.clone(),
                    connect_timeout: self.config.connect_timeout,
                };
                Pool::new(manager, size, wait)
            });
            Connections {
                commands: Pool::new(manager, size, wait),
                #[cfg(unix)]
                lookups,
                spin: SpinPolicy::new(self.config.read_spin),
            }
        })
    }

    /// Runs one lookup command on a lookup connection; `None` when the
    /// address is not plain TCP.
    #[cfg(unix)]
    fn lookup(&self, packed: &[u8]) -> Option<Result<Value, StoreError>> {
        let connections = self.connections();
        let pool = connections.lookups.as_ref()?;
        Some(on_live_connection(pool, self.replace_closed_idle, |conn| {
            // A failed query leaves the connection broken by itself.
            conn.query(packed, self.config.read_timeout, &connections.spin)
        }))
    }

    #[cfg(not(unix))]
    fn lookup(&self, _packed: &[u8]) -> Option<Result<Value, StoreError>> {
        None
    }

    fn with<T>(
        &self,
        mut run: impl FnMut(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let pool = &self.connections().commands;
        on_live_connection(pool, self.replace_closed_idle, |conn| {
            run(&mut conn.inner).inspect_err(|_| conn.broken.set(true))
        })
    }

    /// [`Self::with`] for a command that writes `len` bytes of payload: on
    /// a large one, the connection waits as [`payload_timeout`] says for
    /// that command, then goes back to the read timeout.
    fn with_payload<T>(
        &self,
        len: usize,
        mut run: impl FnMut(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let sized = (self.config.read_timeout, len);
        self.with(|c| writing(c, sized, &mut run))
    }

    /// [`Self::with`] for a delete (an invalidation): with
    /// [`RedisConfig::invalidation_replicas`] set, followed on the same
    /// connection by a `WAIT` for that many replicas (`WAIT` counts the
    /// writes of its own connection), and failed as
    /// [`StoreError::Unreplicated`] when fewer acknowledged it. The delete
    /// is made either way: only its replication is in doubt.
    fn deleting<T>(
        &self,
        mut run: impl FnMut(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let (wanted, read_timeout) = (self.config.invalidation_replicas, self.config.read_timeout);
        if wanted == 0 {
            return self.with(run);
        }
        let (done, acknowledged) = self.with(|c| {
            let done = run(c)?;
            Ok((done, replicas_acknowledged(c, wanted, read_timeout)?))
        })?;
        replicated(wanted, acknowledged, read_timeout).map(|()| done)
    }
}

/// Whether `error` is the server having closed the connection (end of
/// file, reset, broken pipe), rather than a timeout or an answer.
fn closed_by_server(error: &redis::RedisError) -> bool {
    error.is_connection_dropped() && !error.is_timeout()
}

/// Runs `run` on a connection of `pool`, which must mark the connection
/// broken when it fails. Unless `replace_closed` is off, a connection that
/// sat idle in the pool and turns out closed by the server (`CLIENT KILL`, the server's idle `timeout`, a
/// restart) is thrown away and `run` made again on the next one, up to the
/// pool's size plus one in all: such a connection says nothing about the
/// server now, and failing the call (a BYPASS, a step towards opening the
/// breaker) for each dead idle connection would turn a server that is up
/// into one skipped for every function. Made again only then: a server
/// that closed the connection while it sat idle never read the command.
/// (Should it have run the command and closed the connection before
/// answering, making it again is harmless: every command restflow sends
/// leaves the store as it was after the first, and a lock script made
/// again finds the lock taken, by this caller's own token, so the caller
/// waits for it as for another's and computes without storing.) A
/// connection made for this call that fails fails the call.
pub(super) fn on_live_connection<M: Manage, T>(
    pool: &Pool<M>,
    replace_closed: bool,
    mut run: impl FnMut(&mut M::Conn) -> redis::RedisResult<T>,
) -> Result<T, StoreError> {
    let mut attempts = if replace_closed {
        pool.max_size() + 1
    } else {
        1
    };
    loop {
        let mut conn = pool.get()?;
        match run(&mut conn) {
            Ok(value) => return Ok(value),
            Err(error) => {
                attempts -= 1;
                if attempts == 0 || !(conn.reused() && closed_by_server(&error)) {
                    return Err(classify(&error));
                }
            }
        }
    }
}

/// Forgets keys in this process's near cache when dropped: after a write
/// to them has returned (or failed, when it may still have been made), so
/// this process reads its own writes without waiting for their
/// invalidation messages.
pub(super) struct ForgetAfter<'a, const N: usize> {
    near: Option<&'a NearCache>,
    keys: [&'a str; N],
}

impl<'a, const N: usize> ForgetAfter<'a, N> {
    /// Forgets `keys` in `near` (if started) when dropped.
    pub(super) fn new(near: Option<&'a NearCache>, keys: [&'a str; N]) -> Self {
        ForgetAfter { near, keys }
    }
}

impl<const N: usize> Drop for ForgetAfter<'_, N> {
    fn drop(&mut self) {
        if let Some(near) = self.near {
            near.invalidate(self.keys.iter().map(|key| key.as_bytes()));
        }
    }
}

impl RedisStore {
    fn forget_after<'a, const N: usize>(&'a self, keys: [&'a str; N]) -> ForgetAfter<'a, N> {
        ForgetAfter::new(self.near_if_started(), keys)
    }
}

/// A counter as `MGET` answers it: `None` when missing or unreadable.
fn counter(value: &Value) -> Option<u64> {
    match value {
        Value::BulkString(bytes) => parse_epoch(bytes),
        _ => None,
    }
}

/// The counters of `keys`, in the order the scripts and
/// [`generations_from`] expect: scope, version, then the partition's.
pub(super) fn counter_names(keys: &KeySet) -> Vec<&str> {
    let mut names: Vec<&str> = vec![&keys.scope, &keys.version];
    if let Some(partition) = &keys.partition {
        names.push(partition);
    }
    names
}

/// The generations in counters read in [`counter_names`] order; `None`
/// when one is missing or unreadable.
pub(super) fn generations_from(values: &[Value]) -> Option<Generations> {
    Some(Generations {
        scope: counter(values.first()?)?,
        version: counter(values.get(1)?)?,
        partition: match values.get(2) {
            Some(value) => counter(value)?,
            None => 0,
        },
    })
}

/// The generations the generations script answered for `expected`
/// counters.
pub(super) fn generations_answer(
    answer: Value,
    expected: usize,
) -> Result<Generations, StoreError> {
    match answer {
        Value::Array(values) if values.len() == expected => generations_from(&values),
        _ => None,
    }
    .ok_or_else(|| StoreError::Protocol("the generations script answered garbage".into()))
}

/// The names one lookup reads, in the order [`fetched_from`] expects:
/// the entry, the lock, then the counters.
pub(super) fn fetch_names(keys: &KeySet) -> Vec<&str> {
    let mut names: Vec<&str> = vec![&keys.data, &keys.lock];
    names.extend(counter_names(keys));
    names
}

/// The lookup of `keys` as a packed Redis command, for a caller that drives
/// its own socket (an event loop).
pub fn fetch_command(keys: &KeySet) -> Vec<u8> {
    redis::cmd("MGET")
        .arg(fetch_names(keys))
        .get_packed_command()
}

/// What a lookup found, from Redis's answer to [`fetch_command`].
pub fn fetched_from(answer: Value) -> Result<Fetched, StoreError> {
    fetched(answer, None)
}

/// What a lookup found, checking the answer has `expected` values when
/// the caller knows how many names it asked for.
pub(super) fn fetched(answer: Value, expected: Option<usize>) -> Result<Fetched, StoreError> {
    let Value::Array(mut values) = answer else {
        return Err(StoreError::Protocol(format!(
            "unexpected MGET answer {answer:?}"
        )));
    };
    if expected.is_some_and(|n| n != values.len()) || !(4..=5).contains(&values.len()) {
        return Err(StoreError::Protocol(
            "MGET answered the wrong number of values".into(),
        ));
    }
    let payload = match std::mem::replace(&mut values[0], Value::Nil) {
        Value::Nil => None,
        Value::BulkString(bytes) => Some(bytes),
        other => return Err(StoreError::Protocol(format!("unexpected entry {other:?}"))),
    };
    Ok(Fetched {
        payload,
        locked: !matches!(values[1], Value::Nil),
        generations: generations_from(&values[2..]),
    })
}

/// [`SharedStore::near_sync`] for a near cache with one channel: writes a
/// sync key with `write` (which expires it after the timeout) and waits
/// for its invalidation, again if the channel went down meanwhile.
pub(super) fn sync_near(
    near: &NearCache,
    timeout: Duration,
    write: impl Fn(&str) -> Result<(), StoreError>,
) -> Result<bool, StoreError> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let deadline = std::time::Instant::now() + timeout;
    // A channel that goes down meanwhile is waited for again.
    while let Some(ticket) = near.wait_live(deadline) {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = format!("{}{n}", near.sync_marker());
        match write(&key) {
            Ok(()) if near.wait_synced(ticket, &key, deadline) => return Ok(true),
            Ok(()) => {}
            // A pooled connection that died with the channel fails
            // once and is replaced: try again, after a pause.
            Err(error) if std::time::Instant::now() >= deadline => return Err(error),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
        if std::time::Instant::now() >= deadline {
            break;
        }
    }
    Ok(false)
}

impl SharedStore for RedisStore {
    fn near_sync(&self, timeout: Duration) -> Result<bool, StoreError> {
        let Some(near) = self.near() else {
            return Ok(false);
        };
        sync_near(near, timeout, |key| {
            self.with(|c| {
                redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("PX")
                    .arg(millis(timeout))
                    .query::<()>(c)
            })
        })
    }

    fn near_if_started(&self) -> Option<&NearCache> {
        self.near.get().map(|near| &*near.cache)
    }

    fn near(&self) -> Option<&NearCache> {
        let setting = self.near_setting.as_ref()?;
        let near = self.near.get_or_init(|| {
            let marker = format!(
                "{}restflow:near-sync:{}:",
                setting.prefixes.first().map_or("", String::as_str),
                std::process::id()
            );
            let cache = Arc::new(NearCache::new(setting.capacity, marker));
            // A channel that cannot start (no thread to be had) leaves the
            // cache down: it then serves and keeps nothing.
            #[cfg(unix)]
            let tracking = Tracking::start(
                self.client.get_connection_info().clone(),
                self.config.connect_timeout.max(self.config.read_timeout),
                setting.prefixes.clone(),
                Arc::clone(&cache),
            )
            .ok();
            Near {
                cache,
                #[cfg(unix)]
                _tracking: tracking,
            }
        });
        Some(&near.cache)
    }

    fn fetch(&self, keys: &KeySet) -> Result<Fetched, StoreError> {
        let names = fetch_names(keys);
        let command = redis::cmd("MGET").arg(&names).get_packed_command();
        let answer = match self.lookup(&command) {
            Some(answer) => answer?,
            None => self.with(|c| c.req_packed_command(&command))?,
        };
        fetched(answer, Some(names.len()))
    }

    fn put(&self, key: &str, payload: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
        let _forget = self.forget_after([key]);
        self.with_payload(payload.len(), |c| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key).arg(payload);
            if let Some(ttl) = ttl {
                cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
            }
            cmd.query::<()>(c)
        })
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let _forget = self.forget_after([key]);
        self.deleting(|c| self.delete.key(key).invoke::<u64>(c))
            .map(|n| n > 0)
    }

    /// Every key on one connection, so one `WAIT` (with
    /// [`RedisConfig::invalidation_replicas`]) covers them all.
    fn delete_many(&self, keys: &[String]) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let removed = self.deleting(|c| {
            keys.iter().try_fold(0, |removed, key| {
                Ok(removed + self.delete.key(key).invoke::<u64>(c)?.min(1))
            })
        });
        // After the deletes (made, or maybe made), as `forget_after` does.
        if let Some(near) = self.near_if_started() {
            near.invalidate(keys.iter().map(|key| key.as_bytes()));
        }
        removed
    }

    fn generations(&self, keys: &KeySet, floor: Duration) -> Result<Generations, StoreError> {
        let names = counter_names(keys);
        let mut invocation = self.generations.prepare_invoke();
        for name in &names {
            invocation.key(*name);
        }
        invocation
            .arg(fresh_epoch())
            .arg(0)
            .arg(fresh_epoch())
            .arg(0);
        if keys.partition.is_some() {
            invocation.arg(fresh_epoch()).arg(millis(floor));
        }
        let answer: Value = self.with(|c| invocation.invoke(c))?;
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
        let _forget = self.forget_after([keys.data.as_str()]);
        let mut invocation = self.put_current.prepare_invoke();
        invocation
            .key(&keys.data)
            .key(&keys.scope)
            .key(&keys.version);
        invocation
            .arg(payload)
            .arg(ttl.map_or(0, millis))
            .arg(2 + u8::from(keys.partition.is_some()))
            .arg(generations.scope)
            .arg(generations.version);
        if let Some(partition) = &keys.partition {
            invocation.key(partition).arg(generations.partition);
        }
        if let Some(holder) = holder {
            let (held, token) = holder.parts();
            invocation.key(held).arg(token).arg(holder_kind(holder));
        }
        self.with_payload(payload.len(), |c| invocation.invoke::<u8>(c))
            .map(written)
    }

    fn delete_entry(&self, keys: &KeySet) -> Result<bool, StoreError> {
        let fence = keys.fence();
        let _forget = self.forget_after([keys.data.as_str(), &keys.lock, &keys.refresh]);
        let mut invocation = self.delete_entry.prepare_invoke();
        invocation
            .key(&keys.data)
            .key(&keys.lock)
            .key(&keys.refresh)
            .key(&fence);
        self.deleting(|c| invocation.invoke::<u64>(c))
            .map(|n| n > 0)
    }

    fn fence(&self, keys: &KeySet, candidate: &str, ttl: Duration) -> Result<String, StoreError> {
        // Not read by a lookup: nothing near to forget.
        let fence = keys.fence();
        let mut invocation = self.fence.prepare_invoke();
        invocation.key(&fence).arg(candidate).arg(millis(ttl));
        self.with(|c| invocation.invoke::<String>(c))
    }

    fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        let millis = millis(ttl);
        self.with(|c| self.lock.key(key).arg(token).arg(millis).invoke::<i64>(c))
            .map(|taken| taken == 1)
    }

    fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        self.with(|c| self.unlock.key(key).arg(token).invoke::<()>(c))
    }

    /// `INFO`'s server and memory facts a health check reports: the
    /// version, and the eviction policy (which decides whether generation
    /// counters can be evicted; see the README's eviction advice); and
    /// the `save` and `appendonly` settings when `CONFIG` answers.
    fn server_info(&self) -> Result<Vec<(String, String)>, StoreError> {
        const WANTED: [&str; 5] = [
            "redis_version",
            "valkey_version",
            "server_name",
            "maxmemory",
            "maxmemory_policy",
        ];
        let text: String = self.with(|c| redis::cmd("INFO").query(c))?;
        let mut facts: Vec<(String, String)> = text
            .lines()
            .filter_map(|line| line.trim_end().split_once(':'))
            .filter(|(name, _)| WANTED.contains(name))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        // Persistence, which decides whether a crashed server can come back
        // from a snapshot older than an invalidation (see the README's
        // persistence advice). One name per `CONFIG GET` (Redis 6 takes no
        // more); left out where `CONFIG` is refused (managed servers).
        for name in ["save", "appendonly"] {
            let answer: Result<Vec<String>, _> =
                self.with(|c| redis::cmd("CONFIG").arg("GET").arg(name).query(c));
            if let Ok([found, value]) = answer.as_deref() {
                facts.push((found.clone(), value.clone()));
            }
        }
        Ok(facts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(line: &str) -> StoreError {
        let error = redis::parse_redis_value(line.as_bytes())
            .and_then(Value::extract_error)
            .expect_err("an error reply");
        classify(&error)
    }

    /// Connections numbered in the order made, broken when marked.
    struct Numbered(std::sync::atomic::AtomicUsize);

    impl Manage for Numbered {
        type Conn = (usize, Cell<bool>);
        fn connect(&self) -> Result<Self::Conn, StoreError> {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok((n, Cell::new(false)))
        }
        fn has_broken(&self, conn: &Self::Conn) -> bool {
            conn.1.get()
        }
    }

    fn failed(conn: &(usize, Cell<bool>), kind: std::io::ErrorKind) -> redis::RedisResult<usize> {
        conn.1.set(true);
        Err(std::io::Error::from(kind).into())
    }

    #[test]
    fn connections_closed_while_idle_are_replaced_not_reported() {
        let pool = Pool::new(Numbered(0.into()), 3, Duration::ZERO);
        let held: Vec<_> = (0..3).map(|_| pool.get().unwrap()).collect();
        drop(held); // three idle connections, 0 to 2
                    // The server closed all three meanwhile: the call goes on to a new one.
        let answer = on_live_connection(&pool, true, |conn| match conn.0 {
            0..=2 => failed(conn, std::io::ErrorKind::UnexpectedEof),
            n => Ok(n),
        });
        assert_eq!(answer, Ok(3));
        assert_eq!(pool.open(), 1);
        // A connection made for the call that fails fails it: the server
        // is down (3 is reused and fails first; 4 is made, and fails).
        let answer = on_live_connection(&pool, true, |conn| {
            failed(conn, std::io::ErrorKind::BrokenPipe)
        });
        assert!(
            matches!(answer, Err(StoreError::Unavailable(_))),
            "{answer:?}"
        );
        // A timeout is never made again, even on a connection that sat
        // idle: the server is slow, and the answer may still come.
        drop(pool.get().unwrap());
        let mut tries = 0;
        let answer = on_live_connection(&pool, true, |conn| {
            tries += 1;
            failed(conn, std::io::ErrorKind::TimedOut)
        });
        assert!(matches!(answer, Err(StoreError::Timeout(_))), "{answer:?}");
        assert_eq!(tries, 1);
        // Not replacing (Sentinel): the first closed connection fails the call.
        drop(pool.get().unwrap());
        let answer = on_live_connection(&pool, false, |conn| {
            failed(conn, std::io::ErrorKind::UnexpectedEof)
        });
        assert!(
            matches!(answer, Err(StoreError::Unavailable(_))),
            "{answer:?}"
        );
        assert_eq!(pool.open(), 0);
    }

    /// Reads one command (an array of bulk strings) off `conn`: its
    /// arguments, the name first; `None` at end of file.
    fn read_args(conn: &mut std::io::BufReader<std::net::TcpStream>) -> Option<Vec<Vec<u8>>> {
        use std::io::{BufRead, Read};
        let mut line = String::new();
        if conn.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let count: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
        let mut args = Vec::with_capacity(count);
        for _ in 0..count {
            line.clear();
            conn.read_line(&mut line).ok()?;
            let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
            let mut bytes = vec![0; len + 2];
            conn.read_exact(&mut bytes).ok()?;
            bytes.truncate(len);
            args.push(bytes);
        }
        Some(args)
    }

    /// A server that answers `SET` after taking `pause` over it (as a
    /// server takes a while over a large value), and `+OK` to anything
    /// else (the client's set-up); the lengths of the values it was sent.
    fn slow_setter(pause: Duration) -> (String, std::thread::JoinHandle<Vec<usize>>) {
        fake_redis(Vec::new(), move |sets, args| {
            if String::from_utf8_lossy(&args[0]).eq_ignore_ascii_case("SET") {
                sets.push(args.iter().map(Vec::len).max().unwrap_or(0));
                std::thread::sleep(pause);
            }
            b"+OK\r\n".to_vec()
        })
    }

    /// A server on a free loopback port that accepts one connection and
    /// answers each command (its arguments, the name first; never none)
    /// with what `answer` makes of it, keeping what it notes in `state`; `state` once
    /// the client hung up. The URL to connect to, and the server's thread.
    fn fake_redis<S: Send + 'static>(
        mut state: S,
        mut answer: impl FnMut(&mut S, Vec<Vec<u8>>) -> Vec<u8> + Send + 'static,
    ) -> (String, std::thread::JoinHandle<S>) {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut writer = conn.try_clone().unwrap();
            let mut reader = std::io::BufReader::new(conn);
            while let Some(args) = read_args(&mut reader) {
                let answered = if args.is_empty() {
                    b"-ERR empty command\r\n".to_vec()
                } else {
                    answer(&mut state, args)
                };
                if writer.write_all(&answered).is_err() {
                    break;
                }
            }
            state
        });
        (url, server)
    }

    fn store_at(url: &str, read_timeout: Duration) -> RedisStore {
        RedisStore::new(RedisConfig {
            url: url.to_owned(),
            pool_size: 1,
            connect_timeout: Duration::from_secs(2),
            read_timeout,
            read_spin: Duration::ZERO,
            invalidation_replicas: 0,
        })
        .unwrap()
    }

    #[test]
    fn a_large_value_may_take_longer_than_the_read_timeout_to_write() {
        // 64 MB: 640 ms more than the 100 ms read timeout, for a server
        // that takes 400 ms over it.
        let (url, server) = slow_setter(Duration::from_millis(400));
        let store = store_at(&url, Duration::from_millis(100));
        let value = vec![b'x'; 64 << 20];
        store.put("big", &value, None).unwrap();
        // The connection is back on the read timeout: a small write the
        // server takes as long over fails.
        let error = store.put("small", b"x", None).unwrap_err();
        assert!(matches!(error, StoreError::Timeout(_)), "{error:?}");
        drop(store);
        assert_eq!(server.join().unwrap(), vec![64 << 20, "small".len()]);
    }

    /// A master as `WAIT` sees it: answers a script `:1` (a key deleted),
    /// each `WAIT` with the next of `acknowledged` after `wait_pause` (as
    /// Redis answers a `WAIT` whose replicas are missing once its timeout
    /// ran out), a `SET` after `set_pause`, and `+OK` to anything else;
    /// the commands it was sent, of the connection it accepted.
    fn master(
        acknowledged: Vec<u64>,
        (wait_pause, set_pause): (Duration, Duration),
    ) -> (String, std::thread::JoinHandle<Vec<Vec<String>>>) {
        let mut acknowledged = acknowledged.into_iter();
        fake_redis(Vec::new(), move |commands, args| {
            let mut words: Vec<String> = args
                .iter()
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect();
            words[0].make_ascii_uppercase();
            let answer = match words[0].as_str() {
                "EVALSHA" => ":1\r\n".to_owned(),
                "WAIT" => {
                    std::thread::sleep(wait_pause);
                    format!(":{}\r\n", acknowledged.next().unwrap())
                }
                "SET" => {
                    std::thread::sleep(set_pause);
                    "+OK\r\n".to_owned()
                }
                _ => "+OK\r\n".to_owned(),
            };
            commands.push(words);
            answer.into_bytes()
        })
    }

    fn waiting_store(url: &str, read_timeout: Duration, replicas: u32) -> RedisStore {
        RedisStore::new(RedisConfig {
            invalidation_replicas: replicas,
            ..store_at(url, read_timeout).config
        })
        .unwrap()
    }

    /// The commands' names, and `WAIT`'s arguments.
    fn sent(commands: &[Vec<String>]) -> Vec<String> {
        commands
            .iter()
            .map(|words| match words[0].as_str() {
                "WAIT" => words.join(" "),
                name => name.to_owned(),
            })
            .collect()
    }

    fn keys() -> KeySet {
        KeySet {
            data: "d".into(),
            scope: "s".into(),
            partition: None,
            version: "v".into(),
            lock: "l".into(),
            refresh: "r".into(),
        }
    }

    #[test]
    fn every_delete_waits_for_the_replicas_on_its_own_connection() {
        let read_timeout = Duration::from_millis(250);
        let (url, server) = master(vec![2, 3, 2], (Duration::ZERO, Duration::ZERO));
        let store = waiting_store(&url, read_timeout, 2);
        assert_eq!(store.delete("k"), Ok(true));
        // Several counters: one WAIT after them all.
        assert_eq!(store.delete_many(&["a".into(), "b".into()]), Ok(2));
        assert_eq!(store.delete_entry(&keys()), Ok(true));
        // Not a delete: no WAIT.
        store.put("p", b"x", None).unwrap();
        drop(store);
        let wait = "WAIT 2 250".to_owned();
        let commands = sent(&server.join().unwrap());
        assert_eq!(
            commands,
            ["EVALSHA", &wait, "EVALSHA", "EVALSHA", &wait, "EVALSHA", &wait, "SET"]
        );
    }

    #[test]
    fn a_delete_fewer_replicas_acknowledged_is_reported_not_a_store_down() {
        // The WAIT runs its course (the read timeout) and answers 1 of 2:
        // an answer, not a timeout.
        let read_timeout = Duration::from_millis(250);
        let (url, server) = master(vec![1], (read_timeout, 2 * read_timeout));
        let store = waiting_store(&url, read_timeout, 2);
        let error = store.delete("k").unwrap_err();
        let StoreError::Unreplicated(why) = &error else {
            panic!("{error:?}")
        };
        assert!(
            why.starts_with(
                "the master made it, but only 1 of the 2 replicas invalidation_replicas asks \
                 for acknowledged it within 250 ms"
            ),
            "{why}"
        );
        assert!(!error.is_connection_failure());
        // The connection is back on the read timeout: a write the server
        // takes longer over than that times out.
        let slow = store.put("p", b"x", None).unwrap_err();
        assert!(matches!(slow, StoreError::Timeout(_)), "{slow:?}");
        drop(store);
        assert_eq!(
            sent(&server.join().unwrap()),
            ["EVALSHA", "WAIT 2 250", "SET"]
        );
    }

    #[test]
    fn without_invalidation_replicas_a_delete_does_not_wait() {
        let (url, server) = master(vec![], (Duration::ZERO, Duration::ZERO));
        let store = waiting_store(&url, Duration::from_secs(2), 0);
        assert_eq!(store.delete("k"), Ok(true));
        assert_eq!(store.delete_many(&["a".into()]), Ok(1));
        assert_eq!(store.delete_entry(&keys()), Ok(true));
        drop(store);
        assert_eq!(
            sent(&server.join().unwrap()),
            ["EVALSHA", "EVALSHA", "EVALSHA"]
        );
    }

    #[test]
    fn only_large_payloads_wait_longer() {
        let second = Duration::from_secs(1);
        assert_eq!(payload_timeout(second, (1 << 20) - 1), None);
        assert_eq!(
            payload_timeout(second, 100 << 20),
            Some(second + Duration::from_nanos(10 * (100 << 20)))
        );
    }

    #[test]
    fn a_replica_refusing_a_write_is_read_only() {
        // As Redis 7 and Valkey answer a write, and Redis 6/7 a script's.
        for line in [
            "-READONLY You can't write against a read only replica.\r\n",
            "-ERR Error running script (call to f_67ed): @user_script:1: @user_script: 1: \
             -READONLY You can't write against a read only replica.\r\n",
        ] {
            assert!(matches!(answer(line), StoreError::ReadOnly(_)), "{line}");
        }
        assert!(matches!(
            answer("-ERR wrong number of arguments\r\n"),
            StoreError::Protocol(_)
        ));
    }
}
