//! The search parameters of every resource, declared once (FHIR R4 §3.1.1.4 "Search
//! parameters"; §2.40 `CapabilityStatement.rest.resource.searchParam`). The request parser
//! accepts exactly these (with the modifiers listed), the CapabilityStatement publishes them
//! with their type and documentation, and the searches read their values by these names.

/// One search parameter of one resource.
#[derive(Debug)]
pub struct SearchParam {
    pub name: &'static str,
    /// FHIR search parameter type: `token`, `reference`, `date`, `string`.
    pub kind: &'static str,
    /// The modifiers accepted after the name (`patient:identifier`).
    pub modifiers: &'static [&'static str],
    /// Whether the name is accepted without a modifier.
    pub bare: bool,
    /// The base SearchParameter it is, when it is one of FHIR R4's.
    pub definition: Option<&'static str>,
    pub documentation: &'static str,
}

/// The searches of one resource type.
#[derive(Debug)]
pub struct ResourceSearch {
    pub resource: &'static str,
    pub params: &'static [SearchParam],
    /// `_include` values accepted.
    pub includes: &'static [&'static str],
}

const fn p(
    name: &'static str,
    kind: &'static str,
    modifiers: &'static [&'static str],
    definition: Option<&'static str>,
    documentation: &'static str,
) -> SearchParam {
    SearchParam {
        name,
        kind,
        modifiers,
        bare: true,
        definition,
        documentation,
    }
}

#[cfg(test)]
const R4: &str = "http://hl7.org/fhir/SearchParameter/";

macro_rules! base {
    ($id:literal) => {
        Some(concat!("http://hl7.org/fhir/SearchParameter/", $id))
    };
}

/// The national CP-IS API's way of asking for each access's viewer (a `PractitionerRole`).
pub const AUDIT_VIEWER_INCLUDE: &str =
    "AuditEvent:entity-type=http://terminology.hl7.org/CodeSystem/v3-RoleClass|ASSIGNED";

/// Every resource's searches. `_count` and `_format` are accepted everywhere (and `_cursor`,
/// this server's opaque paging token, in the `next` links it writes).
pub const SEARCHES: &[ResourceSearch] = &[
    ResourceSearch {
        resource: "Flag",
        params: &[
            p("patient", "reference", &["identifier"], base!("clinical-patient"),
              "The look-up: patient:identifier=https://fhir.nhs.uk/Id/nhs-number|{NHS number}. Required for clinicians and the audit team; audited, hits and misses alike."),
            p("subject", "reference", &["identifier"], base!("Flag-subject"),
              "As patient."),
            p("identifier", "token", &[], base!("Flag-identifier"),
              "The council's plan reference (system|value); a council finds its own Flags by it."),
            p("_id", "token", &[], base!("Resource-id"), "Flag ids, comma-separated."),
            p("status", "token", &[], None,
              "active, inactive, entered-in-error (clinicians never see entered-in-error)."),
            p("code", "token", &[], base!("clinical-code"),
              "The plan type: a SNOMED CT code of England-ChildProtectionPlan."),
            p("date", "date", &[], base!("clinical-date"),
              "Plan period (eq, ne, lt, gt, le, ge, sa, eb, ap on days)."),
            p("_lastUpdated", "date", &[], base!("Resource-lastUpdated"),
              "When the Flag last changed."),
        ],
        includes: &["Flag:author", "Flag:patient", "Flag:subject"],
    },
    ResourceSearch {
        resource: "Patient",
        params: &[
            p("identifier", "token", &[], base!("Patient-identifier"),
              "https://fhir.nhs.uk/Id/nhs-number|{NHS number}; audited."),
            p("_id", "token", &[], base!("Resource-id"), "The NHS number."),
            p("family", "string", &[], base!("individual-family"),
              "Councils only, among the people they are responsible for."),
            p("given", "string", &[], base!("individual-given"), "Councils only, as family."),
            p("name", "string", &[], base!("Patient-name"), "Councils only, as family."),
            p("birthdate", "date", &[], base!("individual-birthdate"), "Councils only, as family."),
        ],
        includes: &[],
    },
    ResourceSearch {
        resource: "Organization",
        params: &[
            p("identifier", "token", &[], base!("Organization-identifier"),
              "https://fhir.nhs.uk/Id/ods-organization-code|{ODS code}."),
            p("_id", "token", &[], base!("Resource-id"), "ODS codes, comma-separated."),
            p("name", "string", &[], base!("Organization-name"), "Starts with, case-insensitive."),
        ],
        includes: &[],
    },
    ResourceSearch {
        resource: "AuditEvent",
        params: &[
            p("patient", "reference", &["identifier"], base!("AuditEvent-patient"),
              "A person's access history: patient:identifier=https://fhir.nhs.uk/Id/nhs-number|{NHS number}. Clinicians and the responsible council: the latest 25 unscheduled accesses; the audit team: every record, paged."),
            p("entity", "reference", &["identifier"], base!("AuditEvent-entity"),
              "Flag/{id}: accesses that disclosed any version of that Flag (audit team); entity:identifier is as patient:identifier."),
            p("subtype", "token", &[], base!("AuditEvent-subtype"),
              "The interaction (read, vread, search-type, history-instance), destroy (the record lifecycle's runs), a refusal's reason code or a warning's code."),
            p("type", "token", &[], base!("AuditEvent-type"),
              "rest (an access through the API); http://dicom.nema.org/resources/ontology/DCM|110114 refused authentications; DCM|110113 the misuse watch's warnings; DCM|110100 the record lifecycle's runs."),
            p("date", "date", &[], base!("AuditEvent-date"),
              "When the access was recorded (eq, gt, ge, lt, le; days or instants). Audit team, and a council over its own records; every parameter below combines with every other and with patient; paged by keyset."),
            p("agent", "token", &[], base!("AuditEvent-agent"),
              "The user (token subject, e.g. an SDS user id), comma-separated."),
            p("agent-name", "string", &[], base!("AuditEvent-agent-name"),
              "The start of the user's name (ASCII letters matched in any case)."),
            p("agent-role", "token", &[], base!("AuditEvent-agent-role"),
              "The user's role: clinician, clinician-scheduled, council, auditor, admin."),
            p("agent-org", "token", &[], None,
              "The accessing organisation's ODS code."),
            p("outcome", "token", &[], base!("AuditEvent-outcome"),
              "0 success, 4 refused or failed (minor), 8 serious failure."),
            p("purpose", "token", &[], None,
              "unscheduled (listed and notified) or scheduled (silent) accesses."),
            p("council", "token", &[], None,
              "The responsible council (ODS) of what was disclosed; a council's own searches are always narrowed to itself."),
            p("source", "token", &[], base!("AuditEvent-source"),
              "The calling system: the token's issuer (a refused authentication's: the client address)."),
            p("_sort", "special", &[], None,
              "-date (newest first, the default) or date (oldest first)."),
            p("_total", "special", &[], None,
              "accurate (count every match), none, or estimate (the default: a total only when one page holds every match)."),
        ],
        includes: &[
            AUDIT_VIEWER_INCLUDE,
            "AuditEvent:agent",
            "AuditEvent:agent:PractitionerRole",
        ],
    },
    ResourceSearch {
        resource: "CareTeam",
        params: &[
            p("patient", "reference", &["identifier"], base!("clinical-patient"),
              "The look-up in the national CP-IS API's shape: patient:identifier=https://fhir.nhs.uk/Id/nhs-number|{NHS number}; one CareTeam per plan. Audited, hits and misses alike; the council is notified."),
            p("subject", "reference", &["identifier"], base!("CareTeam-subject"), "As patient."),
        ],
        includes: &[],
    },
    ResourceSearch {
        resource: "PatientFlag",
        params: &[
            p("patient", "reference", &["identifier"], base!("clinical-patient"),
              "The look-up in the Patient Flags API's shape: patient={NHS number}; per plan a Flag, its CarePlan and the council's CareTeam. Audited; the council is notified."),
            p("code", "token", &[], None,
              "The flag type: child-protection-information-system-flag (or CP-IS); any other finds nothing here."),
        ],
        includes: &[],
    },
    ResourceSearch {
        resource: "Subscription",
        params: &[
            p("status", "token", &[], base!("Subscription-status"),
              "requested, active, error, off; comma-separated."),
            p("_id", "token", &[], base!("Resource-id"), "Subscription ids, comma-separated."),
        ],
        includes: &[],
    },
];

