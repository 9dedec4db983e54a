//! Who is calling: bearer-token verification and the caller as an actix extractor
//! (DOMAIN.md "Who may do what"; FHIR R4 §3.1.0.1.11 security is delegated to the transport).

pub mod dev;
pub mod jwt;
pub mod policy;

use std::future::{ready, Ready};

use actix_web::{web, FromRequest, HttpRequest};

use crate::domain::{OdsCode, Role};
use crate::error::ApiError;
use crate::state::AppState;

/// The verified caller of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// The token subject: an SDS user id for people, a client id for council systems.
    pub user_id: String,
    pub name: Option<String>,
    pub role: Role,
    /// The caller's organisation (ODS code).
    pub org: OdsCode,
    /// The token issuer, which identifies the calling system.
    pub issuer: String,
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(caller_of(req))
    }
}

/// The verified caller of `req`, or why there is none.
pub fn caller_of(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))?;
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::Unauthenticated("an Authorization: Bearer token is required".into())
        })?;
    let text = header.to_str().map_err(|_| {
        ApiError::Unauthenticated("the Authorization header is not readable".into())
    })?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthenticated("the Authorization header must be 'Bearer <token>'".into())
        })?;
    state.verifier.verify(token)
}
