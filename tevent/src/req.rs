//! Asynchronous requests (tevent's `tevent_req`).

use std::any::Any;
use std::cell::{Cell, Ref, RefCell, RefMut};
use std::fmt;
use std::mem::ManuallyDrop;
use std::panic::Location;
use std::rc::{Rc, Weak};

use crate::context::{Context, Inner};
use crate::immediate::{self, PostTarget};
use crate::queue::{self, QueueLink, QueueMember};
use crate::req_pool;
use crate::timer::{Deadline, Timer, TimerHandler, TimerTarget};
use crate::Error;

/// Where a request is in its life (tevent's `enum tevent_req_state`).
///
/// The order matters: a request only moves forward, and a cleanup function
/// runs at most once per state it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReqState {
    /// Created, not finished yet.
    InProgress,
    /// Finished successfully.
    Done,
    /// Finished with an error code ([`Req::error`]).
    UserError,
    /// Its end time passed ([`Req::set_endtime`]).
    TimedOut,
    /// Finished because memory ran out ([`Req::oom`]).
    NoMemory,
    /// Its result was taken ([`Req::recv`], [`Req::received`]) or it was
    /// dropped unfinished: its state is gone.
    Received,
}

impl fmt::Display for ReqState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReqState::InProgress => "IN_PROGRESS",
            ReqState::Done => "DONE",
            ReqState::UserError => "USER_ERROR",
            ReqState::TimedOut => "TIMED_OUT",
            ReqState::NoMemory => "NO_MEMORY",
            ReqState::Received => "RECEIVED",
        })
    }
}

/// Why a request has no result to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReqError {
    /// The producer finished it with [`Req::error`] and this code.
    User(u64),
    /// Its end time passed.
    TimedOut,
    /// It ran out of memory.
    NoMemory,
    /// It has not finished yet (asking for the result now is a bug in the
    /// caller).
    InProgress,
    /// Its result was already taken.
    Received,
}

impl ReqError {
    /// The errno a C caller would get (Samba's `tevent_req_is_unix_error`):
    /// the user code itself, `ETIMEDOUT`, `ENOMEM`, or `EINVAL` for the
    /// caller's mistakes.
    ///
    /// ```
    /// use tevent::ReqError;
    /// assert_eq!(ReqError::User(libc::ECONNRESET as u64).errno(), libc::ECONNRESET);
    /// assert_eq!(ReqError::TimedOut.errno(), libc::ETIMEDOUT);
    /// ```
    pub fn errno(&self) -> i32 {
        match *self {
            ReqError::User(code) => i32::try_from(code).unwrap_or(libc::EINVAL),
            ReqError::TimedOut => libc::ETIMEDOUT,
            ReqError::NoMemory => libc::ENOMEM,
            ReqError::InProgress | ReqError::Received => libc::EINVAL,
        }
    }
}

impl fmt::Display for ReqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReqError::User(code) => match i32::try_from(*code) {
                Ok(errno) => write!(
                    f,
                    "request failed: {} (error {code})",
                    std::io::Error::from_raw_os_error(errno)
                ),
                Err(_) => write!(f, "request failed with error {code:#x}"),
            },
            ReqError::TimedOut => f.write_str("request timed out"),
            ReqError::NoMemory => f.write_str("request ran out of memory"),
            ReqError::InProgress => f.write_str("request has not finished"),
            ReqError::Received => f.write_str("request result was already received"),
        }
    }
}

impl std::error::Error for ReqError {}

impl From<ReqError> for std::io::Error {
    fn from(e: ReqError) -> std::io::Error {
        std::io::Error::from_raw_os_error(e.errno())
    }
}

