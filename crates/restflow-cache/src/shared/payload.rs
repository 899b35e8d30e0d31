//! What a shared store holds under a key: a versioned header, the
//! serialized value, and an HMAC-SHA256 tag over both and the key.
//!
//! ```text
//! b"RFC3"  magic and format version          4 bytes
//! flags    the serializer and future bits    1 byte
//! cached_at, fresh_until, stale_until        3 x i64 LE (microseconds; i64::MAX = never)
//! generations                                3 x u64 LE (scope, partition, version)
//! early refresh: delta, beta                 i64 LE (microseconds), f64 LE (0 = off)
//! value                                      the rest, up to the tag
//! tag      HMAC-SHA256(signing key,          32 bytes
//!            len(store key) as u64 LE, store key, everything above)
//! ```
//!
//! A payload that is too short, carries another magic or version, or fails
//! the tag is refused before any byte of the value is looked at, so a
//! tampered or foreign entry is never handed to a deserializer (Python's
//! `pickle` above all). The tag covers the store key the entry was written
//! under, so an entry copied onto another key (another user's, say) fails
//! the check there. (Version 1 did not cover the key; its entries are
//! refused as an unknown version, a miss.)
//!
//! Version 2 is version 3 without the early-refresh fields; its entries,
//! written before early refresh existed, are still read (as entries
//! that do not refresh early), so an upgrade keeps its cache.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::early::{Beta, Early};
use crate::entry::Stamps;
use crate::timestamp::{Span, Timestamp};

type HmacSha256 = Hmac<Sha256>;

const MAGIC: &[u8; 4] = b"RFC3";
/// The header of version 2, which version 3 extends.
const HEADER_V2: usize = 4 + 1 + 3 * 8 + 3 * 8;
const HEADER: usize = HEADER_V2 + 8 + 8;
const TAG: usize = 32;
const NEVER: i64 = i64::MAX;

/// The generations an entry was written under; an entry is served only
/// while all three are still current.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Generations {
    /// The function's (scope's) generation.
    pub scope: u64,
    /// The partition's generation.
    pub partition: u64,
    /// The key constructor version's generation.
    pub version: u64,
}

/// A payload that checked out.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The serializer's flag byte.
    pub flags: u8,
    /// The entry's instants.
    pub stamps: Stamps,
    /// The generations it was written under.
    pub generations: Generations,
    /// The serialized value.
    pub value: &'a [u8],
}

/// Why a payload was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Too short to hold a header and a tag.
    Truncated,
    /// Not written by restflow (another magic).
    Foreign,
    /// Written by another format version.
    UnknownVersion,
    /// The tag does not match: tampered, or signed with another key.
    BadSignature,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rejected::Truncated => "truncated payload",
            Rejected::Foreign => "not a restflow payload",
            Rejected::UnknownVersion => "unknown payload version",
            Rejected::BadSignature => "payload signature does not match",
        })
    }
}

impl std::error::Error for Rejected {}

