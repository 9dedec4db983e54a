//! The single writer: every write and every audited read runs on dedicated writer threads,
//! batched into one transaction per batch (group commit; DESIGN.md "The disclosure path").
//!
//! A handler hands its work to [`Writer::run`]; the thread takes every job waiting (up to a
//! batch limit), runs each inside its own savepoint — so one failing request never rolls back
//! its neighbours — commits once, and only then answers each caller. Under load batches grow by
//! themselves; idle, a batch is one request. Nothing is answered before it is durable: if the
//! commit fails, every job in the batch gets 503 and nothing is disclosed.
//!
//! The audited read runs without a savepoint ([`Writer::run_unguarded`]): its one write, the
//! audit INSERT, needs none, and a savepoint would make SQLite copy every page the INSERT
//! touches into a statement journal. When that job fails, the audit trail could not be written
//! (and SQLite may already have rolled the whole transaction back on an I/O error), so the
//! whole batch is rolled back and every caller in it gets 503: nothing is disclosed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::Connection;
use tokio::sync::oneshot;

use crate::store::checkpoint::{self, Restart};
use crate::store::StoreError;
use crate::store::{DbConn, DbPool};

/// What a job gives back once the batch's fate is known.
type Finish = Box<dyn FnOnce(bool) + Send>;
type Job = Box<dyn FnOnce(&mut DbConn) -> Ran + Send>;

/// Which work a job is: a request someone waits on (a look-up, a single write), or a slice of
/// a bulk load, which is committed after the interactive jobs taken with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    Interactive,
    Bulk,
}

/// A job as queued for the writer threads.
struct Queued {
    job: Job,
    lane: Lane,
}

/// A job that has run: how to answer its caller, and whether it ran without a savepoint and
/// failed, so that whatever it wrote cannot be undone on its own (the batch must then be rolled
/// back).
struct Ran {
    finish: Finish,
    spoils_batch: bool,
}

/// The most jobs in one transaction: bounds the latency a batch can add.
const MAX_BATCH: usize = 256;

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Queued>,
    queue: Queue,
}

/// How many jobs are waiting for a writer thread. A long job (a council's batch Bundle) reads it
/// between its entries and ends its slice when someone is waiting, so an emergency department's
/// look-up waits for a slice of a bulk load, never for all of it (issue: "a clinician's look-up
/// never waits behind a council's upload").
#[derive(Clone, Default)]
pub struct Queue(Arc<AtomicUsize>);

impl Queue {
    /// Whether any job is queued behind the one running now.
    pub fn anyone_waiting(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }

