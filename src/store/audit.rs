//! The audit trail: one row per read or search of Patient or Flag data (hit, miss or refusal),
//! never updated through the API.

use crate::store::columns::{CouncilList, JsonList};
use diesel::prelude::*;

use super::schema::{audit_events, audit_index};
use super::DbConn;

#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq)]
#[diesel(table_name = audit_events)]
#[diesel(treat_none_as_default_value = false)]
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

/// The Flag ids among an access's disclosed references (`Flag/{id}/_history/{v}`).
fn flag_ids(disclosed: &[String]) -> impl Iterator<Item = &str> {
    disclosed.iter().filter_map(|r| {
        let (id, _) = r.strip_prefix("Flag/")?.split_once("/_history/")?;
        Some(id)
    })
}

/// An index of the audit trail kept behind it rather than by each look-up (see the migrations
/// `audit_by_flag`, `audit_by_patient` and `audit_by_agent`): after each lifecycle run every row
/// up to a few minutes ago is indexed, and a search reads the index up to its reach and matches
/// the rows after it one by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrailIndex {
    /// Each Flag an access disclosed (`audit_flags`): the `entity` search.
    Flags,
    /// Each access's person (`audit_patients`): the audit team's `patient` search.
    Patients,
    /// Each access's user (`audit_users`): the `agent` search.
    Users,
    /// Each access's organisation (`audit_orgs`): the `agent-org` search.
    Orgs,
}

/// The columns of an audit row the behind-the-trail indexes are made from.
#[derive(Queryable, Debug, Clone)]
pub struct TrailKeys {
    pub id: String,
    pub patient: Option<String>,
    /// As stored: a JSON array, `[]` for most rows.
    pub disclosed: String,
    pub user_id: String,
    pub user_org: String,
}

type TrailKeyColumns = (
    audit_events::id,
    audit_events::patient,
    audit_events::disclosed,
    audit_events::user_id,
    audit_events::user_org,
);

/// What [`TrailKeys`] is read with.
pub const TRAIL_KEYS: TrailKeyColumns = (
    audit_events::id,
    audit_events::patient,
    audit_events::disclosed,
    audit_events::user_id,
    audit_events::user_org,
);

impl TrailIndex {
    pub const ALL: [TrailIndex; 4] = [
        TrailIndex::Flags,
        TrailIndex::Patients,
        TrailIndex::Users,
        TrailIndex::Orgs,
    ];

