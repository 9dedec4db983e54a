//! The access report (issue "audit team", scope 3): patterns of possible misuse in a period,
//! per user and per refused client, for an information-governance officer to follow up.
//!
//! Per user: accesses, distinct people looked up (and the most in one UK day), accesses outside
//! the configured working hours (UK time, Monday to Friday), people read silently (scheduled)
//! more often than a threshold, and distinct NHS numbers whose look-up found nothing (probing).
//! Per client address: refused authentications. A line is flagged where a threshold is passed.
//! Lines name users and organisations, never a child: no NHS number leaves this module.
//!
//! Built by reading the period's rows oldest first in keyset batches from the read pool, so
//! the writer never waits for it; memory grows with the distinct users and people of the
//! period, not with its rows.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc, Weekday};
use serde_json::{json, Value};

use crate::config::AuditSettings;
use crate::store::audit::{self as audit_store, AuditFilter, AuditRow, Order};
use crate::store::{from_micros, DbConn, StoreError};

const BATCH: usize = 5_000;

/// One user's figures.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UserLine {
    pub user: String,
    pub name: Option<String>,
    pub org: String,
    pub role: String,
    pub accesses: u64,
    pub distinct_people: u64,
    pub most_people_in_a_day: u64,
    pub out_of_hours: u64,
    /// People this user read silently more often than the threshold.
    pub repeated_silent_reads: u64,
    /// Distinct NHS numbers this user looked up without finding a record.
    pub probe_misses: u64,
    /// Which thresholds were passed: many-people, out-of-hours, repeated-silent-reads, probing.
    pub flags: Vec<&'static str>,
}

/// Refused authentications from one client address.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RefusalLine {
    pub source: String,
    pub refusals: u64,
    pub flagged: bool,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub start: i64,
    pub end: i64,
    pub council: Option<String>,
    pub users: Vec<UserLine>,
    pub refusals: Vec<RefusalLine>,
    pub thresholds: AuditSettings,
    /// Accesses per UK day and responsible council (the page's chart).
    pub daily_councils: BTreeMap<(NaiveDate, String), u64>,
    /// Accesses per UK day and accessing organisation.
    pub daily_orgs: BTreeMap<(NaiveDate, String), u64>,
    /// Each council's notification backlog as of `now` (see [`with_notifications`]).
    pub notifications: Vec<NotificationLine>,
}

/// One council's notifications not yet delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationLine {
    pub council: String,
    pub subscriptions: i64,
    /// Events waiting to be acknowledged.
    pub backlog: i64,
    /// How long the oldest of them has waited, in seconds (0 when none waits).
    pub lag_secs: i64,
    /// Subscriptions whose deliveries keep failing.
    pub failing: i64,
}

/// Adds each council's notification backlog (a council's report: its own) as of `now`.
pub fn with_notifications(
    mut report: Report,
    conn: &mut DbConn,
    now: i64,
) -> Result<Report, StoreError> {
    let rows = crate::store::subscriptions::backlog_per_council(conn)?;
    report.notifications = rows
        .into_iter()
        .filter(|b| report.council.as_ref().is_none_or(|c| *c == b.council))
        .map(|b| NotificationLine {
            lag_secs: b
                .oldest
                .filter(|_| b.events > 0)
                .map_or(0, |o| (now - o).max(0) / 1_000_000),
            council: b.council,
            subscriptions: b.subscriptions,
            backlog: b.events,
            failing: b.failing,
        })
        .collect();
    Ok(report)
}

/// The UK's civil time: GMT, or BST (UTC+1) from 01:00 UTC on the last Sunday of March to
/// 01:00 UTC on the last Sunday of October.
pub fn uk_time(t: DateTime<Utc>) -> chrono::NaiveDateTime {
    let last_sunday = |month: u32| {
        let first_of_next = NaiveDate::from_ymd_opt(t.year(), month + 1, 1).unwrap_or_default();
        let mut d = first_of_next - Duration::days(1);
        while d.weekday() != Weekday::Sun {
            d -= Duration::days(1);
        }
        Utc.from_utc_datetime(&d.and_hms_opt(1, 0, 0).unwrap_or_default())
    };
    let summer = t >= last_sunday(3) && t < last_sunday(10);
    (t + Duration::hours(i64::from(summer))).naive_utc()
}

