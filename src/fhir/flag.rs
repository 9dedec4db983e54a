//! CP-IS Flag ↔ `flags` row (profile `fhir-profiles/StructureDefinition-CPIS-Flag.json`):
//! plan type in `code`, the CP-IS category, the person in `subject`, the council in `author`,
//! the plan dates in `period` (DOMAIN.md "Codes and identifier systems").

use serde_json::{json, Value};

use crate::domain::{
    FlagStatus, OdsCode, PlanType, FLAG_CATEGORY_CODE, FLAG_CATEGORY_SYSTEM, NHS_NUMBER_SYSTEM,
    ODS_ORG_SYSTEM, SNOMED_SYSTEM,
};
use crate::error::Issue;
use crate::fhir::{full_date, meta, object, text};
use crate::nhs_number::NhsNumber;
use crate::store::flags::FlagRow;

/// A Flag as submitted, already checked (existence of subject and author is checked against
/// the database by the caller, inside its transaction).
#[derive(Debug, Clone)]
pub struct FlagInput {
    pub identifier_system: String,
    pub identifier_value: String,
    pub status: FlagStatus,
    pub plan_type: PlanType,
    pub subject: NhsNumber,
    pub author: OdsCode,
    pub period_start: chrono::NaiveDate,
    pub period_end: Option<chrono::NaiveDate>,
}

/// Resolves a reference given as `{prefix}/{id}` and/or a logical identifier; both must agree.
fn reference_id(v: &Value, element: &str, prefix: &str, issues: &mut Vec<Issue>) -> Option<String> {
    let pointer = format!("/{element}");
    let by_ref = text(v, &format!("{pointer}/reference")).map(|r| {
        r.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('/'))
            .map(str::to_owned)
            .ok_or(r)
    });
    let by_ident = text(v, &format!("{pointer}/identifier/value")).map(str::to_owned);
    let path = format!("Flag.{element}");
    match (by_ref, by_ident) {
        (Some(Err(r)), _) => {
            issues.push(Issue::new(
                "value",
                format!("{path}.reference"),
                format!("{path}.reference '{r}' must be {prefix}/{{id}}"),
            ));
            None
        }
        (Some(Ok(a)), Some(b)) if a != b => {
            issues.push(Issue::new(
                "value",
                path.clone(),
                format!("{path}: reference and identifier name different resources"),
            ));
            None
        }
        (Some(Ok(a)), _) => Some(a),
        (None, Some(b)) => Some(b),
        (None, None) => {
            issues.push(Issue::new(
                "required",
                path.clone(),
                format!("{path} needs a reference or an identifier"),
            ));
            None
        }
    }
}

