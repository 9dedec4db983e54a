//! Councils' subscriptions, their numbered events and the notification outbox (DESIGN.md "The
//! disclosure path": the durable outbox; Subscriptions R5 Backport IG for R4).
//!
//! The look-up writes only the outbox row (a trigger inside the AuditEvent's INSERT). Everything
//! else here belongs to the delivery worker, which is the only writer of the delivery columns:
//! it numbers events per subscription ([`fan_out`]), leases a subscription before it sends
//! ([`claim`]) so that two workers — or two replicas over one PostgreSQL — never deliver the same
//! events at once, and records each attempt ([`record`]).

use crate::domain::SubscriptionStatus;
use crate::store::columns::JsonList;
use std::collections::HashMap;

use diesel::prelude::*;

use super::schema::{notification_outbox, notifications, subscriptions};
use super::DbConn;

/// Statuses in which a subscription receives events (FHIR `subscription-status`).
/// The statuses notified, as the notification trigger lists them (a test ties the two).
pub const LIVE: [&str; 3] = [
    SubscriptionStatus::LIVE[0].as_str(),
    SubscriptionStatus::LIVE[1].as_str(),
    SubscriptionStatus::LIVE[2].as_str(),
];

#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq)]
#[diesel(table_name = subscriptions)]
#[diesel(treat_none_as_default_value = false)]
pub struct SubscriptionRow {
    pub id: String,
    /// ODS code of the council whose records' accesses are notified (the filter).
    pub council: String,
    #[diesel(deserialize_as = String, serialize_as = String)]
    pub status: SubscriptionStatus,
    pub reason: String,
    pub end_at: Option<i64>,
    pub endpoint: String,
    /// JSON array of `Name: value` strings, sent with every notification, never rendered.
    #[diesel(deserialize_as = String, serialize_as = String)]
    pub headers: JsonList,
    /// `id-only` or `empty`.
    pub content: String,
    pub heartbeat_secs: Option<i64>,
    pub timeout_secs: i64,
    pub max_count: i64,
    /// The HMAC-SHA256 key that signs every notification body.
    pub secret: String,
    /// The last event number given out (events-since-subscription-start).
    pub event_count: i64,
    /// The last event number the endpoint acknowledged.
    pub delivered_through: i64,
    pub error: Option<String>,
    /// Failed attempts in a row.
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_sent_at: Option<i64>,
    /// When the next heartbeat is due, if the subscription asked for them.
    pub heartbeat_at: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub created_at: i64,
    pub version: i64,
    pub updated_at: i64,
}

/// What a council may change on its subscription.
#[derive(AsChangeset, Clone, Debug)]
#[diesel(table_name = subscriptions, treat_none_as_null = true)]
pub struct Settings {
    #[diesel(serialize_as = String)]
    pub status: SubscriptionStatus,
    pub reason: String,
    pub end_at: Option<i64>,
    pub endpoint: String,
    #[diesel(serialize_as = String)]
    pub headers: JsonList,
    pub content: String,
    pub heartbeat_secs: Option<i64>,
    pub timeout_secs: i64,
    pub max_count: i64,
    pub secret: String,
    pub error: Option<String>,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub heartbeat_at: Option<i64>,
    pub version: i64,
    pub updated_at: i64,
}

#[derive(Queryable, Selectable, Insertable, Clone, Debug, PartialEq)]
#[diesel(table_name = notifications)]
#[diesel(treat_none_as_default_value = false)]
pub struct EventRow {
    pub subscription_id: String,
    pub event_number: i64,
    pub audit_event_id: String,
    pub recorded: i64,
}

#[derive(Queryable, Selectable, Clone, Debug)]
#[diesel(table_name = notification_outbox)]
struct OutboxRow {
    id: i64,
    audit_event_id: String,
    councils: String,
    recorded: i64,
}

pub fn insert(conn: &mut DbConn, row: &SubscriptionRow) -> QueryResult<()> {
    diesel::insert_into(subscriptions::table)
        .values(row.clone())
        .execute(conn)
        .map(|_| ())
}

pub fn get(conn: &mut DbConn, id: &str) -> QueryResult<Option<SubscriptionRow>> {
    subscriptions::table
        .find(id)
        .select(SubscriptionRow::as_select())
        .get_result(conn)
        .optional()
}

