//! Abuse limits on the look-up (issue "Deployable trust", scope 6): per user and per
//! organisation, at most so many audited look-ups a minute — more are answered 429 with
//! `Retry-After` and audited as refused accesses — and a warning AuditEvent (DICOM 110113
//! "Security Alert") when one user looks up more distinct people within a window than
//! configured: the "fishing" pattern an audit team looks for. The warning names the user and
//! the organisation, never the people looked up (they are in the user's own access records).
//!
//! Counts are kept in this process: with several replicas each counts what it serves, so the
//! limits are per replica (a load balancer spreading a user's requests over N replicas allows
//! up to N times the limit; the fishing threshold is reached later). Memory is bounded: past
//! [`MAX_TRACKED`] users or organisations, windows that have ended are dropped, then all.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::domain::{Caller, Role};
use crate::error::ApiError;
use crate::store::audit::{self as audit_store, AuditRow};
use crate::store::columns::{CouncilList, JsonList};

/// The most users (and organisations) whose windows are kept.
const MAX_TRACKED: usize = 100_000;
/// The rate limits' window.
const MINUTE_MICROS: i64 = 60 * 1_000_000;

/// The configured limits (`limits.lookups_per_user_per_minute`, …); 0 turns one off.
#[derive(Debug, Clone, Copy)]
pub struct WatchSettings {
    pub per_user_per_minute: u32,
    pub per_org_per_minute: u32,
    pub fishing_threshold: u32,
    pub fishing_window_secs: u64,
}

#[derive(Default)]
struct State {
    users: HashMap<String, (i64, u32)>,
    orgs: HashMap<String, (i64, u32)>,
    /// Per user: the window's start, the people looked up (as keyed hashes, and only up to the
    /// threshold — past it only the warning matters), whether it was already warned of. So a
    /// user costs at most threshold × 8 bytes, whatever they look up.
    people: HashMap<String, (i64, HashSet<u64>, bool)>,
    /// The key of those hashes: random per process, so they say nothing outside it.
    hasher: std::collections::hash_map::RandomState,
}

pub struct Watch {
    settings: WatchSettings,
    state: Mutex<State>,
}

/// The key a user is counted under: the same person through another issuer is someone else.
fn user_key(c: &Caller) -> String {
    format!("{}\u{1f}{}", c.issuer, c.user_id)
}

fn bounded<V>(map: &mut HashMap<String, V>, live: impl Fn(&V) -> bool) {
    if map.len() >= MAX_TRACKED {
        map.retain(|_, v| live(v));
        if map.len() >= MAX_TRACKED {
            map.clear();
        }
    }
}

/// Counts one request in a fixed window; `Err(seconds left)` when over `limit`.
fn count(
    map: &mut HashMap<String, (i64, u32)>,
    key: String,
    limit: u32,
    now: i64,
) -> Result<(), u64> {
    if limit == 0 {
        return Ok(());
    }
    bounded(map, |(start, _)| now - start < MINUTE_MICROS);
    let entry = map.entry(key).or_insert((now, 0));
    if now - entry.0 >= MINUTE_MICROS {
        *entry = (now, 0);
    }
    if entry.1 >= limit {
        let left = ((entry.0 + MINUTE_MICROS - now).max(0) + 999_999) / 1_000_000;
        return Err(u64::try_from(left).unwrap_or(60));
    }
    entry.1 += 1;
    Ok(())
}

