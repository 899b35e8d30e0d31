//! `datetime` and `time` values in keys: their text, their fold and their
//! zone.
//!
//! `isoformat()` alone is not the value. It prints an offset, not a zone:
//! 12:00 UTC, 12:00 in `Europe/London` in winter and 12:00 in a zone
//! named `GMT` print alike, yet a function that reads `tzname()` or adds a
//! month returns different things for each. It leaves out `fold`, which
//! decides what a naive value means once it is given a zone. And a `time`
//! with a `ZoneInfo` prints no offset at all, like a naive one. So the key
//! holds the zone by name, and the fold, whenever they say more than the
//! text does.
//!
//! The common values keep the key they always had (just the text): naive
//! ones with fold 0, and those whose zone is a plain `datetime.timezone`
//! offset (UTC included), which the printed offset describes completely.
//! Zones are keyed by what names them in every process: a `ZoneInfo` by its
//! key, a named `datetime.timezone` by its offset and name. Any other
//! `tzinfo` (a class restflow cannot see into) is refused, never keyed by
//! what it prints.

use pyo3::prelude::*;
use pyo3::types::PyType;
use restflow_cache::key::{KeyWriter, Sequence};

use crate::encode::{type_path, unsupported, StdTypes, Unsupported};

/// What the key says about a value's zone beyond its text.
enum Zone {
    /// Nothing: naive, or a `datetime.timezone` with the default name for
    /// its offset, which the text prints in full.
    InText,
    /// A `datetime.timezone` with a name of its own.
    Named { offset_micros: i64, name: String },
    /// A `zoneinfo.ZoneInfo`, by its key (`Europe/London`).
    Info(String),
}

/// Writes a datetime or time (its tag already written) from its
/// `isoformat()` text `iso`.
pub(crate) fn write_moment(
    w: &mut KeyWriter,
    value: &Bound<'_, PyAny>,
    iso: &str,
    types: &StdTypes,
) -> Result<(), Unsupported> {
    let fold: i64 = value
        .getattr("fold")
        .and_then(|f| f.extract())
        .map_err(|_| unsupported(value))?;
    let zone = zone(value, types)?;
    if fold == 0 && matches!(zone, Zone::InText) {
        w.write_str(iso)?;
        return Ok(());
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
            w.write_int(offset_micros);
            w.write_str(&name)?;
        }
        Zone::Info(key) => {
            w.begin_tagged("zoneinfo.ZoneInfo")?;
            w.write_str(&key)?;
        }
    }
    Ok(())
}

fn zone(value: &Bound<'_, PyAny>, types: &StdTypes) -> Result<Zone, Unsupported> {
    let py = value.py();
    let tz = value.getattr("tzinfo").map_err(|_| unsupported(value))?;
    if tz.is_none() {
        return Ok(Zone::InText);
    }
    let failed = |_| unsupported(value);
    let kind = tz.get_type();
    if kind.is(types.timezone.bind(py)) {
        // A fixed offset: the same whatever the date, so `None` asks it.
        let offset = tz.call_method1("utcoffset", (py.None(),)).map_err(failed)?;
        let name: String = tz
            .call_method1("tzname", (py.None(),))
            .and_then(|n| n.extract())
            .map_err(failed)?;
        let unnamed: String = types
            .timezone
            .bind(py)
            .call1((&offset,))
            .and_then(|t| t.call_method1("tzname", (py.None(),)))
            .and_then(|n| n.extract())
            .map_err(failed)?;
        if name == unnamed {
            return Ok(Zone::InText);
        }
        let micros = ["days", "seconds", "microseconds"].map(|part| {
            offset
                .getattr(part)
                .and_then(|v| v.extract::<i64>())
                .unwrap_or_default()
        });
        return Ok(Zone::Named {
            offset_micros: (micros[0] * 86_400 + micros[1]) * 1_000_000 + micros[2],
            name,
        });
    }
    if kind.is(types.zone_info.bind(py)) {
        let key = tz.getattr("key").map_err(failed)?;
        if key.is_none() {
            return Err(Unsupported {
                what: format!("a {} whose zone is a ZoneInfo with no key", name(value)),
                reason: Some(
                    "a ZoneInfo made from a file (ZoneInfo.from_file) has no key to name \
                     it by in every process; use ZoneInfo(\"Area/City\")."
                        .to_owned(),
                ),
            });
        }
        return Ok(Zone::Info(key.extract().map_err(failed)?));
    }
    Err(Unsupported {
        what: format!("a {} whose tzinfo is a '{}'", name(value), type_path(&kind)),
        reason: Some(
            "only zoneinfo.ZoneInfo or datetime.timezone zones have a name restflow can key \
             by (the printed offset is not the zone). Convert the value (astimezone(ZoneInfo(\
             \"Area/City\"))) or give the key field a normalizer."
                .to_owned(),
        ),
    })
}

fn name(value: &Bound<'_, PyAny>) -> String {
    let kind: Bound<'_, PyType> = value.get_type();
    type_path(&kind)
}
