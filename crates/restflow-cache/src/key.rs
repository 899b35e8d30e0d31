//! Canonical, type-tagged encoding of call arguments, and the key strings
//! built from it.
//!
//! Every value is written as a tag byte followed by a self-delimiting body
//! (fixed-width numbers, length-prefixed text, counted containers), so two
//! different argument lists never produce the same bytes: `1`, `1.0`, `True`
//! and `"1"` differ in their tag, and text that contains a separator cannot
//! end a value early. Unordered containers are written with their items
//! sorted by their own encoding, so a set or dict encodes the same in every
//! process whatever its iteration order.
//!
//! The bytes key the in-process store directly. [`render`] turns them into
//! the readable text of a key string, which is injective for the same
//! reasons; [`digest`] replaces a part too long to keep readable, and must
//! stay injective against inputs chosen to collide (see [`digest`]).

use std::fmt::Write as _;

use sha2::{Digest as _, Sha256};
use smallvec::SmallVec;

/// How many bytes of a key are kept on the stack.
const INLINE: usize = 96;

/// Encoded bytes, kept on the stack for the usual short argument lists.
pub type KeyBytes = SmallVec<[u8; INLINE]>;

/// The longest text or byte string, and the most items in a container,
/// that one value can have: lengths and counts are written in 32 bits.
pub const MAX_LEN: usize = u32::MAX as usize;

/// A value too long for the encoding (over [`MAX_LEN`] bytes or items).
/// Nothing is written for it; the writer must not be used for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong {
    /// The length found.
    pub len: usize,
}

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes or items, over the {MAX_LEN} (4 GiB) a key part can hold",
            self.len
        )
    }
}

impl std::error::Error for TooLong {}

/// A length or count as the 32 bits it is written in.
#[inline(always)]
fn len_u32(len: usize) -> Result<u32, TooLong> {
    u32::try_from(len).map_err(|_| TooLong { len })
}

mod tag {
    pub const NONE: u8 = 0x00;
    pub const FALSE: u8 = 0x01;
    pub const TRUE: u8 = 0x02;
    pub const INT: u8 = 0x03;
    pub const BIG_INT: u8 = 0x04;
    pub const FLOAT: u8 = 0x05;
    pub const STR: u8 = 0x06;
    pub const BYTES: u8 = 0x07;
    pub const TUPLE: u8 = 0x08;
    pub const LIST: u8 = 0x09;
    pub const DICT: u8 = 0x0A;
    pub const SET: u8 = 0x0B;
    pub const FROZEN_SET: u8 = 0x0C;
    pub const TAGGED: u8 = 0x0D;
}

/// An ordered container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sequence {
    /// A tuple.
    Tuple,
    /// A list.
    List,
}

/// A container whose iteration order carries no meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unordered {
    /// A mapping; each item is a key followed by its value.
    Dict,
    /// A mutable set.
    Set,
    /// An immutable set.
    FrozenSet,
}

/// Writes values in the canonical encoding.
///
/// Each `write_*` call appends exactly one value (a container counts as one
/// value once all of its items are written).
#[derive(Clone, Debug, Default)]
pub struct KeyWriter {
    bytes: KeyBytes,
}

impl KeyWriter {
    /// An empty writer.
    #[inline]
    pub fn new() -> Self {
        KeyWriter {
            bytes: KeyBytes::new(),
        }
    }

    /// A writer that holds `word` (see [`KeyWriter::write_prefix_word`]),
    /// made in place: every in-process key starts with its scope's word, and
    /// writing it into a new writer this way skips the growth check that
    /// appending takes (a handful of instructions on a ~60-instruction hit).
    #[inline(always)]
    pub fn starting_with_word(word: u64) -> Self {
        let mut buf = std::mem::MaybeUninit::<[u8; INLINE]>::uninit();
        // SAFETY: the buffer holds `INLINE` (96) bytes, of which the first 8
        // are written here; `from_buf_and_len_unchecked` requires the first
        // `len` (8 <= `INLINE`) to be initialised.
        let bytes = unsafe {
            buf.as_mut_ptr().cast::<[u8; 8]>().write(word.to_le_bytes());
            KeyBytes::from_buf_and_len_unchecked(buf, 8)
        };
        KeyWriter { bytes }
    }

