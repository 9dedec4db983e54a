//! Bulk export of the audit trail (HL7 FHIR Bulk Data Access v2, "Export" and its async request
//! pattern, FHIR R4 §3.2.6 "Asynchronous Request Patterns"):
//!
//! - `GET /AuditEvent/$export` or `GET /$export?_type=AuditEvent`, with `Prefer: respond-async`,
//!   `_since`, `_until` and the AuditEvent search's filters → 202 with `Content-Location`.
//!   Audited (who, which criteria); its end is audited too (how many).
//! - `GET /$export-status/{id}` → 202 with `X-Progress` while it runs, then 200 with the
//!   manifest; `DELETE` cancels it and deletes its files.
//! - `GET /$export-file/{id}/{name}` → the NDJSON file, to the requester only, audited.
//!
//! Who may export is who may search the trail (auditors and admins; a council its own records).

use std::io::Read;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::audit::export::{self as job, Job, EXPORT};
use crate::audit::{disclose, disclose_writing, AccessContext, Disclosure, Interaction};
use crate::auth::Caller;
use crate::error::{ApiError, Issue};
use crate::fhir::search::{instant_param, invalid, lenient, pairs, Params};
use crate::records::policy::{decide, Action};
use crate::state::AppState;
use crate::store::exports::{self, ExportRow};
use crate::store::{micros, StoreError};

/// An export that has not reported progress for this long is taken to have lost its server.
const STALLED_AFTER_SECS: i64 = 120;

const NDJSON: &str = "application/fhir+ndjson";

/// `_outputFormat` values meaning NDJSON (Bulk Data: the server must accept these).
const FORMATS: &[&str] = &["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// `GET /AuditEvent/$export`.
pub async fn export_audit_events(
    req: HttpRequest,
    ctx: AccessContext,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    kick_off(req, ctx, state).await
}

/// `GET /$export`: the system-level export, of AuditEvents only.
pub async fn export_system(
    req: HttpRequest,
    ctx: AccessContext,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    kick_off(req, ctx, state).await
}

fn bad(text: &str) -> ApiError {
    ApiError::Invalid(vec![Issue::general("invalid", text)])
}

async fn kick_off(
    req: HttpRequest,
    ctx: AccessContext,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !crate::fhir::format::prefers(&req, "respond-async") {
        return Err(bad(
            "an export runs asynchronously: send Prefer: respond-async (HL7 FHIR Bulk Data Access)",
        ));
    }
    let mut accepted: Vec<String> = super::search::params::accepted("AuditEvent").to_vec();
    accepted.extend(["_since", "_until", "_outputFormat", "_type"].map(str::to_owned));
    let params = Params::new(pairs(req.query_string())?, &accepted, lenient(&req))?;
    for t in params.all("_type").into_iter().flat_map(|v| v.split(',')) {
        if t != "AuditEvent" {
            return Err(invalid(
                "_type",
                format!("_type '{t}': this server exports AuditEvent only"),
            ));
        }
    }
    if let Some(f) = params.one("_outputFormat")? {
        if !FORMATS.contains(&f) {
            return Err(invalid(
                "_outputFormat",
                format!("_outputFormat '{f}' is not supported (application/fhir+ndjson)"),
            ));
        }
    }
    let since = match params.one("_since")? {
        Some(v) => Some(instant_param("_since", v)?.from),
        None => None,
    };
    let until = match params.one("_until")? {
        Some(v) => Some(instant_param("_until", v)?.from),
        None => None,
    };
    let nhs = super::search::one_patient(
        &params,
        &["patient:identifier", "entity:identifier"],
        &["patient"],
        state.settings.allow_test_nhs_numbers,
    )?;
    sweep(&state).await;
    let now = micros(state.now());
    let id = uuid::Uuid::new_v4().to_string();
    let request = format!(
        "{}{}",
        state.settings.base_url,
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or_default()
    );
    let at_once = state.settings.audit.exports_at_once;
    let (export_id, ctx_for_job) = (id.clone(), ctx.clone());
    let filter = disclose_writing(state.trail(), ctx, EXPORT, None, move |conn, ctx| {
        let scope = decide(&ctx.caller, Action::SearchAuditTrail)?;
        let mut filter = super::search::audit_event::trail_filter(&params, nhs, &scope)?;
        if let Some(f) = filter.as_mut() {
            f.recorded_from.extend(since);
            // A snapshot as of the kick-off: later rows wait for the next export.
            f.recorded_before
                .push(until.map_or(now, |u| u.min(now)).saturating_add(1));
        }
        if exports::running(conn, now - STALLED_AFTER_SECS * 1_000_000)? >= at_once {
            return Err(ApiError::Throttled(
                format!("{at_once} exports are running; try again when one has finished"),
                30,
            ));
        }
        exports::insert(
            conn,
            &ExportRow {
                id: export_id,
                user_id: ctx.caller.user_id.clone(),
                client: ctx.caller.client(),
                request,
                filter: format!("{filter:?}"),
                status: exports::RUNNING.to_owned(),
                created: now,
                updated: now,
                written: 0,
                files: "[]".into(),
                error: None,
                expires: None,
            },
        )?;
        let about = filter.as_ref().and_then(|f| f.patient.clone());
        Ok((filter, Disclosure::about(about)))
    })
    .await?;
    job::start(Job {
        id: id.clone(),
        filter,
        dir: state.settings.audit.export_dir.clone(),
        store: state.store.clone(),
        clock: state.clock.clone(),
        expiry: state.settings.audit.export_expiry,
        ctx: ctx_for_job,
        lowered: state.settings.bulk_low_priority,
    });
    Ok(HttpResponse::Accepted()
        .insert_header((
            header::CONTENT_LOCATION,
            format!("{}/$export-status/{id}", state.settings.base_url),
        ))
        .finish())
}

/// A finished export's files and their line counts.
fn files_of(row: &ExportRow) -> Vec<(String, u64)> {
    serde_json::from_str(&row.files).unwrap_or_default()
}

/// The export, if it is the caller's.
fn owned_by(row: Option<ExportRow>, caller: &Caller, id: &str) -> Result<ExportRow, ApiError> {
    let row = row.ok_or_else(|| ApiError::NotFound(format!("no export {id}")))?;
    if row.user_id != caller.user_id || row.client != caller.client() {
        return Err(ApiError::Forbidden(
            "an export's status and files are for the user who started it".into(),
        ));
    }
    Ok(row)
}

async fn load(state: &AppState, id: &str) -> Result<Option<ExportRow>, ApiError> {
    let id = id.to_owned();
    Ok(state
        .store
        .read(move |c| exports::get(c, &id).map_err(StoreError::from))
        .await?)
}

/// Deletes an export's files; whether they are gone.
fn delete_files(state: &AppState, id: &str) -> bool {
    match std::fs::remove_dir_all(job::files_dir(&state.settings.audit.export_dir, id)) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            log::warn!("export {id}: its files could not be deleted: {e}");
            false
        }
    }
}

