//! `transaction` and `batch` (FHIR R4 §3.1.0.11): `POST /` with a Bundle of Patient and Flag
//! entries — how a council's case system sends its extract.
//!
//! A transaction is all or nothing: every entry is checked first (all problems reported
//! together, each naming its entry and element), then every entry is written in one database
//! transaction, and the first refusal rolls everything back. A batch applies each entry on its
//! own, with its own savepoint. Either way each entry's result carries a CP-IS submission result
//! code (CPR06 success, CPR03 NHS number not verified, CPR07 failure).
//!
//! `urn:uuid:` full URLs are resolved across entries, so a Flag may name as its subject the
//! Patient in another entry. Resubmitting the same extract is idempotent when the council uses
//! `ifNoneExist` or the conditional update `PUT Flag?identifier=system|value`.

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use crate::api::http::{check_base, check_profile, parse_etag, receive, Received};
use crate::api::update::patient_for_id;
use crate::api::write::{self, check_plan_ref, Done, FlagTarget, Op, PlanRef, Shown};
use crate::auth::Caller;
use crate::error::{ApiError, Issue};
use crate::fhir::transaction::{self as bundle, EntryOutcome, EntryRequest, EntryResponse, Kind};
use crate::fhir::{format, json, patient};
use crate::nhs_number::NhsNumber;
use crate::records::policy::{decide, Action};
use crate::records::rules::Known;
use crate::records::RecordError;
use crate::state::AppState;
use crate::store::{self, DbConn, JobError};

pub async fn submit(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    decide(&caller, Action::WriteRecords)?;
    let answer_in = format::negotiate(&req)?;
    let limit = state.settings.bundle_body_limit;
    let limits = crate::api::http::bundle_limits(&state);
    let began = std::time::Instant::now();
    let body = receive(&req, payload, &state, limit, "Bundle", limits).await?;
    let received = began.elapsed();
    let representation = crate::fhir::format::prefers(&req, "return=representation");
    let now = state.now();
    let (today, now) = (now.date_naive(), store::micros(now));
    // Reading and checking thousands of entries is CPU work: on the bulk lane, so look-ups
    // sharing the HTTP worker or a core are not held up.
    let prepared = {
        let (lane_state, caller) = (state.clone(), caller.clone());
        state
            .bulk
            .run(move || prepare(&lane_state, &caller, &body))
            .await??
    };
    let checked = began.elapsed();
    let Prepared { kind, ops } = prepared;
    let (ready, mut results) = split(kind, ops)?;
    let entries = results.len();
    let writes = match kind {
        Kind::Transaction => {
            let caller = caller.clone();
            state
                .store
                .write_retrying(move |conn| write_transaction(conn, &caller, &ready, today, now))
                .await?
        }
        Kind::Batch => write_batch(&state, &caller, ready, today, now).await?,
    };
    let written = began.elapsed();
    for (i, r) in writes {
        results[i] = Some(r);
    }
    // Ten thousand entries' answers are CPU work too: on the bulk lane, like the reading.
    let lane = state.bulk.clone();
    let (body, content_type) = lane
        .run(move || {
            let mut room = BUNDLE_MAX_ISSUES;
            let entries = results
                .into_iter()
                .enumerate()
                .map(|(i, r)| match r {
                    Some(Ok(done)) => accepted(&state, done, representation),
                    Some(Err(e)) => refused(e, &mut room),
                    None => refused(
                        ApiError::Internal(format!("entry {i} has no result")).in_entry(i),
                        &mut room,
                    ),
                })
                .collect();
            format::render_doc(&bundle::response(kind, entries, now), answer_in)
                .map(|body| (body, answer_in.content_type()))
        })
        .await??;
    // Where a Bundle's time goes, for an operator tuning bulk loads (never who or what).
    log::debug!(
        "{kind:?} Bundle of {entries} entries: received {:?}, checked {:?}, written {:?}, answered {:?}",
        received,
        checked - received,
        written - checked,
        began.elapsed() - written
    );
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .body(body))
}

