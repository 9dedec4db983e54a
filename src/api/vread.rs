//! `vread` (FHIR R4 §3.1.0.3): `GET /Flag/{id}/_history/{vid}` — a Flag exactly as it was at
//! that version, which is what an audit of a past disclosure needs.

use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::http::Reply;
use crate::auth::{policy, Caller};
use crate::error::ApiError;
use crate::fhir::flag;
use crate::state::AppState;
use crate::store::{councils, flags};

pub async fn vread_flag(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    policy::require_record_reader(&caller)?;
    let (id, vid) = path.into_inner();
    let version: i64 = vid
        .parse()
        .map_err(|_| ApiError::NotFound(format!("Flag/{id} has no version '{vid}'")))?;
    let (row, council) = state
        .store
        .read(move |conn| {
            let row = flags::version(conn, &id, version)?
                .ok_or_else(|| ApiError::NotFound(format!("Flag/{id} has no version {version}")))?;
            let council = councils::get(conn, &row.la_ods)?;
            Ok((row, council))
        })
        .await?;
    policy::require_responsible(&caller, &row.la_ods)?;
    let row = row.as_flag();
    Reply::ok(flag::render(
        &row,
        council.as_ref().map(|c| c.name.as_str()),
    ))
    .versioned(row.version, row.updated_at)
    .into_response(&req)
}
