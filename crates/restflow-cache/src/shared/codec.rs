//! How an embedder's values become stored bytes and back, as one trait the
//! lifecycle takes instead of a pair of closures per entry point.
//!
//! The engine does not know the embedder's values (the Python bindings
//! store Python objects, pickled or as JSON): a [`Codec`] turns one into
//! `(serializer flags, bytes)` and back. Its policy is the contract below;
//! how it reports what it refused (a log line, a counter) is its own.
//! [`Policy`] is that policy over an embedder's plain serializer
//! ([`Serializes`]), which only says what it refused and how to tell the
//! operator, with the messages of [`Skipped::message`].
//!
//! Invariants: `encode` and `decode` may run foreign code (the bindings
//! attach to Python in them), so the engine calls them with none of its
//! locks held, as every `decode` closure before them.

use std::sync::atomic::{AtomicBool, Ordering};

use super::background::Refreshed;
use super::cache::Produced;
use super::decode::Undecodable;
use super::unfaithful::Unfaithful;
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

/// Why a value was not stored: what an embedder's serializer says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal<E> {
    /// `SERIALIZER="json"` would not give it back unchanged.
    Unfaithful(Unfaithful),
    /// The serializer raised.
    Raised(E),
}

/// What [`Policy`] skipped, for the embedder to report (a log line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skipped<E> {
    /// A computed value is served but not stored.
    Unstored(Refusal<E>),
    /// A stored value no longer deserializes: it is recomputed.
    Unreadable(E),
}

impl<E> Skipped<E> {
    /// Whether to tell the operator about this: a JSON refusal repeats on
    /// every call of its function and the first message says all there
    /// is, so it is told once per function (`told`, the function's flag,
    /// is set then); anything else is told every time.
    pub fn to_tell(&self, told: &AtomicBool) -> bool {
        let unfaithful = matches!(self, Skipped::Unstored(Refusal::Unfaithful(_)));
        !unfaithful || !told.swap(true, Ordering::Relaxed)
    }

    /// What to tell the operator about a value of `function_id()`.
    pub fn message(&self, function_id: &str) -> String {
        match self {
            Skipped::Unstored(Refusal::Unfaithful(refused)) => refused.refusal(function_id),
            Skipped::Unstored(Refusal::Raised(_)) => format!(
                "restflow: the value of {function_id}() cannot be serialized; it is served but \
                 not cached"
            ),
            // Signed by this cache, yet unreadable now (the class moved, say).
            Skipped::Unreadable(_) => format!(
                "restflow: a cached value of {function_id}() could not be deserialized; \
                 recomputing"
            ),
        }
    }
}

/// An embedder's serializer as it is, which [`Policy`] makes a [`Codec`]
/// of. May run foreign code (see the module's invariants).
pub trait Serializes<T> {
    /// What the serializer raises.
    type Error;
    /// `value` as `(serializer flags, bytes)`, or why it is not stored.
    fn serialize(&self, value: &T) -> Result<(u8, Vec<u8>), Refusal<Self::Error>>;
    /// A value [`Serializes::serialize`] gave.
    fn deserialize(&self, flags: u8, bytes: &[u8]) -> Result<T, Self::Error>;
    /// Whether `error` must end the call and reach the caller as it is
    /// (the bindings' `KeyboardInterrupt`) rather than be skipped.
    fn is_fatal(&self, error: &Self::Error) -> bool;
    /// Tells the operator what was skipped ([`Skipped::message`]).
    fn report(&self, skipped: Skipped<Self::Error>);
}

/// The lifecycle's policy on values that do not serialize or deserialize,
/// over an embedder's serializer: a value it refuses is reported and served
/// but not stored; a stored value it cannot read is reported and
/// recomputed; a fatal error ends the call, reported to nobody but the
/// caller.
pub struct Policy<S>(pub S);

impl<S> Policy<S> {
    /// A stored value for a read that only looks (a peek, a near hit): one
    /// that does not deserialize is not served, and not reported (the read
    /// of the store that follows, if any, reports it). An error it does not
    /// hand on is dropped here: call it where dropping one is allowed (the
    /// bindings attach to Python around it).
    pub fn decode_quietly<T>(&self, flags: u8, bytes: &[u8]) -> Result<T, Undecodable<S::Error>>
    where
        S: Serializes<T>,
    {
        self.0
            .deserialize(flags, bytes)
            .map_err(|error| match self.0.is_fatal(&error) {
                true => Undecodable::Fatal(error),
                false => Undecodable::Unreadable,
            })
    }
}

impl<T, S: Serializes<T>> Codec<T> for Policy<S> {
    type Error = S::Error;

    fn encode(&self, value: &T) -> Result<Option<(u8, Vec<u8>)>, S::Error> {
        match self.0.serialize(value) {
            Ok(serialized) => Ok(Some(serialized)),
            Err(Refusal::Raised(error)) if self.0.is_fatal(&error) => Err(error),
            Err(refusal) => {
                self.0.report(Skipped::Unstored(refusal));
                Ok(None)
            }
        }
    }

    fn decode(&self, flags: u8, bytes: &[u8]) -> Result<T, Undecodable<S::Error>> {
        self.0.deserialize(flags, bytes).map_err(|error| {
            if self.0.is_fatal(&error) {
                return Undecodable::Fatal(error);
            }
            self.0.report(Skipped::Unreadable(error));
            Undecodable::Unreadable
        })
    }
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

    /// How a background refresh that computed this value ends: its bytes
    /// stored, or [`Refreshed::Unstored`] when it is not to be stored; the
    /// value itself is not needed there.
    pub fn into_refreshed(self) -> Refreshed {
        self.into_parts().1
    }

