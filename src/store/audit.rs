//! The audit trail: one row per read or search of Patient or Flag data (hit, miss or refusal),
//! never updated through the API.

use crate::store::columns::{CouncilList, JsonList};
use diesel::prelude::*;

use super::schema::audit_events;
use super::DbConn;

#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq)]
#[diesel(table_name = audit_events)]
pub struct AuditRow {
    /// UUIDv7: time-ordered, so inserts append.
    pub id: String,
    pub recorded: i64,
    /// The resource type read or searched.
    pub resource_type: String,
    /// FHIR restful-interaction code: read, vread, history-instance, search-type.
    pub subtype: String,
    /// AuditEvent.outcome: 0 success, 4 minor failure (refused, invalid), 8 serious failure.
    pub outcome: String,
    pub outcome_desc: Option<String>,
    pub user_id: String,
    pub user_name: Option<String>,
    pub user_role: String,
    pub user_org: String,
    /// The calling system (token issuer).
    pub client: String,
    /// The NHS number the access was about, where known.
    pub patient: Option<String>,
    /// Space-separated ODS codes of the councils whose records were disclosed.
    #[diesel(deserialize_as = String, serialize_as = String)]
    pub councils: CouncilList,
    /// JSON array of version-specific references disclosed (`Flag/{id}/_history/{v}`, `Patient/{nhs}`).
    #[diesel(deserialize_as = String, serialize_as = String)]
    pub disclosed: JsonList,
    pub request_id: String,
    pub trace_id: Option<String>,
    pub unscheduled: bool,
    /// Shown in the person's access history: an unscheduled access that disclosed a record.
    pub listed: bool,
    /// The query as received (method, path and query string).
    pub query: String,
}

/// The counter that keeps audit ids in the order they were made, shared by one store's writer
/// threads (PostgreSQL runs several).
pub type IdContext = std::sync::Arc<std::sync::Mutex<uuid::ContextV7>>;

thread_local! {
    /// Audit rows are made on the writer threads; each holds its store's counter.
    static AUDIT_IDS: std::cell::RefCell<Option<IdContext>> = const { std::cell::RefCell::new(None) };
}

/// Gives the calling (writer) thread its store's id counter.
pub fn use_id_context(ctx: IdContext) {
    AUDIT_IDS.with(|c| *c.borrow_mut() = Some(ctx));
}

/// A new audit id: a UUIDv7 made from the time the row records (microseconds since the epoch),
/// so ids sort by `recorded` (and, within one instant, by the order they were made), and
/// retention can delete by id range whatever clock the server was given. The counter is per
/// store, not per process, so one server's clock cannot move another's ids.
pub fn new_id(recorded: i64) -> String {
    let secs = u64::try_from(recorded.div_euclid(1_000_000)).unwrap_or(0);
    let nanos = u32::try_from(recorded.rem_euclid(1_000_000) * 1_000).unwrap_or(0);
    AUDIT_IDS.with(|c| {
        let ctx = c
            .borrow_mut()
            .get_or_insert_with(IdContext::default)
            .clone();
        let guard = ctx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        uuid::Uuid::new_v7(uuid::Timestamp::from_unix(&*guard, secs, nanos)).to_string()
    })
}

