//! Content negotiation and body handling (FHIR R4 §3.1.0.1.6 "Content Types and encodings",
//! `_format`, `Accept`; 406 and 415 as OperationOutcomes).

use actix_web::http::header;
use actix_web::HttpRequest;
use serde_json::Value;

use crate::error::{ApiError, Issue};
use crate::fhir::guard::{self, Limits, Shape};
use crate::fhir::{codec, json};

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";
pub const FHIR_XML: &str = "application/fhir+xml; charset=utf-8";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => FHIR_JSON,
            Format::Xml => FHIR_XML,
        }
    }
}

fn mime_format(m: &str) -> Option<Format> {
    match m.trim().to_ascii_lowercase().as_str() {
        "json" | "application/fhir+json" | "application/json" | "application/json+fhir" => {
            Some(Format::Json)
        }
        "xml"
        | "application/fhir+xml"
        | "application/xml"
        | "text/xml"
        | "application/xml+fhir" => Some(Format::Xml),
        _ => None,
    }
}

/// The `_format` query parameter, if present (it overrides `Accept`).
fn format_param(req: &HttpRequest) -> Option<String> {
    req.query_string().split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "_format").then(|| {
            v.replace("%2B", "+")
                .replace("%2b", "+")
                .replace("%2F", "/")
                .replace("%2f", "/")
        })
    })
}

/// The format to answer in: `_format`, else `Accept`, else JSON.
pub fn negotiate(req: &HttpRequest) -> Result<Format, ApiError> {
    if let Some(f) = format_param(req) {
        let base = f.split(';').next().unwrap_or_default();
        return mime_format(base).ok_or_else(|| {
            ApiError::NotAcceptable(format!("_format={f} is not supported; use json or xml"))
        });
    }
    let Some(accept) = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
    else {
        return Ok(Format::Json);
    };
    let mut ranges: Vec<(f32, &str)> = accept
        .split(',')
        .map(|part| {
            let mut bits = part.split(';');
            let mime = bits.next().unwrap_or_default().trim();
            let q = bits
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            (q, mime)
        })
        .filter(|(q, _)| *q > 0.0)
        .collect();
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, mime) in &ranges {
        if let Some(f) = mime_format(mime) {
            return Ok(f);
        }
        if matches!(*mime, "*/*" | "application/*" | "") {
            return Ok(Format::Json);
        }
    }
    Err(ApiError::NotAcceptable(format!(
        "cannot answer in any of '{accept}'; this server speaks application/fhir+json and application/fhir+xml"
    )))
}

/// A body whose format is known and whose depth and size are within the limits: the only way
/// to reach the parsers.
#[derive(Debug, Clone, Copy)]
pub struct Scanned {
    format: Format,
    pub shape: Shape,
}

/// Checks a body before anything parses it: a supported `Content-Type` (415), not empty (400),
/// and nesting and size within `limits` (400, see `guard`).
pub fn scan(
    ct: &str,
    body: &[u8],
    expected_type: &str,
    limits: Limits,
) -> Result<Scanned, ApiError> {
    let format = mime_format(ct.split(';').next().unwrap_or_default()).ok_or_else(|| {
        ApiError::UnsupportedMediaType(if ct.is_empty() {
            "a Content-Type header is required: application/fhir+json or application/fhir+xml".to_owned()
        } else {
            format!("Content-Type '{ct}' is not supported; send application/fhir+json or application/fhir+xml")
        })
    })?;
    if body.is_empty() {
        return Err(ApiError::Invalid(vec![Issue::general(
            "required",
            format!("the request body is empty; send a {expected_type} resource"),
        )]));
    }
    // FHIR XML is UTF-8 (§2.6.1); fhirbolt's reader panics on a namespace that is not.
    if format == Format::Xml && std::str::from_utf8(body).is_err() {
        return Err(ApiError::Invalid(vec![Issue::general(
            "structure",
            "the XML body is not valid UTF-8",
        )]));
    }
    let shape = match format {
        Format::Json => guard::scan_json(body, limits),
        Format::Xml => guard::scan_xml(body, limits),
    }
    .map_err(|r| match r {
        guard::Refused::Invalid(i) => ApiError::Invalid(vec![i]),
        guard::Refused::TooLarge(text) => ApiError::PayloadTooLarge(text),
    })?;
    Ok(Scanned { format, shape })
}