    /// The bytes written so far.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes written, by value.
    #[inline]
    pub fn into_bytes(self) -> KeyBytes {
        self.bytes
    }

    /// How many bytes are written.
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing is written.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends bytes written by another writer (a value encoded once and
    /// reused, such as a default argument).
    #[inline]
    pub fn write_encoded(&mut self, encoded: &[u8]) {
        self.bytes.extend_from_slice(encoded);
    }

    /// Appends a fixed number of bytes without a call into the vector's
    /// general copy routine (the hot path writes a handful of these).
    #[inline(always)]
    fn put<const N: usize>(&mut self, bytes: [u8; N]) {
        self.bytes.reserve(N);
        let len = self.bytes.len();
        // SAFETY: `reserve` made room for N more bytes past `len`, and the
        // source array cannot overlap the vector.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.bytes.as_mut_ptr().add(len), N);
            self.bytes.set_len(len + N);
        }
    }

    /// Appends a fixed-width prefix word the caller owns, which [`render`] is
    /// never asked to read.
    #[inline(always)]
    pub fn write_prefix_word(&mut self, word: u64) {
        self.put(word.to_le_bytes());
    }

    /// `None` / null.
    #[inline]
    pub fn write_none(&mut self) {
        self.bytes.push(tag::NONE);
    }

    /// A boolean, distinct from the integers 0 and 1.
    #[inline]
    pub fn write_bool(&mut self, value: bool) {
        self.bytes.push(if value { tag::TRUE } else { tag::FALSE });
    }

    /// An integer that fits in 64 bits.
    #[inline]
    pub fn write_int(&mut self, value: i64) {
        let mut raw = [tag::INT; 9];
        raw[1..].copy_from_slice(&value.to_le_bytes());
        self.put(raw);
    }

    /// An integer outside the 64-bit range, as Python's `hex()` prints it
    /// (`0x1f`, `-0x1f`: lowercase, no leading zeros). Values inside the
    /// range must use [`KeyWriter::write_int`] so each integer has one
    /// encoding.
    ///
    /// Hex rather than decimal: converting to decimal is quadratic in the
    /// size of the number (Python caps it at a configurable digit count),
    /// while hex is linear and has no cap, so every integer has a key and
    /// the same key in every process.
    pub fn write_big_int(&mut self, hex: &str) -> Result<(), TooLong> {
        debug_assert!(
            hex.trim_start_matches('-').starts_with("0x")
                && i64::from_str_radix(&hex.replacen("0x", "", 1), 16).is_err(),
            "use write_int for {hex}"
        );
        self.write_len_prefixed(tag::BIG_INT, hex.as_bytes())
    }

    /// A float, distinct from an integer of the same value. Every NaN is
    /// written as the one canonical NaN.
    #[inline]
    pub fn write_float(&mut self, value: f64) {
        let value = if value.is_nan() { f64::NAN } else { value };
        let mut raw = [tag::FLOAT; 9];
        raw[1..].copy_from_slice(&value.to_bits().to_le_bytes());
        self.put(raw);
    }

    /// Text.
    #[inline]
    pub fn write_str(&mut self, value: &str) -> Result<(), TooLong> {
        self.write_len_prefixed(tag::STR, value.as_bytes())
    }

    /// Binary data.
    #[inline]
    pub fn write_bytes(&mut self, value: &[u8]) -> Result<(), TooLong> {
        self.write_len_prefixed(tag::BYTES, value)
    }

    /// Starts an ordered container of `len` items; write the items next.
    #[inline]
    pub fn begin_sequence(&mut self, kind: Sequence, len: usize) -> Result<(), TooLong> {
        let len = len_u32(len)?;
        self.bytes.push(match kind {
            Sequence::Tuple => tag::TUPLE,
            Sequence::List => tag::LIST,
        });
        self.put(len.to_le_bytes());
        Ok(())
    }

