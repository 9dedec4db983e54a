//! Councils (local authorities, ODS role RO141) and their phone numbers.

use diesel::prelude::*;

use super::schema::local_authorities;
use super::DbConn;

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug, PartialEq)]
#[diesel(table_name = local_authorities)]
#[diesel(treat_none_as_default_value = false)]
pub struct CouncilRow {
    pub ods_code: String,
    pub name: String,
    pub office_phone: String,
    pub emergency_phone: String,
    pub active: bool,
    pub version: i64,
    pub updated_at: i64,
}

pub fn get(conn: &mut DbConn, ods: &str) -> QueryResult<Option<CouncilRow>> {
    super::on_backend!(conn, c => local_authorities::table
        .find(ods)
        .select(CouncilRow::as_select())
        .get_result(c)
        .optional())
}

pub fn insert(conn: &mut DbConn, row: &CouncilRow) -> QueryResult<()> {
    diesel::insert_into(local_authorities::table)
        .values(row)
        .execute(conn)
        .map(|_| ())
}

pub fn update(conn: &mut DbConn, row: &CouncilRow) -> QueryResult<()> {
    diesel::update(local_authorities::table.find(&row.ods_code))
        .set(row)
        .execute(conn)
        .map(|_| ())
}

pub fn count(conn: &mut DbConn) -> QueryResult<i64> {
    local_authorities::table.count().get_result(conn)
}

/// Every council, by ODS code.
pub fn all(conn: &mut DbConn) -> QueryResult<Vec<CouncilRow>> {
    local_authorities::table
        .order(local_authorities::ods_code.asc())
        .select(CouncilRow::as_select())
        .load(conn)
}
