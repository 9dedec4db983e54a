//! The FHIR REST surface: one file per interaction, and every route registered here, in one
//! table that the CapabilityStatement is generated from (FHIR R4 §3.1.0 "RESTful API").

pub mod access_report;
pub mod audit_page;
pub mod capability;
pub mod conformance;
pub mod create;
pub mod delete;
pub mod export;
pub mod history;
pub mod http;
pub mod metadata;
pub mod ops;
pub mod purge;
pub mod read;
pub mod search;
pub mod subscription;
pub mod subscription_events;
pub mod subscription_status;
pub mod transaction;
pub mod update;
pub mod vread;
pub mod write;

use actix_web::{web, HttpResponse};

use crate::error::ApiError;

/// One route: what it is to FHIR, and how actix serves it.
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    /// The resource type it serves (`None` for system-level endpoints).
    pub resource: Option<&'static str>,
    /// The FHIR interaction code (`read`, `vread`, `update`, `delete`, `history-instance`,
    /// `create`, `capabilities`).
    pub interaction: &'static str,
    route: fn() -> actix_web::Route,
}

macro_rules! endpoint {
    ($method:ident, $path:expr, $resource:expr, $interaction:expr, $handler:path) => {
        Endpoint {
            method: stringify!($method),
            path: $path,
            resource: $resource,
            interaction: $interaction,
            route: || web::$method().to($handler),
        }
    };
}

#[rustfmt::skip]
pub const ENDPOINTS: &[Endpoint] = &[
    endpoint!(get, "/metadata", None, "capabilities", metadata::metadata),
    endpoint!(post, "/", None, "transaction", transaction::submit),
    endpoint!(post, "/$purge", None, "operation", purge::purge),
    endpoint!(get, "/$export", None, "operation", export::export_system),
    // The export's status and files: URLs the kick-off hands out, not operations of their own.
    endpoint!(get, "/$export-status/{id}", None, "bulk-data", export::export_status),
    endpoint!(delete, "/$export-status/{id}", None, "bulk-data", export::cancel_export),
    endpoint!(get, "/$export-file/{id}/{name}", None, "bulk-data", export::export_file),
    // `_search` paths come before `{id}` paths, which would otherwise match them.
    endpoint!(post, "/Patient/_search", Some("Patient"), "search-type", search::search_patients),
    endpoint!(post, "/Flag/_search", Some("Flag"), "search-type", search::search_flags),
    endpoint!(post, "/Organization/_search", Some("Organization"), "search-type", search::search_organizations),
    endpoint!(post, "/AuditEvent/_search", Some("AuditEvent"), "search-type", search::search_audit_events),
    endpoint!(get, "/Patient", Some("Patient"), "search-type", search::search_patients),
    endpoint!(post, "/Patient", Some("Patient"), "create", create::create_patient),
    endpoint!(get, "/Patient/{id}", Some("Patient"), "read", read::read_patient),
    endpoint!(put, "/Patient/{id}", Some("Patient"), "update", update::update_patient),
    endpoint!(delete, "/Patient/{id}", Some("Patient"), "delete", delete::delete_patient),
    endpoint!(get, "/Patient/{id}/_history/{vid}", Some("Patient"), "vread", read::vread_patient),
    endpoint!(get, "/Flag", Some("Flag"), "search-type", search::search_flags),
    endpoint!(post, "/Flag", Some("Flag"), "create", create::create_flag),
    endpoint!(put, "/Flag", Some("Flag"), "update", update::conditional_update_flag),
    endpoint!(delete, "/Flag", Some("Flag"), "delete", delete::conditional_delete_flag),
    endpoint!(get, "/Flag/{id}", Some("Flag"), "read", read::read_flag),
    endpoint!(put, "/Flag/{id}", Some("Flag"), "update", update::update_flag),
    endpoint!(delete, "/Flag/{id}", Some("Flag"), "delete", delete::delete_flag),
    endpoint!(get, "/Flag/{id}/_history", Some("Flag"), "history-instance", history::flag_history),
    endpoint!(get, "/Flag/{id}/_history/{vid}", Some("Flag"), "vread", vread::vread_flag),
    endpoint!(get, "/Organization", Some("Organization"), "search-type", search::search_organizations),
    endpoint!(post, "/Organization", Some("Organization"), "create", create::create_organization),
    endpoint!(get, "/Organization/{id}", Some("Organization"), "read", read::read_organization),
    endpoint!(put, "/Organization/{id}", Some("Organization"), "update", update::update_organization),
    endpoint!(get, "/Organization/{id}/_history/{vid}", Some("Organization"), "vread", read::vread_organization),
    endpoint!(get, "/AuditEvent", Some("AuditEvent"), "search-type", search::search_audit_events),
    endpoint!(post, "/CareTeam/_search", Some("CareTeam"), "search-type", search::search_care_teams),
    endpoint!(get, "/CareTeam", Some("CareTeam"), "search-type", search::search_care_teams),
    endpoint!(post, "/PatientFlag/_search", Some("PatientFlag"), "search-type", search::search_patient_flags),
    endpoint!(get, "/PatientFlag", Some("PatientFlag"), "search-type", search::search_patient_flags),
    endpoint!(get, "/AuditEvent/$export", Some("AuditEvent"), "operation", export::export_audit_events),
    endpoint!(get, "/AuditEvent/$access-report", Some("AuditEvent"), "operation", access_report::access_report),
    endpoint!(get, "/AuditEvent/{id}", Some("AuditEvent"), "read", read::read_audit_event),
    endpoint!(post, "/Subscription/_search", Some("Subscription"), "search-type", search::search_subscriptions),
    endpoint!(get, "/Subscription", Some("Subscription"), "search-type", search::search_subscriptions),
    endpoint!(post, "/Subscription", Some("Subscription"), "create", create::create_subscription),
    endpoint!(get, "/Subscription/{id}", Some("Subscription"), "read", read::read_subscription),
    endpoint!(put, "/Subscription/{id}", Some("Subscription"), "update", update::update_subscription),
    endpoint!(delete, "/Subscription/{id}", Some("Subscription"), "delete", delete::delete_subscription),
    endpoint!(get, "/Subscription/{id}/_history/{vid}", Some("Subscription"), "vread", read::vread_subscription),
    endpoint!(get, "/Subscription/{id}/$status", Some("Subscription"), "operation", subscription_status::subscription_status),
    endpoint!(get, "/Subscription/{id}/$events", Some("Subscription"), "operation", subscription_events::subscription_events),
    endpoint!(get, "/Basic/{id}", Some("Basic"), "read", conformance::read_basic),
    endpoint!(get, "/StructureDefinition/{id}", Some("StructureDefinition"), "read", conformance::read_structure_definition),
    endpoint!(get, "/ValueSet/{id}", Some("ValueSet"), "read", conformance::read_value_set),
    endpoint!(get, "/CodeSystem/{id}", Some("CodeSystem"), "read", conformance::read_code_system),
    endpoint!(get, "/OperationDefinition/{id}", Some("OperationDefinition"), "read", conformance::read_operation_definition),
];