type Written = Vec<(usize, Result<Done, ApiError>)>;

/// A transaction's entries, in order, inside one writer job: the first refusal rolls
/// everything back.
fn write_transaction(
    conn: &mut DbConn,
    caller: &Caller,
    ready: &[(usize, Op)],
    today: chrono::NaiveDate,
    now: i64,
) -> Result<Written, ApiError> {
    let scope = decide(caller, Action::WriteRecords)?;
    let mut known = Known::default();
    let mut out = Vec::with_capacity(ready.len());
    for (i, op) in ready {
        let done = write::execute(conn, caller, &scope, op, today, now, &mut known)
            .map_err(|e| ApiError::from(e).in_entry(*i))?;
        out.push((*i, Ok(done)));
    }
    Ok(out)
}

/// A batch's entries, in order, as slices that are writer jobs of their own.
///
/// Each entry of a batch stands alone (FHIR R4 §3.1.0.11.1), so a council's ten-thousand-entry
/// extract need not hold the one writer for its whole length: a slice ends once it has run for
/// `bulk_slice_ms` and another job — an emergency department's audited look-up, say — is
/// waiting, and the rest follows in a later batch; the writer commits and answers the waiting
/// requests before it runs a slice taken with them. While nothing waits, the Bundle runs as one
/// job. Each slice commits (with whatever shares its batch) before the next starts; if one
/// cannot be written, the entries of the slices before it stay written, and it and those after
/// it answer 503 in their own entries.
async fn write_batch(
    state: &AppState,
    caller: &Caller,
    ready: Vec<(usize, Op)>,
    today: chrono::NaiveDate,
    now: i64,
) -> Result<Written, ApiError> {
    let ready = std::sync::Arc::new(ready);
    let slicing = Slicing {
        queue: state.store.writer_queue(),
        at_least: state.settings.bulk_slice,
    };
    let mut out: Written = Vec::with_capacity(ready.len());
    while out.len() < ready.len() {
        let start = out.len();
        let mut tries = 0;
        let slice = loop {
            let (rest, caller, slicing) = (ready.clone(), caller.clone(), slicing.clone());
            let ran = state
                .store
                .write_bulk_retrying(move |conn| {
                    write_slice(conn, &caller, &rest[start..], &slicing, today, now)
                })
                .await;
            // A slice that could not be committed left nothing behind, and its entries do
            // the same again: worth a few more tries before its entries answer 503.
            match ran {
                Err(e) if e.is_transient() && tries < SLICE_TRIES => {
                    tries += 1;
                    log::warn!("a batch slice was not written ({e}); trying again ({tries} of {SLICE_TRIES})");
                    actix_web::rt::time::sleep(std::time::Duration::from_millis(20 << tries)).await;
                }
                other => break other,
            }
        };
        match slice {
            Ok(written) if !written.is_empty() => out.extend(written),
            Ok(_) => return Err(ApiError::Internal("a batch slice wrote no entry".into())),
            // Nothing written yet: the Bundle's answer is the failure, as for one write.
            Err(e) if start == 0 => return Err(e),
            Err(e) => {
                let why = e.to_string();
                log::error!(
                    "a batch Bundle stopped after {start} of {} entries: {why}",
                    ready.len()
                );
                out.extend(ready[start..].iter().map(|(i, _)| {
                    (
                        *i,
                        Err(ApiError::Unavailable(format!(
                            "this entry was not written ({why}); the entries before it were"
                        ))
                        .in_entry(*i)),
                    )
                }));
            }
        }
    }
    Ok(out)
}

/// How many more times a batch's slice that could not be committed is tried.
const SLICE_TRIES: u32 = 3;

/// When a batch's slice makes way (see [`write_batch`]).
#[derive(Clone)]
struct Slicing {
    queue: crate::store::writer::Queue,
    at_least: std::time::Duration,
}

impl Slicing {
    fn ends(&self, began: std::time::Instant) -> bool {
        self.queue.anyone_waiting() && began.elapsed() >= self.at_least
    }
}

