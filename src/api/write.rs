//! The one write path for Patients and Flags: create (FHIR R4 §3.1.0.5, with the conditional
//! create of §3.1.0.5.1), update (§3.1.0.4, with the conditional update of §3.1.0.4.3) and
//! delete (§3.1.0.7). The single-resource interactions and every entry of a transaction or batch
//! Bundle (§3.1.0.11) go through [`execute`], so a record is checked and stored the same way
//! however it arrives.
//!
//! [`execute`] runs on the writer, inside the caller's transaction; it returns rows, and the
//! rendering is done afterwards off the writer thread, which is the server's scarcest resource.

use actix_web::http::StatusCode;
use serde_json::{json, Value};

use crate::api::http::{check_version, history_url, Reply};
use crate::api::rules::{self, Known};
use crate::auth::Caller;
use crate::domain::{FlagStatus, Role};
use crate::error::{ApiError, Issue};
use crate::fhir::flag::FlagInput;
use crate::fhir::patient::PatientInput;
use crate::fhir::{flag, patient};
use crate::nhs_number::NhsNumber;
use crate::state::AppState;
use crate::store::councils::CouncilRow;
use crate::store::flags::{self, FlagFilter, FlagRow};
use crate::store::patients::{self, PatientRow};
use crate::store::DbConn;

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
        let decoded = rules::percent_decode(raw)?;
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
    pub status: StatusCode,
    pub resource: &'static str,
    pub id: String,
    pub version: i64,
    pub updated_at: i64,
    pub shown: Shown,
}

impl Done {
    fn patient(status: StatusCode, row: PatientRow) -> Self {
        Self {
            status,
            resource: "Patient",
            id: row.nhs_number.clone(),
            version: row.version,
            updated_at: row.updated_at,
            shown: Shown::Patient(row),
        }
    }

