//! People with a CP-IS record: name, date of birth, optional address (DOMAIN.md "Data held").

use crate::store::columns::JsonList;
use diesel::prelude::*;

use super::schema::{flags, patients};
use super::DbConn;

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug, PartialEq)]
#[diesel(table_name = patients)]
#[diesel(treat_none_as_default_value = false)]
#[diesel(treat_none_as_null = true)]
pub struct PatientRow {
    pub nhs_number: String,
    pub family: String,
    /// Given names as a JSON array of strings.
    #[diesel(deserialize_as = String, serialize_as = String)]
    pub given: JsonList,
    pub birth_date: String,
    /// Address lines as a JSON array of strings.
    pub address_lines: Option<String>,
    pub address_city: Option<String>,
    pub address_district: Option<String>,
    pub address_postal_code: Option<String>,
    /// ODS code of the organisation that first submitted the person.
    pub created_by: String,
    pub version: i64,
    pub updated_at: i64,
}

impl PatientRow {
    /// True when the demographic content (not the bookkeeping) is the same.
    pub fn same_content(&self, other: &PatientRow) -> bool {
        self.family == other.family
            && self.given == other.given
            && self.birth_date == other.birth_date
            && self.address_lines == other.address_lines
            && self.address_city == other.address_city
            && self.address_district == other.address_district
            && self.address_postal_code == other.address_postal_code
    }
}

// The statements a Bundle entry runs go straight to the backend's own connection (see
// `on_backend!`): a bulk load runs them hundreds of thousands of times.

pub fn get(conn: &mut DbConn, nhs: &str) -> QueryResult<Option<PatientRow>> {
    super::on_backend!(conn, c => patients::table
        .find(nhs)
        .select(PatientRow::as_select())
        .get_result(c)
        .optional())
}

pub fn insert(conn: &mut DbConn, row: &PatientRow) -> QueryResult<()> {
    let keys = NameKeys::of(row).columns();
    super::on_backend!(conn, c => diesel::insert_into(patients::table)
        .values((row.clone(), keys.clone()))
        .execute(c))
    .map(|_| ())
}

pub fn update(conn: &mut DbConn, row: &PatientRow) -> QueryResult<()> {
    let keys = NameKeys::of(row).columns();
    super::on_backend!(conn, c => diesel::update(patients::table.find(&row.nhs_number))
        .set((row.clone(), keys.clone()))
        .execute(c))
    .map(|_| ())
}

/// A person's names folded for a case-insensitive prefix search: `family_key` is the family
/// name, `given_key` every given name between `|`s, each in Unicode lower case (a `|` in a
/// name becomes a space, in the search term too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameKeys {
    family: String,
    given: String,
}

/// What a name search term is compared with.
pub fn fold(s: &str) -> String {
    s.to_lowercase().replace('|', " ")
}

impl NameKeys {
    pub fn of(row: &PatientRow) -> Self {
        let mut given = String::from("|");
        for g in row.given.iter() {
            given.push_str(&fold(g));
            given.push('|');
        }
        NameKeys {
            family: fold(&row.family),
            given,
        }
    }

    #[allow(clippy::type_complexity)]
    fn columns(
        self,
    ) -> (
        diesel::dsl::Eq<patients::family_key, Option<String>>,
        diesel::dsl::Eq<patients::given_key, Option<String>>,
    ) {
        (
            patients::family_key.eq(Some(self.family)),
            patients::given_key.eq(Some(self.given)),
        )
    }
}

/// Fills the name keys of people stored before they existed (the migration that added them
/// cannot compute Unicode lower case); a few hundred at a time, until none is left.
pub fn fill_name_keys(conn: &mut DbConn) -> QueryResult<usize> {
    let mut filled = 0;
    loop {
        let rows: Vec<PatientRow> = patients::table
            .filter(patients::family_key.is_null())
            .limit(500)
            .select(PatientRow::as_select())
            .load(conn)?;
        if rows.is_empty() {
            return Ok(filled);
        }
        conn.transaction(|conn| {
            for r in &rows {
                diesel::update(patients::table.find(&r.nhs_number))
                    .set(NameKeys::of(r).columns())
                    .execute(conn)?;
            }
            QueryResult::Ok(())
        })?;
        filled += rows.len();
    }
}