type Callback<S, T> = Box<dyn FnMut(&Req<S, T>)>;
type CancelFn<S, T> = Box<dyn FnMut(&Req<S, T>) -> bool>;
type CleanupFn<S> = Box<dyn FnMut(&mut S, ReqState)>;
type PrintFn<S, T> = Box<dyn Fn(&Req<S, T>, &mut fmt::Formatter<'_>) -> fmt::Result>;

type Rare<S, T> = Box<RareHooks<S, T>>;

struct RareHooks<S: 'static, T: 'static> {
    cancel_fn: Option<CancelFn<S, T>>,
    print_fn: Option<PrintFn<S, T>>,
}

pub(crate) struct ReqCell<S: 'static, T: 'static> {
    ctx: Weak<Inner>,
    status: Cell<ReqState>,
    error_code: Cell<u64>,
    state: RefCell<Option<S>>,
    result: Cell<Option<T>>,
    callback: Cell<Option<Callback<S, T>>>,
    /// The sequence number of a pending post, 0 if none (see
    /// `ImmediateQueue::post`).
    post_seq: Cell<u64>,
    defer: Cell<bool>,
    /// The callback is running (it is out of its slot meanwhile).
    callback_running: Cell<bool>,
    /// A notice came while the callback ran: it runs again when it returns.
    notify_again: Cell<bool>,
    /// The queue trigger is running (out of its slot meanwhile).
    trigger_running: Cell<bool>,
    /// The queue triggered the request again while its trigger ran.
    trigger_again: Cell<bool>,
    endtime: Cell<Option<Timer>>,
    cleanup_fn: Cell<Option<CleanupFn<S>>>,
    /// The state the cleanup function last ran for (or was set in).
    cleanup_state: Cell<ReqState>,
    cleanup_running: Cell<bool>,
    /// A cleanup function was ever set (skips the work for most requests).
    has_cleanup: Cell<bool>,
    /// A state reached while the cleanup function was running, and the
    /// function set at that moment (if another than the running one).
    cleanup_again: Cell<Option<(ReqState, Option<CleanupFn<S>>)>>,
    /// The hooks few requests set, out of line to keep the cell small.
    /// Emptied by hand in `Drop` (so that dropping an empty one is not a
    /// call), which is why it is never dropped as a field.
    rare: ManuallyDrop<Cell<Option<Rare<S, T>>>>,
    /// What a callback set with [`Req::set_callback_with`] (or
    /// [`Req::set_parent_callback`]) is called with.
    callback_data: Cell<Option<Weak<dyn Any>>>,
    pub(crate) queue_trigger: Cell<Option<Callback<S, T>>>,
    pub(crate) queue_link: RefCell<Option<QueueLink>>,
    /// Raised whenever the request joins or leaves a queue (also when its
    /// entry or queue is dropped): a trigger is re-run and kept only for the
    /// membership it ran for.
    pub(crate) queue_epoch: Cell<u32>,
    created: Cell<&'static Location<'static>>,
    finished: Cell<Option<&'static Location<'static>>>,
    /// Which request the storage holds now: raised when it is freed for
    /// reuse, so that a weak reference to an earlier request (a
    /// [`WeakReq`], a sub-request's parent) no longer reaches it.
    generation: Cell<u64>,
    /// The parent's generation, for a callback set with
    /// [`Req::set_parent_callback`].
    callback_data_gen: Cell<u64>,
    /// The storage is being emptied: its end time and queue place, which
    /// are still registered while trace callbacks of their removal run, do
    /// nothing.
    releasing: Cell<bool>,
}

/// An asynchronous request (tevent's `tevent_req`), with state `S` owned by
/// its producer and a result `T` for its consumer.
///
/// The producer is a `_send` function: it creates the request
/// ([`Req::new`]) with its state, starts the work (events, sub-requests)
/// and returns it; later it finishes it with [`done`](Req::done),
/// [`error`](Req::error), or lets it time out
/// ([`set_endtime`](Req::set_endtime)). The consumer sets a callback
/// ([`set_callback`](Req::set_callback)), and in it takes the result once
/// with a `_recv` function built on [`recv`](Req::recv).
///
/// Rules carried over from tevent:
///
/// - **Completion is never delivered inside `_send`**: a request finished
///   there must be returned with [`post`](Req::post), which delivers the
///   callback from the loop.
/// - Finishing calls the callback at once, and the callback may drop the
///   request or its parent: make `done`/`error` the last thing a handler
///   does, or use [`defer_callback`](Req::defer_callback).
/// - Receiving ends the request: its state (and with it every sub-request,
///   timer and fd event the state owns) is released, and the cleanup
///   function runs with [`ReqState::Received`].
/// - A request finished inside `_send` and posted is no longer
///   [in progress](Req::is_in_progress) although its callback has not run
///   yet: wait for the callback (or use [`poll`](Req::poll)), not for
///   `!is_in_progress()`.
/// - **Dropping an unfinished request cancels it**: its state is dropped,
///   its end time and pending post are removed, and its callback never
///   fires. This is talloc's `talloc_free(req)`.
///
/// `Req` is a handle to shared storage: the handle a callback is given is
/// the same request, and keeps it alive while the callback runs. Handles are
/// not `Clone`; [`downgrade`](Req::downgrade) gives a [`WeakReq`] for
/// callbacks that must reach a parent request without owning it.
///
/// A request costs at most one heap allocation (its storage), and usually
/// none: when the last handle of a request goes, its contents are dropped
/// at once, as a free would, and the context keeps the emptied storage for
/// the next request of the same `S` and `T` (a few dozen at most, storage
/// over 1 KiB is freed; a [`WeakReq`] of the freed request does not reach
/// the next one), so a
/// program that runs requests one after another allocates nothing per
/// request in steady state. Callbacks, cleanup functions and queue
/// triggers that capture nothing are stored without allocating, and a post
/// allocates nothing. The rarely used cancel and
/// print functions take one more allocation, made when the first of them
/// is set.
///
/// # Example: a C `_send`/`_recv` pair, ported
///
/// ```c
/// struct add_state { int sum; };
/// static void add_done(struct tevent_req *subreq);
///
/// struct tevent_req *add_send(TALLOC_CTX *mem_ctx, struct tevent_context *ev, int a, int b)
/// {
///     struct tevent_req *req, *subreq;
///     struct add_state *state;
///
///     req = tevent_req_create(mem_ctx, &state, struct add_state);
///     if (req == NULL) return NULL;
///     state->sum = a + b;
///     subreq = tevent_wakeup_send(state, ev, tevent_timeval_current_ofs(0, 1000));
///     if (tevent_req_nomem(subreq, req)) return tevent_req_post(req, ev);
///     tevent_req_set_callback(subreq, add_done, req);
///     return req;
/// }
///
/// static void add_done(struct tevent_req *subreq)
/// {
///     struct tevent_req *req = tevent_req_callback_data(subreq, struct tevent_req);
///     bool ok = tevent_wakeup_recv(subreq);
///     TALLOC_FREE(subreq);
///     if (!ok) { tevent_req_error(req, EIO); return; }
///     tevent_req_done(req);
/// }
///
/// int add_recv(struct tevent_req *req, int *sum)
/// {
///     struct add_state *state = tevent_req_data(req, struct add_state);
///     int err;
///     if (tevent_req_is_unix_error(req, &err)) return err;
///     *sum = state->sum;
///     tevent_req_received(req);
///     return 0;
/// }
/// ```
///
/// ```
/// use std::time::Duration;
/// use tevent::{wakeup_recv, wakeup_send, Context, Deadline, Req, ReqError};
///
/// struct AddState {
///     sum: i32,
///     subreq: Option<Req<(), ()>>, // owned by the state, as talloc would
/// }
///
/// fn add_send(ctx: &Context, a: i32, b: i32) -> Req<AddState, i32> {
///     let req = Req::new(ctx, AddState { sum: a + b, subreq: None });
///     let subreq = wakeup_send(ctx, Deadline::after(Duration::from_millis(1)));
///     subreq.set_parent_callback(&req, add_done);
///     req.state_mut().subreq = Some(subreq);
///     req
/// }
///
/// fn add_done(subreq: &Req<(), ()>, req: &Req<AddState, i32>) {
///     let ok = wakeup_recv(subreq);
///     req.state_mut().subreq = None; // TALLOC_FREE(subreq)
///     if !ok {
///         req.error(libc::EIO as u64);
///         return;
///     }
///     let sum = req.state().sum;
///     req.done(sum);
/// }
///
/// fn add_recv(req: &Req<AddState, i32>) -> Result<i32, ReqError> {
///     req.recv()
/// }
///
/// let ctx = Context::new()?;
/// let req = add_send(&ctx, 2, 3);
/// req.poll()?; // or set_callback and run the loop
/// assert_eq!(add_recv(&req), Ok(5));
/// # Ok::<(), tevent::Error>(())
/// ```
pub struct Req<S: 'static, T: 'static> {
    /// Dropped by hand in `Drop` (which may keep the storage for the next
    /// request instead).
    cell: ManuallyDrop<Rc<ReqCell<S, T>>>,
}

/// A reference to a [`Req`] that does not keep it alive (for callbacks of
/// sub-requests that must reach their parent).
pub struct WeakReq<S: 'static, T: 'static> {
    cell: Weak<ReqCell<S, T>>,
    /// The request's generation: its storage may hold a later request.
    generation: u64,
}

impl<S: 'static, T: 'static> WeakReq<S, T> {
    /// The request, if it still exists. The returned handle keeps it alive
    /// while held; drop it when done.
    pub fn upgrade(&self) -> Option<Req<S, T>> {
        let cell = self.cell.upgrade()?;
        (cell.generation.get() == self.generation).then(|| Req::from_cell(cell))
    }
}

impl<S: 'static, T: 'static> Clone for WeakReq<S, T> {
    fn clone(&self) -> Self {
        WeakReq {
            cell: self.cell.clone(),
            generation: self.generation,
        }
    }
}

impl<S: 'static, T: 'static> fmt::Debug for WeakReq<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakReq")
            .field("alive", &self.upgrade().is_some())
            .finish()
    }
}

