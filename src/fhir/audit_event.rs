//! AuditEvent rendering, shaped after IHE Basic Audit Log Patterns (BALP) PatientRead /
//! PatientQuery (FHIR R4 §6.4 AuditEvent): type `rest`, subtype the interaction, action `E`,
//! agents for the user (with role and organisation), the client system and this server, and
//! entities for the patient, the query, each disclosed version and the request id.

use base64::Engine;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::domain::{NHS_NUMBER_SYSTEM, ODS_ORG_SYSTEM, PROFILE_BASE, SDS_USER_SYSTEM};
use crate::fhir::instant;
use crate::store::audit::AuditRow;

pub const ACCESS_TYPE_SYSTEM: &str =
    "https://cpis-fhir.example.org/fhir/CodeSystem/CPIS-AccessType";
pub const ROLE_SYSTEM: &str = "https://cpis-fhir.example.org/fhir/CodeSystem/CPIS-Role";
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const BALP_ENTITY: &str = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType";

/// Whether the row records a person's access (not a lifecycle run, a refused authentication
/// or a misuse warning).
pub fn is_access(row: &AuditRow) -> bool {
    ![
        crate::domain::SYSTEM_ROLE,
        crate::domain::AUTH_ROLE,
        crate::domain::WATCH_ROLE,
    ]
    .contains(&row.user_role.as_str())
}

pub fn render(row: &AuditRow) -> Value {
    if row.user_role == crate::domain::SYSTEM_ROLE {
        return render_lifecycle(row);
    }
    if row.user_role == crate::domain::AUTH_ROLE {
        return render_refusal(row);
    }
    if row.user_role == crate::domain::WATCH_ROLE {
        return render_alert(row);
    }
    // Plain structs of strings and arrays always serialise; `Null` is unreachable.
    serde_json::to_value(access(row)).unwrap_or_default()
}

/// Appends the row's AuditEvent as one line of JSON (no newline): the bulk export's path. An
/// access — nearly every row — is written straight from the row, without building a `Value`
/// tree first (a million of them are exported in seconds); other events as [`render`] makes them.
pub fn write_json(row: &AuditRow, out: &mut Vec<u8>) -> serde_json::Result<()> {
    if is_access(row) {
        serde_json::to_writer(out, &access(row))
    } else {
        serde_json::to_writer(out, &render(row))
    }
}

/// The CPIS-AuditEvent profile's canonical URL.
static ACCESS_PROFILE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{PROFILE_BASE}/StructureDefinition/CPIS-AuditEvent"));

/// JSON that is the same in every access's AuditEvent (its profile, codings, this server's
/// agent and source), rendered once: the export copies these bytes into each of a million
/// lines instead of escaping the same kilobyte of codings every time. To the API they are
/// parsed back into the `Value` like any other field.
struct Fixed {
    meta: Box<RawValue>,
    kind: Box<RawValue>,
    unscheduled: Box<RawValue>,
    scheduled: Box<RawValue>,
    user_type: Box<RawValue>,
    provider_type: Box<RawValue>,
    application_type: Box<RawValue>,
    destination: Box<RawValue>,
    source: Box<RawValue>,
    person: Box<RawValue>,
    patient_role: Box<RawValue>,
    system_object: Box<RawValue>,
    query_role: Box<RawValue>,
    domain_resource_role: Box<RawValue>,
    organization: Box<RawValue>,
    request_id: Box<RawValue>,
    trace_id: Box<RawValue>,
}