/// Writes one audit row. Every column is bound, NULLs included: the derived `Insertable` leaves
/// NULL columns out, which changes the statement's text from row to row, so Diesel rebuilt and
/// re-hashed the SQL of this 19-column insert for every look-up before finding its prepared
/// statement; with a fixed text it finds it by type.
pub fn insert(conn: &mut DbConn, row: &AuditRow) -> QueryResult<()> {
    use audit_events::dsl as a;
    let values = (
        (
            a::id.eq(&row.id),
            a::recorded.eq(row.recorded),
            a::resource_type.eq(&row.resource_type),
            a::subtype.eq(&row.subtype),
            a::outcome.eq(&row.outcome),
            a::outcome_desc.eq(row.outcome_desc.as_deref()),
            a::user_id.eq(&row.user_id),
            a::user_name.eq(row.user_name.as_deref()),
            a::user_role.eq(&row.user_role),
            a::user_org.eq(&row.user_org),
        ),
        (
            a::client.eq(&row.client),
            a::patient.eq(row.patient.as_deref()),
            a::councils.eq(row.councils.to_text()),
            a::disclosed.eq(row.disclosed.to_text()),
            a::request_id.eq(&row.request_id),
            a::trace_id.eq(row.trace_id.as_deref()),
            a::unscheduled.eq(row.unscheduled),
            a::listed.eq(row.listed),
            a::query.eq(&row.query),
        ),
    );
    // On SQLite OR IGNORE, so that the INSERT needs no statement journal (see the migration
    // `outbox_trigger_without_statement_journal`); a row it ignored is a failure like any other.
    let inserted = match conn {
        DbConn::Sqlite(c) => diesel::insert_or_ignore_into(audit_events::table)
            .values(values)
            .execute(c)?,
        DbConn::Pg(c) => diesel::insert_into(audit_events::table)
            .values(values)
            .execute(c)?,
    };
    if inserted == 1 {
        Ok(())
    } else {
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            Box::new(format!("the audit row {} was not written", row.id)),
        ))
    }
}

pub fn get(conn: &mut DbConn, id: &str) -> QueryResult<Option<AuditRow>> {
    audit_events::table
        .find(id)
        .select(AuditRow::as_select())
        .get_result(conn)
        .optional()
}

/// The person's access history: the latest `limit` listed accesses, newest first.
pub fn listed_for_patient(conn: &mut DbConn, nhs: &str, limit: i64) -> QueryResult<Vec<AuditRow>> {
    audit_events::table
        .filter(audit_events::patient.eq(nhs))
        .filter(audit_events::listed.eq(true))
        .order((audit_events::recorded.desc(), audit_events::id.desc()))
        .limit(limit)
        .select(AuditRow::as_select())
        .load(conn)
}

