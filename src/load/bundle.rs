//! Records as batch Bundle entries (`PUT Patient/{nhs}` and the conditional
//! `PUT Flag?identifier=…`), and each entry's answer read back for the report.

use super::extract::Record;
use super::*;

pub(super) fn patient_resource(r: &Record) -> Value {
    let mut name = json!({ "family": r.family });
    if !r.given.is_empty() {
        name["given"] = json!(r.given);
    }
    let mut p = json!({
        "resourceType": "Patient",
        "id": r.nhs,
        "identifier": [{
            "extension": [{
                "url": VERIFICATION_EXTENSION,
                "valueCodeableConcept": { "coding": [{
                    "system": VERIFICATION_SYSTEM,
                    "code": r.verification,
                }]},
            }],
            "system": NHS_NUMBER_SYSTEM,
            "value": r.nhs,
        }],
        "name": [name],
        "birthDate": r.birth_date.format("%Y-%m-%d").to_string(),
    });
    let mut address = serde_json::Map::new();
    if !r.address_lines.is_empty() {
        address.insert("line".into(), json!(r.address_lines));
    }
    if let Some(t) = &r.town {
        address.insert("city".into(), json!(t));
    }
    if let Some(pc) = &r.postcode {
        address.insert("postalCode".into(), json!(pc));
    }
    if !address.is_empty() {
        p["address"] = json!([address]);
    }
    p
}

pub(super) fn flag_resource(r: &Record, council: &OdsCode, plan_system: &str) -> Value {
    let mut period = json!({ "start": r.start.format("%Y-%m-%d").to_string() });
    if let Some(e) = r.end {
        period["end"] = json!(e.format("%Y-%m-%d").to_string());
    }
    json!({
        "resourceType": "Flag",
        "identifier": [{ "system": plan_system, "value": r.reference }],
        // The server marks a plan whose end has passed inactive.
        "status": "active",
        "category": [{ "coding": [{ "system": FLAG_CATEGORY_SYSTEM, "code": FLAG_CATEGORY_CODE }] }],
        "code": { "coding": [{ "system": SNOMED_SYSTEM, "code": r.plan.snomed() }] },
        "subject": { "reference": format!("Patient/{}", r.nhs) },
        "period": period,
        "author": { "reference": format!("Organization/{council}") },
    })
}

/// One batch Bundle for `rows`, and for each row the index of its Flag entry and of the entry
/// that carries its person (people on several rows are sent once per Bundle).
pub(super) fn bundle(
    rows: &[Record],
    council: &OdsCode,
    plan_system: &str,
) -> (Value, Vec<(usize, usize)>) {
    let mut entries = Vec::new();
    let mut person_entry: HashMap<&str, usize> = HashMap::new();
    for r in rows {
        // A later row's details for the same person win, as they would on the server.
        match person_entry.get(r.nhs.as_str()) {
            Some(&i) => entries[i] = patient_entry(r),
            None => {
                person_entry.insert(&r.nhs, entries.len());
                entries.push(patient_entry(r));
            }
        }
    }
    let mut map = Vec::with_capacity(rows.len());
    for r in rows {
        map.push((entries.len(), person_entry[r.nhs.as_str()]));
        entries.push(json!({
            "fullUrl": stable_urn(&["Flag", plan_system, &r.reference]),
            "resource": flag_resource(r, council, plan_system),
            "request": {
                "method": "PUT",
                "url": format!(
                    "Flag?identifier={}",
                    crate::fhir::percent::encode_strict(&format!("{plan_system}|{}", r.reference))
                ),
            },
        }));
    }
    let b = json!({ "resourceType": "Bundle", "type": "batch", "entry": entries });
    (b, map)
}

/// A `urn:uuid:` for an entry that is the same every time the same row is converted, so the
/// Bundles a file produces are reproducible (FNV-1a, twice, shaped as a version 4 UUID).
pub(super) fn stable_urn(parts: &[&str]) -> String {
    let fnv = |seed: u64| {
        let mut h = seed;
        for p in parts {
            for b in p.bytes().chain(std::iter::once(0)) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_be_bytes());
    bytes[8..].copy_from_slice(&fnv(0x6c62_272e_07bb_0142).to_be_bytes());
    format!(
        "urn:uuid:{}",
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    )
}

pub(super) fn patient_entry(r: &Record) -> Value {
    json!({
        "fullUrl": stable_urn(&["Patient", &r.nhs]),
        "resource": patient_resource(r),
        "request": { "method": "PUT", "url": format!("Patient/{}", r.nhs) },
    })
}

/// The result code and message an entry's response carries.
pub(super) fn entry_result(entry: &Value) -> (String, String, String, String) {
    let response = &entry["response"];
    let status = response["status"].as_str().unwrap_or_default().to_owned();
    let issues = response["outcome"]["issue"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let code = issues
        .iter()
        .flat_map(|i| {
            i["details"]["coding"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|c| c["code"].as_str().is_some_and(|c| c.starts_with("CPR")))
        .and_then(|c| c["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let message = issues
        .iter()
        .filter_map(|i| i["diagnostics"].as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let flag_id = response["location"]
        .as_str()
        .and_then(|l| l.split("/Flag/").nth(1))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_owned();
    (status, code, message, flag_id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn conditional_urls_escape_the_plan_reference() {
        assert_eq!(
            crate::fhir::percent::encode_strict("https://x/y|A 1"),
            "https%3A%2F%2Fx%2Fy%7CA%201"
        );
    }
}
