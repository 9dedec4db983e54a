//! The national APIs' shapes of the same records, so an EPR built for them works here unchanged:
//!
//! - NHS England's CP-IS FHIR R4 API (Consumer implementation guide, "Design/Data-mapping"):
//!   a plan is a `CareTeam` — `category` the SNOMED CT plan type, `period` the plan dates,
//!   `name` the responsible council, `telecom` `use=work` its office-hours number and
//!   `use=mobile` its emergency-duty number; a previous access is an `AuditEvent` whose viewer is
//!   an included `PractitionerRole` (`practitioner.display`, `code.coding.display`,
//!   `organization.display`).
//! - The Patient Flags API (beta): a plan is a `Flag` (CP-IS category code) whose `flag-detail`
//!   extension names a `CarePlan` (category, period, careTeam), whose `CareTeam` is the council
//!   with its two numbers.
//!
//! Every view is rendered from the same Flag row and council row as the Flag look-up, and takes
//! the Flag's id, so the three views name the same plans. Nothing here is stored.

use serde_json::{json, Value};

use crate::domain::{
    PlanType, FLAG_CATEGORY_CODE, FLAG_CATEGORY_SYSTEM, NHS_NUMBER_SYSTEM, ODS_ORG_SYSTEM,
    PROFILE_BASE, SDS_USER_SYSTEM, SNOMED_SYSTEM,
};
use crate::fhir::instant;
use crate::store::audit::AuditRow;
use crate::store::councils::CouncilRow;
use crate::store::flags::FlagRow;

/// `meta` naming one of this server's view profiles.
fn view_meta(row: &FlagRow, profile: &str) -> Value {
    json!({
        "versionId": row.version.to_string(),
        "lastUpdated": instant(row.updated_at),
        "profile": [format!("{PROFILE_BASE}/StructureDefinition/{profile}")],
    })
}

fn plan_coding(row: &FlagRow) -> Value {
    let mut c = json!({ "system": SNOMED_SYSTEM, "code": row.plan_type });
    if let Some(p) = PlanType::from_snomed(&row.plan_type) {
        c["display"] = json!(p.display());
    }
    c
}

fn period(row: &FlagRow) -> Value {
    let mut p = json!({ "start": row.period_start });
    if let Some(end) = &row.period_end {
        p["end"] = json!(end);
    }
    p
}

/// The council's two numbers as the guides map them.
fn telecom(council: Option<&CouncilRow>) -> Value {
    match council {
        Some(c) => json!([
            { "system": "phone", "value": c.office_phone, "use": "work" },
            { "system": "phone", "value": c.emergency_phone, "use": "mobile" },
        ]),
        None => json!([]),
    }
}

fn council_name(row: &FlagRow, council: Option<&CouncilRow>) -> String {
    council.map_or_else(|| row.la_ods.clone(), |c| c.name.clone())
}

/// `active` while the plan runs; `inactive` once it has ended.
fn plan_status(row: &FlagRow) -> &'static str {
    if row.period_end.is_some() || row.status != crate::domain::FlagStatus::Active {
        "inactive"
    } else {
        "active"
    }
}

/// A plan as the CP-IS API's `CareTeam` (profile `CPIS-CareTeam`).
pub fn care_team(row: &FlagRow, council: Option<&CouncilRow>) -> Value {
    json!({
        "resourceType": "CareTeam",
        "id": row.id,
        "meta": view_meta(row, "CPIS-CareTeam"),
        "status": plan_status(row),
        "category": [{ "coding": [plan_coding(row)] }],
        "name": council_name(row, council),
        "subject": {
            "reference": format!("Patient/{}", row.nhs_number),
            "identifier": { "system": NHS_NUMBER_SYSTEM, "value": row.nhs_number },
        },
        "period": period(row),
        "managingOrganization": [{
            "identifier": { "system": ODS_ORG_SYSTEM, "value": row.la_ods },
            "display": council_name(row, council),
        }],
        "telecom": telecom(council),
    })
}

/// The id of the `CarePlan` and `CareTeam` of a plan in the Patient Flags view: the Flag's id
/// with a suffix, so each is distinct and stable.
pub fn care_plan_id(flag_id: &str) -> String {
    format!("{flag_id}-plan")
}

pub fn council_team_id(flag_id: &str) -> String {
    format!("{flag_id}-council")
}

