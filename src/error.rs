//! One error type for the whole API and the one table that maps it to an HTTP status and a
//! FHIR OperationOutcome (FHIR R4 §3.1.0.4 "OperationOutcome", §3.1.0.4.1 issue-type codes;
//! error codes from DOMAIN.md "Errors": `INVALID_SEARCH_DATA`, `PRECONDITION_FAILED`,
//! `ACCESS_DENIED`).
//!
//! The body is not written here: the response carries an [`Outcome`] extension which the
//! request middleware renders in the negotiated format (JSON or XML) and, for 5xx, with the
//! request id. Internal detail of a 5xx is logged, never sent.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

/// The NHS Spine error code system used in `OperationOutcome.issue.details`.
pub const SPINE_ERROR_SYSTEM: &str = "https://fhir.nhs.uk/R4/CodeSystem/Spine-ErrorOrWarningCode";
/// The same codes as the national CP-IS API's error examples name their system; an outcome's
/// first issue carries both codings, so an EPR built for that API reads it unchanged.
pub const ENGLAND_SPINE_ERROR_SYSTEM: &str =
    "https://fhir.nhs.uk/CodeSystem/England-SpineErrorOrWarningCode";

/// The per-record submission results of a Bundle entry, after the national service's
/// acknowledgement codes (DOMAIN.md "Interactions today"; `fhir-profiles/CodeSystem-CPIS-SubmissionResult.json`).
pub const SUBMISSION_RESULT_SYSTEM: &str =
    "https://cpis-fhir.example.org/fhir/CodeSystem/CPIS-SubmissionResult";

/// A per-record submission result code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmissionResult {
    /// CPR03: the NHS number is not verified (verification status other than `01`).
    NotVerified,
    /// CPR06: the record was accepted.
    Success,
    /// CPR07: the record was refused for any other reason, given in the diagnostics.
    Failure,
}

impl SubmissionResult {
    pub fn code(self) -> &'static str {
        match self {
            SubmissionResult::NotVerified => "CPR03",
            SubmissionResult::Success => "CPR06",
            SubmissionResult::Failure => "CPR07",
        }
    }

    pub fn display(self) -> &'static str {
        match self {
            SubmissionResult::NotVerified => "NHS number not verified",
            SubmissionResult::Success => "Success",
            SubmissionResult::Failure => "Failure",
        }
    }

    /// The result a refused entry's issue stands for.
    fn of_issue(issue: &Issue) -> Self {
        let about_verification = issue
            .expression
            .as_deref()
            .is_some_and(|e| e.contains("identifier") && e.contains("extension"))
            || issue.diagnostics.contains("NHSNumberVerificationStatus");
        if about_verification {
            SubmissionResult::NotVerified
        } else {
            SubmissionResult::Failure
        }
    }

    /// The `details.coding` entry for this result.
    pub fn coding(self) -> Value {
        json!({ "system": SUBMISSION_RESULT_SYSTEM, "code": self.code(), "display": self.display() })
    }
}

/// One problem found in a request, pointing at the element (`expression`) where it applies.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    /// FHIR issue-type code, e.g. `invalid`, `required`, `structure`, `value`, `business-rule`.
    pub code: &'static str,
    pub diagnostics: String,
    pub expression: Option<String>,
}

impl Issue {
    pub fn new(code: &'static str, expression: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            code,
            diagnostics: text.into(),
            expression: Some(expression.into()),
        }
    }

    pub fn general(code: &'static str, text: impl Into<String>) -> Self {
        Self {
            code,
            diagnostics: text.into(),
            expression: None,
        }
    }

    /// The same issue about the resource in entry `index` of a Bundle: `Flag.period.end`
    /// becomes `Bundle.entry[3].resource.period.end`; an issue already placed in the Bundle
    /// (about the entry's request, say) keeps its place.
    pub fn in_entry(mut self, index: usize) -> Self {
        let entry = format!("Bundle.entry[{index}]");
        let expression = match self.expression.take() {
            Some(e) if e.starts_with("Bundle.") => e,
            Some(e) => match e.split_once('.') {
                Some((_, rest)) => format!("{entry}.resource.{rest}"),
                None => format!("{entry}.resource"),
            },
            None => entry.clone(),
        };
        if !self.diagnostics.starts_with("Bundle.entry[") {
            self.diagnostics = format!("{entry}: {}", self.diagnostics);
        }
        self.expression = Some(expression);
        self
    }
}

