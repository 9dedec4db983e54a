//! Who may do what: one table (DOMAIN.md "Who may do what"; roles clinician,
//! clinician-scheduled, council, auditor, admin).
//!
//! Every handler asks [`decide`] for its [`Action`] and gets back the [`Scope`] its queries
//! must keep to, or the refusal to answer with. Nothing else in the server matches on a
//! caller's role to allow or refuse: a new role, or scopes from a SMART token, change this
//! table only.

use crate::domain::{Caller, OdsCode, Role};

/// Everything a caller can ask the server to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Submit, change or remove Patients and Flags (single resources or Bundles).
    WriteRecords,
    /// Register or change a council (Organization).
    ManageCouncils,
    /// Read a Patient or a Flag by id.
    ReadRecord,
    /// Search Flags (the look-up) or Patients by NHS number.
    SearchRecords,
    /// Search Patients by name or date of birth (a council finding its own people).
    SearchPatientsByName,
    /// Earlier versions of a Flag (vread, `_history`).
    ReadFlagHistory,
    /// A person's access history (`AuditEvent?patient…`).
    ReadAccessHistory,
    /// One AuditEvent by id.
    ReadAuditEvent,
    /// The audit trail's system events: lifecycle runs, refused authentications.
    ListSystemEvents,
    /// Create, read, change and remove Subscriptions.
    ManageSubscriptions,
    /// Run the record lifecycle now (`$purge`).
    RunLifecycle,
    /// Read the list of councils.
    ReadCouncils,
}

impl Action {
    pub const ALL: [Action; 12] = [
        Action::WriteRecords,
        Action::ManageCouncils,
        Action::ReadRecord,
        Action::SearchRecords,
        Action::SearchPatientsByName,
        Action::ReadFlagHistory,
        Action::ReadAccessHistory,
        Action::ReadAuditEvent,
        Action::ListSystemEvents,
        Action::ManageSubscriptions,
        Action::RunLifecycle,
        Action::ReadCouncils,
    ];
}

/// What an allowed action may reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Only what this council is responsible for: Flags it authored, people it registered or
    /// holds a Flag on, accesses to those, its own subscriptions.
    OwnCouncil(OdsCode),
    /// What a clinician may see: one person at a time, by NHS number, current records that are
    /// not entered in error and have not passed their retention (DOMAIN.md "Retention").
    ClinicianVisible,
    /// Everything the action covers.
    All,
}

impl Scope {
    /// Whether a record the council `la_ods` is responsible for is within this scope.
    pub fn covers_council(&self, la_ods: &str) -> bool {
        match self {
            Scope::OwnCouncil(own) => own.as_str() == la_ods,
            Scope::ClinicianVisible | Scope::All => true,
        }
    }

    /// The council this scope is limited to, if any.
    pub fn council(&self) -> Option<&OdsCode> {
        match self {
            Scope::OwnCouncil(own) => Some(own),
            _ => None,
        }
    }

    pub fn is_clinician(&self) -> bool {
        matches!(self, Scope::ClinicianVisible)
    }
}

/// Why an action was refused: said to the caller (403).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub &'static str);

