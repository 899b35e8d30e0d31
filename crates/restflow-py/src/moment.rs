//! `datetime` and `time` values in keys: their zone, read from Python.
//!
//! Why a key needs more than `isoformat()`, and how it is written, is the
//! engine's [`restflow_cache::moment`]. Here the zone is named: a
//! `ZoneInfo` by its key, a named `datetime.timezone` by its offset and
//! name. Any other `tzinfo` (a class restflow cannot see into) is refused,
//! never keyed by what it prints.

use pyo3::prelude::*;
use pyo3::types::PyType;
use restflow_cache::moment::Zone;

use crate::encode::{type_path, unsupported, StdTypes, Unsupported};

/// What names the zone of a datetime or time `value`, beyond its text.
pub(crate) fn zone(value: &Bound<'_, PyAny>, types: &StdTypes) -> Result<Zone, Unsupported> {
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
