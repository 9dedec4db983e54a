//! Audit before disclosure (DESIGN.md "The disclosure path"; DOMAIN.md "Interactions": every
//! look-up is recorded). Every read or search of Patient, Flag or AuditEvent data — hit, miss or
//! refusal, by any authenticated caller — writes exactly one audit row naming exactly what the
//! read disclosed; the response is sent only after that row commits. If the row cannot be
//! written the caller gets 503 and nothing is disclosed (fail closed). On SQLite the read takes
//! a consistent snapshot beside the writer and only the row goes to the writer ([`disclose`]);
//! on PostgreSQL, and where the access writes too, read and row share one transaction
//! ([`disclose_writing`]).

pub mod export;
pub mod refusals;
pub mod report;
pub mod watch;

use std::future::{ready, Ready};

use actix_web::{FromRequest, HttpMessage, HttpRequest};

use crate::auth::Caller;
use crate::domain::Clock;
use crate::error::ApiError;
use crate::notify::Wake;
use crate::store::audit::{self as audit_store, AuditRow};
use crate::store::columns::{CouncilList, JsonList};
use crate::store::{micros, DbConn, Store};

/// Who is asking, in which care setting, for which request: everything an audit row needs
/// besides the outcome.
#[derive(Debug, Clone)]
pub struct AccessContext {
    pub caller: Caller,
    pub request_id: String,
    pub trace_id: Option<String>,
    /// Unscheduled care (the look-up notifies the council and is listed in the history), or the
    /// reason the `IsUnscheduledAccessEvent` header was refused — itself an audited refusal.
    pub unscheduled: Result<bool, String>,
    /// Method, path and query string as received.
    pub query: String,
}

impl AccessContext {
    fn from_parts(req: &HttpRequest, caller: Caller) -> Self {
        let header = req.headers().get("IsUnscheduledAccessEvent").map(|h| {
            // Recorded in the audit row when refused: printable characters only.
            let v = h.to_str().unwrap_or("").trim().to_ascii_lowercase();
            v.chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(64)
                .collect::<String>()
        });
        // DOMAIN.md: absent means unscheduled; `false` is a silent read (scheduled care).
        let unscheduled = match (caller.role.is_unscheduled_care(), header.as_deref()) {
            (_, Some(v)) if v != "true" && v != "false" => Err(format!(
                "the IsUnscheduledAccessEvent header must be true or false, not '{v}'"
            )),
            (true, Some("false")) => Ok(false),
            (true, _) => Ok(true),
            (false, _) => Ok(false),
        };
        let trace_id = req
            .headers()
            .get("TraceID")
            .and_then(|h| h.to_str().ok())
            .map(|s| s.chars().take(200).collect());
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let uri = req.uri();
        let query = format!(
            "{} {}",
            req.method(),
            uri.path_and_query()
                .map(|p| p.as_str())
                .unwrap_or(uri.path())
        );
        Self {
            caller,
            request_id,
            trace_id,
            unscheduled,
            query,
        }
    }

    pub fn is_unscheduled(&self) -> bool {
        matches!(self.unscheduled, Ok(true))
    }
}

impl FromRequest for AccessContext {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(crate::auth::caller_of(req).map(|caller| Self::from_parts(req, caller)))
    }
}

/// What a read disclosed, for the audit row.
#[derive(Debug, Default, Clone)]
pub struct Disclosure {
    /// The person the access was about, once known.
    pub patient: Option<String>,
    /// Version-specific references disclosed: `Flag/{id}/_history/{v}`, `Patient/{nhs}`, …
    pub references: Vec<String>,
    /// ODS codes of the councils responsible for what was disclosed.
    pub councils: Vec<String>,
}

impl Disclosure {
    pub fn about(patient: Option<String>) -> Self {
        Self {
            patient,
            ..Self::default()
        }
    }

    pub fn flag(&mut self, id: &str, version: i64, council: &str) {
        self.references
            .push(format!("Flag/{id}/_history/{version}"));
        if !self.councils.iter().any(|c| c == council) {
            self.councils.push(council.to_owned());
        }
    }

    pub fn reference(&mut self, r: String) {
        self.references.push(r);
    }
}

/// What kind of access this was, for the audit row.
#[derive(Debug, Clone, Copy)]
pub struct Interaction {
    pub resource_type: &'static str,
    /// FHIR restful-interaction code.
    pub subtype: &'static str,
    /// Whether this kind of access can appear in a person's access history (a look-up of their
    /// record; not a reading of the history itself).
    pub listable: bool,
}