/// The table.
pub fn decide(caller: &Caller, action: Action) -> Result<Scope, Denied> {
    use Action as A;
    use Role as R;
    let own = || Scope::OwnCouncil(caller.org.clone());
    let clinician = matches!(caller.role, R::Clinician | R::ClinicianScheduled);
    match (action, caller.role) {
        (A::WriteRecords, R::Council) => Ok(own()),
        (A::WriteRecords, _) if clinician => Err(Denied(
            "clinicians cannot change CP-IS records; the responsible council maintains them",
        )),
        (A::WriteRecords, _) => Err(Denied(
            "only the responsible council submits or changes CP-IS records",
        )),

        (A::ManageCouncils, R::Admin) => Ok(Scope::All),
        (A::ManageCouncils, _) => Err(Denied(
            "only administrators register and change councils",
        )),

        (A::ReadRecord | A::SearchRecords, R::Council) => Ok(own()),
        (A::ReadRecord | A::SearchRecords, _) if clinician => Ok(Scope::ClinicianVisible),
        (A::ReadRecord | A::SearchRecords, R::Auditor | R::Admin) => Ok(Scope::All),

        (A::SearchPatientsByName, R::Council) => Ok(own()),
        (A::SearchPatientsByName, _) => Err(Denied(
            "searching by name or date of birth is not permitted; search by NHS number",
        )),

        (A::ReadFlagHistory, R::Council) => Ok(own()),
        (A::ReadFlagHistory, R::Auditor | R::Admin) => Ok(Scope::All),
        (A::ReadFlagHistory, _) => Err(Denied(
            "clinicians see the current record through the look-up; earlier versions are not shown to them",
        )),

        (A::ReadAccessHistory, R::Council) => Ok(own()),
        (A::ReadAccessHistory, _) if clinician => Ok(Scope::ClinicianVisible),
        (A::ReadAccessHistory, R::Auditor | R::Admin) => Ok(Scope::All),

        (A::ReadAuditEvent, R::Council) => Ok(own()),
        (A::ReadAuditEvent, R::Auditor | R::Admin) => Ok(Scope::All),
        (A::ReadAuditEvent, _) => Err(Denied(
            "this audit record is not about a record you are responsible for",
        )),

        (A::ListSystemEvents, R::Auditor | R::Admin) => Ok(Scope::All),
        (A::ListSystemEvents, _) => Err(Denied(
            "only the audit team lists the record lifecycle's runs and refused authentications",
        )),

        (A::ManageSubscriptions, R::Council) => Ok(own()),
        (A::ManageSubscriptions, R::Admin) => Ok(Scope::All),
        (A::ManageSubscriptions, _) => Err(Denied(
            "only councils (for themselves) and administrators manage subscriptions",
        )),

        (A::RunLifecycle, R::Admin) => Ok(Scope::All),
        (A::RunLifecycle, _) => Err(Denied("only administrators run the record lifecycle")),

        (A::ReadCouncils, _) => Ok(Scope::All),

        // Unreachable by the arms above (every role of these actions is listed), kept so a new
        // role is refused until the table says otherwise.
        (A::ReadRecord | A::SearchRecords | A::ReadAccessHistory, _) => {
            Err(Denied("this role may not read CP-IS records"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role) -> Caller {
        Caller {
            user_id: "u".into(),
            name: None,
            role,
            org: OdsCode::parse("LA901").unwrap(),
            issuer: "i".into(),
            system: None,
        }
    }

    /// The table, as the product's documentation states it: `c` own council, `v` clinician
    /// view, `a` all, `-` refused. Columns: clinician, clinician-scheduled, council, auditor,
    /// admin.
    const TABLE: &[(Action, &str)] = &[
        (Action::WriteRecords, "--c--"),
        (Action::ManageCouncils, "----a"),
        (Action::ReadRecord, "vvcaa"),
        (Action::SearchRecords, "vvcaa"),
        (Action::SearchPatientsByName, "--c--"),
        (Action::ReadFlagHistory, "--caa"),
        (Action::ReadAccessHistory, "vvcaa"),
        (Action::ReadAuditEvent, "--caa"),
        (Action::ListSystemEvents, "---aa"),
        (Action::ManageSubscriptions, "--c-a"),
        (Action::RunLifecycle, "----a"),
        (Action::ReadCouncils, "aaaaa"),
    ];

    #[test]
    fn every_role_and_action_is_decided_as_the_table_says() {
        let roles = [
            Role::Clinician,
            Role::ClinicianScheduled,
            Role::Council,
            Role::Auditor,
            Role::Admin,
        ];
        assert_eq!(
            TABLE.len(),
            Action::ALL.len(),
            "every action is in the table"
        );
        for (action, row) in TABLE {
            for (role, want) in roles.iter().zip(row.chars()) {
                let c = caller(*role);
                let got = match decide(&c, *action) {
                    Ok(Scope::OwnCouncil(org)) if org == c.org => 'c',
                    Ok(Scope::OwnCouncil(_)) => '?',
                    Ok(Scope::ClinicianVisible) => 'v',
                    Ok(Scope::All) => 'a',
                    Err(_) => '-',
                };
                assert_eq!(got, want, "{action:?} for {role:?}");
            }
        }
    }

    #[test]
    fn a_council_scope_covers_only_its_own_records() {
        let s = Scope::OwnCouncil(caller(Role::Council).org);
        assert!(s.covers_council("LA901"));
        assert!(!s.covers_council("LA902"));
        assert!(Scope::All.covers_council("LA902"));
    }
}