pub fn parse(v: &Value, allow_test_numbers: bool) -> Result<FlagInput, Vec<Issue>> {
    let mut issues = Vec::new();
    let status = FlagStatus::parse(text(v, "/status").unwrap_or_default());
    if status.is_none() {
        issues.push(Issue::new(
            "code-invalid",
            "Flag.status",
            "Flag.status must be active, inactive or entered-in-error",
        ));
    }
    let plan_type = PlanType::from_snomed(text(v, "/code/coding/0/code").unwrap_or_default());
    if plan_type.is_none() {
        issues.push(Issue::new(
            "code-invalid",
            "Flag.code.coding[0].code",
            "Flag.code must be one of the CP-IS plan types (342191000000101, 764841000000100, 818901000000100)",
        ));
    }
    let subject = reference_id(v, "subject", "Patient", &mut issues).and_then(|s| {
        NhsNumber::parse(&s, allow_test_numbers)
            .map_err(|e| {
                issues.push(Issue::new(
                    "value",
                    "Flag.subject",
                    format!("Flag.subject: {e}"),
                ))
            })
            .ok()
    });
    let author = reference_id(v, "author", "Organization", &mut issues).and_then(|s| {
        let parsed = OdsCode::parse(&s);
        if parsed.is_none() {
            issues.push(Issue::new(
                "value",
                "Flag.author",
                format!("Flag.author: '{s}' is not an ODS code"),
            ));
        }
        parsed
    });
    let start = text(v, "/period/start").and_then(full_date);
    if start.is_none() {
        issues.push(Issue::new(
            "value",
            "Flag.period.start",
            "Flag.period.start must be a full date (YYYY-MM-DD) or date-time",
        ));
    }
    let end_text = text(v, "/period/end");
    let end = end_text.and_then(full_date);
    if end_text.is_some() && end.is_none() {
        issues.push(Issue::new(
            "value",
            "Flag.period.end",
            "Flag.period.end must be a full date (YYYY-MM-DD) or date-time",
        ));
    }
    if let (Some(s), Some(e)) = (start, end) {
        if e < s {
            issues.push(Issue::new(
                "invariant",
                "Flag.period.end",
                "Flag.period.end is before Flag.period.start",
            ));
        }
    }
    match (status, plan_type, subject, author, start) {
        (Some(status), Some(plan_type), Some(subject), Some(author), Some(period_start))
            if issues.is_empty() =>
        {
            Ok(FlagInput {
                identifier_system: text(v, "/identifier/0/system")
                    .unwrap_or_default()
                    .to_owned(),
                identifier_value: text(v, "/identifier/0/value")
                    .unwrap_or_default()
                    .to_owned(),
                status,
                plan_type,
                subject,
                author,
                period_start,
                period_end: end,
            })
        }
        _ => Err(issues),
    }
}

impl FlagInput {
    pub fn to_row(&self, id: &str, version: i64, updated_at: i64) -> FlagRow {
        FlagRow {
            id: id.to_owned(),
            nhs_number: self.subject.as_str().to_owned(),
            la_ods: self.author.as_str().to_owned(),
            local_ref_system: self.identifier_system.clone(),
            local_ref_value: self.identifier_value.clone(),
            plan_type: self.plan_type.snomed().to_owned(),
            status: self.status,
            period_start: self.period_start.to_string(),
            period_end: self.period_end.map(|d| d.to_string()),
            version,
            updated_at,
        }
    }
}

/// Renders a stored Flag (current or historical version). `council_name`, when known, is shown
/// as the author's display so a clinician sees whom to call without a second request.
pub fn render(row: &FlagRow, council_name: Option<&str>) -> Value {
    let mut period = json!({ "start": row.period_start });
    if let (Some(end), Some(p)) = (&row.period_end, period.as_object_mut()) {
        p.insert("end".into(), end.clone().into());
    }
    let mut author = json!({
        "reference": format!("Organization/{}", row.la_ods),
        "identifier": { "system": ODS_ORG_SYSTEM, "value": row.la_ods },
    });
    if let (Some(name), Some(a)) = (council_name, author.as_object_mut()) {
        a.insert("display".into(), name.into());
    }
    let mut code = json!({ "system": SNOMED_SYSTEM, "code": row.plan_type });
    if let (Some(p), Some(c)) = (PlanType::from_snomed(&row.plan_type), code.as_object_mut()) {
        c.insert("display".into(), p.display().into());
    }
    object([
        ("resourceType", "Flag".into()),
        ("id", row.id.clone().into()),
        ("meta", meta(row.version, row.updated_at, "CPIS-Flag")),
        (
            "identifier",
            json!([{ "system": row.local_ref_system, "value": row.local_ref_value }]),
        ),
        ("status", row.status.as_str().into()),
        (
            "category",
            json!([{ "coding": [{
                "system": FLAG_CATEGORY_SYSTEM,
                "code": FLAG_CATEGORY_CODE,
                "display": "Child Protection Information System flag",
            }]}]),
        ),
        ("code", object([("coding", Value::Array(vec![code]))])),
        (
            "subject",
            json!({
                "reference": format!("Patient/{}", row.nhs_number),
                "identifier": { "system": NHS_NUMBER_SYSTEM, "value": row.nhs_number },
            }),
        ),
        ("period", period),
        ("author", author),
    ])
}
