//! Scheduling work onto a context from other threads (tevent's
//! `tevent_threaded_context`).

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::context::Context;

/// A job sent from another thread, run on the loop thread.
pub(crate) type Job = Box<dyn FnOnce(&Context) + Send>;

/// At most this many jobs are moved into the immediate queue at a time; the
/// next batch waits until the loop has checked its fds once, so a flood of
/// jobs cannot starve fd events.
pub(crate) const IMPORT_BATCH: usize = 256;

struct Jobs {
    queue: VecDeque<Job>,
    /// The context is gone: refuse new jobs.
    closed: bool,
}

/// What a context shares with the threads that hold a [`ThreadHandle`]: its
/// wakeup eventfd (kept open as long as any handle exists, so a wakeup can
/// never hit a closed or reused fd) and the job queue.
pub(crate) struct Shared {
    wakeup: OwnedFd,
    jobs: Mutex<Jobs>,
    /// Jobs are waiting: checked by the loop without taking the lock.
    pending: AtomicBool,
}

impl Shared {
    pub(crate) fn new(wakeup: OwnedFd) -> Shared {
        Shared {
            wakeup,
            jobs: Mutex::new(Jobs {
                queue: VecDeque::new(),
                closed: false,
            }),
            pending: AtomicBool::new(false),
        }
    }

    pub(crate) fn wakeup_fd(&self) -> &OwnedFd {
        &self.wakeup
    }

    fn lock(&self) -> MutexGuard<'_, Jobs> {
        // A job never runs under the lock, so a poisoned lock only means a
        // sender panicked between push and unlock: the queue is intact.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn wake(&self) {
        let _ = rustix::io::write(self.wakeup.as_fd(), &1u64.to_ne_bytes());
    }

    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Take up to `max` jobs, in the order they were sent.
    pub(crate) fn take_batch(&self, max: usize) -> Vec<Job> {
        let mut jobs = self.lock();
        let n = jobs.queue.len().min(max);
        let batch: Vec<Job> = jobs.queue.drain(..n).collect();
        self.pending
            .store(!jobs.queue.is_empty(), Ordering::Release);
        batch
    }

    /// The context is being dropped: refuse new jobs and hand back the ones
    /// that never ran (they are dropped by the caller, outside the lock).
    pub(crate) fn close(&self) -> VecDeque<Job> {
        let mut jobs = self.lock();
        jobs.closed = true;
        self.pending.store(false, Ordering::Release);
        std::mem::take(&mut jobs.queue)
    }
}

/// A handle that any thread can use to run work on a context's thread
/// (tevent's `tevent_threaded_context` with
/// `tevent_threaded_schedule_immediate`).
///
/// It is `Send + Sync + Clone`. Each [`schedule`](ThreadHandle::schedule)d
/// job runs exactly once, on the loop thread, as an immediate: jobs from one
/// thread run in the order that thread sent them. Scheduling wakes the loop
/// if it is waiting. Once the context is dropped, `schedule` hands the job
/// back in an error; jobs still queued then are dropped without running.
///
/// Fairness: jobs are moved into the loop's immediate queue in batches of
/// at most 256, and the next batch only after the loop has checked its fds,
/// so a flood of jobs delays an fd event by at most one batch.
///
/// # Example
///
/// ```
/// use std::sync::mpsc;
/// use std::thread;
///
/// let ctx = tevent::Context::new()?;
/// let handle = ctx.thread_handle();
/// let (tx, rx) = mpsc::channel();
/// let worker = thread::spawn(move || {
///     let answer = 6 * 7; // work done off the loop thread
///     handle
///         .schedule(move |_ctx| tx.send(answer).unwrap())
///         .map_err(|_| "context gone")
/// });
/// worker.join().unwrap().unwrap();
/// while rx.try_recv().is_err() {
///     ctx.loop_once()?;
/// }
/// # Ok::<(), tevent::Error>(())
/// ```
#[derive(Clone)]
pub struct ThreadHandle {
    shared: Arc<Shared>,
}

/// [`ThreadHandle::schedule`] failed because the context is gone; the job
/// is handed back.
pub struct ContextGone<F>(pub F);

impl<F> fmt::Debug for ContextGone<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContextGone(..)")
    }
}

impl<F> fmt::Display for ContextGone<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the event context has been dropped")
    }
}

impl<F> std::error::Error for ContextGone<F> {}

impl ThreadHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> ThreadHandle {
        ThreadHandle { shared }
    }

    /// Run `job` on the loop thread, soon.
    ///
    /// # Errors
    ///
    /// [`ContextGone`] with the job if the context has been dropped.
    pub fn schedule<F>(&self, job: F) -> Result<(), ContextGone<F>>
    where
        F: FnOnce(&Context) + Send + 'static,
    {
        let was_empty = {
            let mut jobs = self.shared.lock();
            if jobs.closed {
                return Err(ContextGone(job));
            }
            let was_empty = jobs.queue.is_empty();
            jobs.queue.push_back(Box::new(job));
            self.shared.pending.store(true, Ordering::Release);
            was_empty
        };
        // The loop empties the queue before it looks at the wakeup fd again,
        // so one wakeup per non-empty stretch is enough.
        if was_empty {
            self.shared.wake();
        }
        Ok(())
    }

    /// Whether the context still exists.
    pub fn is_alive(&self) -> bool {
        !self.shared.lock().closed
    }
}

impl fmt::Debug for ThreadHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let jobs = self.shared.lock();
        f.debug_struct("ThreadHandle")
            .field("alive", &!jobs.closed)
            .field("queued", &jobs.queue.len())
            .finish()
    }
}
