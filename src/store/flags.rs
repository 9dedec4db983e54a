//! Flags (one per plan) and every version of each, so a disclosure can be shown exactly as it
//! was (DESIGN.md "flag_versions").

use diesel::prelude::*;

use super::schema::{flag_versions, flags};
use super::DbConn;
use crate::domain::FlagStatus;

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug, PartialEq)]
#[diesel(table_name = flags)]
#[diesel(treat_none_as_default_value = false)]
#[diesel(treat_none_as_null = true)]
pub struct FlagRow {
    pub id: String,
    pub nhs_number: String,
    pub la_ods: String,
    pub local_ref_system: String,
    pub local_ref_value: String,
    pub plan_type: String,
    #[diesel(deserialize_as = String, serialize_as = String)]
    pub status: FlagStatus,
    pub period_start: String,
    pub period_end: Option<String>,
    pub version: i64,
    pub updated_at: i64,
}

impl FlagRow {
    /// True when what a council submitted is unchanged (ids and bookkeeping aside).
    pub fn same_content(&self, other: &FlagRow) -> bool {
        self.nhs_number == other.nhs_number
            && self.la_ods == other.la_ods
            && self.local_ref_system == other.local_ref_system
            && self.local_ref_value == other.local_ref_value
            && self.plan_type == other.plan_type
            && self.status == other.status
            && self.period_start == other.period_start
            && self.period_end == other.period_end
    }

    fn snapshot(&self, method: &str) -> FlagVersionRow {
        FlagVersionRow {
            flag_id: self.id.clone(),
            version: self.version,
            nhs_number: self.nhs_number.clone(),
            la_ods: self.la_ods.clone(),
            local_ref_system: self.local_ref_system.clone(),
            local_ref_value: self.local_ref_value.clone(),
            plan_type: self.plan_type.clone(),
            status: self.status,
            period_start: self.period_start.clone(),
            period_end: self.period_end.clone(),
            recorded_at: self.updated_at,
            method: method.to_owned(),
        }
    }
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq)]
#[diesel(table_name = flag_versions)]
#[diesel(treat_none_as_default_value = false)]
pub struct FlagVersionRow {
    pub flag_id: String,
    pub version: i64,
    pub nhs_number: String,
    pub la_ods: String,
    pub local_ref_system: String,
    pub local_ref_value: String,
    pub plan_type: String,
    #[diesel(deserialize_as = String, serialize_as = String)]
    pub status: FlagStatus,
    pub period_start: String,
    pub period_end: Option<String>,
    pub recorded_at: i64,
    /// The interaction that made this version: POST, PUT or DELETE.
    pub method: String,
}

impl FlagVersionRow {
    /// The version as a row, for rendering.
    pub fn as_flag(&self) -> FlagRow {
        FlagRow {
            id: self.flag_id.clone(),
            nhs_number: self.nhs_number.clone(),
            la_ods: self.la_ods.clone(),
            local_ref_system: self.local_ref_system.clone(),
            local_ref_value: self.local_ref_value.clone(),
            plan_type: self.plan_type.clone(),
            status: self.status,
            period_start: self.period_start.clone(),
            period_end: self.period_end.clone(),
            version: self.version,
            updated_at: self.recorded_at,
        }
    }
}

pub fn get(conn: &mut DbConn, id: &str) -> QueryResult<Option<FlagRow>> {
    flags::table
        .find(id)
        .select(FlagRow::as_select())
        .get_result(conn)
        .optional()
}

/// The Flag a council knows by its own plan reference. On PostgreSQL it is planned at each
/// execution ([`super::replanned`]): the council's `(la_ods, id)` index competes with the unique
/// plan-reference index, and a cached plan made on a near-empty table keeps the wrong one.
pub fn find_by_identifier(
    conn: &mut DbConn,
    ods: &str,
    system: &str,
    value: &str,
) -> QueryResult<Option<FlagRow>> {
    macro_rules! query {
        () => {
            flags::table
                .filter(flags::la_ods.eq(ods))
                .filter(flags::local_ref_system.eq(system))
                .filter(flags::local_ref_value.eq(value))
                .select(FlagRow::as_select())
        };
    }
    match conn {
        DbConn::Sqlite(c) => query!().get_result(c).optional(),
        DbConn::Pg(c) => super::replanned::Replanned(query!())
            .get_result(c)
            .optional(),
    }
}

