//! A non-blocking connection to Redis for an embedder's event loop: no
//! thread hand-off.
//!
//! An async hit on Redis would otherwise hop to a worker thread and back
//! (on a small VM that hand-off alone costs more than the round trip). Here
//! the event loop owns a non-blocking socket: it sends the lookup
//! ([`LoopConnection::send`]), waits until the socket is readable
//! ([`LoopConnection::fd`]), and hands each readable event to
//! [`LoopConnection::receive`], which parses the answer. One request is in
//! flight per connection, so an answer is exactly what the socket holds.
//!
//! Written here rather than taken from the client crate because its
//! connections are blocking or belong to a Rust async runtime; neither can
//! be driven by another language's event loop.
//!
//! Invariant (fork safety, see [`crate::fork`]): the locks are only taken
//! by the thread running the event loop while it holds the embedder's
//! interpreter lock, which `fork` waits for, and never while waiting.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use parking_lot::Mutex;
use redis::{IntoConnectionInfo, Value};

use super::connect_tcp;

/// The largest answer the loop path accepts before calling it garbage.
const MAX_ANSWER: usize = 64 << 20;

/// Why a loop connection could not be made or used.
#[derive(Debug)]
pub enum LoopError {
    /// The URL is not one the loop can drive (bad, or not plain TCP).
    Url(String),
    /// The connection failed or was closed.
    Connection(String),
}

impl std::fmt::Display for LoopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoopError::Url(why) | LoopError::Connection(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for LoopError {}

impl From<io::Error> for LoopError {
    fn from(error: io::Error) -> Self {
        LoopError::Connection(error.to_string())
    }
}

fn closed() -> LoopError {
    LoopError::Connection("Redis closed the connection".to_owned())
}

/// One non-blocking connection to Redis, used from one event loop.
pub struct LoopConnection {
    stream: Mutex<TcpStream>,
    buffer: Mutex<Vec<u8>>,
    fd: i32,
}

impl LoopConnection {
    /// Connects to `url` within `timeout` (blocking: call it off the event
    /// loop, detached), then switches the socket to non-blocking. Only
    /// plain `redis://` TCP.
    pub fn open(url: &str, timeout: Duration) -> Result<Self, LoopError> {
        let info = url
            .into_connection_info()
            .map_err(|e| LoopError::Url(e.to_string()))?;
        let stream =
            connect_tcp(&info, timeout.max(Duration::from_millis(1))).ok_or_else(|| {
                LoopError::Url("only redis:// over TCP is driven by the loop".into())
            })??;
        let fd = stream.as_raw_fd();
        Ok(LoopConnection {
            stream: Mutex::new(stream),
            buffer: Mutex::new(Vec::new()),
            fd,
        })
    }

    /// The socket, for the event loop to watch.
    pub fn fd(&self) -> i32 {
        self.fd
    }

    /// Sends a packed command, dropping any answer half read. Fails if the
    /// socket cannot take it at once (the caller falls back to the engine).
    pub fn send(&self, command: &[u8]) -> Result<(), LoopError> {
        self.buffer.lock().clear();
        let mut stream = self.stream.lock();
        let mut sent = 0;
        while sent < command.len() {
            match stream.write(&command[sent..]) {
                Ok(0) => return Err(closed()),
                Ok(n) => sent += n,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Reads what the socket holds; returns the answer once it is whole,
    /// `None` while it is not.
    pub fn receive(&self) -> Result<Option<Value>, LoopError> {
        let mut stream = self.stream.lock();
        let mut buffer = self.buffer.lock();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => return Err(closed()),
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(error.into()),
            }
        }
        match redis::parse_redis_value(&buffer) {
            Ok(value) => {
                buffer.clear();
                Ok(Some(value))
            }
            // Not whole yet (or garbage, which the caller's timeout ends).
            Err(_) if buffer.len() < MAX_ANSWER => Ok(None),
            Err(error) => Err(LoopError::Connection(error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A fake server on a free local port: it answers whatever it reads
    /// with `answer`, in two writes, so the client sees a partial answer.
    #[test]
    fn an_answer_split_across_reads_is_returned_once_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (step_tx, step_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut request = [0u8; 64];
            let n = socket.read(&mut request).unwrap();
            assert_eq!(&request[..n], b"*1\r\n$4\r\nPING\r\n");
            socket.write_all(b"$5\r\nhel").unwrap();
            step_rx.recv().unwrap();
            socket.write_all(b"lo\r\n").unwrap();
            step_rx.recv().unwrap();
        });
        let url = format!("redis://127.0.0.1:{port}/0");
        let conn = LoopConnection::open(&url, Duration::from_secs(10)).unwrap();
        assert!(conn.fd() >= 0);
        conn.send(b"*1\r\n$4\r\nPING\r\n").unwrap();
        // Poll (a hang guard bounds it): the first half alone is no answer.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let wait_for_bytes = |conn: &LoopConnection| loop {
            let mut fds = libc::pollfd {
                fd: conn.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, for our own socket.
            unsafe { libc::poll(&mut fds, 1, 100) };
            if fds.revents != 0 || std::time::Instant::now() > deadline {
                break;
            }
        };
        wait_for_bytes(&conn);
        assert_eq!(conn.receive().unwrap(), None);
        step_tx.send(()).unwrap();
        let answer = loop {
            wait_for_bytes(&conn);
            if let Some(answer) = conn.receive().unwrap() {
                break answer;
            }
            assert!(std::time::Instant::now() < deadline, "no whole answer");
        };
        assert_eq!(answer, Value::BulkString(b"hello".to_vec()));
        step_tx.send(()).unwrap();
        server.join().unwrap();
        assert!(matches!(
            LoopConnection::open("unix:///tmp/redis.sock", Duration::from_secs(1)),
            Err(LoopError::Url(_))
        ));
    }
}
