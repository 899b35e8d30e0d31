//! Instants and spans in whole microseconds since the Unix epoch.
//!
//! Microseconds are the resolution of Python's `datetime`, which is what the
//! metadata of a cached value is read back as; a finer resolution would only
//! be thrown away when it is printed.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

/// A point in time: microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// A length of time in microseconds. Never negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// The instant `micros` microseconds after the epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// The instant `secs` seconds after the epoch, to the nearest
    /// microsecond.
    pub fn from_secs_f64(secs: f64) -> Self {
        Timestamp((secs * 1e6).round() as i64)
    }

    /// Seconds since the epoch.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// The current wall-clock time.
    pub fn now_system() -> Self {
        let micros = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_micros() as i64,
            Err(before) => -(before.duration().as_micros() as i64),
        };
        Timestamp(micros)
    }

    /// The current wall-clock time at the resolution of the system's coarse
    /// clock (a scheduler tick, 1–4 ms on Linux), for about a seventh of
    /// the cost of [`Timestamp::now_system`] (5 ns against 37 ns, measured
    /// here). Used for freshness checks on the hit path; stored timestamps
    /// use the precise clock.
    #[inline]
    pub fn now_coarse() -> Self {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(micros) = coarse_clock(libc::clock_gettime) {
            return Timestamp(micros);
        }
        Self::now_system()
    }

    /// How far [`Timestamp::now_coarse`] may trail the precise clock: two of
    /// its ticks (the tick it is in, and one late update), read once from
    /// `clock_getres`. Zero where the coarse clock is the precise one.
    #[inline]
    pub fn coarse_lag() -> Span {
        static LAG: std::sync::OnceLock<Span> = std::sync::OnceLock::new();
        *LAG.get_or_init(|| {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            if let Some(tick) = coarse_clock(libc::clock_getres) {
                // +1: the resolution in microseconds, rounded up.
                return Span::from_micros(2 * (tick + 1));
            }
            Span::ZERO
        })
    }

    /// `self + span`, saturating at the end of representable time.
    pub const fn saturating_add(self, span: Span) -> Self {
        Timestamp(self.0.saturating_add(span.0))
    }

    /// Formats the instant in UTC exactly as Python's
    /// `datetime.isoformat()` prints an aware UTC datetime:
    /// `2026-11-27T04:12:17.071457+00:00`, with the fraction left out
    /// when the microseconds are zero.
    ///
    /// Instants outside the years 1..=9999 (which Python cannot represent)
    /// are clamped to those bounds.
    pub fn to_isoformat(self) -> String {
        const MIN: i64 = -62_135_596_800_000_000; // 0001-01-01T00:00:00Z
        const MAX: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999Z
        let micros = self.0.clamp(MIN, MAX);
        let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
            .expect("clamped into the range time can represent");
        let date_time = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        );
        match dt.microsecond() {
            0 => format!("{date_time}+00:00"),
            us => format!("{date_time}.{us:06}+00:00"),
        }
    }
}

/// `read` (`clock_gettime` or `clock_getres`) of the coarse real-time
/// clock, in microseconds (truncated); `None` if the call fails.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
fn coarse_clock(
    read: unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int,
) -> Option<i64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { read(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0 {
        return None;
    }
    // time_t and c_long are narrower than i64 on some targets.
    #[allow(clippy::unnecessary_cast)]
    Some(ts.tv_sec as i64 * 1_000_000 + ts.tv_nsec as i64 / 1_000)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_isoformat())
    }
}

impl Span {
    /// No time at all.
    pub const ZERO: Span = Span(0);

    /// A span of `micros` microseconds; negative values are clamped to zero.
    pub const fn from_micros(micros: i64) -> Self {
        Span(if micros < 0 { 0 } else { micros })
    }

    /// A span of whole seconds.
    pub const fn from_secs(secs: i64) -> Self {
        Span::from_micros(secs.saturating_mul(1_000_000))
    }

    /// A span from fractional seconds, rounded to the nearest microsecond.
    ///
    /// Returns `None` for a negative, NaN or infinite input, so callers
    /// decide what such a value means for them.
    pub fn from_secs_f64(secs: f64) -> Option<Self> {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        let micros = (secs * 1_000_000.0).round();
        Some(Span(if micros >= i64::MAX as f64 {
            i64::MAX
        } else {
            micros as i64
        }))
    }

    /// Microseconds in the span.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Whether the span is empty.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl From<Duration> for Span {
    fn from(d: Duration) -> Self {
        Span(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isoformat_matches_python() {
        // datetime.fromtimestamp(1795753937.071457, timezone.utc).isoformat()
        let t = Timestamp::from_micros(1_795_753_937_071_457);
        assert_eq!(t.to_isoformat(), "2026-11-27T04:32:17.071457+00:00");
        // No fraction when the microseconds are zero.
        let t = Timestamp::from_micros(1_795_753_937_000_000);
        assert_eq!(t.to_isoformat(), "2026-11-27T04:32:17+00:00");
        // Leading zeros in the fraction are kept.
        let t = Timestamp::from_micros(1_000_007);
        assert_eq!(t.to_isoformat(), "1970-01-01T00:00:01.000007+00:00");
        assert_eq!(Timestamp::EPOCH.to_isoformat(), "1970-01-01T00:00:00+00:00");
        // Before the epoch.
        let t = Timestamp::from_micros(-1);
        assert_eq!(t.to_isoformat(), "1969-12-31T23:59:59.999999+00:00");
    }

    #[test]
    fn isoformat_clamps_to_python_range() {
        assert_eq!(
            Timestamp::from_micros(i64::MAX).to_isoformat(),
            "9999-12-31T23:59:59.999999+00:00"
        );
        assert_eq!(
            Timestamp::from_micros(i64::MIN).to_isoformat(),
            "0001-01-01T00:00:00+00:00"
        );
    }

    #[test]
    fn coarse_time_is_close_to_precise_time() {
        let coarse = Timestamp::now_coarse().as_micros();
        let precise = Timestamp::now_system().as_micros();
        // A tick behind at most (generously bounded), never meaningfully ahead.
        assert!((precise - coarse).abs() < 100_000, "{precise} vs {coarse}");
    }

    #[test]
    fn spans_from_seconds() {
        assert_eq!(Span::from_secs_f64(1.5), Some(Span::from_micros(1_500_000)));
        assert_eq!(Span::from_secs_f64(-1.0), None);
        assert_eq!(Span::from_secs_f64(f64::NAN), None);
        assert_eq!(
            Span::from_secs_f64(1e300),
            Some(Span::from_micros(i64::MAX))
        );
        assert_eq!(Span::from_micros(-5), Span::ZERO);
        assert_eq!(
            Timestamp::from_micros(i64::MAX - 1).saturating_add(Span::from_secs(10)),
            Timestamp::from_micros(i64::MAX)
        );
    }
}
