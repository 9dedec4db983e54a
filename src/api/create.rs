//! `create` (FHIR R4 §3.1.0.5): `POST /Patient`, `POST /Flag` (with `If-None-Exist`, §3.1.0.5.1
//! conditional create by identifier), `POST /Organization`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::http::{history_url, submitted, Reply};
use crate::api::rules;
use crate::auth::{policy, Caller};
use crate::error::{ApiError, Issue};
use crate::fhir::{flag, organization, patient};
use crate::state::AppState;
use crate::store::{self, councils, flags, patients};

pub async fn create_patient(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    policy::require_council(&caller)?;
    let value = submitted(&req, payload, &state, "Patient").await?;
    let now = state.now();
    let input = patient::parse(
        &value,
        state.settings.allow_test_nhs_numbers,
        now.date_naive(),
    )
    .map_err(ApiError::Unprocessable)?;
    let org = caller.org.as_str().to_owned();
    let row = input.to_row(&org, 1, store::micros(now));
    let stored = state
        .store
        .write(move |conn| {
            if patients::get(conn, &row.nhs_number)?.is_some() {
                return Err(ApiError::Conflict(format!(
                    "Patient/{} already exists; update it with PUT Patient/{}",
                    row.nhs_number, row.nhs_number
                )));
            }
            patients::insert(conn, &row)?;
            Ok(row)
        })
        .await?;
    let location = history_url(&state, "Patient", &stored.nhs_number, 1);
    Reply::ok(patient::render(&stored))
        .status(StatusCode::CREATED)
        .versioned(stored.version, stored.updated_at)
        .location(location)
        .into_response(&req)
}

/// `If-None-Exist: identifier=system|value` — the only search a council needs to make a
/// resubmission idempotent.
fn if_none_exist(req: &HttpRequest) -> Result<Option<(String, String)>, ApiError> {
    let Some(h) = req.headers().get("If-None-Exist") else {
        return Ok(None);
    };
    let text = h.to_str().unwrap_or_default();
    let bad = || {
        ApiError::Invalid(vec![Issue::general(
            "invalid",
            format!("If-None-Exist '{text}' must be identifier=system|value"),
        )])
    };
    let q = text.trim_start_matches('?');
    let raw = q.strip_prefix("identifier=").ok_or_else(bad)?;
    let decoded = rules::percent_decode(raw).ok_or_else(bad)?;
    let (system, value) = decoded.split_once('|').ok_or_else(bad)?;
    if system.is_empty() || value.is_empty() {
        return Err(bad());
    }
    Ok(Some((system.to_owned(), value.to_owned())))
}

pub async fn create_flag(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    policy::require_council(&caller)?;
    let condition = if_none_exist(&req)?;
    let value = submitted(&req, payload, &state, "Flag").await?;
    let input = flag::parse(&value, state.settings.allow_test_nhs_numbers)
        .map_err(ApiError::Unprocessable)?;
    policy::require_responsible(&caller, input.author.as_str())?;
    let now = store::micros(state.now());
    let id = uuid::Uuid::now_v7().to_string();
    let row = input.to_row(&id, 1, now);
    let org = caller.org.as_str().to_owned();
    let (stored, created, council) = state
        .store
        .write(move |conn| {
            if let Some((system, value)) = condition {
                if let Some(existing) = flags::find_by_identifier(conn, &org, &system, &value)? {
                    let council = councils::get(conn, &existing.la_ods)?;
                    return Ok((existing, false, council));
                }
            }
            let council = rules::check_flag_references(conn, &row)?;
            if let Some(existing) =
                flags::find_by_identifier(conn, &row.la_ods, &row.local_ref_system, &row.local_ref_value)?
            {
                return Err(ApiError::Conflict(format!(
                    "Flag/{} already has this identifier; update it with PUT, or send If-None-Exist",
                    existing.id
                )));
            }
            flags::insert(conn, &row)?;
            Ok((row, true, Some(council)))
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let location = history_url(&state, "Flag", &stored.id, stored.version);
    Reply::ok(flag::render(
        &stored,
        council.as_ref().map(|c| c.name.as_str()),
    ))
    .status(status)
    .versioned(stored.version, stored.updated_at)
    .location(location)
    .into_response(&req)
}

pub async fn create_organization(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    policy::require_admin(&caller)?;
    let value = submitted(&req, payload, &state, "Organization").await?;
    let input = organization::parse(&value).map_err(ApiError::Unprocessable)?;
    let row = input.to_row(1, store::micros(state.now()));
    let stored = state
        .store
        .write(move |conn| {
            if councils::get(conn, &row.ods_code)?.is_some() {
                return Err(ApiError::Conflict(format!(
                    "Organization/{} already exists; update it with PUT Organization/{}",
                    row.ods_code, row.ods_code
                )));
            }
            councils::insert(conn, &row)?;
            Ok(row)
        })
        .await?;
    let location = history_url(&state, "Organization", &stored.ods_code, 1);
    Reply::ok(organization::render(&stored))
        .status(StatusCode::CREATED)
        .versioned(stored.version, stored.updated_at)
        .location(location)
        .into_response(&req)
}