/// Reads a scanned body as the JSON form of a FHIR resource of `expected_type`, refusing what
/// FHIR forbids (400) before any profile check runs.
pub fn parse_body(scanned: &Scanned, body: &[u8], expected_type: &str) -> Result<Value, ApiError> {
    let value = parse_as(scanned, body, expected_type)?;
    let empties = json::forbidden_empties(&value, expected_type);
    if !empties.is_empty() {
        return Err(ApiError::Invalid(empties));
    }
    Ok(value)
}

/// The request's `Content-Type`, or "" when there is none.
pub fn content_type(req: &HttpRequest) -> &str {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
}

/// [`parse_body`] without the check for empty values, for a Bundle whose entries are checked
/// one by one (so one bad entry of a batch does not refuse the others).
pub fn parse_as(scanned: &Scanned, body: &[u8], expected_type: &str) -> Result<Value, ApiError> {
    let value = match scanned.format {
        Format::Json => json::parse_strict(body).map_err(|i| ApiError::Invalid(vec![i]))?,
        // An element FHIR knows nothing of is a profile matter (422), as it is in JSON.
        Format::Xml => codec::xml_to_json(body).map_err(|i| match i.expression {
            Some(_) => ApiError::Unprocessable(vec![i]),
            None => ApiError::Invalid(vec![i]),
        })?,
    };
    let found = value.get("resourceType").and_then(Value::as_str);
    match found {
        Some(t) if t == expected_type => {}
        Some(t) => {
            return Err(ApiError::Invalid(vec![Issue::new(
                "invalid",
                "resourceType",
                format!("expected a {expected_type} resource, got resourceType '{t}'"),
            )]))
        }
        None => {
            return Err(ApiError::Invalid(vec![Issue::new(
                "required",
                "resourceType",
                format!(
                    "the body must be a JSON object with \"resourceType\": \"{expected_type}\""
                ),
            )]))
        }
    }
    Ok(value)
}

/// [`render`] of a document that can be written straight to JSON without first being built
/// as a value (XML still goes through one: the codec reads values).
pub fn render_doc<T: serde::Serialize>(doc: &T, format: Format) -> Result<Vec<u8>, ApiError> {
    match format {
        Format::Json => serde_json::to_vec(doc).map_err(|e| ApiError::Internal(e.to_string())),
        Format::Xml => {
            let value = serde_json::to_value(doc).map_err(|e| ApiError::Internal(e.to_string()))?;
            render(&value, format)
        }
    }
}

/// Serialises a resource for the wire.
pub fn render(value: &Value, format: Format) -> Result<Vec<u8>, ApiError> {
    match format {
        Format::Json => serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string())),
        Format::Xml => codec::json_to_xml(value).map_err(ApiError::Internal),
    }
}

/// Whether the request's `Prefer` headers (RFC 7240; FHIR R4 §3.1.0.1.8 `return`, §3.1.1.1
/// `handling`) carry `preference`, such as `return=minimal` or `handling=lenient`. Several
/// headers, comma-separated preferences and `;` parameters are all read; names compare without
/// regard to case.
pub fn prefers(req: &actix_web::HttpRequest, preference: &str) -> bool {
    req.headers()
        .get_all("Prefer")
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split([',', ';']))
        .any(|p| match (p.split_once('='), preference.split_once('=')) {
            (Some((k, v)), Some((want_k, want_v))) => {
                k.trim().eq_ignore_ascii_case(want_k) && v.trim().eq_ignore_ascii_case(want_v)
            }
            _ => p.trim().eq_ignore_ascii_case(preference),
        })
}
