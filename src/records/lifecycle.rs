//! The record lifecycle (DOMAIN.md "Retention"; "Plans end automatically when the person turns
//! 18"), applied by one function, [`run`], which the in-server scheduler, `POST /$purge` and
//! `cpis-fhir purge` all call:
//!
//! 1. at a person's 18th birthday their child protection and looked-after plans end: the plan's
//!    end becomes the day before the birthday (unborn-child plans, held on the mother's record,
//!    are not touched);
//! 2. an active plan whose end date has passed becomes `inactive` (still visible);
//! 3. Flags whose plan ended before the retention window (default 12 months), and Flags entered
//!    in error that long ago, are deleted with their history; people left with no Flag are
//!    deleted, and so is anyone sent without a plan who has had none for a day;
//! 4. AuditEvents older than their own retention (default 8 years) are deleted;
//! 5. a run that changed anything writes an AuditEvent of its own, by the system, with the
//!    counts only — never the removed personal data.
//!
//! Changes in steps 1 and 2 are new Flag versions made by the system, so the council and the
//! audit team can see when and why a record changed. Everything happens in one transaction.

use std::time::Duration;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use serde_json::{json, Value};

use crate::domain::{FlagStatus, PlanType};
use crate::records::write::ended;
use crate::store::audit::{self, AuditRow};
use crate::store::StoreError;
use crate::store::{flags, lifecycle as q, micros, DbConn, Store};

/// The subtype that marks a lifecycle run's AuditEvent (ISO 21089 "destroy").
pub const AUDIT_SUBTYPE: &str = "destroy";
pub use crate::domain::SYSTEM_ROLE;
/// A person sent without a plan is kept this long for the plan to follow.
const PERSON_WITHOUT_PLAN_GRACE_MICROS: i64 = 24 * 3600 * 1_000_000;

/// The windows the rules use (from the settings).
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub retention_months: u32,
    pub audit_retention_months: u32,
}

impl Rules {
    pub fn of(settings: &crate::config::Settings) -> Self {
        Self {
            retention_months: settings.retention_months,
            audit_retention_months: settings.audit_retention_months,
        }
    }
}

/// The first day of the retention window on `today` (`YYYY-MM-DD`): a plan that ended on or
/// after it is still shown to clinicians; one that ended before it is removed. The look-up and
/// the removal use this one rule, so a record is never hidden yet kept, or shown yet due to go.
pub fn visible_since(today: NaiveDate, retention_months: u32) -> String {
    ymd(today
        .checked_sub_months(Months::new(retention_months))
        .unwrap_or(today))
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub plans_ended_at_18: usize,
    pub plans_made_inactive: usize,
    pub flags_removed: usize,
    pub patients_removed: usize,
    pub audit_events_removed: usize,
}

impl Counts {
    pub fn is_empty(&self) -> bool {
        *self == Counts::default()
    }

    /// The counts by name, as shown in the run's AuditEvent and in `$purge`'s answer.
    pub fn named(&self) -> [(&'static str, usize); 5] {
        [
            ("plansEndedAt18", self.plans_ended_at_18),
            ("plansMadeInactive", self.plans_made_inactive),
            ("flagsRemoved", self.flags_removed),
            ("patientsRemoved", self.patients_removed),
            ("auditEventsRemoved", self.audit_events_removed),
        ]
    }
}

/// Who started a run, for its AuditEvent.
#[derive(Debug, Clone)]
pub enum Trigger {
    Scheduler,
    Command,
    /// `POST /$purge`: the administrator and the request.
    Operation {
        user_id: String,
        org: String,
        request_id: String,
    },
}

/// What a run did and the AuditEvent that records it (none when it changed nothing).
#[derive(Debug, Clone)]
pub struct Report {
    pub counts: Counts,
    pub audit_event: Option<String>,
    /// A scheduled run found another replica's run in progress and left the work to it.
    pub skipped: bool,
}

impl Trigger {
    fn label(&self) -> &'static str {
        match self {
            Trigger::Scheduler => "scheduler",
            Trigger::Command => "command",
            Trigger::Operation { .. } => "operation",
        }
    }
}

/// The date a person born on `birth` turns 18; someone born on 29 February turns 18 on
/// 1 March in a year that has no 29 February.
pub fn eighteenth_birthday(birth: NaiveDate) -> Option<NaiveDate> {
    let year = birth.year() + 18;
    birth
        .with_year(year)
        .or_else(|| NaiveDate::from_ymd_opt(year, 3, 1))
}

