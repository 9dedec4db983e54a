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
use crate::fhir::bundle::{page, Entry, SearchSet};
use crate::fhir::search::{
    date_param, instant_param, invalid, lenient, nhs_identifier, nhs_reference, pairs, token,
    DateParam, InstantParam, Params,
};
use crate::fhir::{audit_event, flag, full_date, organization, patient};
use crate::nhs_number::NhsNumber;
use crate::records::policy::{decide, Action, Scope};
use crate::state::AppState;
use crate::store::audit::{self as audit_store, AuditRow};
use crate::store::councils::{self, CouncilRow};
use crate::store::flags::{self, FlagFilter, FlagRow};
use crate::store::patients::{self, PatientRow};
use crate::store::DbConn;

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

/// A searchset of `rows` (in a stable order, keyed by `key`): the page of `count` after the
/// cursor, with `total` and paging links. `links` is (query used, cursor, count).
fn paged_bundle<T>(
    base: &str,
    resource_type: &'static str,
    links: (String, Option<String>, usize),
    rows: Vec<T>,
    key: impl Fn(&T) -> &str,
    render: impl Fn(&T) -> serde_json::Value,
) -> serde_json::Value {
    let (query, cursor, count) = links;
    let total = rows.len();
    let (rows, next) = page(rows, &key, cursor.as_deref(), count);
    SearchSet {
        base,
        path: resource_type,
        query,
        cursor,
        next_cursor: next,
        total: Some(total),
        entries: rows
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
    count: usize,
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
    supported: &'static [&'static str],
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
        let params = Params::new(raw, supported, lenient)?;
        let used = params.query_string(true);
        let count = params.count(DEFAULT_PAGE, state.settings.max_page_size)?;
        let cursor = params.cursor()?;
        Ok((prepare(params, state)?, used, count, cursor))
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
        let (query, used, count, cursor) = prepared?;
        let (rows, d) = run(conn, &ctx.caller, query, &st, since)?;
        Ok((
            Ran {
                rows,
                used,
                count,
                cursor,
            },
            d,
        ))
    })
    .await
}

fn one_patient(
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

// ---------------------------------------------------------------------------------------------
// Flag

const FLAG_PARAMS: &[&str] = &[
    "patient:identifier",
    "subject:identifier",
    "patient",
    "subject",
    "status",
    "code",
    "date",
    "_lastUpdated",
    "_include",
    "_id",
    "identifier",
];

struct FlagQuery {
    patient: Option<NhsNumber>,
    filter: FlagFilter,
    dates: Vec<DateParam>,
    updated: Vec<InstantParam>,
    include_author: bool,
    include_patient: bool,
    count: usize,
    cursor: Option<String>,
}

fn flag_query(p: &Params, state: &AppState) -> Result<FlagQuery, ApiError> {
    let allow_test = state.settings.allow_test_nhs_numbers;
    let patient = one_patient(
        p,
        &["patient:identifier", "subject:identifier"],
        &["patient", "subject"],
        allow_test,
    )?;
    let mut filter = FlagFilter {
        nhs_number: patient.as_ref().map(|n| n.as_str().to_owned()),
        ..FlagFilter::default()
    };
    for v in p.all("status").iter().flat_map(|v| v.split(',')) {
        let s = FlagStatus::parse(v)
            .ok_or_else(|| invalid("status", format!("status '{v}' is not a Flag status")))?;
        filter.statuses.push(s.as_str().to_owned());
    }
    for v in p.all("code").iter().flat_map(|v| v.split(',')) {
        match token(v) {
            (Some(system), _) if system != SNOMED_SYSTEM => {
                return Err(invalid(
                    "code",
                    format!("code system '{system}' is not SNOMED CT"),
                ))
            }
            (_, code) => filter.plan_types.push(
                PlanType::from_snomed(code)
                    .map(|p| p.snomed().to_owned())
                    .unwrap_or_else(|| code.to_owned()),
            ),
        }
    }
    if let Some(v) = p.one("identifier")? {
        let (system, value) = token(v);
        filter.identifier_system = system.map(str::to_owned);
        filter.identifier_value = Some(value.to_owned());
    }
    filter.ids = p
        .all("_id")
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::to_owned)
        .collect();
    let dates = p
        .all("date")
        .into_iter()
        .map(|v| date_param("date", v))
        .collect::<Result<_, _>>()?;
    let updated = p
        .all("_lastUpdated")
        .into_iter()
        .map(|v| instant_param("_lastUpdated", v))
        .collect::<Result<_, _>>()?;
    let mut include_author = false;
    let mut include_patient = false;
    for v in p.all("_include") {
        match v {
            "Flag:author" | "Flag:author:Organization" => include_author = true,
            "Flag:patient" | "Flag:subject" | "Flag:subject:Patient" | "Flag:patient:Patient" => {
                include_patient = true
            }
            "*" => {
                include_author = true;
                include_patient = true;
            }
            other => {
                return Err(invalid(
                    "_include",
                    format!(
                    "_include={other} is not supported (Flag:author, Flag:patient, Flag:subject)"
                ),
                ))
            }
        }
    }
    Ok(FlagQuery {
        patient,
        filter,
        dates,
        updated,
        include_author,
        include_patient,
        count: p.count(DEFAULT_PAGE, state.settings.max_page_size)?,
        cursor: p.cursor()?,
    })
}

