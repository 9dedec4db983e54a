//! Storage: Diesel over SQLite (the embedded default) or PostgreSQL (scale-out), one code path
//! (DESIGN.md "Storage"). SQL dialect differences stay inside this module.
//!
//! SQLite has a single writer, so every write (and every audited read) goes through the writer
//! thread in [`writer`], which owns the one write connection and commits in batches: writers
//! queue in our process instead of sleeping in SQLite's busy handler, and readers (WAL) never
//! block them. `synchronous=FULL` keeps every acknowledged write, the audit trail included,
//! across power loss; group commit is what makes that affordable.
//!
//! Every `Insertable` row binds `None` as NULL (`treat_none_as_default_value = false`; no column
//! has a default, so the rows stored are the same): written as `DEFAULT`, Diesel cannot keep an
//! INSERT as a prepared statement on PostgreSQL, which then parsed and planned every one — a
//! third of the database's work in a council's bulk load. [`replanned`] is the one deliberate
//! exception, the other way round.

pub mod audit;
pub mod backup;
pub mod checkpoint;
pub mod columns;
pub mod councils;
pub mod error;
pub mod exports;
pub mod flags;
pub mod lifecycle;
pub mod patients;
pub mod replanned;
pub mod schema;
pub mod subscriptions;
pub mod writer;

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub use error::StoreError;
pub use writer::JobError;

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// A connection to either backend. PostgreSQL is listed first: SQLite accepts any string as a
/// path, so it must be the fallback (STACK.md).
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Pg(diesel::PgConnection),
    Sqlite(diesel::SqliteConnection),
}

pub type DbPool = Pool<ConnectionManager<DbConn>>;

/// Why the database could not be opened for service.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the database: {0}")]
    Connect(String),
    #[error("database migrations failed: {0}")]
    Migrate(String),
    #[error(
        "the database schema is older than this version: run `cpis-fhir migrate` first (the \
         server was started with --no-migrate)"
    )]
    SchemaBehind,
    #[error("{0}")]
    Checkpointer(String),
}

/// The command-line tools report any error as text.
impl From<OpenError> for String {
    fn from(e: OpenError) -> Self {
        e.to_string()
    }
}

/// How many times [`Store::write_retrying`] runs again work that lost a conflict.
pub const CONFLICT_RETRIES: u32 = 3;

/// The backend of [`DbConn`], for boxed (dynamically built) queries.
pub type Db = <DbConn as diesel::Connection>::Backend;

/// One page of a search in a stable order: its rows, how many matched in all, and the keyset
/// cursor of the next page (FHIR R4 §3.1.1.2: paging is the server's to define).
#[derive(Debug)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub total: usize,
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// Pages rows already in memory (in order of `key`) after `after`.
    pub fn of(rows: Vec<T>, key: impl Fn(&T) -> &str, after: Option<&str>, count: usize) -> Self {
        let total = rows.len();
        let rest: Vec<T> = match after {
            Some(a) => rows.into_iter().filter(|r| key(r) > a).collect(),
            None => rows,
        };
        Self::keyset(rest, total as i64, count, key)
    }

    /// A page from rows fetched with [`page_limit`]`(count)`: one row more than the page says
    /// there is a next page, whose cursor is the last shown row's key.
    pub fn keyset(mut rows: Vec<T>, total: i64, count: usize, key: impl Fn(&T) -> &str) -> Self {
        let next = if rows.len() > count {
            rows.truncate(count);
            rows.last().map(|r| key(r).to_owned())
        } else {
            None
        };
        Page {
            rows,
            total: usize::try_from(total).unwrap_or_default(),
            next,
        }
    }
}

/// The `LIMIT` of a page of `count`: one more, to learn whether a next page exists.
pub fn page_limit(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX - 1) + 1
}