impl<S: 'static, T: 'static> Req<S, T> {
    /// Create a request in progress with its state (tevent's
    /// `tevent_req_create`). The creation place is recorded for
    /// [`Debug`](fmt::Debug).
    #[track_caller]
    pub fn new(ctx: &Context, state: S) -> Req<S, T> {
        if let Some(cell) = ctx.inner().req_pool.take::<ReqCell<S, T>>() {
            cell.reuse(state, Location::caller());
            return Req::from_cell(cell);
        }
        let cell = Rc::new(ReqCell {
            ctx: Rc::downgrade(ctx.inner()),
            status: Cell::new(ReqState::InProgress),
            error_code: Cell::new(0),
            state: RefCell::new(Some(state)),
            result: Cell::new(None),
            callback: Cell::new(None),
            post_seq: Cell::new(0),
            defer: Cell::new(false),
            callback_running: Cell::new(false),
            notify_again: Cell::new(false),
            trigger_running: Cell::new(false),
            trigger_again: Cell::new(false),
            endtime: Cell::new(None),
            cleanup_fn: Cell::new(None),
            cleanup_state: Cell::new(ReqState::InProgress),
            cleanup_running: Cell::new(false),
            has_cleanup: Cell::new(false),
            cleanup_again: Cell::new(None),
            rare: ManuallyDrop::new(Cell::new(None)),
            callback_data: Cell::new(None),
            queue_trigger: Cell::new(None),
            queue_link: RefCell::new(None),
            queue_epoch: Cell::new(0),
            created: Cell::new(Location::caller()),
            finished: Cell::new(None),
            generation: Cell::new(0),
            callback_data_gen: Cell::new(0),
            releasing: Cell::new(false),
        });
        Req::from_cell(cell)
    }

    #[inline]
    fn from_cell(cell: Rc<ReqCell<S, T>>) -> Req<S, T> {
        Req {
            cell: ManuallyDrop::new(cell),
        }
    }

    /// A weak reference to this request.
    pub fn downgrade(&self) -> WeakReq<S, T> {
        WeakReq {
            cell: Rc::downgrade(&self.cell),
            generation: self.cell.generation.get(),
        }
    }

    /// The context the request was created on, if it still exists.
    pub fn context(&self) -> Option<Context> {
        self.cell.ctx.upgrade().map(Context::from_inner)
    }

