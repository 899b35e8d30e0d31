//! `datetime` and `time` values in keys: their zone, read from Python.
//!
//! Why a key needs more than `isoformat()`, and how it is written, is the
//! engine's [`restflow_cache::moment`]. Here the zone is named: a
//! `ZoneInfo` by its key, a named `datetime.timezone` by its offset and
//! name. Any other `tzinfo` (a class restflow cannot see into) is refused,
//! never keyed by what it prints.

use pyo3::prelude::*;
use restflow_cache::moment::Zone;

use crate::encode::{timedelta_parts, type_path, unsupported, StdTypes, Unsupported};

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
        let name = |tz: &Bound<'_, PyAny>| -> PyResult<String> {
            tz.call_method1("tzname", (py.None(),))?.extract()
        };
        let unnamed = types.timezone.bind(py).call1((&offset,));
        let unnamed = unnamed.and_then(|t| name(&t)).map_err(failed)?;
        let own = name(&tz).map_err(failed)?;
        return Ok(Zone::fixed(timedelta_parts(&offset), own, &unnamed));
    }
    let value_type = type_path(&value.get_type());
    if kind.is(types.zone_info.bind(py)) {
        let key = tz.getattr("key").and_then(|k| k.extract());
        return Zone::info(key.map_err(failed)?, &value_type);
    }
    Err(Zone::unknown(&value_type, &type_path(&kind)))
}