    /// An unordered container from its items, each encoded on its own
    /// writer (for a dict, the key then the value on one writer).
    pub fn write_unordered(
        &mut self,
        kind: Unordered,
        items: Vec<KeyWriter>,
    ) -> Result<(), TooLong> {
        let len = len_u32(items.len())?;
        self.bytes.push(match kind {
            Unordered::Dict => tag::DICT,
            Unordered::Set => tag::SET,
            Unordered::FrozenSet => tag::FROZEN_SET,
        });
        self.put(len.to_le_bytes());
        self.write_sorted(items);
        Ok(())
    }

    /// A list written with its items sorted by their encodings: for values
    /// whose list order carries no meaning (the caller's choice; the result
    /// is a list like any other).
    pub fn write_sorted_list(&mut self, items: Vec<KeyWriter>) -> Result<(), TooLong> {
        self.begin_sequence(Sequence::List, items.len())?;
        self.write_sorted(items);
        Ok(())
    }

    /// Appends items in the order of their encodings, so the order they
    /// came in never shows in the key.
    fn write_sorted(&mut self, mut items: Vec<KeyWriter>) {
        items.sort_unstable_by(|a, b| a.bytes.cmp(&b.bytes));
        for item in &items {
            self.bytes.extend_from_slice(&item.bytes);
        }
    }

    /// Starts a value of a named type that is written as one inner value
    /// (a date as its ISO text, an enum member as its value); write that
    /// inner value next. The name keeps types whose inner values coincide
    /// apart.
    pub fn begin_tagged(&mut self, type_name: &str) -> Result<(), TooLong> {
        self.write_len_prefixed(tag::TAGGED, type_name.as_bytes())
    }

    /// [`KeyWriter::begin_tagged`] of the name `prefix` then `name`, the
    /// same bytes without joining the two first (an enum member's `enum:`
    /// and its class's path, on every call that passes one).
    pub fn begin_tagged_parts(&mut self, prefix: &str, name: &str) -> Result<(), TooLong> {
        let len = len_u32(prefix.len().saturating_add(name.len()))?;
        self.bytes.reserve(5 + len as usize);
        self.bytes.push(tag::TAGGED);
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(prefix.as_bytes());
        self.bytes.extend_from_slice(name.as_bytes());
        Ok(())
    }

    /// Checks the length before anything is read or written, so a value
    /// over [`MAX_LEN`] costs nothing and leaves the writer as it was.
    #[inline]
    fn write_len_prefixed(&mut self, tag: u8, body: &[u8]) -> Result<(), TooLong> {
        let len = len_u32(body.len())?;
        let mut head = [tag; 5];
        head[1..].copy_from_slice(&len.to_le_bytes());
        self.bytes.reserve(5 + body.len());
        let at = self.bytes.len();
        // SAFETY: `reserve` made room for the head and the body past `at`;
        // neither source overlaps the vector's buffer.
        unsafe {
            let dst = self.bytes.as_mut_ptr().add(at);
            std::ptr::copy_nonoverlapping(head.as_ptr(), dst, 5);
            if body.len() <= 16 {
                // Short text (the usual argument) is copied inline rather
                // than through a call to the general memcpy.
                for (n, byte) in body.iter().enumerate() {
                    *dst.add(5 + n) = *byte;
                }
            } else {
                std::ptr::copy_nonoverlapping(body.as_ptr(), dst.add(5), body.len());
            }
            self.bytes.set_len(at + 5 + body.len());
        }
        Ok(())
    }
}

/// Bytes that are not a sequence of encoded values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed {
    /// Where reading stopped.
    pub offset: usize,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed key encoding at byte {}", self.offset)
    }
}

impl std::error::Error for Malformed {}

/// Renders a run of encoded values as readable text, the values separated
/// by `,`.
///
/// `None` → `N`, booleans → `T`/`F`, integers → `i42`, floats → `f2.5`,
/// text → `s3:abc` (byte length, then the text), bytes → `b2:00ff`, a tuple
/// → `t2(i1,i2)`, a list → `l2[i1,i2]`, a dict → `d1{s1:a=i1}`, a set →
/// `S2{i1,i2}`, a frozenset → `z2{…}`, a named type → `x8:Decimal(s3:1.5)`.
/// Lengths and counts make every value self-delimiting, so the text is as
/// collision-free as the bytes.
pub fn render(encoded: &[u8]) -> Result<String, Malformed> {
    let mut out = String::with_capacity(encoded.len() + 8);
    let mut reader = Reader {
        bytes: encoded,
        at: 0,
    };
    let mut first = true;
    while !reader.done() {
        if !first {
            out.push(',');
        }
        first = false;
        reader.render_value(&mut out)?;
    }
    Ok(out)
}

