//! A bounded pool of threads for background regeneration.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sync::{Condvar, Mutex};
use crate::ConfigError;

type Job = Box<dyn FnOnce() + Send>;

/// How long an idle worker waits for work before its thread exits.
const IDLE: Duration = Duration::from_secs(30);

/// A bounded pool of threads that runs background regenerations.
///
/// Threads start on demand up to `threads` and exit after 30 s without work; at most `queue` jobs
/// wait for a thread. When both are full, [`try_spawn`](Self::try_spawn) refuses the job, and a
/// region then regenerates in the calling thread instead: the pool never grows without bound.
///
/// A job is never stranded. It runs, or it is handed back ([`PoolFull`]) to run elsewhere: a job
/// waits in the queue only behind a thread that is already running, which empties the queue
/// before it exits, and a job whose new thread the OS refuses to start is handed back. A job
/// that panics is dropped (releasing whatever it holds, such as a key's mutex) and its thread
/// goes on. When the last handle to a pool is dropped, its threads finish the queued jobs, then
/// exit without waiting out their idle time.
///
/// | state of the pool                           | `try_spawn(job)`                          |
/// |---------------------------------------------|-------------------------------------------|
/// | an idle thread                              | that thread runs it                       |
/// | fewer than `threads` threads                | a new thread runs it (or `PoolFull` if the OS refuses the thread) |
/// | all threads busy, room in the queue         | queued                                    |
/// | all threads busy, queue full                | `PoolFull`                                |
/// | all threads still starting                  | `PoolFull` (for the microseconds a start takes) |
///
/// ```
/// use dogpile_runtime::region::Pool;
/// use std::sync::mpsc;
///
/// let pool = Pool::new(2, 16)?;
/// let (tx, rx) = mpsc::channel();
/// pool.try_spawn(move || tx.send(6 * 7).unwrap()).unwrap();
/// assert_eq!(rx.recv().unwrap(), 42);
/// # Ok::<(), dogpile_runtime::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Pool {
    handle: Arc<Handle>,
}

/// Shared by the clones of one `Pool`; its drop (the last handle's) closes the pool.
struct Handle {
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
    /// Threads in their work loop: each empties the queue before it exits.
    threads: usize,
    /// Threads asked of the OS that have not reached their work loop yet.
    starting: usize,
    idle: usize,
    /// No handle is left: no job can come, threads exit once the queue is empty.
    closed: bool,
}

/// The pool had no free thread and no room in its queue (or the OS refused a new thread); the
/// job is returned unrun.
///
/// ```
/// use dogpile_runtime::region::Pool;
/// use std::sync::mpsc;
///
/// let pool = Pool::new(1, 0)?;
/// let (tx, rx) = mpsc::channel::<()>();
/// pool.try_spawn(move || { let _ = rx.recv(); }).unwrap(); // occupies the only thread
/// let refused = pool.try_spawn(|| {}).unwrap_err();
/// refused.into_job()();
/// drop(tx);
/// # Ok::<(), dogpile_runtime::ConfigError>(())
/// ```
pub struct PoolFull(Job);

impl PoolFull {
    /// The job that was not run, to run elsewhere (or drop).
    ///
    /// ```
    /// # use dogpile_runtime::region::Pool;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::{mpsc, Arc};
    ///
    /// let pool = Pool::new(1, 0)?;
    /// let (tx, rx) = mpsc::channel::<()>();
    /// pool.try_spawn(move || { let _ = rx.recv(); }).unwrap();
    /// let ran = Arc::new(AtomicBool::new(false));
    /// let flag = ran.clone();
    /// let job = pool.try_spawn(move || flag.store(true, Ordering::SeqCst)).unwrap_err().into_job();
    /// job();
    /// assert!(ran.load(Ordering::SeqCst));
    /// drop(tx);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
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
    /// `threads` must be at least 1: a pool without threads would accept jobs and never run
    /// them, and a background regeneration holds its key's mutex until its job ends. A `queue`
    /// of 0 is fine (a job then needs a free thread).
    ///
    /// ```
    /// # use dogpile_runtime::region::Pool;
    /// let pool = Pool::new(4, 64)?;
    /// assert_eq!(pool.threads(), 0); // threads start on demand
    ///
    /// let err = Pool::new(0, 64).unwrap_err();
    /// assert_eq!(err.option(), "threads");
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn new(threads: usize, queue: usize) -> Result<Self, ConfigError> {
        if threads == 0 {
            return Err(ConfigError::new(
                "threads",
                "must be at least 1; a pool without threads never runs the regenerations handed \
                 to it (leave the region without a background pool to regenerate in the caller)",
            ));
        }
        Ok(Pool::with_limits(threads, queue))
    }