fn is_access(r: &AuditRow) -> bool {
    ![
        crate::domain::SYSTEM_ROLE,
        crate::domain::AUTH_ROLE,
        crate::domain::WATCH_ROLE,
    ]
    .contains(&r.user_role.as_str())
}

#[derive(Default)]
struct Tally {
    line: UserLine,
    people: HashSet<String>,
    per_day: HashMap<NaiveDate, HashSet<String>>,
    silent: HashMap<String, u64>,
    missed: HashSet<String>,
}

/// Reads the period's trail (a council's: rows about its records) and builds the report.
pub fn build(
    read: &mut impl FnMut(
        &AuditFilter,
        Option<&str>,
    ) -> Result<crate::store::Page<AuditRow>, StoreError>,
    start: i64,
    end: i64,
    council: Option<String>,
    thresholds: &AuditSettings,
) -> Result<Report, StoreError> {
    let filter = AuditFilter {
        recorded_from: vec![start],
        recorded_before: vec![end],
        council: council.clone(),
        ..Default::default()
    };
    let mut users: BTreeMap<(String, String, String), Tally> = BTreeMap::new();
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let mut daily_councils: BTreeMap<(NaiveDate, String), u64> = BTreeMap::new();
    let mut daily_orgs: BTreeMap<(NaiveDate, String), u64> = BTreeMap::new();
    let (open, close) = thresholds.working_hours;
    let mut after: Option<String> = None;
    loop {
        let page = read(&filter, after.as_deref())?;
        for r in &page.rows {
            if r.user_role == crate::domain::AUTH_ROLE {
                let q: Value = serde_json::from_str(&r.query).unwrap_or_default();
                *refused.entry(r.client.clone()).or_default() += q["count"].as_u64().unwrap_or(1);
                continue;
            }
            if !is_access(r) {
                continue;
            }
            let t = users
                .entry((r.user_id.clone(), r.user_org.clone(), r.user_role.clone()))
                .or_default();
            t.line.accesses += 1;
            if t.line.name.is_none() {
                t.line.name.clone_from(&r.user_name);
            }
            let local = uk_time(from_micros(r.recorded));
            let minute = local.hour() * 60 + local.minute();
            let weekend = matches!(local.weekday(), Weekday::Sat | Weekday::Sun);
            if weekend || minute < open || minute >= close {
                t.line.out_of_hours += 1;
            }
            if r.resource_type != "AuditEvent" {
                *daily_orgs
                    .entry((local.date(), r.user_org.clone()))
                    .or_default() += 1;
                for c in &r.councils.0 {
                    *daily_councils.entry((local.date(), c.clone())).or_default() += 1;
                }
            }
            // People counts are about look-ups of records, not auditors reading the trail.
            let Some(nhs) = r
                .patient
                .as_ref()
                .filter(|_| r.resource_type != "AuditEvent")
            else {
                continue;
            };
            t.people.insert(nhs.clone());
            t.per_day
                .entry(local.date())
                .or_default()
                .insert(nhs.clone());
            if !r.unscheduled && r.outcome == "0" {
                *t.silent.entry(nhs.clone()).or_default() += 1;
            }
            if r.outcome == "0" && r.disclosed.0.is_empty() {
                t.missed.insert(nhs.clone());
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut lines: Vec<UserLine> = users
        .into_iter()
        .map(|((user, org, role), t)| {
            let mut l = t.line;
            l.user = user;
            l.org = org;
            l.role = role;
            l.distinct_people = t.people.len() as u64;
            l.most_people_in_a_day = t
                .per_day
                .values()
                .map(|s| s.len() as u64)
                .max()
                .unwrap_or(0);
            l.repeated_silent_reads = t
                .silent
                .values()
                .filter(|n| **n > thresholds.silent_reads)
                .count() as u64;
            l.probe_misses = t.missed.len() as u64;
            if l.most_people_in_a_day > thresholds.distinct_people_per_day {
                l.flags.push("many-people");
            }
            // Unscheduled care runs round the clock; anyone else out of hours is worth a look.
            if l.out_of_hours > 0 && l.role != crate::domain::Role::Clinician.as_str() {
                l.flags.push("out-of-hours");
            }
            if l.repeated_silent_reads > 0 {
                l.flags.push("repeated-silent-reads");
            }
            if l.probe_misses > thresholds.probe_misses {
                l.flags.push("probing");
            }
            l
        })
        .collect();
    lines.sort_by(|a, b| {
        b.flags
            .len()
            .cmp(&a.flags.len())
            .then(b.distinct_people.cmp(&a.distinct_people))
            .then(a.user.cmp(&b.user))
    });
    let mut refusals: Vec<RefusalLine> = refused
        .into_iter()
        .map(|(source, n)| RefusalLine {
            flagged: n > thresholds.refusals,
            source,
            refusals: n,
        })
        .collect();
    refusals.sort_by(|a, b| b.refusals.cmp(&a.refusals).then(a.source.cmp(&b.source)));
    Ok(Report {
        start,
        end,
        council,
        users: lines,
        refusals,
        thresholds: thresholds.clone(),
        daily_councils,
        daily_orgs,
        notifications: Vec::new(),
    })
}

/// A batch of the period's rows, oldest first, after the cursor: what [`build`] reads.
pub fn batch(
    conn: &mut DbConn,
    filter: &AuditFilter,
    after: Option<&str>,
) -> Result<crate::store::Page<AuditRow>, StoreError> {
    Ok(audit_store::search(
        conn,
        filter,
        Order::OldestFirst,
        after,
        BATCH,
        false,
    )?)
}

fn period_query(r: &Report) -> String {
    let mut q = format!(
        "date=ge{}&date=lt{}",
        crate::fhir::instant(r.start),
        crate::fhir::instant(r.end)
    );
    if let Some(c) = &r.council {
        q.push_str(&format!("&council={c}"));
    }
    q.replace('+', "%2B")
}

fn int(name: &str, n: u64) -> Value {
    json!({ "name": name, "valueInteger": n.min(i32::MAX as u64) })
}

impl Report {
    /// As FHIR `Parameters` (FHIR R4 §2.36): `user` and `refusals` parts, each with a link to
    /// its AuditEvents.
    pub fn to_parameters(&self, base_url: &str) -> Value {
        let period = period_query(self);
        let mut parameter = vec![
            json!({ "name": "start", "valueInstant": crate::fhir::instant(self.start) }),
            json!({ "name": "end", "valueInstant": crate::fhir::instant(self.end) }),
            json!({ "name": "thresholds", "part": [
                int("distinctPeoplePerDay", self.thresholds.distinct_people_per_day),
                int("silentReads", self.thresholds.silent_reads),
                int("probeMisses", self.thresholds.probe_misses),
                int("refusals", self.thresholds.refusals),
                { "name": "workingHours", "valueString": working_hours(self.thresholds.working_hours) },
            ]}),
        ];
        if let Some(c) = &self.council {
            parameter.push(json!({ "name": "council", "valueString": c }));
        }
        for u in &self.users {
            let mut part = vec![
                json!({ "name": "agent", "valueString": u.user }),
                json!({ "name": "organization", "valueString": u.org }),
                json!({ "name": "role", "valueString": u.role }),
                int("accesses", u.accesses),
                int("distinctPeople", u.distinct_people),
                int("mostPeopleInADay", u.most_people_in_a_day),
                int("outOfHours", u.out_of_hours),
                int("repeatedSilentReads", u.repeated_silent_reads),
                int("probeMisses", u.probe_misses),
            ];
            if let Some(n) = &u.name {
                part.insert(1, json!({ "name": "agentName", "valueString": n }));
            }
            part.extend(
                u.flags
                    .iter()
                    .map(|f| json!({ "name": "flag", "valueCode": f })),
            );
            part.push(json!({ "name": "events", "valueUri": format!(
                "{base_url}/AuditEvent?{period}&agent={}&agent-org={}",
                crate::fhir::percent::encode_strict(&u.user), u.org
            )}));
            parameter.push(json!({ "name": "user", "part": part }));
        }
        for r in &self.refusals {
            parameter.push(json!({ "name": "refusals", "part": [
                { "name": "source", "valueString": r.source },
                int("count", r.refusals),
                { "name": "flagged", "valueBoolean": r.flagged },
                { "name": "events", "valueUri": format!(
                    "{base_url}/AuditEvent?{period}&type=http://dicom.nema.org/resources/ontology/DCM%7C110114&source={}",
                    crate::fhir::percent::encode_strict(&r.source)
                )},
            ]}));
        }
        for ((day, council), n) in &self.daily_councils {
            parameter.push(json!({ "name": "daily", "part": [
                { "name": "day", "valueDate": day.to_string() },
                { "name": "council", "valueString": council },
                int("accesses", *n),
            ]}));
        }
        for ((day, org), n) in &self.daily_orgs {
            parameter.push(json!({ "name": "daily", "part": [
                { "name": "day", "valueDate": day.to_string() },
                { "name": "organization", "valueString": org },
                int("accesses", *n),
            ]}));
        }
        for b in &self.notifications {
            parameter.push(json!({ "name": "notifications", "part": [
                { "name": "council", "valueString": b.council },
                int("subscriptions", u64::try_from(b.subscriptions).unwrap_or(0)),
                int("backlog", u64::try_from(b.backlog).unwrap_or(0)),
                int("lagSeconds", u64::try_from(b.lag_secs).unwrap_or(0)),
                int("failing", u64::try_from(b.failing).unwrap_or(0)),
            ]}));
        }
        json!({ "resourceType": "Parameters", "parameter": parameter })
    }

    /// As plain JSON, for `cpis-fhir audit-report --format json`.
    pub fn to_json(&self) -> Value {
        json!({
            "start": crate::fhir::instant(self.start),
            "end": crate::fhir::instant(self.end),
            "council": self.council,
            "users": self.users.iter().map(|u| json!({
                "agent": u.user, "agentName": u.name, "organization": u.org, "role": u.role,
                "accesses": u.accesses, "distinctPeople": u.distinct_people,
                "mostPeopleInADay": u.most_people_in_a_day, "outOfHours": u.out_of_hours,
                "repeatedSilentReads": u.repeated_silent_reads, "probeMisses": u.probe_misses,
                "flags": u.flags,
            })).collect::<Vec<_>>(),
            "refusals": self.refusals.iter().map(|r| json!({
                "source": r.source, "count": r.refusals, "flagged": r.flagged,
            })).collect::<Vec<_>>(),
        })
    }

    /// As CSV: one line per user, then one per refused source (`kind` tells them apart).
    pub fn to_csv(&self) -> Result<String, String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let head = [
            "kind",
            "agent",
            "agent_name",
            "organization",
            "role",
            "accesses",
            "distinct_people",
            "most_people_in_a_day",
            "out_of_hours",
            "repeated_silent_reads",
            "probe_misses",
            "refusals",
            "flags",
        ];
        w.write_record(head).map_err(|e| e.to_string())?;
        for u in &self.users {
            w.write_record([
                "user".to_owned(),
                u.user.clone(),
                u.name.clone().unwrap_or_default(),
                u.org.clone(),
                u.role.clone(),
                u.accesses.to_string(),
                u.distinct_people.to_string(),
                u.most_people_in_a_day.to_string(),
                u.out_of_hours.to_string(),
                u.repeated_silent_reads.to_string(),
                u.probe_misses.to_string(),
                String::new(),
                u.flags.join(" "),
            ])
            .map_err(|e| e.to_string())?;
        }
        for r in &self.refusals {
            let flags = if r.flagged { "refusals" } else { "" };
            let mut line = vec!["refused-source".to_owned(), r.source.clone()];
            line.extend(std::iter::repeat_n(String::new(), 9));
            line.push(r.refusals.to_string());
            line.push(flags.to_owned());
            w.write_record(line).map_err(|e| e.to_string())?;
        }
        let bytes = w.into_inner().map_err(|e| e.to_string())?;
        String::from_utf8(bytes).map_err(|e| e.to_string())
    }
}

fn working_hours((a, b): (u32, u32)) -> String {
    format!("{:02}:{:02}-{:02}:{:02}", a / 60, a % 60, b / 60, b % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uk_time_is_bst_between_the_last_sundays_of_march_and_october() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        // 2026: BST from 29 March 01:00 UTC to 25 October 01:00 UTC.
        assert_eq!(uk_time(at("2026-03-29T00:59:00Z")).hour(), 0);
        assert_eq!(uk_time(at("2026-03-29T01:00:00Z")).hour(), 2);
        assert_eq!(uk_time(at("2026-10-25T00:59:00Z")).hour(), 1);
        assert_eq!(uk_time(at("2026-10-25T01:00:00Z")).hour(), 1);
        assert_eq!(uk_time(at("2026-12-01T08:30:00Z")).hour(), 8);
        assert_eq!(uk_time(at("2026-07-01T07:30:00Z")).hour(), 8);
    }
}
