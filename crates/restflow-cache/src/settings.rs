//! The settings cached functions fall back on when they choose nothing
//! themselves, kept where the hot path reads them in one load, and the
//! store a function chooses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::timestamp::Span;

/// Bits of [`Defaults::state`]: what the hot path needs to know, in one
/// load.
pub mod state {
    /// The settings have been read.
    pub const CONFIGURED: u8 = 1;
    /// The default store is the in-process memory store.
    pub const MEMORY: u8 = 2;
    /// The default stale-if-error window is 0.
    pub const NO_KEEP: u8 = 4;
    /// Never set: a mask holding it is never satisfied (see
    /// [`BackendChoice::plain_memory_bits`](super::BackendChoice::plain_memory_bits)).
    pub const NEVER: u8 = 0x80;
}

/// The settings an embedder read from its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The stale-while-revalidate window of functions that set none.
    pub stale: Span,
    /// Key-string parts longer than this are digested.
    pub max_key_part_length: usize,
    /// Whether functions that choose no store use the memory store.
    pub memory: bool,
    /// The stale-if-error window of functions that set none.
    pub stale_if_error: Span,
}

impl Settings {
    /// The settings from the numbers a configuration holds (its windows in
    /// seconds), or the message saying which setting to change.
    pub fn from_secs(
        stale_secs: f64,
        stale_if_error_secs: f64,
        max_key_part_length: usize,
        memory: bool,
    ) -> Result<Settings, String> {
        Ok(Settings {
            stale: seconds("STALE_WHILE_REVALIDATE", stale_secs)?,
            stale_if_error: seconds("STALE_IF_ERROR", stale_if_error_secs)?,
            max_key_part_length,
            memory,
        })
    }
}

/// `secs` as a [`Span`], or the error saying `what` must be >= 0.
pub fn seconds(what: &str, secs: f64) -> Result<Span, String> {
    Span::from_secs_f64(secs)
        .ok_or_else(|| format!("{what} must be a number of seconds >= 0, got {secs}"))
}

/// [`Settings`] in atomics, read by every call: until [`Defaults::set`],
/// the state has no [`state::CONFIGURED`] bit and callers read the
/// settings first.
///
/// Invariant: the state bits are stored last (release) and read first
/// (acquire), so a caller that sees [`state::CONFIGURED`] sees the values
/// stored with it.
#[derive(Debug, Default)]
pub struct Defaults {
    state: AtomicU8,
    stale_micros: AtomicI64,
    stale_if_error_micros: AtomicI64,
    max_key_part_length: AtomicUsize,
}

impl Defaults {
    /// Unconfigured defaults: no stale windows, parts of 250 bytes.
    pub const fn new() -> Self {
        Defaults {
            state: AtomicU8::new(0),
            stale_micros: AtomicI64::new(0),
            stale_if_error_micros: AtomicI64::new(0),
            max_key_part_length: AtomicUsize::new(250),
        }
    }

    /// Stores `settings` and marks the defaults configured.
    pub fn set(&self, settings: &Settings) {
        self.stale_if_error_micros
            .store(settings.stale_if_error.as_micros(), Ordering::Release);
        self.stale_micros
            .store(settings.stale.as_micros(), Ordering::Release);
        self.max_key_part_length
            .store(settings.max_key_part_length, Ordering::Release);
        let mut bits = state::CONFIGURED;
        if settings.memory {
            bits |= state::MEMORY;
        }
        if settings.stale_if_error.is_zero() {
            bits |= state::NO_KEEP;
        }
        self.state.store(bits, Ordering::Release);
    }

    /// Makes the next call read the settings again.
    pub fn unset(&self) {
        self.state.store(0, Ordering::Release);
    }

    /// The [`state`] bits, in one load.
    #[inline(always)]
    pub fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// The stale window of functions that set none.
    #[inline]
    pub fn stale(&self) -> Span {
        Span::from_micros(self.stale_micros.load(Ordering::Acquire))
    }

    /// The stale-if-error window of functions that set none.
    pub fn stale_if_error(&self) -> Span {
        Span::from_micros(self.stale_if_error_micros.load(Ordering::Acquire))
    }

    /// Key-string parts longer than this are digested.
    pub fn max_key_part_length(&self) -> usize {
        self.max_key_part_length.load(Ordering::Acquire)
    }
}

/// The store a function uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// The default store (the settings').
    Default,
    /// The in-process memory store, whatever the settings say.
    Memory,
    /// A store by its spec (`"redis://…"`, `"django:alias"`).
    Named(String),
}