    /// Its row in `audit_index`.
    fn name(self) -> &'static str {
        match self {
            TrailIndex::Flags => "flags",
            TrailIndex::Patients => "patients",
            TrailIndex::Users => "users",
            TrailIndex::Orgs => "orgs",
        }
    }

    /// Its table, and the table's key column.
    fn table(self) -> (&'static str, &'static str) {
        match self {
            TrailIndex::Flags => ("audit_flags", "flag_id"),
            TrailIndex::Patients => ("audit_patients", "patient"),
            TrailIndex::Users => ("audit_users", "user_id"),
            TrailIndex::Orgs => ("audit_orgs", "user_org"),
        }
    }

    /// The index's keys for one row; only the Flag index reads what was disclosed.
    fn keys_of(self, row: &TrailKeys) -> QueryResult<Vec<String>> {
        Ok(match self {
            TrailIndex::Flags if row.disclosed == "[]" => Vec::new(),
            TrailIndex::Flags => flag_ids(&JsonList::from_column(row.disclosed.clone())?)
                .map(str::to_owned)
                .collect(),
            TrailIndex::Patients => row.patient.iter().cloned().collect(),
            TrailIndex::Users => vec![row.user_id.clone()],
            TrailIndex::Orgs => vec![row.user_org.clone()],
        })
    }

    /// Adds (`insert`) or removes one entry. Replicas may index at once: an entry already there
    /// is kept once.
    fn write_entry(
        self,
        conn: &mut DbConn,
        insert: bool,
        key: &str,
        id: &str,
    ) -> QueryResult<usize> {
        use diesel::sql_types::Text;
        let (table, column) = self.table();
        let sql = match (insert, &*conn) {
            (true, DbConn::Sqlite(_)) => {
                format!("INSERT OR IGNORE INTO {table} ({column}, audit_id) VALUES (?, ?)")
            }
            (true, DbConn::Pg(_)) => format!(
                "INSERT INTO {table} ({column}, audit_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            ),
            (false, DbConn::Sqlite(_)) => {
                format!("DELETE FROM {table} WHERE {column} = ? AND audit_id = ?")
            }
            (false, DbConn::Pg(_)) => {
                format!("DELETE FROM {table} WHERE {column} = $1 AND audit_id = $2")
            }
        };
        diesel::sql_query(sql)
            .bind::<Text, _>(key)
            .bind::<Text, _>(id)
            .execute(conn)
    }

    /// The rows this index finds for `key` up to `reach`, and after it those whose own column
    /// matches (`tail`: an SQL condition around one bound value): one `id IN (… UNION ALL …)`.
    /// Several keys are joined by OR, which SQLite runs as one index search each (MULTI-INDEX
    /// OR): written as an OR of the two halves, or with a constant-false seed (`1 = 0 OR …`),
    /// SQLite walked the whole primary key instead.
    fn matches(self, key: String, reach: &Reach, span: &Span, tail: Tail) -> Cond {
        use diesel::sql_types::Text;
        let (table, column) = self.table();
        let through = reach.of(self).to_owned();
        // The index is read only inside the search's id span (its dates and its cursor): an
        // organisation's later pages, or its accesses in one month, do not gather every id it
        // has. The span may include a bound's own id; the outer conditions leave it out.
        let upto = match &span.highest {
            Some(h) if *h < through => h.clone(),
            _ => through.clone(),
        };
        Box::new(
            diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
                "audit_events.id IN (SELECT audit_id FROM {table} WHERE {column} = "
            ))
            .bind::<Text, _>(key)
            .sql(" AND audit_id >= ")
            .bind::<Text, _>(span.lowest.clone())
            .sql(" AND audit_id <= ")
            .bind::<Text, _>(upto)
            .sql(" UNION ALL SELECT id FROM audit_events WHERE id > ")
            .bind::<Text, _>(through)
            .sql(&format!(" AND {}", tail.before))
            .bind::<Text, _>(tail.value)
            .sql(&format!("{})", tail.after)),
        )
    }

    /// [`TrailIndex::matches`] for each of `keys`, joined by OR; `None` for no keys.
    fn matches_any(
        self,
        keys: &[String],
        reach: &Reach,
        span: &Span,
        tail: impl Fn(&String) -> Tail,
    ) -> Option<Cond> {
        keys.iter()
            .map(|k| self.matches(self.key_of(k), reach, span, tail(k)))
            .reduce(|a, b| Box::new(a.or(b)))
    }

    /// A search value as the index keys it (`Flag/{id}` → `{id}`).
    fn key_of(self, value: &str) -> String {
        match self {
            TrailIndex::Flags => value.strip_prefix("Flag/").unwrap_or(value).to_owned(),
            _ => value.to_owned(),
        }
    }
}

/// The ids a search can match, from its dates and its cursor: at least `lowest`, at most
/// `highest`, both bounds included.
struct Span {
    lowest: String,
    highest: Option<String>,
}

/// How a search matches the rows after an index's reach: `{before} ? {after}`, `?` bound to
/// `value`.
struct Tail {
    before: &'static str,
    value: String,
    after: &'static str,
}

type Cond =
    Box<dyn BoxableExpression<audit_events::table, super::Db, SqlType = diesel::sql_types::Bool>>;

/// How far an index reaches: every row with an id up to this one is in it.
pub fn indexed_through(conn: &mut DbConn, index: TrailIndex) -> QueryResult<String> {
    Ok(audit_index::table
        .find(index.name())
        .select(audit_index::through)
        .first::<String>(conn)
        .optional()?
        .unwrap_or_default())
}

