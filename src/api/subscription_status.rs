//! `GET /Subscription/{id}/$status` (Subscriptions R5 Backport IG, operation `$status`): the
//! subscription's state as a backport SubscriptionStatus (type `query-status`) in a searchset
//! Bundle — status, events given out since it started, and the last delivery error, if any.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::api::http::Reply;
use crate::api::subscription::owned;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::fhir::bundle::Bundle;
use crate::fhir::subscription::{status, Kind};
use crate::state::AppState;

pub async fn subscription_status(
    req: HttpRequest,
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let row = owned(&state, &caller, path.into_inner()).await?;
    let base = &state.settings.base_url;
    let parameters = status(base, &row, Kind::QueryStatus, &[], &row.content);
    let bundle = Bundle::new("searchset")
        .total(1)
        .links([("self", format!("{base}/Subscription/{}/$status", row.id))])
        .entries(vec![json!({
            "fullUrl": format!("urn:uuid:{}", parameters["id"].as_str().unwrap_or_default()),
            "resource": parameters,
            "search": { "mode": "match" },
        })])
        .build();
    Reply::ok(bundle).into_response(&req)
}