static FIXED: std::sync::LazyLock<Fixed> = std::sync::LazyLock::new(|| {
    let coding = |system: &str, code: &str, display: &str| json!({"system": system, "code": code, "display": display});
    let concept = |system: &str, code: &str, display: &str| json!({"coding": [coding(system, code, display)]});
    Fixed {
        meta: raw(json!({"profile": [ACCESS_PROFILE.as_str()]})),
        kind: raw(coding(
            "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "rest",
            "Restful Operation",
        )),
        unscheduled: raw(json!([concept(
            ACCESS_TYPE_SYSTEM,
            "unscheduled",
            "Unscheduled care access (the council is notified)"
        )])),
        scheduled: raw(json!([concept(
            ACCESS_TYPE_SYSTEM,
            "scheduled",
            "Scheduled or non-care access (silent read)"
        )])),
        user_type: raw(concept(DCM, "110153", "Source Role ID")),
        provider_type: raw(concept(
            "http://terminology.hl7.org/CodeSystem/v3-RoleClass",
            "PROV",
            "healthcare provider",
        )),
        application_type: raw(concept(DCM, "110150", "Application")),
        destination: raw(json!({
            "type": concept(DCM, "110152", "Destination Role ID"),
            "who": {"display": "cpis-fhir"},
            "requestor": false,
        })),
        source: raw(json!({
            "observer": {"display": "cpis-fhir"},
            "type": [coding(
                "http://terminology.hl7.org/CodeSystem/security-source-type",
                "4",
                "Application Server",
            )],
        })),
        person: raw(coding(ENTITY_TYPE, "1", "Person")),
        patient_role: raw(coding(OBJECT_ROLE, "1", "Patient")),
        system_object: raw(coding(ENTITY_TYPE, "2", "System Object")),
        query_role: raw(coding(OBJECT_ROLE, "24", "Query")),
        domain_resource_role: raw(coding(OBJECT_ROLE, "4", "Domain Resource")),
        organization: raw(coding(ENTITY_TYPE, "3", "Organization")),
        request_id: raw(coding(BALP_ENTITY, "XrequestId", "X-Request-Id")),
        trace_id: raw(coding(BALP_ENTITY, "XrequestId", "TraceID")),
    }
});

/// A `Value` as raw JSON (rendering a `Value` cannot fail; `null` stands in regardless).
fn raw(v: Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(&v).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// A person's access (IHE BALP PatientRead / PatientQuery) as typed fields borrowed from the
/// row: one definition serves the API (as a `Value`) and the export (written directly).
fn access(row: &AuditRow) -> AccessEvent<'_> {
    let f = &*FIXED;
    let mut entity = Vec::with_capacity(4 + row.disclosed.len() + row.councils.0.len());
    if let Some(nhs) = &row.patient {
        entity.push(Entity {
            what: Some(Who::identified(Some(NHS_NUMBER_SYSTEM), nhs)),
            ..Entity::of(&f.person, Some(&f.patient_role))
        });
    }
    entity.push(Entity {
        query: Some(base64::engine::general_purpose::STANDARD.encode(row.query.as_bytes())),
        ..Entity::of(&f.system_object, Some(&f.query_role))
    });
    for reference in row.disclosed.iter() {
        entity.push(Entity {
            what: Some(Who {
                reference: Some(reference.into()),
                ..Who::default()
            }),
            ..Entity::of(&f.system_object, Some(&f.domain_resource_role))
        });
    }
    for ods in &row.councils.0 {
        entity.push(Entity {
            what: Some(Who {
                reference: Some(format!("Organization/{ods}").into()),
                ..Who::identified(Some(ODS_ORG_SYSTEM), ods)
            }),
            description: Some("Responsible council"),
            ..Entity::of(&f.organization, None)
        });
    }
    entity.push(Entity {
        what: Some(Who::identified(None, &row.request_id)),
        ..Entity::of(&f.request_id, None)
    });
    if let Some(trace) = &row.trace_id {
        entity.push(Entity {
            what: Some(Who::identified(None, trace)),
            description: Some("TraceID header"),
            ..Entity::of(&f.trace_id, None)
        });
    }
    AccessEvent {
        resource_type: "AuditEvent",
        id: &row.id,
        meta: &f.meta,
        kind: &f.kind,
        subtype: [Coding {
            system: "http://hl7.org/fhir/restful-interaction",
            code: &row.subtype,
        }],
        action: "E",
        recorded: instant(row.recorded),
        outcome: &row.outcome,
        outcome_desc: row.outcome_desc.as_deref(),
        purpose_of_event: if row.unscheduled {
            &f.unscheduled
        } else {
            &f.scheduled
        },
        agent: (
            Agent {
                kind: &f.user_type,
                role: Some([Concept {
                    coding: [Coding {
                        system: ROLE_SYSTEM,
                        code: &row.user_role,
                    }],
                }]),
                who: Who {
                    display: row.user_name.as_deref(),
                    ..Who::identified(Some(SDS_USER_SYSTEM), &row.user_id)
                },
                requestor: true,
            },
            Agent {
                kind: &f.provider_type,
                role: None,
                who: Who::identified(Some(ODS_ORG_SYSTEM), &row.user_org),
                requestor: false,
            },
            Agent {
                kind: &f.application_type,
                role: None,
                who: Who {
                    display: Some(&row.client),
                    ..Who::default()
                },
                requestor: false,
            },
            &f.destination,
        ),
        source: &f.source,
        entity,
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct AccessEvent<'a> {
    resource_type: &'static str,
    id: &'a str,
    meta: &'a RawValue,
    #[serde(rename = "type")]
    kind: &'a RawValue,
    subtype: [Coding<'a>; 1],
    action: &'static str,
    recorded: String,
    outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome_desc: Option<&'a str>,
    purpose_of_event: &'a RawValue,
    /// The user, their organisation, the client system, and this server (fixed).
    agent: (Agent<'a>, Agent<'a>, Agent<'a>, &'a RawValue),
    source: &'a RawValue,
    entity: Vec<Entity<'a>>,
}

/// A coding without a display: the parts of an access that vary.
#[derive(serde::Serialize)]
struct Coding<'a> {
    system: &'a str,
    code: &'a str,
}

#[derive(serde::Serialize)]
struct Concept<'a> {
    coding: [Coding<'a>; 1],
}

#[derive(serde::Serialize)]
struct Identifier<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    value: &'a str,
}