    /// Set the function called when the request finishes (tevent's
    /// `tevent_req_set_callback`). It is also called by
    /// [`notify_callback`](Req::notify_callback) for progress notices.
    #[inline]
    pub fn set_callback<F: FnMut(&Req<S, T>) + 'static>(&self, callback: F) {
        // Both slots are set before the old contents are dropped: their
        // drops run user code, which may set a callback again.
        let old_callback = self.cell.callback.replace(Some(Box::new(callback)));
        // Data set for an earlier callback is not needed any more.
        if let Some(data) = self.cell.callback_data.take() {
            forget_callback_data(data);
        }
        drop(old_callback);
    }

    /// Set the callback of a sub-request that reports to its parent: the C
    /// idiom `tevent_req_set_callback(subreq, fn, req)`, ported as
    /// `subreq.set_parent_callback(&req, fn)`. `callback` runs with this
    /// request and the parent when this one finishes (or sends a progress
    /// notice), unless the parent is gone by then: the parent is not kept
    /// alive by its sub-request.
    ///
    /// A named function (or a closure that captures nothing) is stored
    /// without allocating, where [`set_callback`](Req::set_callback) with a
    /// closure capturing a [`WeakReq`] of the parent allocates once (so does
    /// a function pointer held in a variable). A later `set_callback`
    /// forgets the parent.
    ///
    /// ```
    /// use tevent::{wakeup_recv, wakeup_send, Context, Deadline, Req};
    ///
    /// /// C: `static void sleep_done(struct tevent_req *subreq)`, whose
    /// /// private data is the parent request.
    /// fn sleep_done(subreq: &Req<(), ()>, req: &Req<u32, u32>) {
    ///     if !wakeup_recv(subreq) {
    ///         req.error(libc::EIO as u64);
    ///         return;
    ///     }
    ///     let value = *req.state();
    ///     req.done(value * 2);
    /// }
    ///
    /// let ctx = Context::new()?;
    /// let req: Req<u32, u32> = Req::new(&ctx, 21);
    /// let subreq = wakeup_send(&ctx, Deadline::Asap);
    /// subreq.set_parent_callback(&req, sleep_done);
    /// req.poll()?;
    /// assert_eq!(req.recv(), Ok(42));
    /// # drop(subreq);
    /// # Ok::<(), tevent::Error>(())
    /// ```
    pub fn set_parent_callback<PS, PT, F>(&self, parent: &Req<PS, PT>, mut callback: F)
    where
        PS: 'static,
        PT: 'static,
        F: FnMut(&Req<S, T>, &Req<PS, PT>) + 'static,
    {
        self.set_weak_callback(
            Rc::downgrade(&parent.cell),
            move |req, cell: Rc<ReqCell<PS, PT>>| {
                // The parent's storage may hold a later request by now.
                if cell.generation.get() == req.cell.callback_data_gen.get() {
                    callback(req, &Req::from_cell(cell));
                }
            },
            parent.cell.generation.get(),
        );
    }

    /// Set the callback with the data it works on, as C's
    /// `tevent_req_set_callback(req, fn, private_data)`: `callback` runs
    /// with this request and `data` when the request finishes (or sends a
    /// progress notice), unless `data` is gone by then. The request holds
    /// `data` weakly, so a connection or a client object that owns the
    /// request does not keep itself alive through it.
    ///
    /// A named function (or a closure that captures nothing) is stored
    /// without allocating, where a closure capturing a `Weak` allocates
    /// once per request. A later [`set_callback`](Req::set_callback)
    /// forgets `data`.
    ///
    /// ```
    /// use std::cell::{Cell, RefCell};
    /// use std::rc::Rc;
    /// use tevent::{wakeup_recv, wakeup_send, Context, Deadline, Req};
    ///
    /// /// C: `struct client`, the private data of its requests' callbacks.
    /// struct Client {
    ///     ticks: Cell<u32>,
    ///     timer: RefCell<Option<Req<(), ()>>>,
    /// }
    ///
    /// /// C: `static void client_tick_done(struct tevent_req *subreq)`.
    /// fn client_tick_done(subreq: &Req<(), ()>, client: &Rc<Client>) {
    ///     if wakeup_recv(subreq) {
    ///         client.ticks.set(client.ticks.get() + 1);
    ///     }
    /// }
    ///
    /// let ctx = Context::new()?;
    /// let client = Rc::new(Client { ticks: Cell::new(0), timer: RefCell::new(None) });
    /// let subreq = wakeup_send(&ctx, Deadline::Asap);
    /// subreq.set_callback_with(&client, client_tick_done);
    /// *client.timer.borrow_mut() = Some(subreq); // the client owns its request
    /// ctx.loop_once()?;
    /// assert_eq!(client.ticks.get(), 1);
    /// # Ok::<(), tevent::Error>(())
    /// ```
    pub fn set_callback_with<D, F>(&self, data: &Rc<D>, callback: F)
    where
        D: 'static,
        F: FnMut(&Req<S, T>, &Rc<D>) + 'static,
    {
        let mut callback = callback;
        self.set_weak_callback(
            Rc::downgrade(data),
            move |req, data: Rc<D>| callback(req, &data),
            0,
        );
    }

    /// Store `callback` with `weak` as the data it is called with (held in
    /// the cell, so that a callback capturing nothing allocates nothing),
    /// and `generation`, the data's if it is a request.
    fn set_weak_callback<D, F>(&self, weak: Weak<D>, mut callback: F, generation: u64)
    where
        D: 'static,
        F: FnMut(&Req<S, T>, Rc<D>) + 'static,
    {
        let dispatch = move |req: &Req<S, T>| {
            let weak = req.cell.callback_data.take();
            let data = weak.as_ref().and_then(Weak::upgrade);
            req.cell.callback_data.set(weak);
            let Some(data) = data else {
                return; // the data is gone
            };
            match data.downcast::<D>() {
                Ok(data) => callback(req, data),
                // Cannot happen: the data is always set with its callback.
                Err(_) => debug_assert!(false, "callback data of another type"),
            }
        };
        let weak: Weak<dyn Any> = weak;
        // Both are in place before the old ones are dropped: their drops run
        // user code, which may set a callback again.
        let old_callback = self.cell.callback.replace(Some(Box::new(dispatch)));
        let old_data = self.cell.callback_data.replace(Some(weak));
        self.cell.callback_data_gen.set(generation);
        drop(old_callback);
        drop(old_data);
    }

    /// The request's state (tevent's `tevent_req_data`).
    ///
    /// # Panics
    ///
    /// If the request was received (its state is gone; see
    /// [`try_state`](Req::try_state)) or the state is mutably borrowed.
    pub fn state(&self) -> Ref<'_, S> {
        Ref::map(self.cell.state.borrow(), |s| {
            s.as_ref()
                .expect("request state used after the request was received")
        })
    }

    /// The request's state, mutably.
    ///
    /// Do not hold the borrow across calls that may run callbacks
    /// ([`done`](Req::done), [`error`](Req::error), dropping
    /// sub-requests): a callback that borrows the state again would panic.
    ///
    /// # Panics
    ///
    /// If the request was received or the state is already borrowed.
    pub fn state_mut(&self) -> RefMut<'_, S> {
        RefMut::map(self.cell.state.borrow_mut(), |s| {
            s.as_mut()
                .expect("request state used after the request was received")
        })
    }

    /// The state, or `None` once the request was received (or while it is
    /// mutably borrowed).
    pub fn try_state(&self) -> Option<Ref<'_, S>> {
        let r = self.cell.state.try_borrow().ok()?;
        Ref::filter_map(r, |s| s.as_ref()).ok()
    }

    /// Finish the request successfully with `value` (tevent's
    /// `tevent_req_done`) and call the callback.
    ///
    /// Returns `false`, and does nothing, if the request had already
    /// finished (tevent would run the callback a second time).
    #[track_caller]
    pub fn done(&self, value: T) -> bool {
        if !self.is_in_progress() {
            warn_finished(None, Location::caller(), self.status());
            return false;
        }
        self.cell.result.set(Some(value));
        self.finish(ReqState::Done, Location::caller());
        true
    }

    /// Finish the request with an error code (tevent's `tevent_req_error`)
    /// and call the callback. Codes are usually errnos.
    ///
    /// Returns whether `code` is an error: `0` means "no error" and is
    /// refused (nothing happens), as in C, so the C idiom
    /// `if (tevent_req_error(req, ret)) return;` ports as
    /// `if req.error(ret) { return; }`. A request that had already finished
    /// is left alone (with a warning in the log).
    #[track_caller]
    pub fn error(&self, code: u64) -> bool {
        if code == 0 {
            return false;
        }
        if !self.is_in_progress() {
            warn_finished(Some(code), Location::caller(), self.status());
            return true;
        }
        self.cell.error_code.set(code);
        self.finish(ReqState::UserError, Location::caller());
        true
    }

    /// Finish the request as out of memory (tevent's `tevent_req_oom`), for
    /// producers that detect allocation failure themselves.
    #[track_caller]
    pub fn oom(&self) {
        if self.is_in_progress() {
            self.finish(ReqState::NoMemory, Location::caller());
        }
    }

    fn finish(&self, state: ReqState, at: &'static Location<'static>) {
        drop(self.cell.endtime.take());
        self.cell.status.set(state);
        self.cell.finished.set(Some(at));
        if log::log_enabled!(log::Level::Trace) {
            trace_finish(self.cell.created.get(), state, at);
        }
        self.run_cleanup(state);
        self.notify_callback();
    }

    #[inline]
    fn run_cleanup(&self, state: ReqState) {
        let cell = &*self.cell;
        if cell.cleanup_state.get() >= state {
            return;
        }
        cell.cleanup_state.set(state);
        if cell.has_cleanup.get() {
            self.run_cleanup_fn(state);
        }
    }

    #[cold]
    fn run_cleanup_fn(&self, state: ReqState) {
        let cell = &*self.cell;
        if cell.cleanup_running.get() {
            // Reached from inside the cleanup function (it received or
            // finished its request): the state is out with it. The function
            // set now (another one, if it set one, else itself) gets this
            // state when it returns, where tevent would call it nested.
            let set_now = cell.cleanup_fn.take();
            let earlier = cell.cleanup_again.take().and_then(|(_, f)| f);
            cell.cleanup_again.set(Some((state, set_now.or(earlier))));
            return;
        }
        let Some(f) = cell.cleanup_fn.take() else {
            return;
        };
        // The state is taken out while the cleanup function runs, so that
        // the function may receive or drop the request itself.
        let mut taken = match cell.state.try_borrow_mut() {
            Ok(mut s) => s.take(),
            Err(_) => {
                log::warn!(
                    "request created at {}: cleanup for {state} skipped, its state is borrowed \
                     (do not hold Req::state() across done/error)",
                    cell.created.get()
                );
                cell.cleanup_fn.set(Some(f));
                return;
            }
        };
        // Puts the state and the function back when the function returns,
        // and also when it panics (the request stays usable then).
        let mut run = CleanupRun {
            cell,
            taken: taken.take(),
            f: Some(f),
        };
        cell.cleanup_running.set(true);
        let mut next = Some(state);
        while let Some(st) = next {
            if let (Some(s), Some(f)) = (run.taken.as_mut(), run.f.as_mut()) {
                f(s, st);
            }
            next = match cell.cleanup_again.take() {
                Some((st, set_then)) => {
                    if let Some(g) = set_then {
                        drop(run.f.replace(g));
                    }
                    Some(st)
                }
                None => None,
            };
        }
        drop(run);
    }

    /// Deliver the callback from the loop instead of now (tevent's
    /// `tevent_req_post`): for a request finished inside its `_send`
    /// function. Returns the request, so `_send` can end with
    /// `return req.post();`.
    #[track_caller]
    pub fn post(self) -> Self {
        self.schedule_trigger();
        self
    }

    fn schedule_trigger(&self) {
        let Some(inner) = self.cell.ctx.upgrade() else {
            return;
        };
        let weak: Weak<ReqCell<S, T>> = Rc::downgrade(&self.cell);
        immediate::post_target(&inner, weak, &self.cell.post_seq, self.cell.created.get());
    }

    /// Make the next callback go through the loop (tevent's
    /// `tevent_req_defer_callback`; one-shot). Use it when one function
    /// finishes several requests, so that no callback runs while the
    /// function still works on the others.
    pub fn defer_callback(&self) {
        self.cell.defer.set(true);
    }

    /// Call the callback now (tevent's `tevent_req_notify_callback`); while
    /// the request is in progress this is a progress notice. Honours
    /// [`defer_callback`](Req::defer_callback). Nothing happens if no
    /// callback is set.
    ///
    /// A notice that comes while the callback runs (the request finished
    /// from inside its own progress callback, or in a nested loop the
    /// callback runs) is not lost: the callback runs again as soon as it
    /// returns, where tevent would call it nested.
    #[inline(always)]
    pub fn notify_callback(&self) {
        if self.cell.defer.replace(false) {
            self.schedule_trigger();
            return;
        }
        match self.cell.callback.take() {
            // No clone of the handle is needed to keep the request alive
            // while the callback runs: `self` is borrowed for that long.
            Some(callback) => self.run_callback(callback),
            // A notice for a callback that is running (the request finished
            // from inside its own progress callback, or in a nested loop):
            // tevent would call it again, nested; it runs again when it
            // returns.
            None if self.cell.callback_running.get() => self.cell.notify_again.set(true),
            None => {}
        }
    }

    #[inline]
    fn run_callback(&self, callback: Callback<S, T>) {
        let cell = &*self.cell;
        let mut run = Running::new(
            &cell.callback_running,
            &cell.notify_again,
            &cell.callback,
            callback,
            None,
        );
        run.call(self);
        // A notice that came while it ran goes to this callback, the one
        // tevent would have called nested, even if it set another since.
        while cell.notify_again.replace(false) {
            run.call(self);
        }
        let callback = run.done();
        // Keep a callback the callback set for itself.
        if let Some(replaced) = cell.callback.take() {
            cell.callback.set(Some(replaced));
            drop(callback);
        } else {
            cell.callback.set(Some(callback));
        }
    }

    /// Whether the request has not finished.
    pub fn is_in_progress(&self) -> bool {
        self.cell.status.get() == ReqState::InProgress
    }

    /// Where the request is in its life.
    pub fn status(&self) -> ReqState {
        self.cell.status.get()
    }

    /// Why the request did not succeed, if it did not (tevent's
    /// `tevent_req_is_error`): `None` only for a request that is done and
    /// not yet received. As in tevent, an unfinished request reports
    /// [`ReqError::InProgress`].
    pub fn is_error(&self) -> Option<ReqError> {
        match self.cell.status.get() {
            ReqState::Done => None,
            ReqState::InProgress => Some(ReqError::InProgress),
            ReqState::UserError => Some(ReqError::User(self.cell.error_code.get())),
            ReqState::TimedOut => Some(ReqError::TimedOut),
            ReqState::NoMemory => Some(ReqError::NoMemory),
            ReqState::Received => Some(ReqError::Received),
        }
    }

    /// Take the result, once, and end the request (the body of a `_recv`
    /// function): on success and on error the request is then
    /// [received](Req::received).
    ///
    /// # Errors
    ///
    /// The request's error; [`ReqError::InProgress`] if it has not finished
    /// (nothing changes then); [`ReqError::Received`] on a second call.
    pub fn recv(&self) -> Result<T, ReqError> {
        if let Some(err) = self.is_error() {
            if !matches!(err, ReqError::InProgress | ReqError::Received) {
                self.received();
            }
            return Err(err);
        }
        let value = self.cell.result.take();
        self.received();
        value.ok_or(ReqError::Received)
    }

    /// End the request without taking a result (tevent's
    /// `tevent_req_received`): cancel a pending post and the end time,
    /// forget the cancel and print functions, run the cleanup function with
    /// [`ReqState::Received`], drop the state (and what it owns), and leave
    /// its queue unless it holds its place until dropped
    /// ([`Queue::wait_send`](crate::Queue::wait_send)).
    pub fn received(&self) {
        let cell = &*self.cell;
        if cell.status.get() == ReqState::Received {
            return;
        }
        cell.unhook(false);
        cell.status.set(ReqState::Received);
        self.run_cleanup(ReqState::Received);
        // A caller holding a borrow of the state gets it dropped with the
        // request instead.
        let state = cell.state.try_borrow_mut().ok().and_then(|mut s| s.take());
        drop(state);
        drop(cell.result.take());
    }

    /// Finish the request as [`ReqState::TimedOut`] when `deadline` passes
    /// (tevent's `tevent_req_set_endtime`), replacing an earlier end time.
    /// Does nothing on a finished request.
    #[track_caller]
    pub fn set_endtime(&self, deadline: impl Into<Deadline>) {
        if !self.is_in_progress() {
            return;
        }
        let Some(inner) = self.cell.ctx.upgrade() else {
            return;
        };
        let weak: Weak<ReqCell<S, T>> = Rc::downgrade(&self.cell);
        let timer = Timer::add(&inner, deadline.into(), TimerHandler::Target(weak));
        let old = self.cell.endtime.replace(Some(timer));
        drop(old);
    }

    /// Remove the end time (tevent's `tevent_req_reset_endtime`).
    pub fn reset_endtime(&self) {
        let old = self.cell.endtime.take();
        drop(old);
    }

    /// Set the function that [`cancel`](Req::cancel) calls (tevent's
    /// `tevent_req_set_cancel_fn`). It returns whether a cancel was started;
    /// the request then still finishes through its normal path (usually
    /// with an error such as `ECANCELED`).
    pub fn set_cancel_fn<F: FnMut(&Req<S, T>) -> bool + 'static>(&self, cancel_fn: F) {
        let old = self
            .cell
            .with_rare(|rare| rare.cancel_fn.replace(Box::new(cancel_fn)));
        drop(old);
    }

    /// Ask the producer to cancel (tevent's `tevent_req_cancel`). Returns
    /// `false` if no cancel function is set (or the request is received),
    /// else what the cancel function returned.
    pub fn cancel(&self) -> bool {
        let Some(mut f) = self.cell.with_rare(|rare| rare.cancel_fn.take()) else {
            return false;
        };
        let started = f(self);
        if self.cell.status.get() != ReqState::Received {
            // Unless the cancel function set a new one meanwhile.
            self.cell.with_rare(|rare| {
                rare.cancel_fn.get_or_insert(f);
            });
        }
        started
    }

    /// Set a function that runs when the request finishes (before the
    /// callback) and again when it is received or dropped (tevent's
    /// `tevent_req_set_cleanup_fn`): at most once per state, and only for
    /// states after the one the request is in now. A request dropped
    /// unfinished gets only [`ReqState::Received`]. It is given the state,
    /// so it can detach the request from shared structures.
    pub fn set_cleanup_fn<F: FnMut(&mut S, ReqState) + 'static>(&self, cleanup: F) {
        self.cell.cleanup_state.set(self.cell.status.get());
        self.cell.has_cleanup.set(true);
        drop(self.cell.cleanup_fn.replace(Some(Box::new(cleanup))));
    }

    /// Set how the request describes itself in its `Debug` output (tevent's
    /// `tevent_req_set_print_fn`).
    pub fn set_print_fn<F>(&self, print: F)
    where
        F: Fn(&Req<S, T>, &mut fmt::Formatter<'_>) -> fmt::Result + 'static,
    {
        let old = self
            .cell
            .with_rare(|rare| rare.print_fn.replace(Box::new(print)));
        drop(old);
    }

    /// Run the loop until the request finishes (tevent's `tevent_req_poll`):
    /// the way to call an async function synchronously.
    ///
    /// Called from inside a handler this is a nested loop: it fails with
    /// [`Error::Nested`] unless [`Context::allow_nesting`] was called, and
    /// even then other events run inside it. Use it on a context of your own.
    ///
    /// # Errors
    ///
    /// The first error of [`Context::loop_once`], or [`Error::ContextGone`].
    #[track_caller]
    pub fn poll(&self) -> Result<(), Error> {
        let ctx = self.context().ok_or(Error::ContextGone)?;
        while self.is_in_progress() {
            ctx.loop_once()?;
        }
        Ok(())
    }

    /// Whether this request and `other` are the same.
    pub fn ptr_eq(&self, other: &Req<S, T>) -> bool {
        Rc::ptr_eq(&self.cell, &other.cell)
    }

    pub(crate) fn cell(&self) -> &Rc<ReqCell<S, T>> {
        &self.cell
    }

    pub(crate) fn has_callback(&self) -> bool {
        if self.cell.callback_running.get() {
            return true;
        }
        let cb = self.cell.callback.take();
        let has = cb.is_some();
        self.cell.callback.set(cb);
        has
    }
}