    fn flag(status: StatusCode, row: FlagRow, council: Option<CouncilRow>) -> Self {
        Self {
            status,
            resource: "Flag",
            id: row.id.clone(),
            version: row.version,
            updated_at: row.updated_at,
            shown: Shown::Flag(row, council.map(|c| c.name)),
        }
    }

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
        match self.body() {
            // Version 0: an answer about no version the caller may see (a trace-only submission).
            Some(body) if self.version == 0 => {
                Reply::ok(body).status(self.status).into_response(req)
            }
            Some(body) => Reply::ok(body)
                .status(self.status)
                .versioned(self.version, self.updated_at)
                .location(location)
                .into_response(req),
            None => Ok(actix_web::HttpResponse::build(self.status)
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
    state
        .store
        .write(move |conn| execute(conn, &caller, &op, today, now, &mut Known::default()))
        .await
}

/// A submitted Flag as a checked input: the domain rules (422), then that the caller is its
/// author's council (403). Every way a Flag arrives goes through here.
pub fn flag_input(state: &AppState, caller: &Caller, value: &Value) -> Result<FlagInput, ApiError> {
    let input = flag::parse(value, state.settings.allow_test_nhs_numbers)
        .map_err(ApiError::Unprocessable)?;
    crate::auth::policy::require_responsible(caller, input.author.as_str())?;
    Ok(input)
}

/// A conditional update's identifier must be the one in the body: anything else would file a
/// plan under a reference the council did not send.
pub fn check_plan_ref(r: &PlanRef, input: &FlagInput) -> Result<(), ApiError> {
    if r.system == input.identifier_system && r.value == input.identifier_value {
        Ok(())
    } else {
        Err(ApiError::Invalid(vec![Issue::new(
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
    op: &Op,
    today: chrono::NaiveDate,
    now: i64,
    known: &mut Known,
) -> Result<Done, ApiError> {
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
                    return Ok(Done::flag(StatusCode::OK, existing, council));
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
                    ApiError::MethodNotAllowed(format!(
                        "Flag/{id} does not exist; Flag ids are assigned by the server, so create it with POST /Flag"
                    ))
                })?),
                FlagTarget::Ref(r) => flags::find_by_identifier(conn, org, &r.system, &r.value)?,
            };
            let Some(current) = current else {
                // FHIR R4 §3.1.0.4.3: a conditional update that matches nothing creates.
                if expected.is_some() {
                    return Err(ApiError::VersionConflict(
                        "If-Match was given but no Flag of yours has this identifier".into(),
                    ));
                }
                if body_id.is_some() {
                    return Err(ApiError::Invalid(vec![Issue::new(
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
                return Err(ApiError::Invalid(vec![Issue::new(
                    "invalid",
                    "Flag.id",
                    format!(
                        "Flag.id '{b}' is not the Flag with this identifier ({})",
                        current.id
                    ),
                )]));
            }
            if caller.role == Role::Council && current.la_ods != org {
                return Err(ApiError::Forbidden(
                    "this Flag belongs to another council".into(),
                ));
            }
            check_version(*expected, current.version)?;
            let next = ended(input.to_row(&current.id, current.version + 1, now), today);
            if next.same_content(&current) {
                let council = known.council(conn, &current.la_ods)?;
                return Ok(Done::flag(StatusCode::OK, current, council));
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
                return Err(ApiError::Conflict(format!(
                    "Flag/{} already has this identifier",
                    other.id
                )));
            }
            flags::update(conn, &next, "PUT")?;
            Ok(Done::flag(StatusCode::OK, next, Some(council)))
        }
        Op::DeleteFlag { target, expected } => {
            let current = match target {
                FlagTarget::Id(id) => flags::get(conn, id)?
                    .ok_or_else(|| ApiError::NotFound(format!("Flag/{id} does not exist")))?,
                FlagTarget::Ref(r) => flags::find_by_identifier(conn, org, &r.system, &r.value)?
                    .ok_or_else(|| {
                        ApiError::NotFound(format!(
                            "no Flag of yours has the identifier {}|{}",
                            r.system, r.value
                        ))
                    })?,
            };
            if current.la_ods != org {
                return Err(ApiError::Forbidden(
                    "this Flag belongs to another council".into(),
                ));
            }
            check_version(*expected, current.version)?;
            let row = withdraw(conn, current, now)?;
            Ok(Done {
                status: StatusCode::NO_CONTENT,
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
    let today = today.format("%Y-%m-%d").to_string();
    if row.status == FlagStatus::Active.as_str()
        && row.period_end.as_deref().is_some_and(|end| *end < *today)
    {
        row.status = FlagStatus::Inactive.as_str().to_owned();
    }
    row
}

fn create_patient(
    conn: &mut DbConn,
    org: &str,
    input: &PatientInput,
    now: i64,
) -> Result<Done, ApiError> {
    let row = input.to_row(org, 1, now);
    if patients::get(conn, &row.nhs_number)?.is_some() {
        return Err(ApiError::Conflict(format!(
            "Patient/{} already exists; update it with PUT Patient/{}",
            row.nhs_number, row.nhs_number
        )));
    }
    patients::insert(conn, &row)?;
    Ok(Done::patient(StatusCode::CREATED, row))
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
) -> Result<Done, ApiError> {
    match patients::get(conn, input.nhs_number.as_str())? {
        Some(current) => {
            let next = input.to_row(&current.created_by, current.version + 1, now);
            let live = flags::search(
                conn,
                &FlagFilter {
                    nhs_number: Some(current.nhs_number.clone()),
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
                return Ok(Done::patient(StatusCode::OK, current));
            }
            patients::update(conn, &next)?;
            Ok(Done::patient(StatusCode::OK, next))
        }
        None => {
            if expected.is_some() {
                return Err(ApiError::VersionConflict(
                    "If-Match was given but the Patient does not exist".into(),
                ));
            }
            let row = input.to_row(org, 1, now);
            patients::insert(conn, &row)?;
            Ok(Done::patient(StatusCode::CREATED, row))
        }
    }
}

/// The answer to a council that holds no live Flag on a person already on CP-IS (see
/// [`put_patient`]): nothing of the stored record — not its version, not its details — is shown.
fn trace_only(
    current: &PatientRow,
    submitted: &PatientRow,
    expected: Option<i64>,
) -> Result<Done, ApiError> {
    if expected.is_some() {
        return Err(ApiError::VersionConflict(
            "If-Match was given but you hold no plan on this person, so there is no version of yours to match".into(),
        ));
    }
    let same_person = submitted.family == current.family
        && submitted.given == current.given
        && submitted.birth_date == current.birth_date;
    if !same_person {
        return Err(ApiError::Unprocessable(vec![Issue::new(
            "business-rule",
            "Patient.name",
            "the name and date of birth do not match those held for this NHS number (CPR01); \
             trace the person on the national demographics service and submit again",
        )]));
    }
    Ok(Done {
        status: StatusCode::OK,
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
) -> Result<Done, ApiError> {
    let not_found = || ApiError::NotFound(format!("Patient/{nhs} is not on CP-IS"));
    let person = patients::get(conn, nhs.as_str())?.ok_or_else(not_found)?;
    let mine = flags::search(
        conn,
        &FlagFilter {
            nhs_number: Some(nhs.as_str().to_owned()),
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
        if f.status != FlagStatus::EnteredInError.as_str() {
            withdraw(conn, f, now)?;
            withdrawn += 1;
        }
    }
    Ok(Done {
        status: StatusCode::OK,
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
) -> Result<Done, ApiError> {
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
        return Err(ApiError::Conflict(format!(
            "Flag/{} already has this identifier; update it with PUT, or send If-None-Exist",
            existing.id
        )));
    }
    flags::insert(conn, &row)?;
    Ok(Done::flag(StatusCode::CREATED, row, Some(council)))
}

/// Marks a Flag entered-in-error as a new version; one already withdrawn is left as it is.
fn withdraw(conn: &mut DbConn, current: FlagRow, now: i64) -> Result<FlagRow, ApiError> {
    if current.status == FlagStatus::EnteredInError.as_str() {
        return Ok(current);
    }
    let mut next = current;
    next.status = FlagStatus::EnteredInError.as_str().to_owned();
    next.version += 1;
    next.updated_at = now;
    flags::update(conn, &next, "DELETE")?;
    Ok(next)
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