/// Writes entries from the start of `ready` until the slice ends; returns what each did.
///
/// Rather than a savepoint per entry — which costs SQLite a statement journal for every page
/// touched, and most of a bulk load's time — it first writes the slice under one savepoint
/// and, only if some entry is refused, undoes that and writes the same entries again, each
/// under its own savepoint. Entries are deterministic (ids were assigned beforehand), so the
/// second pass does exactly what the first would have.
fn write_slice(
    conn: &mut DbConn,
    caller: &Caller,
    ready: &[(usize, Op)],
    slicing: &Slicing,
    today: chrono::NaiveDate,
    now: i64,
) -> Result<Written, ApiError> {
    let scope = decide(caller, Action::WriteRecords)?;
    let scope = &scope;
    let began = std::time::Instant::now();
    // How many entries the one-savepoint pass tried, the refused one included.
    let mut tried = 0;
    let all_at_once = diesel::Connection::transaction(conn, |c| {
        let mut known = Known::default();
        let mut out = Vec::new();
        for (i, op) in ready {
            tried += 1;
            out.push((
                *i,
                Ok(write::execute(
                    c, caller, scope, op, today, now, &mut known,
                )?),
            ));
            if slicing.ends(began) {
                break;
            }
        }
        Ok::<_, ApiError>(out)
    });
    let conflict = |e: &ApiError| matches!(e, ApiError::Contended(_));
    match all_at_once {
        Ok(out) => Ok(out),
        // The database itself failed: nothing to gain from trying again — unless the pass
        // lost a deadlock (or a serialisation conflict) to another writer, a replica's say:
        // it was rolled back, and the entries are written again one by one.
        Err(e @ (ApiError::Internal(_) | ApiError::Unavailable(_))) => Err(e),
        Err(_) => {
            // What the first pass learnt was rolled back with it.
            let mut known = Known::default();
            Ok(ready[..tried]
                .iter()
                .map(|(i, op)| {
                    let mut attempt = || {
                        diesel::Connection::transaction(conn, |c| {
                            write::execute(c, caller, scope, op, today, now, &mut known)
                        })
                        .map_err(|e: RecordError| ApiError::from(e).in_entry(*i))
                    };
                    // An entry that loses a conflict is tried once more, in a savepoint of
                    // its own (rolled back, it left nothing behind).
                    let r = match attempt() {
                        Err(ApiError::InBundle(ref v)) if v.iter().all(|(_, e)| conflict(e)) => {
                            attempt()
                        }
                        other => other,
                    };
                    (*i, r)
                })
                .collect())
        }
    }
}

struct Prepared {
    kind: Kind,
    /// Each entry's change, or why it was refused (already naming the entry).
    ops: Vec<Result<Op, ApiError>>,
}

type Results = Vec<Option<Result<Done, ApiError>>>;

/// The entries to write, in the order to write them, and the results known already. A
/// transaction with any refused entry, or with two entries touching the same record, is refused
/// whole here, before anything is written.
#[allow(clippy::type_complexity)]
fn split(
    kind: Kind,
    ops: Vec<Result<Op, ApiError>>,
) -> Result<(Vec<(usize, Op)>, Results), ApiError> {
    let mut results: Results = Vec::with_capacity(ops.len());
    let mut ready = Vec::new();
    let mut refused = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, op) in ops.into_iter().enumerate() {
        match op {
            Ok(op) => {
                if kind == Kind::Transaction {
                    for t in op.touches() {
                        if let Some(first) = seen.insert(t.clone(), i) {
                            refused.push((
                                i,
                                ApiError::Invalid(vec![Issue::new(
                                    "business-rule",
                                    format!("Bundle.entry[{i}]"),
                                    format!(
                                        "Bundle.entry[{i}] changes {t}, which Bundle.entry[{first}] changes too; a transaction may change each record once"
                                    ),
                                )]),
                            ));
                        }
                    }
                }
                ready.push((i, op));
                results.push(None);
            }
            Err(e) => {
                if let ApiError::InBundle(v) = e.in_entry(i) {
                    refused.extend(v);
                }
                results.push(None);
            }
        }
    }
    match kind {
        Kind::Transaction if !refused.is_empty() => Err(ApiError::InBundle(refused)),
        _ => {
            for (i, e) in refused {
                results[i] = Some(Err(e.in_entry(i)));
            }
            ready.sort_by_key(|(i, op)| (op.phase(), *i));
            Ok((ready, results))
        }
    }
}

