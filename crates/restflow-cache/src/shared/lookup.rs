//! A connection for the one command a hit sends, whose answer is read with
//! a bounded busy-wait before the thread sleeps.
//!
//! Written here rather than taken from the client crate because its
//! synchronous connections only block in `recv`, and that sleep is what a
//! hit on a nearby Redis mostly pays for (see [`super::spin`]). Framing and
//! parsing stay the client crate's: the answer is read through
//! [`redis::Parser`], which only sees a [`Read`] that waits differently.
//!
//! Invariants:
//! - the socket is non-blocking once [`LookupConnection::connect`] returns;
//!   every wait is bounded by the caller's timeout: the wait for the answer
//!   to start, and each wait for its next bytes (a large entry may stream
//!   for longer than the timeout in all, as long as it keeps coming);
//! - one command is in flight at a time, so the parser's buffer holds only
//!   its answer; after any error the connection is [`broken`] and must be
//!   dropped, since an unread answer may still arrive.
//!
//! [`broken`]: LookupConnection::is_broken

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use ::redis::{ConnectionAddr, ConnectionInfo, Parser, RedisError, Value};

use super::spin::{Spin, SpinPolicy};

/// One non-blocking TCP connection to Redis.
pub struct LookupConnection {
    stream: TcpStream,
    parser: Parser,
    broken: bool,
}

/// Opens a TCP connection to `info` within `timeout`, with `TCP_NODELAY`,
/// authenticated and on its database, then makes it non-blocking. `None`
/// when `info` is not plain TCP (TLS and Unix sockets are left to the
/// client crate).
pub fn connect_tcp(info: &ConnectionInfo, timeout: Duration) -> Option<io::Result<TcpStream>> {
    let ConnectionAddr::Tcp(host, port) = info.addr() else {
        return None;
    };
    Some((|| {
        let address = (host.as_str(), *port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(ErrorKind::NotFound, "no address for the Redis host"))?;
        let mut stream = TcpStream::connect_timeout(&address, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth = ::redis::cmd("AUTH");
            if let Some(username) = settings.username() {
                auth.arg(username);
            }
            set_up(&mut stream, auth.arg(password))?;
        }
        if settings.db() != 0 {
            set_up(&mut stream, ::redis::cmd("SELECT").arg(settings.db()))?;
        }
        stream.set_nonblocking(true)?;
        Ok(stream)
    })())
}

/// Sends a set-up command on the still-blocking stream and checks its answer.
fn set_up(stream: &mut TcpStream, command: &::redis::Cmd) -> io::Result<()> {
    stream.write_all(&command.get_packed_command())?;
    match Parser::new().parse_value(&mut *stream) {
        Ok(Value::ServerError(error)) => Err(io::Error::new(
            ErrorKind::PermissionDenied,
            format!("Redis refused the connection's set-up: {error:?}"),
        )),
        Ok(_) => Ok(()),
        Err(error) => Err(io::Error::other(error.to_string())),
    }
}

impl LookupConnection {
    /// Connects to `info` (see [`connect_tcp`]); `None` when it is not
    /// plain TCP.
    pub fn connect(info: &ConnectionInfo, timeout: Duration) -> Option<io::Result<Self>> {
        connect_tcp(info, timeout).map(|made| {
            made.map(|stream| LookupConnection {
                stream,
                parser: Parser::new(),
                broken: false,
            })
        })
    }

    /// Whether an earlier query failed, leaving the connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Sends `packed` (one command) and reads its answer, busy-waiting as
    /// `spin` allows and sleeping otherwise. Fails when the server sends
    /// nothing for `timeout`: before the answer starts, or in the middle
    /// of it.
    pub fn query(
        &mut self,
        packed: &[u8],
        timeout: Duration,
        spin: &SpinPolicy,
    ) -> Result<Value, RedisError> {
        let sent = Instant::now();
        let deadline = sent + timeout;
        let answer = self.send(packed, deadline).and_then(|()| {
            let mut reader = Answer {
                stream: &self.stream,
                timeout,
                deadline,
                progressed: false,
                spin: spin.begin(sent),
            };
            self.parser.parse_value(&mut reader)
        });
        if answer.is_err() {
            self.broken = true;
        }
        answer
    }

    fn send(&self, mut packed: &[u8], deadline: Instant) -> Result<(), RedisError> {
        while !packed.is_empty() {
            match (&self.stream).write(packed) {
                Ok(0) => return Err(io::Error::from(ErrorKind::WriteZero).into()),
                Ok(n) => packed = &packed[n..],
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    wait_for(self.stream.as_raw_fd(), libc::POLLOUT, deadline)?
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// The socket as the parser reads it: busy-waiting while the spin lasts,
/// then sleeping in `poll(2)` until the deadline, which bytes that arrive
/// move to `timeout` after the wait that follows them.
///
/// Why the deadline moves: the timeout guards against a server that stopped
/// answering, not against a large entry. A 30 MB entry takes about 100 ms
/// to arrive even on loopback; a fixed deadline read it as a store that is
/// down, which opens the circuit breaker for every function on the store.
struct Answer<'a> {
    stream: &'a TcpStream,
    timeout: Duration,
    deadline: Instant,
    /// Bytes arrived since the deadline was last set.
    progressed: bool,
    spin: Option<Spin<'a>>,
}

impl Read for Answer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.stream.read(buf) {
                Ok(n) => {
                    if let Some(spin) = &self.spin {
                        spin.answered();
                    }
                    self.progressed |= n > 0;
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if let Some(spin) = &self.spin {
                if spin.may_continue(Instant::now()) {
                    std::hint::spin_loop();
                    continue;
                }
                self.spin = None;
            }
            if std::mem::take(&mut self.progressed) {
                self.deadline = Instant::now() + self.timeout;
            }
            wait_for(self.stream.as_raw_fd(), libc::POLLIN, self.deadline)?;
        }
    }
}

/// Sleeps until `fd` is ready for `events` or `deadline` passes
/// (`TimedOut`).
fn wait_for(fd: RawFd, events: libc::c_short, deadline: Instant) -> io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                "no answer from Redis within the read timeout",
            ));
        }
        let mut pollfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // Rounded up: a 0 ms poll would turn the last fraction of a
        // millisecond into a busy loop.
        let millis = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `pollfd` is a valid, exclusively borrowed array of one.
        let ready = unsafe { libc::poll(&mut pollfd, 1, millis) };
        if ready > 0 {
            return Ok(());
        }
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() != ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}

#[cfg(test)]
#[path = "lookup_tests.rs"]
mod tests;
