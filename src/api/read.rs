//! `read` (FHIR R4 §3.1.0.2): `GET /Patient/{nhs}`, `GET /Flag/{id}`, `GET /Organization/{ods}`,
//! `GET /AuditEvent/{id}`, `GET /Subscription/{id}`.
//!
//! Reads of Patient, Flag and AuditEvent data are audited before disclosure (see `audit`).
//! Councils read what they are responsible for; clinicians read only what the look-up would show
//! them (no entered-in-error Flag, nothing past retention); councils' Organizations are readable
//! by every caller, unaudited, so that a clinician can find whom to phone.

use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::http::Reply;
use crate::audit::{disclose, AccessContext, Disclosure, Interaction};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::fhir::{audit_event, flag, organization, patient};
use crate::nhs_number::NhsNumber;
use crate::records::policy::{decide, Action, Scope};
use crate::state::AppState;
use crate::store::councils::CouncilRow;
use crate::store::patients::PatientRow;
use crate::store::{audit as audit_store, councils, flags, patients};

/// The date before which an ended plan is past its retention window.
pub fn visible_since(state: &AppState) -> String {
    crate::records::lifecycle::visible_since(
        state.now().date_naive(),
        state.settings.retention_months,
    )
}

pub async fn read_patient(
    req: HttpRequest,
    ctx: AccessContext,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let row = disclosed_patient(&state, ctx, path.into_inner(), None).await?;
    Reply::ok(patient::render(&row))
        .versioned(row.version, row.updated_at)
        .into_response(&req)
}

/// `GET /Patient/{id}/_history/{vid}`: this server keeps only a person's current demographics,
/// so the current version is the one version it can show (the `Location` of every write names
/// it); any other is 404, saying which version is current.
pub async fn vread_patient(
    req: HttpRequest,
    ctx: AccessContext,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (id, vid) = path.into_inner();
    let row = disclosed_patient(&state, ctx, id, Some(vid)).await?;
    Reply::ok(patient::render(&row))
        .versioned(row.version, row.updated_at)
        .into_response(&req)
}

/// Only the current version is kept: `vid` must name it.
fn current_version(resource: &str, id: &str, vid: &str, current: i64) -> Result<(), ApiError> {
    if vid.parse::<i64>().ok() == Some(current) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!(
            "{resource}/{id} has no version '{vid}' here: only the current version ({current}) of a {resource} is kept"
        )))
    }
}

/// The audited read of one person (`vid`: a vread of that version).
async fn disclosed_patient(
    state: &AppState,
    ctx: AccessContext,
    raw: String,
    vid: Option<String>,
) -> Result<PatientRow, ApiError> {
    let allow_test = state.settings.allow_test_nhs_numbers;
    let since = visible_since(state);
    let hint = (raw.len() == 10).then(|| raw.clone());
    let what = Interaction {
        resource_type: "Patient",
        subtype: if vid.is_some() { "vread" } else { "read" },
        listable: true,
    };
    disclose(state.trail(), ctx, what, hint, move |conn, ctx| {
        let nhs = NhsNumber::parse(&raw, allow_test)
            .map_err(|e| ApiError::InvalidSearch(format!("Patient/{{id}}: {e}")))?;
        let not_found = || ApiError::NotFound(format!("Patient/{nhs} is not on CP-IS"));
        let row = patients::get(conn, nhs.as_str())?.ok_or_else(not_found)?;
        let scope = decide(&ctx.caller, Action::ReadRecord)?;
        if let Some(own) = scope.council() {
            if row.created_by != own.as_str()
                && !patients::council_holds_flag(conn, nhs.as_str(), own.as_str())?
            {
                // The same answer as for a person not on CP-IS: a council learns nothing of
                // other councils' records (README "Demographics integrity").
                return Err(not_found());
            }
        }
        if scope.is_clinician() && !flags::has_visible(conn, nhs.as_str(), &since)? {
            return Err(not_found());
        }
        if let Some(vid) = &vid {
            current_version("Patient", nhs.as_str(), vid, row.version)?;
        }
        let mut d = Disclosure::about(Some(nhs.as_str().to_owned()));
        d.reference(format!("Patient/{nhs}/_history/{}", row.version));
        Ok((row, d))
    })
    .await
}