impl BackendChoice {
    /// The choice `spec` names: none is the default, `"memory"` the
    /// memory store, anything else a store spec.
    pub fn parse(spec: Option<&str>) -> Self {
        match spec {
            None => BackendChoice::Default,
            Some("memory") => BackendChoice::Memory,
            Some(spec) => BackendChoice::Named(spec.to_owned()),
        }
    }

    /// The store spec a function named, if any (`None`: the default
    /// store, or the memory store).
    pub fn spec(&self) -> Option<&str> {
        match self {
            BackendChoice::Named(spec) => Some(spec),
            _ => None,
        }
    }

    /// Whether calls use the memory store, given the [`state`] bits.
    #[inline(always)]
    pub fn uses_memory(&self, bits: u8) -> bool {
        match self {
            BackendChoice::Memory => true,
            BackendChoice::Default => bits & state::MEMORY != 0,
            BackendChoice::Named(_) => false,
        }
    }

    /// The [`state`] bits under which a call may take the hot path (the
    /// memory store, and no stale-if-error window to keep entries for;
    /// `stale_if_error`: the function's own, `None` for the default), as one
    /// mask that must be wholly set: a caller makes it once and tests the
    /// state word against it in one comparison. It holds [`state::NEVER`]
    /// when no state lets the call take the hot path (a named store, a
    /// window of its own).
    pub fn plain_memory_bits(&self, stale_if_error: Option<Span>) -> u8 {
        let memory = match self {
            BackendChoice::Memory => 0,
            BackendChoice::Default => state::MEMORY,
            BackendChoice::Named(_) => state::NEVER,
        };
        let no_keep = match stale_if_error {
            Some(keep) if keep.is_zero() => 0,
            Some(_) => state::NEVER,
            None => state::NO_KEEP,
        };
        state::CONFIGURED | memory | no_keep
    }

    /// Whether a call may take the hot path, given the [`state`] bits (see
    /// [`BackendChoice::plain_memory_bits`]).
    #[inline]
    pub fn plain_memory(&self, stale_if_error: Option<Span>, bits: u8) -> bool {
        let mask = self.plain_memory_bits(stale_if_error);
        bits & mask == mask
    }
}

/// The namespace part of a function's key strings: `<namespace>`, or
/// `<namespace>:v<version>` past the key constructor's first version.
pub fn namespace_part(namespace: String, version: u32) -> String {
    if version == 1 {
        namespace
    } else {
        format!("{namespace}:v{version}")
    }
}

/// Values made from the settings (a shared store's backend per spec),
/// kept by name until the settings change.
///
/// Invariants: every caller of a name uses the first value kept for it (a
/// backend's flights are the process's single-flight, its pools and near
/// cache the process's: a caller using another would lead a cold key a
/// second time); and a value made from settings read before a change
/// ([`MadeFromSettings::forget`]) is neither kept nor used, but made again.
/// Fork safety (see [`crate::fork`]): used only while the embedder holds a
/// lock `fork` waits for (Python's GIL), so its lock is never held by a
/// thread a fork leaves behind.
pub struct MadeFromSettings<T> {
    made: parking_lot::Mutex<HashMap<String, T>>,
    /// Bumped, under the lock, by each [`MadeFromSettings::forget`].
    epoch: AtomicU64,
}

impl<T> Default for MadeFromSettings<T> {
    fn default() -> Self {
        MadeFromSettings {
            made: parking_lot::Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
        }
    }
}

impl<T> MadeFromSettings<T> {
    /// The value kept under `name` (`clone` copies it out), or the one
    /// `make` makes, run without the lock held: `None` from `make` means
    /// there is nothing to keep (the memory store). Callers that meet here
    /// each make one; the first kept is the one they all use, the others
    /// are dropped once the lock is released (their drop may run the
    /// embedder's code).
    pub fn get_or_make<E>(
        &self,
        name: &str,
        clone: impl Fn(&T) -> T,
        mut make: impl FnMut() -> Result<Option<T>, E>,
    ) -> Result<Option<T>, E> {
        loop {
            let epoch = {
                let made = self.made.lock();
                if let Some(found) = made.get(name) {
                    return Ok(Some(clone(found)));
                }
                self.epoch.load(Ordering::Relaxed)
            };
            let Some(new) = make()? else {
                return Ok(None);
            };
            let (kept, unused) = {
                let mut made = self.made.lock();
                if self.epoch.load(Ordering::Relaxed) != epoch {
                    (None, Some(new))
                } else if let Some(found) = made.get(name) {
                    (Some(clone(found)), Some(new))
                } else {
                    let kept = clone(&new);
                    made.insert(name.to_owned(), new);
                    (Some(kept), None)
                }
            };
            drop(unused);
            if let Some(kept) = kept {
                return Ok(Some(kept));
            }
        }
    }