/// A Reference: `who`, `observer` or an entity's `what`.
#[derive(serde::Serialize, Default)]
struct Who<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<std::borrow::Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identifier: Option<Identifier<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    display: Option<&'a str>,
}

impl<'a> Who<'a> {
    fn identified(system: Option<&'a str>, value: &'a str) -> Self {
        Self {
            identifier: Some(Identifier { system, value }),
            ..Self::default()
        }
    }
}

#[derive(serde::Serialize)]
struct Agent<'a> {
    #[serde(rename = "type")]
    kind: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<[Concept<'a>; 1]>,
    who: Who<'a>,
    requestor: bool,
}

#[derive(serde::Serialize)]
struct Entity<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    what: Option<Who<'a>>,
    #[serde(rename = "type")]
    kind: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
}

impl<'a> Entity<'a> {
    /// An entity of this (fixed) type and object-role, nothing else yet.
    fn of(kind: &'a RawValue, role: Option<&'a RawValue>) -> Self {
        Self {
            what: None,
            kind,
            role,
            query: None,
            description: None,
        }
    }
}

/// A run of the record lifecycle: the system destroyed records under the retention rules. The
/// counts are entity details; no removed personal data is named (DOMAIN.md "Retention"). It is
/// not an access record, so it does not claim the CPIS-AuditEvent profile.
fn render_lifecycle(row: &AuditRow) -> Value {
    let counts: serde_json::Map<String, Value> =
        serde_json::from_str(&row.query).unwrap_or_default();
    let detail: Vec<Value> = counts
        .iter()
        .map(|(k, v)| json!({ "type": k, "valueString": v.to_string() }))
        .collect();
    let mut agent = json!({
        "type": { "coding": [{ "system": DCM, "code": "110150", "display": "Application" }] },
        "who": { "display": format!("cpis-fhir record lifecycle ({})", row.client) },
        "requestor": row.user_org.is_empty(),
    });
    let mut agents = vec![];
    if !row.user_org.is_empty() {
        agents.push(json!({
            "type": { "coding": [{ "system": DCM, "code": "110153", "display": "Source Role ID" }] },
            "role": [{ "coding": [{ "system": ROLE_SYSTEM, "code": "admin" }] }],
            "who": { "identifier": { "system": SDS_USER_SYSTEM, "value": row.user_id } },
            "requestor": true,
        }));
    } else {
        agent["requestor"] = json!(true);
    }
    agents.push(agent);
    let mut entities = vec![json!({
        "what": { "display": "CP-IS records past retention" },
        "type": { "system": ENTITY_TYPE, "code": "2", "display": "System Object" },
        "role": { "system": OBJECT_ROLE, "code": "20", "display": "Job" },
        "detail": detail,
    })];
    if !row.request_id.is_empty() {
        entities.push(json!({
            "what": { "identifier": { "value": row.request_id } },
            "type": { "system": BALP_ENTITY, "code": "XrequestId", "display": "X-Request-Id" },
        }));
    }
    let event = json!({
        "resourceType": "AuditEvent",
        "id": row.id,
                "type": { "system": DCM, "code": "110100", "display": "Application Activity" },
        "subtype": [{
            "system": "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle",
            "code": row.subtype,
            "display": "Destroy/Delete",
        }],
        "action": "D",
        "recorded": instant(row.recorded),
        "outcome": row.outcome,
        "agent": agents,
        "source": source(),
        "entity": entities,
    });
    with_outcome_desc(event, row)
}