/// Indexes up to `limit` rows after the index's reach and before `before` (an id bound), in the
/// caller's transaction; whether rows before the bound remain. Replicas may run it at once: an
/// entry indexed twice is kept once and the reach only grows.
pub fn index_trail(
    conn: &mut DbConn,
    index: TrailIndex,
    before: &str,
    limit: i64,
) -> QueryResult<bool> {
    let through = indexed_through(conn, index)?;
    let rows: Vec<TrailKeys> = audit_events::table
        .filter(audit_events::id.gt(&through))
        .filter(audit_events::id.lt(before))
        .order(audit_events::id)
        .limit(limit)
        .select(TRAIL_KEYS)
        .load(conn)?;
    let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= limit;
    let reach = match (more, rows.last()) {
        (true, Some(last)) => last.id.clone(),
        _ => before.to_owned(),
    };
    let mut entries: Vec<(String, String)> = Vec::new();
    for row in &rows {
        let keys = index.keys_of(row)?;
        entries.extend(keys.into_iter().map(|k| (k, row.id.clone())));
    }
    // In key order, so consecutive inserts land on the same pages.
    entries.sort_unstable();
    entries.dedup();
    for (key, id) in &entries {
        index.write_entry(conn, true, key, id)?;
    }
    diesel::update(
        audit_index::table
            .filter(audit_index::name.eq(index.name()))
            .filter(audit_index::through.lt(&reach)),
    )
    .set(audit_index::through.eq(&reach))
    .execute(conn)?;
    Ok(more)
}

/// Removes the behind-the-trail indexes' entries of these audit rows: retention removes the
/// rows.
pub fn delete_index_entries_of(conn: &mut DbConn, rows: &[TrailKeys]) -> QueryResult<usize> {
    let mut n = 0;
    for row in rows {
        for index in TrailIndex::ALL {
            for key in index.keys_of(row)? {
                n += index.write_entry(conn, false, &key, &row.id)?;
            }
        }
    }
    Ok(n)
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
        // Written as the partial index's own condition (`WHERE listed`), with no bound value,
        // so that both databases' planners see the index applies.
        .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(
            "audit_events.listed",
        ))
        .order((audit_events::recorded.desc(), audit_events::id.desc()))
        .limit(limit)
        .select(AuditRow::as_select())
        .load(conn)
}

type Boxed = audit_events::BoxedQuery<'static, <DbConn as diesel::Connection>::Backend>;

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
    /// Starts of the user's name, as typed (matched without regard to ASCII case).
    pub names: Vec<String>,
    pub roles: Vec<String>,
    /// The accessing organisations (ODS).
    pub orgs: Vec<String>,
    /// FHIR audit-event-outcome codes: 0 success, 4 minor failure, 8 serious failure.
    pub outcomes: Vec<String>,
    /// Unscheduled (`true`) or scheduled (`false`) accesses only.
    pub unscheduled: Option<bool>,
    /// Only rows that disclosed, or were about, a record of this council.
    pub council: Option<String>,
    /// Only rows that disclosed one of these resources (`Flag/{id}`, any version).
    pub entities: Vec<String>,
    /// The row's subtype column (restful interaction, refusal reason, lifecycle or warning code).
    pub subtypes: Vec<String>,
    /// The kind of event: made under one of these roles ...
    pub kind_roles: Vec<String>,
    /// ... or, when set, an access (any role but the system's own).
    pub kind_access: bool,
    /// The calling systems (token issuers, or a refused client's address).
    pub sources: Vec<String>,
}

/// The smallest id a row recorded at `micros` or later can have: ids are UUIDv7 of the recorded
/// instant, so a time range is also a primary-key range and a date search never scans the trail.
pub fn first_id_at(micros: i64) -> String {
    let ms = u64::try_from(micros.div_euclid(1_000)).unwrap_or(0);
    format!(
        "{:08x}-{:04x}-0000-0000-000000000000",
        (ms >> 16) & 0xffff_ffff,
        ms & 0xffff
    )
}

diesel::define_sql_function! {
    /// SQL `lower()`: ASCII on SQLite, Unicode on PostgreSQL.
    fn lower(x: diesel::sql_types::Nullable<diesel::sql_types::Text>) -> diesel::sql_types::Nullable<diesel::sql_types::Text>;
}

