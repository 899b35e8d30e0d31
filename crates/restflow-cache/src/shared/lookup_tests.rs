//! Lookup connections against a scripted TCP server on loopback: answers
//! whole, in pieces, never, garbled or cut off; the set-up commands; and
//! what the spin policy learns from each. (Unit tests of a private module,
//! kept in their own file for their length.)

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::LookupConnection;
use crate::shared::spin::SpinPolicy;
use redis::{IntoConnectionInfo, Value};

/// One step of what the fake server does on its single connection.
enum Step {
    /// Reads exactly these bytes (and fails the test on anything else).
    Expect(&'static [u8]),
    Send(&'static [u8]),
    Sleep(Duration),
    /// Holds the connection open without answering, until the client goes.
    Hang,
}

const MGET: &[u8] = b"*2\r\n$4\r\nMGET\r\n$1\r\nk\r\n";
const ANSWER: &[u8] = b"*1\r\n$5\r\nvalue\r\n";

fn serve(script: Vec<Step>) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        for step in script {
            match step {
                Step::Expect(bytes) => {
                    let mut got = vec![0; bytes.len()];
                    conn.read_exact(&mut got).unwrap();
                    assert_eq!(
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(bytes)
                    );
                }
                Step::Send(bytes) => conn.write_all(bytes).unwrap(),
                Step::Sleep(pause) => thread::sleep(pause),
                Step::Hang => {
                    let mut rest = Vec::new();
                    let _ = conn.read_to_end(&mut rest);
                }
            }
        }
    });
    (url, server)
}

fn connect(url: &str) -> LookupConnection {
    let info = url.into_connection_info().unwrap();
    LookupConnection::connect(&info, Duration::from_secs(2))
        .expect("a TCP address")
        .expect("connected")
}

fn bulk(value: &Value) -> &[u8] {
    match value {
        Value::Array(items) => match &items[0] {
            Value::BulkString(bytes) => bytes,
            other => panic!("not a bulk string: {other:?}"),
        },
        other => panic!("not an array: {other:?}"),
    }
}

#[test]
fn a_whole_answer_is_parsed() {
    let (url, server) = serve(vec![
        Step::Expect(MGET),
        Step::Send(ANSWER),
        Step::Expect(MGET),
        Step::Send(ANSWER),
    ]);
    let mut conn = connect(&url);
    let spin = SpinPolicy::new(Duration::from_millis(50));
    for _ in 0..2 {
        let value = conn.query(MGET, Duration::from_secs(2), &spin).unwrap();
        assert_eq!(bulk(&value), b"value");
    }
    assert!(!conn.is_broken());
    server.join().unwrap();
}

#[test]
fn an_answer_in_pieces_is_put_together_after_the_spin_misses() {
    let (url, server) = serve(vec![
        Step::Expect(MGET),
        Step::Send(b"*1\r\n$5\r\nva"),
        Step::Sleep(Duration::from_millis(30)),
        Step::Send(b"lue\r\n"),
    ]);
    let mut conn = connect(&url);
    let spin = SpinPolicy::new(Duration::from_micros(100));
    let value = conn.query(MGET, Duration::from_secs(2), &spin).unwrap();
    assert_eq!(bulk(&value), b"value");
    assert!(!conn.is_broken());
    // 30 ms is past the 100 µs budget: the next lookup sleeps at once.
    assert_eq!(spin.paused_for(), 1);
    server.join().unwrap();
}

#[test]
fn an_answer_that_keeps_coming_may_take_longer_than_the_timeout() {
    // A large entry streams for longer than the read timeout: the timeout
    // bounds each wait for the next bytes, not the whole transfer (a big
    // value must not read as a store that is down, which trips the breaker
    // for every function on the store).
    let (url, server) = serve(vec![
        Step::Expect(MGET),
        Step::Send(b"*1\r\n$5\r\n"),
        Step::Sleep(Duration::from_millis(150)),
        Step::Send(b"v"),
        Step::Sleep(Duration::from_millis(150)),
        Step::Send(b"a"),
        Step::Sleep(Duration::from_millis(150)),
        Step::Send(b"l"),
        Step::Sleep(Duration::from_millis(150)),
        Step::Send(b"ue\r\n"),
    ]);
    let mut conn = connect(&url);
    let spin = SpinPolicy::new(Duration::ZERO);
    let started = Instant::now();
    let value = conn.query(MGET, Duration::from_millis(400), &spin).unwrap();
    assert!(started.elapsed() > Duration::from_millis(400));
    assert_eq!(bulk(&value), b"value");
    assert!(!conn.is_broken());
    server.join().unwrap();
}

