//! Who is calling: bearer-token verification and the caller as an actix extractor
//! (DOMAIN.md "Who may do what"; FHIR R4 §3.1.0.1.11 security is delegated to the transport).

pub mod claims;
pub mod dev;
pub mod jwks;
pub mod jwt;
pub mod reason;

use std::future::{ready, Ready};

use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use crate::auth::jwt::{Refused, Verifier};
use crate::auth::reason::{clean_claim, Reason};
use crate::error::ApiError;

pub use crate::domain::Caller;

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(caller_of(req))
    }
}

/// The verified caller of `req`, or why there is none. A refusal is left in the request's
/// extensions as an [`AuthRefusal`], which the request middleware audits before answering.
pub fn caller_of(req: &HttpRequest) -> Result<Caller, ApiError> {
    let verifier = req
        .app_data::<web::Data<Verifier>>()
        .ok_or_else(|| ApiError::Internal("token verifier missing".into()))?;
    let header = req.headers().get(actix_web::http::header::AUTHORIZATION);
    let token = header.map(|h| bearer_token(h.as_bytes()));
    let verified = match token {
        None => Err(Refused {
            reason: Reason::Missing,
            error: ApiError::Unauthenticated("an Authorization: Bearer token is required".into()),
        }),
        Some(None) => Err(Refused {
            reason: Reason::Malformed,
            error: ApiError::Unauthenticated(
                "the Authorization header must be 'Bearer <token>'".into(),
            ),
        }),
        Some(Some(t)) => verifier
            .verify(t)
            .and_then(|caller| over_this_connection(req, caller)),
    };
    verified.map_err(|refused| {
        let claims = token.flatten().map(unverified_claims).unwrap_or_default();
        req.extensions_mut().insert(AuthRefusal {
            reason: refused.reason,
            claimed_sub: claims.0,
            claimed_org: claims.1,
            detail: refused.error.to_string(),
        });
        refused.error
    })
}

/// The caller with its connection's client certificate, if any — refused when the certificate
/// and the token do not belong together (`tls.client_bindings`): a certificate bound to a
/// council carries only that council's tokens, and a council with a bound certificate is
/// accepted only over a connection that presents it, so a council's stolen token is useless
/// without the council's key.
fn over_this_connection(req: &HttpRequest, mut caller: Caller) -> Result<Caller, Refused> {
    let cert = req.conn_data::<crate::tls::ClientCert>();
    let bindings = req.app_data::<web::Data<crate::tls::Bindings>>();
    if let Some(b) = bindings {
        let bound = cert.and_then(|c| b.council_of(c));
        let org = caller.org.as_str();
        let mismatch = match bound {
            Some(ods) => ods != org,
            None => caller.role == crate::domain::Role::Council && b.is_bound(org),
        };
        if mismatch {
            return Err(Refused {
                reason: Reason::CertificateMismatch,
                error: ApiError::Forbidden(match bound {
                    Some(ods) => format!(
                        "this connection's client certificate is bound to {ods}; the token is for {org}"
                    ),
                    None => format!(
                        "{org}'s tokens are accepted only over a connection with {org}'s client certificate"
                    ),
                }),
            });
        }
    }
    caller.system = cert.map(|c| c.subject.clone());
    Ok(caller)
}

/// A refused authentication, for the audit trail (see `audit::refusals`).
#[derive(Debug, Clone)]
pub struct AuthRefusal {
    pub reason: Reason,
    pub claimed_sub: Option<String>,
    pub claimed_org: Option<String>,
    pub detail: String,
}

/// The token of an `Authorization: Bearer …` header; the scheme is case-insensitive (RFC 7235
/// §2.1). `None` when the header is not a bearer credential.
fn bearer_token(header: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

/// `sub` and `org` as an unverified token claims them, cleaned for the audit trail; nothing
/// when the payload cannot be read.
fn unverified_claims(token: &str) -> (Option<String>, Option<String>) {
    use base64::Engine;
    let Some(payload) = token.split('.').nth(1).filter(|p| p.len() <= 16 * 1024) else {
        return (None, None);
    };
    let Ok(bytes) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('='))
    else {
        return (None, None);
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return (None, None);
    };
    let claim = |k: &str| v.get(k).and_then(|c| c.as_str()).and_then(clean_claim);
    (claim("sub"), claim("org"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(b"Bearer abc"), Some("abc"));
        assert_eq!(bearer_token(b"BEARER abc"), Some("abc"));
        assert_eq!(bearer_token(b"bEaReR   abc "), Some("abc"));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer"), None);
        assert_eq!(bearer_token(b"Bearer a b"), None);
    }

    #[test]
    fn unverified_claims_are_read_and_cleaned() {
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"user\u001b1","org":"LA901"}"#);
        let (sub, org) = unverified_claims(&format!("x.{payload}.y"));
        assert_eq!(sub.as_deref(), Some("user1"));
        assert_eq!(org.as_deref(), Some("LA901"));
        assert_eq!(unverified_claims("garbage"), (None, None));
    }
}
