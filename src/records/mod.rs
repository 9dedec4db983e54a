//! The domain layer: what CP-IS does with its records, whatever the way in (HTTP, a Bundle, the
//! CSV loader, the scheduler). It owns the write procedures and their reference, uniqueness and
//! demographics rules (`write`, `rules`), who may do what (`policy`), and the record lifecycle
//! (`lifecycle`; DOMAIN.md "Retention").
//!
//! Layering: `records` uses `store` (queries), `fhir` (parsed inputs) and `domain`; it knows
//! nothing of HTTP. Its errors are [`RecordError`], which `api` turns into OperationOutcomes in
//! one `From`.

pub mod fixture;
pub mod lifecycle;
pub mod policy;
pub mod rules;
pub mod write;

use crate::error::Issue;
use crate::store::StoreError;

/// Why a record could not be written or read as asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    /// The request is malformed (400).
    #[error("invalid: {0:?}")]
    Invalid(Vec<Issue>),
    /// Well-formed, but against a rule (422).
    #[error("unprocessable: {0:?}")]
    Unprocessable(Vec<Issue>),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The interaction does not apply to this record (405: for example a PUT to a Flag id the
    /// server never assigned).
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
    /// The record already exists, or its identifier is taken (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// `If-Match` did not match (412).
    #[error("version conflict: {0}")]
    VersionConflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl crate::store::JobError for RecordError {
    fn is_transient(&self) -> bool {
        matches!(self, RecordError::Store(e) if e.is_transient())
    }

    fn is_conflict(&self) -> bool {
        matches!(self, RecordError::Store(StoreError::Conflict(_)))
    }
}

impl From<diesel::result::Error> for RecordError {
    fn from(e: diesel::result::Error) -> Self {
        RecordError::Store(e.into())
    }
}

impl From<policy::Denied> for RecordError {
    fn from(d: policy::Denied) -> Self {
        RecordError::Forbidden(d.0.to_owned())
    }
}

/// The domain layer's refusals, as HTTP sees them.
impl From<RecordError> for crate::error::ApiError {
    fn from(e: RecordError) -> Self {
        use RecordError as R;
        match e {
            R::Invalid(issues) => crate::error::ApiError::Invalid(issues),
            R::Unprocessable(issues) => crate::error::ApiError::Unprocessable(issues),
            R::Forbidden(why) => crate::error::ApiError::Forbidden(why),
            R::NotFound(why) => crate::error::ApiError::NotFound(why),
            R::MethodNotAllowed(why) => crate::error::ApiError::MethodNotAllowed(why),
            R::Conflict(why) => crate::error::ApiError::Conflict(why),
            R::VersionConflict(why) => crate::error::ApiError::VersionConflict(why),
            R::Store(e) => e.into(),
        }
    }
}

impl From<policy::Denied> for crate::error::ApiError {
    fn from(d: policy::Denied) -> Self {
        crate::error::ApiError::Forbidden(d.0.to_owned())
    }
}
