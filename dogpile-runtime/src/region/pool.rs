//! A bounded pool of threads for background regeneration.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sync::{Condvar, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// How long an idle worker waits for work before its thread exits.
const IDLE: Duration = Duration::from_secs(30);

/// A bounded pool of threads that runs background regenerations.
///
/// Threads start on demand up to `threads` and exit after 30 s without work; at most `queue` jobs
/// wait for a thread. When both are full, [`try_spawn`](Self::try_spawn) refuses the job, and a
/// region then regenerates in the calling thread instead: the pool never grows without bound.
///
/// ```
/// use dogpile_runtime::region::Pool;
/// use std::sync::mpsc;
///
/// let pool = Pool::new(2, 16);
/// let (tx, rx) = mpsc::channel();
/// pool.try_spawn(move || tx.send(6 * 7).unwrap()).unwrap();
/// assert_eq!(rx.recv().unwrap(), 42);
/// ```
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    max_threads: usize,
    max_queue: usize,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

/// The pool had no free thread and no room in its queue; the job is returned unrun.
///
/// ```
/// use dogpile_runtime::region::Pool;
/// use std::sync::mpsc;
///
/// let pool = Pool::new(1, 0);
/// let (tx, rx) = mpsc::channel::<()>();
/// pool.try_spawn(move || { let _ = rx.recv(); }).unwrap(); // occupies the only thread
/// let refused = pool.try_spawn(|| {}).unwrap_err();
/// refused.into_job()();
/// drop(tx);
/// ```
pub struct PoolFull(Job);

impl PoolFull {
    /// The job that was not run, to run elsewhere.
    ///
    /// ```
    /// # use dogpile_runtime::region::Pool;
    /// let pool = Pool::new(0, 0);
    /// let mut ran = false;
    /// let job = pool.try_spawn(|| ()).unwrap_err().into_job();
    /// job();
    /// ```
    pub fn into_job(self) -> Box<dyn FnOnce() + Send> {
        self.0
    }
}

impl fmt::Debug for PoolFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PoolFull")
    }
}

impl fmt::Display for PoolFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the background pool's threads and queue are full")
    }
}

impl std::error::Error for PoolFull {}

impl Pool {
    /// A pool of at most `threads` threads and `queue` waiting jobs.
    ///
    /// ```
    /// # use dogpile_runtime::region::Pool;
    /// let pool = Pool::new(4, 64);
    /// assert_eq!(pool.threads(), 0); // threads start on demand
    /// ```
    pub fn new(threads: usize, queue: usize) -> Self {
        Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                max_threads: threads,
                max_queue: queue,
            }),
        }
    }

    /// The pool that regions use unless given another: as many threads as the machine has
    /// cores (at least 2, at most 16), and a queue of 1024 jobs.
    ///
    /// ```
    /// # use dogpile_runtime::region::Pool;
    /// let a = Pool::shared();
    /// let b = Pool::shared();
    /// a.try_spawn(|| ()).unwrap();
    /// # drop(b);
    /// ```
    pub fn shared() -> Pool {
        static SHARED: once_cell::sync::Lazy<Pool> = once_cell::sync::Lazy::new(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            Pool::new(cores.clamp(2, 16), 1024)
        });
        SHARED.clone()
    }

    /// Runs `job` on a pool thread, starting one if none is idle and the limit allows; queues it
    /// if the threads are busy; refuses it if the queue is full too. A job that panics does not
    /// take its thread down.
    ///
    /// ```
    /// # use dogpile_runtime::region::Pool;
    /// let pool = Pool::new(1, 1);
    /// pool.try_spawn(|| ()).unwrap();
    /// ```
    pub fn try_spawn(&self, job: impl FnOnce() + Send + 'static) -> Result<(), PoolFull> {
        let job: Job = Box::new(job);
        let mut state = self.shared.state.lock();
        let start_thread =
            state.idle <= state.jobs.len() && state.threads < self.shared.max_threads;
        if !start_thread && state.jobs.len() >= self.shared.max_queue + state.idle {
            return Err(PoolFull(job));
        }
        state.jobs.push_back(job);
        if start_thread {
            state.threads += 1;
            drop(state);
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("dogpile-background".into())
                .spawn(move || shared.work());
            if spawned.is_err() {
                // The OS refused a thread: take back our count; the job waits for another one,
                // or runs here if no thread exists at all.
                let mut state = self.shared.state.lock();
                state.threads -= 1;
                if state.threads == 0 {
                    let job = state.jobs.pop_back();
                    drop(state);
                    if let Some(job) = job {
                        return Err(PoolFull(job));
                    }
                }
            }
        } else {
            drop(state);
            self.shared.work.notify_one();
        }
        Ok(())
    }

    /// How many threads the pool has now.
    ///
    /// ```
    /// # use dogpile_runtime::region::Pool;
    /// assert_eq!(Pool::new(2, 2).threads(), 0);
    /// ```
    pub fn threads(&self) -> usize {
        self.shared.state.lock().threads
    }
}

impl Shared {
    fn work(&self) {
        let mut state = self.state.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                // The job reports its own panic (a region counts it); the thread lives on.
                let _ = catch_unwind(AssertUnwindSafe(job));
                state = self.state.lock();
                continue;
            }
            state.idle += 1;
            let deadline = Instant::now() + IDLE;
            let (guard, timed_out) = self.work.wait_until(state, deadline);
            state = guard;
            state.idle -= 1;
            if timed_out && state.jobs.is_empty() {
                state.threads -= 1;
                return;
            }
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("Pool")
            .field("threads", &state.threads)
            .field("max_threads", &self.shared.max_threads)
            .field("queued", &state.jobs.len())
            .field("max_queue", &self.shared.max_queue)
            .finish()
    }
}