/// A fixed 128-bit digest of `bytes` as 32 hex digits: the first half of
/// their SHA-256.
///
/// Stable across processes, hosts and versions of this crate, unlike the
/// in-memory hashers, so it may be persisted in key strings.
///
/// Cryptographic on purpose: the digest stands for the whole of a key part
/// whose text a caller may control (a query parameter, a URL kwarg), so
/// finding two inputs with one digest must be infeasible, or one caller
/// picks an argument that is served another's entry. A fast
/// non-cryptographic hash does not hold: xxh3's long-input loop adds each
/// 8-byte word to one accumulator and the product of its two halves (each
/// xored with a public secret) to another, so a word whose half equals the
/// secret's adds no product, and swapping such words' other halves between
/// two stripes leaves every accumulator as it was (see
/// `crafted_xxh3_collisions_digest_apart`). SHA-256 measured ~140 ns for a
/// 90-byte key on this project's machine (SHA-NI; xxh3 with the same
/// formatting ~60 ns), paid for parts past `MAX_KEY_PART_LENGTH`,
/// `hash_value` fields and a shared store's lock names (beside a ~25 µs
/// round trip), never on the in-process hit path of a plain function.
pub fn digest(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let full = Sha256::digest(bytes);
    let mut out = [0u8; 32];
    for (n, byte) in full[..16].iter().enumerate() {
        out[2 * n] = HEX[usize::from(byte >> 4)];
        out[2 * n + 1] = HEX[usize::from(byte & 0xf)];
    }
    String::from_utf8(out.to_vec()).expect("hex digits are ASCII")
}

/// A key part as it is, or `h` and the digest of its text when it is
/// longer than `max_len` bytes. Never truncates: the text is injective, so
/// two different parts never share a digest (short of a 128-bit collision).
pub fn fit_part(text: String, max_len: usize) -> String {
    if text.len() > max_len {
        format!("h{}", digest(text.as_bytes()))
    } else {
        text
    }
}

/// The byte range of each value in a run of encoded values.
pub fn value_ranges(encoded: &[u8]) -> Result<Vec<std::ops::Range<usize>>, Malformed> {
    let mut reader = Reader {
        bytes: encoded,
        at: 0,
    };
    let mut ranges = Vec::new();
    let mut scratch = String::new();
    while !reader.done() {
        let start = reader.at;
        scratch.clear();
        reader.render_value(&mut scratch)?;
        ranges.push(start..reader.at);
    }
    Ok(ranges)
}