/// Runs the same Diesel expression on whichever backend `conn` is, on the inner connection.
///
/// Single-row look-ups by key use `get_result`, never `first`: `first` binds `LIMIT ?`, and
/// SQLite marks a statement whose LIMIT is a bound parameter for re-preparation on every
/// rebinding, so a cached statement would be compiled again on every execution.
/// Used on the look-up path: the multi-backend wrapper walks every query twice to collect its
/// binds, which costs more than SQLite's own work for these small statements.
macro_rules! on_backend {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::store::DbConn::Sqlite($c) => $body,
            $crate::store::DbConn::Pg($c) => $body,
        }
    };
}
pub(crate) use on_backend;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Self {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

/// Applied to every pooled SQLite connection; pragmas are per connection (STACK.md).
#[derive(Debug)]
struct SqlitePragmas {
    /// The writer's connection never checkpoints on its own: copying WAL pages into the
    /// database inside a commit stalls every queued look-up for milliseconds (the p99). The
    /// checkpointer thread does it beside the writer instead (see [`checkpoint`]).
    writer: bool,
}

impl CustomizeConnection<DbConn, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut DbConn) -> Result<(), diesel::r2d2::Error> {
        if let DbConn::Sqlite(c) = conn {
            // The page cache stays at SQLite's default: a larger one made every commit slower
            // (SQLite walks the whole cache when a transaction ends). Statement journals
            // (savepoints) stay in memory rather than in temporary files.
            c.batch_execute(&format!(
                "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
                 PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
                 PRAGMA temp_store = MEMORY; PRAGMA journal_size_limit = {}; \
                 PRAGMA wal_autocheckpoint = {};",
                checkpoint::SIZE_LIMIT_BYTES,
                if self.writer { 0 } else { 1000 }
            ))
            .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

/// The database: a read pool, and the writer threads over their own connections.
#[derive(Clone)]
pub struct Store {
    read: DbPool,
    writer: writer::Writer,
    pub backend: Backend,
    /// The checkpointer, when this store owns it (tools); a server's `Application` owns it
    /// otherwise. It stops once every clone of the store is gone.
    _tasks: Option<std::sync::Arc<crate::tasks::Tasks>>,
}

/// Turns a configured database location into what the driver expects.
fn driver_url(url: &str) -> String {
    match url.strip_prefix("sqlite://") {
        Some(path) => path.to_owned(),
        None => url.to_owned(),
    }
}

impl Store {
    /// Opens the database and runs pending migrations; the store owns its background work (the
    /// SQLite checkpointer), which stops when the last clone is dropped.
    pub fn open(url: &str, read_pool_size: u32) -> Result<Self, OpenError> {
        let mut tasks = crate::tasks::Tasks::new();
        let mut store = Self::open_in(
            url,
            read_pool_size,
            crate::config::DEFAULT_POSTGRES_WRITERS,
            Migrations::Run,
            &mut tasks,
        )?;
        store._tasks = Some(std::sync::Arc::new(tasks));
        Ok(store)
    }

    /// [`Store::open`], its background work started on `tasks`, which stops and joins it;
    /// `writers` is how many writer connections PostgreSQL gets (SQLite has one writer);
    /// `migrations` says whether pending migrations are run or only refused.
    pub fn open_in(
        url: &str,
        read_pool_size: u32,
        writers: u32,
        migrations: Migrations,
        tasks: &mut crate::tasks::Tasks,
    ) -> Result<Self, OpenError> {
        let backend = Backend::of_url(url);
        let target = driver_url(url);
        let build = |size: u32, writer: bool| -> Result<DbPool, OpenError> {
            Pool::builder()
                .max_size(size)
                .min_idle(Some(1))
                .connection_timeout(Duration::from_secs(15))
                .connection_customizer(Box::new(SqlitePragmas { writer }))
                .build(ConnectionManager::<DbConn>::new(target.clone()))
                .map_err(|e| OpenError::Connect(e.to_string()))
        };
        let writers: u32 = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => writers.max(1),
        };
        let write = build(writers, true)?;
        {
            let mut conn = write.get().map_err(|e| OpenError::Connect(e.to_string()))?;
            match migrations {
                Migrations::Run => {
                    run_migrations(&mut conn)?;
                    patients::fill_name_keys(&mut conn).map_err(|e| {
                        OpenError::Migrate(format!("filling the name search keys: {e}"))
                    })?;
                }
                Migrations::Check => {
                    if migrations_pending(&mut conn)? {
                        return Err(OpenError::SchemaBehind);
                    }
                }
            }
        }
        let read = build(read_pool_size.max(1), false)?;
        let restart = std::sync::Arc::new(checkpoint::Restart::default());
        if backend == Backend::Sqlite {
            checkpoint::start(&target, tasks, std::sync::Arc::clone(&restart))
                .map_err(OpenError::Checkpointer)?;
        }
        Ok(Self {
            read,
            writer: writer::Writer::start(write, writers as usize, restart),
            backend,
            _tasks: None,
        })
    }

    /// Whether this database lives in a local file (whose directory must exist).
    pub fn needs_data_dir(url: &str) -> bool {
        Backend::of_url(url) == Backend::Sqlite
    }

    /// Runs `f` on a read connection, off the async executor.
    ///
    /// A read changes nothing, so one that fails for a reason of the database's (a connection
    /// lost to a restart or fail-over, a busy database) is tried once more, on a fresh
    /// connection, before the caller sees 503.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: JobError,
        F: Fn(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        let pool = self.read.clone();
        actix_web::web::block(move || {
            let first = pool
                .get()
                .map_err(|e| E::from(StoreError::from(e)))
                .and_then(|mut conn| f(&mut conn));
            match first {
                Err(e) if e.is_transient() => {
                    log::warn!("a read failed for a reason of the database's; trying it once more");
                    let mut conn = pool.get().map_err(StoreError::from)?;
                    f(&mut conn)
                }
                other => other,
            }
        })
        .await
        .map_err(|e| E::from(StoreError::Other(format!("blocking task failed: {e}"))))?
    }

    /// Runs `f` once on a read connection inside one read-only transaction, so that every
    /// statement of `f` sees the same committed state (a consistent snapshot: SQLite's WAL read
    /// transaction; PostgreSQL's `REPEATABLE READ`). What `f` returns is handed back as is; the
    /// outer `Err` says the snapshot itself could not be had (no connection, no transaction).
    ///
    /// `here`: on SQLite, with a read connection idle, run `f` on the calling thread (an HTTP
    /// worker) rather than hand it to the blocking pool and back — for reads of a few indexed
    /// rows, where the hand-over costs more than the read. Anything longer goes to the pool, so
    /// it never holds up the other requests sharing the worker.
    ///
    /// For the audited read (`audit::disclose`): it reads here, beside the writer, and only its
    /// audit row goes to the writer, so a look-up's time on the one writer is the row's INSERT,
    /// not the read (issue: "a clinician's look-up never waits behind a council's upload").
    pub async fn read_snapshot<T, F>(&self, here: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn) -> T + Send + 'static,
    {
        fn in_snapshot<T>(
            conn: &mut DbConn,
            f: impl FnOnce(&mut DbConn) -> T,
        ) -> Result<T, StoreError> {
            let mut out = None;
            conn.transaction::<_, diesel::result::Error, _>(|c| {
                if let DbConn::Pg(pg) = c {
                    pg.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
                }
                out = Some(f(c));
                Ok(())
            })?;
            out.ok_or_else(|| StoreError::Other("the snapshot read did not run".into()))
        }
        if here && self.backend == Backend::Sqlite {
            if let Some(mut pooled) = self.read.try_get() {
                return in_snapshot(&mut pooled, f);
            }
        }
        let pool = self.read.clone();
        actix_web::web::block(move || {
            let mut pooled = pool.get().map_err(StoreError::from)?;
            in_snapshot(&mut pooled, f)
        })
        .await
        .map_err(|e| StoreError::Other(format!("blocking task failed: {e}")))?
    }

    /// Whether jobs wait for the writer: a long job ends its slice when they do (see
    /// [`writer::Queue`]).
    pub fn writer_queue(&self) -> writer::Queue {
        self.writer.queue()
    }

    /// Runs `f` on the writer: all of `f` commits or none of it does, and the result is
    /// returned only once it is durable.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: JobError,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        self.writer.run(f).await
    }