fn accepted(state: &AppState, done: Done, representation: bool) -> EntryResponse {
    let status = format!(
        "{} {}",
        write::status_of(done.status).as_u16(),
        write::status_of(done.status)
            .canonical_reason()
            .unwrap_or_default()
    );
    let note = match &done.shown {
        Shown::Note(text) => Some(text.clone()),
        _ => None,
    };
    let has_location = !matches!(done.shown, Shown::Nothing | Shown::Note(_));
    EntryResponse {
        status,
        location: has_location.then(|| done.location(state)),
        version: (done.version > 0).then_some(done.version),
        updated_at: has_location.then_some(done.updated_at),
        resource: if representation && has_location {
            done.body()
        } else {
            None
        },
        outcome: EntryOutcome::Accepted(note),
    }
}

/// `N` of an issue reading "N more problem(s) …".
fn more_count(diagnostics: &str) -> Option<usize> {
    let (n, rest) = diagnostics.split_once(' ')?;
    rest.starts_with("more problem(s)")
        .then(|| n.parse().ok())
        .flatten()
}

/// The most issues a batch response lists over all its entries; past it, each refused entry
/// shows its first issue and how many more it had, so a response stays a few bytes per entry.
pub const BUNDLE_MAX_ISSUES: usize = 1_000;

/// An entry's refusal, its issues counted against `room` (see [`BUNDLE_MAX_ISSUES`]).
fn refused(e: ApiError, room: &mut usize) -> EntryResponse {
    let status = actix_web::ResponseError::status_code(&e);
    let mut outcome = e.outcome().0;
    if let Some(issues) = outcome["issue"].as_array_mut() {
        let keep = issues.len().min((*room).max(1));
        if keep < issues.len() {
            // A dropped issue may itself be the count of issues already left out.
            let more: usize = issues[keep..]
                .iter()
                .map(|i| i["diagnostics"].as_str().and_then(more_count).unwrap_or(1))
                .sum();
            issues.truncate(keep);
            issues.push(serde_json::json!({
                "severity": "error",
                "code": "too-costly",
                "diagnostics": format!("{more} more problem(s) with this entry are not listed"),
            }));
        }
        *room = room.saturating_sub(keep);
    }
    EntryResponse {
        status: format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default()
        ),
        location: None,
        version: None,
        updated_at: None,
        resource: None,
        outcome: EntryOutcome::Refused(outcome),
    }
}

/// Reads the Bundle and turns each entry into a checked change (or its refusal).
fn prepare(state: &AppState, caller: &Caller, body: &Received) -> Result<Prepared, ApiError> {
    let value = format::parse_as(&body.scanned, &body.bytes, "Bundle")?;
    let controls = json::control_characters(&value, "Bundle");
    if !controls.is_empty() {
        return Err(ApiError::Unprocessable(controls));
    }
    let (kind, mut entries) = bundle::entries(
        value,
        &state.settings.base_url,
        state.settings.max_bundle_entries,
    )?;
    let new_ids: Vec<String> = entries
        .iter()
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    let targets = full_url_targets(&entries, &new_ids);
    let ops = entries
        .iter_mut()
        .enumerate()
        .map(|(i, e)| {
            let e = std::mem::replace(e, Err(ApiError::InBundle(Vec::new())))?;
            entry_op(state, caller, e, &targets, new_ids[i].clone()).map_err(|err| err.in_entry(i))
        })
        .collect();
    Ok(Prepared { kind, ops })
}

