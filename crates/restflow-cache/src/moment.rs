//! Date-times and times of day in keys: their text, their fold and their
//! zone.
//!
//! An ISO-8601 text alone is not the value. It prints an offset, not a
//! zone: 12:00 UTC, 12:00 in `Europe/London` in winter and 12:00 in a zone
//! named `GMT` print alike, yet a function that reads the zone's name or
//! adds a month returns different things for each. It leaves out the fold,
//! which decides what a local time means in a repeated hour. And a time of
//! day with a named zone prints no offset at all, like a naive one. So the
//! key holds the zone by name, and the fold, whenever they say more than
//! the text does.
//!
//! The common values keep the key they always had (just the text): naive
//! ones with fold 0, and those whose zone is a plain fixed offset (UTC
//! included), which the printed offset describes completely. Zones are
//! keyed by what names them in every process: a tz database zone by its key
//! (`Europe/London`), a named fixed offset by its offset and name. The
//! embedder refuses any other zone, never keying it by what it prints.

use crate::key::{KeyWriter, Sequence, TooLong};
use crate::signature::Unsupported;

/// What the key says about a value's zone beyond its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Zone {
    /// Nothing: naive, or a fixed offset with the default name for it,
    /// which the text prints in full.
    InText,
    /// A fixed offset with a name of its own (Python's `datetime.timezone`).
    Named {
        /// The offset from UTC, in microseconds.
        offset_micros: i64,
        /// The zone's name.
        name: String,
    },
    /// A tz database zone, by its key (Python's `zoneinfo.ZoneInfo`).
    Info(String),
}

impl Zone {
    /// A fixed offset's zone (Python's `datetime.timezone`), its offset
    /// as `(days, seconds, microseconds)`: in the text when its `name` is
    /// the one every zone of that offset has by default (`default_name`),
    /// else named.
    pub fn fixed(offset: [i64; 3], name: String, default_name: &str) -> Zone {
        if name == default_name {
            return Zone::InText;
        }
        let [days, seconds, micros] = offset;
        Zone::Named {
            offset_micros: (days * 86_400 + seconds) * 1_000_000 + micros,
            name,
        }
    }

    /// A tz database zone by its `key`; `None` is a zone made from a file,
    /// which has no key to name it by in every process: refused, for a
    /// value of type `value`.
    pub fn info(key: Option<String>, value: &str) -> Result<Zone, Unsupported> {
        key.map(Zone::Info).ok_or_else(|| Unsupported {
            what: format!("a {value} whose zone is a ZoneInfo with no key"),
            reason: Some(
                "a ZoneInfo made from a file (ZoneInfo.from_file) has no key to name \
                 it by in every process; use ZoneInfo(\"Area/City\")."
                    .to_owned(),
            ),
        })
    }

    /// The refusal of any other zone (a `tzinfo` of type `tzinfo`, for a
    /// value of type `value`): what it prints is an offset, not a name.
    pub fn unknown(value: &str, tzinfo: &str) -> Unsupported {
        Unsupported {
            what: format!("a {value} whose tzinfo is a '{tzinfo}'"),
            reason: Some(
                "only zoneinfo.ZoneInfo or datetime.timezone zones have a name restflow can key \
                 by (the printed offset is not the zone). Convert the value (astimezone(ZoneInfo(\
                 \"Area/City\"))) or give the key field a normalizer."
                    .to_owned(),
            ),
        }
    }
}

/// Writes a date-time or a time of day (its tag already written) from its
/// ISO-8601 text `iso`, its `fold` and its `zone`.
pub fn write_moment(w: &mut KeyWriter, iso: &str, fold: i64, zone: &Zone) -> Result<(), TooLong> {
    if fold == 0 && *zone == Zone::InText {
        return w.write_str(iso);
    }
    w.begin_sequence(Sequence::Tuple, 3)?;
    w.write_str(iso)?;
    w.write_int(fold);
    match zone {
        Zone::InText => w.write_none(),
        Zone::Named {
            offset_micros,
            name,
        } => {
            w.begin_tagged("datetime.timezone")?;
            w.begin_sequence(Sequence::Tuple, 2)?;
            w.write_int(*offset_micros);
            w.write_str(name)?;
        }
        Zone::Info(key) => {
            w.begin_tagged("zoneinfo.ZoneInfo")?;
            w.write_str(key)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::render;

    fn rendered(iso: &str, fold: i64, zone: Zone) -> String {
        let mut w = KeyWriter::new();
        write_moment(&mut w, iso, fold, &zone).unwrap();
        render(w.as_bytes()).unwrap()
    }

    #[test]
    fn a_zone_is_named_only_when_its_text_does_not_say_it_and_only_by_what_names_it() {
        assert_eq!(
            Zone::fixed([0, 3600, 0], "UTC+01:00".into(), "UTC+01:00"),
            Zone::InText
        );
        assert_eq!(
            Zone::fixed([-1, 86_399, 5], "X".into(), "UTC-00:00:00.999995"),
            Zone::Named {
                offset_micros: -999_995,
                name: "X".into()
            }
        );
        assert_eq!(
            Zone::info(Some("Europe/London".into()), "datetime.datetime"),
            Ok(Zone::Info("Europe/London".into()))
        );
        let keyless = Zone::info(None, "datetime.datetime").unwrap_err();
        assert_eq!(
            keyless.what,
            "a datetime.datetime whose zone is a ZoneInfo with no key"
        );
        assert!(keyless.reason.unwrap().contains("ZoneInfo.from_file"));
        let unknown = Zone::unknown("datetime.time", "pytz.UTC");
        assert_eq!(unknown.what, "a datetime.time whose tzinfo is a 'pytz.UTC'");
        assert!(unknown
            .reason
            .unwrap()
            .starts_with("only zoneinfo.ZoneInfo"));
    }

    #[test]
    fn the_key_says_what_the_text_does_not() {
        let iso = "2024-01-01T12:00:00+00:00";
        assert_eq!(rendered(iso, 0, Zone::InText), format!("s25:{iso}"));
        let london = rendered(iso, 0, Zone::Info("Europe/London".into()));
        let gmt = rendered(
            iso,
            0,
            Zone::Named {
                offset_micros: 0,
                name: "GMT".into(),
            },
        );
        assert_ne!(london, gmt);
        assert!(london.contains("zoneinfo.ZoneInfo") && london.contains("Europe/London"));
        assert!(gmt.contains("datetime.timezone") && gmt.contains("GMT"));
        assert_ne!(
            rendered(iso, 1, Zone::InText),
            rendered(iso, 0, Zone::InText)
        );
    }
}