type MakeRoute = fn() -> actix_web::Route;

/// The operators' routes (see `ops`): outside the FHIR API, its bearer tokens and its
/// CapabilityStatement.
#[rustfmt::skip]
const OPERATIONS: &[(&str, MakeRoute)] = &[
    ("/health/live", || web::get().to(ops::live)),
    ("/health/ready", || web::get().to(ops::ready)),
    ("/metrics", || web::get().to(ops::metrics)),
    ("/.well-known/smart-configuration", || web::get().to(ops::smart_configuration)),
    ("/audit", || web::get().to(audit_page::to_page)),
    ("/audit/", || web::get().to(audit_page::page)),
    ("/audit/app.js", || web::get().to(audit_page::script)),
    ("/audit/style.css", || web::get().to(audit_page::style)),
];

/// Registers every endpoint: one resource per path, so a known path with an unsupported method
/// answers 405 rather than 404. The FHIR API is served at the root and again under each of
/// `base_paths` (for example the national CP-IS API's `/cpis/FHIR/R4`), so an EPR configured
/// with the national base URL's path works unchanged.
pub fn configure(cfg: &mut web::ServiceConfig, base_paths: &[String]) {
    for (path, route) in OPERATIONS {
        cfg.service(
            web::resource(*path)
                .route(route())
                .default_service(web::to(method_not_allowed)),
        );
    }
    for base in base_paths {
        cfg.service(web::scope(base).configure(fhir_routes));
    }
    fhir_routes(cfg);
}

/// Why a configured base path cannot be used: its first segment is one the server's own routes
/// begin with, which it would hide.
pub fn base_path_clash(base: &str) -> Option<String> {
    let first = base.split('/').nth(1)?;
    let ours = ENDPOINTS
        .iter()
        .map(|e| e.path)
        .chain(OPERATIONS.iter().map(|(p, _)| *p))
        .any(|path| path.split('/').nth(1) == Some(first));
    ours.then(|| format!("base path {base} would hide the server's own /{first}"))
}

fn fhir_routes(cfg: &mut web::ServiceConfig) {
    let mut seen: Vec<&str> = Vec::new();
    for e in ENDPOINTS {
        if seen.contains(&e.path) {
            continue;
        }
        seen.push(e.path);
        let resource = ENDPOINTS
            .iter()
            .filter(|x| x.path == e.path)
            .fold(web::resource(e.path), |r, x| r.route((x.route)()))
            .default_service(web::to(method_not_allowed));
        cfg.service(resource);
    }
}

async fn method_not_allowed(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    // Under a base path the pattern carries it; the table's paths do not.
    let full = req.match_pattern();
    let pattern = full.as_deref().map(|p| {
        ENDPOINTS
            .iter()
            .map(|e| e.path)
            .filter(|path| p.ends_with(path))
            .max_by_key(|path| path.len())
            .unwrap_or(p)
    });
    let mut allowed: Vec<String> = ENDPOINTS
        .iter()
        .filter(|e| pattern == Some(e.path))
        .map(|e| e.method.to_ascii_uppercase())
        .collect();
    if OPERATIONS.iter().any(|(p, _)| pattern == Some(*p)) {
        allowed.push("GET".into());
    }
    Err(ApiError::MethodNotAllowed(format!(
        "{} is not supported here; allowed: {}",
        req.method(),
        allowed.join(", ")
    )))
}

/// Anything no route matches.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(
        "no such endpoint; GET /metadata lists what this server supports".into(),
    ))
}
