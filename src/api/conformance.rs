//! `read` of this server's own conformance resources (FHIR R4 §2.11 profiles, value sets, code
//! systems, operation definitions), served from `fhir-profiles/` exactly as shipped. They hold no personal data and are
//! readable without a token, like `/metadata`.

use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::http::Reply;
use crate::error::ApiError;
use crate::fhir::profile::CONFORMANCE_FILES;

fn find(kind: &str, id: &str) -> Result<serde_json::Value, ApiError> {
    let (_, _, text) = CONFORMANCE_FILES
        .iter()
        .find(|(k, i, _)| *k == kind && *i == id)
        .ok_or_else(|| ApiError::NotFound(format!("{kind}/{id} does not exist")))?;
    serde_json::from_str(text).map_err(|e| ApiError::Internal(format!("{kind}/{id}: {e}")))
}

pub async fn read_structure_definition(
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Reply::ok(find("StructureDefinition", &path)?).into_response(&req)
}

pub async fn read_value_set(
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Reply::ok(find("ValueSet", &path)?).into_response(&req)
}

pub async fn read_code_system(
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Reply::ok(find("CodeSystem", &path)?).into_response(&req)
}

pub async fn read_operation_definition(
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Reply::ok(find("OperationDefinition", &path)?).into_response(&req)
}

/// The topic of councils' subscriptions, in its R4 form (a Basic resource, Subscriptions R5
/// Backport IG "Topics in R4").
pub async fn read_basic(
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Reply::ok(find("Basic", &path)?).into_response(&req)
}