    fn with_limits(threads: usize, queue: usize) -> Self {
        Pool {
            handle: Arc::new(Handle {
                shared: Arc::new(Shared {
                    state: Mutex::new(State::default()),
                    work: Condvar::new(),
                    max_threads: threads,
                    max_queue: queue,
                }),
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
        static SHARED: std::sync::LazyLock<Pool> = std::sync::LazyLock::new(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            Pool::with_limits(cores.clamp(2, 16), 1024)
        });
        SHARED.clone()
    }

    /// Runs `job` on a pool thread, starting one if none is idle and the limit allows; queues it
    /// if the threads are busy; refuses it if the queue is full too, or if the OS refuses to
    /// start a thread for it. A job that panics does not take its thread down.
    ///
    /// ```
    /// # use dogpile_runtime::region::Pool;
    /// let pool = Pool::new(1, 1)?;
    /// pool.try_spawn(|| ()).unwrap();
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn try_spawn(&self, job: impl FnOnce() + Send + 'static) -> Result<(), PoolFull> {
        let job: Job = Box::new(job);
        let shared = &self.handle.shared;
        let mut state = shared.state.lock();
        if state.idle > state.jobs.len() {
            // An idle thread that no queued job has claimed yet takes it.
            state.jobs.push_back(job);
            drop(state);
            shared.work.notify_one();
            return Ok(());
        }
        if state.threads + state.starting < shared.max_threads {
            state.starting += 1;
            drop(state);
            return self.start_thread(job);
        }
        // Only behind a running thread: it empties the queue before it exits. A thread that is
        // still starting might never run.
        if state.threads > 0 && state.jobs.len() < shared.max_queue {
            state.jobs.push_back(job);
            return Ok(());
        }
        Err(PoolFull(job))
    }

    /// Starts a thread whose first job is `job`; hands `job` back if the OS refuses the thread.
    #[cold]
    fn start_thread(&self, job: Job) -> Result<(), PoolFull> {
        let first = Arc::new(Mutex::new(Some(job)));
        let handoff = Arc::clone(&first);
        let shared = Arc::clone(&self.handle.shared);
        let spawned = std::thread::Builder::new()
            .name("dogpile-background".into())
            .spawn(move || {
                let job = handoff.lock().take();
                shared.work(job);
            });
        if spawned.is_ok() {
            return Ok(());
        }
        self.handle.shared.state.lock().starting -= 1;
        // The thread never ran, so the job is still in the handoff.
        let job = first.lock().take();
        match job {
            Some(job) => Err(PoolFull(job)),
            None => Ok(()),
        }
    }

    /// How many threads the pool has now.
    ///
    /// ```
    /// # use dogpile_runtime::region::Pool;
    /// assert_eq!(Pool::new(2, 2)?.threads(), 0);
    /// # Ok::<(), dogpile_runtime::ConfigError>(())
    /// ```
    pub fn threads(&self) -> usize {
        self.handle.shared.state.lock().threads
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        // Idle threads exit now; busy ones after the queue is empty.
        self.shared.work.notify_all();
    }
}

impl Shared {
    fn work(&self, first: Option<Job>) {
        {
            let mut state = self.state.lock();
            state.starting -= 1;
            state.threads += 1;
        }
        if let Some(job) = first {
            run(job);
        }
        let mut state = self.state.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                run(job);
                state = self.state.lock();
                continue;
            }
            if state.closed {
                break;
            }
            state.idle += 1;
            let deadline = Instant::now() + IDLE;
            let (guard, timed_out) = self.work.wait_until(state, deadline);
            state = guard;
            state.idle -= 1;
            if timed_out && state.jobs.is_empty() {
                break;
            }
        }
        state.threads -= 1;
    }
}

/// Runs a job; a panic ends the job (dropping what it captured, such as a key's mutex guard),
/// not the thread. The job reports its own panic (a region counts it).
fn run(job: Job) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(job)) {
        // Even a payload whose drop panics must not end the thread with jobs still queued.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(panic)));
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.handle.shared;
        let state = shared.state.lock();
        f.debug_struct("Pool")
            .field("threads", &state.threads)
            .field("max_threads", &shared.max_threads)
            .field("queued", &state.jobs.len())
            .field("max_queue", &shared.max_queue)
            .finish()
    }
}