    fn joined(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn taken(&self) {
        self.left(1);
    }

    fn left(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Jobs of a batch not yet started: they still count as waiting (a job later in the same batch
/// waits for the ones before it), and whichever are never started leave the count when the
/// batch ends, however it ends.
struct Unstarted<'a> {
    queue: &'a Queue,
    n: usize,
}

impl Unstarted<'_> {
    fn start_one(&mut self) {
        self.n = self.n.saturating_sub(1);
        self.queue.taken();
    }
}

impl Drop for Unstarted<'_> {
    fn drop(&mut self) {
        self.queue.left(self.n);
    }
}

impl Writer {
    /// Starts `threads` writer threads, each holding one connection of `pool` for its life;
    /// between batches they start the SQLite WAL over when `restart` asks.
    pub fn start(pool: DbPool, threads: usize, restart: Arc<Restart>) -> Self {
        let (tx, rx) = mpsc::channel::<Queued>();
        let rx = Arc::new(Mutex::new(rx));
        let ids = crate::store::audit::IdContext::default();
        let queue = Queue::default();
        for n in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let pool = pool.clone();
            let ids = Arc::clone(&ids);
            let restart = Arc::clone(&restart);
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("cpis-writer-{n}"))
                .spawn(move || {
                    crate::store::audit::use_id_context(ids);
                    writer_loop(&pool, &rx, &restart, &queue)
                });
            if let Err(e) = spawned {
                log::error!("cannot start writer thread: {e}");
            }
        }
        Self { tx, queue }
    }

    /// The writer's queue, for jobs that yield to whoever waits (see [`Queue`]).
    pub fn queue(&self) -> Queue {
        self.queue.clone()
    }

    /// Runs `f` in its own savepoint inside the next batch and returns its result once the
    /// batch is committed. An `Err` from `f` rolls back only `f`'s own changes.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: JobError,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        answer(self.submit(f, true, Lane::Interactive)?.await)
    }

    /// [`Writer::run`] for a slice of a bulk load (see [`Lane`]).
    pub async fn run_bulk<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: JobError,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        answer(self.submit(f, true, Lane::Bulk)?.await)
    }

    /// Like [`Writer::run`] but without a savepoint around `f`, which saves the savepoint's
    /// statements and SQLite's copies of the pages `f` touches: for jobs that make one write
    /// statement. An `Err` from `f` rolls back the whole batch: every caller in it gets 503, and
    /// jobs not yet run are not run. Only for jobs whose `Err` means the batch cannot be trusted
    /// (the audited read: its `Err` says the audit trail cannot be written).
    pub async fn run_unguarded<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: JobError,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        answer(self.submit(f, false, Lane::Interactive)?.await)
    }

    /// [`Writer::run`] for callers outside the async runtime.
    pub fn run_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: JobError,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        answer(self.submit(f, true, Lane::Interactive)?.blocking_recv())
    }

    fn submit<T, E, F>(
        &self,
        f: F,
        savepoint: bool,
        lane: Lane,
    ) -> Result<oneshot::Receiver<Result<T, E>>, E>
    where
        T: Send + 'static,
        E: JobError,
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |conn: &mut DbConn| {
            let result = if savepoint {
                conn.transaction(|c| f(c))
            } else {
                f(conn)
            };
            let spoils_batch = !savepoint && result.is_err();
            let finish: Finish = Box::new(move |committed: bool| {
                let out = match result {
                    Ok(_) if !committed => Err(E::from(StoreError::Transient(
                        "the transaction could not be committed".into(),
                    ))),
                    // A job's own failure is its answer, whatever became of the batch.
                    other => other,
                };
                // The caller may have gone away; its work is committed either way.
                let _ = reply.send(out);
            });
            Ran {
                finish,
                spoils_batch,
            }
        });
        self.queue.joined();
        self.tx.send(Queued { job, lane }).map_err(|_| {
            self.queue.taken();
            E::from(StoreError::Transient(
                "the database writer has stopped".into(),
            ))
        })?;
        Ok(answer)
    }
}

/// A job's reply; a closed channel means the job was dropped unrun (no connection, or the
/// batch could not begin), which the caller must see as "not done".
fn answer<T, E: JobError>(r: Result<Result<T, E>, oneshot::error::RecvError>) -> Result<T, E> {
    r.map_err(|_| {
        E::from(StoreError::Transient(
            "the database writer dropped the request".into(),
        ))
    })?
}

/// What a job's error must be: something a store error, and a Diesel error inside the job's
/// savepoint, can become (each layer above has its own; see `StoreError`), and that can say
/// whether it is worth trying again.
pub trait JobError: From<StoreError> + From<diesel::result::Error> + Send + 'static {
    /// A failure of the database, not of the request: a lost connection, a serialisation
    /// failure, a busy database (see `StoreError::Transient`).
    fn is_transient(&self) -> bool;

    /// The job lost a conflict with a concurrent transaction and was rolled back: the same
    /// work run again may succeed (see `StoreError::Conflict`).
    fn is_conflict(&self) -> bool;
}

impl JobError for StoreError {
    fn is_transient(&self) -> bool {
        StoreError::is_transient(self)
    }

    fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict(_))
    }
}

impl JobError for crate::error::ApiError {
    fn is_transient(&self) -> bool {
        use crate::error::ApiError;
        matches!(self, ApiError::Unavailable(_) | ApiError::Contended(_))
    }

