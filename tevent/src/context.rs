//! The event context and its loop.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::panic::Location;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{self, Backend};
use crate::fd::{self, FdEvent, FdTable};
use crate::immediate::{self, Immediate, ImmediateQueue};
use crate::req_pool::ReqPool;
use crate::signal::{self, SignalEvent, SignalFlags, SignalInfo, SignalTable};
use crate::thread::{self, Shared, ThreadHandle};
use crate::timer::{self, Deadline, Timer, TimerHandler, TimerQueue, TimerStep};
use crate::trace::{EventTracePoint, LoopTracePoint, TraceEvent, Tracer};
use crate::{Error, FdFlags};

/// The token of the context's own wakeup fd in the backend.
const WAKEUP_TOKEN: u64 = 1 << 32; // above every fd number

/// The default wait when no timer exists (tevent's 30 seconds).
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Inner {
    pub(crate) backend: RefCell<Box<dyn Backend>>,
    pub(crate) fds: RefCell<FdTable>,
    pub(crate) timers: RefCell<TimerQueue>,
    pub(crate) immediates: RefCell<ImmediateQueue>,
    pub(crate) signals: RefCell<SignalTable>,
    pub(crate) tracer: Tracer,
    /// Emptied request storage for the next requests (see `req_pool`).
    pub(crate) req_pool: ReqPool,
    shared: RefCell<Arc<Shared>>,
    /// Whether the next batch of thread jobs may be imported (set after
    /// each wait for fds, see `thread::IMPORT_BATCH`).
    may_import_jobs: Cell<bool>,
    nesting: Cell<u32>,
    allow_nesting: Cell<bool>,
    wait_timeout: Cell<Duration>,
}

impl Inner {
    pub(crate) fn wakeup_fd(&self) -> RawFd {
        self.shared.borrow().wakeup_fd().as_raw_fd()
    }

    /// Consume pending wakeups so the wakeup fd stops being readable.
    pub(crate) fn drain_wakeup(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(self.shared.borrow().wakeup_fd(), &mut buf);
    }

    /// Move a batch of jobs sent by other threads into the immediate queue.
    #[inline]
    fn import_jobs(&self) {
        if self.may_import_jobs.get() && self.shared.borrow().has_pending() {
            self.import_batch();
        }
    }