/// A plan as the Patient Flags API's `Flag` (profile `CPIS-PatientFlag`, after
/// England-Flag-PatientFlag): the CP-IS category as its code, and the plan as its detail.
pub fn patient_flag(row: &FlagRow) -> Value {
    json!({
        "resourceType": "Flag",
        "id": row.id,
        "meta": view_meta(row, "CPIS-PatientFlag"),
        "extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/flag-detail",
            "valueReference": { "reference": format!("CarePlan/{}", care_plan_id(&row.id)) },
        }],
        "status": row.status.as_str(),
        "code": { "coding": [{
            "system": FLAG_CATEGORY_SYSTEM,
            "code": FLAG_CATEGORY_CODE,
            "display": "Child Protection Information System Flag",
        }]},
        "subject": {
            "reference": format!("Patient/{}", row.nhs_number),
            "identifier": { "system": NHS_NUMBER_SYSTEM, "value": row.nhs_number },
        },
        "period": period(row),
    })
}

/// The plan behind a Patient Flags `Flag` (profile `CPIS-CarePlan`, after England-CarePlan-Flag).
pub fn care_plan(row: &FlagRow, council: Option<&CouncilRow>) -> Value {
    json!({
        "resourceType": "CarePlan",
        "id": care_plan_id(&row.id),
        "meta": view_meta(row, "CPIS-CarePlan"),
        "status": if plan_status(row) == "active" { "active" } else { "completed" },
        "intent": "plan",
        "category": [{ "coding": [plan_coding(row)] }],
        "subject": {
            "reference": format!("Patient/{}", row.nhs_number),
            "identifier": { "system": NHS_NUMBER_SYSTEM, "value": row.nhs_number },
        },
        "period": period(row),
        "careTeam": [{
            "reference": format!("CareTeam/{}", council_team_id(&row.id)),
            "display": council_name(row, council),
        }],
    })
}

/// The council behind a Patient Flags `CarePlan` (profile `CPIS-CouncilCareTeam`, after
/// England-CareTeam-Flag).
pub fn council_team(row: &FlagRow, council: Option<&CouncilRow>) -> Value {
    json!({
        "resourceType": "CareTeam",
        "id": council_team_id(&row.id),
        "meta": view_meta(row, "CPIS-CouncilCareTeam"),
        "status": "active",
        "name": council_name(row, council),
        "managingOrganization": [{
            "identifier": { "system": ODS_ORG_SYSTEM, "value": row.la_ods },
            "display": council_name(row, council),
        }],
        "telecom": telecom(council),
    })
}

/// The id of the `PractitionerRole` that stands for who made an access: one per user, role and
/// organisation, so a person's history includes each viewer once.
pub fn practitioner_role_id(row: &AuditRow) -> String {
    let key = format!(
        "{}\u{1f}{}\u{1f}{}",
        row.user_id, row.user_role, row.user_org
    );
    let digest = openssl::sha::sha256(key.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// What the roles of this server are called on a viewer's line of the access history.
fn role_display(role: &str) -> String {
    match crate::domain::Role::parse(role) {
        Some(r) => r.description().to_owned(),
        None => role.to_owned(),
    }
}

/// Who made an access, as the CP-IS API's `PractitionerRole` (profile `CPIS-PractitionerRole`):
/// the viewer's name, their role, their organisation. This server knows organisations by ODS
/// code (the token's), so `organization.display` is that code.
pub fn practitioner_role(row: &AuditRow) -> Value {
    json!({
        "resourceType": "PractitionerRole",
        "id": practitioner_role_id(row),
        "meta": { "profile": [format!("{PROFILE_BASE}/StructureDefinition/CPIS-PractitionerRole")] },
        "identifier": [{ "system": SDS_USER_SYSTEM, "value": row.user_id }],
        "practitioner": {
            "identifier": { "system": SDS_USER_SYSTEM, "value": row.user_id },
            "display": row.user_name.as_deref().unwrap_or(&row.user_id),
        },
        "organization": {
            "identifier": { "system": ODS_ORG_SYSTEM, "value": row.user_org },
            "display": row.user_org,
        },
        "code": [{ "coding": [{
            "system": format!("{PROFILE_BASE}/CodeSystem/CPIS-Role"),
            "code": row.user_role,
            "display": role_display(&row.user_role),
        }]}],
    })
}

/// The agent an access `AuditEvent` gains in the national view: the viewer, by reference to its
/// included `PractitionerRole` (v3-RoleClass `ASSIGNED`, as the guide's example has it).
pub fn assigned_agent(row: &AuditRow) -> Value {
    json!({
        "type": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-RoleClass",
            "code": "ASSIGNED",
            "display": "assigned entity",
        }]},
        "who": { "reference": format!("PractitionerRole/{}", practitioner_role_id(row)) },
        "requestor": true,
    })
}