/// Signs and checks payloads with one key.
#[derive(Clone)]
pub struct Signer {
    mac: HmacSha256,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

fn stamp(t: Option<Timestamp>) -> i64 {
    t.map_or(NEVER, Timestamp::as_micros)
}

fn unstamp(micros: i64) -> Option<Timestamp> {
    (micros != NEVER).then_some(Timestamp::from_micros(micros))
}

fn read_i64(bytes: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

impl Signer {
    /// A signer with `key` (any length; HMAC hashes long keys).
    pub fn new(key: &[u8]) -> Self {
        Signer {
            mac: HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length"),
        }
    }

    /// The MAC state after the store key, which every tag starts with.
    fn keyed(&self, key: &str) -> HmacSha256 {
        let mut mac = self.mac.clone();
        // The length first, so no key and body split the same bytes two ways.
        mac.update(&(key.len() as u64).to_le_bytes());
        mac.update(key.as_bytes());
        mac
    }

    /// The payload for `value`, to be stored under `key`.
    pub fn encode(
        &self,
        key: &str,
        flags: u8,
        stamps: &Stamps,
        generations: Generations,
        value: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + value.len() + TAG);
        out.extend_from_slice(MAGIC);
        out.push(flags);
        out.extend_from_slice(&stamps.cached_at.as_micros().to_le_bytes());
        out.extend_from_slice(&stamp(stamps.fresh_until).to_le_bytes());
        out.extend_from_slice(&stamp(stamps.stale_until).to_le_bytes());
        out.extend_from_slice(&generations.scope.to_le_bytes());
        out.extend_from_slice(&generations.partition.to_le_bytes());
        out.extend_from_slice(&generations.version.to_le_bytes());
        let (delta, beta) = stamps
            .early
            .map_or((0, 0.0), |e| (e.delta.as_micros(), e.beta.get()));
        out.extend_from_slice(&delta.to_le_bytes());
        out.extend_from_slice(&beta.to_le_bytes());
        out.extend_from_slice(value);
        let mut mac = self.keyed(key);
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// Checks and opens a payload read from `key`.
    pub fn decode<'a>(&self, key: &str, payload: &'a [u8]) -> Result<Decoded<'a>, Rejected> {
        if payload.len() < 4 {
            return Err(Rejected::Truncated);
        }
        if &payload[..3] != b"RFC" {
            return Err(Rejected::Foreign);
        }
        let header = match payload[3] {
            b'3' => HEADER,
            b'2' => HEADER_V2,
            _ => return Err(Rejected::UnknownVersion),
        };
        if payload.len() < header + TAG {
            return Err(Rejected::Truncated);
        }
        let (body, tag) = payload.split_at(payload.len() - TAG);
        let mut mac = self.keyed(key);
        mac.update(body);
        mac.verify_slice(tag).map_err(|_| Rejected::BadSignature)?;
        Ok(Decoded {
            flags: body[4],
            stamps: Stamps {
                cached_at: Timestamp::from_micros(read_i64(body, 5)),
                fresh_until: unstamp(read_i64(body, 13)),
                stale_until: unstamp(read_i64(body, 21)),
                early: if header == HEADER {
                    read_early(body)
                } else {
                    None
                },
            },
            generations: Generations {
                scope: read_u64(body, 29),
                partition: read_u64(body, 37),
                version: read_u64(body, 45),
            },
            value: &body[header..],
        })
    }
}

