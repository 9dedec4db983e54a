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

use crate::error::{Issue, Issues};

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
    let mut out = Issues::default();
    let mut path = root_name.to_owned();
    walk(root, &mut path, false, &mut out);
    out.finish()
}

/// Whether `c` may appear in a FHIR string. FHIR R4 §2.1.28.0.1 (string): "Strings SHALL NOT
/// contain Unicode character points below 32, except for u0009 (horizontal tab), u0010
/// (carriage return) and u0013 (line feed)". This server also refuses DEL and the C1 controls
/// (U+007F–U+009F): no name or reference holds them, and they drive terminals and screens
/// downstream (CSI is U+009B).
pub fn allowed_char(c: char) -> bool {
    !c.is_control() || matches!(c, '\t' | '\n' | '\r')
}

/// `[i]` on the path, without a string made for the number (a Bundle has thousands of entries).
fn push_index(path: &mut String, i: usize) {
    use std::fmt::Write;
    let _ = write!(path, "[{i}]");
}

/// Lists every string value (and property name) holding a character FHIR strings forbid, with
/// its location. In a Bundle, `entry[].resource` is skipped: each entry's resource is checked
/// on its own, so one bad entry of a batch does not refuse the others.
pub fn control_characters(root: &Value, root_name: &str) -> Vec<Issue> {
    let mut out = Issues::default();
    let mut path = root_name.to_owned();
    controls(root, &mut path, root_name == "Bundle", 0, &mut out);
    out.finish()
}

fn control_issue(path: &str, what: &str, c: char) -> Issue {
    Issue::new(
        "value",
        path,
        format!(
            "{path}: {what} the control character U+{:04X}, which FHIR strings do not allow",
            u32::from(c)
        ),
    )
}

fn controls(v: &Value, path: &mut String, bundle: bool, depth: usize, out: &mut Issues) {
    let bad = |s: &str| s.chars().find(|c| !allowed_char(*c));
    match v {
        Value::String(s) => {
            if let Some(c) = bad(s) {
                out.push(control_issue(path, "contains", c));
            }
        }
        Value::Array(items) => {
            let len = path.len();
            for (i, item) in items.iter().enumerate() {
                push_index(path, i);
                controls(item, path, bundle, depth + 1, out);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            let len = path.len();
            for (k, item) in map {
                // Bundle.entry[i].resource: the path is `Bundle.entry[i]`, two levels down.
                if bundle && depth == 2 && k == "resource" {
                    continue;
                }
                path.push('.');
                path.push_str(k);
                if let Some(c) = bad(k) {
                    out.push(control_issue(path, "has a property name holding", c));
                }
                controls(item, path, bundle, depth + 1, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Walks the tree with one path buffer, extended and truncated in place: a Bundle of thousands
/// of resources is walked without building a string per element.
fn walk(v: &Value, path: &mut String, in_array: bool, out: &mut Issues) {
    let mut issue = |what: &str| {
        out.push(Issue::new(
            "structure",
            path.clone(),
            format!("{path}: {what}; omit the element"),
        ))
    };
    match v {
        Value::Null if !in_array => issue("null is not allowed in FHIR JSON"),
        Value::Null => {}
        Value::String(s) if s.is_empty() => issue("empty strings are not allowed in FHIR"),
        Value::Array(items) if items.is_empty() => {
            issue("empty arrays are not allowed in FHIR JSON")
        }
        Value::Object(map) if map.is_empty() => issue("empty objects are not allowed in FHIR JSON"),
        Value::Array(items) => {
            let len = path.len();
            for (i, item) in items.iter().enumerate() {
                push_index(path, i);
                walk(item, path, true, out);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            let len = path.len();
            for (k, item) in map {
                path.push('.');
                path.push_str(k);
                walk(item, path, false, out);
                path.truncate(len);
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
    fn control_characters_are_found_but_not_tab_or_newlines() {
        let v =
            parse_strict(br#"{"name":[{"family":"A\u0000B","given":["x\ty\r\n"]}],"id":"\u001b"}"#)
                .ok();
        let issues = v
            .map(|v| control_characters(&v, "Patient"))
            .unwrap_or_default();
        let paths: Vec<_> = issues.iter().filter_map(|i| i.expression.clone()).collect();
        assert_eq!(paths, ["Patient.name[0].family", "Patient.id"]);
        assert!(!allowed_char('\u{9b}'));
        assert!(allowed_char('é'));
    }

    #[test]
    fn a_bundle_leaves_its_entries_resources_to_the_entry_checks() {
        let v = parse_strict(br#"{"entry":[{"fullUrl":"urn:\u0007","resource":{"id":"\u0007"}}]}"#)
            .ok();
        let issues = v
            .map(|v| control_characters(&v, "Bundle"))
            .unwrap_or_default();
        let paths: Vec<_> = issues.iter().filter_map(|i| i.expression.clone()).collect();
        assert_eq!(paths, ["Bundle.entry[0].fullUrl"]);
    }

    #[test]
    fn a_million_empties_give_a_bounded_list() {
        let body = format!("{{\"a\":[{}[]]}}", "[],".repeat(5000));
        let v = parse_strict(body.as_bytes()).ok();
        let issues = v.map(|v| forbidden_empties(&v, "Flag")).unwrap_or_default();
        assert_eq!(issues.len(), crate::error::MAX_ISSUES + 1);
    }

    #[test]
    fn truncated_json_is_an_error_not_a_panic() {
        assert!(parse_strict(br#"{"resourceType":"Fla"#).is_err());
    }
}