/// Escapes `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern.
fn like_literal(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

impl AuditFilter {
    /// How far the indexes this filter reads reach ([`indexed_through`]); nothing is read for
    /// an index the filter does not use.
    fn reach(&self, conn: &mut DbConn) -> QueryResult<Reach> {
        let mut reach = Reach::default();
        for (index, used) in [
            (TrailIndex::Flags, !self.entities.is_empty()),
            (TrailIndex::Patients, self.patient.is_some()),
            (TrailIndex::Users, !self.agents.is_empty()),
            (TrailIndex::Orgs, !self.orgs.is_empty()),
        ] {
            if used {
                reach.0[index as usize] = indexed_through(conn, index)?;
            }
        }
        Ok(reach)
    }

    /// The ids this filter's dates and a page's `cursor` leave possible (see [`Span`]).
    fn span(&self, cursor: Option<(Order, &str)>) -> Span {
        let mut lowest = self
            .recorded_from
            .iter()
            .map(|t| first_id_at(*t))
            .max()
            .unwrap_or_default();
        // Rows of the same millisecond share the id prefix: the bound is the next one's.
        let mut highest = self
            .recorded_before
            .iter()
            .map(|t| first_id_at(t.saturating_add(999)))
            .min();
        match cursor {
            Some((Order::OldestFirst, c)) if c > lowest.as_str() => lowest = c.to_owned(),
            Some((Order::NewestFirst, c)) if highest.as_deref().is_none_or(|h| c < h) => {
                highest = Some(c.to_owned())
            }
            _ => {}
        }
        Span { lowest, highest }
    }

    /// `reach`: how far the behind-the-trail indexes reach ([`AuditFilter::reach`]); `cursor`:
    /// the page's keyset cursor and the order it pages in, when the caller adds one.
    fn query(&self, reach: &Reach, cursor: Option<(Order, &str)>) -> Boxed {
        use audit_events::dsl as a;
        let mut q: Boxed = audit_events::table.into_boxed();
        // The person, users, organisations and Flags are found up to each index's reach through
        // it, whatever the trail's size; after it (the last minutes' rows), by matching the
        // row's own column along the primary key. The look-up indexes none of them itself (see
        // the migrations `audit_by_patient` and `audit_by_agent`).
        let same = |column: &'static str| {
            move |v: &String| Tail {
                before: column,
                value: v.clone(),
                after: "",
            }
        };
        let span = self.span(cursor);
        let behind = [
            TrailIndex::Patients.matches_any(
                self.patient.as_slice(),
                reach,
                &span,
                same("patient = "),
            ),
            TrailIndex::Users.matches_any(&self.agents, reach, &span, same("user_id = ")),
            TrailIndex::Orgs.matches_any(&self.orgs, reach, &span, same("user_org = ")),
            // `disclosed` is a JSON array of version-specific references.
            TrailIndex::Flags.matches_any(&self.entities, reach, &span, |e| Tail {
                before: "disclosed LIKE ",
                value: format!(
                    "%\"Flag/{}/\\_history/%",
                    like_literal(&TrailIndex::Flags.key_of(e))
                ),
                after: " ESCAPE '\\'",
            }),
        ];
        for cond in behind.into_iter().flatten() {
            q = q.filter(cond);
        }
        // SQLite starts an index range at the first bound it finds on that side of the column and
        // checks any other bound row by row. Where the cursor is the tighter bound on the same
        // side as a date's, the date's id bound is left out, or every page would walk again from
        // the date to the cursor: 96 ms instead of 13 for the 180th page of 5,000 after
        // `_since`, an export quadratic in its size. (PostgreSQL keeps the tighter bound itself.)
        for t in &self.recorded_from {
            let lower = first_id_at(*t);
            let implied = matches!(cursor, Some((Order::OldestFirst, c)) if c >= lower.as_str());
            if !implied {
                q = q.filter(a::id.ge(lower));
            }
            q = q.filter(a::recorded.ge(*t));
        }
        for t in &self.recorded_before {
            // Rows of the same millisecond share the id prefix: the bound is the next one's.
            let upper = first_id_at(t.saturating_add(999));
            let implied = matches!(cursor, Some((Order::NewestFirst, c)) if c <= upper.as_str());
            if !implied {
                q = q.filter(a::id.lt(upper));
            }
            q = q.filter(a::recorded.lt(*t));
        }
        if let Some((first, rest)) = self.names.split_first() {
            let like = |n: &String| format!("{}%", like_literal(&n.to_lowercase()));
            let mut cond: Box<
                dyn BoxableExpression<
                    audit_events::table,
                    super::Db,
                    SqlType = diesel::sql_types::Nullable<diesel::sql_types::Bool>,
                >,
            > = Box::new(
                lower(a::user_name.nullable())
                    .like(like(first))
                    .escape('\\'),
            );
            for n in rest {
                cond = Box::new(cond.or(lower(a::user_name.nullable()).like(like(n)).escape('\\')));
            }
            q = q.filter(cond);
        }
        if !self.roles.is_empty() {
            q = q.filter(a::user_role.eq_any(self.roles.clone()));
        }
        if !self.outcomes.is_empty() {
            q = q.filter(a::outcome.eq_any(self.outcomes.clone()));
        }
        if let Some(u) = self.unscheduled {
            q = q.filter(a::unscheduled.eq(u));
        }
        if let Some(c) = &self.council {
            // `councils` holds ODS codes (letters and digits) separated by single spaces.
            q = q.filter(
                a::councils
                    .eq(c.clone())
                    .or(a::councils.like(format!("{c} %")))
                    .or(a::councils.like(format!("% {c}")))
                    .or(a::councils.like(format!("% {c} %"))),
            );
        }
        if !self.subtypes.is_empty() {
            q = q.filter(a::subtype.eq_any(self.subtypes.clone()));
        }
        if self.kind_access {
            let others: Vec<String> = [
                crate::domain::SYSTEM_ROLE,
                crate::domain::AUTH_ROLE,
                crate::domain::WATCH_ROLE,
            ]
            .into_iter()
            .filter(|r| !self.kind_roles.iter().any(|k| k == r))
            .map(str::to_owned)
            .collect();
            q = q.filter(a::user_role.ne_all(others));
        } else if !self.kind_roles.is_empty() {
            q = q.filter(a::user_role.eq_any(self.kind_roles.clone()));
        }
        if !self.sources.is_empty() {
            q = q.filter(a::client.eq_any(self.sources.clone()));
        }
        q
    }
}

