//! `GET /AuditEvent?…`: a person's access history (clinicians and the responsible council: the
//! latest 25 unscheduled accesses), every audit row about a person for the audit team, and the
//! system events (lifecycle runs, refused authentications).

use super::*;
use crate::fhir::{audit_event, national};
use crate::store::page_limit;

/// Whether the search asks for each access's viewer as an included `PractitionerRole` (the
/// national CP-IS API's access history, "Design/Data-mapping").
fn wants_viewers(p: &Params) -> Result<bool, ApiError> {
    let mut viewers = false;
    for v in p.all("_include") {
        if params::of("AuditEvent").is_some_and(|s| s.includes.contains(&v)) {
            viewers = true;
        } else {
            return Err(invalid(
                "_include",
                format!(
                    "_include={v} is not supported ({} or AuditEvent:agent:PractitionerRole)",
                    params::AUDIT_VIEWER_INCLUDE
                ),
            ));
        }
    }
    Ok(viewers)
}

// unscheduled accesses that disclosed a record) or, for the audit team, every audit row.

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
    let (count, cursor) = paging(p, state)?;
    let (rows, next) = newest_page(
        audit_store::events_of_role(conn, role, cursor.as_deref(), page_limit(count))?,
        count,
    );
    let mut disclosure = Disclosure::about(None);
    for r in &rows {
        disclosure.reference(format!("AuditEvent/{}", r.id));
    }
    Ok((rows, next, disclosure))
}

/// A search's page size and cursor.
fn paging(p: &Params, state: &AppState) -> Result<(usize, Option<String>), ApiError> {
    Ok((
        p.count(DEFAULT_PAGE, state.settings.max_page_size)?,
        p.cursor()?,
    ))
}

/// A page from rows fetched with [`page_limit`]: the first `count`, and the next page's
/// cursor when there was one row more. No total: counting a trail is not worth it.
fn newest_page(rows: Vec<AuditRow>, count: usize) -> (Vec<AuditRow>, Option<String>) {
    let page = Page::keyset(rows, 0, count, |r| r.id.as_str());
    (page.rows, page.next)
}

/// The audit team's filters (FHIR R4 AuditEvent `date`, `agent`, `agent-role`, `outcome`, and
/// this server's `agent-org`, `purpose`, `council`).
const TRAIL_PARAMS: &[&str] = &[
    "date",
    "agent",
    "agent-role",
    "agent-org",
    "outcome",
    "purpose",
    "council",
];

fn split<'a>(p: &'a Params, name: &str) -> Vec<&'a str> {
    p.all(name)
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(|v| token(v).1)
        .collect()
}

fn ods_values(p: &Params, name: &str) -> Result<Vec<String>, ApiError> {
    split(p, name)
        .into_iter()
        .map(|v| {
            crate::domain::OdsCode::parse(v)
                .map(|o| o.as_str().to_owned())
                .ok_or_else(|| invalid(name, format!("{name} '{v}' is not an ODS code")))
        })
        .collect()
}