    fn is_conflict(&self) -> bool {
        use crate::error::ApiError;
        match self {
            ApiError::Contended(_) => true,
            // A transaction Bundle's entry that lost: the whole Bundle was rolled back.
            ApiError::InBundle(v) => !v.is_empty() && v.iter().all(|(_, e)| e.is_conflict()),
            _ => false,
        }
    }
}

fn writer_loop(
    pool: &DbPool,
    rx: &Mutex<mpsc::Receiver<Queued>>,
    restart: &Restart,
    queue: &Queue,
) {
    let mut conn = None;
    let mut stats = Stats::default();
    loop {
        let taken = {
            let Ok(guard) = rx.lock() else { return };
            let Ok(first) = guard.recv() else { return };
            let mut taken = vec![first];
            while taken.len() < MAX_BATCH {
                match guard.try_recv() {
                    Ok(j) => taken.push(j),
                    Err(_) => break,
                }
            }
            taken
        };
        let mut unstarted = Unstarted {
            queue,
            n: taken.len(),
        };
        // Interactive work first, committed and answered on its own: a look-up taken with a
        // bulk slice does not wait for the slice, nor for the larger commit it makes.
        let (bulk, interactive): (Vec<Queued>, Vec<Queued>) =
            if taken.iter().any(|q| q.lane == Lane::Bulk) {
                taken.into_iter().partition(|q| q.lane == Lane::Bulk)
            } else {
                // The usual batch, look-ups only: no second vector on the look-up path.
                (Vec::new(), taken)
            };
        for group in [interactive, bulk] {
            if group.is_empty() {
                continue;
            }
            if conn.is_none() {
                match pool.get() {
                    Ok(c) => conn = Some(c),
                    Err(e) => log::error!("writer cannot get a database connection: {e}"),
                }
            }
            let Some(c) = conn.as_mut() else {
                // No connection: nothing can be made durable. Dropping a job drops its reply
                // channel, and its caller answers 503.
                continue;
            };
            let started = std::time::Instant::now();
            let n = group.len() as u64;
            let jobs = group.into_iter().map(|q| q.job).collect();
            let (finishes, committed) = run_batch(c, jobs, &mut unstarted);
            stats.add(n, started.elapsed());
            let broken = !committed && is_broken(c);
            for f in finishes {
                f(committed);
            }
            // After answering, so no caller waits for it.
            if broken {
                conn = None;
            } else {
                checkpoint::restart_if_asked(c, restart);
            }
        }
    }
}

/// The writer's own figures, logged at debug now and then.
#[derive(Default)]
struct Stats {
    batches: u64,
    jobs: u64,
    busy: std::time::Duration,
}

impl Stats {
    fn add(&mut self, jobs: u64, busy: std::time::Duration) {
        self.batches += 1;
        self.jobs += jobs;
        self.busy += busy;
        if self.batches % 5_000 == 0 {
            log::debug!(
                "writer: {} jobs in {} batches ({:.1} per batch), {:.1} µs busy per job",
                self.jobs,
                self.batches,
                self.jobs as f64 / self.batches as f64,
                self.busy.as_secs_f64() * 1e6 / self.jobs as f64
            );
        }
    }
}

fn begin(conn: &mut DbConn) -> diesel::QueryResult<()> {
    match conn {
        // IMMEDIATE takes the write lock up front, so a batch never fails half-way on a lock
        // held by another process (a CLI purge, say); busy_timeout waits for it instead.
        DbConn::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE"),
        DbConn::Pg(_) => <DbConn as Connection>::TransactionManager::begin_transaction(conn),
    }
}