/// The record lifecycle's own audit rows (by the system, about no one), newest first, after the
/// cursor (an id), for the audit team. `patient IS NULL` keeps the scan on the patient index.
/// The rows of one kind of system event (the lifecycle's runs, refused authentications): rows
/// about no person, made under `role`, newest first after the cursor.
pub fn events_of_role(
    conn: &mut DbConn,
    role: &str,
    before_id: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<AuditRow>> {
    let q = audit_events::table
        .filter(audit_events::patient.is_null())
        .filter(audit_events::user_role.eq(role.to_owned()))
        .into_boxed();
    newest_first(conn, q, before_id, limit)
}

/// Every audit row about the person, newest first, after the cursor (an id), for the audit team.
pub fn all_for_patient(
    conn: &mut DbConn,
    nhs: &str,
    before_id: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<AuditRow>> {
    let q = audit_events::table
        .filter(audit_events::patient.eq(nhs.to_owned()))
        .into_boxed();
    newest_first(conn, q, before_id, limit)
}

type Boxed = audit_events::BoxedQuery<'static, <DbConn as diesel::Connection>::Backend>;

/// A page of `q`, newest first (ids are time-ordered), after the cursor.
fn newest_first(
    conn: &mut DbConn,
    mut q: Boxed,
    before_id: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<AuditRow>> {
    if let Some(b) = before_id {
        q = q.filter(audit_events::id.lt(b.to_owned()));
    }
    q.order(audit_events::id.desc())
        .limit(limit)
        .select(AuditRow::as_select())
        .load(conn)
}

/// What the audit team searches the trail by (FHIR R4 AuditEvent search parameters and this
/// server's own); every condition must hold, and within one the values are alternatives.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub patient: Option<String>,
    /// Recorded at or after, and before, these instants (microseconds); each must hold.
    pub recorded_from: Vec<i64>,
    pub recorded_before: Vec<i64>,
    /// User ids (token subjects).
    pub agents: Vec<String>,
    pub roles: Vec<String>,
    /// The accessing organisations (ODS).
    pub orgs: Vec<String>,
    /// FHIR audit-event-outcome codes: 0 success, 4 minor failure, 8 serious failure.
    pub outcomes: Vec<String>,
    /// Unscheduled (`true`) or scheduled (`false`) accesses only.
    pub unscheduled: Option<bool>,
    /// Only rows that disclosed, or were about, a record of this council.
    pub council: Option<String>,
}

/// A page of the rows matching `f`, newest first, after the cursor (an id).
pub fn search(
    conn: &mut DbConn,
    f: &AuditFilter,
    before_id: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<AuditRow>> {
    let mut q: Boxed = audit_events::table.into_boxed();
    if let Some(p) = &f.patient {
        q = q.filter(audit_events::patient.eq(p.clone()));
    }
    for t in &f.recorded_from {
        q = q.filter(audit_events::recorded.ge(*t));
    }
    for t in &f.recorded_before {
        q = q.filter(audit_events::recorded.lt(*t));
    }
    if !f.agents.is_empty() {
        q = q.filter(audit_events::user_id.eq_any(f.agents.clone()));
    }
    if !f.roles.is_empty() {
        q = q.filter(audit_events::user_role.eq_any(f.roles.clone()));
    }
    if !f.orgs.is_empty() {
        q = q.filter(audit_events::user_org.eq_any(f.orgs.clone()));
    }
    if !f.outcomes.is_empty() {
        q = q.filter(audit_events::outcome.eq_any(f.outcomes.clone()));
    }
    if let Some(u) = f.unscheduled {
        q = q.filter(audit_events::unscheduled.eq(u));
    }
    if let Some(c) = &f.council {
        // `councils` holds ODS codes (letters and digits) separated by single spaces.
        q = q.filter(
            audit_events::councils
                .eq(c.clone())
                .or(audit_events::councils.like(format!("{c} %")))
                .or(audit_events::councils.like(format!("% {c}")))
                .or(audit_events::councils.like(format!("% {c} %"))),
        );
    }
    newest_first(conn, q, before_id, limit)
}

pub fn count(conn: &mut DbConn) -> QueryResult<i64> {
    audit_events::table.count().get_result(conn)
}

/// The councils of every listed (notifiable) access recorded at or after `since`, one
/// space-separated string per access (the notification benchmark's independent count).
pub fn listed_councils_since(conn: &mut DbConn, since: i64) -> QueryResult<Vec<String>> {
    audit_events::table
        .filter(audit_events::listed.eq(true))
        .filter(audit_events::recorded.ge(since))
        .select(audit_events::councils)
        .load(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, about: Option<&str>, trace: Option<&str>) -> AuditRow {
        AuditRow {
            id: id.into(),
            recorded: 1_700_000_000_000_000,
            resource_type: "Flag".into(),
            subtype: "search-type".into(),
            outcome: "0".into(),
            outcome_desc: None,
            user_id: "555000000001".into(),
            user_name: trace.map(|_| "Dr Example".into()),
            user_role: "system".into(),
            user_org: "RDE01".into(),
            client: "https://issuer.example".into(),
            patient: about.map(str::to_owned),
            councils: crate::store::columns::CouncilList::default(),
            disclosed: crate::store::columns::JsonList::default(),
            request_id: "r-1".into(),
            trace_id: trace.map(str::to_owned),
            unscheduled: false,
            listed: false,
            query: "GET /Flag".into(),
        }
    }

    #[test]
    fn rows_read_back_as_written_and_absent_values_are_stored_as_null() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::store::Store::open(&dir.path().join("a.db").to_string_lossy(), 1).unwrap();
        let full = row(
            "0190d3c0-0000-7000-8000-000000000001",
            Some("9449306753"),
            Some("t-1"),
        );
        let sparse = row("0190d3c0-0000-7000-8000-000000000002", None, None);
        let (a, b) = (full.clone(), sparse.clone());
        let (got_full, got_sparse, about_no_one) = store
            .write_blocking(move |c| {
                insert(c, &a)?;
                insert(c, &b)?;
                Ok::<_, crate::store::StoreError>((
                    get(c, &a.id)?,
                    get(c, &b.id)?,
                    // Finds rows by `patient IS NULL`: an empty string would not match.
                    events_of_role(c, "system", None, 10)?,
                ))
            })
            .unwrap();
        assert_eq!(got_full, Some(full));
        assert_eq!(got_sparse, Some(sparse.clone()));
        assert_eq!(about_no_one, vec![sparse]);
    }
}