/// Deletes the files of exports past their expiry and fails exports whose server went away.
async fn sweep(state: &AppState) {
    let now = micros(state.now());
    let stalled_before = now - STALLED_AFTER_SECS * 1_000_000;
    let stale = match state
        .store
        .read(move |c| exports::stale(c, now, stalled_before).map_err(StoreError::from))
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            log::warn!("expired exports could not be listed: {e}");
            return;
        }
    };
    for row in stale {
        if !delete_files(state, &row.id) {
            continue;
        }
        let running = row.status == exports::RUNNING;
        let closed = state
            .store
            .write(move |c| {
                if running {
                    let end = exports::Finished {
                        status: exports::FAILED,
                        written: row.written,
                        files: "[]".into(),
                        error: Some(
                            "the export stopped: its server went away; start a new one".into(),
                        ),
                        expires: now,
                    };
                    exports::finish(c, &row.id, &end, now)?;
                } else {
                    exports::close(c, &row.id, exports::EXPIRED, now)?;
                }
                Ok::<_, StoreError>(())
            })
            .await;
        if let Err(e) = closed {
            log::warn!("an expired export could not be closed: {e}");
        }
    }
}

/// `GET /$export-status/{id}`.
pub async fn export_status(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = crate::auth::caller_of(&req)?;
    let id = path.into_inner();
    sweep(&state).await;
    let row = owned_by(load(&state, &id).await?, &caller, &id)?;
    match row.status.as_str() {
        exports::RUNNING => Ok(HttpResponse::Accepted()
            .insert_header(("X-Progress", format!("{} AuditEvents written", row.written)))
            .insert_header((header::RETRY_AFTER, "2"))
            .finish()),
        exports::COMPLETE => {
            let files = files_of(&row);
            let output: Vec<_> = files
                .iter()
                .map(|(name, count)| {
                    json!({
                        "type": "AuditEvent",
                        "url": format!("{}/$export-file/{id}/{name}", state.settings.base_url),
                        "count": count,
                    })
                })
                .collect();
            let manifest = json!({
                "transactionTime": crate::fhir::instant(row.created),
                "request": row.request,
                "requiresAccessToken": true,
                "output": output,
                "error": [],
            });
            let mut reply = HttpResponse::Ok();
            if let Some(e) = row.expires {
                reply.insert_header((
                    header::EXPIRES,
                    crate::store::from_micros(e)
                        .format("%a, %d %b %Y %H:%M:%S GMT")
                        .to_string(),
                ));
            }
            Ok(reply.content_type("application/json").json(manifest))
        }
        exports::FAILED => Err(ApiError::Unavailable(format!(
            "export {id} failed ({}); start a new one",
            row.error.unwrap_or_default()
        ))),
        exports::CANCELLED => Err(ApiError::NotFound(format!("export {id} was cancelled"))),
        _ => Err(ApiError::NotFound(format!(
            "export {id}'s files have expired; start a new one"
        ))),
    }
}

