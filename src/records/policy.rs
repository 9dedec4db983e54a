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
    /// Search the audit trail by date, user, organisation, outcome, purpose or council.
    SearchAuditTrail,
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
    pub const ALL: [Action; 13] = [
        Action::WriteRecords,
        Action::ManageCouncils,
        Action::ReadRecord,
        Action::SearchRecords,
        Action::SearchPatientsByName,
        Action::ReadFlagHistory,
        Action::ReadAccessHistory,
        Action::ReadAuditEvent,
        Action::SearchAuditTrail,
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

/// What SMART scope an action needs (any one of the resources with any one of the
/// permissions), and the refusal naming it.
fn needs(action: Action) -> (&'static [&'static str], &'static str, &'static str) {
    use Action as A;
    match action {
        A::WriteRecords => (&["Patient", "Flag"], "cud", "the token's SMART scopes do not allow this: writing records needs a Patient or Flag scope with c, u or d"),
        A::ManageCouncils => (&["Organization"], "cu", "the token's SMART scopes do not allow this: changing councils needs an Organization scope with c or u"),
        A::ReadRecord | A::ReadFlagHistory => (&["Patient", "Flag"], "r", "the token's SMART scopes do not allow this: reading records needs a Patient or Flag scope with r"),
        A::SearchRecords => (&["Patient", "Flag"], "s", "the token's SMART scopes do not allow this: the look-up needs a Flag or Patient scope with s"),
        A::SearchPatientsByName => (&["Patient"], "s", "the token's SMART scopes do not allow this: searching people needs a Patient scope with s"),
        A::ReadAccessHistory | A::ListSystemEvents | A::SearchAuditTrail => (&["AuditEvent"], "s", "the token's SMART scopes do not allow this: searching the audit trail needs an AuditEvent scope with s"),
        A::ReadAuditEvent => (&["AuditEvent"], "r", "the token's SMART scopes do not allow this: reading an AuditEvent needs an AuditEvent scope with r"),
        A::ManageSubscriptions => (&["Subscription"], "cruds", "the token's SMART scopes do not allow this: subscriptions need a Subscription scope"),
        A::RunLifecycle => (&["Flag"], "d", "the token's SMART scopes do not allow this: running the record lifecycle needs a Flag scope with d"),
        A::ReadCouncils => (&["Organization"], "rs", "the token's SMART scopes do not allow this: reading councils needs an Organization scope with r or s"),
    }
}

/// The table, then the token's SMART scopes, which can only narrow it. Clinicians' reads are
/// user-present (DOMAIN.md: no unattended access to children's data), so only `user/` scopes
/// count for them; other roles may hold `user/` or `system/` scopes. `patient/` scopes grant
/// nothing here: this service has no launch-patient context.
pub fn decide(caller: &Caller, action: Action) -> Result<Scope, Denied> {
    let scope = by_role(caller, action)?;
    if let Some(grants) = &caller.scopes {
        use crate::domain::GrantContext as G;
        let contexts: &[G] = match caller.role {
            Role::Clinician | Role::ClinicianScheduled => &[G::User],
            _ => &[G::User, G::System],
        };
        let (resources, permissions, why) = needs(action);
        if !grants
            .iter()
            .any(|g| g.allows(contexts, resources, permissions))
        {
            return Err(Denied(why));
        }
    }
    Ok(scope)
}

/// The role table.
fn by_role(caller: &Caller, action: Action) -> Result<Scope, Denied> {
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

        (A::SearchAuditTrail, R::Council) => Ok(own()),
        (A::SearchAuditTrail, R::Auditor | R::Admin) => Ok(Scope::All),
        (A::SearchAuditTrail, _) => Err(Denied(
            "only the audit team (and a council, for its own records) searches the audit trail; \
             clinicians see a person's access history by NHS number",
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
            scopes: None,
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
        (Action::SearchAuditTrail, "--caa"),
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

    fn scoped(role: Role, scopes: &str) -> Caller {
        Caller {
            scopes: Some(
                scopes
                    .split_whitespace()
                    .filter_map(crate::domain::Grant::parse)
                    .collect(),
            ),
            ..caller(role)
        }
    }

    #[test]
    fn smart_scopes_only_narrow_what_the_role_allows() {
        use Action as A;
        let reader = scoped(Role::Council, "system/Flag.rs system/Patient.rs");
        assert!(decide(&reader, A::ReadRecord).is_ok());
        assert!(decide(&reader, A::SearchRecords).is_ok());
        assert!(decide(&reader, A::WriteRecords).is_err());
        let writer = scoped(Role::Council, "system/Flag.cruds system/Patient.cu");
        assert!(decide(&writer, A::WriteRecords).is_ok());
        // A scope cannot add what the role lacks.
        let bold = scoped(Role::Clinician, "user/*.cruds");
        assert!(decide(&bold, A::WriteRecords).is_err());
        assert!(decide(&bold, A::SearchRecords).is_ok());
        // Clinicians' reads are user-present: system scopes give them nothing.
        let unattended = scoped(Role::Clinician, "system/Flag.rs");
        assert!(decide(&unattended, A::SearchRecords).is_err());
        // v1 scopes, and patient scopes (no launch context here).
        assert!(decide(
            &scoped(Role::Auditor, "system/AuditEvent.read"),
            A::ReadAccessHistory
        )
        .is_ok());
        assert!(decide(
            &scoped(Role::Auditor, "patient/AuditEvent.rs"),
            A::ReadAccessHistory
        )
        .is_err());
    }

    #[test]
    fn scopes_that_are_not_smart_resource_scopes_are_ignored() {
        use crate::domain::Grant;
        for s in [
            "openid",
            "profile",
            "nationalrbacaccess",
            "launch/patient",
            "user/Flag",
            "user/Flag.x",
            "user/Fl-ag.r",
            "admin/Flag.r",
        ] {
            assert_eq!(Grant::parse(s), None, "{s}");
        }
        let g = Grant::parse("user/Flag.rs?category=x").unwrap();
        assert_eq!(
            (g.resource.as_deref(), g.permissions.as_str()),
            (Some("Flag"), "rs")
        );
    }
}
