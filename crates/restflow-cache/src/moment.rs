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