pub fn update_settings(conn: &mut DbConn, id: &str, s: &Settings) -> QueryResult<()> {
    diesel::update(subscriptions::table.find(id))
        .set(s.clone())
        .execute(conn)
        .map(|_| ())
}

/// Removes a subscription and its events.
pub fn delete(conn: &mut DbConn, id: &str) -> QueryResult<()> {
    diesel::delete(notifications::table.filter(notifications::subscription_id.eq(id)))
        .execute(conn)?;
    diesel::delete(subscriptions::table.find(id))
        .execute(conn)
        .map(|_| ())
}

/// Subscriptions by id, of one council or (`None`) of all.
pub fn list(conn: &mut DbConn, council: Option<&str>) -> QueryResult<Vec<SubscriptionRow>> {
    let mut q = subscriptions::table
        .select(SubscriptionRow::as_select())
        .order(subscriptions::id.asc())
        .into_boxed();
    if let Some(c) = council {
        q = q.filter(subscriptions::council.eq(c.to_owned()));
    }
    q.load(conn)
}

/// One page of the subscriptions of one council (or, `None`, of all) in one of `statuses`
/// and with one of `ids` (either empty: any), by id after the keyset cursor `after`; every
/// condition runs in the database.
pub fn search(
    conn: &mut DbConn,
    council: Option<&str>,
    statuses: &[SubscriptionStatus],
    ids: &[String],
    after: Option<&str>,
    count: usize,
) -> QueryResult<super::Page<SubscriptionRow>> {
    let query = || {
        let mut q = subscriptions::table.into_boxed::<super::Db>();
        if let Some(c) = council {
            q = q.filter(subscriptions::council.eq(c));
        }
        if !statuses.is_empty() {
            q = q.filter(subscriptions::status.eq_any(statuses.iter().map(|s| s.as_str())));
        }
        if !ids.is_empty() {
            q = q.filter(subscriptions::id.eq_any(ids));
        }
        q
    };
    let total: i64 = query().count().get_result(conn)?;
    let mut q = query()
        .order(subscriptions::id.asc())
        .limit(super::page_limit(count))
        .select(SubscriptionRow::as_select());
    if let Some(a) = after {
        q = q.filter(subscriptions::id.gt(a));
    }
    let rows = q.load(conn)?;
    Ok(super::Page::keyset(rows, total, count, |r| r.id.as_str()))
}

/// Events `from..=to` of a subscription, in order, at most `limit`.
pub fn events(
    conn: &mut DbConn,
    id: &str,
    from: i64,
    to: i64,
    limit: i64,
) -> QueryResult<Vec<EventRow>> {
    notifications::table
        .filter(notifications::subscription_id.eq(id))
        .filter(notifications::event_number.ge(from))
        .filter(notifications::event_number.le(to))
        .order(notifications::event_number.asc())
        .limit(limit)
        .select(EventRow::as_select())
        .load(conn)
}

/// The lowest event number still kept for a subscription (older ones left with their AuditEvents).
pub fn first_kept(conn: &mut DbConn, id: &str) -> QueryResult<Option<i64>> {
    notifications::table
        .filter(notifications::subscription_id.eq(id))
        .select(diesel::dsl::min(notifications::event_number))
        .get_result(conn)
}

/// Whether the outbox holds anything (checked on a read connection before taking the writer).
/// The delivery backlog of the subscriptions in one status, for metrics.
#[derive(QueryableByName, Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub status: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub subscriptions: i64,
    /// Events numbered but not yet acknowledged.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub events: i64,
    /// When the oldest of them was recorded (µs).
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    pub oldest: Option<i64>,
}

/// The backlog per subscription status, and the outbox (accesses not yet numbered into
/// events) as status `outbox`. One indexed read per subscription: cheap at scrape intervals.
pub fn backlog(conn: &mut DbConn) -> QueryResult<Vec<Backlog>> {
    // SUM of BIGINT is NUMERIC on PostgreSQL: cast back.
    diesel::sql_query(
        "SELECT s.status AS status, CAST(count(*) AS BIGINT) AS subscriptions, \
                CAST(COALESCE(SUM(s.event_count - s.delivered_through), 0) AS BIGINT) AS events, \
                MIN(n.recorded) AS oldest \
         FROM subscriptions s LEFT JOIN notifications n \
           ON n.subscription_id = s.id AND n.event_number = s.delivered_through + 1 \
         GROUP BY s.status \
         UNION ALL \
         SELECT 'outbox', 0, CAST(count(*) AS BIGINT), MIN(recorded) FROM notification_outbox",
    )
    .load(conn)
}