/// What each entry's `fullUrl` stands for once written: Patients are known by NHS number,
/// new Flags by the id about to be given them.
fn full_url_targets(
    entries: &[Result<EntryRequest, ApiError>],
    new_ids: &[String],
) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let Ok(e) = e else { continue };
        let Some(full_url) = &e.full_url else {
            continue;
        };
        let (path, query) = split_url(&e.url);
        let target = match (e.method.as_str(), path.as_slice(), query) {
            ("POST", ["Patient"], None) => e
                .resource
                .as_ref()
                .and_then(|r| r.pointer("/identifier/0/value"))
                .and_then(Value::as_str)
                .map(|nhs| format!("Patient/{nhs}")),
            ("PUT", ["Patient", id], None) => Some(format!("Patient/{id}")),
            ("POST", ["Flag"], None) => Some(format!("Flag/{}", new_ids[i])),
            ("PUT", ["Flag", id], None) => Some(format!("Flag/{id}")),
            _ => None,
        };
        if let Some(t) = target {
            map.insert(full_url.clone(), t);
        }
    }
    map
}

fn split_url(url: &str) -> (Vec<&str>, Option<&str>) {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    (path.split('/').filter(|s| !s.is_empty()).collect(), query)
}

/// Replaces references to other entries' `fullUrl`s with what those entries will be; a
/// `urn:uuid:` reference that names no entry is refused (it could never resolve).
fn resolve_references(
    resource: &mut Value,
    targets: &HashMap<String, String>,
) -> Result<(), ApiError> {
    let mut issues = Vec::new();
    for element in ["subject", "author"] {
        let Some(r) = resource.pointer_mut(&format!("/{element}/reference")) else {
            continue;
        };
        let Some(text) = r.as_str() else { continue };
        if let Some(t) = targets.get(text) {
            *r = Value::String(t.clone());
        } else if text.starts_with("urn:") {
            issues.push(Issue::new(
                "not-found",
                format!("Flag.{element}.reference"),
                format!(
                    "Flag.{element}.reference '{text}' names no entry's fullUrl in this Bundle"
                ),
            ));
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Unprocessable(issues))
    }
}

/// The checks of an entry's resource before it is read into the domain: its type, the server's
/// own rules and the CP-IS profile. The FHIR R4 base definitions come after, on the resource
/// the entry has finished with ([`then_base`]).
fn checked(state: &AppState, resource: &Value, expected: &str) -> Result<(), ApiError> {
    let found = resource.get("resourceType").and_then(Value::as_str);
    if found != Some(expected) {
        return Err(ApiError::Invalid(vec![Issue::new(
            "invalid",
            "resourceType",
            format!(
                "the request URL is for a {expected} but the resource is {}",
                found.unwrap_or("of no resourceType")
            ),
        )]));
    }
    let empties = json::forbidden_empties(resource, expected);
    if !empties.is_empty() {
        return Err(ApiError::Invalid(empties));
    }
    check_profile(state, resource, expected)
}

/// `read` (what the entry's resource says, or why it could not be read), unless the resource
/// breaks the FHIR R4 base definitions: that refusal comes first, as for a single resource
/// (`check_resource`), and the resource is not copied to be checked.
fn then_base<T>(resource: Value, read: Result<T, ApiError>) -> Result<T, ApiError> {
    check_base(resource)?;
    read
}

fn unsupported(e: &EntryRequest) -> ApiError {
    ApiError::Invalid(vec![Issue::new(
        "not-supported",
        "Bundle.entry.request",
        format!(
            "{} {} is not supported in a Bundle: use POST Patient, PUT Patient/{{nhs}}, DELETE Patient/{{nhs}}, \
             POST Flag, PUT Flag/{{id}}, PUT Flag?identifier=system|value, DELETE Flag/{{id}} or DELETE Flag?identifier=system|value",
            e.method, e.url
        ),
    )])
}