struct FlagPage {
    flags: Vec<FlagRow>,
    total: usize,
    next: Option<String>,
    councils: Vec<CouncilRow>,
    patients: Vec<PatientRow>,
    include_author: bool,
}

fn run_flag_search(
    conn: &mut DbConn,
    caller: &Caller,
    mut q: FlagQuery,
    visible_since: String,
) -> Result<(FlagPage, Disclosure), ApiError> {
    match decide(caller, Action::SearchRecords)? {
        Scope::OwnCouncil(own) => q.filter.council = Some(own.as_str().to_owned()),
        Scope::ClinicianVisible => {
            if q.patient.is_none() {
                return Err(ApiError::Forbidden(
                    "clinicians look a person up by NHS number (patient:identifier=https://fhir.nhs.uk/Id/nhs-number|…)".into(),
                ));
            }
            q.filter.visible_since = Some(visible_since);
        }
        Scope::All => {
            if q.patient.is_none() {
                return Err(ApiError::Forbidden(
                    "search Flags by NHS number (patient:identifier=https://fhir.nhs.uk/Id/nhs-number|…)".into(),
                ));
            }
        }
    }
    let rows = flags::search(conn, &q.filter)?;
    let rows: Vec<FlagRow> = rows
        .into_iter()
        .filter(|f| {
            let start = full_date(&f.period_start).unwrap_or_default();
            let end = f.period_end.as_deref().and_then(full_date);
            q.dates.iter().all(|d| d.matches_period(start, end))
                && q.updated.iter().all(|u| u.matches(f.updated_at))
        })
        .collect();
    let total = rows.len();
    let (flags, next) = page(rows, |f| f.id.as_str(), q.cursor.as_deref(), q.count);
    let mut ods: Vec<String> = flags.iter().map(|f| f.la_ods.clone()).collect();
    ods.sort();
    ods.dedup();
    // One cached lookup per council (a person rarely has more than two).
    let mut councils = Vec::with_capacity(ods.len());
    for o in &ods {
        councils.extend(councils::get(conn, o)?);
    }
    let mut disclosure = Disclosure::about(q.patient.as_ref().map(|n| n.as_str().to_owned()));
    for f in &flags {
        disclosure.flag(&f.id, f.version, &f.la_ods);
    }
    let mut people = Vec::new();
    if q.include_patient {
        let mut nhs: Vec<&str> = flags.iter().map(|f| f.nhs_number.as_str()).collect();
        nhs.sort();
        nhs.dedup();
        for n in nhs {
            if let Some(p) = patients::get(conn, n)? {
                disclosure.reference(format!("Patient/{}/_history/{}", p.nhs_number, p.version));
                people.push(p);
            }
        }
    }
    Ok((
        FlagPage {
            flags,
            total,
            next,
            councils,
            patients: people,
            include_author: q.include_author,
        },
        disclosure,
    ))
}

