//! `update` (FHIR R4 §3.1.0.4): `PUT /Patient/{nhs}` and `PUT /Organization/{ods}` create or
//! update (the id is the natural key); `PUT /Flag/{id}` and `PUT /Subscription/{id}` update
//! server-assigned resources.
//! `If-Match` makes any of them version-aware (412 on mismatch). An update that changes nothing
//! keeps the current version, so resubmitting the same extract is idempotent.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use crate::api::http::{check_version, history_url, if_match, submitted, Reply};
use crate::api::subscription;
use crate::api::write::{self, FlagTarget, Op, PlanRef};
use crate::auth::Caller;
use crate::error::{ApiError, Issue};
use crate::fhir::patient::PatientInput;
use crate::fhir::{organization, patient};
use crate::nhs_number::NhsNumber;
use crate::records::policy::{decide, Action};
use crate::state::AppState;
use crate::store::{self, councils, subscriptions};

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
    decide(&caller, Action::WriteRecords)?;
    let nhs = NhsNumber::parse(&path, state.settings.allow_test_nhs_numbers)
        .map_err(|e| ApiError::InvalidSearch(format!("Patient/{{id}}: {e}")))?;
    let expected = if_match(&req)?;
    let value = submitted(&req, payload, &state, "Patient").await?;
    check_body_id(&value, "Patient", nhs.as_str())?;
    let input = patient_for_id(&value, &nhs, &state)?;
    let visible_since = crate::api::read::visible_since(&state);
    let op = Op::PutPatient {
        expected,
        input,
        visible_since,
    };
    write::apply(&state, &caller, op)
        .await?
        .respond(&state, &req)
}

/// Parses a Patient submitted for the id `nhs`, which its NHS number must equal.
pub fn patient_for_id(
    value: &Value,
    nhs: &NhsNumber,
    state: &AppState,
) -> Result<PatientInput, ApiError> {
    let input = patient::parse(
        value,
        state.settings.allow_test_nhs_numbers,
        state.now().date_naive(),
    )
    .map_err(ApiError::Unprocessable)?;
    if input.nhs_number != *nhs {
        return Err(ApiError::Unprocessable(vec![Issue::new(
            "value",
            "Patient.identifier[0].value",
            "the NHS number in Patient.identifier must equal the Patient id",
        )]));
    }
    Ok(input)
}

pub async fn update_flag(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    decide(&caller, Action::WriteRecords)?;
    let id = path.into_inner();
    let expected = if_match(&req)?;
    let value = submitted(&req, payload, &state, "Flag").await?;
    check_body_id(&value, "Flag", &id)?;
    let input = write::flag_input(&state, &caller, &value)?;
    let op = Op::UpdateFlag {
        target: FlagTarget::Id(id.clone()),
        body_id: Some(id),
        expected,
        input,
        new_id: String::new(),
    };
    write::apply(&state, &caller, op)
        .await?
        .respond(&state, &req)
}

/// `PUT /Flag?identifier=system|value` (FHIR R4 §3.1.0.4.3 conditional update): updates the
/// caller's Flag with that plan reference, or creates it when there is none, so a council can
/// resubmit its extract without keeping our ids.
pub async fn conditional_update_flag(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    decide(&caller, Action::WriteRecords)?;
    let plan = plan_ref_of(&req)?;
    let expected = if_match(&req)?;
    let value = submitted(&req, payload, &state, "Flag").await?;
    let input = write::flag_input(&state, &caller, &value)?;
    write::check_plan_ref(&plan, &input)?;
    let op = Op::UpdateFlag {
        target: FlagTarget::Ref(plan),
        body_id: value.get("id").and_then(Value::as_str).map(str::to_owned),
        expected,
        input,
        new_id: uuid::Uuid::now_v7().to_string(),
    };
    write::apply(&state, &caller, op)
        .await?
        .respond(&state, &req)
}

/// The `identifier=system|value` of a conditional interaction's query string.
pub fn plan_ref_of(req: &HttpRequest) -> Result<PlanRef, ApiError> {
    let q = req.query_string();
    PlanRef::from_query(q).ok_or_else(|| {
        ApiError::InvalidSearch(format!(
            "a conditional update or delete of a Flag needs exactly ?identifier=system|value, not '{q}'"
        ))
    })
}

pub async fn update_organization(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    decide(&caller, Action::ManageCouncils)?;
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

/// `PUT /Subscription/{id}`: the council changes its subscription (a new endpoint is handshaken
/// again; `off` stops delivery; the backlog is kept either way).
pub async fn update_subscription(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    subscription::require_subscriber(&caller)?;
    let id = path.into_inner();
    let expected = if_match(&req)?;
    let (value, input) = subscription::submitted(&req, payload, &state).await?;
    check_body_id(&value, "Subscription", &id)?;
    let now = store::micros(state.now());
    let row = state
        .store
        .write(move |conn| {
            let current = subscription::found(subscriptions::get(conn, &id)?, &id)?;
            subscription::require_owner(&caller, &current)?;
            if let Some(c) = &input.council {
                if *c != current.council {
                    return Err(ApiError::Unprocessable(vec![Issue::new(
                        "business-rule",
                        "Subscription.criteria.extension",
                        format!(
                            "this subscription is for council {}; its filter cannot change",
                            current.council
                        ),
                    )]));
                }
            }
            check_version(expected, current.version)?;
            let settings = subscription::updated(&current, &input, now);
            if subscription::changes(&current, &settings) {
                subscriptions::update_settings(conn, &id, &settings)?;
            }
            subscription::found(subscriptions::get(conn, &id)?, &id)
        })
        .await?;
    state.notifier.wake.wake();
    Reply::ok(crate::fhir::subscription::render(&row))
        .versioned(row.version, row.updated_at)
        .into_response(&req)
}
