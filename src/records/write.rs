//! The one write procedure for Patients and Flags: create, update and delete, with the
//! reference, uniqueness and demographics rules (DOMAIN.md "Data items", "Retention"; README
//! "Demographics integrity"). The single-resource interactions (FHIR R4 §3.1.0.4, §3.1.0.5,
//! §3.1.0.7, with their conditional forms) and every entry of a transaction or batch Bundle
//! (§3.1.0.11) go through [`execute`], so a record is checked and stored the same way however
//! it arrives.
//!
//! [`execute`] runs on the writer, inside the caller's transaction; it returns rows, and the
//! rendering is done afterwards by `api`, off the writer thread, which is the server's scarcest
//! resource.

use crate::domain::{Caller, FlagStatus};
use crate::error::Issue;
use crate::fhir::flag::FlagInput;
use crate::fhir::patient::PatientInput;
use crate::nhs_number::NhsNumber;
use crate::records::policy::Scope;
use crate::records::rules::{self, Known};
use crate::records::RecordError;
use crate::store::councils::CouncilRow;
use crate::store::flags::{self, FlagFilter, FlagRow};
use crate::store::patients::{self, PatientRow};
use crate::store::DbConn;

/// What a write did, which `api` says as an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// A new record (201).
    Created,
    /// Changed, unchanged, or an existing record returned (200).
    Ok,
    /// Removed; nothing to show (204).
    NoContent,
}

/// A council's own reference for a plan: `Flag.identifier` (`system|value`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlanRef {
    pub system: String,
    pub value: String,
}