fn run_batch(
    conn: &mut DbConn,
    jobs: Vec<Job>,
    unstarted: &mut Unstarted<'_>,
) -> (Vec<Finish>, bool) {
    if let Err(e) = begin(conn) {
        log::error!("writer cannot begin a transaction: {e}");
        // Dropped jobs answer 503 through their closed reply channels.
        drop(jobs);
        return (Vec::new(), false);
    }
    let mut finishes: Vec<Finish> = Vec::with_capacity(jobs.len());
    for job in jobs {
        unstarted.start_one();
        let ran = job(conn);
        finishes.push(ran.finish);
        if ran.spoils_batch {
            log::error!("a job without a savepoint failed: rolling its whole batch back");
            if let Err(e) = <DbConn as Connection>::TransactionManager::rollback_transaction(conn) {
                log::error!("writer rollback failed: {e}");
            }
            // The jobs not yet run are dropped: their callers answer 503 through their closed
            // reply channels.
            return (finishes, false);
        }
    }
    let started = std::time::Instant::now();
    let committed = <DbConn as Connection>::TransactionManager::commit_transaction(conn);
    crate::metrics::writer_batch(finishes.len(), started.elapsed());
    match committed {
        Ok(()) => (finishes, true),
        Err(e) => {
            log::error!("writer commit failed: {e}");
            let _ = <DbConn as Connection>::TransactionManager::rollback_transaction(conn);
            (finishes, false)
        }
    }
}

