//! Demo data for `serve --dev`: three councils, a child under each plan type, an unborn-child
//! plan on a mother's record, a child with plans from two councils, and an ended plan. Every NHS
//! number is from the 999 test range, so no real person's number is ever used.

pub mod banner;

use chrono::{Duration, NaiveDate};

use crate::domain::PlanType;
use crate::error::ApiError;
use crate::nhs_number::NhsNumber;
use crate::records::fixture::{plan_system, Council, Fixtures, Person, Plan};
use crate::store::{councils, flags, micros, DbConn, Store};

/// Councils: ODS code, name, office-hours phone, emergency-duty phone (Ofcom drama numbers).
pub const COUNCILS: &[(&str, &str, &str, &str)] = &[
    (
        "LA901",
        "Northmoor Borough Council",
        "01632 960001",
        "01632 960101",
    ),
    (
        "LA902",
        "Eastvale County Council",
        "01632 960002",
        "01632 960102",
    ),
    (
        "LA903",
        "Westbridge City Council",
        "01632 960003",
        "01632 960103",
    ),
];

struct DemoPerson {
    index: u32,
    family: &'static str,
    given: &'static str,
    birth: &'static str,
    /// (council, plan, days since start, days since end)
    plans: &'static [(&'static str, PlanType, i64, Option<i64>)],
}

const PEOPLE: &[DemoPerson] = &[
    DemoPerson {
        index: 101,
        family: "Carter",
        given: "Ellis",
        birth: "2016-03-14",
        plans: &[("LA901", PlanType::ChildProtection, 60, None)],
    },
    DemoPerson {
        index: 202,
        family: "Price",
        given: "Jordan",
        birth: "2012-09-30",
        plans: &[("LA902", PlanType::LookedAfter, 380, None)],
    },
    DemoPerson {
        index: 303,
        family: "Shah",
        given: "Amira",
        birth: "1999-05-21",
        plans: &[("LA901", PlanType::UnbornChildProtection, 30, None)],
    },
    DemoPerson {
        index: 404,
        family: "Owen",
        given: "Riley",
        birth: "2014-01-08",
        plans: &[("LA903", PlanType::ChildProtection, 400, Some(90))],
    },
    DemoPerson {
        index: 505,
        family: "Taylor",
        given: "Sam",
        birth: "2019-07-19",
        plans: &[
            ("LA901", PlanType::ChildProtection, 20, None),
            ("LA902", PlanType::LookedAfter, 10, None),
        ],
    },
];

/// A demo record, for the start-up banner.
pub struct DemoRecord {
    pub nhs_number: String,
    pub name: String,
    pub flag_id: String,
    pub council: String,
    pub plan: PlanType,
    pub ended: bool,
}

/// Loads the demo data unless the councils already exist; returns the demo records either way.
pub fn load(
    store: &Store,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<DemoRecord>, ApiError> {
    store.write_blocking(move |conn| {
        if councils::get(conn, COUNCILS[0].0)?.is_none() {
            insert_all(conn, now)?;
        }
        records(conn)
    })
}

fn insert_all(conn: &mut DbConn, now: chrono::DateTime<chrono::Utc>) -> Result<(), ApiError> {
    let today = now.date_naive();
    let mut seed = Fixtures::new(conn, micros(now));
    for (ods, name, office, edt) in COUNCILS {
        seed.council(&Council {
            ods,
            name,
            office_phone: office,
            emergency_phone: edt,
        })?;
    }
    for p in PEOPLE {
        let nhs = NhsNumber::test_number(p.index);
        let birth_date = NaiveDate::parse_from_str(p.birth, "%Y-%m-%d")
            .map_err(|e| ApiError::Internal(format!("demo birth date {}: {e}", p.birth)))?;
        seed.person(&Person {
            nhs_number: nhs.as_str(),
            family: p.family,
            given: &[p.given],
            birth_date,
            council: p.plans[0].0,
        })?;
        for (i, (ods, plan, since_start, since_end)) in p.plans.iter().enumerate() {
            let day = |d: i64| -> NaiveDate { today - Duration::days(d) };
            seed.plan(&Plan {
                nhs_number: nhs.as_str(),
                council: ods,
                plan: *plan,
                start: day(*since_start),
                end: since_end.map(day),
                reference: &format!("PLAN-{}-{}", p.index, i + 1),
            })?;
        }
    }
    Ok(())
}

fn records(conn: &mut DbConn) -> Result<Vec<DemoRecord>, ApiError> {
    let mut out = Vec::new();
    for p in PEOPLE {
        let nhs = NhsNumber::test_number(p.index);
        for (i, (ods, plan, _, end)) in p.plans.iter().enumerate() {
            let system = plan_system(ods);
            let value = format!("PLAN-{}-{}", p.index, i + 1);
            if let Some(f) = flags::find_by_identifier(conn, ods, &system, &value)? {
                out.push(DemoRecord {
                    nhs_number: nhs.as_str().into(),
                    name: format!("{} {}", p.given, p.family),
                    flag_id: f.id,
                    council: (*ods).into(),
                    plan: *plan,
                    ended: end.is_some(),
                });
            }
        }
    }
    Ok(out)
}