impl PlanRef {
    /// Parses the `identifier=system|value` search that conditional interactions carry
    /// (`If-None-Exist`, `PUT Flag?…`, `DELETE Flag?…`); `None` when it is anything else.
    pub fn from_query(query: &str) -> Option<Self> {
        let raw = query.trim_start_matches('?').strip_prefix("identifier=")?;
        if raw.contains('&') {
            return None;
        }
        let decoded = crate::fhir::percent::decode(raw)?;
        let (system, value) = decoded.split_once('|')?;
        (!system.is_empty() && !value.is_empty()).then(|| Self {
            system: system.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// How a Flag to change or delete is named.
#[derive(Debug, Clone)]
pub enum FlagTarget {
    Id(String),
    /// Conditional: the caller's Flag with this plan reference.
    Ref(PlanRef),
}

/// One change to make, already parsed and checked against the profile.
#[derive(Debug, Clone)]
pub enum Op {
    CreatePatient(PatientInput),
    /// Create-or-update by NHS number (the Patient id).
    PutPatient {
        expected: Option<i64>,
        input: PatientInput,
        /// Plans that ended before this date are past retention (see [`put_patient`]).
        visible_since: String,
    },
    /// Withdraws the caller's records about the person.
    DeletePatient(NhsNumber),
    CreateFlag {
        /// `If-None-Exist`: return the caller's existing Flag with this reference instead.
        condition: Option<PlanRef>,
        input: FlagInput,
        /// Assigned before the write so a Bundle can resolve references to it.
        new_id: String,
    },
    UpdateFlag {
        target: FlagTarget,
        /// The id the body carried, which must name the same Flag.
        body_id: Option<String>,
        expected: Option<i64>,
        input: FlagInput,
        /// Used when a conditional update finds nothing and so creates.
        new_id: String,
    },
    DeleteFlag {
        target: FlagTarget,
        expected: Option<i64>,
    },
}

impl Op {
    /// The order a Bundle applies its entries in: deletes, then people, then plans — FHIR's
    /// DELETE-before-POST-before-PUT (§3.1.0.11.2) adjusted so a plan always finds its person,
    /// whichever interaction the person arrived by. A transaction refuses entries that touch
    /// the same record twice, so the order cannot change its outcome.
    pub fn phase(&self) -> u8 {
        match self {
            Op::DeletePatient(_) | Op::DeleteFlag { .. } => 0,
            Op::CreatePatient(_) | Op::PutPatient { .. } => 1,
            Op::CreateFlag { .. } | Op::UpdateFlag { .. } => 2,
        }
    }

    /// What record the change touches, for the transaction's overlap check.
    pub fn touches(&self) -> Vec<String> {
        let flag_target = |t: &FlagTarget| match t {
            FlagTarget::Id(id) => format!("Flag/{id}"),
            FlagTarget::Ref(r) => format!("Flag?identifier={}|{}", r.system, r.value),
        };
        let plan = |i: &FlagInput| {
            format!(
                "Flag?identifier={}|{}",
                i.identifier_system, i.identifier_value
            )
        };
        match self {
            Op::CreatePatient(i) | Op::PutPatient { input: i, .. } => {
                vec![format!("Patient/{}", i.nhs_number)]
            }
            Op::DeletePatient(n) => vec![format!("Patient/{n}")],
            Op::CreateFlag { input, .. } => vec![plan(input)],
            Op::UpdateFlag { target, input, .. } => {
                let mut v = vec![flag_target(target), plan(input)];
                v.dedup();
                v
            }
            Op::DeleteFlag { target, .. } => vec![flag_target(target)],
        }
    }
}

/// What a write shows the caller, rendered after the commit.
#[derive(Debug, Clone)]
pub enum Shown {
    Patient(PatientRow),
    /// The Flag and its council's name (the author's display).
    Flag(FlagRow, Option<String>),
    /// An explanation instead of a resource (a delete that keeps data for audit).
    Note(String),
    Nothing,
}

/// The result of one write.
#[derive(Debug, Clone)]
pub struct Done {
    pub status: Written,
    pub resource: &'static str,
    pub id: String,
    pub version: i64,
    pub updated_at: i64,
    pub shown: Shown,
}

impl Done {
    fn patient(status: Written, row: PatientRow) -> Self {
        Self {
            status,
            resource: "Patient",
            id: row.nhs_number.clone(),
            version: row.version,
            updated_at: row.updated_at,
            shown: Shown::Patient(row),
        }
    }

    fn flag(status: Written, row: FlagRow, council: Option<CouncilRow>) -> Self {
        Self {
            status,
            resource: "Flag",
            id: row.id.clone(),
            version: row.version,
            updated_at: row.updated_at,
            shown: Shown::Flag(row, council.map(|c| c.name)),
        }
    }
}

/// A conditional update's identifier must be the one in the body: anything else would file a
/// plan under a reference the council did not send.
pub fn check_plan_ref(r: &PlanRef, input: &FlagInput) -> Result<(), RecordError> {
    if r.system == input.identifier_system && r.value == input.identifier_value {
        Ok(())
    } else {
        Err(RecordError::Invalid(vec![Issue::new(
            "invalid",
            "Flag.identifier[0]",
            format!(
                "the identifier in the request ({}|{}) must equal Flag.identifier[0] ({}|{})",
                r.system, r.value, input.identifier_system, input.identifier_value
            ),
        )]))
    }
}

/// Applies one change inside the caller's transaction. `today` decides whether a plan has
/// ended (DOMAIN.md "Retention": a plan whose end date has passed is shown `inactive`).
pub fn execute(
    conn: &mut DbConn,
    caller: &Caller,
    scope: &Scope,
    op: &Op,
    today: chrono::NaiveDate,
    now: i64,
    known: &mut Known,
) -> Result<Done, RecordError> {
    let org = caller.org.as_str();
    match op {
        Op::CreatePatient(input) => {
            let done = create_patient(conn, org, input, now)?;
            known.people.insert(done.id.clone());
            Ok(done)
        }
        Op::PutPatient {
            expected,
            input,
            visible_since,
        } => {
            let done = put_patient(conn, org, *expected, input, visible_since, now)?;
            known.people.insert(done.id.clone());
            Ok(done)
        }
        Op::DeletePatient(nhs) => delete_patient(conn, org, nhs, now),
        Op::CreateFlag {
            condition,
            input,
            new_id,
        } => {
            if let Some(c) = condition {
                if let Some(existing) = flags::find_by_identifier(conn, org, &c.system, &c.value)? {
                    let council = known.council(conn, &existing.la_ods)?;
                    return Ok(Done::flag(Written::Ok, existing, council));
                }
            }
            create_flag(
                conn,
                ended(input.to_row(new_id, 1, now), today),
                false,
                known,
            )
        }
        Op::UpdateFlag {
            target,
            body_id,
            expected,
            input,
            new_id,
        } => {
            let current = match target {
                FlagTarget::Id(id) => Some(flags::get(conn, id)?.ok_or_else(|| {
                    RecordError::MethodNotAllowed(format!(
                        "Flag/{id} does not exist; Flag ids are assigned by the server, so create it with POST /Flag"
                    ))
                })?),
                FlagTarget::Ref(r) => flags::find_by_identifier(conn, org, &r.system, &r.value)?,
            };
            let Some(current) = current else {
                // FHIR R4 §3.1.0.4.3: a conditional update that matches nothing creates.
                if expected.is_some() {
                    return Err(RecordError::VersionConflict(
                        "If-Match was given but no Flag of yours has this identifier".into(),
                    ));
                }
                if body_id.is_some() {
                    return Err(RecordError::Invalid(vec![Issue::new(
                        "invalid",
                        "Flag.id",
                        "no Flag has this identifier, so the body must not carry an id: the server assigns it",
                    )]));
                }
                // The plan reference was just looked up and is free.
                return create_flag(
                    conn,
                    ended(input.to_row(new_id, 1, now), today),
                    true,
                    known,
                );
            };
            if let Some(b) = body_id.as_ref().filter(|b| **b != current.id) {
                return Err(RecordError::Invalid(vec![Issue::new(
                    "invalid",
                    "Flag.id",
                    format!(
                        "Flag.id '{b}' is not the Flag with this identifier ({})",
                        current.id
                    ),
                )]));
            }
            if !scope.covers_council(&current.la_ods) {
                return Err(RecordError::Forbidden(
                    "this Flag belongs to another council".into(),
                ));
            }
            check_version(*expected, current.version)?;
            let next = ended(input.to_row(&current.id, current.version + 1, now), today);
            if next.same_content(&current) {
                let council = known.council(conn, &current.la_ods)?;
                return Ok(Done::flag(Written::Ok, current, council));
            }
            let council = rules::check_flag_references(conn, &next, known)?;
            if let Some(other) = flags::find_by_identifier(
                conn,
                &next.la_ods,
                &next.local_ref_system,
                &next.local_ref_value,
            )?
            .filter(|f| f.id != next.id)
            {
                return Err(RecordError::Conflict(format!(
                    "Flag/{} already has this identifier",
                    other.id
                )));
            }
            flags::update(conn, &next, "PUT")?;
            Ok(Done::flag(Written::Ok, next, Some(council)))
        }
        Op::DeleteFlag { target, expected } => {
            let current = match target {
                FlagTarget::Id(id) => flags::get(conn, id)?
                    .ok_or_else(|| RecordError::NotFound(format!("Flag/{id} does not exist")))?,
                FlagTarget::Ref(r) => flags::find_by_identifier(conn, org, &r.system, &r.value)?
                    .ok_or_else(|| {
                        RecordError::NotFound(format!(
                            "no Flag of yours has the identifier {}|{}",
                            r.system, r.value
                        ))
                    })?,
            };
            if current.la_ods != org {
                return Err(RecordError::Forbidden(
                    "this Flag belongs to another council".into(),
                ));
            }
            check_version(*expected, current.version)?;
            let row = withdraw(conn, current, now)?;
            Ok(Done {
                status: Written::NoContent,
                resource: "Flag",
                id: row.id,
                version: row.version,
                updated_at: row.updated_at,
                shown: Shown::Nothing,
            })
        }
    }
}

/// A plan whose end date has passed is no longer active (DOMAIN.md "Retention"; the period end
/// is inclusive, so a plan ending today is active until tomorrow).
pub fn ended(mut row: FlagRow, today: chrono::NaiveDate) -> FlagRow {
    let today = today.to_string();
    if row.status == FlagStatus::Active
        && row.period_end.as_deref().is_some_and(|end| *end < *today)
    {
        row.status = FlagStatus::Inactive;
    }
    row
}

fn create_patient(
    conn: &mut DbConn,
    org: &str,
    input: &PatientInput,
    now: i64,
) -> Result<Done, RecordError> {
    let row = input.to_row(org, 1, now);
    if patients::get(conn, &row.nhs_number)?.is_some() {
        return Err(RecordError::Conflict(format!(
            "Patient/{} already exists; update it with PUT Patient/{}",
            row.nhs_number, row.nhs_number
        )));
    }
    patients::insert(conn, &row)?;
    Ok(Done::patient(Written::Created, row))
}

/// Create-or-update of a person's demographics, under the demographics rule (README
/// "Demographics integrity"):
/// - a person not on CP-IS is created by whichever council submits them (201);
/// - a person's stored demographics — what clinicians see — change only at the request of a
///   council holding a live Flag on them (not withdrawn, not past retention), or, while no
///   council holds one (clinicians see nothing), of the council that submitted them;
/// - any other council's submission of a person already on CP-IS changes nothing: when its
///   name and date of birth match those held it is accepted as the trace it is (200, an
///   informational outcome, no resource, no version), so the council can go on to add its own
///   plan; when they differ it is refused (422), as the national service refuses a record
///   whose demographics do not match. The answer is the same whether another council holds a
///   plan, held one, or holds none, so it tells nothing about other councils' records.
fn put_patient(
    conn: &mut DbConn,
    org: &str,
    expected: Option<i64>,
    input: &PatientInput,
    visible_since: &str,
    now: i64,
) -> Result<Done, RecordError> {
    match patients::get(conn, input.nhs_number.as_str())? {
        Some(current) => {
            let next = input.to_row(&current.created_by, current.version + 1, now);
            let live = flags::of_person(
                conn,
                &current.nhs_number,
                &FlagFilter {
                    visible_since: Some(visible_since.to_owned()),
                    ..FlagFilter::default()
                },
            )?;
            // A council's own submission that nobody has a live plan on yet (so clinicians see
            // nothing of it) stays its own to correct.
            let holds = live.iter().any(|f| f.la_ods == org)
                || (live.is_empty() && current.created_by == org);
            if !holds {
                return trace_only(&current, &next, expected);
            }
            check_version(expected, current.version)?;
            if next.same_content(&current) {
                return Ok(Done::patient(Written::Ok, current));
            }
            patients::update(conn, &next)?;
            Ok(Done::patient(Written::Ok, next))
        }
        None => {
            if expected.is_some() {
                return Err(RecordError::VersionConflict(
                    "If-Match was given but the Patient does not exist".into(),
                ));
            }
            let row = input.to_row(org, 1, now);
            patients::insert(conn, &row)?;
            Ok(Done::patient(Written::Created, row))
        }
    }
}

/// The answer to a council that holds no live Flag on a person already on CP-IS (see
/// [`put_patient`]): nothing of the stored record — not its version, not its details — is shown.
fn trace_only(
    current: &PatientRow,
    submitted: &PatientRow,
    expected: Option<i64>,
) -> Result<Done, RecordError> {
    if expected.is_some() {
        return Err(RecordError::VersionConflict(
            "If-Match was given but you hold no plan on this person, so there is no version of yours to match".into(),
        ));
    }
    let same_person = submitted.family == current.family
        && submitted.given == current.given
        && submitted.birth_date == current.birth_date;
    if !same_person {
        return Err(RecordError::Unprocessable(vec![Issue::new(
            "business-rule",
            "Patient.name",
            "the name and date of birth do not match those held for this NHS number (CPR01); \
             trace the person on the national demographics service and submit again",
        )]));
    }
    Ok(Done {
        status: Written::Ok,
        resource: "Patient",
        id: current.nhs_number.clone(),
        version: 0,
        updated_at: 0,
        shown: Shown::Note(
            "this person is already on CP-IS and the name and date of birth match; nothing was \
             changed. A council changes a person's details while it holds a live plan on them, \
             so add your plan (Flag) now"
                .into(),
        ),
    })
}

/// A council withdraws what it holds about a person: each of its Flags becomes
/// entered-in-error. The person's details stay while any Flag refers to them (earlier versions
/// remain readable by the audit team) and leave with the records under the retention rules.
fn delete_patient(
    conn: &mut DbConn,
    org: &str,
    nhs: &NhsNumber,
    now: i64,
) -> Result<Done, RecordError> {
    let not_found = || RecordError::NotFound(format!("Patient/{nhs} is not on CP-IS"));
    let person = patients::get(conn, nhs.as_str())?.ok_or_else(not_found)?;
    let mine = flags::of_person(
        conn,
        nhs.as_str(),
        &FlagFilter {
            council: Some(org.to_owned()),
            ..FlagFilter::default()
        },
    )?;
    if mine.is_empty() && person.created_by != org {
        // As for a person not on CP-IS: nothing is told of other councils' records.
        return Err(not_found());
    }
    let mut withdrawn = 0;
    for f in mine {
        if f.status != FlagStatus::EnteredInError {
            withdraw(conn, f, now)?;
            withdrawn += 1;
        }
    }
    Ok(Done {
        status: Written::Ok,
        resource: "Patient",
        id: person.nhs_number.clone(),
        version: person.version,
        updated_at: person.updated_at,
        shown: Shown::Note(format!(
            "{withdrawn} Flag(s) of {org} for this person are now entered-in-error and hidden from clinicians; \
             the person's details are kept for the audit trail until the retention rules remove them"
        )),
    })
}

/// `reference_free`: the caller has just found no Flag with this plan reference.
fn create_flag(
    conn: &mut DbConn,
    row: FlagRow,
    reference_free: bool,
    known: &mut Known,
) -> Result<Done, RecordError> {
    let council = rules::check_flag_references(conn, &row, known)?;
    let existing = if reference_free {
        None
    } else {
        flags::find_by_identifier(
            conn,
            &row.la_ods,
            &row.local_ref_system,
            &row.local_ref_value,
        )?
    };
    if let Some(existing) = existing {
        return Err(RecordError::Conflict(format!(
            "Flag/{} already has this identifier; update it with PUT, or send If-None-Exist",
            existing.id
        )));
    }
    flags::insert(conn, &row)?;
    Ok(Done::flag(Written::Created, row, Some(council)))
}

/// Marks a Flag entered-in-error as a new version; one already withdrawn is left as it is.
fn withdraw(conn: &mut DbConn, current: FlagRow, now: i64) -> Result<FlagRow, RecordError> {
    if current.status == FlagStatus::EnteredInError {
        return Ok(current);
    }
    let mut next = current;
    next.status = FlagStatus::EnteredInError;
    next.version += 1;
    next.updated_at = now;
    flags::update(conn, &next, "DELETE")?;
    Ok(next)
}

/// `If-Match`: the version the caller last saw must be the current one (FHIR R4 §3.1.0.4.2).
pub fn check_version(expected: Option<i64>, current: i64) -> Result<(), RecordError> {
    match expected {
        Some(v) if v != current => Err(RecordError::VersionConflict(format!(
            "If-Match names version {v} but the current version is {current}; read the resource again and reapply your change"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_references_parse_from_conditional_queries() {
        let r = PlanRef::from_query("identifier=https%3A%2F%2Fla.example%2Fplan%7CP-1");
        assert_eq!(
            r,
            Some(PlanRef {
                system: "https://la.example/plan".into(),
                value: "P-1".into()
            })
        );
        assert_eq!(
            PlanRef::from_query("?identifier=s|v").map(|r| r.value),
            Some("v".into())
        );
        assert!(PlanRef::from_query("name=x").is_none());
        assert!(PlanRef::from_query("identifier=|v").is_none());
        assert!(PlanRef::from_query("identifier=s|v&status=active").is_none());
    }
}