    /// Forgets every value (the settings changed); returns them, for the
    /// caller to drop once the lock is released.
    pub fn forget(&self) -> HashMap<String, T> {
        let mut made = self.made.lock();
        self.epoch.fetch_add(1, Ordering::Relaxed);
        std::mem::take(&mut *made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn settings_from_a_configurations_numbers_say_which_is_wrong() {
        let settings = Settings::from_secs(30.0, 0.5, 250, true).unwrap();
        assert_eq!(settings.stale, Span::from_secs(30));
        assert_eq!(settings.stale_if_error, Span::from_micros(500_000));
        assert!(settings.memory && settings.max_key_part_length == 250);
        assert_eq!(
            Settings::from_secs(30.0, -1.0, 250, true),
            Err("STALE_IF_ERROR must be a number of seconds >= 0, got -1".to_owned())
        );
        let nan = Settings::from_secs(f64::NAN, 0.0, 250, false).unwrap_err();
        assert!(nan.starts_with("STALE_WHILE_REVALIDATE must be"));
    }

    type Made = MadeFromSettings<Rc<&'static str>>;

    fn get(made: &Made, make: impl FnMut() -> Option<&'static str>) -> Option<&'static str> {
        let mut make = make;
        let got = made.get_or_make("", Rc::clone, || Ok::<_, ()>(make().map(Rc::new)));
        got.unwrap().map(|v| *v)
    }

    #[test]
    fn the_first_value_kept_is_the_one_every_caller_uses() {
        let made = Made::default();
        // Another caller keeps "first" while this one makes "second".
        let second = get(&made, || {
            assert_eq!(get(&made, || Some("first")), Some("first"));
            Some("second")
        });
        assert_eq!(second, Some("first"));
        assert_eq!(get(&made, || unreachable!("kept already")), Some("first"));
        assert_eq!(made.forget().len(), 1);
        assert_eq!(
            get(&made, || None),
            None,
            "nothing to keep: the memory store"
        );
    }

    #[test]
    fn a_value_made_across_a_settings_change_is_made_again() {
        let made = Made::default();
        let calls = Cell::new(0);
        let got = get(&made, || {
            calls.set(calls.get() + 1);
            if calls.get() == 1 {
                made.forget(); // the settings change while it is made
                Some("stale")
            } else {
                Some("fresh")
            }
        });
        assert_eq!((got, calls.get()), (Some("fresh"), 2));
        assert_eq!(get(&made, || unreachable!()), Some("fresh"));
    }

    #[test]
    fn the_hot_path_needs_configured_memory_with_nothing_to_keep() {
        let defaults = Defaults::new();
        let memory = BackendChoice::parse(None);
        assert!(
            !memory.plain_memory(None, defaults.state()),
            "not configured"
        );
        let settings = Settings {
            stale: Span::from_secs(3),
            max_key_part_length: 100,
            memory: true,
            stale_if_error: Span::ZERO,
        };
        defaults.set(&settings);
        assert!(memory.plain_memory(None, defaults.state()));
        assert!(!memory.plain_memory(Some(Span::from_secs(1)), defaults.state()));
        assert!(!BackendChoice::parse(Some("redis://h")).plain_memory(None, defaults.state()));
        assert_eq!(defaults.stale(), Span::from_secs(3));
        assert_eq!(defaults.max_key_part_length(), 100);

        defaults.set(&Settings {
            memory: false,
            stale_if_error: Span::from_secs(60),
            ..settings
        });
        assert!(!memory.uses_memory(defaults.state()));
        assert!(BackendChoice::parse(Some("memory")).uses_memory(defaults.state()));
        assert_eq!(
            BackendChoice::parse(Some("redis://h")).spec(),
            Some("redis://h")
        );
        assert_eq!(BackendChoice::parse(Some("memory")).spec(), None);
        assert_eq!(memory.spec(), None);
        assert!(
            BackendChoice::Memory.plain_memory(Some(Span::ZERO), defaults.state()),
            "a function's own window wins over the default"
        );
        assert_eq!(defaults.stale_if_error(), Span::from_secs(60));
        defaults.unset();
        assert_eq!(defaults.state() & state::CONFIGURED, 0);
    }

    #[test]
    fn windows_and_namespaces() {
        assert_eq!(seconds("ttl", 1.5), Ok(Span::from_micros(1_500_000)));
        assert_eq!(
            seconds("ttl", -1.0),
            Err("ttl must be a number of seconds >= 0, got -1".to_owned())
        );
        assert_eq!(namespace_part("ns".into(), 1), "ns");
        assert_eq!(namespace_part("ns".into(), 3), "ns:v3");
    }
}
