//! The invalidation channel of the near cache: one connection per process
//! on which Redis reports every change to the store's keys (server-assisted
//! client-side caching, `CLIENT TRACKING ... BCAST`), read by one thread
//! that forgets the changed keys in the [`NearCache`].
//!
//! Why broadcasting mode, redirected to the listening connection itself:
//! in the default mode Redis remembers which keys each *reading*
//! connection read, and forgets them silently when that connection closes
//! (killed, timed out, reset); the near cache would then keep serving keys
//! nobody tracks any more. In broadcasting mode the tracking belongs to the
//! listening connection alone: while it is up, every change of a key with
//! the store's prefixes is reported, whichever connection read it, and when
//! it is down the near cache knows it at once ([`NearCache::set_live`]).
//! The cost is a message for every write under the prefixes, not only for
//! the keys this process holds; a cache's writes are few next to its reads.
//!
//! Invariants:
//! - the near cache is live only between the `SUBSCRIBE` confirmation on a
//!   connection with tracking on and the first read error on it;
//! - the thread never holds the near cache's lock while reading the socket;
//! - the connection and the thread belong to one process (the store keeps
//!   them in a [`crate::fork::PerProcess`]): a forked child starts its own.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ::redis::{ConnectionInfo, Parser, Value};

use super::lookup::connect_tcp;
use super::near::NearCache;

/// The channel Redis publishes invalidations on.
const CHANNEL: &str = "__redis__:invalidate";

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

struct Control {
    stopped: bool,
    /// A handle on the current connection, to shut it down from outside.
    socket: Option<TcpStream>,
}

struct Shared {
    control: Mutex<Control>,
    woken: Condvar,
}

impl Shared {
    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running channel; dropping it stops its thread.
pub struct Tracking {
    shared: Arc<Shared>,
}

impl Tracking {
    /// Starts the thread that keeps `near` coherent with the server at
    /// `info`, for keys starting with one of `prefixes` (every key when
    /// empty). It reconnects by itself, with backoff, until dropped.
    /// The whole near cache is live while the channel is.
    pub fn start(
        info: ConnectionInfo,
        timeout: Duration,
        prefixes: Vec<String>,
        near: Arc<NearCache>,
    ) -> io::Result<Self> {
        let cache = Arc::clone(&near);
        Self::start_with(info, timeout, prefixes, near, move |live| {
            cache.set_live(live)
        })
    }

    /// [`Tracking::start`] for a channel that covers only part of `near`
    /// (one master of a cluster): `on_live` is told when the channel comes
    /// up (`true`) and goes down, and makes the near cache say so for the
    /// lanes it covers. It runs on the channel's thread, no lock held.
    pub fn start_with(
        info: ConnectionInfo,
        timeout: Duration,
        prefixes: Vec<String>,
        near: Arc<NearCache>,
        on_live: impl Fn(bool) + Send + 'static,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            control: Mutex::new(Control {
                stopped: false,
                socket: None,
            }),
            woken: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("restflow-near".into())
            .spawn(move || run(&info, timeout, &prefixes, &near, &on_live, &worker))?;
        Ok(Tracking { shared })
    }
}

impl Drop for Tracking {
    fn drop(&mut self) {
        let mut control = self.shared.control();
        control.stopped = true;
        if let Some(socket) = control.socket.take() {
            // Wakes the thread's read; it sees `stopped` and ends.
            let _ = socket.shutdown(Shutdown::Both);
        }
        drop(control);
        self.shared.woken.notify_all();
    }
}

