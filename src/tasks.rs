//! The owner of the server's background threads: the record lifecycle's scheduler, the
//! notification worker, the refused-authentication flusher and the SQLite checkpointer.
//!
//! Each runs until [`Tasks::shutdown`] (or the owner's drop) sets the shared [`Stop`]; a task
//! checks it between steps, never inside one, so a notification post or a lifecycle run in
//! progress finishes before its thread does. `shutdown` waits for every thread, up to a bound,
//! and names any that did not finish.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why a background task could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the {name}: {source}")]
pub struct TaskError {
    pub name: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// When a background task last finished a round, for readiness checks; clones share it.
#[derive(Clone, Debug)]
pub struct Heartbeat(Arc<(Instant, std::sync::atomic::AtomicU64)>);

impl Default for Heartbeat {
    fn default() -> Self {
        Self(Arc::new((
            Instant::now(),
            std::sync::atomic::AtomicU64::new(0),
        )))
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        let since_start = u64::try_from(self.0 .0.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0
             .1
            .store(since_start.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// How long ago the last beat was; none before the first.
    pub fn since(&self) -> Option<Duration> {
        match self.0 .1.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            at => Some(
                self.0
                     .0
                    .elapsed()
                    .saturating_sub(Duration::from_millis(at)),
            ),
        }
    }

    /// How long ago it was made (for a task that has not beaten yet).
    pub fn age(&self) -> Duration {
        self.0 .0.elapsed()
    }
}

/// The stop signal every task of one owner shares. Sleeping through it wakes at once.
#[derive(Clone, Default)]
pub struct Stop(Arc<(Mutex<bool>, Condvar)>);

impl Stop {
    pub fn is_set(&self) -> bool {
        match self.0 .0.lock() {
            Ok(stopped) => *stopped,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    fn set(&self) {
        let (lock, cv) = &*self.0;
        match lock.lock() {
            Ok(mut stopped) => *stopped = true,
            Err(poisoned) => *poisoned.into_inner() = true,
        }
        cv.notify_all();
    }

    /// Sleeps for `d`, or less if the stop is set meanwhile; true when it is set.
    pub fn sleep(&self, d: Duration) -> bool {
        let (lock, cv) = &*self.0;
        let deadline = Instant::now() + d;
        let Ok(mut stopped) = lock.lock() else {
            return true;
        };
        while !*stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            stopped = match cv.wait_timeout(stopped, left) {
                Ok((guard, _)) => guard,
                Err(_) => return true,
            };
        }
        *stopped
    }
}

/// A nudge for a task that waits on something other than [`Stop`] (the notification worker
/// waits on its wake-up), called once when the stop is set.
type Nudge = Box<dyn Fn() + Send + Sync>;

/// Background threads, owned: started here, stopped and joined here.
#[derive(Default)]
pub struct Tasks {
    stop: Stop,
    running: Vec<(&'static str, JoinHandle<()>)>,
    nudges: Vec<Nudge>,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts `run` on a thread of its own, named `name`; `run` returns when its [`Stop`] is set.
    pub fn spawn(
        &mut self,
        name: &'static str,
        run: impl FnOnce(Stop) + Send + 'static,
    ) -> Result<(), TaskError> {
        let stop = self.stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("cpis-{name}"))
            .spawn(move || run(stop))
            .map_err(|source| TaskError { name, source })?;
        self.running.push((name, handle));
        Ok(())
    }

    /// Calls `nudge` when the stop is set, for a task that sleeps on something of its own.
    pub fn on_stop(&mut self, nudge: impl Fn() + Send + Sync + 'static) {
        self.nudges.push(Box::new(nudge));
    }

    /// The names of the tasks started.
    pub fn names(&self) -> Vec<&'static str> {
        self.running.iter().map(|(n, _)| *n).collect()
    }

    fn signal(&self) {
        self.stop.set();
        for nudge in &self.nudges {
            nudge();
        }
    }

    /// Stops every task and waits up to `patience` for them to finish their current step.
    /// Returns the names of those that had not finished (they are left to end with the process).
    pub fn shutdown(mut self, patience: Duration) -> Vec<&'static str> {
        self.signal();
        let deadline = Instant::now() + patience;
        let mut late = Vec::new();
        for (name, handle) in std::mem::take(&mut self.running) {
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                if handle.join().is_err() {
                    log::error!("background task {name} had panicked");
                }
                log::debug!("background task {name} stopped");
            } else {
                log::warn!("background task {name} did not stop within {patience:?}");
                late.push(name);
            }
        }
        late
    }
}

impl Drop for Tasks {
    /// An owner dropped without `shutdown` (a test's server, a tool) still stops its threads.
    fn drop(&mut self) {
        if !self.running.is_empty() {
            self.signal();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn shutdown_stops_a_sleeping_task_at_once_and_lets_a_busy_one_finish_its_step() {
        let mut tasks = Tasks::new();
        let steps = Arc::new(AtomicU32::new(0));
        let s = Arc::clone(&steps);
        tasks
            .spawn("sleeper", move |stop| {
                while !stop.sleep(Duration::from_secs(3600)) {
                    s.fetch_add(1, Ordering::SeqCst);
                }
            })
            .unwrap();
        let (started, wait_started) = std::sync::mpsc::channel();
        let finished = Arc::new(AtomicU32::new(0));
        let f = Arc::clone(&finished);
        tasks
            .spawn("busy", move |stop| {
                started.send(()).unwrap();
                // One step that ignores the stop until it is done.
                std::thread::sleep(Duration::from_millis(200));
                f.store(1, Ordering::SeqCst);
                let _ = stop.is_set();
            })
            .unwrap();
        wait_started.recv().unwrap();
        let begun = Instant::now();
        let late = tasks.shutdown(Duration::from_secs(30));
        assert!(late.is_empty());
        assert_eq!(finished.load(Ordering::SeqCst), 1, "the busy step finished");
        assert_eq!(
            steps.load(Ordering::SeqCst),
            0,
            "the sleeper woke only to stop"
        );
        assert!(begun.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_task_that_will_not_stop_is_named() {
        let mut tasks = Tasks::new();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        tasks
            .spawn("stuck", move |_| {
                let _ = wait.recv();
            })
            .unwrap();
        assert_eq!(tasks.shutdown(Duration::from_millis(50)), vec!["stuck"]);
        release.send(()).unwrap();
    }
}
