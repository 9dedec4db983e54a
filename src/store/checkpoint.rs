//! The SQLite WAL checkpointer: copies committed pages from the WAL into the database file on
//! its own thread and connection, so the writer thread never does that copying inside a commit.
//!
//! A PASSIVE checkpoint never blocks the writer, but under continuous writes it never catches up
//! with the end of the WAL, and SQLite only starts the WAL over from its beginning once one has.
//! A WAL that only grows is slow: every commit then extends the file, and its fsync has to
//! allocate blocks and write the file's metadata too (about twice the cost of overwriting blocks
//! already allocated, measured on this project's benchmark machine). So once the WAL passes
//! [`RESTART_FRAMES`] and a passive checkpoint has just finished, the checkpointer asks the
//! writer to start it over: between two batches the writer runs one more passive checkpoint
//! itself, which copies only the few frames written since (no other writer can add any
//! meanwhile), and its next transaction writes the WAL from the beginning again, over the
//! blocks the file already has. The writer never waits in SQLite's busy handler for it (a
//! TRUNCATE checkpoint on this thread did that, and held look-ups for hundreds of
//! milliseconds). `journal_size_limit` keeps the file from staying larger than needed after
//! an unusual burst.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Integer;
use diesel::SqliteConnection;

use super::DbConn;

/// About 64 MiB of 4 KiB pages: the WAL the writer keeps reusing.
pub const RESTART_FRAMES: i32 = 16_384;
/// The WAL file's size once it starts over (the same 64 MiB).
pub const SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;
const EVERY: Duration = Duration::from_millis(100);

/// The checkpointer's request to the writer to start the WAL over.
#[derive(Debug, Default)]
pub struct Restart(AtomicBool);

impl Restart {
    fn request(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

#[derive(QueryableByName, Debug)]
pub struct CheckpointResult {
    #[diesel(sql_type = Integer)]
    pub busy: i32,
    /// Frames in the WAL.
    #[diesel(sql_type = Integer)]
    pub log: i32,
    /// Frames already copied into the database.
    #[diesel(sql_type = Integer)]
    pub checkpointed: i32,
}

fn checkpoint(conn: &mut SqliteConnection, mode: &str) -> QueryResult<CheckpointResult> {
    diesel::sql_query(format!("PRAGMA wal_checkpoint({mode})")).get_result(conn)
}

/// Starts the checkpointer for the database at `path`; it stops once `alive` is gone.
pub fn start(
    path: &str,
    tasks: &mut crate::tasks::Tasks,
    restart: Arc<Restart>,
) -> Result<(), String> {
    let mut conn = SqliteConnection::establish(path)
        .map_err(|e| format!("cannot open the database for checkpoints: {e}"))?;
    conn.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA synchronous = FULL;")
        .map_err(|e| format!("cannot configure the checkpointer: {e}"))?;
    tasks
        .spawn("checkpoint", move |stop| {
            while !stop.sleep(EVERY) {
                run_once(&mut conn, &restart, RESTART_FRAMES);
            }
        })
        .map_err(|e| e.to_string())
}

/// One passive checkpoint; asks the writer to start the WAL over once it holds `restart_at`
/// frames and this checkpoint was not held up by a reader.
fn run_once(conn: &mut SqliteConnection, restart: &Restart, restart_at: i32) {
    match checkpoint(conn, "PASSIVE") {
        Ok(r) => {
            log::trace!(
                "checkpoint: busy={} log={} done={}",
                r.busy,
                r.log,
                r.checkpointed
            );
            if r.busy == 0 && r.log >= restart_at {
                restart.request();
            }
        }
        Err(e) => log::warn!("WAL checkpoint failed: {e}"),
    }
}

/// On the writer, between batches: when the checkpointer asked, copies the frames it left so
/// the next transaction starts the WAL over. Returns the checkpoint's result when one ran.
pub fn restart_if_asked(conn: &mut DbConn, restart: &Restart) -> Option<CheckpointResult> {
    let DbConn::Sqlite(c) = conn else {
        return None;
    };
    if !restart.take() {
        return None;
    }
    match checkpoint(c, "PASSIVE") {
        Ok(r) => {
            log::debug!(
                "WAL start-over: busy={} log={} done={}",
                r.busy,
                r.log,
                r.checkpointed
            );
            Some(r)
        }
        Err(e) => {
            log::warn!("WAL start-over checkpoint failed: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &str) -> SqliteConnection {
        let mut c = SqliteConnection::establish(path).unwrap();
        c.batch_execute(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0;",
        )
        .unwrap();
        c
    }

    /// A database with one table: its directory (kept alive), path, the writer's connection
    /// and the checkpointer's.
    fn database() -> (tempfile::TempDir, String, DbConn, SqliteConnection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db").to_string_lossy().into_owned();
        let mut writer = DbConn::Sqlite(open(&path));
        writer.batch_execute("CREATE TABLE t (x BLOB)").unwrap();
        let side = open(&path);
        (dir, path, writer, side)
    }

    fn insert(c: &mut DbConn, n: usize) {
        for _ in 0..n {
            c.batch_execute("INSERT INTO t VALUES (randomblob(3000))")
                .unwrap();
        }
    }

    #[test]
    fn the_wal_starts_over_from_its_beginning_once_the_writer_has_caught_up() {
        let (_dir, path, mut writer, mut side) = database();
        let restart = Restart::default();
        insert(&mut writer, 50);

        // A reader still on an older snapshot keeps the checkpointer from copying the newest
        // frames, as the writer's next batches do in service.
        let mut reader = open(&path);
        reader
            .batch_execute("BEGIN; SELECT count(*) FROM t;")
            .unwrap();
        insert(&mut writer, 5);
        let wal = std::path::Path::new(&path).with_extension("db-wal");
        let size = std::fs::metadata(&wal).unwrap().len();
        run_once(&mut side, &restart, 40);
        reader.batch_execute("COMMIT").unwrap();

        let r = restart_if_asked(&mut writer, &restart).unwrap();
        assert_eq!((r.busy, r.log), (0, r.checkpointed), "{r:?}");
        assert!(r.log > 50, "{r:?}");

        insert(&mut writer, 1);
        let after = checkpoint(&mut side, "PASSIVE").unwrap();
        assert!(after.log <= 3, "the WAL holds {} frames", after.log);
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), size);
        assert!(restart_if_asked(&mut writer, &restart).is_none());
    }

    #[test]
    fn a_small_wal_is_not_started_over() {
        let (_dir, _, mut writer, mut side) = database();
        let restart = Restart::default();
        insert(&mut writer, 5);
        run_once(&mut side, &restart, 40);
        assert!(restart_if_asked(&mut writer, &restart).is_none());
    }
}
