//! The CapabilityStatement (FHIR R4 §2.40 "CapabilityStatement"), generated from the route table
//! in `api::ENDPOINTS` so it lists exactly what is implemented.

use serde_json::{json, Value};

use crate::api::ENDPOINTS;
use crate::domain::PROFILE_BASE;

fn resource_entry(resource: &str) -> Value {
    let interactions: Vec<Value> = ENDPOINTS
        .iter()
        .filter(|e| e.resource == Some(resource))
        .map(|e| json!({ "code": e.interaction }))
        .collect();
    let has = |code: &str| {
        ENDPOINTS
            .iter()
            .any(|e| e.resource == Some(resource) && e.interaction == code)
    };
    let mut r = json!({ "type": resource, "interaction": interactions });
    match resource {
        "Patient" | "Flag" | "Organization" => {
            r["profile"] = json!(format!(
                "{PROFILE_BASE}/StructureDefinition/CPIS-{resource}"
            ));
            r["versioning"] = json!("versioned-update");
            r["readHistory"] = json!(has("vread"));
            r["updateCreate"] = json!(resource != "Flag");
            r["conditionalCreate"] = json!(resource == "Flag");
            r["conditionalUpdate"] = json!(false);
            r["conditionalDelete"] = json!("not-supported");
        }
        _ => {}
    }
    if resource == "AuditEvent" {
        r["profile"] = json!(format!(
            "{PROFILE_BASE}/StructureDefinition/CPIS-AuditEvent"
        ));
        r["documentation"] = json!(
            "Written by the server for every read or search of Patient, Flag or AuditEvent data. \
             Clinicians and the responsible council: patient:identifier gives the latest 25 unscheduled accesses. \
             Auditors: every record about the person, newest first, paged."
        );
    }
    if resource == "Flag" {
        r["documentation"] = json!(
            "One Flag per plan. DELETE marks a Flag entered-in-error (kept for audit, hidden from clinicians). \
             Conditional create with If-None-Exist: identifier=system|value."
        );
    }
    r
}

pub fn statement(base_url: &str) -> Value {
    let mut types: Vec<&str> = Vec::new();
    for e in ENDPOINTS {
        if let Some(r) = e.resource {
            if !types.contains(&r) {
                types.push(r);
            }
        }
    }
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-25",
        "publisher": "cpis-fhir",
        "kind": "instance",
        "software": { "name": "cpis-fhir", "version": env!("CARGO_PKG_VERSION") },
        "implementation": {
            "description": "Child Protection - Information Sharing (CP-IS) FHIR server",
            "url": base_url,
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml"],
        "rest": [{
            "mode": "server",
            "documentation": "Every endpoint except /metadata and the conformance resources needs Authorization: Bearer <JWT>.",
            "security": {
                "cors": false,
                "description": "Bearer JWT (RS/PS/ES algorithms pinned per trusted key; exp, iss, aud, sub required). Roles: clinician, clinician-scheduled, council, auditor, admin.",
            },
            "resource": types.iter().map(|t| resource_entry(t)).collect::<Vec<_>>(),
        }],
    })
}