pub async fn read_flag(
    req: HttpRequest,
    ctx: AccessContext,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let since = visible_since(&state);
    let what = Interaction {
        resource_type: "Flag",
        subtype: "read",
        listable: true,
    };
    let (row, council) = disclose(state.trail(), ctx, what, None, move |conn, ctx| {
        let not_found = || ApiError::NotFound(format!("Flag/{id} does not exist"));
        let row = flags::get(conn, &id)?.ok_or_else(not_found)?;
        let scope = decide(&ctx.caller, Action::ReadRecord)?;
        if !scope.covers_council(&row.la_ods) {
            return Err(ApiError::Forbidden(
                "this record belongs to another council".into(),
            ));
        }
        if scope.is_clinician() && !flags::visible_to_clinicians(&row, &since) {
            return Err(not_found());
        }
        let council = councils::get(conn, &row.la_ods)?;
        let mut d = Disclosure::about(Some(row.nhs_number.clone()));
        d.flag(&row.id, row.version, &row.la_ods);
        Ok(((row, council), d))
    })
    .await?;
    Reply::ok(flag::render(
        &row,
        council.as_ref().map(|c| c.name.as_str()),
    ))
    .versioned(row.version, row.updated_at)
    .into_response(&req)
}

pub async fn read_organization(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let row = organization_row(&state, &caller, path.into_inner()).await?;
    Reply::ok(organization::render(&row))
        .versioned(row.version, row.updated_at)
        .into_response(&req)
}

/// `GET /Organization/{id}/_history/{vid}`: the current version only (as for Patient).
pub async fn vread_organization(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (ods, vid) = path.into_inner();
    let row = organization_row(&state, &caller, ods).await?;
    current_version("Organization", &row.ods_code, &vid, row.version)?;
    Reply::ok(organization::render(&row))
        .versioned(row.version, row.updated_at)
        .into_response(&req)
}

async fn organization_row(
    state: &AppState,
    caller: &Caller,
    ods: String,
) -> Result<CouncilRow, ApiError> {
    decide(caller, Action::ReadCouncils)?;
    state
        .store
        .read(move |conn| {
            councils::get(conn, &ods)?
                .ok_or_else(|| ApiError::NotFound(format!("Organization/{ods} does not exist")))
        })
        .await
}

pub async fn read_audit_event(
    req: HttpRequest,
    ctx: AccessContext,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let what = Interaction {
        resource_type: "AuditEvent",
        subtype: "read",
        listable: false,
    };
    let row = disclose(state.trail(), ctx, what, None, move |conn, ctx| {
        let row = audit_store::get(conn, &id)?
            .ok_or_else(|| ApiError::NotFound(format!("AuditEvent/{id} does not exist")))?;
        // A council reads the accesses to its own records (its notifications carry only the
        // AuditEvent id).
        let allowed = match decide(&ctx.caller, Action::ReadAuditEvent)? {
            Scope::OwnCouncil(own) => row.councils.contains(own.as_str()),
            _ => true,
        };
        if !allowed {
            return Err(ApiError::Forbidden(
                "this audit record is not about a record you are responsible for".into(),
            ));
        }
        let mut d = Disclosure::about(row.patient.clone());
        d.reference(format!("AuditEvent/{}", row.id));
        Ok((row, d))
    })
    .await?;
    Reply::ok(audit_event::render(&row)).into_response(&req)
}

/// `GET /Subscription/{id}`: the council's own, or any for an administrator. Never the
/// headers' values nor the signing secret.
pub async fn read_subscription(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let row = crate::api::subscription::owned(&state, &caller, path.into_inner()).await?;
    Reply::ok(crate::fhir::subscription::render(&row))
        .versioned(row.version, row.updated_at)
        .into_response(&req)
}

/// `GET /Subscription/{id}/_history/{vid}`: the current version only (as for Patient).
pub async fn vread_subscription(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (id, vid) = path.into_inner();
    let row = crate::api::subscription::owned(&state, &caller, id).await?;
    current_version("Subscription", &row.id, &vid, row.version)?;
    Reply::ok(crate::fhir::subscription::render(&row))
        .versioned(row.version, row.updated_at)
        .into_response(&req)
}