/// GET and `POST …/_search`.
pub async fn search_flags(
    req: HttpRequest,
    ctx: AccessContext,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ran = audited_search(
        &req,
        ctx,
        &state,
        body,
        "Flag",
        FLAG_PARAMS,
        &[
            "patient:identifier",
            "subject:identifier",
            "patient",
            "subject",
        ],
        |params, st| flag_query(&params, st),
        |conn, caller, query, _, since| run_flag_search(conn, caller, query, since),
    )
    .await?;
    let page = ran.rows;
    let name_of = |ods: &str| {
        page.councils
            .iter()
            .find(|c| c.ods_code == ods)
            .map(|c| c.name.as_str())
    };
    let mut entries: Vec<Entry> = page
        .flags
        .iter()
        .map(|f| Entry {
            resource_type: "Flag",
            id: f.id.clone(),
            resource: flag::render(f, name_of(&f.la_ods)),
            include: false,
        })
        .collect();
    if page.include_author {
        entries.extend(page.councils.iter().map(|c| Entry {
            resource_type: "Organization",
            id: c.ods_code.clone(),
            resource: organization::render(c),
            include: true,
        }));
    }
    entries.extend(page.patients.iter().map(|p| Entry {
        resource_type: "Patient",
        id: p.nhs_number.clone(),
        resource: patient::render(p),
        include: true,
    }));
    let bundle = SearchSet {
        base: &state.settings.base_url,
        path: "Flag",
        query: ran.used,
        cursor: ran.cursor,
        next_cursor: page.next,
        total: Some(page.total),
        entries,
    };
    Reply::ok(bundle.render()).into_response(&req)
}

// ---------------------------------------------------------------------------------------------
// Patient

const PATIENT_PARAMS: &[&str] = &["identifier", "_id", "family", "given", "name", "birthdate"];
const NAME_PARAMS: &[&str] = &["family", "given", "name", "birthdate"];

fn run_patient_search(
    conn: &mut DbConn,
    caller: &Caller,
    p: &Params,
    state: &AppState,
    visible_since: String,
) -> Result<(Vec<PatientRow>, Disclosure), ApiError> {
    let allow_test = state.settings.allow_test_nhs_numbers;
    let nhs = one_patient(p, &["identifier"], &["_id"], allow_test)?;
    let by_name = p.has_any(NAME_PARAMS);
    let scope = if by_name {
        decide(caller, Action::SearchPatientsByName)?
    } else {
        decide(caller, Action::SearchRecords)?
    };
    let candidates: Vec<PatientRow> =
        match (&nhs, &scope) {
            (Some(n), Scope::OwnCouncil(own)) => match patients::get(conn, n.as_str())? {
                Some(row)
                    if row.created_by == own.as_str()
                        || patients::council_holds_flag(conn, n.as_str(), own.as_str())? =>
                {
                    vec![row]
                }
                _ => Vec::new(),
            },
            (None, Scope::OwnCouncil(own)) if by_name => patients::of_council(conn, own.as_str())?,
            (None, _) => return Err(ApiError::Forbidden(
                "search Patients by NHS number (identifier=https://fhir.nhs.uk/Id/nhs-number|…)"
                    .into(),
            )),
            (Some(n), Scope::ClinicianVisible) => {
                if flags::has_visible(conn, n.as_str(), &visible_since)? {
                    patients::get(conn, n.as_str())?.into_iter().collect()
                } else {
                    Vec::new()
                }
            }
            (Some(n), _) => patients::get(conn, n.as_str())?.into_iter().collect(),
        };
    let lower = |s: &str| s.to_lowercase();
    let family = p.all("family");
    let given = p.all("given");
    let name = p.all("name");
    let births = p
        .all("birthdate")
        .into_iter()
        .map(|v| date_param("birthdate", v))
        .collect::<Result<Vec<_>, _>>()?;
    let rows: Vec<PatientRow> = candidates
        .into_iter()
        .filter(|r| {
            let givens: Vec<String> = serde_json::from_str::<Vec<String>>(&r.given)
                .unwrap_or_default()
                .iter()
                .map(|g| lower(g))
                .collect();
            let fam = lower(&r.family);
            let birth = full_date(&r.birth_date).unwrap_or_default();
            family.iter().all(|f| fam.starts_with(&lower(f)))
                && given
                    .iter()
                    .all(|g| givens.iter().any(|x| x.starts_with(&lower(g))))
                && name.iter().all(|n| {
                    let n = lower(n);
                    fam.starts_with(&n) || givens.iter().any(|x| x.starts_with(&n))
                })
                && births.iter().all(|b| b.matches_period(birth, Some(birth)))
        })
        .collect();
    let mut disclosure = Disclosure::about(nhs.map(|n| n.as_str().to_owned()));
    for r in &rows {
        disclosure.reference(format!("Patient/{}/_history/{}", r.nhs_number, r.version));
    }
    if disclosure.patient.is_none() && rows.len() == 1 {
        disclosure.patient = rows.first().map(|r| r.nhs_number.clone());
    }
    Ok((rows, disclosure))
}

