//! Refused authentications as AuditEvents (DICOM 110114 "User Authentication", outcome 4), so
//! an audit team can see someone trying tokens against the service (issue "Hostile input").
//!
//! A flood must not fill the disk: the first refusal of a kind (same reason, same client
//! address, same claimed user and organisation) is written at once; identical ones within the
//! fold window are counted in memory, and when the window closes one more AuditEvent records
//! how many there were and between which instants. At most [`MAX_KINDS`] kinds are tracked at
//! once; past that, refusals fold by reason alone. The token itself is never recorded; what it
//! claimed (`sub`, `org`) is, marked unverified.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::json;

use crate::store::audit::{self as audit_store, AuditRow};
use crate::store::columns::{CouncilList, JsonList};

pub use crate::domain::AUTH_ROLE;

/// Kinds of refusal tracked at once.
pub const MAX_KINDS: usize = 10_000;

pub use crate::auth::reason::{clean_claim, Reason};

/// One refused authentication, as the request showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    /// What the token said, unverified (cleaned and shortened).
    pub claimed_sub: Option<String>,
    pub claimed_org: Option<String>,
    /// The client's address as the socket saw it.
    pub client: String,
    pub request_id: String,
    pub trace_id: Option<String>,
    /// Method and path (the query string is left out: it may be long and is not needed).
    pub request: String,
    /// Why, in words (the response's diagnostics).
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    reason: Reason,
    client: String,
    sub: Option<String>,
    org: Option<String>,
}

#[derive(Debug)]
struct Fold {
    opened: i64,
    /// The refusals counted since the first, not yet written.
    more: u64,
    first_more: i64,
    last_more: i64,
    last: Refusal,
}

/// Kinds of refusal tracked at once for one client address; past it, that client's refusals
/// fold by reason alone (an attacker varying the claimed user cannot make a row per request).
pub const MAX_KINDS_PER_CLIENT: usize = 20;

#[derive(Debug, Default)]
struct Open {
    kinds: HashMap<Kind, Fold>,
    per_client: HashMap<String, usize>,
    /// When closed windows were last looked for (µs): at most once a second.
    swept: i64,
}

impl Open {
    /// The rows of windows closed by `now`, removed.
    fn close(&mut self, now: i64, window: i64) -> Vec<AuditRow> {
        self.swept = now;
        let mut rows = Vec::new();
        let per_client = &mut self.per_client;
        self.kinds.retain(|k, f| {
            if now.saturating_sub(f.opened) < window {
                return true;
            }
            if f.more > 0 {
                rows.push(row(&f.last, f.more, f.first_more, f.last_more, f.last_more));
            }
            if let Some(n) = per_client.get_mut(&k.client) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_client.remove(&k.client);
                }
            }
            false
        });
        rows
    }
}

/// The fold of refused authentications.
#[derive(Debug)]
pub struct Refusals {
    window_micros: i64,
    open: Mutex<Open>,
}