/// Runs a read (`f`) if the access is `permitted` (see [`admit`]), then writes its audit row,
/// on the same connection and in the same transaction: for an audited access whose read must share the audit row's transaction because
/// it writes too (an export's kick-off, which records the export it starts). Refusals from `f`
/// are audited and returned inside `Ok`, with whether the access was listed (and so is to be
/// notified); only a failure to write the audit row is an outer `Err`, which rolls back and
/// answers 503.
pub fn audited<T>(
    conn: &mut DbConn,
    ctx: &AccessContext,
    what: Interaction,
    patient_hint: Option<String>,
    (now, permitted): (i64, Result<(), ApiError>),
    f: impl FnOnce(&mut DbConn) -> Result<(T, Disclosure), ApiError>,
) -> Result<(Result<T, ApiError>, Recorded), ApiError> {
    let outcome = permitted.and_then(|()| f(conn));
    let row = row_for(ctx, what, patient_hint, now, &outcome);
    let recorded = Recorded::of(&row);
    record(conn, &row)?;
    Ok((outcome.map(|(t, _)| t), recorded))
}

/// Writes an audited access's row; failing, nothing may be disclosed (fail closed).
fn record(conn: &mut DbConn, row: &AuditRow) -> Result<(), ApiError> {
    audit_store::insert(conn, row)
        .map_err(|e| ApiError::Unavailable(format!("the audit trail could not be written: {e}")))
}

/// What an audited read's row says, for what follows its commit.
#[derive(Debug, Clone, Copy)]
pub struct Recorded {
    /// In the person's access history, so to be notified.
    pub listed: bool,
    pub unscheduled: bool,
    /// A plan was shown.
    pub found: bool,
}

impl Recorded {
    fn of(row: &AuditRow) -> Self {
        Self {
            listed: row.listed,
            unscheduled: row.unscheduled,
            found: row.outcome == "0" && !row.disclosed.0.is_empty(),
        }
    }
}

fn row_for<T>(
    ctx: &AccessContext,
    what: Interaction,
    patient_hint: Option<String>,
    now: i64,
    outcome: &Result<(T, Disclosure), ApiError>,
) -> AuditRow {
    let (code, desc, disclosure) = match outcome {
        Ok((_, d)) => ("0", None, Some(d)),
        Err(e) => {
            let status = actix_web::ResponseError::status_code(e);
            let code = if status.is_server_error() { "8" } else { "4" };
            (code, Some(format!("{} {e}", status.as_u16())), None)
        }
    };
    let disclosed = disclosure.map(|d| d.references.clone()).unwrap_or_default();
    let councils = CouncilList(disclosure.map(|d| d.councils.clone()).unwrap_or_default());
    let patient = disclosure.and_then(|d| d.patient.clone()).or(patient_hint);
    let listed = disclosure.is_some_and(|d| is_listed(ctx, what, code == "0", d));
    AuditRow {
        id: audit_store::new_id(now),
        recorded: now,
        resource_type: what.resource_type.to_owned(),
        subtype: what.subtype.to_owned(),
        outcome: code.to_owned(),
        outcome_desc: desc,
        user_id: ctx.caller.user_id.clone(),
        user_name: ctx.caller.name.clone(),
        user_role: ctx.caller.role.as_str().to_owned(),
        user_org: ctx.caller.org.as_str().to_owned(),
        client: ctx.caller.client(),
        patient,
        councils,
        disclosed: JsonList(disclosed),
        request_id: ctx.request_id.clone(),
        trace_id: ctx.trace_id.clone(),
        unscheduled: ctx.is_unscheduled(),
        listed,
        query: ctx.query.clone(),
    }
}

/// The audit row of something a caller set going that ends after their request (a bulk export's
/// completion): dated `now`, with its own outcome and description.
pub fn later_row(
    ctx: &AccessContext,
    what: Interaction,
    patient: Option<String>,
    now: i64,
    outcome: &str,
    desc: String,
) -> AuditRow {
    let mut row = row_for(ctx, what, None, now, &Ok(((), Disclosure::about(patient))));
    row.outcome = outcome.to_owned();
    row.outcome_desc = Some(desc);
    row.listed = false;
    row
}

/// The request's id (set by the request middleware), available to handlers through request
/// extensions and recorded on every AuditEvent.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Where audited reads are written: the store, the clock that dates them, and the
/// notification worker to wake when one must be notified.
#[derive(Clone, Copy)]
pub struct Trail<'a> {
    pub store: &'a Store,
    pub clock: &'a Clock,
    pub wake: &'a Wake,
    /// The look-up limits and the misuse watch.
    pub watch: &'a watch::Watch,
}