/// How far each behind-the-trail index reaches, for one search (see [`TrailIndex`]).
#[derive(Default)]
struct Reach([String; TrailIndex::ALL.len()]);

impl Reach {
    fn of(&self, index: TrailIndex) -> &str {
        &self.0[index as usize]
    }
}

/// The order of an audit search: FHIR `_sort=-date` (newest first, the default) or `date`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// A page of the rows matching `f` in `order`, after the cursor (an id); with `total`, how many
/// match in all (a count of the whole filter, which on a large trail costs a scan).
pub fn search(
    conn: &mut DbConn,
    f: &AuditFilter,
    order: Order,
    after_id: Option<&str>,
    count: usize,
    total: bool,
) -> QueryResult<super::Page<AuditRow>> {
    let reach = f.reach(conn)?;
    let matched = if total {
        f.query(&reach, None).count().get_result(conn)?
    } else {
        0
    };
    let mut q = f.query(&reach, after_id.map(|c| (order, c)));
    q = match (order, after_id) {
        (Order::NewestFirst, Some(b)) => q.filter(audit_events::id.lt(b.to_owned())),
        (Order::OldestFirst, Some(b)) => q.filter(audit_events::id.gt(b.to_owned())),
        (_, None) => q,
    };
    q = match order {
        Order::NewestFirst => q.order(audit_events::id.desc()),
        Order::OldestFirst => q.order(audit_events::id.asc()),
    };
    let rows = q
        .limit(super::page_limit(count))
        .select(AuditRow::as_select())
        .load(conn)?;
    Ok(super::Page::keyset(rows, matched, count, |r| r.id.as_str()))
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
        let (got_full, got_sparse) = store
            .write_blocking(move |c| {
                insert(c, &a)?;
                insert(c, &b)?;
                Ok::<_, crate::store::StoreError>((get(c, &a.id)?, get(c, &b.id)?))
            })
            .unwrap();
        assert_eq!(got_full, Some(full));
        assert_eq!(got_sparse, Some(sparse));
    }
}
