//! `read` (FHIR R4 §3.1.0.2): `GET /Patient/{nhs}`, `GET /Flag/{id}`, `GET /Organization/{ods}`.
//! Councils read their own records; councils' Organizations are readable by every caller so
//! that a clinician can find whom to phone. Clinicians reach Patient and Flag data only through
//! the audited look-up.

use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::http::Reply;
use crate::auth::{policy, Caller};
use crate::domain::Role;
use crate::error::ApiError;
use crate::fhir::{flag, organization, patient};
use crate::nhs_number::NhsNumber;
use crate::state::AppState;
use crate::store::{councils, flags, patients};

pub async fn read_patient(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    policy::require_record_reader(&caller)?;
    let nhs = NhsNumber::parse(&path, state.settings.allow_test_nhs_numbers)
        .map_err(|e| ApiError::InvalidSearch(format!("Patient/{{id}}: {e}")))?;
    let council = (caller.role == Role::Council).then(|| caller.org.as_str().to_owned());
    let row = state
        .store
        .read(move |conn| {
            let row = patients::get(conn, nhs.as_str())?
                .ok_or_else(|| ApiError::NotFound(format!("Patient/{nhs} does not exist")))?;
            if let Some(org) = council {
                if row.created_by != org && !patients::council_holds_flag(conn, nhs.as_str(), &org)?
                {
                    return Err(ApiError::Forbidden(
                        "this person's record is maintained by another council".into(),
                    ));
                }
            }
            Ok(row)
        })
        .await?;
    Reply::ok(patient::render(&row))
        .versioned(row.version, row.updated_at)
        .into_response(&req)
}

pub async fn read_flag(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    policy::require_record_reader(&caller)?;
    let id = path.into_inner();
    let (row, council) = state
        .store
        .read(move |conn| {
            let row = flags::get(conn, &id)?
                .ok_or_else(|| ApiError::NotFound(format!("Flag/{id} does not exist")))?;
            let council = councils::get(conn, &row.la_ods)?;
            Ok((row, council))
        })
        .await?;
    policy::require_responsible(&caller, &row.la_ods)?;
    Reply::ok(flag::render(
        &row,
        council.as_ref().map(|c| c.name.as_str()),
    ))
    .versioned(row.version, row.updated_at)
    .into_response(&req)
}

pub async fn read_organization(
    req: HttpRequest,
    _caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let ods = path.into_inner();
    let row = state
        .store
        .read(move |conn| {
            councils::get(conn, &ods)?
                .ok_or_else(|| ApiError::NotFound(format!("Organization/{ods} does not exist")))
        })
        .await?;
    Reply::ok(organization::render(&row))
        .versioned(row.version, row.updated_at)
        .into_response(&req)
}
