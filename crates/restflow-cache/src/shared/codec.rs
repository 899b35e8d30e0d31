//! How an embedder's values become stored bytes and back, as one trait the
//! lifecycle takes instead of a pair of closures per entry point.
//!
//! The engine does not know the embedder's values (the Python bindings
//! store Python objects, pickled or as JSON): a [`Codec`] turns one into
//! `(serializer flags, bytes)` and back. Its policy is the contract below;
//! how it reports what it refused (a log line, a counter) is its own.
//!
//! Invariants: `encode` and `decode` may run foreign code (the bindings
//! attach to Python in them), so the engine calls them with none of its
//! locks held, as every `decode` closure before them.

use super::background::Refreshed;
use super::cache::Produced;
use super::decode::Undecodable;
use crate::engine::Computed;

/// Turns values of type `T` into stored bytes and back.
pub trait Codec<T> {
    /// What a codec reports that must reach the caller as it is (the
    /// bindings' `KeyboardInterrupt`).
    type Error;

    /// `value` as `(serializer flags, bytes)`; `Ok(None)` when it is served
    /// but not stored (the codec refused it, and reported why itself);
    /// `Err` when the call must end with that error.
    fn encode(&self, value: &T) -> Result<Option<(u8, Vec<u8>)>, Self::Error>;

    /// A value stored by [`Codec::encode`] (and signed by this cache); see
    /// [`Undecodable`] for what a value that does not decode becomes.
    fn decode(&self, flags: u8, bytes: &[u8]) -> Result<T, Undecodable<Self::Error>>;
}

impl<T> Produced<T> {
    /// A computed value as the lifecycle stores it: encoded by `codec` when
    /// it is to be stored (`computed.lifetime` is `Some`), kept forever when
    /// its lifetime is not given. A value the codec refuses is served but
    /// not stored. Call it where dropping a `T` is allowed: on an error,
    /// the value is dropped here.
    pub fn encoded<C: Codec<T>>(codec: &C, computed: Computed<T>) -> Result<Self, C::Error> {
        let serialized = match computed.lifetime {
            Some(_) => codec.encode(&computed.value)?,
            None => None,
        };
        Ok(Produced {
            value: computed.value,
            serialized,
            lifetime: computed.lifetime.unwrap_or(crate::Lifetime::FOREVER),
        })
    }

    /// What a background refresh stores of this value (nothing when it is
    /// not to be stored); the value itself is not needed there.
    pub fn into_refreshed(self) -> Refreshed {
        let lifetime = self.lifetime;
        self.serialized
            .map(|(flags, bytes)| (flags, bytes, lifetime))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Lifetime, Span};

    /// Stores strings as UTF-8, refuses empty ones, and fails on "stop".
    struct Text;

    impl Codec<String> for Text {
        type Error = &'static str;
        fn encode(&self, value: &String) -> Result<Option<(u8, Vec<u8>)>, &'static str> {
            match value.as_str() {
                "stop" => Err("stopped"),
                "" => Ok(None),
                text => Ok(Some((7, text.as_bytes().to_vec()))),
            }
        }
        fn decode(&self, _: u8, bytes: &[u8]) -> Result<String, Undecodable<&'static str>> {
            String::from_utf8(bytes.to_vec()).map_err(|_| Undecodable::Unreadable)
        }
    }

    fn computed(value: &str, lifetime: Option<Lifetime>) -> Computed<String> {
        Computed {
            value: value.to_owned(),
            lifetime,
        }
    }

    #[test]
    fn only_a_value_to_be_stored_is_encoded_and_a_refusal_is_served_unstored() {
        let minute = Lifetime::new(Span::from_secs(60), Span::ZERO);
        let stored = Produced::encoded(&Text, computed("v", Some(minute))).unwrap();
        assert_eq!(stored.serialized, Some((7, b"v".to_vec())));
        assert_eq!(stored.lifetime, minute);
        assert_eq!(stored.into_refreshed(), Some((7, b"v".to_vec(), minute)));
        // Not to be stored: the codec is not even asked ("stop" would fail).
        let unstored = Produced::encoded(&Text, computed("stop", None)).unwrap();
        assert_eq!(
            (unstored.value.as_str(), unstored.serialized),
            ("stop", None)
        );
        assert_eq!(unstored.lifetime, Lifetime::FOREVER);
        let refused = Produced::encoded(&Text, computed("", Some(minute))).unwrap();
        assert_eq!(refused.serialized, None);
        assert_eq!(refused.into_refreshed(), None);
        let failed = Produced::encoded(&Text, computed("stop", Some(minute)));
        assert_eq!(failed.err(), Some("stopped"));
    }
}
