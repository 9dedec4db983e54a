//! Strict JSON reading for FHIR bodies (FHIR R4 §2.6.2 "JSON Representation of Resources").
//!
//! FHIR JSON forbids what serde_json silently accepts: duplicate property names, `null` outside
//! arrays, empty arrays, empty objects and empty strings. fhirbolt also panics on empty arrays
//! (STACK.md), so all of these are refused here, with the path of each offence, before any other
//! code sees the body.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::error::Issue;

/// serde_json's private marker for numbers under `arbitrary_precision`, which fhirbolt turns on
/// for the whole build: such numbers reach a visitor as a one-entry map.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Number(v.into())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Number(v.into())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrictValue, E> {
        Number::from_f64(v)
            .map(|n| StrictValue(Value::Number(n)))
            .ok_or_else(|| E::custom("a number that is not finite"))
    }
    fn visit_str<E>(self, v: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }
    fn visit_none<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(StrictValue(Value::Array(out)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictValue, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == NUMBER_TOKEN && out.is_empty() {
                let text: String = map.next_value()?;
                let n = Number::from_str(&text).map_err(de::Error::custom)?;
                return Ok(StrictValue(Value::Number(n)));
            }
            let StrictValue(v) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate property \"{key}\"")));
            }
            out.insert(key, v);
        }
        Ok(StrictValue(Value::Object(out)))
    }
}

/// Parses a JSON body, refusing duplicate property names. Errors name line and column.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, Issue> {
    serde_json::from_slice::<StrictValue>(bytes)
        .map(|v| v.0)
        .map_err(|e| Issue::general("structure", format!("the body is not valid JSON: {e}")))
}

/// Lists every `null` outside an array, empty array, empty object and empty string, with its
/// FHIRPath-like location (`Flag.identifier[0].system`).
pub fn forbidden_empties(root: &Value, root_name: &str) -> Vec<Issue> {
    let mut out = Vec::new();
    walk(root, root_name, false, &mut out);
    out
}

fn walk(v: &Value, path: &str, in_array: bool, out: &mut Vec<Issue>) {
    match v {
        Value::Null if !in_array => out.push(Issue::new(
            "structure",
            path,
            format!("{path}: null is not allowed in FHIR JSON; omit the element"),
        )),
        Value::Null => {}
        Value::String(s) if s.is_empty() => out.push(Issue::new(
            "structure",
            path,
            format!("{path}: empty strings are not allowed in FHIR; omit the element"),
        )),
        Value::Array(items) if items.is_empty() => out.push(Issue::new(
            "structure",
            path,
            format!("{path}: empty arrays are not allowed in FHIR JSON; omit the element"),
        )),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{i}]"), true, out);
            }
        }
        Value::Object(map) if map.is_empty() => out.push(Issue::new(
            "structure",
            path,
            format!("{path}: empty objects are not allowed in FHIR JSON; omit the element"),
        )),
        Value::Object(map) => {
            for (k, item) in map {
                walk(item, &format!("{path}.{k}"), false, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_properties_are_refused() {
        assert!(parse_strict(br#"{"a":1,"a":2}"#).is_err());
        assert!(parse_strict(br#"{"a":{"b":1,"b":1}}"#).is_err());
    }

    #[test]
    fn numbers_survive_arbitrary_precision() {
        let v = parse_strict(br#"{"a":1.50,"b":[3]}"#).ok();
        assert_eq!(v.map(|v| v["b"][0].as_i64()), Some(Some(3)));
    }

    #[test]
    fn empties_and_nulls_are_listed_with_their_paths() {
        let v = parse_strict(br#"{"name":[],"x":null,"y":{},"z":"","ok":[null,1]}"#).ok();
        let issues = v
            .map(|v| forbidden_empties(&v, "Patient"))
            .unwrap_or_default();
        let paths: Vec<_> = issues.iter().filter_map(|i| i.expression.clone()).collect();
        assert_eq!(
            paths,
            ["Patient.name", "Patient.x", "Patient.y", "Patient.z"]
        );
    }

    #[test]
    fn truncated_json_is_an_error_not_a_panic() {
        assert!(parse_strict(br#"{"resourceType":"Fla"#).is_err());
    }
}
