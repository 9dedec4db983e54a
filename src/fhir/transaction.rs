//! Transaction and batch Bundles on the wire (FHIR R4 §3.1.0.11 "Batch/Transaction", Bundle
//! §2.36): reading each entry's request out of the submitted Bundle, and writing the
//! `transaction-response` / `batch-response` with a status, location, ETag and outcome per
//! entry. What the entries mean is `api::transaction`'s business.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Map, Value};

use crate::error::{ApiError, Issue, SubmissionResult};
use crate::fhir::instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// All entries or none.
    Transaction,
    /// Each entry on its own.
    Batch,
}

impl Kind {
    pub fn response_type(self) -> &'static str {
        match self {
            Kind::Transaction => "transaction-response",
            Kind::Batch => "batch-response",
        }
    }
}

/// One entry's request, as sent.
#[derive(Debug, Clone)]
pub struct EntryRequest {
    pub full_url: Option<String>,
    /// `POST`, `PUT` or `DELETE`.
    pub method: String,
    /// Relative to the base: `Flag`, `Flag/{id}`, `Flag?identifier=…`.
    pub url: String,
    pub if_none_exist: Option<String>,
    pub if_match: Option<String>,
    pub resource: Option<Value>,
}

const BUNDLE_KEYS: &[&str] = &[
    "resourceType",
    "id",
    "meta",
    "identifier",
    "type",
    "timestamp",
    "entry",
];
const ENTRY_KEYS: &[&str] = &["fullUrl", "resource", "request"];
const REQUEST_KEYS: &[&str] = &["method", "url", "ifNoneExist", "ifMatch"];

fn unknown_keys(map: &Map<String, Value>, allowed: &[&str], path: &str, issues: &mut Vec<Issue>) {
    for k in map.keys().filter(|k| !allowed.contains(&k.as_str())) {
        issues.push(Issue::new(
            "not-supported",
            format!("{path}.{k}"),
            format!("{path}.{k} is not supported in a submitted Bundle"),
        ));
    }
}

/// Reads the Bundle's type and its entries. Problems with one entry's envelope are that entry's
/// (so a batch can still process the others); problems with the Bundle itself refuse it whole.
/// `base_url` is stripped from absolute request URLs.
#[allow(clippy::type_complexity)]
pub fn entries(
    bundle: Value,
    base_url: &str,
    max_entries: usize,
) -> Result<(Kind, Vec<Result<EntryRequest, ApiError>>), ApiError> {
    let Value::Object(mut map) = bundle else {
        return Err(ApiError::Invalid(vec![Issue::general(
            "structure",
            "the body must be a Bundle",
        )]));
    };
    let mut issues = Vec::new();
    unknown_keys(&map, BUNDLE_KEYS, "Bundle", &mut issues);
    let kind = match map.get("type").and_then(Value::as_str) {
        Some("transaction") => Some(Kind::Transaction),
        Some("batch") => Some(Kind::Batch),
        other => {
            issues.push(Issue::new(
                "value",
                "Bundle.type",
                format!(
                    "Bundle.type must be transaction or batch to be submitted here, not {}",
                    other.map_or("missing".to_owned(), |t| format!("'{t}'"))
                ),
            ));
            None
        }
    };
    let entries = match map.remove("entry") {
        None => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => {
            issues.push(Issue::new(
                "structure",
                "Bundle.entry",
                "Bundle.entry must be an array",
            ));
            Vec::new()
        }
    };
    let Some(kind) = kind.filter(|_| issues.is_empty()) else {
        return Err(ApiError::Invalid(issues));
    };
    if entries.len() > max_entries {
        return Err(ApiError::PayloadTooLarge(format!(
            "the Bundle has {} entries; this server takes at most {max_entries} per Bundle: split the submission",
            entries.len()
        )));
    }
    let parsed = entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| entry(e, i, base_url).map_err(|issues| ApiError::Invalid(issues).in_entry(i)))
        .collect();
    Ok((kind, parsed))
}