/// Inserts a new Flag (version 1) and its first history entry.
pub fn insert(conn: &mut DbConn, row: &FlagRow) -> QueryResult<()> {
    let version = row.snapshot("POST");
    super::on_backend!(conn, c => {
        diesel::insert_into(flags::table).values(row.clone()).execute(c)?;
        diesel::insert_into(flag_versions::table).values(version.clone()).execute(c)
    })
    .map(|_| ())
}

/// Stores `row` (whose version the caller has already advanced) and records it in the history.
pub fn update(conn: &mut DbConn, row: &FlagRow, method: &str) -> QueryResult<()> {
    let version = row.snapshot(method);
    super::on_backend!(conn, c => {
        diesel::update(flags::table.find(&row.id)).set(row.clone()).execute(c)?;
        diesel::insert_into(flag_versions::table).values(version.clone()).execute(c)
    })
    .map(|_| ())
}

/// Every version of a Flag, newest first (FHIR R4 §3.1.0.9 "history").
pub fn versions(conn: &mut DbConn, id: &str) -> QueryResult<Vec<FlagVersionRow>> {
    flag_versions::table
        .filter(flag_versions::flag_id.eq(id))
        .order(flag_versions::version.desc())
        .select(FlagVersionRow::as_select())
        .load(conn)
}

pub fn version(conn: &mut DbConn, id: &str, version: i64) -> QueryResult<Option<FlagVersionRow>> {
    flag_versions::table
        .find((id, version))
        .select(FlagVersionRow::as_select())
        .get_result(conn)
        .optional()
}

/// A condition on a plan's dates or on when its Flag last changed. FHIR's date prefixes
/// (R4 §3.1.1.4.2) are translated into these by `fhir::search`; the same condition is applied
/// in SQL (a council's search) and in memory (a person's handful of Flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagDate {
    /// `period.start` on or before this day (`YYYY-MM-DD`).
    StartsBy(String),
    /// `period.start` before this day.
    StartsBefore(String),
    /// The plan is open, or ends on or after this day.
    RunsTo(String),
    /// The plan is open, or ends after this day.
    RunsPast(String),
    /// Last changed at or after this instant (microseconds).
    UpdatedFrom(i64),
    /// Last changed before this instant (microseconds).
    UpdatedBefore(i64),
}

impl FlagDate {
    fn matches(&self, r: &FlagRow) -> bool {
        let end = r.period_end.as_deref();
        match self {
            FlagDate::StartsBy(d) => r.period_start.as_str() <= d.as_str(),
            FlagDate::StartsBefore(d) => r.period_start.as_str() < d.as_str(),
            FlagDate::RunsTo(d) => end.is_none_or(|e| e >= d.as_str()),
            FlagDate::RunsPast(d) => end.is_none_or(|e| e > d.as_str()),
            FlagDate::UpdatedFrom(t) => r.updated_at >= *t,
            FlagDate::UpdatedBefore(t) => r.updated_at < *t,
        }
    }
}

/// What a Flag search selects.
#[derive(Debug, Default, Clone)]
pub struct FlagFilter {
    pub nhs_number: Option<String>,
    /// Only Flags this council authors.
    pub council: Option<String>,
    pub identifier_system: Option<String>,
    pub identifier_value: Option<String>,
    pub ids: Vec<String>,
    pub statuses: Vec<FlagStatus>,
    pub plan_types: Vec<String>,
    /// Every one must hold.
    pub dates: Vec<FlagDate>,
    /// What clinicians may see: no entered-in-error Flags, and no plan that ended before this
    /// date (it is past its retention window, DOMAIN.md "Retention").
    pub visible_since: Option<String>,
}

impl FlagFilter {
    /// Whether a row passes every condition of the filter.
    pub fn matches(&self, r: &FlagRow) -> bool {
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        eq(&self.nhs_number, &r.nhs_number)
            && eq(&self.council, &r.la_ods)
            && eq(&self.identifier_system, &r.local_ref_system)
            && eq(&self.identifier_value, &r.local_ref_value)
            && (self.ids.is_empty() || self.ids.contains(&r.id))
            && (self.statuses.is_empty() || self.statuses.contains(&r.status))
            && (self.plan_types.is_empty() || self.plan_types.contains(&r.plan_type))
            && self.dates.iter().all(|d| d.matches(r))
            && self
                .visible_since
                .as_deref()
                .is_none_or(|since| visible_to_clinicians(r, since))
    }