/// GET and `POST …/_search`.
pub async fn search_patients(
    req: HttpRequest,
    ctx: AccessContext,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ran = audited_search(
        &req,
        ctx,
        &state,
        body,
        "Patient",
        PATIENT_PARAMS,
        &["identifier", "_id"],
        |params, _| Ok(params),
        |conn, caller, params, st, since| run_patient_search(conn, caller, &params, st, since),
    )
    .await?;
    let bundle = paged_bundle(
        &state.settings.base_url,
        "Patient",
        (ran.used, ran.cursor, ran.count),
        ran.rows,
        |r| r.nhs_number.as_str(),
        patient::render,
    );
    Reply::ok(bundle).into_response(&req)
}

// ---------------------------------------------------------------------------------------------
// Organization (councils hold no personal data: not audited)

const ORG_PARAMS: &[&str] = &["identifier", "_id", "name"];

/// GET and `POST …/_search`.
pub async fn search_organizations(
    req: HttpRequest,
    _caller: Caller,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let params = Params::new(params_of(&req, &body)?, ORG_PARAMS, lenient(&req))?;
    let mut codes: Vec<String> = Vec::new();
    for v in params.all("identifier").iter().flat_map(|v| v.split(',')) {
        match token(v) {
            (Some(s), _) if s != ODS_ORG_SYSTEM => {
                return Err(invalid(
                    "identifier",
                    format!("identifier system '{s}' is not the ODS code system"),
                ))
            }
            (_, c) => codes.push(c.to_owned()),
        }
    }
    codes.extend(
        params
            .all("_id")
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::to_owned),
    );
    let names: Vec<String> = params
        .all("name")
        .iter()
        .map(|n| n.to_lowercase())
        .collect();
    let count = params.count(DEFAULT_PAGE, state.settings.max_page_size)?;
    let cursor = params.cursor()?;
    let all = state
        .store
        .read(|conn| Ok::<_, ApiError>(councils::all(conn)?))
        .await?;
    let rows: Vec<CouncilRow> = all
        .into_iter()
        .filter(|c| codes.is_empty() || codes.contains(&c.ods_code))
        .filter(|c| {
            names
                .iter()
                .all(|n| c.name.to_lowercase().contains(n.as_str()))
        })
        .collect();
    let bundle = paged_bundle(
        &state.settings.base_url,
        "Organization",
        (params.query_string(true), cursor, count),
        rows,
        |c| c.ods_code.as_str(),
        organization::render,
    );
    Reply::ok(bundle).into_response(&req)
}

