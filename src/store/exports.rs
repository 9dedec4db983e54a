//! Bulk exports of the audit trail (HL7 FHIR Bulk Data Access, async pattern): one row per
//! export, written with the kick-off's own audit row and moved along by the job that writes the
//! files. Status: `running`, then `complete`, `failed` or `cancelled`; `expired` once its files
//! are deleted.

use diesel::prelude::*;

use super::schema::exports;
use super::DbConn;

#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq)]
#[diesel(table_name = exports)]
#[diesel(treat_none_as_default_value = false)]
pub struct ExportRow {
    pub id: String,
    /// Who asked: only the same user of the same issuer may poll, download or cancel.
    pub user_id: String,
    pub client: String,
    /// The kick-off request's URL (the manifest's `request`).
    pub request: String,
    /// The criteria as applied (a council's narrowed to itself), for the audit team.
    pub filter: String,
    pub status: String,
    pub created: i64,
    /// When the job last reported progress (microseconds).
    pub updated: i64,
    /// AuditEvents written so far (all of them once complete).
    pub written: i64,
    /// JSON array of `[file name, line count]`.
    pub files: String,
    pub error: Option<String>,
    pub expires: Option<i64>,
}

pub const RUNNING: &str = "running";
pub const COMPLETE: &str = "complete";
pub const FAILED: &str = "failed";
pub const CANCELLED: &str = "cancelled";
pub const EXPIRED: &str = "expired";

pub fn insert(conn: &mut DbConn, row: &ExportRow) -> QueryResult<()> {
    diesel::insert_into(exports::table)
        .values(row)
        .execute(conn)
        .map(drop)
}

pub fn get(conn: &mut DbConn, id: &str) -> QueryResult<Option<ExportRow>> {
    exports::table
        .find(id)
        .select(ExportRow::as_select())
        .get_result(conn)
        .optional()
}

/// Records progress, unless the export was cancelled meanwhile; says whether it still runs.
pub fn progress(conn: &mut DbConn, id: &str, written: i64, now: i64) -> QueryResult<bool> {
    let n = diesel::update(
        exports::table
            .filter(exports::id.eq(id))
            .filter(exports::status.eq(RUNNING)),
    )
    .set((exports::written.eq(written), exports::updated.eq(now)))
    .execute(conn)?;
    Ok(n == 1)
}

/// How an export ended.
#[derive(Debug, Clone)]
pub struct Finished {
    pub status: &'static str,
    pub written: i64,
    /// JSON array of `[file name, line count]`.
    pub files: String,
    pub error: Option<String>,
    pub expires: i64,
}

/// Ends a running export (complete or failed); says whether it was still running.
pub fn finish(conn: &mut DbConn, id: &str, end: &Finished, now: i64) -> QueryResult<bool> {
    let n = diesel::update(
        exports::table
            .filter(exports::id.eq(id))
            .filter(exports::status.eq(RUNNING)),
    )
    .set((
        exports::status.eq(end.status),
        exports::written.eq(end.written),
        exports::files.eq(&end.files),
        exports::error.eq(end.error.as_deref()),
        exports::updated.eq(now),
        exports::expires.eq(Some(end.expires)),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// Marks an export cancelled or expired (its files are the caller's to delete).
pub fn close(conn: &mut DbConn, id: &str, status: &str, now: i64) -> QueryResult<()> {
    diesel::update(exports::table.filter(exports::id.eq(id)))
        .set((exports::status.eq(status), exports::updated.eq(now)))
        .execute(conn)
        .map(drop)
}

/// Exports whose files are past their time, or that stopped reporting (their server went away).
pub fn stale(conn: &mut DbConn, now: i64, stalled_before: i64) -> QueryResult<Vec<ExportRow>> {
    exports::table
        .filter(
            exports::expires
                .le(now)
                .and(exports::status.ne(EXPIRED))
                .or(exports::status
                    .eq(RUNNING)
                    .and(exports::updated.lt(stalled_before))),
        )
        .select(ExportRow::as_select())
        .load(conn)
}

/// How many exports run now (for the limit on concurrent exports).
pub fn running(conn: &mut DbConn, stalled_before: i64) -> QueryResult<i64> {
    exports::table
        .filter(exports::status.eq(RUNNING))
        .filter(exports::updated.ge(stalled_before))
        .count()
        .get_result(conn)
}
