//! FHIR R4 XML (§2.6.1) and base-definition checks, through the `cpis-fhir-codec` member crate
//! (the only code that calls fhirbolt; see its docs for why it is a crate of its own). This
//! module turns its errors into the issues an OperationOutcome carries.

use cpis_fhir_codec::CodecError;
use serde_json::Value;

use crate::error::Issue;

/// Parses an XML resource and returns its JSON form, which the rest of the server works on.
pub fn xml_to_json(bytes: &[u8]) -> Result<Value, Issue> {
    cpis_fhir_codec::xml_to_json(bytes).map_err(|e| match e {
        CodecError::Invalid(text) => xml_issue(&text),
        CodecError::Panicked => Issue::general(
            "structure",
            "the XML body could not be read as a FHIR R4 resource",
        ),
    })
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
    cpis_fhir_codec::check_json(value).map_err(base_issue)
}

/// [`check_json`] of a resource the caller no longer needs (it is not copied).
pub fn check_json_owned(value: Value) -> Result<(), Issue> {
    cpis_fhir_codec::check_json_owned(value).map_err(base_issue)
}

fn base_issue(e: CodecError) -> Issue {
    match e {
        CodecError::Invalid(text) => Issue::general(
            "structure",
            format!("the body is not a valid FHIR R4 resource: {text}"),
        ),
        CodecError::Panicked => Issue::general(
            "structure",
            "the body could not be read as a FHIR R4 resource",
        ),
    }
}

/// Renders a JSON resource (including Bundles with nested resources) as FHIR XML.
pub fn json_to_xml(value: &Value) -> Result<Vec<u8>, String> {
    cpis_fhir_codec::json_to_xml(value).map_err(|e| match e {
        CodecError::Invalid(text) => text,
        CodecError::Panicked => "fhirbolt panicked while rendering XML".to_owned(),
    })
}