fn run(
    info: &ConnectionInfo,
    timeout: Duration,
    prefixes: &[String],
    near: &NearCache,
    on_live: &dyn Fn(bool),
    shared: &Shared,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let connected =
            subscribe(info, timeout, prefixes).and_then(|stream| Ok((stream.try_clone()?, stream)));
        if let Ok((handle, stream)) = connected {
            {
                let mut control = shared.control();
                if control.stopped {
                    return;
                }
                control.socket = Some(handle);
            }
            on_live(true);
            backoff = Duration::from_millis(20);
            listen(stream, near);
            on_live(false);
            shared.control().socket = None;
        }
        let control = shared.control();
        if control.stopped {
            return;
        }
        // A pause before reconnecting, cut short by a stop.
        let (control, _) = shared
            .woken
            .wait_timeout_while(control, backoff, |c| !c.stopped)
            .unwrap_or_else(PoisonError::into_inner);
        if control.stopped {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Connects, turns broadcasting tracking on with this connection as its
/// own target, and subscribes to the invalidations: a blocking stream
/// ready to read messages from.
fn subscribe(
    info: &ConnectionInfo,
    timeout: Duration,
    prefixes: &[String],
) -> io::Result<TcpStream> {
    let stream = connect_tcp(info, timeout)
        .unwrap_or_else(|| Err(io::Error::other("not a plain TCP address")))?;
    stream.set_nonblocking(false)?;
    keep_alive(&stream);
    let mut parser = Parser::new();
    let id = match command(&stream, &mut parser, ::redis::cmd("CLIENT").arg("ID"))? {
        Value::Int(id) => id,
        other => return Err(io::Error::other(format!("CLIENT ID answered {other:?}"))),
    };
    let mut tracking = ::redis::cmd("CLIENT");
    tracking
        .arg("TRACKING")
        .arg("on")
        .arg("REDIRECT")
        .arg(id)
        .arg("BCAST");
    for prefix in prefixes {
        tracking.arg("PREFIX").arg(prefix);
    }
    expect_ok(command(&stream, &mut parser, &tracking)?)?;
    match command(&stream, &mut parser, ::redis::cmd("SUBSCRIBE").arg(CHANNEL))? {
        Value::Array(reply) if reply.first() == Some(&bulk(b"subscribe")) => {}
        other => return Err(io::Error::other(format!("SUBSCRIBE answered {other:?}"))),
    }
    // Messages come whenever keys change: no timeout on the reads from now
    // (a dead peer is found by TCP keepalive, a stop by a shutdown).
    stream.set_read_timeout(None)?;
    Ok(stream)
}

fn bulk(bytes: &[u8]) -> Value {
    Value::BulkString(bytes.to_vec())
}

fn command(stream: &TcpStream, parser: &mut Parser, cmd: &::redis::Cmd) -> io::Result<Value> {
    use std::io::Write;
    (&*stream).write_all(&cmd.get_packed_command())?;
    parser
        .parse_value(stream)
        .map_err(|e| io::Error::other(e.to_string()))
}

fn expect_ok(answer: Value) -> io::Result<()> {
    match answer {
        Value::Okay => Ok(()),
        Value::SimpleString(s) if s == "OK" => Ok(()),
        other => Err(io::Error::other(format!(
            "CLIENT TRACKING answered {other:?} (Redis >= 6 or Valkey is needed)"
        ))),
    }
}

/// Reads invalidation messages until the connection fails or is shut down.
fn listen(stream: TcpStream, near: &NearCache) {
    let mut parser = Parser::new();
    loop {
        let message = match parser.parse_value(&stream) {
            Ok(message) => message,
            Err(_) => return,
        };
        let Value::Array(mut parts) = message else {
            continue;
        };
        if parts.len() != 3 || parts[0] != bulk(b"message") {
            continue;
        }
        match parts.pop() {
            // FLUSHALL / FLUSHDB (and a server that lost its tracking
            // table): every key may have changed.
            Some(Value::Nil) => near.flush(),
            Some(Value::Array(keys)) => near.invalidate(keys.iter().filter_map(|key| match key {
                Value::BulkString(name) => Some(name.as_slice()),
                _ => None,
            })),
            // Anything else cannot be told apart from a change: forget all.
            _ => near.flush(),
        }
    }
}

/// Asks TCP to notice a peer that vanished without closing (a host gone,
/// a partition) within ~10 s, so the channel does not stay silently dead.
fn keep_alive(stream: &TcpStream) {
    let fd = stream.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: `fd` is an open socket; `value` outlives the call.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    #[cfg(target_os = "linux")]
    {
        set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 5);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 1);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 5);
    }
}