/// The most issues one OperationOutcome lists; past it, one more issue says how many were left
/// out. A body of a million empty arrays must not be answered with a million issues.
pub const MAX_ISSUES: usize = 100;

/// A list of issues that keeps at most [`MAX_ISSUES`] and counts the rest, so collecting the
/// problems of a hostile body costs bounded memory however many it has.
#[derive(Debug, Default)]
pub struct Issues {
    list: Vec<Issue>,
    more: usize,
}

impl Issues {
    pub fn push(&mut self, issue: Issue) {
        if self.list.len() < MAX_ISSUES {
            self.list.push(issue);
        } else {
            self.more += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether the cap has been reached (a walker may stop looking).
    pub fn is_full(&self) -> bool {
        self.list.len() >= MAX_ISSUES
    }

    /// The issues kept, and one saying how many more were found.
    pub fn finish(mut self) -> Vec<Issue> {
        if self.more > 0 {
            self.list.push(more_issues(self.more));
        }
        self.list
    }
}

fn more_issues(n: usize) -> Issue {
    Issue::general(
        "too-costly",
        format!(
            "{n} more problem(s) were found and are not listed; fix those above and submit again"
        ),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is not well-formed FHIR (syntax, structure, base types).
    #[error("invalid request")]
    Invalid(Vec<Issue>),
    /// Well-formed, but breaks the CP-IS profiles or business rules; nothing was stored.
    #[error("unprocessable resource")]
    Unprocessable(Vec<Issue>),
    /// A search or read named an invalid NHS number or search value.
    #[error("invalid search data: {0}")]
    InvalidSearch(String),
    /// A required header is missing or invalid.
    #[error("precondition failed: {0}")]
    PreconditionHeader(String),
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
    #[error("not acceptable: {0}")]
    NotAcceptable(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// `If-Match` did not match the current version.
    #[error("version conflict: {0}")]
    VersionConflict(String),
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// The service cannot safely answer now (for example the audit trail cannot be written).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The work lost a conflict with a concurrent transaction (a deadlock or serialisation
    /// failure on PostgreSQL) and was rolled back: it may be run again as it was. Answered
    /// like [`ApiError::Unavailable`] when it still loses after the writer's retries.
    #[error("contended: {0}")]
    Contended(String),
    /// Too much work is in flight to take this request now; it may be retried (`Retry-After`).
    #[error("busy: {0}")]
    Busy(String),
    /// This caller or its organisation has made more look-ups than allowed in the window (429,
    /// `Retry-After` the seconds until it ends).
    #[error("too many requests: {0}")]
    Throttled(String, u64),
    /// The request line is longer than this server reads (414).
    #[error("URI too long: {0}")]
    UriTooLong(String),
    /// The body did not arrive in time (408).
    #[error("request timeout: {0}")]
    Timeout(String),
    /// A fault of ours. The text is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
    /// Entries of a Bundle that were refused, by entry index (FHIR R4 §3.1.0.11). The status is
    /// the first entry's; each issue names its entry and carries a submission result code.
    #[error("bundle entries refused: {}", .0.iter().map(|(i, e)| format!("entry {i}: {e}")).collect::<Vec<_>>().join("; "))]
    InBundle(Vec<(usize, ApiError)>),
}

/// What a response error means on the wire: status, issue code, Spine details code.
struct Row {
    status: StatusCode,
    code: &'static str,
    details: Option<(&'static str, &'static str)>,
}

impl ApiError {
    /// The table: every variant's status and OperationOutcome codes, in one place.
    fn row(&self) -> Row {
        use ApiError::*;
        let (status, code, details) = match self {
            InBundle(entries) => match entries.first() {
                Some((_, first)) => return first.row(),
                None => (StatusCode::BAD_REQUEST, "invalid", None),
            },
            Invalid(_) => (
                StatusCode::BAD_REQUEST,
                "invalid",
                Some(("INVALID_RESOURCE", "Invalid resource")),
            ),
            Unprocessable(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "processing",
                Some(("INVALID_RESOURCE", "Invalid resource")),
            ),
            InvalidSearch(_) => (
                StatusCode::BAD_REQUEST,
                "invalid",
                Some(("INVALID_SEARCH_DATA", "Invalid search data")),
            ),
            PreconditionHeader(_) => (
                StatusCode::BAD_REQUEST,
                "invalid",
                Some(("PRECONDITION_FAILED", "Precondition failed")),
            ),
            Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "login",
                Some(("ACCESS_DENIED", "Access denied")),
            ),
            Forbidden(_) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                Some(("ACCESS_DENIED", "Access denied")),
            ),
            NotFound(_) => (
                StatusCode::NOT_FOUND,
                "not-found",
                Some(("RESOURCE_NOT_FOUND", "Resource not found")),
            ),
            MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "not-supported", None),
            NotAcceptable(_) => (StatusCode::NOT_ACCEPTABLE, "not-supported", None),
            Conflict(_) => (StatusCode::CONFLICT, "duplicate", None),
            VersionConflict(_) => (StatusCode::PRECONDITION_FAILED, "conflict", None),
            PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too-costly", None),
            UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not-supported", None),
            Busy(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "throttled",
                Some(("SERVICE_UNAVAILABLE", "Service unavailable")),
            ),
            Throttled(..) => (
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                Some(("TOO_MANY_REQUESTS", "Too many requests")),
            ),
            UriTooLong(_) => (StatusCode::URI_TOO_LONG, "too-long", None),
            Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout", None),
            Unavailable(_) | Contended(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                Some(("SERVICE_UNAVAILABLE", "Service unavailable")),
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                Some(("INTERNAL_SERVER_ERROR", "Internal server error")),
            ),
        };
        Row {
            status,
            code,
            details,
        }
    }

    fn issues(&self) -> Vec<Issue> {
        use ApiError::*;
        let code = self.row().code;
        match self {
            Invalid(v) | Unprocessable(v) => v.clone(),
            Internal(_) => vec![Issue::general(code, "An internal error occurred; quote the request id to the service desk.")],
            Unavailable(_) | Contended(_) => vec![Issue::general(code, "The service cannot process this request safely just now; nothing was disclosed or stored. Retry shortly, quoting the request id if it persists.")],
            InvalidSearch(text) | PreconditionHeader(text)
            | Unauthenticated(text) | Forbidden(text) | NotFound(text) | MethodNotAllowed(text)
            | NotAcceptable(text) | Conflict(text) | VersionConflict(text) | PayloadTooLarge(text)
            | UnsupportedMediaType(text) | Busy(text) | UriTooLong(text) | Timeout(text)
            | Throttled(text, _) => {
                vec![Issue::general(code, text.clone())]
            }
            InBundle(entries) => entries
                .iter()
                .flat_map(|(index, e)| e.issues().into_iter().map(move |i| i.in_entry(*index)))
                .collect(),
        }
    }

    /// The OperationOutcome this error is shown as.
    pub fn outcome(&self) -> Outcome {
        let row = self.row();
        let mut outcome = Outcome::from_issues(&self.issues(), row.details);
        if let (ApiError::InBundle(_), Some(issues)) = (self, outcome.0["issue"].as_array_mut()) {
            for issue in issues {
                let result = SubmissionResult::of_issue(&Issue {
                    code: "",
                    diagnostics: issue["diagnostics"].as_str().unwrap_or_default().to_owned(),
                    expression: issue["expression"][0].as_str().map(str::to_owned),
                });
                // Second, where councils' systems have always found it.
                match issue["details"]["coding"].as_array_mut() {
                    Some(codings) => codings.insert(1.min(codings.len()), result.coding()),
                    None => issue["details"] = json!({ "coding": [result.coding()] }),
                }
            }
        }
        outcome
    }

    /// This error as the refusal of entry `index` of a Bundle.
    pub fn in_entry(self, index: usize) -> ApiError {
        match self {
            ApiError::InBundle(mut v) => {
                for (i, _) in &mut v {
                    *i = index;
                }
                ApiError::InBundle(v)
            }
            other => ApiError::InBundle(vec![(index, other)]),
        }
    }
}

/// A rendered OperationOutcome waiting for the middleware to choose its wire format.
#[derive(Debug, Clone)]
pub struct Outcome(pub Value);

impl Outcome {
    /// At most [`MAX_ISSUES`] of `issues`, and one more saying how many were left out.
    pub fn from_issues(issues: &[Issue], details: Option<(&str, &str)>) -> Self {
        let left_out = issues.len().saturating_sub(MAX_ISSUES + 1);
        let summary = (left_out > 0).then(|| more_issues(left_out + 1));
        let shown = if left_out > 0 {
            &issues[..MAX_ISSUES]
        } else {
            issues
        };
        let issues: Vec<Value> = shown
            .iter()
            .chain(summary.iter())
            .enumerate()
            .map(|(n, i)| {
                let mut v = json!({ "severity": "error", "code": i.code });
                if let Some((code, display)) = details {
                    let mut coding =
                        vec![json!({ "system": SPINE_ERROR_SYSTEM, "code": code, "display": display })];
                    // Once per outcome is enough for a client looking for the national system;
                    // an outcome of a hundred issues stays small.
                    if n == 0 {
                        coding.push(json!({ "system": ENGLAND_SPINE_ERROR_SYSTEM, "code": code, "display": display }));
                    }
                    v["details"] = json!({ "coding": coding });
                }
                v["diagnostics"] = json!(i.diagnostics);
                if let Some(e) = &i.expression {
                    v["expression"] = json!([e]);
                }
                v
            })
            .collect();
        Outcome(json!({ "resourceType": "OperationOutcome", "issue": issues }))
    }