/// A refused authentication (DICOM 110114 User Authentication, subtype 110122 Login, outcome
/// 4): the reason class, what the token claimed (unverified), the client address, how many
/// identical refusals this event stands for and between which instants.
fn render_refusal(row: &AuditRow) -> Value {
    let q: Value = serde_json::from_str(&row.query).unwrap_or_default();
    let count = q["count"].as_u64().unwrap_or(1);
    let mut user = json!({
        "type": { "coding": [{ "system": DCM, "code": "110153", "display": "Source Role ID" }] },
        "requestor": true,
        "network": { "address": row.client, "type": "2" },
    });
    if row.user_id.is_empty() {
        user["who"] = json!({ "display": "unknown (no readable token)" });
    } else {
        user["who"] = json!({
            "identifier": { "system": SDS_USER_SYSTEM, "value": row.user_id },
            "display": "claimed by the refused token (unverified)",
        });
    }
    let mut agents = vec![user];
    if !row.user_org.is_empty() {
        agents.push(json!({
            "type": { "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-RoleClass",
                "code": "PROV",
                "display": "healthcare provider",
            }]},
            "who": {
                "identifier": { "system": ODS_ORG_SYSTEM, "value": row.user_org },
                "display": "claimed by the refused token (unverified)",
            },
            "requestor": false,
        }));
    }
    agents.push(json!({
        "type": { "coding": [{ "system": DCM, "code": "110152", "display": "Destination Role ID" }] },
        "who": { "display": "cpis-fhir" },
        "requestor": false,
    }));
    let detail = |k: &str, v: String| json!({ "type": k, "valueString": v });
    let mut details = vec![
        detail("reason", row.subtype.clone()),
        detail("count", count.to_string()),
    ];
    if count > 1 {
        for k in ["from", "to"] {
            if let Some(t) = q[k].as_i64() {
                details.push(detail(k, instant(t)));
            }
        }
    }
    let mut entities = vec![json!({
        "what": { "display": q["request"].as_str().unwrap_or_default() },
        "type": { "system": ENTITY_TYPE, "code": "2", "display": "System Object" },
        "role": { "system": OBJECT_ROLE, "code": "24", "display": "Query" },
        "detail": details,
    })];
    entities.extend(request_entities(row));
    let event = json!({
        "resourceType": "AuditEvent",
        "id": row.id,
        "type": { "system": DCM, "code": AUTHENTICATION_CODE, "display": "User Authentication" },
        "subtype": [{ "system": DCM, "code": "110122", "display": "Login" }],
        "action": "E",
        "recorded": instant(row.recorded),
        "outcome": row.outcome,
        "agent": agents,
        "source": source(),
        "entity": entities,
    });
    with_outcome_desc(event, row)
}