    #[cold]
    fn import_batch(&self) {
        self.may_import_jobs.set(false);
        let batch = self.shared.borrow().take_batch(thread::IMPORT_BATCH);
        let tracing = self.tracer.events_on();
        let mut keys = Vec::new();
        {
            let mut immediates = self.immediates.borrow_mut();
            for job in batch {
                let key = immediates.push_job(job, Location::caller());
                if tracing {
                    keys.push(key);
                }
            }
        }
        for key in keys {
            immediate::trace_imported(self, key);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let wakeup_fd = self.wakeup_fd();
        drop(signal::remove_all(self.signals.get_mut(), wakeup_fd));
        // Jobs that never ran are dropped here, on the loop thread.
        drop(self.shared.get_mut().close());
        // Handlers are dropped here; their captured handles see a dead
        // context and do nothing. fd events still alive run their close
        // functions (tevent frees them with the context).
        fd::close_all(std::mem::take(self.fds.get_mut()));
    }
}

/// An event context (tevent's `tevent_context`): the loop and every event
/// registered with it.
///
/// A `Context` is a cheap, clonable handle to single-threaded state (it is
/// neither `Send` nor `Sync`). Events are added through it and return
/// handles that remove the event when dropped. Every handler is given the
/// `&Context` it runs on, so handlers need not capture one; **a handler that
/// captures a `Context` clone keeps the context alive through a reference
/// cycle** (store a [`WeakContext`] instead).
///
/// # One iteration
///
/// [`loop_once`](Context::loop_once) runs one unit of work, in tevent's
/// order:
///
/// 1. if signals arrived: the handlers of all of them;
/// 2. else, if an immediate is scheduled: the first one;
/// 3. else, if a timer is due: the first one;
/// 4. else it waits for an fd (at most until the first timer's deadline, or
///    the [wait timeout](Context::set_wait_timeout) when there is no timer)
///    and runs one fd handler; or, if the wait ended without one, a signal
///    or due timer.
///
/// Consequences: immediates and always-due timers that keep re-arming
/// starve fd events; signals are never starved. Fds that stay ready are
/// served round-robin (the kernel rotates them; events sharing one fd are
/// rotated by the context).
///
/// # Re-entrancy
///
/// No internal borrow is held while user code runs. From inside any handler
/// you may add or drop any event (including the one that is running: its
/// handler finishes, then the event is gone; an event that was dropped
/// before its turn never fires), change flags and deadlines, drop the last
/// user handle of the context, and run a nested loop if
/// [nesting was allowed](Context::allow_nesting).
///
/// # Panics in handlers
///
/// A handler's panic propagates out of `loop_once` to its caller. The
/// context stays consistent and usable: the next `loop_once` works as if
/// the handler had returned. The event whose handler panicked keeps its
/// state: an fd or signal event stays registered, a timer that was firing is
/// gone (unless it re-armed itself first), an immediate is unscheduled. A
/// request whose callback, queue trigger or cleanup function panicked keeps
/// that function and its state (notices that came for it while it ran are
/// dropped); a request being freed whose cleanup function or state drop
/// panics is freed, not reused.
///
/// # Embedding in another loop
///
/// A program with a loop of its own (a GUI toolkit, another reactor, a game
/// loop) drives the context without ever blocking inside it:
///
/// 1. Watch [`loop_fd`](Context::loop_fd) for readability in the outer loop.
///    It becomes readable when one of the context's fds is ready, a signal
///    arrives, or another thread schedules a job through a
///    [`ThreadHandle`] (the only ways the context's work can change while
///    the outer loop sleeps).
/// 2. Sleep at most [`next_timeout`](Context::next_timeout) (`None`: no
///    deadline of the context's; `Some(ZERO)`: work is pending now).
/// 3. After waking (for any reason), call
///    [`try_loop_once`](Context::try_loop_once) until it returns
///    `Ok(false)`, or a bounded number of times to stay responsive (it runs
///    one unit of work per call and never waits).
/// 4. Ask for `next_timeout` again before sleeping: handlers may have added
///    timers or immediates.
///
/// The `"poll"` backend has no fd to watch (`loop_fd` is `None`); use
/// `"epoll"` or `"polling"` when embedding. `examples/embed_poll.rs` is a
/// complete outer loop written with `poll(2)`.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tevent::{Context, Deadline};
///
/// let ctx = Context::new()?;
/// let im = ctx.schedule_immediate(|_ctx, _im| println!("first"));
/// let timer = ctx.add_timer(Deadline::after(Duration::from_millis(5)), |_ctx, _timer, _now| {
///     println!("then the timer");
/// });
/// ctx.loop_wait()?; // returns when no events remain
/// # drop((im, timer));
/// # Ok::<(), tevent::Error>(())
/// ```
#[derive(Clone)]
pub struct Context {
    inner: Rc<Inner>,
}

/// A weak reference to a [`Context`], for handlers and user state that must
/// not keep the context alive.
#[derive(Clone)]
pub struct WeakContext {
    inner: Weak<Inner>,
}

impl WeakContext {
    /// The context, if it still exists.
    pub fn upgrade(&self) -> Option<Context> {
        self.inner.upgrade().map(Context::from_inner)
    }
}

impl fmt::Debug for WeakContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakContext")
            .field("alive", &(self.inner.strong_count() > 0))
            .finish()
    }
}

/// What one iteration did.
#[derive(PartialEq, Eq)]
enum Step {
    /// A handler ran.
    Ran,
    /// Nothing was ready.
    Idle,
}

fn new_wakeup() -> Result<OwnedFd, Error> {
    Ok(rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )
    .map_err(std::io::Error::from)?)
}

/// Decrements the nesting level when an iteration ends, also by panic.
struct NestingGuard<'a>(&'a Cell<u32>);

