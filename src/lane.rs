//! The bulk lane: the threads that do the CPU work of a council's upload (reading and checking
//! every entry of a Bundle, rendering its response) and of an auditor's report, at the lowest
//! scheduling priority, so that a clinician's look-up is never queued for a core behind them
//! (the issue "a clinician's look-up never waits behind a council's upload"; DOMAIN.md's look-up
//! is an emergency department's question, an upload can wait).
//!
//! On Linux the lane's threads run under `SCHED_IDLE` (nice 19 where that is refused): when a
//! look-up's thread (an HTTP worker, the read pool, the writer) wants a core, it preempts them at
//! once and the lane gets what is left; when the look-ups leave cores idle, the lane uses all of
//! them, so a quiet hour's upload runs as fast as before. Measured (README, "The bulk lane"): it
//! helps when look-ups keep every core busy; at a paced 1,000 look-ups/s what a look-up waits for
//! under a bulk load is mostly the writer and the disk, not a core, and `SCHED_IDLE` did a little
//! better than nice 19 there (most beside a bulk export, whose thread is lowered the same way,
//! `audit::export`). A lowered priority cannot be raised again without privilege, so the
//! lane's threads are its own, started once and never lent to other work (actix's blocking pool
//! also serves the look-ups' reads, so it must stay at normal priority).
//!
//! The database writes of a Bundle stay on the writer at normal priority: they are sliced so a
//! waiting look-up's audit row goes between them (`store::writer`).

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::error::ApiError;
use crate::tasks::TaskError;

/// A job, told the priority its thread runs at (for the metrics).
type Job = Box<dyn FnOnce(&'static str) + Send>;

/// A fixed set of lowered threads taking jobs in arrival order; clones share them. The
/// threads end when the last clone is dropped.
#[derive(Clone)]
pub struct BulkLane {
    jobs: mpsc::Sender<Job>,
}

impl BulkLane {
    /// Starts `threads` threads (at least one); `lowered` sets each to the lowest priority.
    pub fn start(threads: usize, lowered: bool) -> Result<Self, TaskError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("cpis-bulk-{n}"))
                .spawn(move || {
                    let priority = if lowered && lower_this_thread() {
                        "lowest"
                    } else {
                        "normal"
                    };
                    loop {
                        // The lock is held only to take a job, never while running one.
                        let next = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => break,
                        };
                        match next {
                            // A bug in one job must not take the thread with it: its caller
                            // gets an error (its answer is dropped) and the lane goes on.
                            Ok(job) => {
                                let ran =
                                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                        job(priority)
                                    }));
                                if ran.is_err() {
                                    crate::metrics::bulk_finished(priority);
                                }
                            }
                            Err(_) => break,
                        }
                    }
                })
                .map_err(|source| TaskError {
                    name: "bulk lane",
                    source,
                })?;
        }
        Ok(Self { jobs })
    }

    /// Runs `f` on the lane and waits for its answer without holding an HTTP worker.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |priority| {
            let out = f();
            // Counted before the answer goes, so whoever reads the metrics after the response
            // sees this job in them.
            crate::metrics::bulk_finished(priority);
            // The caller may have gone (its client disconnected); the work is simply dropped.
            let _ = answer.send(out);
        });
        crate::metrics::bulk_waiting(1);
        if self.jobs.send(job).is_err() {
            crate::metrics::bulk_waiting(-1);
            return Err(ApiError::Internal("the bulk lane has stopped".into()));
        }
        answered
            .await
            .map_err(|_| ApiError::Internal("a bulk lane job ended without an answer".into()))
    }
}

/// Lowers the calling thread to the lowest priority there is: on Linux the `SCHED_IDLE` policy
/// (it runs only when no normal thread wants the core, and a waking normal thread preempts it
/// at once), else nice 19. Where the platform refuses both, the thread runs on at normal
/// priority and says so once; the answer is whether it was lowered.
pub fn lower_this_thread() -> bool {
    use thread_priority::{
        set_current_thread_priority, set_thread_priority_and_policy, thread_native_id,
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
    };
    let idle = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    );
    if idle.is_ok() {
        return true;
    }
    match set_current_thread_priority(ThreadPriority::Min) {
        Ok(()) => true,
        Err(e) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                log::warn!(
                    "bulk work runs at normal priority: its threads could not be lowered ({e:?})"
                );
            });
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn jobs_run_in_turn_on_the_lane_s_own_threads_and_each_answers_its_caller() {
        let lane = BulkLane::start(2, true).expect("lane");
        for i in 0..8u32 {
            let (doubled, name) = lane
                .run(move || (i * 2, std::thread::current().name().map(str::to_owned)))
                .await
                .expect("answer");
            assert_eq!(doubled, i * 2);
            assert!(name.expect("named").starts_with("cpis-bulk-"));
        }
    }

    #[actix_rt::test]
    async fn a_job_s_panic_is_answered_as_an_error_and_the_lane_goes_on() {
        let lane = BulkLane::start(1, false).expect("lane");
        let failed = lane.run(|| -> u32 { panic!("a bug in a job") }).await;
        assert!(failed.is_err());
        assert_eq!(lane.run(|| 7).await.expect("answer"), 7);
    }
}