/// The searches of `resource` (a type without searches has none).
pub fn of(resource: &str) -> Option<&'static ResourceSearch> {
    SEARCHES.iter().find(|s| s.resource == resource)
}

/// Every parameter name `resource` accepts, with its modifiers (`patient`, `patient:identifier`),
/// and `_include` where it has includes. Worked out once, on first use: every search asks.
pub fn accepted(resource: &str) -> &'static [String] {
    static ACCEPTED: std::sync::OnceLock<Vec<(&'static str, Vec<String>)>> =
        std::sync::OnceLock::new();
    ACCEPTED
        .get_or_init(|| SEARCHES.iter().map(|s| (s.resource, names(s))).collect())
        .iter()
        .find(|(r, _)| *r == resource)
        .map(|(_, names)| names.as_slice())
        .unwrap_or_default()
}

fn names(search: &ResourceSearch) -> Vec<String> {
    let mut names = Vec::new();
    for param in search.params {
        if param.bare {
            names.push(param.name.to_owned());
        }
        names.extend(
            param
                .modifiers
                .iter()
                .map(|m| format!("{}:{m}", param.name)),
        );
    }
    if !search.includes.is_empty() {
        names.push("_include".to_owned());
    }
    names
}

/// `CapabilityStatement.rest.resource.searchParam` and `searchInclude` of `resource`.
pub fn capability(resource: &str) -> Option<(serde_json::Value, serde_json::Value)> {
    let search = of(resource)?;
    let params: Vec<serde_json::Value> = search
        .params
        .iter()
        .map(|param| {
            let mut v = serde_json::json!({
                "name": param.name,
                "type": param.kind,
                "documentation": param.documentation,
            });
            if let Some(d) = param.definition {
                v["definition"] = serde_json::json!(d);
            }
            v
        })
        .collect();
    Some((
        serde_json::json!(params),
        serde_json::json!(search.includes),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_parameter_is_declared_once_with_a_fhir_type_and_base_definitions_are_r4_s() {
        for s in SEARCHES {
            let mut names: Vec<&str> = s.params.iter().map(|p| p.name).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            assert_eq!(
                before,
                names.len(),
                "{}: a parameter declared twice",
                s.resource
            );
            for p in s.params {
                assert!(
                    ["token", "reference", "date", "string", "special"].contains(&p.kind),
                    "{}",
                    p.name
                );
                assert!(p.definition.is_none_or(|d| d.starts_with(R4)), "{}", p.name);
                assert!(!p.documentation.is_empty());
            }
        }
        assert!(accepted("Flag").contains(&"patient:identifier".to_owned()));
        assert!(accepted("Flag").contains(&"_include".to_owned()));
        assert!(!accepted("Patient").contains(&"_include".to_owned()));
    }
}