/// The early-refresh fields of a version 3 header (zero beta: off).
fn read_early(body: &[u8]) -> Option<Early> {
    let beta = f64::from_bits(read_u64(body, HEADER_V2 + 8));
    Beta::new(beta).ok().map(|beta| Early {
        delta: Span::from_micros(read_i64(body, HEADER_V2)),
        beta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Lifetime;

    fn stamps() -> Stamps {
        Stamps::new(
            Timestamp::from_micros(1_000),
            Lifetime::new(Span::from_secs(5), Span::from_secs(1)),
        )
    }

    #[test]
    fn round_trips() {
        let signer = Signer::new(b"secret");
        let gens = Generations {
            scope: 3,
            partition: 1,
            version: 7,
        };
        let payload = signer.encode("k", 2, &stamps(), gens, b"value bytes");
        let decoded = signer.decode("k", &payload).unwrap();
        assert_eq!(decoded.flags, 2);
        assert_eq!(decoded.stamps, stamps());
        assert_eq!(decoded.generations, gens);
        assert_eq!(decoded.value, b"value bytes");
        let forever = Stamps::new(Timestamp::EPOCH, Lifetime::FOREVER);
        let payload = signer.encode("k", 0, &forever, gens, b"");
        assert_eq!(signer.decode("k", &payload).unwrap().stamps, forever);
    }

    #[test]
    fn early_refresh_fields_round_trip() {
        let signer = Signer::new(b"secret");
        let lifetime = Lifetime::new(Span::from_secs(5), Span::from_secs(1))
            .refreshing_early(Beta::new(2.5).unwrap());
        let early = Stamps::new(Timestamp::from_micros(1_000), lifetime)
            .measured(Span::from_micros(1_234_567));
        let payload = signer.encode("k", 0, &early, Generations::default(), b"v");
        let decoded = signer.decode("k", &payload).unwrap();
        assert_eq!(decoded.stamps, early);
        assert_eq!(decoded.value, b"v");
    }

    #[test]
    fn a_version_2_payload_is_still_read() {
        // Version 2: the version 3 header without the early-refresh fields.
        let signer = Signer::new(b"secret");
        let gens = Generations {
            scope: 1,
            partition: 2,
            version: 3,
        };
        let v3 = signer.encode("k", 4, &stamps(), gens, b"old value");
        let mut v2 = v3[..HEADER_V2].to_vec();
        v2[3] = b'2';
        v2.extend_from_slice(&v3[HEADER..v3.len() - TAG]);
        let mut mac = signer.keyed("k");
        mac.update(&v2);
        v2.extend_from_slice(&mac.finalize().into_bytes());
        let decoded = signer.decode("k", &v2).unwrap();
        assert_eq!(decoded.stamps, stamps());
        assert_eq!(decoded.stamps.early, None);
        assert_eq!((decoded.flags, decoded.generations), (4, gens));
        assert_eq!(decoded.value, b"old value");
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let signer = Signer::new(b"secret");
        let payload = signer.encode("k", 0, &stamps(), Generations::default(), b"pickled");
        for at in 0..payload.len() {
            let mut tampered = payload.clone();
            tampered[at] ^= 0x01;
            assert!(
                signer.decode("k", &tampered).is_err(),
                "byte {at} not caught"
            );
        }
    }

    #[test]
    fn foreign_short_and_other_key_payloads_are_refused() {
        let signer = Signer::new(b"secret");
        assert_eq!(signer.decode("k", b"{\"json\": 1}"), Err(Rejected::Foreign));
        assert_eq!(signer.decode("k", b"RF"), Err(Rejected::Truncated));
        assert_eq!(signer.decode("k", b"RFC2short"), Err(Rejected::Truncated));
        let mut other_version = signer.encode("k", 0, &stamps(), Generations::default(), b"v");
        other_version[3] = b'9';
        assert_eq!(
            signer.decode("k", &other_version),
            Err(Rejected::UnknownVersion)
        );
        let payload = Signer::new(b"other").encode("k", 0, &stamps(), Generations::default(), b"v");
        assert_eq!(signer.decode("k", &payload), Err(Rejected::BadSignature));
    }

    #[test]
    fn a_payload_moved_to_another_key_is_refused() {
        let signer = Signer::new(b"secret");
        let payload = signer.encode("user:1", 0, &stamps(), Generations::default(), b"one's");
        assert!(signer.decode("user:1", &payload).is_ok());
        assert_eq!(
            signer.decode("user:2", &payload),
            Err(Rejected::BadSignature)
        );
        // No key and body split the same bytes two ways.
        assert_eq!(
            signer.decode("user:", &payload),
            Err(Rejected::BadSignature)
        );
    }

    #[test]
    fn a_version_1_payload_is_an_unknown_version() {
        // Version 1 signed the body alone: whatever its tag, it is refused.
        let signer = Signer::new(b"secret");
        let mut old = signer.encode("k", 0, &stamps(), Generations::default(), b"v");
        old[3] = b'1';
        let body = old.len() - TAG;
        let mut mac = signer.mac.clone();
        mac.update(&old[..body]);
        let tag = mac.finalize().into_bytes();
        old[body..].copy_from_slice(&tag);
        assert_eq!(signer.decode("k", &old), Err(Rejected::UnknownVersion));
    }
}
