//! The Redis (and Valkey) store: pooled synchronous connections with
//! `TCP_NODELAY`, a read timeout on every command, fresh connections after
//! a fork. Over plain TCP, lookups go through their own pool of
//! [`LookupConnection`]s, which may busy-wait briefly for the answer.

use std::cell::Cell;
use std::time::Duration;

use ::redis::io::tcp::TcpSettings;
use ::redis::{Client, Connection, ConnectionLike, IntoConnectionInfo, Script, Value};

#[cfg(unix)]
use super::lookup::LookupConnection;
use super::payload::Generations;
use super::pool::{Manage, Pool};
use super::spin::SpinPolicy;
use super::store::{Fetched, KeySet, SharedStore, StoreError};
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
    /// (`Duration::ZERO`: always sleep). See [`super::spin`].
    pub read_spin: Duration,
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

/// Makes lookup connections.
#[cfg(unix)]
#[derive(Debug)]
struct LookupManager {
    client: Client,
    connect_timeout: Duration,
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

/// A Redis store.
pub struct RedisStore {
    config: RedisConfig,
    client: Client,
    connections: PerProcess<Connections>,
    lock: Script,
    unlock: Script,
}

/// Takes a lock (`KEYS[1]`) for a token (`ARGV[1]`) for `ARGV[2]` ms. A
/// lock without an expiry is taken over: no restflow holder makes one
/// (every lock is set with `PX`), so it is left over from something else,
/// and respecting it would make every caller wait, forever.
const LOCK_SCRIPT: &str = "\
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end \
if redis.call('pttl', KEYS[1]) == -1 then \
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end \
return 0";

fn classify(error: &redis::RedisError) -> StoreError {
    if error.is_timeout() {
        StoreError::Timeout(error.to_string())
    } else if error.is_io_error() || error.is_connection_refusal() || error.is_connection_dropped()
    {
        StoreError::Unavailable(error.to_string())
    } else {
        StoreError::Protocol(error.to_string())
    }
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
        let client = Client::open(info).map_err(|e| classify(&e))?;
        Ok(RedisStore {
            config,
            client,
            connections: PerProcess::new(),
            lock: Script::new(LOCK_SCRIPT),
            unlock: Script::new(
                "if redis.call('get', KEYS[1]) == ARGV[1] then \
                 return redis.call('del', KEYS[1]) else return 0 end",
            ),
        })
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
        Some(pool.get().and_then(|mut conn| {
            conn.query(packed, self.config.read_timeout, &connections.spin)
                .map_err(|e| classify(&e))
        }))
    }

    #[cfg(not(unix))]
    fn lookup(&self, _packed: &[u8]) -> Option<Result<Value, StoreError>> {
        None
    }

    fn with<T>(
        &self,
        run: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self.connections().commands.get()?;
        match run(&mut conn.inner) {
            Ok(value) => Ok(value),
            Err(error) => {
                conn.broken.set(true);
                Err(classify(&error))
            }
        }
    }
}

fn counter(value: &Value) -> Result<u64, StoreError> {
    match value {
        Value::Nil => Ok(0),
        Value::BulkString(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                StoreError::Protocol("a generation counter that is not a number".into())
            }),
        Value::Int(n) => Ok(*n as u64),
        other => Err(StoreError::Protocol(format!(
            "unexpected counter {other:?}"
        ))),
    }
}

/// The names one lookup reads, in the order [`fetched_from`] expects.
fn fetch_names(keys: &KeySet) -> Vec<&str> {
    let mut names: Vec<&str> = vec![&keys.data, &keys.scope, &keys.version, &keys.lock];
    if let Some(partition) = &keys.partition {
        names.push(partition);
    }
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
fn fetched(answer: Value, expected: Option<usize>) -> Result<Fetched, StoreError> {
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
        generations: Generations {
            scope: counter(&values[1])?,
            version: counter(&values[2])?,
            partition: match values.get(4) {
                Some(value) => counter(value)?,
                None => 0,
            },
        },
        locked: !matches!(values[3], Value::Nil),
    })
}

impl SharedStore for RedisStore {
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
        self.with(|c| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key).arg(payload);
            if let Some(ttl) = ttl {
                cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
            }
            cmd.query::<()>(c)
        })
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.with(|c| redis::cmd("DEL").arg(key).query::<u64>(c))
            .map(|n| n > 0)
    }

    fn bump(&self, key: &str) -> Result<u64, StoreError> {
        self.with(|c| redis::cmd("INCR").arg(key).query::<u64>(c))
    }

    fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, StoreError> {
        let millis = ttl.as_millis().max(1) as u64;
        self.with(|c| self.lock.key(key).arg(token).arg(millis).invoke::<i64>(c))
            .map(|taken| taken == 1)
    }

    fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        self.with(|c| self.unlock.key(key).arg(token).invoke::<()>(c))
    }
}