    /// [`Store::write`] for work that may be run more than once: a run that loses a conflict
    /// with a concurrent transaction (a deadlock or serialisation failure on PostgreSQL; it was
    /// rolled back to its savepoint and left nothing behind) is run again in a later batch —
    /// once its own batch has committed and let go of its locks — up to [`CONFLICT_RETRIES`]
    /// times, before the caller sees 503.
    pub async fn write_retrying<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: JobError,
        F: Fn(&mut DbConn) -> Result<T, E> + Send + Sync + 'static,
    {
        self.retrying(writer::Lane::Interactive, f).await
    }

    /// [`Store::write_retrying`] for a slice of a bulk load: committed after the interactive
    /// jobs taken with it (see [`writer::Lane`]).
    pub async fn write_bulk_retrying<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: JobError,
        F: Fn(&mut DbConn) -> Result<T, E> + Send + Sync + 'static,
    {
        self.retrying(writer::Lane::Bulk, f).await
    }

    async fn retrying<T, E, F>(&self, lane: writer::Lane, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: JobError,
        F: Fn(&mut DbConn) -> Result<T, E> + Send + Sync + 'static,
    {
        let f = std::sync::Arc::new(f);
        let mut retries = 0;
        loop {
            let run = std::sync::Arc::clone(&f);
            let ran = match lane {
                writer::Lane::Interactive => self.writer.run(move |c| run(c)).await,
                writer::Lane::Bulk => self.writer.run_bulk(move |c| run(c)).await,
            };
            match ran {
                Err(e) if e.is_conflict() && retries < CONFLICT_RETRIES => {
                    retries += 1;
                    crate::metrics::writer_conflict();
                    log::warn!("a write lost a conflict with a concurrent transaction; running it again ({retries} of {CONFLICT_RETRIES})");
                }
                other => return other,
            }
        }
    }

    /// [`Store::write`] for a job that makes one write statement, without a savepoint: an `Err`
    /// from `f` rolls back its whole batch (see [`writer::Writer::run_unguarded`]).
    pub async fn write_unguarded<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: JobError,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        self.writer.run_unguarded(f).await
    }

