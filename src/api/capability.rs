//! The CapabilityStatement (FHIR R4 §2.40 "CapabilityStatement"), generated from the route table
//! in `api::ENDPOINTS` so it lists exactly what is implemented.

use serde_json::{json, Value};

use super::ENDPOINTS;
use crate::domain::PROFILE_BASE;

/// The Bulk Data Access export operation (HL7 FHIR Bulk Data Access v2).
const BULK_EXPORT: &str = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export";

/// The AuditEvent operations: the bulk export and the access report.
fn audit_operations() -> Vec<Value> {
    ENDPOINTS
        .iter()
        .filter(|e| e.resource == Some("AuditEvent") && e.interaction == "operation")
        .filter_map(|e| e.path.rsplit_once("/$").map(|(_, name)| name))
        .map(|name| match name {
            "export" => json!({
                "name": name,
                "definition": BULK_EXPORT,
                "documentation": "Bulk export of the audit trail (Prefer: respond-async; _since, _until and the search's filters) as NDJSON files; \
                                  poll the Content-Location, download the files with the same token (only the requester may).",
            }),
            _ => json!({
                "name": name,
                "definition": format!("{PROFILE_BASE}/OperationDefinition/{name}"),
            }),
        })
        .collect()
}

fn resource_entry(resource: &str) -> Value {
    let mut codes: Vec<&str> = Vec::new();
    for e in ENDPOINTS.iter().filter(|e| e.resource == Some(resource)) {
        if e.interaction != "operation" && !codes.contains(&e.interaction) {
            codes.push(e.interaction);
        }
    }
    let interactions: Vec<Value> = codes.iter().map(|c| json!({ "code": c })).collect();
    let has = |code: &str| {
        ENDPOINTS
            .iter()
            .any(|e| e.resource == Some(resource) && e.interaction == code)
    };
    let mut r = json!({ "type": resource, "interaction": interactions });
    if let Some((params, includes)) = super::search::params::capability(resource) {
        r["searchParam"] = params;
        if includes.as_array().is_some_and(|a| !a.is_empty()) {
            r["searchInclude"] = includes;
        }
    }
    match resource {
        "CareTeam" => {
            r["profile"] = json!(format!("{PROFILE_BASE}/StructureDefinition/CPIS-CareTeam"));
        }
        "Patient" | "Flag" | "Organization" => {
            r["profile"] = json!(format!(
                "{PROFILE_BASE}/StructureDefinition/CPIS-{resource}"
            ));
            r["versioning"] = json!("versioned-update");
            // Only Flag keeps earlier versions; the others' vread shows the current one.
            r["readHistory"] = json!(resource == "Flag" && has("vread"));
            r["updateCreate"] = json!(resource != "Flag");
            r["conditionalCreate"] = json!(resource == "Flag");
            r["conditionalUpdate"] = json!(resource == "Flag");
            r["conditionalDelete"] = json!(if resource == "Flag" {
                "single"
            } else {
                "not-supported"
            });
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
             The audit team (and a council over its own records): every access, searched by date, user, organisation, \
             outcome, type, subtype, purpose, council, entity and source, either order, paged; the bulk export; the access report."
        );
        r["operation"] = json!(audit_operations());
    }
    if resource == "Subscription" {
        r["supportedProfile"] = json!(["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"]);
        r["documentation"] = json!(
            "Councils' webhooks for the topic https://cpis-fhir.example.org/fhir/SubscriptionTopic/cpis-access-notification \
             (R4 form: Basic/cpis-access-notification), filter AuditEvent?council=<own ODS code>. Channel rest-hook over https; \
             payload id-only or empty. Every notification is signed: X-CPIS-Signature: sha256=<hex HMAC-SHA256 of the body> \
             with the subscription's secret, returned once on create."
        );
        let ops: Vec<Value> = ENDPOINTS
            .iter()
            .filter(|e| e.resource == Some(resource) && e.interaction == "operation")
            .filter_map(|e| e.path.rsplit_once("/$").map(|(_, name)| name))
            .map(|name| {
                json!({
                    "name": name,
                    "definition": format!("http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-{name}"),
                })
            })
            .collect();
        r["operation"] = json!(ops);
    }
    if resource == "Patient" {
        r["documentation"] = json!(
            "The id is the NHS number. PUT creates or updates. DELETE withdraws the calling council's Flags \
             on the person (entered-in-error); the person's details leave under the retention rules."
        );
    }
    if resource == "Flag" {
        r["documentation"] = json!(
            "One Flag per plan. DELETE marks a Flag entered-in-error (kept for audit, hidden from clinicians). \
             Conditional create with If-None-Exist: identifier=system|value; conditional update and delete \
             with ?identifier=system|value (the council's own plan reference)."
        );
    }
    r
}

/// Whole-system interactions: `POST /` takes both transaction and batch Bundles.
fn system_interactions() -> Vec<Value> {
    let mut out = Vec::new();
    if ENDPOINTS
        .iter()
        .any(|e| e.resource.is_none() && e.interaction == "transaction")
    {
        out.push(json!({ "code": "transaction", "documentation": "Patient and Flag entries: POST, PUT (also PUT Flag?identifier=), DELETE. All or nothing." }));
        out.push(json!({ "code": "batch", "documentation": "The same entries, each applied on its own." }));
    }
    out
}

/// Whole-system operations (`POST /$name`).
fn system_operations() -> Vec<Value> {
    ENDPOINTS
        .iter()
        .filter(|e| e.resource.is_none() && e.interaction == "operation")
        .filter_map(|e| e.path.strip_prefix("/$"))
        .map(|name| match name {
            "export" => json!({
                "name": name,
                "definition": BULK_EXPORT,
                "documentation": "The audit team: GET /$export?_type=AuditEvent with Prefer: respond-async, as GET /AuditEvent/$export.",
            }),
            _ => json!({
                "name": name,
                "definition": format!("{PROFILE_BASE}/OperationDefinition/{name}"),
                "documentation": "Administrators: apply the record lifecycle now (plans ended at 18, ended plans made inactive, \
                                  records past retention removed, old AuditEvents removed). Returns the counts as Parameters.",
            }),
        })
        .collect()
}

pub fn statement(base_url: &str) -> Value {
    let mut types: Vec<&str> = Vec::new();
    for e in ENDPOINTS {
        // `/PatientFlag` serves Flags in the Patient Flags API's shape; it is not a type.
        if let Some(r) = e.resource.filter(|r| *r != "PatientFlag") {
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
            "documentation": "Every endpoint except /metadata and the conformance resources needs Authorization: Bearer <JWT>. \
                              GET /PatientFlag?patient={NHS number}[&code=child-protection-information-system-flag] answers the look-up in the Patient Flags API's shape \
                              (Flag with flag-detail, CarePlan, CareTeam; profiles CPIS-PatientFlag, CPIS-CarePlan, CPIS-CouncilCareTeam).",
            "security": {
                "cors": false,
                "description": "Bearer JWT (RS/PS/ES algorithms pinned per trusted key; exp, iss, aud, sub required). Roles: clinician, clinician-scheduled, council, auditor, admin.",
            },
            "resource": types.iter().map(|t| resource_entry(t)).collect::<Vec<_>>(),
            "interaction": system_interactions(),
            "operation": system_operations(),
        }],
    })
}
