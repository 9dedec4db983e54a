//! `vread` (FHIR R4 §3.1.0.3): `GET /Flag/{id}/_history/{vid}` — a Flag exactly as it was at
//! that version, which is what an audit of a past disclosure needs. Audited; not for clinicians
//! (earlier versions may hold what was entered in error).

use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::http::Reply;
use crate::audit::{disclose, AccessContext, Disclosure, Interaction};
use crate::error::ApiError;
use crate::fhir::flag;
use crate::records::policy::{decide, Action};
use crate::state::AppState;
use crate::store::{councils, flags};

pub async fn vread_flag(
    req: HttpRequest,
    ctx: AccessContext,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (id, vid) = path.into_inner();
    let what = Interaction {
        resource_type: "Flag",
        subtype: "vread",
        listable: false,
    };
    let (row, council) = disclose(state.trail(), ctx, what, None, move |conn, ctx| {
        let scope = decide(&ctx.caller, Action::ReadFlagHistory)?;
        let not_found = || ApiError::NotFound(format!("Flag/{id} has no version '{vid}'"));
        let version: i64 = vid.parse().map_err(|_| not_found())?;
        let row = flags::version(conn, &id, version)?.ok_or_else(not_found)?;
        if !scope.covers_council(&row.la_ods) {
            return Err(ApiError::Forbidden(
                "this record belongs to another council".into(),
            ));
        }
        let council = councils::get(conn, &row.la_ods)?;
        let mut d = Disclosure::about(Some(row.nhs_number.clone()));
        d.flag(&row.flag_id, row.version, &row.la_ods);
        Ok(((row.as_flag(), council), d))
    })
    .await?;
    Reply::ok(flag::render(
        &row,
        council.as_ref().map(|c| c.name.as_str()),
    ))
    .versioned(row.version, row.updated_at)
    .into_response(&req)
}