    /// [`Store::write`] for code outside the async runtime (start-up tasks, tools).
    pub fn write_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: JobError,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        self.writer.run_blocking(f)
    }

    /// For readiness: a read connection answers, and says whether migrations are pending.
    pub async fn probe_read(&self) -> Result<bool, StoreError> {
        self.read(|c| {
            diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>("1"))
                .get_result::<i32>(c)?;
            migrations_pending(c).map_err(|e| StoreError::Other(e.to_string()))
        })
        .await
    }

    /// For readiness: the writer takes a job and commits it (an empty transaction).
    pub async fn probe_writer(&self) -> Result<(), StoreError> {
        self.write(|_| Ok::<_, StoreError>(())).await
    }

    /// A read connection for tools outside the async runtime.
    pub fn read_blocking<T, E: JobError>(
        &self,
        f: impl FnOnce(&mut DbConn) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.read.get().map_err(StoreError::from)?;
        f(&mut conn)
    }
}

/// Whether opening a store runs pending migrations (one server, tools, tests) or refuses to
/// start on an old schema (replicas started with `--no-migrate` after `cpis-fhir migrate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrations {
    Run,
    Check,
}

/// The PostgreSQL advisory lock replicas starting together take around their migrations, so
/// one runs them and the others then find nothing pending ("cpis" "migr" in ASCII).
const MIGRATION_LOCK: i64 = 0x6370_6973_6d69_6772;

