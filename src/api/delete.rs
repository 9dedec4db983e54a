//! `delete` (FHIR R4 §3.1.0.7) of a Flag. A CP-IS record is never erased on request: it becomes
//! `entered-in-error` — hidden from clinicians, kept (with its history) for audit — and the
//! deletion is a new version. Deleting it again changes nothing.

use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::http::{check_version, if_match};
use crate::auth::{policy, Caller};
use crate::domain::FlagStatus;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{self, flags};

pub async fn delete_flag(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    policy::require_council(&caller)?;
    let id = path.into_inner();
    let expected = if_match(&req)?;
    let org = caller.org.as_str().to_owned();
    let now = store::micros(state.now());
    let version = state
        .store
        .write(move |conn| {
            let current = flags::get(conn, &id)?
                .ok_or_else(|| ApiError::NotFound(format!("Flag/{id} does not exist")))?;
            if current.la_ods != org {
                return Err(ApiError::Forbidden(
                    "this Flag belongs to another council".into(),
                ));
            }
            check_version(expected, current.version)?;
            if current.status == FlagStatus::EnteredInError.as_str() {
                return Ok(current.version);
            }
            let mut next = current.clone();
            next.status = FlagStatus::EnteredInError.as_str().to_owned();
            next.version += 1;
            next.updated_at = now;
            flags::update(conn, &next, "DELETE")?;
            Ok(next.version)
        })
        .await?;
    Ok(HttpResponse::NoContent()
        .insert_header((actix_web::http::header::ETAG, format!("W/\"{version}\"")))
        .finish())
}
