//! Plumbing shared by the interaction handlers: bounded body reading, the submit pipeline
//! (syntax → profile → FHIR base check), version preconditions and response building
//! (FHIR R4 §3.1.0.1.3 versioning: `ETag`, `Last-Modified`, `Location`, `If-Match`;
//! §3.1.0.1.8 `Prefer: return=minimal`).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::Value;

use crate::error::ApiError;
use crate::fhir::guard::Limits;
use crate::fhir::{codec, format};
use crate::limits::Held;
use crate::state::AppState;
use crate::store::from_micros;

/// The most values a single resource's body may hold (a CP-IS Patient or Flag has about 40);
/// a Bundle may hold [`VALUES_PER_ENTRY`] per entry it is allowed.
pub const RESOURCE_MAX_VALUES: usize = 10_000;
pub const VALUES_PER_ENTRY: usize = 64;

/// A body received within the shared budget and scanned, not yet parsed. Its share of the
/// bodies budget is given back when it is dropped; its parsed form's share is held by the
/// request until it is answered.
pub struct Received {
    pub bytes: Vec<u8>,
    pub scanned: format::Scanned,
    _body: Held,
}

/// Bodies this large are scanned on the bulk lane rather than on the HTTP worker (`lane`).
const SCAN_ON_LANE_FROM: usize = 256 * 1024;

/// The bounds of a single resource's body.
pub fn resource_limits(state: &AppState) -> Limits {
    Limits {
        max_depth: state.settings.limits.body_max_depth,
        max_nodes: RESOURCE_MAX_VALUES,
    }
}

/// The bounds of a Bundle's body.
pub fn bundle_limits(state: &AppState) -> Limits {
    Limits {
        max_depth: state.settings.limits.body_max_depth,
        max_nodes: state
            .settings
            .max_bundle_entries
            .saturating_mul(VALUES_PER_ENTRY),
    }
}

/// Receives a body of at most `limit` bytes: 413 early from `Content-Length` or while reading,
/// 408 when it does not arrive within the body timeout, 503 when the shared budget has no room
/// (see `limits`); then the scan of `format::scan` (415, 400).
pub async fn receive(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    limit: usize,
    expected_type: &str,
    limits: Limits,
) -> Result<Received, ApiError> {
    let declared = check_length(req, limit)?;
    // Bodies are read as sent; a compressed one would only fail as unreadable FHIR.
    if let Some(enc) = req.headers().get(header::CONTENT_ENCODING) {
        let enc = enc.to_str().unwrap_or_default().trim();
        if !enc.eq_ignore_ascii_case("identity") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Encoding '{}' is not supported; send the body uncompressed",
                enc.chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(40)
                    .collect::<String>()
            )));
        }
    }
    let room = state
        .budget
        .for_body(if declared > 0 { declared } else { limit })
        .await?;
    let timeout = state.settings.limits.body_timeout;
    let bytes = actix_web::rt::time::timeout(timeout, read_body_sized(payload, limit, declared))
        .await
        .map_err(|_| {
            ApiError::Timeout(format!(
                "the request body did not arrive within {} s",
                timeout.as_secs()
            ))
        })??;
    let ct = format::content_type(req);
    let (bytes, scanned) = if bytes.len() < SCAN_ON_LANE_FROM {
        let scanned = format::scan(ct, &bytes, expected_type, limits)?;
        (bytes, scanned)
    } else {
        // A council's 10 MB Bundle takes an HTTP worker ~10 ms to scan; the look-ups sharing
        // that worker would wait for it. On the bulk lane they do not.
        let (ct, expected_type) = (ct.to_owned(), expected_type.to_owned());
        state
            .bulk
            .run(move || {
                let scanned = format::scan(&ct, &bytes, &expected_type, limits)?;
                Ok::<_, ApiError>((bytes, scanned))
            })
            .await??
    };
    let parsed = state.budget.for_parsed(bytes.len(), scanned.shape).await?;
    req.extensions_mut().insert(Parsed(parsed));
    Ok(Received {
        bytes,
        scanned,
        _body: room,
    })
}