#[test]
fn an_answer_that_stops_coming_times_out() {
    // Bytes came, then none for longer than the timeout: a server that
    // stalled mid-answer still fails the read.
    let (url, server) = serve(vec![
        Step::Expect(MGET),
        Step::Send(b"*1\r\n$5\r\nva"),
        Step::Hang,
    ]);
    let mut conn = connect(&url);
    let spin = SpinPolicy::new(Duration::ZERO);
    let error = conn
        .query(MGET, Duration::from_millis(100), &spin)
        .unwrap_err();
    assert!(error.is_timeout(), "{error}");
    assert!(conn.is_broken());
    drop(conn);
    server.join().unwrap();
}

#[test]
fn no_answer_times_out_and_breaks_the_connection() {
    let (url, server) = serve(vec![Step::Expect(MGET), Step::Hang]);
    let mut conn = connect(&url);
    let spin = SpinPolicy::new(Duration::from_micros(100));
    let started = Instant::now();
    let error = conn
        .query(MGET, Duration::from_millis(100), &spin)
        .unwrap_err();
    let waited = started.elapsed();
    assert!(error.is_timeout(), "{error}");
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert!(conn.is_broken());
    drop(conn);
    server.join().unwrap();
}

#[test]
fn garbage_is_an_error_at_once_not_a_timeout() {
    let (url, server) = serve(vec![
        Step::Expect(MGET),
        Step::Send(b"hello\r\n"),
        Step::Hang,
    ]);
    let mut conn = connect(&url);
    let spin = SpinPolicy::new(Duration::from_micros(100));
    let error = conn.query(MGET, Duration::from_secs(5), &spin).unwrap_err();
    assert!(!error.is_timeout(), "{error}");
    assert!(conn.is_broken());
    drop(conn);
    server.join().unwrap();
}

#[test]
fn a_closed_connection_is_an_error() {
    let (url, server) = serve(vec![Step::Expect(MGET), Step::Send(b"*1\r\n$5\r\nva")]);
    let mut conn = connect(&url);
    let spin = SpinPolicy::new(Duration::ZERO);
    let error = conn.query(MGET, Duration::from_secs(5), &spin).unwrap_err();
    assert!(!error.is_timeout(), "{error}");
    assert!(conn.is_broken());
    server.join().unwrap();
}

#[test]
fn set_up_authenticates_and_selects_the_database() {
    let (url, server) = serve(vec![
        Step::Expect(b"*3\r\n$4\r\nAUTH\r\n$3\r\nann\r\n$6\r\nsecret\r\n"),
        Step::Send(b"+OK\r\n"),
        Step::Expect(b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"),
        Step::Send(b"+OK\r\n"),
        Step::Expect(MGET),
        Step::Send(ANSWER),
    ]);
    let url = url.replace("redis://", "redis://ann:secret@") + "/3";
    let mut conn = connect(&url);
    let value = conn
        .query(
            MGET,
            Duration::from_secs(2),
            &SpinPolicy::new(Duration::ZERO),
        )
        .unwrap();
    assert_eq!(bulk(&value), b"value");
    server.join().unwrap();
}

#[test]
fn a_refused_password_fails_the_connection() {
    let (url, server) = serve(vec![
        Step::Expect(b"*2\r\n$4\r\nAUTH\r\n$5\r\nwrong\r\n"),
        Step::Send(b"-WRONGPASS invalid username-password pair\r\n"),
    ]);
    let info = url
        .replace("redis://", "redis://:wrong@")
        .into_connection_info()
        .unwrap();
    let made = LookupConnection::connect(&info, Duration::from_secs(2)).expect("a TCP address");
    let error = made.err().expect("the set-up should fail");
    assert!(error.to_string().contains("WRONGPASS"), "{error}");
    server.join().unwrap();
}

#[test]
fn only_plain_tcp_addresses_get_lookup_connections() {
    let info = "redis+unix:///tmp/redis.sock"
        .into_connection_info()
        .unwrap();
    assert!(LookupConnection::connect(&info, Duration::from_secs(1)).is_none());
}

#[test]
fn a_full_send_buffer_waits_for_the_server_to_read() {
    // A command larger than the socket buffers: the non-blocking write
    // must wait for room rather than fail.
    let big: &'static [u8] = Box::leak(
        format!(
            "*2\r\n$3\r\nGET\r\n${}\r\n{}\r\n",
            8 << 20,
            "k".repeat(8 << 20)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let (url, server) = serve(vec![
        Step::Sleep(Duration::from_millis(50)),
        Step::Expect(big),
        Step::Send(b"$-1\r\n"),
    ]);
    let mut conn = connect(&url);
    let value = conn
        .query(
            big,
            Duration::from_secs(10),
            &SpinPolicy::new(Duration::ZERO),
        )
        .unwrap();
    assert_eq!(value, Value::Nil);
    server.join().unwrap();
}
