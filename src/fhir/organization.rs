//! CP-IS council Organization ↔ `local_authorities` row (profile
//! `fhir-profiles/StructureDefinition-CPIS-Organization.json`; DOMAIN.md "responsible council":
//! name, ODS code, office-hours phone, emergency-duty phone).

use serde_json::{json, Value};

use crate::domain::{
    OdsCode, CONTACT_PURPOSE_SYSTEM, COUNCIL_ROLE_CODE, ODS_ORG_SYSTEM, ORG_ROLE_SYSTEM,
};
use crate::error::Issue;
use crate::fhir::{meta, object, text};
use crate::store::councils::CouncilRow;

#[derive(Debug, Clone)]
pub struct OrganizationInput {
    pub ods: OdsCode,
    pub name: String,
    pub active: bool,
    pub office_phone: String,
    pub emergency_phone: String,
}

pub fn parse(v: &Value) -> Result<OrganizationInput, Vec<Issue>> {
    let mut issues = Vec::new();
    let ods_text = text(v, "/identifier/0/value").unwrap_or_default();
    let ods = OdsCode::parse(ods_text);
    if ods.is_none() {
        issues.push(Issue::new(
            "value",
            "Organization.identifier[0].value",
            format!("'{ods_text}' is not an ODS code (3 to 10 upper-case letters and digits)"),
        ));
    }
    let mut office = Vec::new();
    let mut emergency = Vec::new();
    for (i, c) in v["contact"].as_array().into_iter().flatten().enumerate() {
        let phone = c
            .pointer("/telecom/0/value")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match (
            c.pointer("/purpose/coding/0/code").and_then(Value::as_str),
            phone,
        ) {
            (Some("office-hours"), Some(p)) => office.push(p),
            (Some("emergency-duty"), Some(p)) => emergency.push(p),
            (other, _) => issues.push(Issue::new(
                "code-invalid",
                format!("Organization.contact[{i}].purpose"),
                format!(
                    "Organization.contact[{i}].purpose '{}' must be office-hours or emergency-duty",
                    other.unwrap_or_default()
                ),
            )),
        }
    }
    if office.len() != 1 || emergency.len() != 1 {
        issues.push(Issue::new(
            "required",
            "Organization.contact",
            "a council has exactly one office-hours and one emergency-duty phone contact",
        ));
    }
    match (ods, office.pop(), emergency.pop()) {
        (Some(ods), Some(office_phone), Some(emergency_phone)) if issues.is_empty() => {
            Ok(OrganizationInput {
                ods,
                name: text(v, "/name").unwrap_or_default().to_owned(),
                active: v["active"].as_bool().unwrap_or(true),
                office_phone,
                emergency_phone,
            })
        }
        _ => Err(issues),
    }
}

impl OrganizationInput {
    pub fn to_row(&self, version: i64, updated_at: i64) -> CouncilRow {
        CouncilRow {
            ods_code: self.ods.as_str().to_owned(),
            name: self.name.clone(),
            office_phone: self.office_phone.clone(),
            emergency_phone: self.emergency_phone.clone(),
            active: self.active,
            version,
            updated_at,
        }
    }
}

fn contact(purpose: &str, display: &str, phone: &str) -> Value {
    json!({
        "purpose": { "coding": [{
            "system": CONTACT_PURPOSE_SYSTEM, "code": purpose, "display": display,
        }]},
        "name": { "text": display },
        "telecom": [{ "system": "phone", "value": phone }],
    })
}

pub fn render(row: &CouncilRow) -> Value {
    object([
        ("resourceType", "Organization".into()),
        ("id", row.ods_code.clone().into()),
        (
            "meta",
            meta(row.version, row.updated_at, "CPIS-Organization"),
        ),
        (
            "identifier",
            json!([{ "system": ODS_ORG_SYSTEM, "value": row.ods_code }]),
        ),
        ("active", row.active.into()),
        (
            "type",
            json!([{ "coding": [{
                "system": ORG_ROLE_SYSTEM, "code": COUNCIL_ROLE_CODE, "display": "LOCAL AUTHORITY",
            }]}]),
        ),
        ("name", row.name.clone().into()),
        (
            "contact",
            Value::Array(vec![
                contact(
                    "office-hours",
                    "Children's services (office hours)",
                    &row.office_phone,
                ),
                contact(
                    "emergency-duty",
                    "Emergency duty team (out of hours)",
                    &row.emergency_phone,
                ),
            ]),
        ),
    ])
}