fn entry(e: Value, index: usize, base_url: &str) -> Result<EntryRequest, Vec<Issue>> {
    let path = format!("Bundle.entry[{index}]");
    let Value::Object(mut map) = e else {
        return Err(vec![Issue::new(
            "structure",
            path.clone(),
            format!("{path} must be an object"),
        )]);
    };
    let mut issues = Vec::new();
    unknown_keys(&map, ENTRY_KEYS, &path, &mut issues);
    let full_url = map
        .get("fullUrl")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let resource = map.remove("resource");
    if resource.as_ref().is_some_and(|r| !r.is_object()) {
        issues.push(Issue::new(
            "structure",
            format!("{path}.resource"),
            format!("{path}.resource must be a resource"),
        ));
    }
    let request = match map.get("request") {
        Some(Value::Object(r)) => {
            unknown_keys(r, REQUEST_KEYS, &format!("{path}.request"), &mut issues);
            Some(r)
        }
        _ => {
            issues.push(Issue::new(
                "required",
                format!("{path}.request"),
                format!("{path}.request (method and url) is required in a transaction or batch"),
            ));
            None
        }
    };
    let field = |k: &str| {
        request
            .and_then(|r| r.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let method = field("method").unwrap_or_default();
    if !matches!(method.as_str(), "POST" | "PUT" | "DELETE") && request.is_some() {
        issues.push(Issue::new(
            "not-supported",
            format!("{path}.request.method"),
            format!(
                "{path}.request.method '{method}' is not supported here: submit with POST, PUT or DELETE"
            ),
        ));
    }
    let url = field("url").unwrap_or_default();
    let url = url
        .strip_prefix(base_url)
        .map(|u| u.trim_start_matches('/').to_owned())
        .unwrap_or(url);
    if url.is_empty() && request.is_some() {
        issues.push(Issue::new(
            "required",
            format!("{path}.request.url"),
            format!("{path}.request.url is required"),
        ));
    }
    if method != "DELETE" && resource.is_none() && request.is_some() {
        issues.push(Issue::new(
            "required",
            format!("{path}.resource"),
            format!("{path}.resource is required for {method}"),
        ));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(EntryRequest {
        full_url,
        method,
        url,
        if_none_exist: field("ifNoneExist"),
        if_match: field("ifMatch"),
        resource,
    })
}

/// One entry's result, as the response Bundle shows it.
pub struct EntryResponse {
    /// `201 Created`, `200 OK`, …
    pub status: String,
    /// The new or current version's URL.
    pub location: Option<String>,
    pub version: Option<i64>,
    pub updated_at: Option<i64>,
    /// The resource itself, when the client asked for it (`Prefer: return=representation`).
    pub resource: Option<Value>,
    pub outcome: EntryOutcome,
}

/// The OperationOutcome of an entry.
pub enum EntryOutcome {
    /// Accepted: the CP-IS success code (CPR06), with the server's note where it has one.
    Accepted(Option<String>),
    /// Refused: the OperationOutcome explaining why, with its CP-IS result code.
    Refused(Value),
}

/// The outcome shown for an entry that was accepted, with the CP-IS success code.
pub fn success_outcome(text: Option<&str>) -> Value {
    let result = SubmissionResult::Success;
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": "information",
            "code": "informational",
            "details": { "coding": [result.coding()] },
            "diagnostics": text.unwrap_or("accepted"),
        }],
    })
}

/// [`success_outcome`] without a note: nearly every accepted entry's, made once.
static ACCEPTED: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| success_outcome(None));

/// A `transaction-response` or `batch-response`, ready to be written: straight to JSON bytes
/// (`serde_json::to_vec`), or as a value for the XML codec (`serde_json::to_value`) — the same
/// document either way. Written straight, a 10,000-entry answer is not first built as 10,000
/// JSON objects of JSON objects, which cost a council's bulk upload a tenth of its CPU.
pub struct ResponseBundle {
    kind: Kind,
    id: String,
    timestamp: String,
    entries: Vec<EntryResponse>,
}

pub fn response(kind: Kind, entries: Vec<EntryResponse>, now: i64) -> ResponseBundle {
    ResponseBundle {
        kind,
        id: uuid::Uuid::new_v4().to_string(),
        timestamp: instant(now),
        entries,
    }
}

impl Serialize for ResponseBundle {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("resourceType", "Bundle")?;
        m.serialize_entry("id", &self.id)?;
        m.serialize_entry("type", self.kind.response_type())?;
        m.serialize_entry("timestamp", &self.timestamp)?;
        if !self.entries.is_empty() {
            m.serialize_entry("entry", &self.entries)?;
        }
        m.end()
    }
}

impl Serialize for EntryResponse {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(r) = &self.resource {
            if let Some(l) = &self.location {
                m.serialize_entry("fullUrl", l.split("/_history/").next().unwrap_or(l))?;
            }
            m.serialize_entry("resource", r)?;
        }
        m.serialize_entry("response", &EntryResult(self))?;
        m.end()
    }
}