// ---------------------------------------------------------------------------------------------
// AuditEvent: a person's access history (clinicians and the responsible council: the latest 25
// unscheduled accesses that disclosed a record) or, for the audit team, every audit row.

const AUDIT_PARAMS: &[&str] = &[
    "patient:identifier",
    "patient",
    "entity:identifier",
    "subtype",
    "type",
];

/// `GET /AuditEvent?subtype=destroy`: the audit team lists the record lifecycle's runs;
/// `GET /AuditEvent?type=110114`, the refused authentications. Newest first.
fn system_events(
    conn: &mut DbConn,
    caller: &Caller,
    p: &Params,
    state: &AppState,
    role: &str,
) -> Result<(Vec<AuditRow>, Option<String>, Disclosure), ApiError> {
    decide(caller, Action::ListSystemEvents)?;
    let count = p.count(DEFAULT_PAGE, state.settings.max_page_size)?;
    let cursor = p.cursor()?;
    let limit = i64::try_from(count).unwrap_or(i64::MAX).saturating_add(1);
    let mut rows = audit_store::events_of_role(conn, role, cursor.as_deref(), limit)?;
    let next = if rows.len() > count {
        rows.truncate(count);
        rows.last().map(|r| r.id.clone())
    } else {
        None
    };
    let mut disclosure = Disclosure::about(None);
    for r in &rows {
        disclosure.reference(format!("AuditEvent/{}", r.id));
    }
    Ok((rows, next, disclosure))
}

fn run_audit_search(
    conn: &mut DbConn,
    caller: &Caller,
    p: &Params,
    state: &AppState,
    visible_since: String,
) -> Result<(Vec<AuditRow>, Option<String>, Disclosure), ApiError> {
    let allow_test = state.settings.allow_test_nhs_numbers;
    let nhs = one_patient(
        p,
        &["patient:identifier", "entity:identifier"],
        &["patient"],
        allow_test,
    )?;
    let subtypes = p.all("subtype");
    let types = p.all("type");
    let authentication = |t: &&str| {
        let code = t.rsplit('|').next().unwrap_or_default();
        let system = t.split_once('|').map(|(s, _)| s);
        code == audit_event::AUTHENTICATION_CODE
            && system.is_none_or(|s| s == "http://dicom.nema.org/resources/ontology/DCM")
    };
    match (&nhs, subtypes.as_slice(), types.as_slice()) {
        (None, [], [t]) if authentication(t) => {
            return system_events(conn, caller, p, state, crate::audit::refusals::AUTH_ROLE)
        }
        (_, _, [_, ..]) => {
            return Err(ApiError::InvalidSearch(format!(
                "type is supported only as type={} (refused authentications), without other filters",
                audit_event::AUTHENTICATION_CODE
            )))
        }
        (None, [crate::records::lifecycle::AUDIT_SUBTYPE], []) => {
            return system_events(conn, caller, p, state, crate::records::lifecycle::SYSTEM_ROLE)
        }
        (_, [], []) => {}
        _ => {
            return Err(ApiError::InvalidSearch(format!(
                "subtype is supported only as subtype={} without a patient (the record lifecycle's runs)",
                crate::records::lifecycle::AUDIT_SUBTYPE
            )))
        }
    }
    let nhs = nhs.ok_or_else(|| {
            ApiError::Forbidden(
                "access history is searched by NHS number (patient:identifier=https://fhir.nhs.uk/Id/nhs-number|…)".into(),
            )
        })?;
    let (rows, next) = match decide(caller, Action::ReadAccessHistory)? {
        Scope::ClinicianVisible => {
            if !flags::has_visible(conn, nhs.as_str(), &visible_since)? {
                (Vec::new(), None)
            } else {
                (
                    audit_store::listed_for_patient(conn, nhs.as_str(), ACCESS_HISTORY_LENGTH)?,
                    None,
                )
            }
        }
        Scope::OwnCouncil(own) => {
            if !patients::council_holds_flag(conn, nhs.as_str(), own.as_str())? {
                return Err(ApiError::Forbidden(
                    "only the council responsible for this person's record sees its access history"
                        .into(),
                ));
            }
            (
                audit_store::listed_for_patient(conn, nhs.as_str(), ACCESS_HISTORY_LENGTH)?,
                None,
            )
        }
        Scope::All => {
            let count = p.count(DEFAULT_PAGE, state.settings.max_page_size)?;
            let cursor = p.cursor()?;
            let limit = i64::try_from(count).unwrap_or(i64::MAX).saturating_add(1);
            let mut rows =
                audit_store::all_for_patient(conn, nhs.as_str(), cursor.as_deref(), limit)?;
            let next = if rows.len() > count {
                rows.truncate(count);
                rows.last().map(|r| r.id.clone())
            } else {
                None
            };
            (rows, next)
        }
    };
    let mut disclosure = Disclosure::about(Some(nhs.as_str().to_owned()));
    for r in &rows {
        disclosure.reference(format!("AuditEvent/{}", r.id));
    }
    Ok((rows, next, disclosure))
}

