//! Records put straight into the database, for the demo data (`serve --dev`) and the
//! benchmarks' registers: councils, people and plans built in one place, as the write
//! procedures would store them (version 1, one history entry per Flag), without a request.
//! Nothing here checks the domain rules: callers pass records that keep them.

use chrono::NaiveDate;

use crate::domain::{FlagStatus, PlanType};
use crate::store::columns::JsonList;
use crate::store::councils::{self, CouncilRow};
use crate::store::flags::{self, FlagRow};
use crate::store::patients::{self, PatientRow};
use crate::store::{DbConn, StoreError};

/// A council with its two phone numbers (DOMAIN.md "Data held").
pub struct Council<'a> {
    pub ods: &'a str,
    pub name: &'a str,
    pub office_phone: &'a str,
    pub emergency_phone: &'a str,
}

/// A person, submitted first by `council`.
pub struct Person<'a> {
    pub nhs_number: &'a str,
    pub family: &'a str,
    pub given: &'a [&'a str],
    pub birth_date: NaiveDate,
    pub council: &'a str,
}

/// A plan on a person, held by `council` under its own `reference`; ended when `end` is set.
pub struct Plan<'a> {
    pub nhs_number: &'a str,
    pub council: &'a str,
    pub plan: PlanType,
    pub start: NaiveDate,
    pub end: Option<NaiveDate>,
    pub reference: &'a str,
}

/// The plan-reference system the fixtures' councils use.
pub fn plan_system(ods: &str) -> String {
    format!("https://{}.example.org/Id/plan", ods.to_ascii_lowercase())
}

/// Writes fixtures on one connection (inside the caller's transaction), all stamped `at`
/// (microseconds).
pub struct Fixtures<'c> {
    conn: &'c mut DbConn,
    at: i64,
}

impl<'c> Fixtures<'c> {
    pub fn new(conn: &'c mut DbConn, at: i64) -> Self {
        Fixtures { conn, at }
    }

    pub fn council(&mut self, c: &Council) -> Result<(), StoreError> {
        councils::insert(
            self.conn,
            &CouncilRow {
                ods_code: c.ods.to_owned(),
                name: c.name.to_owned(),
                office_phone: c.office_phone.to_owned(),
                emergency_phone: c.emergency_phone.to_owned(),
                active: true,
                version: 1,
                updated_at: self.at,
            },
        )?;
        Ok(())
    }

    pub fn person(&mut self, p: &Person) -> Result<(), StoreError> {
        patients::insert(
            self.conn,
            &PatientRow {
                nhs_number: p.nhs_number.to_owned(),
                family: p.family.to_owned(),
                given: JsonList(p.given.iter().map(|g| (*g).to_owned()).collect()),
                birth_date: p.birth_date.format("%Y-%m-%d").to_string(),
                address_lines: None,
                address_city: None,
                address_district: None,
                address_postal_code: None,
                created_by: p.council.to_owned(),
                version: 1,
                updated_at: self.at,
            },
        )?;
        Ok(())
    }

    /// Returns the new Flag's id.
    pub fn plan(&mut self, p: &Plan) -> Result<String, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        flags::insert(
            self.conn,
            &FlagRow {
                id: id.clone(),
                nhs_number: p.nhs_number.to_owned(),
                la_ods: p.council.to_owned(),
                local_ref_system: plan_system(p.council),
                local_ref_value: p.reference.to_owned(),
                plan_type: p.plan.snomed().to_owned(),
                status: if p.end.is_some() {
                    FlagStatus::Inactive
                } else {
                    FlagStatus::Active
                },
                period_start: p.start.format("%Y-%m-%d").to_string(),
                period_end: p.end.map(|d| d.format("%Y-%m-%d").to_string()),
                version: 1,
                updated_at: self.at,
            },
        )?;
        Ok(id)
    }
}
