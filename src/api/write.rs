//! The HTTP side of the one write path (`records::write`): running a change on the writer,
//! reading a submitted Flag, and answering with what was written (FHIR R4 §3.1.0.4–§3.1.0.7:
//! status, `ETag`, `Last-Modified`, `Location`).

use actix_web::http::StatusCode;
use serde_json::{json, Value};

use crate::api::http::{history_url, Reply};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::fhir::flag::FlagInput;
use crate::fhir::{flag, patient};
use crate::records::policy::{decide, Action};
use crate::records::rules::Known;
use crate::state::AppState;

pub use crate::records::write::{
    check_plan_ref, execute, Done, FlagTarget, Op, PlanRef, Shown, Written,
};

/// The HTTP status that says what a write did.
pub fn status_of(w: Written) -> StatusCode {
    match w {
        Written::Created => StatusCode::CREATED,
        Written::Ok => StatusCode::OK,
        Written::NoContent => StatusCode::NO_CONTENT,
    }
}

impl Done {
    /// The resource (or explanation) to send back, if any.
    pub fn body(&self) -> Option<Value> {
        match &self.shown {
            Shown::Patient(row) => Some(patient::render(row)),
            Shown::Flag(row, name) => Some(flag::render(row, name.as_deref())),
            Shown::Note(text) => Some(note(text)),
            Shown::Nothing => None,
        }
    }

    /// The version-specific URL of what was written.
    pub fn location(&self, state: &AppState) -> String {
        history_url(state, self.resource, &self.id, self.version)
    }

    /// The HTTP response for a single-resource interaction.
    pub fn respond(
        self,
        state: &AppState,
        req: &actix_web::HttpRequest,
    ) -> Result<actix_web::HttpResponse, ApiError> {
        let location = self.location(state);
        let status = status_of(self.status);
        match self.body() {
            // Version 0: an answer about no version the caller may see (a trace-only submission).
            Some(body) if self.version == 0 => Reply::ok(body).status(status).into_response(req),
            Some(body) => Reply::ok(body)
                .status(status)
                .versioned(self.version, self.updated_at)
                .location(location)
                .into_response(req),
            None => Ok(actix_web::HttpResponse::build(status)
                .insert_header((
                    actix_web::http::header::ETAG,
                    format!("W/\"{}\"", self.version),
                ))
                .finish()),
        }
    }
}

/// An informational OperationOutcome.
fn note(text: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "information", "code": "informational", "diagnostics": text }],
    })
}

/// Runs one change on the writer and returns once it is durable.
pub async fn apply(state: &AppState, caller: &Caller, op: Op) -> Result<Done, ApiError> {
    let now = state.now();
    let today = now.date_naive();
    let now = crate::store::micros(now);
    let caller = caller.clone();
    let scope = decide(&caller, Action::WriteRecords)?;
    state
        .store
        .write_retrying(move |conn| {
            Ok::<_, ApiError>(execute(
                conn,
                &caller,
                &scope,
                &op,
                today,
                now,
                &mut Known::default(),
            )?)
        })
        .await
}

/// A submitted Flag as a checked input: the domain rules (422), then that the caller is its
/// author's council (403). Every way a Flag arrives goes through here.
pub fn flag_input(state: &AppState, caller: &Caller, value: &Value) -> Result<FlagInput, ApiError> {
    let input = flag::parse(value, state.settings.allow_test_nhs_numbers)
        .map_err(ApiError::Unprocessable)?;
    if !decide(caller, Action::WriteRecords)?.covers_council(input.author.as_str()) {
        return Err(ApiError::Forbidden(
            "this record belongs to another council".into(),
        ));
    }
    Ok(input)
}