impl<S: 'static, T: 'static> PostTarget for ReqCell<S, T> {
    fn post_seq(&self) -> &Cell<u64> {
        &self.post_seq
    }

    fn run_post(self: Rc<Self>, ctx: &Context) {
        // tevent re-runs the finish with the current state: the cleanup
        // function does not run again, the callback does.
        let inner = ctx.inner();
        if !inner.tracer.events_on() {
            Req::from_cell(self).notify_callback();
            return;
        }
        let req = Req::from_cell(self);
        immediate::run_traced_post(inner, &req.cell.post_seq, req.cell.created.get(), || {
            req.notify_callback()
        });
    }

    fn post_created(&self) -> &'static Location<'static> {
        self.created.get()
    }
}

impl<S: 'static, T: 'static> TimerTarget for ReqCell<S, T> {
    fn expired(self: Rc<Self>, _ctx: &Context) {
        if self.releasing.get() {
            return; // freed meanwhile (a trace callback ran the loop)
        }
        let req = Req::from_cell(self);
        if req.is_in_progress() {
            req.finish(ReqState::TimedOut, req.cell.created.get());
        }
    }
}

impl<S: 'static, T: 'static> QueueMember for ReqCell<S, T> {
    fn left(&self) {
        self.queue_epoch.set(self.queue_epoch.get().wrapping_add(1));
    }