/// Joins the four parts of a key string:
/// `<namespace>::<function id>::<partition>::<suffix>`.
pub fn compose(namespace: &str, function_id: &str, partition: &str, suffix: &str) -> String {
    let mut key = String::with_capacity(
        namespace.len() + function_id.len() + partition.len() + suffix.len() + 6,
    );
    for (n, part) in [namespace, function_id, partition, suffix]
        .iter()
        .enumerate()
    {
        if n > 0 {
            key.push_str("::");
        }
        key.push_str(part);
    }
    key
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn malformed(&self) -> Malformed {
        Malformed { offset: self.at }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], Malformed> {
        let end = self.at.checked_add(n).ok_or(self.malformed())?;
        let slice = self.bytes.get(self.at..end).ok_or(self.malformed())?;
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<usize, Malformed> {
        let raw = self.take(4)?;
        Ok(u32::from_le_bytes(raw.try_into().expect("four bytes")) as usize)
    }

    fn text(&mut self) -> Result<&str, Malformed> {
        let len = self.u32()?;
        let at = self.at;
        std::str::from_utf8(self.take(len)?).map_err(|_| Malformed { offset: at })
    }

    /// Renders one value, containers included, without recursing: the
    /// containers still open are on a heap stack, so a key nested however
    /// deep (a [`KeyWriter`] writes any depth) renders instead of
    /// overflowing the thread's stack, which aborts the process.
    fn render_value(&mut self, out: &mut String) -> Result<(), Malformed> {
        let mut open: Vec<Open> = Vec::new();
        loop {
            self.render_head(out, &mut open)?;
            // Close what the value just read completed, and find where
            // the next value goes; done when nothing is open.
            loop {
                let Some(top) = open.last_mut() else {
                    return Ok(());
                };
                match top {
                    Open::Items {
                        left,
                        close,
                        started,
                    } => {
                        if *left == 0 {
                            out.push(*close);
                            open.pop();
                            continue;
                        }
                        if *started {
                            out.push(',');
                        }
                        *started = true;
                        *left -= 1;
                    }
                    Open::Pairs {
                        left,
                        in_pair,
                        started,
                    } => {
                        if *in_pair {
                            out.push('=');
                            *in_pair = false;
                        } else if *left == 0 {
                            out.push('}');
                            open.pop();
                            continue;
                        } else {
                            if *started {
                                out.push(',');
                            }
                            *started = true;
                            *left -= 1;
                            *in_pair = true;
                        }
                    }
                    Open::Tagged { read } => {
                        if *read {
                            out.push(')');
                            open.pop();
                            continue;
                        }
                        *read = true;
                    }
                }
                break;
            }
        }
    }

    /// Renders a scalar whole, or a container's opening (pushed on `open`,
    /// its items read next by [`Reader::render_value`]).
    fn render_head(&mut self, out: &mut String, open: &mut Vec<Open>) -> Result<(), Malformed> {
        let tag = *self.take(1)?.first().expect("one byte");
        match tag {
            tag::NONE => out.push('N'),
            tag::FALSE => out.push('F'),
            tag::TRUE => out.push('T'),
            tag::INT => {
                let raw = self.take(8)?;
                let n = i64::from_le_bytes(raw.try_into().expect("eight bytes"));
                let _ = write!(out, "i{n}");
            }
            tag::BIG_INT => {
                let digits = self.text()?;
                let _ = write!(out, "i{digits}");
            }
            tag::FLOAT => {
                let raw = self.take(8)?;
                let f = f64::from_bits(u64::from_le_bytes(raw.try_into().expect("eight bytes")));
                let _ = write!(out, "f{f:?}");
            }
            tag::STR => {
                let text = self.text()?;
                let _ = write!(out, "s{}:{text}", text.len());
            }
            tag::BYTES => {
                let len = self.u32()?;
                let raw = self.take(len)?;
                let _ = write!(out, "b{len}:");
                for byte in raw {
                    let _ = write!(out, "{byte:02x}");
                }
            }
            tag::TUPLE | tag::LIST => {
                let count = self.u32()?;
                let (mark, open_with, close) = if tag == tag::TUPLE {
                    ('t', '(', ')')
                } else {
                    ('l', '[', ']')
                };
                let _ = write!(out, "{mark}{count}{open_with}");
                open.push(Open::items(count, close));
            }
            tag::DICT => {
                let count = self.u32()?;
                let _ = write!(out, "d{count}{{");
                open.push(Open::Pairs {
                    left: count,
                    in_pair: false,
                    started: false,
                });
            }
            tag::SET | tag::FROZEN_SET => {
                let count = self.u32()?;
                let mark = if tag == tag::SET { 'S' } else { 'z' };
                let _ = write!(out, "{mark}{count}{{");
                open.push(Open::items(count, '}'));
            }
            tag::TAGGED => {
                let name = self.text()?;
                let _ = write!(out, "x{}:{name}(", name.len());
                open.push(Open::Tagged { read: false });
            }
            _ => {
                self.at -= 1;
                return Err(self.malformed());
            }
        }
        Ok(())
    }
}

/// A container [`Reader::render_value`] has opened and not yet closed.
enum Open {
    /// A tuple, list or set: `left` items still to read (`,` between
    /// them; `started` once one is read), then `close`.
    Items {
        left: usize,
        close: char,
        started: bool,
    },
    /// A dict: `left` pairs still to begin; `in_pair` while a pair's key
    /// is read and its value (after `=`) is next.
    Pairs {
        left: usize,
        in_pair: bool,
        started: bool,
    },
    /// A named type: its one inner value (`read` once begun), then `)`.
    Tagged { read: bool },
}

impl Open {
    fn items(left: usize, close: char) -> Self {
        Open::Items {
            left,
            close,
            started: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_nested_a_million_deep_renders_without_overflowing_the_stack() {
        // Rendered recursively, this aborted the process (stack overflow).
        const DEPTH: usize = 1_000_000;
        let mut w = KeyWriter::new();
        for n in 0..DEPTH {
            let kind = if n % 2 == 0 {
                Sequence::List
            } else {
                Sequence::Tuple
            };
            w.begin_sequence(kind, 1).unwrap();
        }
        w.write_none();
        let mut expected = String::new();
        for n in 0..DEPTH {
            expected.push_str(if n % 2 == 0 { "l1[" } else { "t1(" });
        }
        expected.push('N');
        for n in (0..DEPTH).rev() {
            expected.push(if n % 2 == 0 { ']' } else { ')' });
        }
        assert!(render(w.as_bytes()).unwrap() == expected);
        assert_eq!(value_ranges(w.as_bytes()).unwrap(), vec![0..w.len()]);
    }

    #[test]
    fn empty_and_nested_containers_render_their_separators() {
        let mut w = KeyWriter::new();
        w.begin_sequence(Sequence::Tuple, 0).unwrap();
        let mut pair = KeyWriter::new();
        pair.write_int(1);
        pair.begin_sequence(Sequence::List, 2).unwrap();
        pair.write_none();
        pair.begin_tagged("D").unwrap();
        pair.write_unordered(Unordered::Set, vec![]).unwrap();
        let mut other = KeyWriter::new();
        other.write_int(2);
        other.write_bool(true);
        w.write_unordered(Unordered::Dict, vec![pair, other])
            .unwrap();
        w.write_int(3);
        assert_eq!(
            render(w.as_bytes()).unwrap(),
            "t0(),d2{i1=l2[N,x1:D(S0{})],i2=T},i3"
        );
        // A container cut short is malformed where its bytes end.
        let cut = &w.as_bytes()[..w.len() - 10];
        assert!(render(cut).is_err());
    }

    #[test]
    fn a_writer_started_with_a_word_equals_one_that_appends_it() {
        for word in [0u64, 1, 0x0102_0304_0506_0708, u64::MAX] {
            let mut appended = KeyWriter::new();
            appended.write_prefix_word(word);
            let mut started = KeyWriter::starting_with_word(word);
            assert_eq!(started.as_bytes(), appended.as_bytes());
            // And it grows past the inline buffer like any other writer.
            let long = "x".repeat(200);
            appended.write_int(-7);
            appended.write_str(&long).unwrap();
            started.write_int(-7);
            started.write_str(&long).unwrap();
            assert_eq!(started.as_bytes(), appended.as_bytes());
        }
    }

    /// What a test closure returns: nothing, or a fallible write's result
    /// (which must succeed).
    trait Done {
        fn done(self);
    }

    impl Done for () {
        fn done(self) {}
    }

    impl Done for Result<(), TooLong> {
        fn done(self) {
            self.expect("a short value fits");
        }
    }

    fn one<R: Done>(write: impl FnOnce(&mut KeyWriter) -> R) -> KeyWriter {
        let mut w = KeyWriter::new();
        write(&mut w).done();
        w
    }

    #[test]
    fn scalars_of_different_types_never_collide() {
        let all = [
            one(|w| w.write_int(1)),
            one(|w| w.write_float(1.0)),
            one(|w| w.write_bool(true)),
            one(|w| w.write_str("1")),
            one(|w| w.write_none()),
            one(|w| w.write_str("None")),
            one(|w| w.write_str("null")),
            one(|w| w.write_bytes(b"1")),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.as_bytes(), b.as_bytes());
                assert_ne!(render(a.as_bytes()).unwrap(), render(b.as_bytes()).unwrap());
            }
        }
    }

    #[test]
    fn separators_inside_text_cannot_forge_a_second_value() {
        // f("a,s1:b") against f("a", "b"), and the same with the key separator.
        let joined = one(|w| w.write_str("a,s1:b"));
        let split = one(|w| {
            w.write_str("a").unwrap();
            w.write_str("b").unwrap();
        });
        assert_ne!(
            render(joined.as_bytes()).unwrap(),
            render(split.as_bytes()).unwrap()
        );
        let list = one(|w| {
            w.begin_sequence(Sequence::List, 2).unwrap();
            w.write_int(1);
            w.write_int(2);
        });
        let text = one(|w| w.write_str("1,2"));
        assert_ne!(
            render(list.as_bytes()).unwrap(),
            render(text.as_bytes()).unwrap()
        );
        let colons = one(|w| w.write_str("a::b||c"));
        assert_eq!(render(colons.as_bytes()).unwrap(), "s7:a::b||c");
    }

    #[test]
    fn unordered_containers_ignore_insertion_order() {
        let items = |order: &[i64]| {
            order
                .iter()
                .map(|n| one(|w| w.write_int(*n)))
                .collect::<Vec<_>>()
        };
        let a = one(|w| w.write_unordered(Unordered::Set, items(&[3, 1, 2])));
        let b = one(|w| w.write_unordered(Unordered::Set, items(&[2, 3, 1])));
        assert_eq!(a.as_bytes(), b.as_bytes());
        let frozen = one(|w| w.write_unordered(Unordered::FrozenSet, items(&[1, 2, 3])));
        assert_ne!(a.as_bytes(), frozen.as_bytes());
        assert_eq!(render(a.as_bytes()).unwrap(), "S3{i1,i2,i3}");
    }

    #[test]
    fn renders_every_kind() {
        let w = one(|w| {
            w.write_none();
            w.write_bool(false);
            w.write_int(-7);
            w.write_big_int("0x18ee90ff6c373e0ee4e3f0ad2").unwrap();
            w.write_float(2.5);
            w.write_bytes(&[0, 255]).unwrap();
            w.begin_sequence(Sequence::Tuple, 1).unwrap();
            w.write_str("é").unwrap();
            let pair = one(|p| {
                p.write_str("a").unwrap();
                p.write_int(1);
            });
            w.write_unordered(Unordered::Dict, vec![pair]).unwrap();
            w.begin_tagged("Decimal").unwrap();
            w.write_str("1.5").unwrap();
        });
        assert_eq!(
            render(w.as_bytes()).unwrap(),
            "N,F,i-7,i0x18ee90ff6c373e0ee4e3f0ad2,f2.5,b2:00ff,t1(s2:é),d1{s1:a=i1},x7:Decimal(s3:1.5)"
        );
    }

    #[test]
    fn a_tag_in_two_parts_is_the_joined_tag() {
        let joined = one(|w| {
            w.begin_tagged("enum:app.Color").unwrap();
            w.write_int(1);
        });
        let parts = one(|w| {
            w.begin_tagged_parts("enum:", "app.Color").unwrap();
            w.write_int(1);
        });
        assert_eq!(parts.as_bytes(), joined.as_bytes());
        assert_eq!(render(parts.as_bytes()).unwrap(), "x14:enum:app.Color(i1)");
    }

    #[test]
    fn nan_is_canonical() {
        let a = one(|w| w.write_float(f64::NAN));
        let b = one(|w| w.write_float(-f64::NAN));
        assert_eq!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn long_parts_are_digested_not_truncated() {
        let a = one(|w| w.write_str(&"x".repeat(300)));
        let b = one(|w| w.write_str(&format!("{}y", "x".repeat(299))));
        let (pa, pb) = (
            fit_part(render(a.as_bytes()).unwrap(), 250),
            fit_part(render(b.as_bytes()).unwrap(), 250),
        );
        assert_eq!(pa.len(), 33);
        assert!(pa.starts_with('h'));
        assert_ne!(pa, pb);
        // Stable across runs and hosts: a fixed digest of fixed bytes.
        assert_eq!(digest(b"restflow"), digest(b"restflow"));
        assert_eq!(digest(b"").len(), 32);
        let short = one(|w| w.write_int(5));
        assert_eq!(fit_part(render(short.as_bytes()).unwrap(), 250), "i5");
        // The digest is of the text, so the same text digests the same
        // whichever bytes it was rendered from.
        assert_eq!(
            fit_part("x".repeat(300), 250),
            fit_part("x".repeat(300), 250)
        );
    }

    #[test]
    fn value_ranges_split_a_run() {
        let w = one(|w| {
            w.write_int(1);
            w.write_str("ab").unwrap();
            w.begin_sequence(Sequence::List, 1).unwrap();
            w.write_none();
        });
        let ranges = value_ranges(w.as_bytes()).unwrap();
        assert_eq!(ranges, vec![0..9, 9..16, 16..22]);
        assert_eq!(render(&w.as_bytes()[ranges[1].clone()]).unwrap(), "s2:ab");
    }

    #[test]
    fn malformed_bytes_are_reported() {
        assert!(render(&[0xFF]).is_err());
        assert!(render(&[tag::STR, 10, 0, 0, 0, b'a']).is_err());
    }

    #[test]
    fn a_part_over_4_gib_is_refused_not_a_panic() {
        // The boundary itself: the longest length there is, and one more.
        assert_eq!(len_u32(MAX_LEN), Ok(u32::MAX));
        assert_eq!(len_u32(MAX_LEN + 1), Err(TooLong { len: MAX_LEN + 1 }));
        // A real buffer one byte over: zeroed memory is mapped lazily and the
        // length is checked before anything reads it, so this costs no RSS.
        let huge = vec![0u8; MAX_LEN + 1];
        let mut w = one(|w| w.write_int(1));
        let before = w.as_bytes().to_vec();
        assert_eq!(w.write_bytes(&huge), Err(TooLong { len: MAX_LEN + 1 }));
        // SAFETY: zero bytes are valid UTF-8 (NUL characters).
        let text = unsafe { std::str::from_utf8_unchecked(&huge) };
        assert_eq!(w.write_str(text), Err(TooLong { len: MAX_LEN + 1 }));
        assert_eq!(
            w.begin_sequence(Sequence::List, MAX_LEN + 1),
            Err(TooLong { len: MAX_LEN + 1 })
        );
        // Nothing was written for the refused values.
        assert_eq!(w.as_bytes(), &before[..]);
        assert!(TooLong { len: MAX_LEN + 1 }.to_string().contains("4 GiB"));
    }

    /// Two inputs xxh3-128 digests alike: stripes 0 and 15 of the first
    /// 1024-byte block read lane 7 against the default secret's bytes 56..64
    /// and 176..184; when a lane's high half equals the secret's, its product
    /// is zero and only the word itself is added to the neighbouring
    /// accumulator, so swapping the two lanes' low halves changes nothing.
    fn xxh3_colliding_pair() -> (Vec<u8>, Vec<u8>) {
        let build = |first: &[u8; 4], second: &[u8; 4]| {
            let mut out = vec![b'A'; 1200];
            for (at, low, high) in [
                (56, first, [0x81, 0x3a, 0x26, 0x4c]),
                (1016, second, [0x95, 0x16, 0x04, 0x28]),
            ] {
                out[at..at + 4].copy_from_slice(low);
                out[at + 4..at + 8].copy_from_slice(&high);
            }
            out
        };
        (build(b"xyz\xc2", b"XYZ\xc2"), build(b"XYZ\xc2", b"xyz\xc2"))
    }

    #[test]
    fn crafted_xxh3_collisions_digest_apart() {
        let (a, b) = xxh3_colliding_pair();
        assert_ne!(a, b);
        // The pair does collide under xxh3-128 (what keys were digested with).
        assert_eq!(
            xxhash_rust::xxh3::xxh3_128(&a),
            xxhash_rust::xxh3::xxh3_128(&b)
        );
        assert_ne!(digest(&a), digest(&b));
        let text = |raw: Vec<u8>| String::from_utf8(raw).unwrap();
        assert_ne!(fit_part(text(a), 250), fit_part(text(b), 250));
    }

    #[test]
    fn the_digest_is_the_first_half_of_sha256() {
        // Fixed across hosts and releases: key strings in shared stores use it.
        assert_eq!(digest(b"abc"), "ba7816bf8f01cfea414140de5dae2223");
        assert_eq!(digest(b""), "e3b0c44298fc1c149afbf4c8996fb924");
    }

    #[test]
    fn composes_the_layout() {
        assert_eq!(compose("ns", "app.f", "", "i5"), "ns::app.f::::i5");
    }
}
