//! CP-IS Patient ↔ `patients` row (profile `fhir-profiles/StructureDefinition-CPIS-Patient.json`;
//! DOMAIN.md "Data held": NHS number, verified; name; date of birth; optional address).

use serde_json::{json, Value};

use crate::domain::{NHS_NUMBER_SYSTEM, VERIFICATION_EXTENSION, VERIFICATION_SYSTEM};
use crate::error::Issue;
use crate::fhir::{full_date, meta, text};
use crate::nhs_number::NhsNumber;
use crate::store::patients::PatientRow;

/// A Patient as submitted, already checked.
#[derive(Debug, Clone)]
pub struct PatientInput {
    pub nhs_number: NhsNumber,
    pub family: String,
    pub given: Vec<String>,
    pub birth_date: chrono::NaiveDate,
    pub address_lines: Option<Vec<String>>,
    pub address_city: Option<String>,
    pub address_district: Option<String>,
    pub address_postal_code: Option<String>,
}

/// Domain checks beyond the profile: the NHS number rule and a real, past date of birth.
pub fn parse(
    v: &Value,
    allow_test_numbers: bool,
    today: chrono::NaiveDate,
) -> Result<PatientInput, Vec<Issue>> {
    let mut issues = Vec::new();
    let nhs_text = text(v, "/identifier/0/value").unwrap_or_default();
    let nhs_number = match NhsNumber::parse(nhs_text, allow_test_numbers) {
        Ok(n) => Some(n),
        Err(e) => {
            issues.push(Issue::new(
                "value",
                "Patient.identifier[0].value",
                format!("Patient.identifier[0].value: {e}"),
            ));
            None
        }
    };
    let birth = text(v, "/birthDate").unwrap_or_default();
    let birth_date = match full_date(birth) {
        Some(d) if d <= today => Some(d),
        Some(_) => {
            issues.push(Issue::new(
                "value",
                "Patient.birthDate",
                "Patient.birthDate is in the future",
            ));
            None
        }
        None => {
            issues.push(Issue::new(
                "value",
                "Patient.birthDate",
                "Patient.birthDate must be a full date (YYYY-MM-DD)",
            ));
            None
        }
    };
    let strings = |p: &str| -> Option<Vec<String>> {
        v.pointer(p).and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
    };
    let (Some(nhs_number), Some(birth_date)) = (nhs_number, birth_date) else {
        return Err(issues);
    };
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(PatientInput {
        nhs_number,
        family: text(v, "/name/0/family").unwrap_or_default().to_owned(),
        given: strings("/name/0/given").unwrap_or_default(),
        birth_date,
        address_lines: strings("/address/0/line"),
        address_city: text(v, "/address/0/city").map(str::to_owned),
        address_district: text(v, "/address/0/district").map(str::to_owned),
        address_postal_code: text(v, "/address/0/postalCode").map(str::to_owned),
    })
}

impl PatientInput {
    /// The row this input becomes; bookkeeping fields are the caller's to set.
    pub fn to_row(&self, created_by: &str, version: i64, updated_at: i64) -> PatientRow {
        PatientRow {
            nhs_number: self.nhs_number.as_str().to_owned(),
            family: self.family.clone(),
            given: crate::store::columns::JsonList(self.given.clone()),
            birth_date: self.birth_date.to_string(),
            address_lines: self
                .address_lines
                .as_ref()
                .and_then(|l| serde_json::to_string(l).ok()),
            address_city: self.address_city.clone(),
            address_district: self.address_district.clone(),
            address_postal_code: self.address_postal_code.clone(),
            created_by: created_by.to_owned(),
            version,
            updated_at,
        }
    }
}

/// Renders a stored person as a CP-IS Patient.
pub fn render(row: &PatientRow) -> Value {
    let given: &[String] = &row.given;
    let mut name = json!({ "family": row.family });
    if !given.is_empty() {
        name["given"] = json!(given);
    }
    let mut p = json!({
        "resourceType": "Patient",
        "id": row.nhs_number,
        "meta": meta(row.version, row.updated_at, "CPIS-Patient"),
        "identifier": [{
            "extension": [{
                "url": VERIFICATION_EXTENSION,
                "valueCodeableConcept": { "coding": [{
                    "system": VERIFICATION_SYSTEM,
                    "code": "01",
                    "display": "Number present and verified",
                }]},
            }],
            "system": NHS_NUMBER_SYSTEM,
            "value": row.nhs_number,
        }],
        "name": [name],
        "birthDate": row.birth_date,
    });
    let mut address = serde_json::Map::new();
    if let Some(lines) = row
        .address_lines
        .as_deref()
        .and_then(|l| serde_json::from_str::<Vec<String>>(l).ok())
        .filter(|l| !l.is_empty())
    {
        address.insert("line".into(), json!(lines));
    }
    for (k, v) in [
        ("city", &row.address_city),
        ("district", &row.address_district),
        ("postalCode", &row.address_postal_code),
    ] {
        if let Some(v) = v {
            address.insert(k.into(), json!(v));
        }
    }
    if !address.is_empty() {
        p["address"] = json!([address]);
    }
    p
}