    fn trigger(self: Rc<Self>) {
        if self.releasing.get() {
            return; // freed meanwhile (a trace callback ran the loop)
        }
        let Some(trigger) = self.queue_trigger.take() else {
            if self.trigger_running.get() {
                // Triggered again while the trigger runs (stopped, untriggered
                // and started in a nested loop): it runs again when it
                // returns, where tevent would call it nested.
                self.trigger_again.set(true);
            }
            return;
        };
        let req = Req::from_cell(self);
        let cell = &*req.cell;
        // The queue membership the trigger runs for: a trigger whose
        // request left its queue (or moved to another) is not run or kept
        // again.
        let epoch = cell.queue_epoch.get();
        let mut run = Running::new(
            &cell.trigger_running,
            &cell.trigger_again,
            &cell.queue_trigger,
            trigger,
            Some((&cell.queue_epoch, epoch)),
        );
        run.call(&req);
        // Triggered again meanwhile: tevent would have called it nested,
        // while the request was in this entry.
        while cell.trigger_again.replace(false)
            && cell.status.get() != ReqState::Received
            && cell.queue_epoch.get() == epoch
        {
            run.call(&req);
        }
        let trigger = run.done();
        let replaced = cell.queue_trigger.take();
        if replaced.is_some() || cell.queue_epoch.get() != epoch {
            cell.queue_trigger.set(replaced);
            drop(trigger);
        } else {
            cell.queue_trigger.set(Some(trigger));
        }
    }
}

