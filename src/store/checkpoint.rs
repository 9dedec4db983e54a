//! The SQLite WAL checkpointer: copies committed pages from the WAL into the database file on
//! its own thread and connection, so the writer thread never does it inside a commit.
//!
//! A PASSIVE checkpoint never blocks the writer, but under continuous writes it can never catch
//! up with the end of the WAL, and SQLite only starts the WAL over once it has. So when the WAL
//! passes [`RESET_FRAMES`], a TRUNCATE checkpoint briefly holds the writer (it waits in its busy
//! handler), copies the few frames the passive ones left, and empties the file.

use std::time::Duration;

use std::sync::Weak;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Integer;
use diesel::SqliteConnection;

/// About 64 MiB of 4 KiB pages.
const RESET_FRAMES: i32 = 16_384;
const EVERY: Duration = Duration::from_millis(100);

#[derive(QueryableByName, Debug)]
struct CheckpointResult {
    #[diesel(sql_type = Integer)]
    busy: i32,
    #[diesel(sql_type = Integer)]
    log: i32,
    #[diesel(sql_type = Integer)]
    checkpointed: i32,
}

fn checkpoint(conn: &mut SqliteConnection, mode: &str) -> QueryResult<CheckpointResult> {
    diesel::sql_query(format!("PRAGMA wal_checkpoint({mode})")).get_result(conn)
}

/// Starts the checkpointer for the database at `path`; it stops once `alive` is gone.
pub fn start(path: &str, alive: Weak<()>) -> Result<(), String> {
    let mut conn = SqliteConnection::establish(path)
        .map_err(|e| format!("cannot open the database for checkpoints: {e}"))?;
    conn.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA synchronous = FULL;")
        .map_err(|e| format!("cannot configure the checkpointer: {e}"))?;
    std::thread::Builder::new()
        .name("cpis-checkpoint".into())
        .spawn(move || {
            while alive.upgrade().is_some() {
                std::thread::sleep(EVERY);
                run_once(&mut conn);
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the WAL checkpointer: {e}"))
}

fn run_once(conn: &mut SqliteConnection) {
    match checkpoint(conn, "PASSIVE") {
        Ok(r) if r.log >= RESET_FRAMES => {
            if let Err(e) = checkpoint(conn, "TRUNCATE") {
                log::warn!("WAL reset failed: {e}");
            }
        }
        Ok(r) => log::trace!(
            "checkpoint: busy={} log={} done={}",
            r.busy,
            r.log,
            r.checkpointed
        ),
        Err(e) => log::warn!("WAL checkpoint failed: {e}"),
    }
}