impl Watch {
    pub fn new(settings: WatchSettings) -> Self {
        Self {
            settings,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whose look-ups are limited: people in care settings (the clinician roles).
    fn watched(c: &Caller) -> bool {
        matches!(c.role, Role::Clinician | Role::ClinicianScheduled)
    }

    /// Counts a look-up by `caller` at `now` (µs): refused (429) past the user's or the
    /// organisation's limit. The organisation is counted only for look-ups its user may make.
    pub fn admit(&self, caller: &Caller, now: i64) -> Result<(), ApiError> {
        if !Self::watched(caller) {
            return Ok(());
        }
        self.admit_in(&mut self.lock(), user_key(caller), caller, now)
    }

    /// One look-up by `caller` (of `nhs`, when the request names a person): [`Watch::admit`],
    /// then, if admitted, [`Watch::looked_up`] — under one lock, the user's key made once.
    pub fn look_up(
        &self,
        caller: &Caller,
        nhs: Option<&str>,
        now: i64,
    ) -> (Result<(), ApiError>, Option<AuditRow>) {
        if !Self::watched(caller) {
            return (Ok(()), None);
        }
        let key = user_key(caller);
        let mut state = self.lock();
        let admitted = self.admit_in(&mut state, key.clone(), caller, now);
        let warn = match (&admitted, nhs) {
            (Ok(()), Some(nhs)) => self.note_in(&mut state, key, caller, nhs, now),
            _ => None,
        };
        (admitted, warn)
    }

    fn admit_in(
        &self,
        state: &mut State,
        key: String,
        caller: &Caller,
        now: i64,
    ) -> Result<(), ApiError> {
        let s = self.settings;
        count(&mut state.users, key, s.per_user_per_minute, now).map_err(|left| {
            ApiError::Throttled(
                format!(
                    "this user has made {} look-ups in a minute, the most allowed; retry in {left} s",
                    s.per_user_per_minute
                ),
                left,
            )
        })?;
        count(&mut state.orgs, caller.org.as_str().to_owned(), s.per_org_per_minute, now).map_err(
            |left| {
                ApiError::Throttled(
                    format!(
                        "{} has made {} look-ups in a minute, the most allowed for one organisation; retry in {left} s",
                        caller.org.as_str(),
                        s.per_org_per_minute
                    ),
                    left,
                )
            },
        )
    }

    /// Notes that `caller` looked `nhs` up at `now`; the warning to write when this look-up
    /// takes the user past the threshold of distinct people in the window (once per window).
    pub fn looked_up(&self, caller: &Caller, nhs: &str, now: i64) -> Option<AuditRow> {
        if !Self::watched(caller) {
            return None;
        }
        self.note_in(&mut self.lock(), user_key(caller), caller, nhs, now)
    }

    fn note_in(
        &self,
        state: &mut State,
        key: String,
        caller: &Caller,
        nhs: &str,
        now: i64,
    ) -> Option<AuditRow> {
        let s = self.settings;
        if s.fishing_threshold == 0 {
            return None;
        }
        let window = i64::try_from(s.fishing_window_secs)
            .unwrap_or(i64::MAX / 2_000_000)
            .saturating_mul(1_000_000);
        let hash = std::hash::BuildHasher::hash_one(&state.hasher, nhs);
        bounded(&mut state.people, |(start, _, _)| now - start < window);
        let entry = state
            .people
            .entry(key)
            .or_insert_with(|| (now, HashSet::new(), false));
        if now - entry.0 >= window {
            *entry = (now, HashSet::new(), false);
        }
        if entry.1.len() <= s.fishing_threshold as usize {
            entry.1.insert(hash);
        }
        let distinct = entry.1.len();
        if entry.2 || distinct <= s.fishing_threshold as usize {
            return None;
        }
        entry.2 = true;
        Some(warning(caller, distinct, s, now, entry.0))
    }
}

/// The subtype of a warning: many distinct people looked up by one user.
pub const FISHING_SUBTYPE: &str = "distinct-people";

fn warning(caller: &Caller, distinct: usize, s: WatchSettings, now: i64, since: i64) -> AuditRow {
    AuditRow {
        id: audit_store::new_id(now),
        recorded: now,
        resource_type: "AuditEvent".into(),
        subtype: FISHING_SUBTYPE.into(),
        outcome: "4".into(),
        outcome_desc: Some(format!(
            "{} looked up more than {} distinct people within {} s ({} so far): review this user's accesses",
            caller.user_id, s.fishing_threshold, s.fishing_window_secs, distinct
        )),
        user_id: caller.user_id.clone(),
        user_name: caller.name.clone(),
        user_role: crate::domain::WATCH_ROLE.into(),
        user_org: caller.org.as_str().to_owned(),
        client: caller.client(),
        patient: None,
        councils: CouncilList::default(),
        disclosed: JsonList::default(),
        request_id: String::new(),
        trace_id: None,
        unscheduled: false,
        listed: false,
        query: serde_json::json!({
            "distinct": distinct, "threshold": s.fishing_threshold,
            "windowSecs": s.fishing_window_secs, "since": since,
            "role": caller.role.as_str(),
        })
        .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OdsCode;

    fn clinician(user: &str, org: &str) -> Caller {
        Caller {
            user_id: user.into(),
            name: None,
            role: Role::Clinician,
            org: OdsCode::parse(org).unwrap(),
            issuer: "i".into(),
            system: None,
            scopes: None,
        }
    }

    fn watch(user: u32, org: u32, fishing: u32) -> Watch {
        Watch::new(WatchSettings {
            per_user_per_minute: user,
            per_org_per_minute: org,
            fishing_threshold: fishing,
            fishing_window_secs: 3600,
        })
    }

    #[test]
    fn a_user_past_the_limit_is_throttled_until_the_minute_ends() {
        let w = watch(3, 0, 0);
        let a = clinician("a", "RDE01");
        for _ in 0..3 {
            assert!(w.admit(&a, 0).is_ok());
        }
        let e = w.admit(&a, 10_000_000).unwrap_err();
        assert!(matches!(e, ApiError::Throttled(_, 50)), "{e:?}");
        assert!(
            w.admit(&clinician("b", "RDE01"), 10_000_000).is_ok(),
            "another user"
        );
        assert!(w.admit(&a, 60_000_000).is_ok(), "a new minute");
    }

    #[test]
    fn an_organisation_past_its_limit_is_throttled_whoever_asks() {
        let w = watch(0, 2, 0);
        assert!(w.admit(&clinician("a", "RDE01"), 0).is_ok());
        assert!(w.admit(&clinician("b", "RDE01"), 0).is_ok());
        assert!(w.admit(&clinician("c", "RDE01"), 0).is_err());
        assert!(w.admit(&clinician("c", "RAA01"), 0).is_ok());
    }

    #[test]
    fn one_warning_per_window_when_a_user_looks_up_more_distinct_people_than_the_threshold() {
        let w = watch(0, 0, 3);
        let a = clinician("a", "RDE01");
        let mut warnings = 0;
        for (i, nhs) in ["1", "2", "2", "3", "4", "5"].iter().enumerate() {
            if let Some(row) = w.looked_up(&a, nhs, i as i64) {
                warnings += 1;
                assert!(row.outcome_desc.unwrap().contains("more than 3"));
                assert_eq!(row.patient, None, "never names the people");
                assert_eq!(i, 4, "the fourth distinct person");
            }
        }
        assert_eq!(warnings, 1);
        assert!(
            w.looked_up(&a, "9", 3_600_000_001).is_none(),
            "a new window starts"
        );
    }
}