fn is_broken(conn: &mut DbConn) -> bool {
    <DbConn as Connection>::TransactionManager::is_broken_transaction_manager(conn)
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;

    use super::*;
    use crate::store::Store;

    fn count(store: &Store) -> i64 {
        store
            .read_blocking(|c| {
                Ok::<_, StoreError>(
                    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                        "(SELECT count(*) FROM scratch)",
                    ))
                    .get_result(c)?,
                )
            })
            .unwrap()
    }

    fn write(n: i64) -> impl FnOnce(&mut DbConn) -> Result<(), StoreError> + Send + 'static {
        move |c| Ok(c.batch_execute(&format!("INSERT INTO scratch VALUES ({n})"))?)
    }

    /// Holds the writer inside a batch of its own until `release` is sent, so jobs submitted
    /// meanwhile are taken together as the next batch.
    fn hold(
        w: &Writer,
    ) -> (
        oneshot::Receiver<Result<(), StoreError>>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (started, wait_started) = std::sync::mpsc::channel::<()>();
        let (release, wait_release) = std::sync::mpsc::channel::<()>();
        let holding = w
            .submit(
                move |_| {
                    started.send(()).ok();
                    wait_release.recv().ok();
                    Ok::<_, StoreError>(())
                },
                true,
                Lane::Interactive,
            )
            .unwrap();
        wait_started.recv().unwrap();
        (holding, release)
    }

    #[test]
    fn an_unguarded_job_that_fails_rolls_back_its_whole_batch_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("w.db").to_string_lossy(), 1).unwrap();
        let w = store.writer.clone();
        w.run_blocking(|c| {
            Ok::<_, StoreError>(c.batch_execute("CREATE TABLE scratch (x INTEGER)")?)
        })
        .unwrap();

        // Hold the writer inside a batch of its own until the next three jobs are queued, so
        // they run together in the following batch.
        let (holding, release) = hold(&w);
        let good = w.submit(write(1), false, Lane::Interactive).unwrap();
        let failing = w
            .submit(
                |c| {
                    write(2)(c)?;
                    Err::<(), _>(StoreError::Transient("the audit trail is full".into()))
                },
                false,
                Lane::Interactive,
            )
            .unwrap();
        let behind = w.submit(write(3), true, Lane::Interactive).unwrap();
        release.send(()).unwrap();

        assert!(answer(holding.blocking_recv()).is_ok());
        let good = answer(good.blocking_recv()).unwrap_err();
        assert!(
            good.to_string().contains("could not be committed"),
            "{good}"
        );
        let failing = answer(failing.blocking_recv()).unwrap_err();
        assert!(
            failing.to_string().contains("audit trail is full"),
            "{failing}"
        );
        let behind = answer(behind.blocking_recv()).unwrap_err();
        assert!(behind.is_transient(), "{behind}");
        assert_eq!(count(&store), 0, "nothing of the failed batch was kept");

        w.run_blocking(write(4)).unwrap();
        assert_eq!(count(&store), 1);
    }

    #[test]
    fn a_running_job_sees_the_jobs_waiting_behind_it_even_in_its_own_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("w.db").to_string_lossy(), 1).unwrap();
        let w = store.writer.clone();
        let queue = w.queue();
        assert!(!queue.anyone_waiting());

        // Hold the writer so the next jobs are queued together and taken as one batch.
        let (holding, release) = hold(&w);
        assert!(!queue.anyone_waiting(), "the running job is not waiting");
        let seen = |q: Queue| move |_: &mut DbConn| Ok::<_, StoreError>(q.anyone_waiting());
        let first = w
            .submit(seen(queue.clone()), true, Lane::Interactive)
            .unwrap();
        let last = w
            .submit(seen(queue.clone()), true, Lane::Interactive)
            .unwrap();
        assert!(queue.anyone_waiting());
        release.send(()).unwrap();

        assert!(answer(holding.blocking_recv()).is_ok());
        assert!(
            answer(first.blocking_recv()).unwrap(),
            "the job after it in the same batch still waits for it"
        );
        assert!(
            !answer(last.blocking_recv()).unwrap(),
            "nothing waits behind the last"
        );
        assert!(!queue.anyone_waiting(), "the count returns to nought");
    }

    #[test]
    fn an_interactive_job_taken_with_a_bulk_slice_is_answered_before_the_slice_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("w.db").to_string_lossy(), 1).unwrap();
        let w = store.writer.clone();
        let (holding, release) = hold(&w);
        // Queued first, the slice waits (at most 5 s) for the test to see the look-up answered.
        let (go, wait_go) = std::sync::mpsc::channel::<()>();
        let slice = w
            .submit(
                move |_| {
                    wait_go
                        .recv_timeout(std::time::Duration::from_secs(5))
                        .map_err(|_| StoreError::Transient("the look-up was not answered".into()))
                },
                true,
                Lane::Bulk,
            )
            .unwrap();
        let look_up = w
            .submit(
                |_| Ok::<_, StoreError>("disclosed"),
                true,
                Lane::Interactive,
            )
            .unwrap();
        release.send(()).unwrap();
        assert!(answer(holding.blocking_recv()).is_ok());
        assert_eq!(answer(look_up.blocking_recv()).unwrap(), "disclosed");
        go.send(()).unwrap();
        assert!(
            answer(slice.blocking_recv()).is_ok(),
            "the slice ran after the look-up was answered"
        );
    }

    #[actix_rt::test]
    async fn work_that_loses_a_conflict_runs_again_and_only_its_last_run_is_kept() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("w.db").to_string_lossy(), 1).unwrap();
        store
            .write(|c| Ok::<_, StoreError>(c.batch_execute("CREATE TABLE scratch (x INTEGER)")?))
            .await
            .unwrap();
        let conflicted = |runs: Arc<AtomicU32>, losses: u32| {
            move |c: &mut DbConn| {
                let n = runs.fetch_add(1, Ordering::SeqCst);
                write(i64::from(n))(c)?;
                if n < losses {
                    Err(StoreError::Conflict("deadlock detected".into()))
                } else {
                    Ok(n)
                }
            }
        };
        let runs = Arc::new(AtomicU32::new(0));
        let won = store.write_retrying(conflicted(Arc::clone(&runs), 2)).await;
        assert_eq!(won.unwrap(), 2, "the third run won");
        assert_eq!(count(&store), 1, "the lost runs left nothing");

        let runs = Arc::new(AtomicU32::new(0));
        let lost = store
            .write_retrying(conflicted(Arc::clone(&runs), u32::MAX))
            .await;
        assert!(lost.unwrap_err().is_conflict());
        assert_eq!(
            runs.load(Ordering::SeqCst),
            crate::store::CONFLICT_RETRIES + 1
        );
        assert_eq!(count(&store), 1);

        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        let refused = store
            .write_retrying(move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(StoreError::Duplicate("taken".into()))
            })
            .await;
        assert!(matches!(refused, Err(StoreError::Duplicate(_))));
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "only conflicts are run again"
        );
    }
}