/// Every audit row matching the filters, newest first, paged by keyset: the audit team's search
/// (a council's is narrowed to rows about its own records).
fn trail_search(
    conn: &mut DbConn,
    p: &Params,
    state: &AppState,
    nhs: Option<NhsNumber>,
    scope: Scope,
) -> Result<(Vec<AuditRow>, Option<String>, Disclosure), ApiError> {
    let mut f = audit_store::AuditFilter {
        patient: nhs.as_ref().map(|n| n.as_str().to_owned()),
        agents: split(p, "agent").into_iter().map(str::to_owned).collect(),
        roles: split(p, "agent-role")
            .into_iter()
            .map(str::to_owned)
            .collect(),
        orgs: ods_values(p, "agent-org")?,
        ..Default::default()
    };
    for v in p.all("date") {
        let d = instant_param("date", v)?;
        use crate::fhir::search::Prefix;
        match d.prefix {
            Prefix::Eq => {
                f.recorded_from.push(d.from);
                f.recorded_before.push(d.to);
            }
            Prefix::Gt => f.recorded_from.push(d.to),
            Prefix::Ge => f.recorded_from.push(d.from),
            Prefix::Lt => f.recorded_before.push(d.from),
            Prefix::Le => f.recorded_before.push(d.to),
        }
    }
    for o in split(p, "outcome") {
        if !["0", "4", "8", "12"].contains(&o) {
            return Err(invalid(
                "outcome",
                format!("outcome '{o}' is not 0, 4, 8 or 12 (FHIR audit-event-outcome)"),
            ));
        }
        f.outcomes.push(o.to_owned());
    }
    for v in split(p, "purpose") {
        let u = match v {
            "unscheduled" => true,
            "scheduled" => false,
            other => {
                return Err(invalid(
                    "purpose",
                    format!("purpose '{other}' is not unscheduled or scheduled"),
                ))
            }
        };
        if f.unscheduled.is_some_and(|was| was != u) {
            return Ok((Vec::new(), None, Disclosure::about(f.patient)));
        }
        f.unscheduled = Some(u);
    }
    let councils = ods_values(p, "council")?;
    if councils.len() > 1 {
        return Err(invalid("council", "give one council".into()));
    }
    f.council = councils.into_iter().next();
    if let Scope::OwnCouncil(own) = &scope {
        match &f.council {
            Some(c) if c != own.as_str() => {
                return Err(ApiError::Forbidden(
                    "a council searches the audit trail of its own records only".into(),
                ))
            }
            _ => f.council = Some(own.as_str().to_owned()),
        }
    }
    let (count, cursor) = paging(p, state)?;
    let (rows, next) = newest_page(
        audit_store::search(conn, &f, cursor.as_deref(), page_limit(count))?,
        count,
    );
    let mut disclosure = Disclosure::about(f.patient);
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
    let alert = |t: &&str| {
        let code = t.rsplit('|').next().unwrap_or_default();
        let system = t.split_once('|').map(|(s, _)| s);
        code == audit_event::SECURITY_ALERT_CODE
            && system.is_none_or(|s| s == "http://dicom.nema.org/resources/ontology/DCM")
    };
    match (&nhs, subtypes.as_slice(), types.as_slice()) {
        (None, [], [t]) if authentication(t) => {
            return system_events(conn, caller, p, state, crate::audit::refusals::AUTH_ROLE)
        }
        (None, [], [t]) if alert(t) => {
            return system_events(conn, caller, p, state, crate::domain::WATCH_ROLE)
        }
        (_, _, [_, ..]) => {
            return Err(ApiError::InvalidSearch(format!(
                "type is supported only as type={} (refused authentications) or type={} (misuse warnings), without other filters",
                audit_event::AUTHENTICATION_CODE,
                audit_event::SECURITY_ALERT_CODE
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
    let trail = p.has_any(TRAIL_PARAMS);
    if trail || nhs.is_none() {
        match decide(caller, Action::SearchAuditTrail) {
            Ok(scope) => return trail_search(conn, p, state, nhs, scope),
            Err(denied) if trail => return Err(denied.into()),
            Err(_) => {}
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
            let (count, cursor) = paging(p, state)?;
            let (rows, next) = newest_page(
                audit_store::all_for_patient(
                    conn,
                    nhs.as_str(),
                    cursor.as_deref(),
                    page_limit(count),
                )?,
                count,
            );
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
        &["patient:identifier", "entity:identifier", "patient"],
        |params, _| {
            let viewers = wants_viewers(&params)?;
            Ok((params, viewers))
        },
        |conn, caller, (params, viewers), st, since| {
            let (rows, next, d) = run_audit_search(conn, caller, &params, st, since)?;
            Ok(((rows, next, viewers), d))
        },
    )
    .await?;
    let (used, cursor) = (ran.used, ran.cursor);
    let (rows, next, asked) = ran.rows;
    // An EPR built for the national API asks at its base path without `_include` and expects
    // the viewers (the guide's example answer has them).
    let national = state
        .settings
        .base_paths
        .iter()
        .any(|b| req.path().starts_with(&format!("{b}/")));
    let viewers = asked || national;
    let mut entries: Vec<Entry> = Vec::with_capacity(rows.len() * 2);
    let mut roles: Vec<Entry> = Vec::new();
    for r in &rows {
        let mut resource = audit_event::render(r);
        if viewers && audit_event::is_access(r) {
            if let Some(agents) = resource["agent"].as_array_mut() {
                agents.push(national::assigned_agent(r));
            }
            let id = national::practitioner_role_id(r);
            if !roles.iter().any(|e| e.id == id) {
                roles.push(Entry {
                    resource_type: "PractitionerRole",
                    id,
                    resource: national::practitioner_role(r),
                    include: true,
                });
            }
        }
        entries.push(Entry {
            resource_type: "AuditEvent",
            id: r.id.clone(),
            resource,
            include: false,
        });
    }
    entries.extend(roles);
    // Counted only when this one page is everything: a later page does not know what came before.
    let total = (next.is_none() && cursor.is_none()).then_some(rows.len());
    let bundle = SearchSet {
        base: &state.settings.base_url,
        path: "AuditEvent",
        query: used,
        cursor,
        total,
        next_cursor: next,
        entries,
    };
    Reply::ok(bundle.render()).into_response(&req)
}