impl Refusals {
    pub fn new(window_secs: u64) -> Self {
        Self {
            window_micros: i64::try_from(window_secs)
                .unwrap_or(i64::MAX / 1_000_000)
                .saturating_mul(1_000_000),
            open: Mutex::new(Open::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a refusal at `now` (µs) and returns the audit rows to write before answering:
    /// this refusal's own row when it opens a window, and the rows of windows that have closed.
    pub fn record(&self, mut r: Refusal, now: i64) -> Vec<AuditRow> {
        let window = self.window_micros;
        if window <= 0 {
            return vec![row(&r, 1, now, now, now)];
        }
        let mut open = self.lock();
        let mut rows = if now.saturating_sub(open.swept) >= 1_000_000 {
            open.close(now, window)
        } else {
            Vec::new()
        };
        let mut kind = Kind {
            reason: r.reason,
            client: r.client.clone(),
            sub: r.claimed_sub.clone(),
            org: r.claimed_org.clone(),
        };
        if !open.kinds.contains_key(&kind) {
            let of_client = open.per_client.get(&r.client).copied().unwrap_or(0);
            if open.kinds.len() >= MAX_KINDS {
                r.client = "(many clients)".into();
            }
            if open.kinds.len() >= MAX_KINDS || of_client >= MAX_KINDS_PER_CLIENT {
                r.claimed_sub = Some("(various)".into());
                r.claimed_org = None;
                kind = Kind {
                    reason: r.reason,
                    client: r.client.clone(),
                    sub: r.claimed_sub.clone(),
                    org: None,
                };
            }
        }
        match open.kinds.get_mut(&kind) {
            Some(f) => {
                if f.more == 0 {
                    f.first_more = now;
                }
                f.more += 1;
                f.last_more = now;
                f.last = r;
            }
            None => {
                rows.push(row(&r, 1, now, now, now));
                *open.per_client.entry(kind.client.clone()).or_default() += 1;
                open.kinds.insert(
                    kind,
                    Fold {
                        opened: now,
                        more: 0,
                        first_more: now,
                        last_more: now,
                        last: r,
                    },
                );
            }
        }
        rows
    }

    /// The rows of windows closed by `now` (run on a schedule, so a burst followed by silence
    /// is still written).
    pub fn closed(&self, now: i64) -> Vec<AuditRow> {
        let window = self.window_micros;
        self.lock().close(now, window)
    }

    /// Every count not yet written (at shutdown).
    pub fn all(&self, now: i64) -> Vec<AuditRow> {
        self.lock()
            .close(i64::MAX, 0)
            .into_iter()
            .map(|mut r| {
                r.recorded = r.recorded.min(now);
                r
            })
            .collect()
    }
}

/// The audit row of `count` refusals like `r` between `from` and `to`.
fn row(r: &Refusal, count: u64, from: i64, to: i64, recorded: i64) -> AuditRow {
    AuditRow {
        id: audit_store::new_id(recorded),
        recorded,
        resource_type: "Authentication".into(),
        subtype: r.reason.code().into(),
        outcome: "4".into(),
        outcome_desc: Some(format!("401 {}", r.detail)),
        user_id: r.claimed_sub.clone().unwrap_or_default(),
        user_name: None,
        user_role: AUTH_ROLE.into(),
        user_org: r.claimed_org.clone().unwrap_or_default(),
        client: r.client.clone(),
        patient: None,
        councils: CouncilList::default(),
        disclosed: JsonList::default(),
        request_id: r.request_id.clone(),
        trace_id: r.trace_id.clone(),
        unscheduled: false,
        listed: false,
        query: json!({ "request": r.request, "count": count, "from": from, "to": to }).to_string(),
    }
}

/// Writes refusal rows (in one transaction, on the writer).
pub async fn write(store: &crate::store::Store, rows: Vec<AuditRow>) {
    if rows.is_empty() {
        return;
    }
    let n = rows.len();
    let written = store
        .write(move |conn| {
            for r in &rows {
                audit_store::insert(conn, r)?;
            }
            Ok::<_, crate::store::StoreError>(())
        })
        .await;
    if let Err(e) = written {
        log::error!("{n} refused-authentication audit row(s) could not be written: {e}");
    }
}

/// The flusher's thread: every `every`, writes the folds whose window has closed; when `stop`
/// is set, writes every count still open, then returns.
pub fn run_flusher(
    stop: crate::tasks::Stop,
    refusals: std::sync::Arc<Refusals>,
    store: crate::store::Store,
    clock: crate::domain::Clock,
    every: std::time::Duration,
) {
    loop {
        let stopping = stop.sleep(every);
        let now = crate::store::micros(clock());
        // At shutdown every count still open is written.
        let rows = if stopping {
            refusals.all(now)
        } else {
            refusals.closed(now)
        };
        if !rows.is_empty() {
            let n = rows.len();
            let written = store.write_blocking(move |conn| {
                for r in &rows {
                    audit_store::insert(conn, r)?;
                }
                Ok::<_, crate::store::StoreError>(())
            });
            if let Err(e) = written {
                log::error!("{n} refused-authentication audit row(s) could not be written: {e}");
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(client: &str) -> Refusal {
        Refusal {
            reason: Reason::Expired,
            claimed_sub: Some("u1".into()),
            claimed_org: None,
            client: client.into(),
            request_id: "r".into(),
            trace_id: None,
            request: "GET /Flag".into(),
            detail: "expired".into(),
        }
    }

    fn count(r: &AuditRow) -> u64 {
        serde_json::from_str::<serde_json::Value>(&r.query)
            .ok()
            .and_then(|v| v["count"].as_u64())
            .unwrap_or(0)
    }

    #[test]
    fn identical_refusals_fold_into_one_row_with_a_count() {
        let f = Refusals::new(60);
        assert_eq!(f.record(refusal("a"), 0).len(), 1);
        for t in 1..=4 {
            assert!(f.record(refusal("a"), t * 1_000_000).is_empty());
        }
        assert_eq!(f.record(refusal("b"), 5_000_000).len(), 1);
        assert!(f.closed(59_000_000).is_empty());
        let rows = f.closed(60_000_000);
        assert_eq!(rows.iter().map(count).collect::<Vec<_>>(), [4]);
        // A new window starts with a row of its own.
        assert_eq!(f.record(refusal("a"), 61_000_000).len(), 1);
    }

    #[test]
    fn without_a_window_every_refusal_is_written() {
        let f = Refusals::new(0);
        assert_eq!(f.record(refusal("a"), 0).len(), 1);
        assert_eq!(f.record(refusal("a"), 1).len(), 1);
        assert!(f.all(2).is_empty());
    }

    #[test]
    fn a_client_varying_the_claimed_user_folds_by_reason() {
        let f = Refusals::new(60);
        let mut written = 0;
        for i in 0..1_000 {
            let mut r = refusal("a");
            r.claimed_sub = Some(format!("u{i}"));
            written += f.record(r, i).len();
        }
        assert_eq!(written, MAX_KINDS_PER_CLIENT + 1);
        let rows = f.all(2_000);
        assert_eq!(rows.iter().map(count).sum::<u64>(), 1_000 - written as u64);
    }

    #[test]
    fn claims_are_cleaned() {
        assert_eq!(clean_claim("a\u{1b}[2Jb").as_deref(), Some("a[2Jb"));
        assert_eq!(clean_claim("\u{0}"), None);
        assert_eq!(clean_claim(&"x".repeat(100)).map(|s| s.len()), Some(64));
    }
}