impl<S: 'static, T: 'static> ReqCell<S, T> {
    /// Work on the rare hooks (created on first use). `f` must not run user
    /// code: the hooks are out of the cell meanwhile.
    fn with_rare<R>(&self, f: impl FnOnce(&mut RareHooks<S, T>) -> R) -> R {
        let mut rare = self.rare.take().unwrap_or_else(|| {
            Box::new(RareHooks {
                cancel_fn: None,
                print_fn: None,
            })
        });
        let r = f(&mut rare);
        self.rare.set(Some(rare));
        r
    }

    fn take_print_fn(&self) -> Option<PrintFn<S, T>> {
        let mut rare = self.rare.take()?;
        let print = rare.print_fn.take();
        self.rare.set(Some(rare));
        print
    }

    #[inline]
    fn cancel_post(&self) {
        immediate::cancel_target_post(&self.ctx, &self.post_seq, self.created.get());
    }
}

impl<S: 'static, T: 'static> Drop for Req<S, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: `self.cell` is not used again: this is the handle's drop.
        let cell = unsafe { ManuallyDrop::take(&mut self.cell) };
        // The last handle: nothing else can use the request any more (weak
        // references, such as a `WeakReq` or a stale post, check the
        // generation or the post number and find it gone).
        if size_of::<ReqCell<S, T>>() <= req_pool::MAX_CELL_BYTES && Rc::strong_count(&cell) == 1 {
            Self::recycle(cell);
        }
    }
}

impl<S: 'static, T: 'static> Req<S, T> {
    /// Free the contents of a request whose last handle goes and give its
    /// storage to its context's pool (or free it, when the pool does not
    /// want it or the context is gone).
    #[inline(never)]
    fn recycle(cell: Rc<ReqCell<S, T>>) {
        // The context is not held while the contents are dropped: if they
        // hold its last handle, it goes at that moment, as with a free.
        let wanted = cell
            .ctx
            .upgrade()
            .is_some_and(|inner| inner.req_pool.wants::<ReqCell<S, T>>());
        if !wanted {
            return;
        }
        // Everything a free would drop is dropped now (user code may run:
        // cleanup functions, the state's and callbacks' drops). A borrow of
        // the state leaked with `mem::forget` would outlive the request in
        // its storage: `release` refuses it, and the storage is freed.
        if !cell.release() {
            return;
        }
        if let Some(inner) = cell.ctx.upgrade() {
            inner.req_pool.give(cell);
        }
    }
}

impl<S: 'static, T: 'static> ReqCell<S, T> {
    /// Free the request's contents, as dropping the storage would, and
    /// leave it as a new cell's before [`reuse`](ReqCell::reuse). Returns
    /// `false` if that could not be done (a borrow leaked meanwhile): the
    /// storage must then be freed.
    fn release(&self) -> bool {
        // First of all: no weak reference reaches this request any more,
        // and its end time and queue place do nothing until they are gone.
        self.generation.set(self.generation.get().wrapping_add(1));
        self.releasing.set(true);
        self.teardown();
        // Named one by one (no `..`), so that a new field cannot be
        // forgotten here; dropped in declaration order, as a free would.
        let ReqCell {
            ctx: _,
            status: _,
            error_code: _,
            state,
            result,
            callback,
            post_seq: _,
            defer: _,
            callback_running: _,
            notify_again: _,
            trigger_running: _,
            trigger_again: _,
            endtime,
            cleanup_fn,
            cleanup_state: _,
            cleanup_running: _,
            has_cleanup: _,
            cleanup_again: _,
            rare: _, // emptied by `teardown`
            callback_data,
            queue_trigger,
            queue_link,
            queue_epoch: _,
            created: _,
            finished: _,
            generation: _,
            callback_data_gen: _,
            releasing,
        } = self;
        let Ok(mut state) = state.try_borrow_mut() else {
            return false;
        };
        let old_state = state.take();
        drop(state);
        drop(old_state);
        drop(result.take());
        drop(callback.take());
        drop(endtime.take());
        drop(cleanup_fn.take());
        drop(callback_data.take());
        drop(queue_trigger.take());
        let Ok(mut link) = queue_link.try_borrow_mut() else {
            return false;
        };
        let old_link = link.take();
        drop(link);
        drop(old_link);
        releasing.set(false);
        true
    }

    /// Make released storage a new request in progress.
    #[inline]
    fn reuse(&self, state: S, created: &'static Location<'static>) {
        *self.state.borrow_mut() = Some(state);
        self.status.set(ReqState::InProgress);
        self.error_code.set(0);
        self.post_seq.set(0);
        self.defer.set(false);
        self.callback_running.set(false);
        self.notify_again.set(false);
        self.trigger_running.set(false);
        self.trigger_again.set(false);
        self.cleanup_state.set(ReqState::InProgress);
        self.cleanup_running.set(false);
        self.has_cleanup.set(false);
        // `cleanup_again` is empty: it is only set while a cleanup function
        // runs (and emptied when it returns or panics), which a freed
        // request's cannot be.
        debug_assert!({
            let pending = self.cleanup_again.take();
            let empty = pending.is_none();
            self.cleanup_again.set(pending);
            empty
        });
        self.created.set(created);
        self.finished.set(None);
        self.callback_data_gen.set(0);
    }

    /// What receiving and freeing a request both do first: its pending
    /// post, end time and queue place go (the place stays for a request
    /// holding it until dropped, unless `dropping`), before any user code
    /// runs, so that neither the loop nor the queue can reach it; then the
    /// cancel and print functions are dropped.
    #[inline(always)]
    fn unhook(&self, dropping: bool) {
        self.cancel_post();
        drop(self.endtime.take());
        queue::leave(&self.queue_link, &self.queue_epoch, dropping);
        if let Some(rare) = self.rare.take() {
            drop(rare);
        }
    }

    /// What freeing a request does before its fields are dropped: its
    /// pending post, end time and queue place go, and a request that was
    /// not received gets its cleanup function called with `Received`.
    fn teardown(&self) {
        // Also a received request that held its queue place until now
        // (`Queue::wait_send`).
        self.unhook(true);
        if self.status.get() == ReqState::Received {
            return;
        }
        // Dropped unfinished (or finished but not received): as
        // `tevent_req_received` from talloc's destructor.
        if self.cleanup_state.get() < ReqState::Received {
            self.cleanup_state.set(ReqState::Received);
            if let Some(mut f) = self.cleanup_fn.take() {
                if let Ok(mut state) = self.state.try_borrow_mut() {
                    if let Some(state) = state.as_mut() {
                        f(state, ReqState::Received);
                    }
                }
            }
        }
        self.status.set(ReqState::Received);
    }
}