/// GET and `POST …/_search`.
pub async fn search_audit_events(
    req: HttpRequest,
    ctx: AccessContext,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let ran = audited_search(
        &req,
        ctx,
        &state,
        body,
        "AuditEvent",
        AUDIT_PARAMS,
        &["patient:identifier", "entity:identifier", "patient"],
        |params, _| Ok(params),
        |conn, caller, params, st, since| {
            let (rows, next, d) = run_audit_search(conn, caller, &params, st, since)?;
            Ok(((rows, next), d))
        },
    )
    .await?;
    let (used, cursor) = (ran.used, ran.cursor);
    let (rows, next) = ran.rows;
    let bundle = SearchSet {
        base: &state.settings.base_url,
        path: "AuditEvent",
        query: used,
        cursor,
        total: next.is_none().then_some(rows.len()),
        next_cursor: next,
        entries: rows
            .iter()
            .map(|r| Entry {
                resource_type: "AuditEvent",
                id: r.id.clone(),
                resource: audit_event::render(r),
                include: false,
            })
            .collect(),
    };
    Reply::ok(bundle.render()).into_response(&req)
}

// ---------------------------------------------------------------------------------------------
// Subscription: a council's own subscriptions; administrators see all.

const SUBSCRIPTION_PARAMS: &[&str] = &["status", "_id"];

pub async fn search_subscriptions(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    crate::api::subscription::require_subscriber(&caller)?;
    let params = Params::new(params_of(&req, &body)?, SUBSCRIPTION_PARAMS, lenient(&req))?;
    let statuses: Vec<String> = params
        .all("status")
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::to_owned)
        .collect();
    let ids: Vec<String> = params
        .all("_id")
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::to_owned)
        .collect();
    let count = params.count(DEFAULT_PAGE, state.settings.max_page_size)?;
    let cursor = params.cursor()?;
    let council = decide(&caller, Action::ManageSubscriptions)?
        .council()
        .map(|own| own.as_str().to_owned());
    let rows = state
        .store
        .read(move |conn| {
            Ok::<_, ApiError>(crate::store::subscriptions::list(conn, council.as_deref())?)
        })
        .await?;
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| statuses.is_empty() || statuses.contains(&r.status))
        .filter(|r| ids.is_empty() || ids.contains(&r.id))
        .collect();
    let bundle = paged_bundle(
        &state.settings.base_url,
        "Subscription",
        (params.query_string(true), cursor, count),
        rows,
        |r| r.id.as_str(),
        crate::fhir::subscription::render,
    );
    Reply::ok(bundle).into_response(&req)
}