    /// An outcome for a status produced outside our handlers (unknown route, wrong method).
    pub fn for_status(status: StatusCode) -> Self {
        let (code, text) = match status.as_u16() {
            404 => (
                "not-found",
                "No such endpoint; GET /metadata lists what this server supports.",
            ),
            405 => (
                "not-supported",
                "That method is not supported on this endpoint; see GET /metadata.",
            ),
            413 => ("too-costly", "The request body is too large."),
            400 => ("invalid", "The request could not be understood."),
            s if s >= 500 => (
                "exception",
                "An internal error occurred; quote the request id to the service desk.",
            ),
            _ => ("processing", "The request could not be processed."),
        };
        Self::from_issues(&[Issue::general(code, text)], None)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.row().status
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if matches!(self, ApiError::Busy(_)) {
            log::warn!("{self}");
        } else if status.is_server_error() {
            // Detail goes to the log only; it may name tables or paths.
            log::error!("{self}");
        } else {
            log::debug!("{self}");
        }
        let mut res = HttpResponse::build(status);
        if matches!(self, ApiError::Unauthenticated(_)) {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"cpis-fhir\""));
        }
        if matches!(
            self,
            ApiError::Busy(_) | ApiError::Unavailable(_) | ApiError::Contended(_)
        ) {
            res.insert_header((header::RETRY_AFTER, "5"));
        }
        if let ApiError::Throttled(_, secs) = self {
            res.insert_header((header::RETRY_AFTER, secs.max(&1).to_string()));
        }
        let mut res = res.finish();
        res.extensions_mut().insert(self.outcome());
        res
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ApiError::Internal(format!("blocking task failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_never_show_their_detail() {
        let o = ApiError::Internal("secret table name".into()).outcome();
        assert!(!o.0.to_string().contains("secret"));
    }

    #[test]
    fn bundle_entry_errors_name_the_entry_and_the_element() {
        let e = ApiError::Unprocessable(vec![Issue::new("value", "Flag.period.end", "bad end")])
            .in_entry(3);
        let o = e.outcome();
        assert_eq!(e.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            o.0["issue"][0]["expression"][0],
            "Bundle.entry[3].resource.period.end"
        );
        assert_eq!(o.0["issue"][0]["details"]["coding"][1]["code"], "CPR07");
        let unverified = ApiError::Unprocessable(vec![Issue::new(
            "value",
            "Patient.identifier[0].extension[0].valueCodeableConcept.coding[0].code",
            "must be 01",
        )])
        .in_entry(0)
        .outcome();
        assert_eq!(
            unverified.0["issue"][0]["details"]["coding"][1]["code"],
            "CPR03"
        );
    }

    #[test]
    fn invalid_search_data_carries_the_spine_code() {
        let o = ApiError::InvalidSearch("bad".into()).outcome();
        assert_eq!(
            o.0["issue"][0]["details"]["coding"][0]["code"],
            "INVALID_SEARCH_DATA"
        );
        assert_eq!(o.0["issue"][0]["code"], "invalid");
    }
}