    /// The same conditions as [`FlagFilter::matches`], as a query.
    fn query(&self) -> flags::BoxedQuery<'_, super::Db> {
        let mut q = flags::table.into_boxed();
        if let Some(n) = &self.nhs_number {
            q = q.filter(flags::nhs_number.eq(n));
        }
        if let Some(c) = &self.council {
            q = q.filter(flags::la_ods.eq(c));
        }
        if let Some(s) = &self.identifier_system {
            q = q.filter(flags::local_ref_system.eq(s));
        }
        if let Some(v) = &self.identifier_value {
            q = q.filter(flags::local_ref_value.eq(v));
        }
        if !self.ids.is_empty() {
            q = q.filter(flags::id.eq_any(&self.ids));
        }
        if !self.statuses.is_empty() {
            q = q.filter(flags::status.eq_any(self.statuses.iter().map(|s| s.as_str())));
        }
        if !self.plan_types.is_empty() {
            q = q.filter(flags::plan_type.eq_any(&self.plan_types));
        }
        for d in &self.dates {
            q = match d {
                FlagDate::StartsBy(d) => q.filter(flags::period_start.le(d)),
                FlagDate::StartsBefore(d) => q.filter(flags::period_start.lt(d)),
                FlagDate::RunsTo(d) => {
                    q.filter(flags::period_end.is_null().or(flags::period_end.ge(d)))
                }
                FlagDate::RunsPast(d) => {
                    q.filter(flags::period_end.is_null().or(flags::period_end.gt(d)))
                }
                FlagDate::UpdatedFrom(t) => q.filter(flags::updated_at.ge(*t)),
                FlagDate::UpdatedBefore(t) => q.filter(flags::updated_at.lt(*t)),
            };
        }
        if let Some(since) = &self.visible_since {
            q = q
                .filter(flags::status.ne(FlagStatus::EnteredInError.as_str()))
                .filter(flags::period_end.is_null().or(flags::period_end.ge(since)));
        }
        q
    }
}

/// What a clinician may see (DOMAIN.md "Retention"): not entered in error, and not a plan that
/// ended before `since` (the start of the retention window).
pub fn visible_to_clinicians(r: &FlagRow, since: &str) -> bool {
    r.status != FlagStatus::EnteredInError && r.period_end.as_deref().is_none_or(|end| end >= since)
}

/// Whether the person has any Flag a clinician may see: a person without one is not on CP-IS
/// as far as a clinician is concerned.
pub fn has_visible(conn: &mut DbConn, nhs: &str, since: &str) -> QueryResult<bool> {
    let filter = FlagFilter {
        visible_since: Some(since.to_owned()),
        ..FlagFilter::default()
    };
    Ok(!of_person(conn, nhs, &filter)?.is_empty())
}

/// A person's Flags matching `f`, in creation order (ids are UUIDv7). A fixed query, prepared
/// once and cached — it is the look-up path — with the remaining conditions applied here: a
/// person has a handful of Flags.
pub fn of_person(conn: &mut DbConn, nhs: &str, f: &FlagFilter) -> QueryResult<Vec<FlagRow>> {
    let rows = super::on_backend!(conn, c => flags::table
        .filter(flags::nhs_number.eq(nhs))
        .order(flags::id.asc())
        .select(FlagRow::as_select())
        .load(c))?;
    Ok(rows.into_iter().filter(|r| f.matches(r)).collect())
}

/// One page of the Flags matching `f`, in creation order, after the keyset cursor `after` (an
/// id). A person's search reads the person's Flags; any other (a council's) runs every
/// condition, the cursor and the page size in the database, so a council with thousands of
/// Flags pays for one page, plus a count for `total`.
pub fn search(
    conn: &mut DbConn,
    f: &FlagFilter,
    after: Option<&str>,
    count: usize,
) -> QueryResult<super::Page<FlagRow>> {
    if let Some(n) = &f.nhs_number {
        let rows = of_person(conn, n, f)?;
        return Ok(super::Page::of(rows, |r| r.id.as_str(), after, count));
    }
    let total: i64 = f.query().count().get_result(conn)?;
    let mut q = f
        .query()
        .order(flags::id.asc())
        .limit(super::page_limit(count))
        .select(FlagRow::as_select());
    if let Some(a) = after {
        q = q.filter(flags::id.gt(a));
    }
    let rows = q.load(conn)?;
    Ok(super::Page::keyset(rows, total, count, |r| r.id.as_str()))
}