impl Drop for NestingGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl Context {
    /// A context on the default backend (`"epoll"` on Linux, see
    /// [`backend`](crate::backend)).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the kernel objects cannot be created (out of fds).
    pub fn new() -> Result<Context, Error> {
        Context::with_backend(backend::default_name())
    }

    /// A context on the backend named `name` (tevent's
    /// `tevent_context_init_byname`); [`backend::names`] lists them.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownBackend`] for an unknown name, [`Error::Io`] if the
    /// kernel objects cannot be created.
    ///
    /// ```
    /// let ctx = tevent::Context::with_backend("poll")?;
    /// assert_eq!(ctx.backend_name(), "poll");
    /// assert!(tevent::Context::with_backend("select").is_err());
    /// # Ok::<(), tevent::Error>(())
    /// ```
    pub fn with_backend(name: &str) -> Result<Context, Error> {
        Context::with_backend_object(backend::create(name)?)
    }

    /// A context on a backend object of the caller's (tevent's
    /// `tevent_context_init_ops`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the wakeup fd cannot be created or registered.
    pub fn with_backend_object(mut backend: Box<dyn Backend>) -> Result<Context, Error> {
        let wakeup = new_wakeup()?;
        backend.add(wakeup.as_fd().as_raw_fd(), WAKEUP_TOKEN, FdFlags::READ)?;
        let shared = Arc::new(Shared::new(wakeup));
        log::debug!("new context on backend {}", backend.name());
        Ok(Context {
            inner: Rc::new(Inner {
                backend: RefCell::new(backend),
                fds: RefCell::new(FdTable::default()),
                timers: RefCell::new(TimerQueue::new(Instant::now())),
                immediates: RefCell::new(ImmediateQueue::default()),
                signals: RefCell::new(SignalTable::default()),
                tracer: Tracer::default(),
                req_pool: ReqPool::default(),
                shared: RefCell::new(shared),
                may_import_jobs: Cell::new(true),
                nesting: Cell::new(0),
                allow_nesting: Cell::new(false),
                wait_timeout: Cell::new(DEFAULT_WAIT_TIMEOUT),
            }),
        })
    }

    pub(crate) fn from_inner(inner: Rc<Inner>) -> Context {
        Context { inner }
    }

    pub(crate) fn inner(&self) -> &Rc<Inner> {
        &self.inner
    }