fn ymd(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn months_before(t: DateTime<Utc>, months: u32) -> DateTime<Utc> {
    t.checked_sub_months(Months::new(months)).unwrap_or(t)
}

/// Applies every rule as of `now`, in the caller's transaction.
pub fn run(
    conn: &mut DbConn,
    rules: Rules,
    now: DateTime<Utc>,
    trigger: &Trigger,
) -> Result<Report, StoreError> {
    // Replicas over one PostgreSQL database each run the scheduler: one run at a time, or two
    // would make the same new Flag versions. A scheduled run that finds another in progress
    // skips (the other does the work); an operator's run waits for it, then finds what is left.
    let wait = !matches!(trigger, Trigger::Scheduler);
    if !q::take_run_lock(conn, wait)? {
        crate::metrics::lifecycle_run(trigger.label(), "skipped");
        return Ok(Report {
            counts: Counts::default(),
            audit_event: None,
            skipped: true,
        });
    }
    let today = now.date_naive();
    let stamp = micros(now);
    let mut counts = Counts::default();

    // 1. Age 18. Selecting by a date of birth a little later than exactly 18 years ago keeps
    // the 29 February case in the query; the exact birthday is decided here.
    let born_by = today
        .checked_sub_months(Months::new(18 * 12))
        .and_then(|d| d.succ_opt())
        .unwrap_or(today);
    let children_plans = [
        PlanType::ChildProtection.snomed(),
        PlanType::LookedAfter.snomed(),
    ];
    for (row, birth) in q::plans_of_people_born_by(conn, &children_plans, &ymd(born_by))? {
        let Some(adult_on) = chrono::NaiveDate::parse_from_str(&birth, "%Y-%m-%d")
            .ok()
            .and_then(eighteenth_birthday)
        else {
            continue;
        };
        if adult_on > today {
            continue;
        }
        let last_day = ymd(adult_on.pred_opt().unwrap_or(adult_on)).max(row.period_start.clone());
        if row
            .period_end
            .as_deref()
            .is_some_and(|end| *end <= *last_day)
        {
            continue;
        }
        let mut next = row.clone();
        next.period_end = Some(last_day);
        next.version += 1;
        next.updated_at = stamp;
        let next = ended(next, today);
        flags::update(conn, &next, "SYSTEM")?;
        counts.plans_ended_at_18 += 1;
    }

    // 2. Ended plans are no longer active.
    for row in q::active_but_ended(conn, &ymd(today))? {
        let mut next = row.clone();
        next.status = FlagStatus::Inactive;
        next.version += 1;
        next.updated_at = stamp;
        flags::update(conn, &next, "SYSTEM")?;
        counts.plans_made_inactive += 1;
    }

    // 3. Retention. A plan is visible while its end is on or after `since`.
    let since = visible_since(today, rules.retention_months);
    let withdrawn_before = micros(months_before(now, rules.retention_months));
    let removed = q::past_retention(conn, &since, withdrawn_before)?;
    let (ids, mut people): (Vec<String>, Vec<String>) = removed.into_iter().unzip();
    people.sort();
    people.dedup();
    counts.flags_removed = q::delete_flags(conn, &ids)?;
    counts.patients_removed =
        q::delete_people_without_flags(conn, &people, stamp - PERSON_WITHOUT_PLAN_GRACE_MICROS)?;

    // 4. The audit trail's own retention; subscriptions' events name AuditEvents, so they
    // leave with them.
    let audit_cutoff = micros(months_before(now, rules.audit_retention_months));
    counts.audit_events_removed = q::delete_audit_before(conn, audit_cutoff)?;
    crate::store::subscriptions::remove_events_before(conn, audit_cutoff)?;

    // 5. The run's own record.
    let audit_event = if counts.is_empty() {
        None
    } else {
        let row = audit_row(&counts, trigger, stamp);
        audit::insert(conn, &row)?;
        Some(row.id)
    };
    crate::metrics::lifecycle_run(
        trigger.label(),
        if counts.is_empty() {
            "unchanged"
        } else {
            "changed"
        },
    );
    Ok(Report {
        counts,
        audit_event,
        skipped: false,
    })
}

fn audit_row(counts: &Counts, trigger: &Trigger, recorded: i64) -> AuditRow {
    let (user_id, org, request_id, how) = match trigger {
        Trigger::Scheduler => (
            "cpis-fhir".to_owned(),
            String::new(),
            String::new(),
            "scheduler",
        ),
        Trigger::Command => (
            "cpis-fhir".to_owned(),
            String::new(),
            String::new(),
            "command",
        ),
        Trigger::Operation {
            user_id,
            org,
            request_id,
        } => (user_id.clone(), org.clone(), request_id.clone(), "$purge"),
    };
    let detail: serde_json::Map<String, Value> = counts
        .named()
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    AuditRow {
        id: audit::new_id(recorded),
        recorded,
        resource_type: "Flag".to_owned(),
        subtype: AUDIT_SUBTYPE.to_owned(),
        outcome: "0".to_owned(),
        outcome_desc: Some(format!(
            "record lifecycle run ({how}): {}",
            counts
                .named()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        user_id,
        user_name: None,
        user_role: SYSTEM_ROLE.to_owned(),
        user_org: org,
        client: how.to_owned(),
        patient: None,
        councils: crate::store::columns::CouncilList::default(),
        disclosed: crate::store::columns::JsonList::default(),
        request_id,
        trace_id: None,
        unscheduled: false,
        listed: false,
        query: Value::Object(detail).to_string(),
    }
}

/// The scheduler's thread: runs the lifecycle on the writer every `every`, first at start-up,
/// until `stop` is set (a run in progress finishes first).
pub fn run_scheduler(
    stop: crate::tasks::Stop,
    store: Store,
    rules: Rules,
    clock: crate::domain::Clock,
    every: Duration,
) {
    loop {
        tick(&store, rules, &clock, &stop);
        if stop.sleep(every) {
            return;
        }
    }
}

/// One scheduled run; failures are logged and the next run tries again.
fn tick(store: &Store, rules: Rules, clock: &crate::domain::Clock, stop: &crate::tasks::Stop) {
    let now = clock();
    match store.write_blocking(move |conn| run(conn, rules, now, &Trigger::Scheduler)) {
        Ok(r) if r.skipped => log::debug!("lifecycle: another replica's run is in progress"),
        Ok(r) if r.counts.is_empty() => log::debug!("lifecycle: nothing to do"),
        Ok(r) => log::info!("lifecycle: {:?}", r.counts),
        Err(e) => {
            crate::metrics::lifecycle_run("scheduler", "failed");
            log::error!("lifecycle run failed: {e}");
        }
    }
    // Between jobs, not inside one: a shutdown need not wait for a whole trail's indexing.
    match index_audit(store, now, &|| stop.is_set()) {
        Ok(jobs) => log::debug!("audit index: {jobs} job(s)"),
        Err(e) => log::error!("audit index: not brought up to date: {e}"),
    }
}

/// How long after the instant it records an audit row is indexed: a row is committed a moment
/// after its instant (its request queued on the writer, a slow disk, a retried commit), and the
/// index's reach only grows, so a row it passed before its commit would never be indexed. A
/// search matches the rows after the reach one by one, so this is also their most.
const INDEX_LAG_MICROS: i64 = 10 * 60 * 1_000_000;

/// [`INDEX_LAG_MICROS`] as a duration: a tool that knows every row is committed (no server
/// running) indexes the whole trail by passing `now` this much ahead.
pub const INDEX_LAG: chrono::TimeDelta = chrono::TimeDelta::microseconds(INDEX_LAG_MICROS);

/// Rows read per indexing job (each a writer job, so look-ups go between them).
const INDEX_CHUNK: i64 = 5_000;

/// Brings the audit trail's indexes kept behind it (the `entity`, `patient`, `agent` and
/// `agent-org` searches') up to ten minutes before `now`, or as far as they got when `stop`
/// says so; how many jobs it took. After an upgrade the first call indexes the whole trail.
pub fn index_audit(
    store: &Store,
    now: DateTime<Utc>,
    stop: &dyn Fn() -> bool,
) -> Result<usize, StoreError> {
    let before = crate::store::audit::first_id_at(micros(now) - INDEX_LAG_MICROS);
    let mut jobs = 0;
    for index in crate::store::audit::TrailIndex::ALL {
        loop {
            if stop() {
                return Ok(jobs);
            }
            let bound = before.clone();
            let more = store.write_blocking(move |c| {
                Ok::<_, StoreError>(crate::store::audit::index_trail(
                    c,
                    index,
                    &bound,
                    INDEX_CHUNK,
                )?)
            })?;
            jobs += 1;
            if !more {
                break;
            }
        }
    }
    Ok(jobs)
}

/// [`index_audit`], its failure logged: the search stays right without the index (it matches
/// the rows the index has not reached), and the next run tries again.
pub fn index_audit_logged(store: &Store, now: DateTime<Utc>) {
    match index_audit(store, now, &|| false) {
        Ok(jobs) => log::debug!("audit index: brought up to date in {jobs} job(s)"),
        Err(e) => log::error!("audit index: not brought up to date: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leap_day_child_turns_18_on_the_first_of_march() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day);
        assert_eq!(
            eighteenth_birthday(d(2008, 2, 29).unwrap_or_default()),
            d(2026, 3, 1)
        );
        assert_eq!(
            eighteenth_birthday(d(2008, 3, 14).unwrap_or_default()),
            d(2026, 3, 14)
        );
        assert_eq!(
            eighteenth_birthday(d(2012, 2, 29).unwrap_or_default()),
            d(2030, 3, 1)
        );
    }
}