/// Runs an audited read and returns its result once its audit row is committed.
/// (On PostgreSQL, as [`disclose_writing`].)
/// `f` gets a connection and the access context; a refusal it returns is audited too.
///
/// `f` only reads, so it runs on a read connection inside one read-only transaction (a
/// consistent snapshot, `Store::read_snapshot`) beside the writer; its audit row — built from
/// what `f` returned, so it names exactly the versions disclosed — is then the one job this
/// access gives the writer. Nothing is returned before that row is committed; if it cannot be
/// written the caller gets 503 and nothing is disclosed (audit before disclosure, DESIGN.md).
/// A look-up thus waits for the writer only for its row's INSERT and commit, never for its own
/// reads, which shortens every writer batch a council's upload is sliced between (issue: "a
/// clinician's look-up never waits behind a council's upload").
pub async fn disclose<T, F>(
    trail: Trail<'_>,
    ctx: AccessContext,
    what: Interaction,
    patient_hint: Option<String>,
    f: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut DbConn, &AccessContext) -> Result<(T, Disclosure), ApiError> + Send + 'static,
{
    if trail.store.backend == crate::store::Backend::Postgres {
        // PostgreSQL's writers are several and a read holds no lock there, so a read in the
        // audit row's own transaction waits for no upload; it also saves a hop to a read
        // connection over the network.
        return disclose_writing(trail, ctx, what, patient_hint, f).await;
    }
    let (now, permitted, warn) = admit(trail, &ctx, patient_hint.as_deref());
    let ctx = std::sync::Arc::new(ctx);
    let outcome = match permitted {
        Err(refused) => Err(refused),
        Ok(()) => {
            let reader = std::sync::Arc::clone(&ctx);
            // A look-up reads a few indexed rows: on this worker. The audit team's searches
            // may read thousands (an organisation's share of millions of rows): on the pool.
            let here = what.resource_type != "AuditEvent";
            trail
                .store
                .read_snapshot(here, move |c| f(c, &reader))
                .await
                // No snapshot to read from: an access that failed, and is audited as one.
                .unwrap_or_else(|e| Err(ApiError::from(e)))
        }
    };
    let row = row_for(&ctx, what, patient_hint, now, &outcome);
    let recorded = Recorded::of(&row);
    // The row is the job's one write (its outbox row is written by the same statement), so it
    // needs no savepoint; a failure rolls back the whole batch.
    trail
        .store
        .write_unguarded(move |conn| record(conn, &row))
        .await?;
    finish(trail, warn, recorded).await;
    outcome.map(|(t, _)| t)
}

/// [`disclose`] for an access whose `f` writes as well as reads (an export's kick-off): `f`
/// runs on the writer, in the same transaction as the audit row.
pub async fn disclose_writing<T, F>(
    trail: Trail<'_>,
    ctx: AccessContext,
    what: Interaction,
    patient_hint: Option<String>,
    f: F,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&mut DbConn, &AccessContext) -> Result<(T, Disclosure), ApiError> + Send + 'static,
{
    let (now, permitted, warn) = admit(trail, &ctx, patient_hint.as_deref());
    let (outcome, recorded) = trail
        .store
        .write_unguarded(move |conn| {
            audited(conn, &ctx, what, patient_hint, (now, permitted), |c| {
                f(c, &ctx)
            })
        })
        .await?;
    finish(trail, warn, recorded).await;
    outcome
}

/// An audited access as it starts: its time, whether it may read — refused for a bad
/// `IsUnscheduledAccessEvent` header, then past the look-up limits; either refusal is audited
/// like any — and the misuse watch's warning row, if this access raised one.
fn admit(
    trail: Trail<'_>,
    ctx: &AccessContext,
    patient_hint: Option<&str>,
) -> (i64, Result<(), ApiError>, Option<AuditRow>) {
    let now = micros((trail.clock)());
    let (admitted, warn) = trail.watch.look_up(&ctx.caller, patient_hint, now);
    let permitted = match &ctx.unscheduled {
        Err(why) => Err(ApiError::PreconditionHeader(why.clone())),
        Ok(_) => admitted,
    };
    (now, permitted, warn)
}

/// What follows an audited access's commit: its metrics, the misuse watch's warning (an audit
/// row of its own), and waking the notifier when the access is to be notified.
async fn finish(trail: Trail<'_>, warn: Option<AuditRow>, recorded: Recorded) {
    crate::metrics::disclosure(recorded.unscheduled, recorded.found);
    if let Some(row) = warn {
        log::warn!(
            "misuse watch: {}",
            row.outcome_desc.as_deref().unwrap_or_default()
        );
        if let Err(e) = trail
            .store
            .write(move |c| Ok::<_, crate::store::StoreError>(audit_store::insert(c, &row)?))
            .await
        {
            log::error!("the misuse warning could not be written: {e}");
        }
    }
    if recorded.listed {
        trail.wake.wake();
    }
}

/// Whether an access goes into the person's access history — and so is notified to the
/// responsible councils (DOMAIN.md: unscheduled → history entry and notification).
fn is_listed(ctx: &AccessContext, what: Interaction, succeeded: bool, d: &Disclosure) -> bool {
    what.listable
        && ctx.caller.role.is_unscheduled_care()
        && ctx.is_unscheduled()
        && succeeded
        && !d.references.is_empty()
}
