//! `GET /AuditEvent?…`: a person's access history (clinicians and the responsible council: the
//! latest 25 unscheduled accesses), every audit row about a person for the audit team, and the
//! system events (lifecycle runs, refused authentications).

use super::*;
use crate::fhir::{audit_event, national};

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

/// What an audit search found: a page, the next page's cursor, and the total where given.
pub(crate) struct Found {
    rows: Vec<AuditRow>,
    next: Option<String>,
    total: Option<usize>,
}

/// `_total` (FHIR R4 §3.1.1.6): `accurate` counts every match (a scan of what the filters
/// select); `none` never counts; by default the total is given only when one page is everything.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Totals {
    Accurate,
    None,
    IfComplete,
}

fn totals(p: &Params) -> Result<Totals, ApiError> {
    match p.one("_total")? {
        None | Some("estimate") => Ok(Totals::IfComplete),
        Some("accurate") => Ok(Totals::Accurate),
        Some("none") => Ok(Totals::None),
        Some(other) => Err(invalid(
            "_total",
            format!("_total '{other}' is not none, estimate or accurate"),
        )),
    }
}

fn order(p: &Params) -> Result<audit_store::Order, ApiError> {
    match p.one("_sort")? {
        None | Some("-date") => Ok(audit_store::Order::NewestFirst),
        Some("date") => Ok(audit_store::Order::OldestFirst),
        Some(other) => Err(invalid(
            "_sort",
            format!("_sort '{other}' is not supported (date or -date)"),
        )),
    }
}

/// A search's page size and cursor.
fn paging(p: &Params, state: &AppState) -> Result<(usize, Option<String>), ApiError> {
    Ok((
        p.count(DEFAULT_PAGE, state.settings.max_page_size)?,
        p.cursor()?,
    ))
}

impl Found {
    /// What showing these rows discloses: each AuditEvent, about the person searched for.
    fn disclosure(&self, patient: Option<String>) -> Disclosure {
        let mut d = Disclosure::about(patient);
        for r in &self.rows {
            d.reference(format!("AuditEvent/{}", r.id));
        }
        d
    }

    fn of(page: Page<AuditRow>, counted: Totals, first_page: bool) -> Self {
        let total = match counted {
            Totals::Accurate => Some(page.total),
            Totals::None => None,
            Totals::IfComplete => (page.next.is_none() && first_page).then_some(page.rows.len()),
        };
        Found {
            rows: page.rows,
            next: page.next,
            total,
        }
    }
}

/// The audit team's filters (FHIR R4 AuditEvent search parameters, and this server's
/// `agent-org`, `purpose`, `council`, `source`).
pub(crate) const TRAIL_PARAMS: &[&str] = &[
    "date",
    "agent",
    "agent-name",
    "agent-role",
    "agent-org",
    "entity",
    "outcome",
    "purpose",
    "council",
    "type",
    "subtype",
    "source",
    "_sort",
    "_total",
];

fn split<'a>(p: &'a Params, name: &str) -> Vec<&'a str> {
    p.all(name)
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(|v| token(v).1)
        .collect()
}

fn owned(p: &Params, name: &str) -> Vec<String> {
    split(p, name).into_iter().map(str::to_owned).collect()
}

/// Comma-separated alternatives taken whole (a `|` is part of the value).
fn whole(p: &Params, name: &str) -> Vec<String> {
    p.all(name)
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::to_owned)
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

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const EVENT_TYPES: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";

/// `type`: `rest` (an access through the API), DCM `110114` (a refused authentication),
/// `110113` (a misuse warning), `110100` (a run of the record lifecycle).
fn event_kinds(p: &Params, f: &mut audit_store::AuditFilter) -> Result<(), ApiError> {
    for v in p.all("type").into_iter().flat_map(|v| v.split(',')) {
        let (system, code) = token(v);
        let role = match (system, code) {
            (None | Some(EVENT_TYPES), "rest") => {
                f.kind_access = true;
                continue;
            }
            (None | Some(DCM), audit_event::AUTHENTICATION_CODE) => crate::domain::AUTH_ROLE,
            (None | Some(DCM), audit_event::SECURITY_ALERT_CODE) => crate::domain::WATCH_ROLE,
            (None | Some(DCM), "110100") => crate::domain::SYSTEM_ROLE,
            _ => {
                return Err(invalid(
                    "type",
                    format!(
                        "type '{v}' is not rest, {DCM}|{} (refused authentication), |{} (misuse warning) or |110100 (record lifecycle)",
                        audit_event::AUTHENTICATION_CODE,
                        audit_event::SECURITY_ALERT_CODE
                    ),
                ))
            }
        };
        f.kind_roles.push(role.to_owned());
    }
    Ok(())
}

/// The most Flags, users or organisations one search asks about: each is a subquery of its own
/// (an index kept behind the trail, see `store::audit::TrailIndex`), and thousands (one 8 KiB
/// query string of short values) could pass SQLite's expression-depth limit (a 500).
const MAX_ALTERNATIVES: usize = 100;

/// `values` of `name`, refused when there are more than [`MAX_ALTERNATIVES`].
fn at_most(values: Vec<String>, name: &str, what: &str) -> Result<Vec<String>, ApiError> {
    if values.len() > MAX_ALTERNATIVES {
        return Err(invalid(
            name,
            format!("at most {MAX_ALTERNATIVES} {what} in one search"),
        ));
    }
    Ok(values)
}

