//! The only crate that calls fhirbolt (FHIR R4 §2.6.1 XML and §2.6.2 JSON formats).
//!
//! A workspace member of its own, behind three plain, non-generic functions, because fhirbolt's
//! generic serde code for every R4 resource is monomorphised and optimised in whichever crate
//! calls it (STACK.md "Compile cost"): here that happens once, and an edit to a handler no
//! longer rebuilds it. fhirbolt's known panics (empty arrays and other malformed input) are
//! contained here with `catch_unwind`, so a body can never take a worker down.

use std::panic::{catch_unwind, AssertUnwindSafe};

use fhirbolt::model::r4::Resource;
use fhirbolt::serde::{DeserializationConfig, DeserializationMode};
use serde_json::Value;

/// Why fhirbolt would not take a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// fhirbolt refused it, and said why (its message names the element where it can).
    Invalid(String),
    /// fhirbolt panicked on it (contained).
    Panicked,
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::Invalid(why) => f.write_str(why),
            CodecError::Panicked => f.write_str("the FHIR library failed on this input"),
        }
    }
}

impl std::error::Error for CodecError {}

fn strict() -> Option<DeserializationConfig> {
    // Strict mode refuses elements unknown to R4 and missing required ones (STACK.md).
    Some(DeserializationConfig {
        mode: DeserializationMode::Strict,
    })
}

/// Parses an XML resource and returns its JSON form.
pub fn xml_to_json(bytes: &[u8]) -> Result<Value, CodecError> {
    let resource = match catch_unwind(AssertUnwindSafe(|| {
        fhirbolt::xml::from_slice::<Resource>(bytes, strict())
    })) {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(CodecError::Invalid(e.to_string())),
        Err(_) => return Err(CodecError::Panicked),
    };
    match catch_unwind(AssertUnwindSafe(|| {
        fhirbolt::json::to_json_value(resource, None)
    })) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(CodecError::Invalid(e.to_string())),
        Err(_) => Err(CodecError::Panicked),
    }
}

/// Checks a JSON resource against the FHIR R4 base definitions (types and elements).
pub fn check_json(value: &Value) -> Result<(), CodecError> {
    check_json_owned(value.clone())
}

/// [`check_json`] of a resource the caller no longer needs: fhirbolt reads a JSON value only by
/// taking it, and copying a resource to lend it costs a bulk Bundle's checks about a tenth of
/// their time.
pub fn check_json_owned(value: Value) -> Result<(), CodecError> {
    match catch_unwind(AssertUnwindSafe(move || check_typed(value))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CodecError::Invalid(e.to_string())),
        Err(_) => Err(CodecError::Panicked),
    }
}

/// Reads the resource as its own R4 type when it is one this server takes. Read as the
/// `Resource` enum, fhirbolt first buffers the whole object (it must find `resourceType` before
/// it knows the type), which made the check three times as costly — half of the CPU a bulk
/// Bundle's checks take. Strict mode and the same R4 definitions either way; read as its own
/// type a resource is held to R4's cardinalities too (the buffered path let an array stand for
/// a single `Organization.name`), and an empty array is left to the server's own check, which
/// runs first (`fhir::json::forbidden_empties`).
fn check_typed(value: Value) -> fhirbolt::json::Result<()> {
    use fhirbolt::json::from_json_value;
    use fhirbolt::model::r4::resources::{Flag, Organization, Patient, Subscription};
    match value.get("resourceType").and_then(Value::as_str) {
        Some("Patient") => from_json_value::<Patient>(value, strict()).map(|_| ()),
        Some("Flag") => from_json_value::<Flag>(value, strict()).map(|_| ()),
        Some("Organization") => from_json_value::<Organization>(value, strict()).map(|_| ()),
        Some("Subscription") => from_json_value::<Subscription>(value, strict()).map(|_| ()),
        _ => from_json_value::<Resource>(value, strict()).map(|_| ()),
    }
}

/// Renders a JSON resource (Bundles with nested resources included) as FHIR XML.
pub fn json_to_xml(value: &Value) -> Result<Vec<u8>, CodecError> {
    let value = value.clone();
    match catch_unwind(AssertUnwindSafe(move || {
        let r: Resource = fhirbolt::json::from_json_value(value, strict())
            .map_err(|e| CodecError::Invalid(format!("json→model: {e}")))?;
        fhirbolt::xml::to_vec(&r, None).map_err(|e| CodecError::Invalid(format!("model→xml: {e}")))
    })) {
        Ok(r) => r,
        Err(_) => Err(CodecError::Panicked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_resource_round_trips_through_xml() {
        let patient = serde_json::json!({"resourceType": "Patient", "id": "p1", "active": true});
        let xml = json_to_xml(&patient);
        assert!(xml.is_ok());
        let back = xml_to_json(&xml.unwrap_or_default());
        assert_eq!(
            back.ok().and_then(|v| v.get("id").cloned()),
            Some("p1".into())
        );
    }

    #[test]
    fn an_empty_array_is_refused_not_a_panic() {
        // A type read through the `Resource` enum, where fhirbolt panics on it (the server's
        // own check refuses empty arrays before any resource reaches this crate).
        let bad = serde_json::json!({"resourceType": "Practitioner", "name": []});
        assert!(check_json(&bad).is_err());
    }

    #[test]
    fn each_type_the_server_takes_is_read_as_its_own_type_and_refuses_what_r4_does_not_allow() {
        let refused = [
            serde_json::json!({"resourceType": "Patient", "birthDate": 5}),
            serde_json::json!({"resourceType": "Flag", "status": "active"}),
            serde_json::json!({"resourceType": "Flag", "status": "active", "code": {"text": "x"}, "subject": {"reference": "Patient/1"}, "extra": 1}),
            serde_json::json!({"resourceType": "Organization", "name": ["a repeated name"]}),
            serde_json::json!({"resourceType": "Subscription", "status": "active"}),
            serde_json::json!({"resourceType": "Patiently"}),
        ];
        for case in refused {
            assert!(check_json(&case).is_err(), "{case}");
        }
        let accepted = [
            serde_json::json!({"resourceType": "Patient", "id": "p1", "active": true, "_birthDate": {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}}),
            serde_json::json!({"resourceType": "Flag", "status": "active", "code": {"text": "x"}, "subject": {"reference": "Patient/1"}}),
            serde_json::json!({"resourceType": "Organization", "name": "Northmoor Council"}),
            serde_json::json!({"resourceType": "Subscription", "status": "requested", "reason": "r", "criteria": "Flag?", "channel": {"type": "rest-hook"}}),
            serde_json::json!({"resourceType": "Practitioner", "id": "x"}),
        ];
        for case in accepted {
            assert_eq!(check_json(&case), Ok(()), "{case}");
        }
    }

    #[test]
    fn an_unknown_element_is_refused_with_its_name() {
        let bad = serde_json::json!({"resourceType": "Patient", "colour": "blue"});
        assert!(
            matches!(check_json(&bad), Err(CodecError::Invalid(why)) if why.contains("colour"))
        );
    }
}
