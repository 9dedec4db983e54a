//! `history` of one instance (FHIR R4 §3.1.0.9): `GET /Flag/{id}/_history` — a `history` Bundle
//! of every version, newest first, each with the method that made it.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::api::http::Reply;
use crate::auth::{policy, Caller};
use crate::error::ApiError;
use crate::fhir::{flag, instant};
use crate::state::AppState;
use crate::store::{councils, flags};

pub async fn flag_history(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    policy::require_record_reader(&caller)?;
    let id = path.into_inner();
    let lookup = id.clone();
    let (versions, council) = state
        .store
        .read(move |conn| {
            let current = flags::get(conn, &lookup)?
                .ok_or_else(|| ApiError::NotFound(format!("Flag/{lookup} does not exist")))?;
            let council = councils::get(conn, &current.la_ods)?;
            Ok((flags::versions(conn, &lookup)?, (current.la_ods, council)))
        })
        .await?;
    policy::require_responsible(&caller, &council.0)?;
    let base = &state.settings.base_url;
    let name = council.1.as_ref().map(|c| c.name.as_str());
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
    let bundle = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "history",
        "total": entries.len(),
        "link": [{ "relation": "self", "url": format!("{base}/Flag/{id}/_history") }],
        "entry": entries,
    });
    Reply::ok(bundle).into_response(&req)
}