/// `Bundle.entry.response`.
struct EntryResult<'a>(&'a EntryResponse);

impl Serialize for EntryResult<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("status", &e.status)?;
        if let Some(l) = &e.location {
            m.serialize_entry("location", l)?;
        }
        if let Some(v) = e.version {
            m.serialize_entry("etag", &format_args!("W/\"{v}\""))?;
        }
        if let Some(t) = e.updated_at {
            m.serialize_entry("lastModified", &instant(t))?;
        }
        m.serialize_entry("outcome", &e.outcome)?;
        m.end()
    }
}

impl Serialize for EntryOutcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            EntryOutcome::Refused(outcome) => outcome.serialize(s),
            EntryOutcome::Accepted(None) => ACCEPTED.serialize(s),
            EntryOutcome::Accepted(Some(note)) => success_outcome(Some(note)).serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accepted_entry_s_outcome_is_written_as_the_success_outcome_reads() {
        for note in [None, Some("already current: nothing changed".to_owned())] {
            let written = serde_json::to_value(EntryOutcome::Accepted(note.clone())).unwrap();
            assert_eq!(written, success_outcome(note.as_deref()));
        }
    }

    #[test]
    fn the_response_bundle_is_the_same_document_written_straight_to_json_or_as_a_value() {
        let entries = vec![
            EntryResponse {
                status: "201 Created".into(),
                location: Some("https://cpis.example/fhir/Flag/f1/_history/3".into()),
                version: Some(3),
                updated_at: Some(1_765_000_000_123_456),
                resource: Some(json!({"resourceType": "Flag", "id": "f1"})),
                outcome: EntryOutcome::Accepted(None),
            },
            EntryResponse {
                status: "422 Unprocessable Entity".into(),
                location: None,
                version: None,
                updated_at: None,
                resource: None,
                outcome: EntryOutcome::Refused(json!({"resourceType": "OperationOutcome"})),
            },
        ];
        let doc = response(Kind::Batch, entries, 1_765_000_000_000_000);
        let bytes = serde_json::to_vec(&doc).unwrap();
        let value = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            serde_json::to_vec(&value).unwrap(),
            bytes,
            "same keys in the same order"
        );
        assert_eq!(value["type"], "batch-response");
        assert_eq!(value["timestamp"], "2025-12-06T05:46:40.000Z");
        let first = &value["entry"][0];
        assert_eq!(first["fullUrl"], "https://cpis.example/fhir/Flag/f1");
        assert_eq!(first["resource"]["id"], "f1");
        assert_eq!(first["response"]["etag"], "W/\"3\"");
        assert_eq!(
            first["response"]["lastModified"],
            "2025-12-06T05:46:40.123Z"
        );
        assert_eq!(first["response"]["outcome"], success_outcome(None));
        let second = &value["entry"][1];
        assert!(second.get("fullUrl").is_none() && second.get("resource").is_none());
        assert_eq!(
            second["response"]["outcome"]["resourceType"],
            "OperationOutcome"
        );
        let empty = serde_json::to_value(response(Kind::Transaction, Vec::new(), 0)).unwrap();
        assert!(empty.get("entry").is_none());
        assert_eq!(empty["type"], "transaction-response");
    }

    #[test]
    fn a_bundle_that_is_neither_transaction_nor_batch_is_refused() {
        let e = entries(
            json!({"resourceType": "Bundle", "type": "collection"}),
            "",
            10,
        );
        assert!(matches!(e, Err(ApiError::Invalid(_))));
    }

    #[test]
    fn too_many_entries_are_refused_before_any_is_read() {
        let b = json!({"resourceType": "Bundle", "type": "batch", "entry": [{}, {}, {}]});
        assert!(matches!(
            entries(b, "", 2),
            Err(ApiError::PayloadTooLarge(_))
        ));
    }

    #[test]
    fn absolute_request_urls_are_made_relative() {
        let b = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "DELETE", "url": "http://h/fhir/Flag/1"}}
        ]});
        let (_, e) = entries(b, "http://h/fhir", 5).unwrap_or_else(|_| (Kind::Batch, vec![]));
        assert_eq!(e.len(), 1);
        assert!(matches!(&e[0], Ok(r) if r.url == "Flag/1"));
    }
}
