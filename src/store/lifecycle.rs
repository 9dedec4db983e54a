//! The queries of the record lifecycle (DOMAIN.md "Retention"): plans that have ended, people
//! who have turned 18, records past their retention window, and the audit trail's own
//! retention. The rules that use them are in `crate::records::lifecycle`.

use diesel::prelude::*;

use super::flags::FlagRow;
use super::schema::{audit_events, flag_versions, flags, patients};
use super::DbConn;

/// The PostgreSQL advisory lock that lets one lifecycle run at a time across replicas
/// (an arbitrary constant; "cpis" "life" in ASCII).
pub const RUN_LOCK: i64 = 0x6370_6973_6c69_6665;

/// Takes the lock that makes lifecycle runs one at a time across every process sharing the
/// database, for the rest of the caller's transaction. With `wait`, waits for a run in
/// progress elsewhere to commit; without, answers false at once if there is one. On SQLite the
/// writer's `BEGIN IMMEDIATE` already holds the database's only write lock: always true.
pub fn take_run_lock(conn: &mut DbConn, wait: bool) -> QueryResult<bool> {
    match conn {
        DbConn::Sqlite(_) => Ok(true),
        DbConn::Pg(c) if wait => diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(
            &format!("pg_advisory_xact_lock({RUN_LOCK}) IS NOT NULL"),
        ))
        .get_result(c)
        .map(|_: bool| true),
        DbConn::Pg(c) => diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
            "pg_try_advisory_xact_lock({RUN_LOCK})"
        )))
        .get_result(c),
    }
}

/// SQLite's default limit on bound parameters is far above this; PostgreSQL's too.
const CHUNK: usize = 500;

/// Active Flags whose plan ended before `today` (`YYYY-MM-DD`).
pub fn active_but_ended(conn: &mut DbConn, today: &str) -> QueryResult<Vec<FlagRow>> {
    flags::table
        .filter(flags::status.eq("active"))
        .filter(flags::period_end.lt(today))
        .select(FlagRow::as_select())
        .load(conn)
}

/// Flags of the given plan types, not entered in error, for people born on or before
/// `born_by`, with the person's date of birth.
pub fn plans_of_people_born_by(
    conn: &mut DbConn,
    plan_types: &[&str],
    born_by: &str,
) -> QueryResult<Vec<(FlagRow, String)>> {
    flags::table
        .inner_join(patients::table.on(patients::nhs_number.eq(flags::nhs_number)))
        .filter(patients::birth_date.le(born_by))
        .filter(flags::plan_type.eq_any(plan_types))
        .filter(flags::status.ne("entered-in-error"))
        .select((FlagRow::as_select(), patients::birth_date))
        .load(conn)
}

/// Flags past retention: plans that ended before `since`, and Flags entered in error whose
/// last change is older than `withdrawn_before` (microseconds).
pub fn past_retention(
    conn: &mut DbConn,
    since: &str,
    withdrawn_before: i64,
) -> QueryResult<Vec<(String, String)>> {
    flags::table
        .filter(
            flags::period_end.lt(since).or(flags::status
                .eq("entered-in-error")
                .and(flags::updated_at.lt(withdrawn_before))),
        )
        .select((flags::id, flags::nhs_number))
        .load(conn)
}

/// Deletes Flags and every version of them.
pub fn delete_flags(conn: &mut DbConn, ids: &[String]) -> QueryResult<usize> {
    let mut n = 0;
    for chunk in ids.chunks(CHUNK) {
        diesel::delete(flag_versions::table.filter(flag_versions::flag_id.eq_any(chunk)))
            .execute(conn)?;
        n += diesel::delete(flags::table.filter(flags::id.eq_any(chunk))).execute(conn)?;
    }
    Ok(n)
}

/// Deletes the people among `nhs_numbers` who have no Flag left, and anyone with no Flag at all
/// whose details were last changed before `stale_before` (microseconds).
pub fn delete_people_without_flags(
    conn: &mut DbConn,
    nhs_numbers: &[String],
    stale_before: i64,
) -> QueryResult<usize> {
    let has_flag =
        diesel::dsl::exists(flags::table.filter(flags::nhs_number.eq(patients::nhs_number)));
    let mut n = 0;
    for chunk in nhs_numbers.chunks(CHUNK) {
        n += diesel::delete(
            patients::table
                .filter(patients::nhs_number.eq_any(chunk))
                .filter(diesel::dsl::not(has_flag)),
        )
        .execute(conn)?;
    }
    n += diesel::delete(
        patients::table
            .filter(patients::updated_at.lt(stale_before))
            .filter(diesel::dsl::not(has_flag)),
    )
    .execute(conn)?;
    Ok(n)
}

/// Deletes audit rows recorded before `before` (microseconds). Audit ids are UUIDv7, ordered by
/// the time they were made, so the primary key bounds the scan to the old rows; `recorded` is
/// checked too, so the result never depends on the two clocks agreeing.
/// Their entries in the indexes kept behind the trail (`entity`, `patient`, `agent`,
/// `agent-org`) go with them.
pub fn delete_audit_before(conn: &mut DbConn, before: i64) -> QueryResult<usize> {
    let bound = uuid_v7_floor(before / 1000);
    let mut after = String::new();
    loop {
        let going: Vec<crate::store::audit::TrailKeys> = audit_events::table
            .filter(audit_events::id.lt(&bound))
            .filter(audit_events::id.gt(&after))
            .filter(audit_events::recorded.lt(before))
            .order(audit_events::id)
            .limit(5_000)
            .select(crate::store::audit::TRAIL_KEYS)
            .load(conn)?;
        let Some(last) = going.last() else {
            break;
        };
        after = last.id.clone();
        crate::store::audit::delete_index_entries_of(conn, &going)?;
    }
    diesel::delete(
        audit_events::table
            .filter(audit_events::id.lt(bound))
            .filter(audit_events::recorded.lt(before)),
    )
    .execute(conn)
}

/// The smallest UUIDv7 (in its text form) made at `millis` since the epoch: every id made
/// earlier sorts before it.
fn uuid_v7_floor(millis: i64) -> String {
    let hex = format!("{:012x}", millis.max(0));
    format!("{}-{}-0000-0000-000000000000", &hex[..8], &hex[8..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uuid_floor_sorts_between_ids_of_earlier_and_later_milliseconds() {
        let t = 1_790_000_000_000_i64;
        let at = |ms: i64| {
            let ts = uuid::Timestamp::from_unix(
                uuid::NoContext,
                u64::try_from(ms / 1000).unwrap_or(0),
                u32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
            );
            uuid::Uuid::new_v7(ts).to_string()
        };
        let floor = uuid_v7_floor(t);
        assert!(at(t - 1) < floor);
        assert!(at(t) > floor);
        assert!(at(t + 1) > floor);
    }
}
