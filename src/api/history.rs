//! `history` of one instance (FHIR R4 §3.1.0.9): `GET /Flag/{id}/_history` — a `history` Bundle
//! of every version, newest first, each with the method that made it. Audited; not for
//! clinicians.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::api::http::Reply;
use crate::audit::{disclose, AccessContext, Disclosure, Interaction};
use crate::error::ApiError;
use crate::fhir::bundle::Bundle;
use crate::fhir::{flag, instant};
use crate::records::policy::{decide, Action};
use crate::state::AppState;
use crate::store::{councils, flags};

pub async fn flag_history(
    req: HttpRequest,
    ctx: AccessContext,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let lookup = id.clone();
    let what = Interaction {
        resource_type: "Flag",
        subtype: "history-instance",
        listable: false,
    };
    let (versions, council) = disclose(state.trail(), ctx, what, None, move |conn, ctx| {
        let scope = decide(&ctx.caller, Action::ReadFlagHistory)?;
        let current = flags::get(conn, &lookup)?
            .ok_or_else(|| ApiError::NotFound(format!("Flag/{lookup} does not exist")))?;
        if !scope.covers_council(&current.la_ods) {
            return Err(ApiError::Forbidden(
                "this record belongs to another council".into(),
            ));
        }
        let council = councils::get(conn, &current.la_ods)?;
        let versions = flags::versions(conn, &lookup)?;
        let mut d = Disclosure::about(Some(current.nhs_number.clone()));
        for v in &versions {
            d.flag(&v.flag_id, v.version, &v.la_ods);
        }
        Ok(((versions, council), d))
    })
    .await?;
    let base = &state.settings.base_url;
    let name = council.as_ref().map(|c| c.name.as_str());
    let entries: Vec<_> = versions
        .iter()
        .map(|v| {
            let row = v.as_flag();
            let (method, url, status) = match v.method.as_str() {
                "POST" => ("POST", "Flag".to_owned(), "201 Created"),
                "DELETE" => ("DELETE", format!("Flag/{id}"), "204 No Content"),
                _ => ("PUT", format!("Flag/{id}"), "200 OK"),
            };
            json!({
                "fullUrl": format!("{base}/Flag/{id}/_history/{}", v.version),
                "resource": flag::render(&row, name),
                "request": { "method": method, "url": url },
                "response": {
                    "status": status,
                    "etag": format!("W/\"{}\"", v.version),
                    "lastModified": instant(v.recorded_at),
                },
            })
        })
        .collect();
    let bundle = Bundle::new("history")
        .total(entries.len())
        .links([("self", format!("{base}/Flag/{id}/_history"))])
        .entries(entries)
        .build();
    Reply::ok(bundle).into_response(&req)
}