/// A warning of the misuse watch (`audit::watch`): DICOM 110113 "Security Alert", naming the
/// user and the organisation and the figures, never the people looked up.
fn render_alert(row: &AuditRow) -> Value {
    let q: Value = serde_json::from_str(&row.query).unwrap_or_default();
    let mut user = json!({
        "type": { "coding": [{ "system": DCM, "code": "110153", "display": "Source Role ID" }] },
        "role": [{ "coding": [{ "system": ROLE_SYSTEM, "code": q["role"].as_str().unwrap_or_default() }] }],
        "who": { "identifier": { "system": SDS_USER_SYSTEM, "value": row.user_id } },
        "requestor": true,
        "network": { "address": row.client, "type": "2" },
    });
    if let Some(name) = &row.user_name {
        user["who"]["display"] = json!(name);
    }
    let agents = vec![user, provider_agent(&row.user_org)];
    let detail = |k: &str, v: &Value| json!({ "type": k, "valueString": v.to_string() });
    let event = json!({
        "resourceType": "AuditEvent",
        "id": row.id,
        "type": { "system": DCM, "code": SECURITY_ALERT_CODE, "display": "Security Alert" },
        "subtype": [{ "system": format!("{PROFILE_BASE}/CodeSystem/cpis-misuse-pattern"), "code": row.subtype }],
        "action": "E",
        "recorded": instant(row.recorded),
        "outcome": row.outcome,
        "agent": agents,
        "source": source(),
        "entity": [{
            "what": { "display": "look-ups by this user" },
            "type": { "system": ENTITY_TYPE, "code": "2", "display": "System Object" },
            "detail": [
                detail("distinctPeople", &q["distinct"]),
                detail("threshold", &q["threshold"]),
                detail("windowSecs", &q["windowSecs"]),
            ],
        }],
    });
    with_outcome_desc(event, row)
}

/// The accessing organisation as an agent (RoleClass PROV, by ODS code).
fn provider_agent(ods: &str) -> Value {
    json!({
        "type": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-RoleClass",
            "code": "PROV",
            "display": "healthcare provider",
        }]},
        "who": { "identifier": { "system": ODS_ORG_SYSTEM, "value": ods } },
        "requestor": false,
    })
}

/// DICOM's code for a security alert (the `type` an auditor searches the watch's warnings by).
pub const SECURITY_ALERT_CODE: &str = "110113";

/// DICOM's code for a user authentication event (the `type` an auditor searches refusals by).
pub const AUTHENTICATION_CODE: &str = "110114";

/// The event with the row's `outcomeDesc`, when it has one.
fn with_outcome_desc(mut event: Value, row: &AuditRow) -> Value {
    if let Some(desc) = &row.outcome_desc {
        event["outcomeDesc"] = json!(desc);
    }
    event
}

/// The request's `X-Request-ID` and, when sent, its `TraceID` (IHE BALP XrequestId entities).
fn request_entities(row: &AuditRow) -> Vec<Value> {
    let mut out = vec![json!({
        "what": { "identifier": { "value": row.request_id } },
        "type": { "system": BALP_ENTITY, "code": "XrequestId", "display": "X-Request-Id" },
    })];
    if let Some(trace) = &row.trace_id {
        out.push(json!({
            "what": { "identifier": { "value": trace } },
            "type": { "system": BALP_ENTITY, "code": "XrequestId", "display": "TraceID" },
            "description": "TraceID header",
        }));
    }
    out
}

/// This server as the event's source (an application server).
fn source() -> Value {
    json!({
        "observer": { "display": "cpis-fhir" },
        "type": [{
            "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
            "code": "4",
            "display": "Application Server",
        }],
    })
}