/// One council's notification backlog (the audit team's page and report).
#[derive(QueryableByName, Debug, Clone, PartialEq, Eq)]
pub struct CouncilBacklog {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub council: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub subscriptions: i64,
    /// Events numbered but not yet acknowledged.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub events: i64,
    /// When the oldest of them was recorded (µs).
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    pub oldest: Option<i64>,
    /// Subscriptions whose deliveries keep failing (status `error`).
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub failing: i64,
}

/// The backlog of each council with a subscription.
pub fn backlog_per_council(conn: &mut DbConn) -> QueryResult<Vec<CouncilBacklog>> {
    diesel::sql_query(
        "SELECT s.council AS council, CAST(count(*) AS BIGINT) AS subscriptions, \
                CAST(COALESCE(SUM(s.event_count - s.delivered_through), 0) AS BIGINT) AS events, \
                MIN(n.recorded) AS oldest, \
                CAST(SUM(CASE WHEN s.status = 'error' THEN 1 ELSE 0 END) AS BIGINT) AS failing \
         FROM subscriptions s LEFT JOIN notifications n \
           ON n.subscription_id = s.id AND n.event_number = s.delivered_through + 1 \
         GROUP BY s.council ORDER BY s.council",
    )
    .load(conn)
}

pub fn outbox_waiting(conn: &mut DbConn) -> QueryResult<bool> {
    let found: Vec<i64> = notification_outbox::table
        .select(notification_outbox::id)
        .limit(1)
        .load(conn)?;
    Ok(!found.is_empty())
}

/// How many outbox rows wait (for the benchmark and tests).
pub fn outbox_len(conn: &mut DbConn) -> QueryResult<i64> {
    notification_outbox::table.count().get_result(conn)
}

/// Serialises fan-outs across replicas sharing one PostgreSQL until the transaction ends; SQLite
/// has one writer, which already does.
fn lock_sequencer(conn: &mut DbConn) -> QueryResult<()> {
    if let DbConn::Pg(c) = conn {
        diesel::sql_query("SELECT pg_advisory_xact_lock(727001)").execute(c)?;
    }
    Ok(())
}

/// Turns up to `limit` outbox rows, oldest first, into numbered events of every live
/// subscription of the councils they name (a subscription sees only accesses made after it was
/// created), and removes them from the outbox. Returns how many outbox rows were taken.
pub fn fan_out(conn: &mut DbConn, limit: i64) -> QueryResult<usize> {
    lock_sequencer(conn)?;
    let rows: Vec<OutboxRow> = notification_outbox::table
        .order(notification_outbox::id.asc())
        .limit(limit)
        .select(OutboxRow::as_select())
        .load(conn)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let subs: Vec<(String, String, i64, i64)> = subscriptions::table
        .filter(subscriptions::status.eq_any(LIVE))
        .select((
            subscriptions::id,
            subscriptions::council,
            subscriptions::event_count,
            subscriptions::created_at,
        ))
        .load(conn)?;
    let mut by_council: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, s) in subs.iter().enumerate() {
        by_council.entry(s.1.as_str()).or_default().push(i);
    }
    let mut counts: Vec<i64> = subs.iter().map(|s| s.2).collect();
    let mut events = Vec::new();
    for row in &rows {
        for council in row.councils.split_whitespace() {
            for &i in by_council.get(council).map(Vec::as_slice).unwrap_or(&[]) {
                if subs[i].3 > row.recorded {
                    continue;
                }
                counts[i] += 1;
                events.push(EventRow {
                    subscription_id: subs[i].0.clone(),
                    event_number: counts[i],
                    audit_event_id: row.audit_event_id.clone(),
                    recorded: row.recorded,
                });
            }
        }
    }
    // Within SQLite's limit on bound variables per statement.
    for chunk in events.chunks(500) {
        super::on_backend!(&mut *conn, c => diesel::insert_into(notifications::table)
            .values(chunk)
            .execute(c))?;
    }
    for (i, s) in subs.iter().enumerate() {
        if counts[i] != s.2 {
            diesel::update(subscriptions::table.find(&s.0))
                .set(subscriptions::event_count.eq(counts[i]))
                .execute(conn)?;
        }
    }
    // By id, not by range: on PostgreSQL a row with a lower id may commit after this read.
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    for chunk in ids.chunks(500) {
        diesel::delete(notification_outbox::table.filter(notification_outbox::id.eq_any(chunk)))
            .execute(conn)?;
    }
    Ok(rows.len())
}