/// `entity=Flag/{id}` (or a bare id): accesses that disclosed any version of that Flag.
fn entities(p: &Params) -> Result<Vec<String>, ApiError> {
    at_most(whole(p, "entity"), "entity", "Flags")?
        .into_iter()
        .map(|v| {
            let id = v.strip_prefix("Flag/").unwrap_or(&v);
            let id = id.split("/_history/").next().unwrap_or(id);
            let valid = (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if valid {
                Ok(format!("Flag/{id}"))
            } else {
                Err(invalid(
                    "entity",
                    format!("entity '{v}' is not a Flag reference (Flag/{{id}})"),
                ))
            }
        })
        .collect()
}

/// The audit team's criteria as a filter (a council's narrowed to its own records); `None` when
/// they cannot match anything (`purpose=scheduled&purpose=unscheduled`). Shared by the search
/// and the bulk export.
pub(crate) fn trail_filter(
    p: &Params,
    nhs: Option<NhsNumber>,
    scope: &Scope,
) -> Result<Option<audit_store::AuditFilter>, ApiError> {
    let mut f = audit_store::AuditFilter {
        patient: nhs.as_ref().map(|n| n.as_str().to_owned()),
        agents: at_most(owned(p, "agent"), "agent", "users")?,
        names: whole(p, "agent-name"),
        roles: owned(p, "agent-role"),
        orgs: at_most(ods_values(p, "agent-org")?, "agent-org", "organisations")?,
        entities: entities(p)?,
        subtypes: owned(p, "subtype"),
        sources: whole(p, "source"),
        ..Default::default()
    };
    event_kinds(p, &mut f)?;
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
    let councils = ods_values(p, "council")?;
    if councils.len() > 1 {
        return Err(invalid("council", "give one council".into()));
    }
    f.council = councils.into_iter().next();
    if let Scope::OwnCouncil(own) = scope {
        // The service's own events are about no council's records: the audit team's only.
        let own_events = !f.kind_roles.is_empty()
            || f.subtypes
                .iter()
                .any(|s| s == crate::records::lifecycle::AUDIT_SUBTYPE);
        if own_events {
            return Err(ApiError::Forbidden(
                "refused authentications, misuse warnings and lifecycle runs are for the audit team (auditors, admins)".into(),
            ));
        }
        match &f.council {
            Some(c) if c != own.as_str() => {
                return Err(ApiError::Forbidden(
                    "a council searches the audit trail of its own records only".into(),
                ))
            }
            _ => f.council = Some(own.as_str().to_owned()),
        }
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
            return Ok(None);
        }
        f.unscheduled = Some(u);
    }
    Ok(Some(f))
}

/// Every audit row matching the filters, newest (or oldest) first, paged by keyset: the audit
/// team's search (a council's is narrowed to rows about its own records).
fn trail_search(
    conn: &mut DbConn,
    p: &Params,
    state: &AppState,
    nhs: Option<NhsNumber>,
    scope: Scope,
) -> Result<(Found, Disclosure), ApiError> {
    let patient = nhs.as_ref().map(|n| n.as_str().to_owned());
    let filter = trail_filter(p, nhs, &scope)?;
    let (order, counted) = (order(p)?, totals(p)?);
    let (count, cursor) = paging(p, state)?;
    let Some(f) = filter else {
        let none = Found {
            rows: Vec::new(),
            next: None,
            total: (counted != Totals::None).then_some(0),
        };
        return Ok((none, Disclosure::about(patient)));
    };
    let page = audit_store::search(
        conn,
        &f,
        order,
        cursor.as_deref(),
        count,
        counted == Totals::Accurate,
    )?;
    let found = Found::of(page, counted, cursor.is_none());
    let disclosure = found.disclosure(f.patient);
    Ok((found, disclosure))
}

fn run_audit_search(
    conn: &mut DbConn,
    caller: &Caller,
    p: &Params,
    state: &AppState,
    visible_since: String,
) -> Result<(Found, Disclosure), ApiError> {
    let allow_test = state.settings.allow_test_nhs_numbers;
    let nhs = one_patient(
        p,
        &["patient:identifier", "entity:identifier"],
        &["patient"],
        allow_test,
    )?;
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
    let listed = |conn: &mut DbConn| -> Result<Found, ApiError> {
        let rows = audit_store::listed_for_patient(conn, nhs.as_str(), ACCESS_HISTORY_LENGTH)?;
        Ok(Found {
            total: Some(rows.len()),
            rows,
            next: None,
        })
    };
    let found = match decide(caller, Action::ReadAccessHistory)? {
        Scope::ClinicianVisible => {
            if !flags::has_visible(conn, nhs.as_str(), &visible_since)? {
                Found {
                    rows: Vec::new(),
                    next: None,
                    total: Some(0),
                }
            } else {
                listed(conn)?
            }
        }
        Scope::OwnCouncil(own) => {
            if !patients::council_holds_flag(conn, nhs.as_str(), own.as_str())? {
                return Err(ApiError::Forbidden(
                    "only the council responsible for this person's record sees its access history"
                        .into(),
                ));
            }
            listed(conn)?
        }
        Scope::All => return trail_search(conn, p, state, Some(nhs), Scope::All),
    };
    let disclosure = found.disclosure(Some(nhs.as_str().to_owned()));
    Ok((found, disclosure))
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
            let (found, d) = run_audit_search(conn, caller, &params, st, since)?;
            Ok(((found, viewers), d))
        },
    )
    .await?;
    let (used, cursor) = (ran.used, ran.cursor);
    let (Found { rows, next, total }, asked) = ran.rows;
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
