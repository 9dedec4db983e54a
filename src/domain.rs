//! The small CP-IS domain the FHIR facade is built over (DESIGN.md "Domain tables").
//!
//! Values here are already valid: they are produced by parsing at the edge (FHIR bodies, tokens,
//! configuration) and never re-validated downstream. The code lists are DOMAIN.md "Codes and
//! identifier systems".

use std::fmt;

pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
pub const ODS_ORG_SYSTEM: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
pub const SDS_USER_SYSTEM: &str = "https://fhir.nhs.uk/Id/sds-user-id";
pub const SNOMED_SYSTEM: &str = "http://snomed.info/sct";
pub const FLAG_CATEGORY_SYSTEM: &str =
    "https://fhir.nhs.uk/England/CodeSystem/England-FlagCategoryPatient";
pub const FLAG_CATEGORY_CODE: &str = "child-protection-information-system-flag";
pub const VERIFICATION_EXTENSION: &str =
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus";
pub const VERIFICATION_SYSTEM: &str =
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland";
pub const ORG_ROLE_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/organisation-role";
pub const COUNCIL_ROLE_CODE: &str = "RO141";
/// Canonical base of this project's own conformance resources (`fhir-profiles/`).
pub const PROFILE_BASE: &str = "https://cpis-fhir.example.org/fhir";
pub const CONTACT_PURPOSE_SYSTEM: &str =
    "https://cpis-fhir.example.org/fhir/CodeSystem/CPIS-CouncilContactPurpose";

/// The three kinds of CP-IS record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlanType {
    /// Child protection plan (legacy v3 `CPPI`).
    ChildProtection,
    /// Looked-after child (legacy v3 `LACI`).
    LookedAfter,
    /// Unborn child protection plan, held on the mother's record (legacy v3 `UCPI`).
    UnbornChildProtection,
}

impl PlanType {
    pub const ALL: [PlanType; 3] = [
        PlanType::ChildProtection,
        PlanType::LookedAfter,
        PlanType::UnbornChildProtection,
    ];

    pub fn snomed(self) -> &'static str {
        match self {
            PlanType::ChildProtection => "342191000000101",
            PlanType::LookedAfter => "764841000000100",
            PlanType::UnbornChildProtection => "818901000000100",
        }
    }

    pub fn display(self) -> &'static str {
        match self {
            PlanType::ChildProtection => "Subject to child protection plan",
            PlanType::LookedAfter => "Looked after child",
            PlanType::UnbornChildProtection => "Unborn child subject to child protection plan",
        }
    }

    pub fn from_snomed(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.snomed() == code)
    }
}

/// `Flag.status` (FHIR R4 flag-status value set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagStatus {
    Active,
    Inactive,
    EnteredInError,
}

impl FlagStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FlagStatus::Active => "active",
            FlagStatus::Inactive => "inactive",
            FlagStatus::EnteredInError => "entered-in-error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(FlagStatus::Active),
            "inactive" => Some(FlagStatus::Inactive),
            "entered-in-error" => Some(FlagStatus::EnteredInError),
            _ => None,
        }
    }
}

/// An ODS organisation code: 3 to 10 upper-case letters and digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OdsCode(String);

impl OdsCode {
    pub fn parse(s: &str) -> Option<Self> {
        let ok = (3..=10).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OdsCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A caller's role, carried in the token (DOMAIN.md "Who may do what").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Unscheduled care (activity B0107): look-ups notify the council.
    Clinician,
    /// Scheduled care (activity B0170): silent reads.
    ClinicianScheduled,
    /// A council's case system: submits and maintains its own records.
    Council,
    /// The audit team: reads the audit trail.
    Auditor,
    /// Service administrators: register councils.
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Clinician,
        Role::ClinicianScheduled,
        Role::Council,
        Role::Auditor,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Clinician => "clinician",
            Role::ClinicianScheduled => "clinician-scheduled",
            Role::Council => "council",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The role's display in CodeSystem CPIS-Role (`fhir-profiles/`).
    pub fn description(self) -> &'static str {
        match self {
            Role::Clinician => "Clinician in unscheduled care (B0107)",
            Role::ClinicianScheduled => "Clinician in scheduled care (B0170, silent reads)",
            Role::Council => "Council case system",
            Role::Auditor => "Audit team",
            Role::Admin => "Service administrator",
        }
    }

    /// Unscheduled care: its accesses are unscheduled unless the request says otherwise, go into
    /// the person's access history and are notified to the council (DOMAIN.md "Who may do
    /// what").
    pub fn is_unscheduled_care(self) -> bool {
        self == Role::Clinician
    }

    /// Care-setting roles: they reach records only through the audited look-up.
    pub fn is_clinician(self) -> bool {
        matches!(self, Role::Clinician | Role::ClinicianScheduled)
    }
}

/// `Subscription.status` (FHIR R4 subscription-status value set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionStatus {
    /// Accepted; the handshake has not yet succeeded.
    Requested,
    Active,
    /// Deliveries are failing; they are still retried.
    Error,
    /// Stopped by its council (or ended): nothing is delivered.
    Off,
}

