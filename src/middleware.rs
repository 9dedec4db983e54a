//! Around every request: the request id (`X-Request-ID`, the caller's or a new one, also
//! accepted as `TraceID`) and the rendering of every error as a FHIR OperationOutcome in the
//! negotiated format — including errors raised outside our handlers (unknown route, wrong
//! method). 5xx bodies carry a fixed text plus the request id (DESIGN.md "Habits").
//!
//! It also refuses, before any handler runs, what no handler should see: a path and query
//! longer than `limits.max_url_bytes` (414), more than `limits.max_query_params` parameters
//! (400), control characters in the path, and a `TraceID` that is not a short printable token
//! (400 `PRECONDITION_FAILED`, DOMAIN.md "Errors"); and it marks every response
//! `X-Content-Type-Options: nosniff` and, unless it is a conformance resource anyone may cache,
//! `Cache-Control: no-store` (responses carry children's plans, access histories and NHS
//! numbers, which no browser, proxy or EPR cache may keep).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use serde_json::json;

use crate::audit::refusals::{self, Refusal};
use crate::auth::AuthRefusal;
use crate::error::{ApiError, Outcome};
use crate::fhir::format::{self, Format};
use crate::state::AppState;

pub use crate::audit::RequestId;

/// Marks a response that is not part of the FHIR API (health checks, metrics): its error
/// statuses keep their own plain bodies instead of becoming OperationOutcomes.
pub struct NotFhir;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn acceptable_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?.trim();
    let ok = !s.is_empty()
        && s.len() <= 200
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| s.to_owned())
}

pub async fn envelope(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .or_else(|| req.headers().get("TraceID"))
        .and_then(acceptable_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let state = req.app_data::<actix_web::web::Data<AppState>>().cloned();
    let client = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let mut res = match refused(&req) {
        Some(e) => req.error_response(e),
        None => next.call(req).await?.map_into_boxed_body(),
    };
    let refusal = res.request().extensions_mut().remove::<AuthRefusal>();
    if let (Some(r), Some(state)) = (refusal, &state) {
        audit_refusal(state, r, res.request(), client, &id).await;
    }
    let headers = res.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if state.as_ref().is_some_and(|s| s.settings.tls.is_some()) {
        // RFC 6797: browsers keep to HTTPS for this host for a year.
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    if !cacheable(res.request()) {
        let headers = res.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    // The matched pattern, never the path itself: paths carry NHS numbers, which must not reach
    // logs at info level (nor metrics' labels).
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "(unmatched)".into());
    let took = started.elapsed();
    crate::metrics::http(&route, method.as_str(), res.status().as_u16(), took);
    // Load balancers' probes and metrics scrapes every few seconds would drown the log.
    let level = if route.starts_with("/health/") || route == "/metrics" {
        log::Level::Debug
    } else {
        log::Level::Info
    };
    log::log!(
        level,
        "{method} {route} {} {:.1}ms id={id}",
        res.status().as_u16(),
        took.as_secs_f64() * 1000.0
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(X_REQUEST_ID, v);
    }
    let status = res.status();
    if res.response().extensions().contains::<NotFhir>() {
        return Ok(res);
    }
    let outcome = res.response_mut().extensions_mut().remove::<Outcome>();
    let outcome = match outcome {
        Some(o) => Some(o),
        None if status.is_client_error() || status.is_server_error() => {
            let is_fhir = res
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|h| h.to_str().ok())
                .is_some_and(|c| c.starts_with("application/fhir"));
            (!is_fhir).then(|| Outcome::for_status(status))
        }
        None => None,
    };
    let Some(Outcome(mut body)) = outcome else {
        return Ok(res);
    };
    if status.is_server_error() {
        if let Some(issues) = body["issue"].as_array_mut() {
            for i in issues {
                i["diagnostics"] = json!(format!(
                    "{} (request id {id})",
                    i["diagnostics"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    // Negotiated only here, for the error bodies this middleware renders; a handler's own
    // response has already been negotiated by the handler.
    let fmt = format::negotiate(res.request()).unwrap_or(Format::Json);
    let (fmt, bytes) = match format::render(&body, fmt) {
        Ok(b) => (fmt, b),
        Err(_) => (Format::Json, body.to_string().into_bytes()),
    };
    Ok(res.map_body(|head, _| {
        head.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(fmt.content_type()),
        );
        head.headers.remove(header::CONTENT_LENGTH);
        BoxBody::new(bytes)
    }))
}

/// Audits a refused authentication (folded, see `audit::refusals`) before the 401 is sent.
async fn audit_refusal(
    state: &AppState,
    r: AuthRefusal,
    req: &actix_web::HttpRequest,
    client: String,
    id: &str,
) {
    crate::metrics::refusal(r.reason.code());
    let refusal = Refusal {
        reason: r.reason,
        claimed_sub: r.claimed_sub,
        claimed_org: r.claimed_org,
        client,
        request_id: id.to_owned(),
        trace_id: req
            .headers()
            .get("TraceID")
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned),
        request: format!("{} {}", req.method(), req.path()),
        detail: r.detail,
    };
    let rows = state
        .refusals
        .record(refusal, crate::store::micros(state.now()));
    refusals::write(&state.store, rows).await;
}

/// Conformance resources hold no personal data; everything else may.
fn cacheable(req: &actix_web::HttpRequest) -> bool {
    const PUBLIC: &[&str] = &[
        "/metadata",
        "/StructureDefinition/",
        "/ValueSet/",
        "/CodeSystem/",
        "/OperationDefinition/",
    ];
    req.method() == actix_web::http::Method::GET && PUBLIC.iter().any(|p| req.path().starts_with(p))
}

/// What the request line and headers alone already refuse.
fn refused(req: &ServiceRequest) -> Option<ApiError> {
    let state = req.app_data::<actix_web::web::Data<AppState>>()?;
    let limits = &state.settings.limits;
    let uri = req.uri();
    let length = uri.path_and_query().map_or(0, |p| p.as_str().len());
    if length > limits.max_url_bytes {
        return Some(ApiError::UriTooLong(format!(
            "the path and query string are {length} bytes; this server reads at most {}",
            limits.max_url_bytes
        )));
    }
    let params = req
        .query_string()
        .split('&')
        .filter(|p| !p.is_empty())
        .count();
    if params > limits.max_query_params {
        return Some(ApiError::InvalidSearch(format!(
            "the query string has {params} parameters; this server reads at most {}",
            limits.max_query_params
        )));
    }
    let path = crate::fhir::percent::decode(req.path());
    if path.is_none_or(|p| p.chars().any(|c| !crate::fhir::json::allowed_char(c))) {
        return Some(ApiError::InvalidSearch(
            "the path holds a control character or a malformed %-escape".into(),
        ));
    }
    if let Some(trace) = req.headers().get("TraceID") {
        let ok = trace.to_str().is_ok_and(|t| {
            (1..=200).contains(&t.trim().len()) && t.bytes().all(|b| b.is_ascii_graphic())
        });
        if !ok {
            return Some(ApiError::PreconditionHeader(
                "the TraceID header must be 1 to 200 printable ASCII characters (a UUID)".into(),
            ));
        }
    }
    None
}
