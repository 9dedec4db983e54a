//! The only place fhirbolt is called (FHIR R4 §2.6.1 XML and §2.6.2 JSON formats).
//!
//! Kept to a few plain, non-generic functions: fhirbolt's generic serde code is monomorphised
//! wherever it is called (STACK.md), and its known panics (empty arrays and other malformed
//! input) are contained here with `catch_unwind`, so a body can never take a worker down.

use std::panic::{catch_unwind, AssertUnwindSafe};

use fhirbolt::model::r4::Resource;
use fhirbolt::serde::{DeserializationConfig, DeserializationMode};
use serde_json::Value;

use crate::error::Issue;

fn strict() -> Option<DeserializationConfig> {
    Some(DeserializationConfig {
        mode: DeserializationMode::Strict,
    })
}

/// Parses an XML resource and returns its JSON form, which the rest of the server works on.
pub fn xml_to_json(bytes: &[u8]) -> Result<Value, Issue> {
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        fhirbolt::xml::from_slice::<Resource>(bytes, strict())
    }));
    let resource = match parsed {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(xml_issue(&e.to_string())),
        Err(_) => {
            return Err(Issue::general(
                "structure",
                "the XML body could not be read as a FHIR R4 resource",
            ))
        }
    };
    let json = catch_unwind(AssertUnwindSafe(|| {
        fhirbolt::json::to_json_value(resource, None)
    }));
    match json {
        Ok(Ok(v)) => Ok(v),
        _ => Err(Issue::general(
            "structure",
            "the XML body could not be converted to a FHIR R4 resource",
        )),
    }
}

/// fhirbolt's message for an XML element unknown to FHIR R4 names the element; it is turned
/// into an issue whose `expression` names it too, as the profile does for JSON.
fn xml_issue(text: &str) -> Issue {
    let unknown = text
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next());
    let diagnostics = format!("the XML body is not a valid FHIR R4 resource: {text}");
    match unknown {
        Some(field) => Issue::new("structure", field, diagnostics),
        None => Issue::general("structure", diagnostics),
    }
}

/// Checks a JSON resource against the FHIR R4 base definitions (types and elements).
pub fn check_json(value: &Value) -> Result<(), Issue> {
    let value = value.clone();
    let parsed = catch_unwind(AssertUnwindSafe(move || {
        fhirbolt::json::from_json_value::<Resource>(value, strict()).map(|_| ())
    }));
    match parsed {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Issue::general(
            "structure",
            format!("the body is not a valid FHIR R4 resource: {e}"),
        )),
        Err(_) => Err(Issue::general(
            "structure",
            "the body could not be read as a FHIR R4 resource",
        )),
    }
}

/// Renders a JSON resource (including Bundles with nested resources) as FHIR XML.
pub fn json_to_xml(value: &Value) -> Result<Vec<u8>, String> {
    let value = value.clone();
    let out = catch_unwind(AssertUnwindSafe(move || {
        let r: Resource = fhirbolt::json::from_json_value(value, strict())
            .map_err(|e| format!("json→model: {e}"))?;
        fhirbolt::xml::to_vec(&r, None).map_err(|e| format!("model→xml: {e}"))
    }));
    match out {
        Ok(r) => r,
        Err(_) => Err("fhirbolt panicked while rendering XML".to_owned()),
    }
}
