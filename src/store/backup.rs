//! `cpis-fhir backup`: a consistent copy of the embedded SQLite database taken while the server
//! serves (issue "backups"; SQLite "VACUUM INTO").
//!
//! `VACUUM INTO` reads the database inside one read transaction, so the copy is the state of
//! one instant — every committed record, audit row and notification, none half-written — and
//! under WAL it never blocks the server's writer. The copy is compacted, has no WAL beside it,
//! and is checked (`PRAGMA integrity_check`) before it is reported. It is the same file format
//! the server opens, so restoring is starting a server on it. PostgreSQL is backed up with its
//! own tools (`pg_dump`, or base backups with WAL archiving for point-in-time recovery).

use std::path::Path;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use super::{Backend, DbConn, Store, StoreError};

/// What a backup holds, counted in the copy itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub patients: i64,
    pub flags: i64,
    pub audit_events: i64,
    pub subscriptions: i64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Check {
    #[diesel(sql_type = Text)]
    integrity_check: String,
}

impl Store {
    /// Writes a consistent copy of the database to `out`, which must not exist yet, checks it
    /// and counts what it holds.
    pub fn backup_to(&self, out: &Path) -> Result<Summary, StoreError> {
        if self.backend == Backend::Postgres {
            return Err(StoreError::Other(
                "this database is PostgreSQL: back it up with pg_dump (or base backups and WAL \
                 archiving for point-in-time recovery); see README \"Backups\""
                    .into(),
            ));
        }
        if out.exists() {
            return Err(StoreError::Other(format!(
                "{} exists already; a backup never overwrites a file",
                out.display()
            )));
        }
        let target = out.to_string_lossy().replace('\'', "''");
        self.read_blocking(|c| {
            diesel::sql_query(format!("VACUUM INTO '{target}'")).execute(c)?;
            Ok::<_, StoreError>(())
        })?;
        let mut copy = DbConn::Sqlite(
            diesel::SqliteConnection::establish(&out.to_string_lossy())
                .map_err(|e| StoreError::Other(format!("cannot open the copy: {e}")))?,
        );
        let checks: Vec<Check> = diesel::sql_query("PRAGMA integrity_check").load(&mut copy)?;
        if checks.len() != 1 || checks[0].integrity_check != "ok" {
            let said: Vec<String> = checks.into_iter().map(|c| c.integrity_check).collect();
            return Err(StoreError::Corrupt(format!(
                "the copy failed its integrity check: {}",
                said.join("; ")
            )));
        }
        let mut count = |table: &str| -> Result<i64, StoreError> {
            let row: Count = diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
                .get_result(&mut copy)?;
            Ok(row.n)
        };
        Ok(Summary {
            patients: count("patients")?,
            flags: count("flags")?,
            audit_events: count("audit_events")?,
            subscriptions: count("subscriptions")?,
        })
    }
}