impl<S: 'static, T: 'static> Drop for ReqCell<S, T> {
    fn drop(&mut self) {
        self.teardown();
    }
}

impl<S: 'static, T: 'static> fmt::Debug for Req<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(print) = self.cell.take_print_fn() {
            let result = print(self, f);
            if self.status() != ReqState::Received {
                self.cell.with_rare(|rare| {
                    rare.print_fn.get_or_insert(print);
                });
            }
            return result;
        }
        let mut d = f.debug_struct("Req");
        d.field("state", &self.cell.status.get());
        if self.cell.status.get() == ReqState::UserError {
            d.field("error", &self.cell.error_code.get());
        }
        d.field("created", &format_args!("{}", self.cell.created.get()));
        if let Some(at) = self.cell.finished.get() {
            d.field("finished", &format_args!("{at}"));
        }
        d.field("endtime", &{
            let timer = self.cell.endtime.take();
            let pending = timer.is_some();
            self.cell.endtime.set(timer);
            pending
        });
        d.finish()
    }
}

/// A cleanup function at work: its request's state and the function are
/// out of the cell meanwhile, and go back when it is dropped.
struct CleanupRun<'a, S: 'static, T: 'static> {
    cell: &'a ReqCell<S, T>,
    taken: Option<S>,
    f: Option<CleanupFn<S>>,
}

impl<S: 'static, T: 'static> Drop for CleanupRun<'_, S, T> {
    fn drop(&mut self) {
        let cell = self.cell;
        cell.cleanup_running.set(false);
        cell.cleanup_again.set(None);
        let taken = self.taken.take();
        if cell.status.get() != ReqState::Received {
            if let Ok(mut state) = cell.state.try_borrow_mut() {
                *state = taken;
            }
        } else {
            drop(taken);
        }
        // The function that stays is in its slot before the other one is
        // dropped: that drop runs user code, which may reach a state.
        match cell.cleanup_fn.take() {
            Some(replaced) => {
                cell.cleanup_fn.set(Some(replaced));
                drop(self.f.take());
            }
            None => cell.cleanup_fn.set(self.f.take()),
        }
    }
}

/// A callback or queue trigger at work: it is out of its slot and marked
/// running, and what was asked for meanwhile is a flag of this run (the
/// flags of a run it is nested in are kept aside and restored). When the
/// function panics, the flags are restored too and the function goes back
/// to its slot (unless another was set, or a trigger's request moved to
/// another queue entry), so the request stays usable.
struct Running<'a, S: 'static, T: 'static> {
    running: &'a Cell<bool>,
    was_running: bool,
    again: &'a Cell<bool>,
    was_again: bool,
    slot: &'a Cell<Option<Callback<S, T>>>,
    f: Option<Callback<S, T>>,
    /// For a trigger: its request's queue epoch, and its value at the start.
    entry: Option<(&'a Cell<u32>, u32)>,
}

impl<'a, S: 'static, T: 'static> Running<'a, S, T> {
    #[inline]
    fn new(
        running: &'a Cell<bool>,
        again: &'a Cell<bool>,
        slot: &'a Cell<Option<Callback<S, T>>>,
        f: Callback<S, T>,
        entry: Option<(&'a Cell<u32>, u32)>,
    ) -> Self {
        Running {
            was_running: running.replace(true),
            running,
            was_again: again.replace(false),
            again,
            slot,
            f: Some(f),
            entry,
        }
    }

    #[inline]
    fn call(&mut self, req: &Req<S, T>) {
        if let Some(f) = self.f.as_mut() {
            f(req);
        }
    }

    /// The run returned: restore the flags and hand the function back.
    #[inline]
    fn done(mut self) -> Callback<S, T> {
        self.running.set(self.was_running);
        self.again.set(self.was_again);
        let f = self.f.take();
        std::mem::forget(self);
        // Always there: only `done` takes it.
        f.unwrap_or_else(|| Box::new(|_| {}))
    }
}

/// Reached only when the function panicked.
impl<S: 'static, T: 'static> Drop for Running<'_, S, T> {
    fn drop(&mut self) {
        self.running.set(self.was_running);
        self.again.set(self.was_again);
        let moved = self
            .entry
            .is_some_and(|(epoch, at_start)| epoch.get() != at_start);
        let replaced = self.slot.take();
        if replaced.is_some() || moved {
            self.slot.set(replaced);
        } else {
            self.slot.set(self.f.take());
        }
    }
}

/// Out of line: few callbacks replace a callback with data.
#[cold]
#[inline(never)]
fn forget_callback_data(data: Weak<dyn Any>) {
    drop(data);
}

/// Kept out of line: formatting a log record needs a large stack frame,
/// which the hot paths would pay for on every call.
#[cold]
#[inline(never)]
fn warn_finished(error: Option<u64>, at: &'static Location<'static>, status: ReqState) {
    match error {
        None => log::warn!("{at}: done() on a request already {status} (ignored)"),
        Some(code) => log::warn!("{at}: error({code}) on a request already {status} (ignored)"),
    }
}

#[cold]
#[inline(never)]
fn trace_finish(
    created: &'static Location<'static>,
    state: ReqState,
    at: &'static Location<'static>,
) {
    log::trace!("request created at {created} finished {state} at {at}");
}

/// A request that finishes at `deadline` (tevent's `tevent_wakeup_send`).
/// Take the outcome with [`wakeup_recv`].
///
/// ```
/// use std::time::Duration;
/// let ctx = tevent::Context::new()?;
/// let req = tevent::wakeup_send(&ctx, tevent::Deadline::after(Duration::from_millis(1)));
/// req.poll()?;
/// assert!(tevent::wakeup_recv(&req));
/// # Ok::<(), tevent::Error>(())
/// ```
#[track_caller]
pub fn wakeup_send(ctx: &Context, deadline: impl Into<Deadline>) -> Req<(), ()> {
    let req = Req::new(ctx, ());
    req.set_endtime(deadline);
    req
}

/// Whether the wakeup happened (tevent's `tevent_wakeup_recv`: the request
/// reached its deadline). Receives the request.
pub fn wakeup_recv(req: &Req<(), ()>) -> bool {
    let woke = req.status() == ReqState::TimedOut;
    req.received();
    woke
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_parent_callback_releases_the_parent() {
        let ctx = Context::new().unwrap();
        let parent: Req<(), ()> = Req::new(&ctx, ());
        let child: Req<(), ()> = Req::new(&ctx, ());
        child.set_parent_callback(&parent, |_, _| {});
        assert_eq!(Rc::weak_count(&parent.cell), 1);
        child.set_callback(|_| {});
        assert_eq!(Rc::weak_count(&parent.cell), 0, "not referenced any more");
    }
}
