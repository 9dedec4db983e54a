//! `create` (FHIR R4 §3.1.0.5): `POST /Patient`, `POST /Flag` (with `If-None-Exist`, §3.1.0.5.1
//! conditional create by identifier), `POST /Organization`, `POST /Subscription`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::http::{history_url, submitted, Reply};
use crate::api::subscription;
use crate::api::write::{self, Op, PlanRef};
use crate::auth::Caller;
use crate::error::{ApiError, Issue};
use crate::fhir::{organization, patient, subscription as fhir_subscription};
use crate::records::policy::{decide, Action};
use crate::state::AppState;
use crate::store::{self, councils, subscriptions};

pub async fn create_patient(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    decide(&caller, Action::WriteRecords)?;
    let value = submitted(&req, payload, &state, "Patient").await?;
    let input = patient::parse(
        &value,
        state.settings.allow_test_nhs_numbers,
        state.now().date_naive(),
    )
    .map_err(ApiError::Unprocessable)?;
    write::apply(&state, &caller, Op::CreatePatient(input))
        .await?
        .respond(&state, &req)
}

/// `If-None-Exist: identifier=system|value` — the only search a council needs to make a
/// resubmission idempotent.
fn if_none_exist(req: &HttpRequest) -> Result<Option<PlanRef>, ApiError> {
    let Some(h) = req.headers().get("If-None-Exist") else {
        return Ok(None);
    };
    let text = h.to_str().unwrap_or_default();
    PlanRef::from_query(text).map(Some).ok_or_else(|| {
        ApiError::Invalid(vec![Issue::general(
            "invalid",
            format!("If-None-Exist '{text}' must be identifier=system|value"),
        )])
    })
}

pub async fn create_flag(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    decide(&caller, Action::WriteRecords)?;
    let condition = if_none_exist(&req)?;
    let value = submitted(&req, payload, &state, "Flag").await?;
    let input = write::flag_input(&state, &caller, &value)?;
    let op = Op::CreateFlag {
        condition,
        input,
        new_id: uuid::Uuid::now_v7().to_string(),
    };
    write::apply(&state, &caller, op)
        .await?
        .respond(&state, &req)
}

pub async fn create_organization(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    decide(&caller, Action::ManageCouncils)?;
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

/// `POST /Subscription`: a council registers its webhook (Subscriptions R5 Backport IG). The
/// answer carries the signing secret this once; reads never show it.
pub async fn create_subscription(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    subscription::require_subscriber(&caller)?;
    let (_, input) = subscription::submitted(&req, payload, &state).await?;
    let council = subscription::owner_of(&caller, input.council.as_deref())?;
    let secret = match &input.secret {
        Some(s) => s.clone(),
        None => crate::notify::signature::new_secret()
            .map_err(|e| ApiError::Internal(format!("cannot make a signing secret: {e}")))?,
    };
    let now = store::micros(state.now());
    let row = subscription::new_row(
        uuid::Uuid::new_v4().to_string(),
        council,
        input,
        secret,
        now,
    );
    let stored = state
        .store
        .write(move |conn| {
            if councils::get(conn, &row.council)?.is_none() {
                return Err(ApiError::Unprocessable(vec![Issue::new(
                    "value",
                    "Subscription.criteria.extension",
                    format!("council {} is not registered on CP-IS", row.council),
                )]));
            }
            subscriptions::insert(conn, &row)?;
            Ok(row)
        })
        .await?;
    state.notifier.wake.wake();
    Reply::ok(fhir_subscription::render_with_secret(&stored))
        .status(StatusCode::CREATED)
        .versioned(stored.version, stored.updated_at)
        .location(history_url(
            &state,
            "Subscription",
            &stored.id,
            stored.version,
        ))
        .into_response(&req)
}
