//! Who may do what (DOMAIN.md "Who may do what"; issue: roles clinician, clinician-scheduled,
//! council, auditor, admin). Councils see and change only records they are responsible for.
//! Clinicians reach Patient and Flag data only through the audited look-up.

use crate::auth::Caller;
use crate::domain::Role;
use crate::error::ApiError;

pub fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    match caller.role {
        Role::Admin => Ok(()),
        _ => Err(ApiError::Forbidden(
            "only administrators register and change councils".into(),
        )),
    }
}

/// Councils write Patients and Flags; nobody else does.
pub fn require_council(caller: &Caller) -> Result<(), ApiError> {
    match caller.role {
        Role::Council => Ok(()),
        Role::Clinician | Role::ClinicianScheduled => Err(ApiError::Forbidden(
            "clinicians cannot change CP-IS records; the responsible council maintains them".into(),
        )),
        _ => Err(ApiError::Forbidden(
            "only the responsible council submits or changes CP-IS records".into(),
        )),
    }
}

/// Earlier versions of a Flag may hold what was entered in error: they are for the council and
/// the audit team, not for clinicians.
pub fn require_history_reader(caller: &Caller) -> Result<(), ApiError> {
    match caller.role {
        Role::Council | Role::Admin | Role::Auditor => Ok(()),
        Role::Clinician | Role::ClinicianScheduled => Err(ApiError::Forbidden(
            "clinicians see the current record through the look-up; earlier versions are not shown to them".into(),
        )),
    }
}

/// A council may act on a Flag only when it is the Flag's author.
pub fn require_responsible(caller: &Caller, la_ods: &str) -> Result<(), ApiError> {
    if caller.role != Role::Council || caller.org.as_str() == la_ods {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this record belongs to another council".into(),
        ))
    }
}