fn run_migrations(conn: &mut DbConn) -> Result<(), OpenError> {
    let applied = match conn {
        DbConn::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
        DbConn::Pg(c) => {
            c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                .map_err(|e| OpenError::Migrate(format!("cannot take the migration lock: {e}")))?;
            let ran = c
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.len());
            // Session-level: released here whatever happened (and by PostgreSQL if this
            // process dies holding it).
            if let Err(e) = c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
            {
                log::warn!("cannot release the migration lock: {e}");
            }
            ran
        }
    }
    .map_err(|e| OpenError::Migrate(e.to_string()))?;
    if applied > 0 {
        log::info!("applied {applied} database migration(s)");
    }
    Ok(())
}

/// Whether this version's migrations are not all applied to the database.
pub fn migrations_pending(conn: &mut DbConn) -> Result<bool, OpenError> {
    match conn {
        DbConn::Sqlite(c) => c.has_pending_migration(SQLITE_MIGRATIONS),
        DbConn::Pg(c) => c.has_pending_migration(POSTGRES_MIGRATIONS),
    }
    .map_err(|e| OpenError::Migrate(format!("cannot read the applied migrations: {e}")))
}

/// Microseconds since the Unix epoch: how instants are stored (portable across both backends).
pub fn micros(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_micros()
}

pub fn from_micros(m: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(m).unwrap_or_default()
}

/// True when a Diesel error is a unique-constraint violation.
pub fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    fn read_failing_first_with(err: StoreError) -> (Result<u32, StoreError>, u32) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.db").to_string_lossy(), 1).unwrap();
        let tries = Arc::new(AtomicU32::new(0));
        let t = Arc::clone(&tries);
        let got = actix_web::rt::System::new().block_on(store.read(move |_| {
            match t.fetch_add(1, Ordering::SeqCst) {
                0 => Err(err.clone()),
                n => Ok(n),
            }
        }));
        (got, tries.load(Ordering::SeqCst))
    }

    #[test]
    fn a_snapshot_read_sees_one_committed_state_whatever_commits_while_it_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db").to_string_lossy().into_owned();
        let store = Store::open(&path, 1).unwrap();
        let count = |c: &mut DbConn| -> i64 { councils::count(c).unwrap() };
        let other = path.clone();
        let (first, second, after) = actix_web::rt::System::new()
            .block_on(async move {
                let seen = store
                    .read_snapshot(true, move |c| {
                        let first = count(c);
                        // Another connection commits a council between the snapshot's two reads.
                        let mut w = diesel::SqliteConnection::establish(&other).unwrap();
                        w.batch_execute(
                            "INSERT INTO local_authorities \
                             (ods_code, name, office_phone, emergency_phone, active, version, updated_at) \
                             VALUES ('LBSNAP', 'Snapshot', '0', '0', 1, 1, 0);",
                        )
                        .unwrap();
                        (first, count(c))
                    })
                    .await
                    .unwrap();
                let after = store
                    .read_snapshot(false, move |c| count(c))
                    .await
                    .unwrap();
                (seen.0, seen.1, after)
            });
        assert_eq!(first, second, "one snapshot throughout");
        assert_eq!(after, first + 1, "the next snapshot sees the commit");
    }

    #[test]
    fn a_read_that_fails_for_the_database_s_reason_is_tried_once_more() {
        let (got, tries) = read_failing_first_with(StoreError::Transient("connection lost".into()));
        assert_eq!(got.ok(), Some(1));
        assert_eq!(tries, 2);
    }

    #[test]
    fn a_read_that_fails_for_any_other_reason_is_not_repeated() {
        let (got, tries) = read_failing_first_with(StoreError::Corrupt("bad".into()));
        assert!(got.is_err());
        assert_eq!(tries, 1);
    }
}
