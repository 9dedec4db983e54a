//! The FHIR facade: parsing FHIR bodies into domain values and rendering domain rows as FHIR
//! resources (FHIR R4 §2.6 formats, §3.1 RESTful API). Nothing here touches the database.

pub mod audit_event;
pub mod bundle;
pub mod codec;
pub mod flag;
pub mod format;
pub mod guard;
pub mod json;
pub mod national;
pub mod organization;
pub mod patient;
pub mod percent;
pub mod profile;
pub mod search;
pub mod subscription;
pub mod transaction;

use chrono::SecondsFormat;
use serde_json::{json, Value};

use crate::domain::PROFILE_BASE;
use crate::store::from_micros;

/// A JSON object of `members`, in order, each value moved in. (`json!` serialises every value
/// it is handed as an expression, which deep-copies a `Value`: renderers nest their parts
/// with this instead.)
pub fn object<const N: usize>(members: [(&str, Value); N]) -> Value {
    let mut map = serde_json::Map::with_capacity(N);
    for (k, v) in members {
        map.insert(k.to_owned(), v);
    }
    Value::Object(map)
}

/// `meta` for a stored resource: version, last update, and the profile it conforms to.
pub fn meta(version: i64, updated_at: i64, profile: &str) -> Value {
    json!({
        "versionId": version.to_string(),
        "lastUpdated": instant(updated_at),
        "profile": [format!("{PROFILE_BASE}/StructureDefinition/{profile}")],
    })
}

/// A stored instant as a FHIR `instant` (UTC, millisecond precision).
pub fn instant(micros: i64) -> String {
    from_micros(micros).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads a string property, for use after the profile has checked its presence and type.
pub fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// A FHIR `date` or `dateTime` reduced to its calendar date; partial dates have none.
pub fn full_date(s: &str) -> Option<chrono::NaiveDate> {
    if s.len() == 10 {
        return chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    }
    profile::parse_instant(s).map(|t| t.date_naive())
}
