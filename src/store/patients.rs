//! People with a CP-IS record: name, date of birth, optional address (DOMAIN.md "Data held").

use crate::store::columns::JsonList;
use diesel::prelude::*;

use super::schema::{flags, patients};
use super::DbConn;

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug, PartialEq)]
#[diesel(table_name = patients)]
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
    super::on_backend!(conn, c => diesel::insert_into(patients::table).values(row.clone()).execute(c))
        .map(|_| ())
}

pub fn update(conn: &mut DbConn, row: &PatientRow) -> QueryResult<()> {
    super::on_backend!(conn, c => diesel::update(patients::table.find(&row.nhs_number))
        .set(row.clone())
        .execute(c))
    .map(|_| ())
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

/// The people a council submitted or holds a Flag on.
pub fn of_council(conn: &mut DbConn, ods: &str) -> QueryResult<Vec<PatientRow>> {
    let held = flags::table
        .filter(flags::la_ods.eq(ods.to_owned()))
        .select(flags::nhs_number);
    patients::table
        .filter(
            patients::created_by
                .eq(ods.to_owned())
                .or(patients::nhs_number.eq_any(held)),
        )
        .order(patients::nhs_number.asc())
        .select(PatientRow::as_select())
        .load(conn)
}