/// Work for the worker: a live subscription with no valid lease, whose back-off has passed, that
/// needs a handshake (asked for, or never yet accepted), has undelivered events or a heartbeat due; or one whose `end` has passed.
/// (A macro: the expression's type is spelled out by the compiler, not by us.)
macro_rules! due {
    ($now:expr) => {{
        let now: i64 = $now;
        let unleased = subscriptions::lease_until
            .is_null()
            .or(subscriptions::lease_until.lt(now))
            .assume_not_null();
        let ended = subscriptions::end_at.le(now).assume_not_null();
        let work = subscriptions::status
            .eq("requested")
            .or(subscriptions::last_sent_at.is_null())
            .or(subscriptions::delivered_through.lt(subscriptions::event_count))
            .or(subscriptions::heartbeat_at.le(now).assume_not_null());
        subscriptions::status
            .eq_any(LIVE)
            .and(unleased)
            .and(ended.or(subscriptions::next_attempt_at.le(now).and(work)))
    }};
}

/// Whether any subscription has work (checked on a read connection before taking the writer).
pub fn any_due(conn: &mut DbConn, now: i64) -> QueryResult<bool> {
    let found: Vec<String> = subscriptions::table
        .filter(due!(now))
        .select(subscriptions::id)
        .limit(1)
        .load(conn)?;
    Ok(!found.is_empty())
}

/// A subscription leased for one delivery, with the events to send.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub row: SubscriptionRow,
    pub events: Vec<EventRow>,
}

/// Switches off subscriptions whose `end` has passed, then leases up to `limit` subscriptions
/// with work to `owner` — each for its own post timeout plus `margin` (µs) — with their next
/// events (at most `max_count`).
pub fn claim(
    conn: &mut DbConn,
    owner: &str,
    now: i64,
    margin: i64,
    limit: i64,
) -> QueryResult<Vec<Claimed>> {
    diesel::update(
        subscriptions::table
            .filter(subscriptions::status.eq_any(LIVE))
            .filter(subscriptions::end_at.le(now)),
    )
    .set((
        subscriptions::status.eq("off"),
        subscriptions::updated_at.eq(now),
    ))
    .execute(conn)?;
    let due: Vec<(String, i64)> = subscriptions::table
        .filter(due!(now))
        .order(subscriptions::next_attempt_at.asc())
        .limit(limit)
        .select((subscriptions::id, subscriptions::timeout_secs))
        .load(conn)?;
    let mut out = Vec::new();
    for (id, timeout_secs) in due {
        let lease_until = now + timeout_secs.clamp(1, 60) * 1_000_000 + margin;
        // The lease is re-checked in the UPDATE itself: a concurrent claimer that got there
        // first leaves nothing for this one to take.
        let taken = diesel::update(
            subscriptions::table.find(&id).filter(
                subscriptions::lease_until
                    .is_null()
                    .or(subscriptions::lease_until.lt(now)),
            ),
        )
        .set((
            subscriptions::lease_owner.eq(owner),
            subscriptions::lease_until.eq(lease_until),
        ))
        .execute(conn)?;
        if taken != 1 {
            continue;
        }
        let Some(row) = get(conn, &id)? else { continue };
        let events = if needs_handshake(&row) {
            Vec::new()
        } else {
            events(
                conn,
                &id,
                row.delivered_through + 1,
                row.event_count,
                row.max_count,
            )?
        };
        out.push(Claimed { row, events });
    }
    Ok(out)
}

/// A subscription is handshaken when it asks for it (`requested`) and until an endpoint has
/// accepted a first notification (one that went to `error` before that still needs it).
pub fn needs_handshake(row: &SubscriptionRow) -> bool {
    row.status == SubscriptionStatus::Requested || row.last_sent_at.is_none()
}