/// A name and birth-date search (FHIR R4 Patient `family`, `given`, `name`, `birthdate`):
/// every term is a case-insensitive prefix of the name it is about; birth dates are inclusive
/// `YYYY-MM-DD` bounds.
#[derive(Debug, Default, Clone)]
pub struct PatientFilter {
    pub family: Vec<String>,
    pub given: Vec<String>,
    /// A prefix of the family name or of any given name.
    pub name: Vec<String>,
    pub born_from: Vec<String>,
    pub born_to: Vec<String>,
}

/// `term` as a LIKE pattern that matches itself literally, then `tail`.
fn like(head: &str, term: &str, tail: &str) -> String {
    let mut p = String::from(head);
    for ch in fold(term).chars() {
        if matches!(ch, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push_str(tail);
    p
}

impl PatientFilter {
    /// Whether a row passes, by the same rules as the query.
    pub fn matches(&self, r: &PatientRow) -> bool {
        let keys = NameKeys::of(r);
        let family = |t: &String| keys.family.starts_with(&fold(t));
        let given = |t: &String| keys.given.contains(&format!("|{}", fold(t)));
        self.family.iter().all(family)
            && self.given.iter().all(given)
            && self.name.iter().all(|t| family(t) || given(t))
            && self.born_from.iter().all(|d| r.birth_date >= *d)
            && self.born_to.iter().all(|d| r.birth_date <= *d)
    }

    fn query(&self, council: &str) -> patients::BoxedQuery<'_, super::Db> {
        let held = flags::table
            .filter(flags::la_ods.eq(council.to_owned()))
            .select(flags::nhs_number);
        let mut q = patients::table
            .filter(
                patients::created_by
                    .eq(council.to_owned())
                    .or(patients::nhs_number.eq_any(held)),
            )
            .into_boxed();
        for t in &self.family {
            q = q.filter(patients::family_key.like(like("", t, "%")).escape('\\'));
        }
        for t in &self.given {
            q = q.filter(patients::given_key.like(like("%|", t, "%")).escape('\\'));
        }
        for t in &self.name {
            q = q.filter(
                patients::family_key
                    .like(like("", t, "%"))
                    .escape('\\')
                    .or(patients::given_key.like(like("%|", t, "%")).escape('\\')),
            );
        }
        for d in &self.born_from {
            q = q.filter(patients::birth_date.ge(d));
        }
        for d in &self.born_to {
            q = q.filter(patients::birth_date.le(d));
        }
        q
    }
}

/// One page of the people a council submitted or holds a Flag on that match `f`, by NHS
/// number after the keyset cursor `after`: conditions, cursor and page size run in the
/// database.
pub fn search_of_council(
    conn: &mut DbConn,
    ods: &str,
    f: &PatientFilter,
    after: Option<&str>,
    count: usize,
) -> QueryResult<super::Page<PatientRow>> {
    let total: i64 = f.query(ods).count().get_result(conn)?;
    let mut q = f
        .query(ods)
        .order(patients::nhs_number.asc())
        .limit(super::page_limit(count))
        .select(PatientRow::as_select());
    if let Some(a) = after {
        q = q.filter(patients::nhs_number.gt(a));
    }
    let rows = q.load(conn)?;
    Ok(super::Page::keyset(rows, total, count, |r| {
        r.nhs_number.as_str()
    }))
}

/// Whether `ods` is the responsible council for any of the person's Flags.
pub fn council_holds_flag(conn: &mut DbConn, nhs: &str, ods: &str) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        flags::table
            .filter(flags::nhs_number.eq(nhs))
            .filter(flags::la_ods.eq(ods)),
    ))
    .get_result(conn)
}