    /// The value, and how a background refresh that computed it ends.
    pub fn into_parts(self) -> (T, Refreshed) {
        let refreshed = match self.serialized {
            Some((flags, bytes)) => Refreshed::Store(flags, bytes, self.lifetime),
            None => Refreshed::Unstored,
        };
        (self.value, refreshed)
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

    /// Numbers as decimal text: refuses negative ones as unfaithful, fails
    /// on zero fatally and on other values below 10 otherwise; reads back
    /// only what parses. Records what it was asked to report.
    #[derive(Default)]
    struct Decimal {
        reported: std::sync::Mutex<Vec<Skipped<String>>>,
    }

    impl Serializes<i64> for Decimal {
        type Error = String;
        fn serialize(&self, value: &i64) -> Result<(u8, Vec<u8>), Refusal<String>> {
            match *value {
                n if n < 0 => Err(Refusal::Unfaithful(Unfaithful::found("neg".into(), false))),
                0 => Err(Refusal::Raised("fatal".into())),
                n if n < 10 => Err(Refusal::Raised(format!("small {n}"))),
                n => Ok((1, n.to_string().into_bytes())),
            }
        }
        fn deserialize(&self, _: u8, bytes: &[u8]) -> Result<i64, String> {
            match bytes {
                b"0" => Err("fatal".into()),
                _ => std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| "garbage".to_owned()),
            }
        }
        fn is_fatal(&self, error: &String) -> bool {
            error == "fatal"
        }
        fn report(&self, skipped: Skipped<String>) {
            self.reported.lock().unwrap().push(skipped);
        }
    }

    #[test]
    fn the_policy_skips_and_reports_what_does_not_serialize_and_ends_the_call_on_a_fatal_error() {
        let policy = Policy(Decimal::default());
        assert_eq!(policy.encode(&42), Ok(Some((1, b"42".to_vec()))));
        assert_eq!(policy.decode(1, b"42"), Ok(42));
        // Served but not stored, and reported.
        assert_eq!(policy.encode(&-1), Ok(None));
        assert_eq!(policy.encode(&5), Ok(None));
        // Recomputed, and reported.
        assert_eq!(policy.decode(1, b"x"), Err(Undecodable::Unreadable));
        // Fatal: the caller's, reported to nobody else.
        assert_eq!(policy.encode(&0), Err("fatal".to_owned()));
        assert_eq!(
            policy.decode(1, b"0"),
            Err(Undecodable::Fatal("fatal".into()))
        );
        let unfaithful = Refusal::Unfaithful(Unfaithful::found("neg".into(), false));
        let expected = vec![
            Skipped::Unstored(unfaithful),
            Skipped::Unstored(Refusal::Raised("small 5".into())),
            Skipped::Unreadable("garbage".into()),
        ];
        assert_eq!(*policy.0.reported.lock().unwrap(), expected);
        // A read that only looks reports nothing.
        assert_eq!(policy.decode_quietly(1, b"x"), Err(Undecodable::Unreadable));
        assert_eq!(
            policy.decode_quietly(1, b"0"),
            Err(Undecodable::<String>::Fatal("fatal".into()))
        );
        assert_eq!(policy.decode_quietly::<i64>(1, b"7"), Ok(7));
        assert_eq!(policy.0.reported.lock().unwrap().len(), 3);
    }

    #[test]
    fn what_was_skipped_is_told_for_its_function() {
        let unread = Skipped::Unreadable(()).message("app.f");
        assert_eq!(
            unread,
            "restflow: a cached value of app.f() could not be deserialized; recomputing"
        );
        let unstored = Skipped::Unstored(Refusal::Raised(())).message("app.f");
        assert_eq!(
            unstored,
            "restflow: the value of app.f() cannot be serialized; it is served but not cached"
        );
        let refused = Unfaithful::found("set".into(), false);
        let json = Skipped::<()>::Unstored(Refusal::Unfaithful(refused.clone()));
        assert_eq!(json.message("app.f"), refused.refusal("app.f"));
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
        assert_eq!(
            stored.into_refreshed(),
            Refreshed::Store(7, b"v".to_vec(), minute)
        );
        // Not to be stored: the codec is not even asked ("stop" would fail).
        let unstored = Produced::encoded(&Text, computed("stop", None)).unwrap();
        assert_eq!(
            (unstored.value.as_str(), unstored.serialized),
            ("stop", None)
        );
        assert_eq!(unstored.lifetime, Lifetime::FOREVER);
        let refused = Produced::encoded(&Text, computed("", Some(minute))).unwrap();
        assert_eq!(refused.serialized, None);
        assert_eq!(refused.into_refreshed(), Refreshed::Unstored);
        let failed = Produced::encoded(&Text, computed("stop", Some(minute)));
        assert_eq!(failed.err(), Some("stopped"));
    }

    #[test]
    fn a_json_refusal_is_told_once_per_function_and_anything_else_every_time() {
        let told = AtomicBool::new(false);
        let unfaithful =
            || Skipped::<String>::Unstored(Refusal::Unfaithful(Unfaithful::too_deep()));
        let raised = Skipped::Unstored(Refusal::Raised("boom".to_owned()));
        let unreadable = Skipped::Unreadable("gone".to_owned());
        assert!(raised.to_tell(&told) && unreadable.to_tell(&told));
        assert!(unfaithful().to_tell(&told), "the first refusal is told");
        assert!(!unfaithful().to_tell(&told), "not again");
        assert!(raised.to_tell(&told) && unreadable.to_tell(&told));
        // Another function's flag: told there too.
        assert!(unfaithful().to_tell(&AtomicBool::new(false)));
    }
}
