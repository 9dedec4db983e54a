//! `GET /AuditEvent/$access-report?start=…&end=…`: the access report (see `audit::report`) as
//! FHIR `Parameters`, for the audit team (a council: over its own records). Built from the read
//! pool before its audit row is written; the report is sent once that row is committed.

use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::http::Reply;
use crate::audit::report::{self, Report};
use crate::audit::{disclose, AccessContext, Disclosure, Interaction};
use crate::error::ApiError;
use crate::fhir::search::{instant_param, invalid, lenient, pairs, Params};
use crate::records::policy::{decide, Action, Scope};
use crate::state::AppState;
use crate::store::StoreError;

const REPORT: Interaction = Interaction {
    resource_type: "AuditEvent",
    subtype: "operation",
    listable: false,
};

/// The period asked for: from the start of `start` to the end of `end` (days or instants), at
/// most `max_days` long — the report holds each user's tallies for the period in memory (a
/// year over a million accesses took ~360 MB), so one request's cost is bounded here.
fn period(req: &HttpRequest, max_days: i64) -> Result<(i64, i64), ApiError> {
    let params = Params::new(pairs(req.query_string())?, &["start", "end"], lenient(req))?;
    let (Some(start), Some(end)) = (params.one("start")?, params.one("end")?) else {
        return Err(invalid(
            "start",
            "give the period: start=YYYY-MM-DD&end=YYYY-MM-DD (or instants)".into(),
        ));
    };
    let (start, end) = (instant_param("start", start)?, instant_param("end", end)?);
    if start.prefix != crate::fhir::search::Prefix::Eq
        || end.prefix != crate::fhir::search::Prefix::Eq
    {
        return Err(invalid("start", "start and end take no prefix".into()));
    }
    if start.from >= end.to {
        return Err(invalid("end", "end is before start".into()));
    }
    if end.to.saturating_sub(start.from) > max_days.saturating_mul(86_400_000_000) {
        return Err(invalid(
            "end",
            format!(
                "the period is longer than {max_days} days (audit.report_max_days): ask for \
                 shorter periods, or run `cpis-fhir audit-report`, which reads the database directly"
            ),
        ));
    }
    Ok((start.from, end.to))
}

/// Builds the report on a read connection (off the async workers).
pub async fn build(
    state: &AppState,
    start: i64,
    end: i64,
    council: Option<String>,
) -> Result<Report, ApiError> {
    let store = state.store.clone();
    let thresholds = state.settings.audit.clone();
    let now = crate::store::micros(state.now());
    // A period's report reads and folds every access in it: bulk work, on the bulk lane.
    let built = state
        .bulk
        .run(move || {
            store.read_blocking(|c| {
                let mut read = |f: &_, after: Option<&str>| report::batch(c, f, after);
                let built = report::build(&mut read, start, end, council, &thresholds)?;
                report::with_notifications(built, c, now)
            })
        })
        .await?;
    built.map_err(|e: StoreError| ApiError::from(e))
}

pub async fn access_report(
    req: HttpRequest,
    ctx: AccessContext,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let asked = period(&req, state.settings.audit.report_max_days);
    let built = match (&asked, decide(&ctx.caller, Action::SearchAuditTrail)) {
        (Ok((start, end)), Ok(scope)) => {
            let council = match scope {
                Scope::OwnCouncil(own) => Some(own.as_str().to_owned()),
                _ => None,
            };
            Some(build(&state, *start, *end, council).await)
        }
        _ => None,
    };
    let report = disclose(state.trail(), ctx, REPORT, None, move |_, ctx| {
        asked?;
        decide(&ctx.caller, Action::SearchAuditTrail)?;
        let report = built.ok_or_else(|| ApiError::Internal("no report was built".into()))??;
        Ok((report, Disclosure::about(None)))
    })
    .await?;
    Reply::ok(report.to_parameters(&state.settings.base_url)).into_response(&req)
}
