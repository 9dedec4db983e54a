//! Around every request: the request id (`X-Request-ID`, the caller's or a new one, also
//! accepted as `TraceID`) and the rendering of every error as a FHIR OperationOutcome in the
//! negotiated format — including errors raised outside our handlers (unknown route, wrong
//! method). 5xx bodies carry a fixed text plus the request id (DESIGN.md "Habits").

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use serde_json::json;

use crate::error::Outcome;
use crate::fhir::format::{self, Format};

/// The request's id, available to handlers through request extensions.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

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
    let mut res = next.call(req).await?.map_into_boxed_body();
    // The matched pattern, never the path itself: paths carry NHS numbers, which must not reach
    // logs at info level.
    log::info!(
        "{method} {} {} {:.1}ms id={id}",
        res.request()
            .match_pattern()
            .unwrap_or_else(|| "(unmatched)".into()),
        res.status().as_u16(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(X_REQUEST_ID, v);
    }
    let status = res.status();
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
