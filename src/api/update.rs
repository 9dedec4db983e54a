//! `update` (FHIR R4 §3.1.0.4): `PUT /Patient/{nhs}` and `PUT /Organization/{ods}` create or
//! update (the id is the natural key); `PUT /Flag/{id}` updates a server-assigned Flag.
//! `If-Match` makes any of them version-aware (412 on mismatch). An update that changes nothing
//! keeps the current version, so resubmitting the same extract is idempotent.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use crate::api::http::{check_version, history_url, if_match, submitted, Reply};
use crate::api::rules;
use crate::auth::{policy, Caller};
use crate::domain::Role;
use crate::error::{ApiError, Issue};
use crate::fhir::{flag, organization, patient};
use crate::nhs_number::NhsNumber;
use crate::state::AppState;
use crate::store::{self, councils, flags, patients};

/// FHIR R4 §3.1.0.4: the body's id must equal the id in the URL.
fn check_body_id(value: &Value, resource: &str, id: &str) -> Result<(), ApiError> {
    match value.get("id").and_then(Value::as_str) {
        Some(body_id) if body_id == id => Ok(()),
        Some(body_id) => Err(ApiError::Invalid(vec![Issue::new(
            "invalid",
            format!("{resource}.id"),
            format!("{resource}.id '{body_id}' does not match the id '{id}' in the URL"),
        )])),
        None => Err(ApiError::Invalid(vec![Issue::new(
            "required",
            format!("{resource}.id"),
            format!("{resource}.id is required on update and must equal the id in the URL"),
        )])),
    }
}

pub async fn update_patient(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    policy::require_council(&caller)?;
    let nhs = NhsNumber::parse(&path, state.settings.allow_test_nhs_numbers)
        .map_err(|e| ApiError::InvalidSearch(format!("Patient/{{id}}: {e}")))?;
    let expected = if_match(&req)?;
    let value = submitted(&req, payload, &state, "Patient").await?;
    check_body_id(&value, "Patient", nhs.as_str())?;
    let now = state.now();
    let input = patient::parse(
        &value,
        state.settings.allow_test_nhs_numbers,
        now.date_naive(),
    )
    .map_err(ApiError::Unprocessable)?;
    if input.nhs_number != nhs {
        return Err(ApiError::Unprocessable(vec![Issue::new(
            "value",
            "Patient.identifier[0].value",
            "the NHS number in Patient.identifier must equal the Patient id",
        )]));
    }
    let org = caller.org.as_str().to_owned();
    let now = store::micros(now);
    let (stored, created) = state
        .store
        .write(move |conn| match patients::get(conn, nhs.as_str())? {
            // Any council may submit a person's demographics: they are traced against the
            // national demographics service, so every council sends the same, and a second
            // council taking a plan for a child already on CP-IS must be able to. Reading them
            // back stays limited to the councils responsible.
            Some(current) => {
                check_version(expected, current.version)?;
                let next = input.to_row(&current.created_by, current.version + 1, now);
                if next.same_content(&current) {
                    return Ok((current, false));
                }
                patients::update(conn, &next)?;
                Ok((next, false))
            }
            None => {
                if expected.is_some() {
                    return Err(ApiError::VersionConflict(
                        "If-Match was given but the Patient does not exist".into(),
                    ));
                }
                let row = input.to_row(&org, 1, now);
                patients::insert(conn, &row)?;
                Ok((row, true))
            }
        })
        .await?;
    let location = history_url(&state, "Patient", &stored.nhs_number, stored.version);
    Reply::ok(patient::render(&stored))
        .status(if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        })
        .versioned(stored.version, stored.updated_at)
        .location(location)
        .into_response(&req)
}

pub async fn update_flag(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    policy::require_council(&caller)?;
    let id = path.into_inner();
    let expected = if_match(&req)?;
    let value = submitted(&req, payload, &state, "Flag").await?;
    check_body_id(&value, "Flag", &id)?;
    let input = flag::parse(&value, state.settings.allow_test_nhs_numbers)
        .map_err(ApiError::Unprocessable)?;
    policy::require_responsible(&caller, input.author.as_str())?;
    let now = store::micros(state.now());
    let caller_role = caller.role;
    let org = caller.org.as_str().to_owned();
    let (stored, council) = state
        .store
        .write(move |conn| {
            let current = flags::get(conn, &id)?.ok_or_else(|| {
                ApiError::MethodNotAllowed(format!(
                    "Flag/{id} does not exist; Flag ids are assigned by the server, so create it with POST /Flag"
                ))
            })?;
            if caller_role == Role::Council && current.la_ods != org {
                return Err(ApiError::Forbidden("this Flag belongs to another council".into()));
            }
            check_version(expected, current.version)?;
            let next = input.to_row(&current.id, current.version + 1, now);
            if next.same_content(&current) {
                let council = councils::get(conn, &current.la_ods)?;
                return Ok((current, council));
            }
            let council = rules::check_flag_references(conn, &next)?;
            if let Some(other) = flags::find_by_identifier(
                conn,
                &next.la_ods,
                &next.local_ref_system,
                &next.local_ref_value,
            )?
            .filter(|f| f.id != next.id)
            {
                return Err(ApiError::Conflict(format!(
                    "Flag/{} already has this identifier",
                    other.id
                )));
            }
            flags::update(conn, &next, "PUT")?;
            Ok((next, Some(council)))
        })
        .await?;
    let location = history_url(&state, "Flag", &stored.id, stored.version);
    Reply::ok(flag::render(
        &stored,
        council.as_ref().map(|c| c.name.as_str()),
    ))
    .versioned(stored.version, stored.updated_at)
    .location(location)
    .into_response(&req)
}

pub async fn update_organization(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    policy::require_admin(&caller)?;
    let ods = path.into_inner();
    let expected = if_match(&req)?;
    let value = submitted(&req, payload, &state, "Organization").await?;
    check_body_id(&value, "Organization", &ods)?;
    let input = organization::parse(&value).map_err(ApiError::Unprocessable)?;
    if input.ods.as_str() != ods {
        return Err(ApiError::Unprocessable(vec![Issue::new(
            "value",
            "Organization.identifier[0].value",
            "the ODS code in Organization.identifier must equal the Organization id",
        )]));
    }
    let now = store::micros(state.now());
    let (stored, created) = state
        .store
        .write(move |conn| match councils::get(conn, &ods)? {
            Some(current) => {
                check_version(expected, current.version)?;
                let mut next = input.to_row(current.version + 1, now);
                let unchanged = CouncilContent::of(&next) == CouncilContent::of(&current);
                if unchanged {
                    return Ok((current, false));
                }
                next.version = current.version + 1;
                councils::update(conn, &next)?;
                Ok((next, false))
            }
            None => {
                if expected.is_some() {
                    return Err(ApiError::VersionConflict(
                        "If-Match was given but the Organization does not exist".into(),
                    ));
                }
                let row = input.to_row(1, now);
                councils::insert(conn, &row)?;
                Ok((row, true))
            }
        })
        .await?;
    let location = history_url(&state, "Organization", &stored.ods_code, stored.version);
    Reply::ok(organization::render(&stored))
        .status(if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        })
        .versioned(stored.version, stored.updated_at)
        .location(location)
        .into_response(&req)
}

#[derive(PartialEq)]
struct CouncilContent<'a>(&'a str, &'a str, &'a str, bool);

impl<'a> CouncilContent<'a> {
    fn of(r: &'a councils::CouncilRow) -> Self {
        Self(&r.name, &r.office_phone, &r.emergency_phone, r.active)
    }
}