/// The change one entry asks for, checked as the single-resource interaction would check it.
fn entry_op(
    state: &AppState,
    caller: &Caller,
    mut e: EntryRequest,
    targets: &HashMap<String, String>,
    new_id: String,
) -> Result<Op, ApiError> {
    let allow_test = state.settings.allow_test_nhs_numbers;
    let expected = e.if_match.as_deref().map(parse_etag).transpose()?;
    let (path, query) = split_url(&e.url);
    let plan_ref = |q: &str| {
        PlanRef::from_query(q).ok_or_else(|| {
            ApiError::InvalidSearch(format!(
                "a conditional Flag URL needs exactly ?identifier=system|value, not '{q}'"
            ))
        })
    };
    let nhs_of = |id: &str| {
        NhsNumber::parse(id, allow_test)
            .map_err(|err| ApiError::InvalidSearch(format!("Patient/{{id}}: {err}")))
    };
    let resource = e.resource.take();
    match (e.method.as_str(), path.as_slice(), query) {
        ("POST", ["Patient"], None) => {
            let r = resource.ok_or_else(|| unsupported(&e))?;
            checked(state, &r, "Patient")?;
            let input = patient::parse(&r, allow_test, state.now().date_naive())
                .map_err(ApiError::Unprocessable);
            Ok(Op::CreatePatient(then_base(r, input)?))
        }
        ("PUT", ["Patient", id], None) => {
            let nhs = nhs_of(id)?;
            let r = resource.ok_or_else(|| unsupported(&e))?;
            checked(state, &r, "Patient")?;
            let input = if r.get("id").and_then(Value::as_str) != Some(nhs.as_str()) {
                Err(ApiError::Invalid(vec![Issue::new(
                    "invalid",
                    "Patient.id",
                    format!(
                        "Patient.id must be present and equal the id in the request URL ({nhs})"
                    ),
                )]))
            } else {
                patient_for_id(&r, &nhs, state)
            };
            Ok(Op::PutPatient {
                expected,
                input: then_base(r, input)?,
                visible_since: crate::api::read::visible_since(state),
            })
        }
        ("DELETE", ["Patient", id], None) => Ok(Op::DeletePatient(nhs_of(id)?)),
        ("POST", ["Flag"], None) | ("PUT", ["Flag"], Some(_)) | ("PUT", ["Flag", _], None) => {
            let mut r = resource.ok_or_else(|| unsupported(&e))?;
            resolve_references(&mut r, targets)?;
            checked(state, &r, "Flag")?;
            let input = write::flag_input(state, caller, &r);
            let body_id = r.get("id").and_then(Value::as_str).map(str::to_owned);
            let input = then_base(r, input)?;
            match (e.method.as_str(), path.as_slice(), query) {
                ("POST", _, _) => Ok(Op::CreateFlag {
                    condition: e.if_none_exist.as_deref().map(plan_ref).transpose()?,
                    input,
                    new_id,
                }),
                ("PUT", ["Flag", id], _) => {
                    if body_id.as_deref() != Some(*id) {
                        return Err(ApiError::Invalid(vec![Issue::new(
                            "invalid",
                            "Flag.id",
                            format!("Flag.id must be present and equal the id in the request URL ({id})"),
                        )]));
                    }
                    Ok(Op::UpdateFlag {
                        target: FlagTarget::Id((*id).to_owned()),
                        body_id,
                        expected,
                        input,
                        new_id,
                    })
                }
                (_, _, q) => {
                    let r = plan_ref(q.unwrap_or_default())?;
                    check_plan_ref(&r, &input)?;
                    Ok(Op::UpdateFlag {
                        target: FlagTarget::Ref(r),
                        body_id,
                        expected,
                        input,
                        new_id,
                    })
                }
            }
        }
        ("DELETE", ["Flag", id], None) => Ok(Op::DeleteFlag {
            target: FlagTarget::Id((*id).to_owned()),
            expected,
        }),
        ("DELETE", ["Flag"], Some(q)) => Ok(Op::DeleteFlag {
            target: FlagTarget::Ref(plan_ref(q)?),
            expected,
        }),
        _ => Err(unsupported(&e)),
    }
}