    /// The name of the backend in use.
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.borrow().name()
    }

    /// A weak reference that does not keep the context alive.
    pub fn downgrade(&self) -> WeakContext {
        WeakContext {
            inner: Rc::downgrade(&self.inner),
        }
    }

    /// Whether two handles refer to the same context.
    pub fn ptr_eq(&self, other: &Context) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    /// Permit [`loop_once`](Context::loop_once) to be called from inside a
    /// handler of this context (tevent's `tevent_loop_allow_nesting`).
    ///
    /// A nested iteration runs whatever is pending, like any iteration; the
    /// event whose handler is running is not run again inside it (an fd event
    /// whose handler is running is skipped, an immediate or timer that
    /// re-armed itself waits for its handler to return).
    pub fn allow_nesting(&self) {
        self.inner.allow_nesting.set(true);
    }

    /// The current nesting level: 0 outside the loop, 1 inside a handler
    /// run by `loop_once`, more in nested loops.
    pub fn nesting_level(&self) -> u32 {
        self.inner.nesting.get()
    }

    /// Set how long an iteration waits when no timer exists (tevent 0.17's
    /// `tevent_context_set_wait_timeout`); returns the previous value.
    ///
    /// - The default is 30 seconds; after it, `loop_once` returns `Ok(())`
    ///   having run nothing.
    /// - `Duration::ZERO` is polling mode: `loop_once` never blocks, and
    ///   returns [`Error::WouldBlock`] when nothing was ready (also when
    ///   timers exist but none is due).
    /// - `Duration::MAX` waits for ever.
    ///
    /// ```
    /// use std::time::Duration;
    /// let ctx = tevent::Context::new()?;
    /// ctx.set_wait_timeout(Duration::ZERO);
    /// assert!(matches!(ctx.loop_once(), Err(tevent::Error::WouldBlock)));
    /// # Ok::<(), tevent::Error>(())
    /// ```
    pub fn set_wait_timeout(&self, timeout: Duration) -> Duration {
        self.inner.wait_timeout.replace(timeout)
    }

    /// Whether anything would keep [`loop_wait`](Context::loop_wait)
    /// running: a timer, a scheduled immediate, a signal event, or an fd
    /// event with non-empty flags.
    pub fn has_events(&self) -> bool {
        let inner = &*self.inner;
        inner.timers.borrow().len() > 0
            || inner.immediates.borrow().scheduled_count() > 0
            || inner.signals.borrow().len() > 0
            || inner.fds.borrow().active_count() > 0
    }

    /// Run one unit of work (tevent's `tevent_loop_once`); see
    /// ["One iteration"](Context#one-iteration) for the order.
    ///
    /// # Errors
    ///
    /// - [`Error::Nested`] when called from inside a handler of this context
    ///   without [`allow_nesting`](Context::allow_nesting);
    /// - [`Error::WouldBlock`] in polling mode when nothing was ready;
    /// - [`Error::Io`] if waiting failed.
    ///
    /// # Panics
    ///
    /// Only if a handler panics (the panic is propagated; see
    /// ["Panics in handlers"](Context#panics-in-handlers)).
    #[track_caller]
    pub fn loop_once(&self) -> Result<(), Error> {
        let _nesting = self.enter()?;
        let tracer = &self.inner.tracer;
        tracer.loop_point(LoopTracePoint::BeforeLoopOnce);
        let result = match self.iterate(false) {
            Ok(Step::Idle) if self.inner.wait_timeout.get().is_zero() => Err(Error::WouldBlock),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        tracer.loop_point(LoopTracePoint::AfterLoopOnce);
        result
    }

    #[inline(always)]
    fn iterate(&self, never_block: bool) -> Result<Step, Error> {
        if signal::run_pending(self) {
            return Ok(Step::Ran);
        }
        self.inner.import_jobs();
        if immediate::run_one(self) {
            return Ok(Step::Ran);
        }
        self.timers_or_wait(never_block)
    }

    /// The rest of an iteration when no signal or immediate was pending.
    fn timers_or_wait(&self, never_block: bool) -> Result<Step, Error> {
        let inner = &*self.inner;
        let zero_wait = never_block
            || inner.wait_timeout.get().is_zero()
            || inner.shared.borrow().has_pending();
        let timeout = match timer::run_due(self) {
            TimerStep::Fired => return Ok(Step::Ran),
            _ if zero_wait => Some(Duration::ZERO),
            TimerStep::Wait(until) => Some(until),
            TimerStep::Empty => {
                let wait = inner.wait_timeout.get();
                (wait != Duration::MAX).then_some(wait)
            }
        };
        inner.tracer.loop_point(LoopTracePoint::BeforeWait);
        let ready = inner.backend.borrow_mut().wait(timeout);
        inner.tracer.loop_point(LoopTracePoint::AfterWait);
        let ready = ready?;
        // The next batch of thread jobs waits until a wait has had the
        // chance to report an fd other than the wakeup fd.
        if ready.is_none_or(|r| r.token != WAKEUP_TOKEN) {
            inner.may_import_jobs.set(true);
        }
        match ready {
            Some(r) if r.token == WAKEUP_TOKEN => {
                inner.drain_wakeup();
                if signal::run_pending(self) {
                    return Ok(Step::Ran);
                }
                Ok(Step::Idle)
            }
            Some(r) => {
                fd::dispatch(self, r);
                Ok(Step::Ran)
            }
            None => {
                if signal::run_pending(self) {
                    return Ok(Step::Ran);
                }
                match timer::run_due(self) {
                    TimerStep::Fired => Ok(Step::Ran),
                    _ => Ok(Step::Idle),
                }
            }
        }
    }

    #[track_caller]
    fn enter(&self) -> Result<NestingGuard<'_>, Error> {
        let inner = &*self.inner;
        let level = inner.nesting.get();
        if level > 0 && !inner.allow_nesting.get() {
            let location = Location::caller();
            log::error!("nested loop_once at {location} refused (nesting not allowed)");
            return Err(Error::Nested { location });
        }
        inner.nesting.set(level + 1);
        Ok(NestingGuard(&inner.nesting))
    }

    /// Run one unit of work if one is ready, without ever waiting: the
    /// dispatch step for an outer loop (see
    /// ["Embedding"](Context#embedding-in-another-loop)). Returns whether
    /// anything ran.
    ///
    /// # Errors
    ///
    /// As [`loop_once`](Context::loop_once), except that nothing being
    /// ready is `Ok(false)`, not an error.
    #[track_caller]
    pub fn try_loop_once(&self) -> Result<bool, Error> {
        let _nesting = self.enter()?;
        let tracer = &self.inner.tracer;
        tracer.loop_point(LoopTracePoint::BeforeLoopOnce);
        let result = self.iterate(true).map(|step| step == Step::Ran);
        tracer.loop_point(LoopTracePoint::AfterLoopOnce);
        result
    }

    /// How long an outer loop may sleep before this context has work:
    /// `Some(ZERO)` when an immediate, a signal or a job from another thread
    /// is pending, the time until the first timer otherwise, `None` when
    /// only fds can bring work (then sleep on [`loop_fd`](Context::loop_fd)
    /// alone).
    pub fn next_timeout(&self) -> Option<Duration> {
        let inner = &*self.inner;
        if inner.immediates.borrow().scheduled_count() > 0
            || inner.shared.borrow().has_pending()
            || signal::maybe_pending(inner)
        {
            return Some(Duration::ZERO);
        }
        inner.timers.borrow().until_first(Instant::now())
    }

    /// The fd an outer loop watches for readability: it becomes readable
    /// when one of the context's fds is ready, a signal arrives or another
    /// thread schedules a job (which also covers "the deadline changed while
    /// the outer loop slept"). `None` for the `"poll"` backend, which has no
    /// such fd (and for custom backends that do not provide one).
    pub fn loop_fd(&self) -> Option<RawFd> {
        self.inner.backend.borrow().as_raw_fd()
    }

    /// Call `callback` at the loop's trace points (tevent's
    /// `tevent_set_trace_callback`): before and after each `loop_once` and
    /// around the kernel wait. Replaces an earlier callback. Trace points
    /// reached from inside the callback itself are not reported.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::rc::Rc;
    /// use tevent::{Context, LoopTracePoint};
    ///
    /// let ctx = Context::new()?;
    /// let points = Rc::new(RefCell::new(Vec::new()));
    /// let p = points.clone();
    /// ctx.set_trace_callback(move |point| p.borrow_mut().push(point));
    /// let _im = ctx.schedule_immediate(|_, _| {});
    /// ctx.loop_once()?; // runs the immediate: no wait
    /// assert_eq!(
    ///     *points.borrow(),
    ///     [LoopTracePoint::BeforeLoopOnce, LoopTracePoint::AfterLoopOnce]
    /// );
    /// # Ok::<(), tevent::Error>(())
    /// ```
    pub fn set_trace_callback<F: FnMut(LoopTracePoint) + 'static>(&self, callback: F) {
        drop(self.inner.tracer.set_loop(Some(Box::new(callback))));
    }

    /// Remove the loop trace callback.
    pub fn clear_trace_callback(&self) {
        drop(self.inner.tracer.set_loop(None));
    }

    /// Call `callback` at every event's trace points (tevent's
    /// `tevent_set_trace_{fd,timer,signal,immediate,queue}_callback`, in one
    /// callback that is told the [`EventKind`](crate::EventKind)): when an
    /// event is attached (added, scheduled), before its handler runs, and
    /// when it is detached (dropped, unscheduled, or done: a fired timer, an
    /// immediate that ran without being rescheduled). Rescheduling an
    /// attached immediate and moving a pending timer report `Detach` then
    /// `Attach`, as tevent does. The callback may change the event's tag.
    pub fn set_event_trace_callback<F>(&self, callback: F)
    where
        F: FnMut(&mut TraceEvent, EventTracePoint) + 'static,
    {
        drop(self.inner.tracer.set_event(Some(Box::new(callback))));
    }

    /// Remove the event trace callback.
    pub fn clear_event_trace_callback(&self) {
        drop(self.inner.tracer.set_event(None));
    }

    /// A handle other threads use to run jobs on this context's thread
    /// (tevent's `tevent_threaded_context_create`). See [`ThreadHandle`].
    pub fn thread_handle(&self) -> ThreadHandle {
        ThreadHandle::new(self.inner.shared.borrow().clone())
    }

    /// Make the context usable in a child process after `fork` (tevent's
    /// `tevent_re_initialise`): every event is detached (its handle stays
    /// valid but inert, its handler is dropped, an fd is *not* closed), the
    /// backend and the wakeup fd are created anew, and thread handles of
    /// the parent stop working (they report the context gone). Signal
    /// events are removed and their dispositions restored.
    ///
    /// Pending request posts and queue triggers are dropped too: a finished
    /// request whose delivery was pending is not delivered (post it again),
    /// and a queue triggers its head again at its next add or removal (or
    /// a [`stop`](crate::Queue::stop) and [`start`](crate::Queue::start)).
    ///
    /// Call it in the child before using the context; the parent's context
    /// is unaffected.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the new backend or wakeup fd cannot be created; the
    /// context is then unusable.
    pub fn reinitialise(&self) -> Result<(), Error> {
        let inner = &*self.inner;
        let old_wakeup = inner.wakeup_fd();
        let signals = signal::remove_all(&mut inner.signals.borrow_mut(), old_wakeup);
        let fds = inner.fds.borrow_mut().detach_all();
        let timers = inner.timers.borrow_mut().detach_all();
        let immediates = inner.immediates.borrow_mut().detach_all();
        if inner.tracer.events_on() {
            fds.iter().for_each(|e| e.trace_detach(inner));
            timers.iter().for_each(|e| e.trace_detach(inner));
            immediates.trace_detach(inner);
            signals.iter().for_each(|e| e.trace_detach(inner));
        }
        drop((signals, fds, timers, immediates));
        {
            let mut backend = inner.backend.borrow_mut();
            backend.reinitialise()?;
            let wakeup = new_wakeup()?;
            backend.add(wakeup.as_raw_fd(), WAKEUP_TOKEN, FdFlags::READ)?;
            let old = inner.shared.replace(Arc::new(Shared::new(wakeup)));
            drop(old.close());
        }
        log::debug!("context re-initialised on backend {}", self.backend_name());
        Ok(())
    }

    /// Run iterations until no events remain (tevent's `tevent_loop_wait`;
    /// see [`has_events`](Context::has_events)).
    ///
    /// # Errors
    ///
    /// The first error of [`loop_once`](Context::loop_once); in polling mode
    /// that is [`Error::WouldBlock`] as soon as nothing is ready.
    #[track_caller]
    pub fn loop_wait(&self) -> Result<(), Error> {
        while self.has_events() {
            self.loop_once()?;
        }
        log::debug!("loop_wait: out of events");
        Ok(())
    }

    /// Watch `fd` for `flags` (tevent's `tevent_add_fd`). `fd` is anything
    /// that lends its fd (`&UnixStream`, `&OwnedFd`, a `BorrowedFd`, ...);
    /// the event does not own it, and must be dropped before the fd is
    /// closed (see [`FdEvent`]).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the kernel refuses to watch it (`EPERM` for a
    /// regular file with epoll).
    #[track_caller]
    pub fn add_fd<F>(&self, fd: impl AsFd, flags: FdFlags, handler: F) -> Result<FdEvent, Error>
    where
        F: FnMut(&Context, &FdEvent, FdFlags) + 'static,
    {
        FdEvent::add(
            &self.inner,
            fd.as_fd().as_raw_fd(),
            flags,
            Box::new(handler),
        )
    }

    /// [`add_fd`](Context::add_fd) for a raw fd number, as C code has them.
    /// The fd must stay open until the event is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::BadFd`] for a negative fd; [`Error::Io`] if the kernel
    /// refuses to watch it (`EBADF` for a closed fd).
    #[track_caller]
    pub fn add_fd_raw<F>(&self, fd: RawFd, flags: FdFlags, handler: F) -> Result<FdEvent, Error>
    where
        F: FnMut(&Context, &FdEvent, FdFlags) + 'static,
    {
        FdEvent::add(&self.inner, fd, flags, Box::new(handler))
    }

    /// Like [`add_fd`](Context::add_fd), but the event owns `fd` and closes
    /// it when dropped (tevent's `tevent_fd_set_auto_close`). On error the
    /// fd is closed.
    #[track_caller]
    pub fn add_fd_owned<F>(&self, fd: OwnedFd, flags: FdFlags, handler: F) -> Result<FdEvent, Error>
    where
        F: FnMut(&Context, &FdEvent, FdFlags) + 'static,
    {
        let raw = fd.as_raw_fd();
        let fde = FdEvent::add(&self.inner, raw, flags, Box::new(handler))?;
        let _ = fd.into_raw_fd();
        fde.set_auto_close(true);
        Ok(fde)
    }

    /// Add a one-shot timer (tevent's `tevent_add_timer`). See [`Timer`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use tevent::{Context, Deadline};
    ///
    /// let ctx = Context::new()?;
    /// ctx.add_timer(Deadline::after(Duration::from_millis(1)), |_ctx, _te, now| {
    ///     println!("fired at {now:?}");
    /// })
    /// .detach(); // fire and forget
    /// ctx.loop_wait()?;
    /// # Ok::<(), tevent::Error>(())
    /// ```
    #[track_caller]
    pub fn add_timer<F>(&self, deadline: impl Into<Deadline>, handler: F) -> Timer
    where
        F: FnMut(&Context, &Timer, Instant) + 'static,
    {
        Timer::add(
            &self.inner,
            deadline.into(),
            TimerHandler::Boxed(Box::new(handler)),
        )
    }

    /// Create an immediate that is not scheduled yet (tevent's
    /// `tevent_create_immediate`). See [`Immediate`].
    #[track_caller]
    pub fn create_immediate(&self) -> Immediate {
        Immediate::create(&self.inner)
    }

    /// Create an immediate and schedule `handler` on it.
    #[track_caller]
    pub fn schedule_immediate<F>(&self, handler: F) -> Immediate
    where
        F: FnMut(&Context, &Immediate) + 'static,
    {
        let im = Immediate::create(&self.inner);
        im.schedule(handler);
        im
    }

    /// Handle signal `signum` in this context (tevent's `tevent_add_signal`).
    /// See [`SignalEvent`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSignal`] for a number out of range, `SIGKILL` or
    /// `SIGSTOP`; [`Error::Io`] if `sigaction` fails or too many contexts
    /// (64) handle signals at once.
    #[track_caller]
    pub fn add_signal<F>(
        &self,
        signum: i32,
        flags: SignalFlags,
        handler: F,
    ) -> Result<SignalEvent, Error>
    where
        F: FnMut(&Context, &SignalEvent, SignalInfo) + 'static,
    {
        SignalEvent::add(&self.inner, signum, flags, Box::new(handler))
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        let mut d = f.debug_struct("Context");
        if let Ok(b) = inner.backend.try_borrow() {
            d.field("backend", &b.name());
        }
        if let Ok(t) = inner.timers.try_borrow() {
            d.field("timers", &t.len());
        }
        if let Ok(q) = inner.immediates.try_borrow() {
            d.field("immediates", &q.scheduled_count());
        }
        if let Ok(s) = inner.signals.try_borrow() {
            d.field("signals", &s.len());
        }
        if let Ok(fds) = inner.fds.try_borrow() {
            d.field("active_fds", &fds.active_count());
        }
        d.field("nesting", &inner.nesting.get()).finish()
    }
}
