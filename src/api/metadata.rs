//! `capabilities` (FHIR R4 §3.1.0.10): `GET /metadata`, generated from the route table so it
//! states exactly what is implemented.

use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::http::Reply;
use crate::error::ApiError;
use crate::state::AppState;

pub async fn metadata(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    Reply::ok(state.capability.clone()).into_response(&req)
}
