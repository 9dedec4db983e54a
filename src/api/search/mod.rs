//! `search-type` (FHIR R4 §3.1.1): `GET /{type}?…` and `POST /{type}/_search` with a form body,
//! for Flag, Patient, Organization and AuditEvent.
//!
//! The Flag search by NHS number is the clinician's look-up (DOMAIN.md "Query"): it is audited
//! before anything is disclosed, in the same transaction as the read (see `audit`), hits,
//! misses and refusals alike. Clinicians may search only by NHS number, see no
//! entered-in-error Flag and no plan past its retention window; ended plans are shown with
//! their end date until then. Councils see only what they are responsible for.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::http::Reply;
use crate::api::read::visible_since;
use crate::audit::{disclose, AccessContext, Disclosure, Interaction};
use crate::auth::Caller;
use crate::domain::{FlagStatus, PlanType, ODS_ORG_SYSTEM, SNOMED_SYSTEM};
use crate::error::ApiError;
use crate::fhir::bundle::{Entry, SearchSet};
use crate::fhir::search::{
    date_param, instant_param, invalid, lenient, nhs_identifier, nhs_reference, pairs, token,
    Params,
};
use crate::nhs_number::NhsNumber;
use crate::records::policy::{decide, Action, Scope};
use crate::state::AppState;
use crate::store::audit::{self as audit_store, AuditRow};
use crate::store::councils::{self, CouncilRow};
use crate::store::flags::{self, FlagFilter, FlagRow};
use crate::store::patients::{self, PatientFilter, PatientRow};
use crate::store::{DbConn, Page};

pub mod audit_event;
pub mod care_team;
pub mod flag;
pub mod organization;
pub mod params;
pub mod patient;
pub mod patient_flag;
pub mod subscription;

pub use audit_event::search_audit_events;
pub use care_team::search_care_teams;
pub use flag::search_flags;
pub use organization::search_organizations;
pub use patient::search_patients;
pub use patient_flag::search_patient_flags;
pub use subscription::search_subscriptions;

/// How many accesses a person's access history shows (DOMAIN.md "access history").
pub const ACCESS_HISTORY_LENGTH: i64 = 25;
const DEFAULT_PAGE: usize = 50;

/// The search parameters of a request: the query string, plus the form body of a
/// `POST …/_search` (FHIR R4 §3.1.1.1).
fn params_of(req: &HttpRequest, body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let mut all = pairs(req.query_string())?;
    if req.method() == actix_web::http::Method::POST {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !ct.starts_with("application/x-www-form-urlencoded") {
            return Err(ApiError::UnsupportedMediaType(
                "POST _search takes an application/x-www-form-urlencoded body".into(),
            ));
        }
        let text = std::str::from_utf8(body)
            .map_err(|_| invalid("body", "the form body is not UTF-8".into()))?;
        all.extend(pairs(text)?);
    }
    Ok(all)
}

/// Best-effort NHS number of a search, so that even a refused search is audited against the
/// person it was about.
fn patient_hint(raw: &Result<Vec<(String, String)>, ApiError>, names: &[&str]) -> Option<String> {
    let raw = raw.as_ref().ok()?;
    raw.iter()
        .filter(|(k, _)| names.contains(&k.as_str()))
        .find_map(|(_, v)| {
            let digits: String = v
                .rsplit(['|', '/'])
                .next()
                .unwrap_or_default()
                .chars()
                .filter(char::is_ascii_digit)
                .collect();
            (digits.len() == 10).then_some(digits)
        })
}

/// A searchset of one page of `rows` (keyed by `key`), with `total` and paging links. `links`
/// is (query used, cursor).
fn paged_bundle<T>(
    base: &str,
    resource_type: &'static str,
    links: (String, Option<String>),
    found: Page<T>,
    key: impl Fn(&T) -> &str,
    render: impl Fn(&T) -> serde_json::Value,
) -> serde_json::Value {
    let (query, cursor) = links;
    SearchSet {
        base,
        path: resource_type,
        query,
        cursor,
        next_cursor: found.next,
        total: Some(found.total),
        entries: found
            .rows
            .iter()
            .map(|r| Entry {
                resource_type,
                id: key(r).to_owned(),
                resource: render(r),
                include: false,
            })
            .collect(),
    }
    .render()
}

/// What an audited search hands back: its rows, and what the Bundle links need.
struct Ran<T> {
    rows: T,
    used: String,
    cursor: Option<String>,
}

/// The shared shape of every audited search: parameters from the query string (and form
/// body), refused unless supported (or lenient) and turned into a query by `prepare`, then
/// `run` on the writer with the audit row written in the same transaction. Parsing happens
/// here, on the HTTP worker, so the one writer thread spends its time only on the database; a
/// parse error or refusal is carried into the writer's job and audited like any other.
#[allow(clippy::too_many_arguments)]
async fn audited_search<Q, T, P, F>(
    req: &HttpRequest,
    ctx: AccessContext,
    state: &web::Data<AppState>,
    body: web::Bytes,
    resource_type: &'static str,
    hint_names: &'static [&'static str],
    prepare: P,
    run: F,
) -> Result<Ran<T>, ApiError>
where
    Q: Send + 'static,
    T: Send + 'static,
    P: FnOnce(Params, &AppState) -> Result<Q, ApiError>,
    F: FnOnce(&mut DbConn, &Caller, Q, &AppState, String) -> Result<(T, Disclosure), ApiError>
        + Send
        + 'static,
{
    let raw = params_of(req, &body);
    let hint = patient_hint(&raw, hint_names);
    let lenient = lenient(req);
    let prepared = raw.and_then(|raw| {
        let params = Params::new(raw, params::accepted(resource_type), lenient)?;
        let used = params.query_string(true);
        let cursor = params.cursor()?;
        Ok((prepare(params, state)?, used, cursor))
    });
    let since = visible_since(state);
    let st = state.clone();
    // Reading a person's access history is audited but is not itself an access to list.
    let what = Interaction {
        resource_type,
        subtype: "search-type",
        listable: resource_type != "AuditEvent",
    };
    disclose(state.trail(), ctx, what, hint, move |conn, ctx| {
        let (query, used, cursor) = prepared?;
        let (rows, d) = run(conn, &ctx.caller, query, &st, since)?;
        Ok((Ran { rows, used, cursor }, d))
    })
    .await
}

pub(crate) fn one_patient(
    params: &Params,
    by_identifier: &[&str],
    by_reference: &[&str],
    allow_test: bool,
) -> Result<Option<NhsNumber>, ApiError> {
    let mut found: Option<NhsNumber> = None;
    let mut take = |n: NhsNumber| -> Result<(), ApiError> {
        match &found {
            Some(f) if *f != n => Err(ApiError::InvalidSearch(
                "the search names two different people".into(),
            )),
            _ => {
                found = Some(n);
                Ok(())
            }
        }
    };
    for name in by_identifier {
        for v in params.all(name) {
            take(nhs_identifier(v, allow_test)?)?;
        }
    }
    for name in by_reference {
        for v in params.all(name) {
            take(nhs_reference(v, allow_test)?)?;
        }
    }
    Ok(found)
}
