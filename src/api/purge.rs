//! `POST /$purge`: an administrator applies the record lifecycle now (FHIR R4 §3.1.0.13
//! "Extended Operations"; the rules are DOMAIN.md "Retention", implemented in `lifecycle`).
//! The answer is a `Parameters` resource with the counts and the run's AuditEvent.

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::api::http::Reply;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::middleware::RequestId;
use crate::records::lifecycle::{self, Trigger};
use crate::records::policy::{decide, Action};
use crate::state::AppState;

pub async fn purge(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    decide(&caller, Action::RunLifecycle)?;
    let trigger = Trigger::Operation {
        user_id: caller.user_id.clone(),
        org: caller.org.as_str().to_owned(),
        request_id: req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
    };
    let rules = state.lifecycle_rules();
    let now = state.now();
    let report = state
        .store
        .write(move |conn| lifecycle::run(conn, rules, now, &trigger))
        .await?;
    let store = state.store.clone();
    // Off the HTTP worker: after an upgrade it indexes the whole trail.
    let _ = web::block(move || lifecycle::index_audit_logged(&store, now)).await;
    let mut parameters: Vec<Value> = report
        .counts
        .named()
        .iter()
        .map(|(name, n)| json!({ "name": name, "valueInteger": n }))
        .collect();
    if let Some(id) = report.audit_event {
        parameters.push(json!({
            "name": "auditEvent",
            "valueReference": { "reference": format!("AuditEvent/{id}") },
        }));
    }
    Reply::ok(json!({ "resourceType": "Parameters", "parameter": parameters })).into_response(&req)
}