/// How one delivery attempt went.
#[derive(Clone, Debug)]
pub enum Attempt {
    /// The endpoint acknowledged (2xx) everything up to `through` (0 for a handshake or
    /// heartbeat, which carry no events).
    Delivered { through: i64 },
    /// It did not: the next attempt waits until `retry_at`; `error` says why; the subscription
    /// goes to `error` when `give_error` is set.
    Failed {
        error: String,
        retry_at: i64,
        give_error: bool,
    },
}

/// Records an attempt on a subscription leased by `owner` and releases the lease. Status changes
/// apply only to the version that was claimed, so a council's change made meanwhile (a new
/// endpoint, `off`) is never overwritten.
pub fn record(
    conn: &mut DbConn,
    claimed: &SubscriptionRow,
    owner: &str,
    now: i64,
    attempt: &Attempt,
) -> QueryResult<()> {
    let mine = subscriptions::table
        .find(&claimed.id)
        .filter(subscriptions::lease_owner.eq(owner));
    let same_version = subscriptions::table
        .find(&claimed.id)
        .filter(subscriptions::version.eq(claimed.version))
        .filter(subscriptions::status.eq_any(LIVE));
    match attempt {
        Attempt::Delivered { through } => {
            let through = (*through).max(claimed.delivered_through);
            let heartbeat_at = claimed.heartbeat_secs.map(|s| now + s * 1_000_000);
            diesel::update(mine)
                .set((
                    subscriptions::delivered_through.eq(through),
                    subscriptions::attempts.eq(0),
                    subscriptions::next_attempt_at.eq(now),
                    subscriptions::last_sent_at.eq(Some(now)),
                    subscriptions::heartbeat_at.eq(heartbeat_at),
                    subscriptions::lease_owner.eq(None::<String>),
                    subscriptions::lease_until.eq(None::<i64>),
                ))
                .execute(conn)?;
            diesel::update(same_version)
                .set((
                    subscriptions::status.eq("active"),
                    subscriptions::error.eq(None::<String>),
                ))
                .execute(conn)?;
        }
        Attempt::Failed {
            error,
            retry_at,
            give_error,
        } => {
            diesel::update(mine)
                .set((
                    subscriptions::attempts.eq(subscriptions::attempts + 1),
                    subscriptions::next_attempt_at.eq(*retry_at),
                    subscriptions::lease_owner.eq(None::<String>),
                    subscriptions::lease_until.eq(None::<i64>),
                ))
                .execute(conn)?;
            let status = if *give_error {
                "error"
            } else {
                claimed.status.as_str()
            };
            diesel::update(same_version)
                .set((
                    subscriptions::status.eq(status),
                    subscriptions::error.eq(Some(error.clone())),
                ))
                .execute(conn)?;
        }
    }
    Ok(())
}

/// Removes events whose AuditEvent has left under the audit retention (lifecycle).
pub fn remove_events_before(conn: &mut DbConn, recorded: i64) -> QueryResult<usize> {
    diesel::delete(notifications::table.filter(notifications::recorded.lt(recorded))).execute(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The notification trigger (SQL, both backends) lists the statuses it notifies; they must be
    /// the ones the Rust code treats as live.
    #[test]
    fn the_notification_trigger_lists_exactly_the_live_statuses() {
        for (backend, sql) in [
            ("sqlite", include_str!("../../migrations/sqlite/2026-11-29-000005_outbox_trigger_without_statement_journal/up.sql")),
            ("postgres", include_str!("../../migrations/postgres/2026-11-29-000005_outbox_trigger_without_statement_journal/up.sql")),
        ] {
            let lists: Vec<Vec<String>> = sql
                .match_indices("status IN (")
                .map(|(at, m)| {
                    let rest = &sql[at + m.len()..];
                    let list = rest.split(')').next().unwrap_or_default();
                    list.split(',')
                        .map(|s| s.trim().trim_matches('\'').to_owned())
                        .collect()
                })
                .collect();
            assert!(!lists.is_empty(), "{backend}: the trigger names its statuses");
            for list in lists {
                assert_eq!(list, LIVE, "{backend}");
            }
        }
    }
}