/// The request's share of the parsed-bodies budget, held in its extensions until it is dropped.
struct Parsed(#[allow(dead_code)] Held);

/// Reads a body, refusing more than `limit` bytes with 413.
async fn read_body_sized(
    mut payload: impl futures_util::Stream<Item = Result<web::Bytes, actix_web::error::PayloadError>>
        + Unpin,
    limit: usize,
    expected: usize,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "the request body is larger than this server's limit of {limit} bytes"
        ))
    };
    let mut body = Vec::new();
    let mut first = true;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            actix_web::error::PayloadError::Overflow => too_large(),
            other => ApiError::Invalid(vec![crate::error::Issue::general(
                "structure",
                format!("the request body could not be read: {other}"),
            )]),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        if first {
            // A multi-megabyte Bundle arrives in many chunks: size the buffer once.
            first = false;
            body.reserve(expected.min(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Refuses early, from `Content-Length`, a body that is too large; returns the declared length
/// (0 when there is none).
pub fn check_length(req: &HttpRequest, limit: usize) -> Result<usize, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|h| h.to_str().ok())
        .and_then(|s| s.parse::<usize>().ok());
    match declared {
        Some(n) if n > limit => Err(ApiError::PayloadTooLarge(format!(
            "the request body ({n} bytes) is larger than this server's limit of {limit} bytes"
        ))),
        other => Ok(other.unwrap_or(0)),
    }
}

/// The submit pipeline for one resource: receive the body, check it is FHIR, check the CP-IS
/// profile (all violations together, 422), then the FHIR R4 base definitions.
pub async fn submitted(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    resource_type: &str,
) -> Result<Value, ApiError> {
    let value = received_resource(req, payload, state, resource_type).await?;
    check_resource(state, &value, resource_type)?;
    Ok(value)
}

/// A single resource's body, received and parsed (not yet checked against its profile).
pub async fn received_resource(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    resource_type: &str,
) -> Result<Value, ApiError> {
    let limits = resource_limits(state);
    let body = receive(
        req,
        payload,
        state,
        state.settings.body_limit,
        resource_type,
        limits,
    )
    .await?;
    format::parse_body(&body.scanned, &body.bytes, resource_type)
}

/// The checks every submitted resource passes, alone or in a Bundle: the CP-IS profile (all
/// violations together, 422), then the FHIR R4 base definitions (400).
pub fn check_resource(
    state: &AppState,
    value: &Value,
    resource_type: &str,
) -> Result<(), ApiError> {
    check_profile(state, value, resource_type)?;
    codec::check_json(value).map_err(|i| ApiError::Invalid(vec![i]))
}

/// The first half of [`check_resource`]: the CP-IS profile (422).
pub fn check_profile(state: &AppState, value: &Value, resource_type: &str) -> Result<(), ApiError> {
    let issues = state.profiles.validate(resource_type, value);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Unprocessable(issues))
    }
}

/// The second half of [`check_resource`], the FHIR R4 base definitions (400), for a resource
/// the caller has finished with: it is checked without being copied.
pub fn check_base(value: Value) -> Result<(), ApiError> {
    codec::check_json_owned(value).map_err(|i| ApiError::Invalid(vec![i]))
}

/// The version named by `If-Match` (`W/"3"` or `"3"`), if the header is present.
pub fn if_match(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
    let Some(h) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    parse_etag(h.to_str().unwrap_or_default()).map(Some)
}

/// The version in an ETag such as `W/"3"` (an `If-Match` header or a Bundle entry's `ifMatch`).
pub fn parse_etag(text: &str) -> Result<i64, ApiError> {
    let text = text.trim();
    let inner = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    inner.parse::<i64>().map_err(|_| {
        ApiError::VersionConflict(format!(
            "If-Match '{text}' is not a version ETag such as W/\"1\""
        ))
    })
}

/// Enforces `If-Match` against the current version.
pub fn check_version(expected: Option<i64>, current: i64) -> Result<(), ApiError> {
    Ok(crate::records::write::check_version(expected, current)?)
}

/// A resource in the negotiated format with its version headers.
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub version: Option<i64>,
    pub updated_at: Option<i64>,
    pub location: Option<String>,
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            version: None,
            updated_at: None,
            location: None,
        }
    }

    pub fn versioned(mut self, version: i64, updated_at: i64) -> Self {
        self.version = Some(version);
        self.updated_at = Some(updated_at);
        self
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn location(mut self, url: String) -> Self {
        self.location = Some(url);
        self
    }

    pub fn into_response(self, req: &HttpRequest) -> Result<HttpResponse, ApiError> {
        let format = format::negotiate(req)?;
        let mut res = HttpResponse::build(self.status);
        if let Some(v) = self.version {
            res.insert_header((header::ETAG, format!("W/\"{v}\"")));
        }
        if let Some(t) = self.updated_at {
            res.insert_header((
                header::LAST_MODIFIED,
                from_micros(t)
                    .format("%a, %d %b %Y %H:%M:%S GMT")
                    .to_string(),
            ));
        }
        if let Some(l) = &self.location {
            res.insert_header((header::LOCATION, l.clone()));
            if self.status == StatusCode::CREATED {
                res.insert_header((header::CONTENT_LOCATION, l.clone()));
            }
        }
        if prefers_minimal(req)
            && (req.method() == actix_web::http::Method::POST
                || req.method() == actix_web::http::Method::PUT)
        {
            return Ok(res.finish());
        }
        let bytes = format::render(&self.body, format)?;
        Ok(res
            .insert_header((header::CONTENT_TYPE, format.content_type()))
            .body(bytes))
    }
}

fn prefers_minimal(req: &HttpRequest) -> bool {
    crate::fhir::format::prefers(req, "return=minimal")
}

/// The version-specific URL of a resource (used in `Location`).
pub fn history_url(state: &AppState, resource: &str, id: &str, version: i64) -> String {
    format!(
        "{}/{resource}/{id}/_history/{version}",
        state.settings.base_url
    )
}
