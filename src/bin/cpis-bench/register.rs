//! The synthetic national register (DOMAIN.md "Scale"), seeded straight into the database.

use super::*;
use cpis_fhir::records::fixture::{Council, Fixtures, Person, Plan};

/// The register's NHS numbers (the first `people` of the test range) and, after them, numbers
/// that are valid but not registered (the misses).
pub(crate) fn numbers(people: u32, misses: u32) -> Vec<String> {
    NhsNumber::test_numbers()
        .take((people + misses) as usize)
        .map(|n| n.as_str().to_owned())
        .collect()
}

pub(crate) const MISSES: u32 = 50_000;

/// The plan mix of DOMAIN.md "Scale": about 40% looked after, 25% on a child protection plan,
/// 30% with a plan ended in the last 12 months, 5% unborn-child plans; one in 50 people has a
/// second plan with another council.
pub(crate) fn generate(store: &Store, args: &Args) -> Result<(), String> {
    let councils = register_councils(store, args.councils)?;
    let now = chrono::Utc::now();
    let at = store::micros(now);
    let started = now.date_naive() - chrono::Duration::days(400);
    let birth = chrono::NaiveDate::from_ymd_opt(2015, 6, 1).unwrap_or_default();
    let all = std::sync::Arc::new(numbers(args.people, 0));
    let chunk = 5_000u32;
    let mut start = 0;
    while start < args.people {
        let end = (start + chunk).min(args.people);
        let councils = councils.clone();
        let all = all.clone();
        store
            .write_blocking(move |c| {
                let mut seed = Fixtures::new(c, at);
                for i in start..end {
                    let nhs = all[i as usize].as_str();
                    seed.person(&Person {
                        nhs_number: nhs,
                        family: &format!("Family{i}"),
                        given: &["Alex"],
                        birth_date: birth,
                        council: &councils[(i as usize) % councils.len()],
                    })?;
                    let plans = if i % 50 == 0 { 2 } else { 1 };
                    for p in 0..plans {
                        let (la, plan, end) = plan_of(i, p, &councils);
                        seed.plan(&Plan {
                            nhs_number: nhs,
                            council: &la,
                            plan,
                            start: started,
                            end,
                            reference: &format!("P{i}-{p}"),
                        })?;
                    }
                }
                Ok::<(), store::StoreError>(())
            })
            .map_err(|e| e.to_string())?;
        start = end;
    }
    Ok(())
}

/// Registers `n` councils (LB000, LB001, …) straight into the database.
pub(crate) fn register_councils(store: &Store, n: u32) -> Result<Vec<String>, String> {
    let councils: Vec<String> = (0..n).map(|i| format!("LB{i:03}")).collect();
    let at = store::micros(chrono::Utc::now());
    let all = councils.clone();
    store
        .write_blocking(move |c| {
            let mut seed = Fixtures::new(c, at);
            for ods in &all {
                seed.council(&Council {
                    ods,
                    name: &format!("Council {ods}"),
                    office_phone: "01632 960000",
                    emergency_phone: "01632 960999",
                })?;
            }
            Ok(())
        })
        .map_err(|e: store::StoreError| e.to_string())?;
    Ok(councils)
}

/// Which council holds plan `p` (0 or 1) of person `i`, and what plan it is: the plan mix of
/// DOMAIN.md "Scale" (see [`generate`]).
pub(crate) fn plan_of(
    i: u32,
    p: usize,
    councils: &[String],
) -> (String, PlanType, Option<chrono::NaiveDate>) {
    let today = chrono::Utc::now().date_naive();
    let la = councils[(i as usize + p * 7) % councils.len()].clone();
    let (plan, end) = match i % 20 {
        0..=7 => (PlanType::LookedAfter, None),
        8..=12 => (PlanType::ChildProtection, None),
        13..=18 => (
            PlanType::ChildProtection,
            Some(today - chrono::Duration::days(i64::from(i % 360))),
        ),
        _ => (PlanType::UnbornChildProtection, None),
    };
    (la, plan, end)
}