impl SubscriptionStatus {
    pub const ALL: [SubscriptionStatus; 4] = [
        SubscriptionStatus::Requested,
        SubscriptionStatus::Active,
        SubscriptionStatus::Error,
        SubscriptionStatus::Off,
    ];

    /// The statuses whose subscriptions are notified (the notification trigger's list too).
    pub const LIVE: [SubscriptionStatus; 3] = [
        SubscriptionStatus::Requested,
        SubscriptionStatus::Active,
        SubscriptionStatus::Error,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Requested => "requested",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Error => "error",
            SubscriptionStatus::Off => "off",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// The verified caller of a request (made from a bearer token by `auth`).
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
    /// The verified client certificate of the connection (mutual TLS), as `CN=…`.
    pub system: Option<String>,
    /// The token's SMART on FHIR resource scopes, if it carries any: they narrow what the role
    /// allows (`records::policy`); none means the role alone decides.
    pub scopes: Option<Vec<Grant>>,
}

/// Who a SMART scope is for (SMART App Launch v2 §3.3 "Scopes for requesting clinical data").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantContext {
    /// `patient/`: within a launch patient's compartment (this service has no launch context).
    Patient,
    /// `user/`: what the signed-in user may see.
    User,
    /// `system/`: a backend service, no user present.
    System,
}

/// One SMART resource scope: `{context}/{resource or *}.{cruds}` (v2), or `.read`/`.write`/`.*`
/// (v1, read as `rs`, `cud`, `cruds`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub context: GrantContext,
    /// `None` for `*`.
    pub resource: Option<String>,
    /// The permissions, as a subset of "cruds".
    pub permissions: String,
}

impl Grant {
    /// Reads one scope; `None` for scopes that are not SMART resource scopes (`openid`,
    /// `profile`, `launch/…`, CIS2's `nationalrbacaccess`…), which narrow nothing.
    pub fn parse(scope: &str) -> Option<Self> {
        let (context, rest) = scope.split_once('/')?;
        let context = match context {
            "patient" => GrantContext::Patient,
            "user" => GrantContext::User,
            "system" => GrantContext::System,
            _ => return None,
        };
        // v2 scopes may carry search restrictions (`?category=…`); they only narrow further,
        // so this server reads the scope without them (and grants nothing more).
        let rest = rest.split('?').next().unwrap_or_default();
        let (resource, perms) = rest.rsplit_once('.')?;
        let resource = match resource {
            "*" => None,
            r if !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphabetic()) => Some(r.to_owned()),
            _ => return None,
        };
        let permissions = match perms {
            "read" => "rs".to_owned(),
            "write" => "cud".to_owned(),
            "*" => "cruds".to_owned(),
            p if !p.is_empty() && p.chars().all(|c| "cruds".contains(c)) => p.to_owned(),
            _ => return None,
        };
        Some(Self {
            context,
            resource,
            permissions,
        })
    }

    /// Whether this scope grants any of `permissions` on any of `resources`, for `context`.
    pub fn allows(&self, contexts: &[GrantContext], resources: &[&str], permissions: &str) -> bool {
        contexts.contains(&self.context)
            && self
                .resource
                .as_deref()
                .is_none_or(|r| resources.contains(&r))
            && self.permissions.chars().any(|p| permissions.contains(p))
    }
}

impl Caller {
    /// The calling system as AuditEvents name it: the connection's client certificate and the
    /// token's issuer, or the issuer alone.
    pub fn client(&self) -> String {
        match &self.system {
            Some(s) => format!("{s} (token from {})", self.issuer),
            None => self.issuer.clone(),
        }
    }
}

/// The role recorded on AuditEvents written by the service itself (the record lifecycle).
pub const SYSTEM_ROLE: &str = "system";
/// The role recorded on AuditEvents of refused authentications (no verified caller).
pub const AUTH_ROLE: &str = "unauthenticated";
/// The role recorded on the misuse watch's warnings (see `audit::watch`).
pub const WATCH_ROLE: &str = "misuse-watch";

/// The time now, injected so that date rules (retention, age 18) are tested at their
/// boundaries.
pub type Clock = std::sync::Arc<dyn Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync>;

/// The real clock.
pub fn system_clock() -> Clock {
    std::sync::Arc::new(chrono::Utc::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_types_round_trip_through_their_snomed_codes() {
        for p in PlanType::ALL {
            assert_eq!(PlanType::from_snomed(p.snomed()), Some(p));
        }
        assert_eq!(PlanType::from_snomed("12345"), None);
    }

    #[test]
    fn ods_codes_are_upper_case_alphanumerics() {
        assert!(OdsCode::parse("LA901").is_some());
        assert!(OdsCode::parse("la901").is_none());
        assert!(OdsCode::parse("L").is_none());
        assert!(OdsCode::parse("LA 901").is_none());
    }
}