/// `DELETE /$export-status/{id}`: cancels a running export, or deletes a finished one's files.
pub async fn cancel_export(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = crate::auth::caller_of(&req)?;
    let id = path.into_inner();
    let row = owned_by(load(&state, &id).await?, &caller, &id)?;
    if row.status != exports::RUNNING && row.status != exports::COMPLETE {
        return Err(ApiError::NotFound(format!(
            "export {id} is {}: there is nothing to cancel",
            row.status
        )));
    }
    let now = micros(state.now());
    let closing = id.clone();
    state
        .store
        .write(move |c| {
            exports::close(c, &closing, exports::CANCELLED, now).map_err(StoreError::from)
        })
        .await?;
    // A running job deletes its own files when it sees the cancellation; these are a finished
    // export's (or what a running one wrote so far).
    delete_files(&state, &id);
    Ok(HttpResponse::Accepted().finish())
}

/// `GET /$export-file/{id}/{name}`: one NDJSON file of a complete export, streamed: as kept
/// (gzip, `Content-Encoding: gzip`) to a client that accepts gzip, else inflated on the fly.
pub async fn export_file(
    req: HttpRequest,
    ctx: AccessContext,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (id, name) = path.into_inner();
    let root = state.settings.audit.export_dir.clone();
    let now = micros(state.now());
    let what = Interaction {
        resource_type: "AuditEvent",
        subtype: "read",
        listable: false,
    };
    let file = disclose(state.trail(), ctx, what, None, move |conn, ctx| {
        let row = owned_by(exports::get(conn, &id)?, &ctx.caller, &id)?;
        let gone = row.expires.is_some_and(|e| e <= now);
        if row.status != exports::COMPLETE || gone {
            return Err(ApiError::NotFound(format!(
                "export {id} has no files to download (it is {})",
                if gone { "expired" } else { row.status.as_str() }
            )));
        }
        let files = files_of(&row);
        if !files.iter().any(|(n, _)| *n == name) {
            return Err(ApiError::NotFound(format!(
                "export {id} has no file {name}"
            )));
        }
        let mut d = Disclosure::about(None);
        d.reference(format!("$export-file/{id}/{name}"));
        Ok(((job::files_dir(&root, &id), name.clone()), d))
    })
    .await?;
    let (dir, name) = file;
    let gone =
        |e: std::io::Error| ApiError::NotFound(format!("the export file is no longer there ({e})"));
    let mut ok = HttpResponse::Ok();
    ok.content_type(NDJSON)
        .insert_header((header::VARY, "accept-encoding"));
    match std::fs::File::open(dir.join(job::stored_name(&name))) {
        Ok(f) if accepts_gzip(&req) => {
            let len = f.metadata().map_err(gone)?.len();
            ok.insert_header((header::CONTENT_ENCODING, "gzip"));
            Ok(ok.body(actix_web::body::SizedStream::new(len, chunks(f))))
        }
        Ok(f) => Ok(ok.streaming(chunks(flate2::read::GzDecoder::new(f)))),
        // Kept uncompressed by an earlier version of the server.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let f = std::fs::File::open(dir.join(&name)).map_err(gone)?;
            let len = f.metadata().map_err(gone)?.len();
            Ok(ok.body(actix_web::body::SizedStream::new(len, chunks(f))))
        }
        Err(e) => Err(gone(e)),
    }
}

/// Whether the request's `Accept-Encoding` takes gzip over identity (RFC 9110 §12.5.3); an
/// unreadable header is taken as none.
fn accepts_gzip(req: &HttpRequest) -> bool {
    use actix_web::http::header::{AcceptEncoding, Encoding, Header};
    let Ok(accept) = AcceptEncoding::parse(req) else {
        return false;
    };
    accept.negotiate([Encoding::gzip(), Encoding::identity()].iter()) == Some(Encoding::gzip())
}

/// A reader's bytes as a body stream, 64 KiB at a time, each read on the blocking pool.
fn chunks<R: Read + Send + 'static>(
    reader: R,
) -> std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<web::Bytes, actix_web::Error>> + Send>>
{
    Box::pin(futures_util::stream::unfold(
        Some(reader),
        |open| async move {
            let mut r = open?;
            let read = web::block(move || {
                let mut buf = vec![0u8; 1 << 16];
                let n = r.read(&mut buf)?;
                buf.truncate(n);
                Ok::<_, std::io::Error>((r, buf))
            })
            .await;
            match read {
                Ok(Ok((_, buf))) if buf.is_empty() => None,
                Ok(Ok((r, buf))) => Some((Ok(web::Bytes::from(buf)), Some(r))),
                Ok(Err(e)) => {
                    log::error!("an export file could not be read: {e}");
                    Some((Err(actix_web::error::ErrorInternalServerError(e)), None))
                }
                Err(e) => Some((Err(actix_web::error::ErrorInternalServerError(e)), None)),
            }
        },
    ))
}
