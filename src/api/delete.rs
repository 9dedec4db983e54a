//! `delete` (FHIR R4 §3.1.0.7) of a Flag (by id, or conditionally by the council's plan
//! reference, §3.1.0.7.1), of a Patient, and of a Subscription.
//!
//! A CP-IS record is never erased on request: a Flag becomes `entered-in-error` — hidden from
//! clinicians, kept (with its history) for audit — and the deletion is a new version. Deleting
//! it again changes nothing. Deleting a Patient withdraws every Flag the calling council holds
//! on the person; the person's details leave with the records under the retention rules.

use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::http::if_match;
use crate::api::update::plan_ref_of;
use crate::api::write::{self, FlagTarget, Op};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::nhs_number::NhsNumber;
use crate::records::policy::{decide, Action};
use crate::state::AppState;
use crate::store::subscriptions;

pub async fn delete_flag(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    decide(&caller, Action::WriteRecords)?;
    let op = Op::DeleteFlag {
        target: FlagTarget::Id(path.into_inner()),
        expected: if_match(&req)?,
    };
    write::apply(&state, &caller, op)
        .await?
        .respond(&state, &req)
}

/// `DELETE /Flag?identifier=system|value`.
pub async fn conditional_delete_flag(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    decide(&caller, Action::WriteRecords)?;
    let op = Op::DeleteFlag {
        target: FlagTarget::Ref(plan_ref_of(&req)?),
        expected: if_match(&req)?,
    };
    write::apply(&state, &caller, op)
        .await?
        .respond(&state, &req)
}

pub async fn delete_patient(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    decide(&caller, Action::WriteRecords)?;
    let nhs = NhsNumber::parse(&path, state.settings.allow_test_nhs_numbers)
        .map_err(|e| ApiError::InvalidSearch(format!("Patient/{{id}}: {e}")))?;
    write::apply(&state, &caller, Op::DeletePatient(nhs))
        .await?
        .respond(&state, &req)
}

/// `DELETE /Subscription/{id}`: the subscription and its events are removed (the AuditEvents
/// they named stay in the audit trail).
pub async fn delete_subscription(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    crate::api::subscription::require_subscriber(&caller)?;
    let id = path.into_inner();
    let expected = if_match(&req)?;
    state
        .store
        .write(move |conn| {
            let current = crate::api::subscription::found(subscriptions::get(conn, &id)?, &id)?;
            crate::api::subscription::require_owner(&caller, &current)?;
            crate::api::http::check_version(expected, current.version)?;
            subscriptions::delete(conn, &id)?;
            Ok::<_, ApiError>(())
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
