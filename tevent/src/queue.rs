//! Request queues (tevent's `tevent_queue`): first-in, first-out
//! serialisation of requests.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::panic::Location;
use std::rc::{Rc, Weak};

use crate::context::{Context, Inner};
use crate::immediate::{self, PostTarget};
use crate::lazy_fifo;
use crate::req::{Req, ReqCell};
use crate::trace::{EventKind, EventTracePoint};
use crate::Error;

/// Identifies an entry inside its queue: entries are numbered in the order
/// they were added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct EntryKey(u64);

/// A queue trigger, stored in its request.
pub(crate) type Trigger<S, T> = Box<dyn FnMut(&Req<S, T>)>;

/// A request as the queue sees it: something to trigger.
pub(crate) trait QueueMember {
    /// Run the request's trigger (stored in the request, typed).
    fn trigger(self: Rc<Self>);

    /// The request's entry was removed by its [`QueueEntry`] or with its
    /// queue (not by the request leaving itself).
    fn left(&self) {}
}

/// A request's membership in a queue, kept in the request so that it leaves
/// the queue when it is received or dropped.
pub(crate) struct QueueLink {
    queue: Weak<QueueInner>,
    key: EntryKey,
    /// Stay until the request is dropped, even once received
    /// ([`Queue::wait_send`]).
    hold: bool,
}

struct Entry {
    key: EntryKey,
    req: Weak<dyn QueueMember>,
    /// False once removed from the middle of the queue (the entry waits to
    /// be dropped when it reaches the front or at the next compaction).
    live: bool,
    triggered: bool,
    created: &'static Location<'static>,
    tag: u64,
}

/// The entries in queue order. Keys increase from front to back, so an
/// entry is found by binary search; removing one from the middle only marks
/// it, and the front entry is always live.
struct Entries {
    fifo: VecDeque<Entry>,
    live: usize,
    next_key: u64,
}

impl Entries {
    fn new() -> Entries {
        Entries {
            fifo: VecDeque::new(),
            live: 0,
            next_key: 0,
        }
    }

    fn push_back(
        &mut self,
        req: Weak<dyn QueueMember>,
        triggered: bool,
        created: &'static Location<'static>,
    ) -> EntryKey {
        let key = EntryKey(self.next_key);
        self.next_key += 1;
        self.fifo.push_back(Entry {
            key,
            req,
            live: true,
            triggered,
            created,
            tag: 0,
        });
        self.live += 1;
        key
    }

    fn len(&self) -> usize {
        self.live
    }

    fn head(&self) -> Option<&Entry> {
        self.fifo.front()
    }

    fn head_mut(&mut self) -> Option<&mut Entry> {
        self.fifo.front_mut()
    }

    fn index(&self, key: EntryKey) -> Option<usize> {
        let index = match self.fifo.front() {
            // The usual case: the front entry.
            Some(front) if front.key == key => 0,
            _ => self.fifo.binary_search_by_key(&key, |e| e.key).ok()?,
        };
        self.fifo[index].live.then_some(index)
    }

    fn get(&self, key: EntryKey) -> Option<&Entry> {
        self.index(key).map(|i| &self.fifo[i])
    }

    fn get_mut(&mut self, key: EntryKey) -> Option<&mut Entry> {
        self.index(key).map(|i| &mut self.fifo[i])
    }

    fn contains_key(&self, key: EntryKey) -> bool {
        self.index(key).is_some()
    }

    /// Remove an entry; returns its tag and creation place for tracing.
    fn remove(&mut self, key: EntryKey) -> Option<(u64, &'static Location<'static>)> {
        let index = self.index(key)?;
        self.live -= 1;
        let entry = &mut self.fifo[index];
        let gone = (entry.tag, entry.created);
        if index > 0 {
            entry.live = false;
            entry.req = Weak::<Tombstone>::new();
            if lazy_fifo::mostly_stale(self.fifo.len(), self.live) {
                self.fifo.retain(|e| e.live);
            }
            return Some(gone);
        }
        self.fifo.pop_front();
        while self.fifo.front().is_some_and(|e| !e.live) {
            self.fifo.pop_front();
        }
        lazy_fifo::release_if_empty(&mut self.fifo);
        Some(gone)
    }

    /// The live entries, front to back.
    fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.fifo.iter().filter(|e| e.live)
    }
}

/// What a removed entry points to (nothing).
struct Tombstone;

impl QueueMember for Tombstone {
    fn trigger(self: Rc<Self>) {}
}

pub(crate) struct QueueInner {
    ctx: Weak<Inner>,
    name: String,
    entries: RefCell<Entries>,
    running: Cell<bool>,
    /// The number of the pending post that triggers the head from the loop
    /// (0 if none).
    post_seq: Cell<u64>,
    created: &'static Location<'static>,
}

impl QueueInner {
    /// Schedule the head's trigger if the queue runs and the head has not
    /// been triggered.
    ///
    /// As tevent does with its queue's immediate, a trigger already on its
    /// way moves to the tail: behind what was scheduled since.
    #[inline]
    fn kick(self: &Rc<Self>) {
        if self.running.get() {
            self.post_trigger();
        }
    }

    fn post_trigger(self: &Rc<Self>) {
        let needs = self.entries.borrow().head().is_some_and(|e| !e.triggered);
        if needs {
            if let Some(inner) = self.ctx.upgrade() {
                let weak: Weak<QueueInner> = Rc::downgrade(self);
                immediate::post_target(&inner, weak, &self.post_seq, self.created);
            }
        }
    }

    /// Mark the head triggered and return its request, if it can run now.
    fn take_head_for_trigger(&self) -> Option<(EntryKey, Rc<dyn QueueMember>)> {
        if !self.running.get() {
            return None;
        }
        let mut entries = self.entries.borrow_mut();
        let entry = entries.head_mut()?;
        if entry.triggered {
            return None;
        }
        entry.triggered = true;
        entry.req.upgrade().map(|req| (entry.key, req))
    }

    /// Trigger the head, if it can run now.
    fn trigger_head(&self) {
        if let Some((key, req)) = self.take_head_for_trigger() {
            self.trace(key, EventTracePoint::BeforeHandler);
            req.trigger();
        }
    }

    fn remove(self: &Rc<Self>, key: EntryKey) {
        let removed = self.entries.borrow_mut().remove(key);
        if let Some((tag, created)) = removed {
            self.trace_gone(tag, created);
            self.kick();
        }
    }

    /// Report a trace point for a queued entry (no borrow held).
    #[inline]
    fn trace(&self, key: EntryKey, point: EventTracePoint) {
        if let Some(inner) = self.ctx.upgrade() {
            if inner.tracer.events_on() {
                self.trace_entry(&inner, key, point);
            }
        }
    }

    #[cold]
    fn trace_entry(&self, inner: &Inner, key: EntryKey, point: EventTracePoint) {
        inner.tracer.report(
            EventKind::QueueEntry,
            point,
            || self.entries.borrow().get(key).map(|e| (e.tag, e.created)),
            |tag| {
                if let Some(e) = self.entries.borrow_mut().get_mut(key) {
                    e.tag = tag;
                }
            },
        );
    }

    /// Report the detach of a removed entry.
    #[inline]
    fn trace_gone(&self, tag: u64, created: &'static Location<'static>) {
        if let Some(inner) = self.ctx.upgrade() {
            inner
                .tracer
                .report_gone(EventKind::QueueEntry, tag, created);
        }
    }
}

impl PostTarget for QueueInner {
    fn post_seq(&self) -> &Cell<u64> {
        &self.post_seq
    }

    fn run_post(self: Rc<Self>, ctx: &Context) {
        let inner = ctx.inner();
        if !inner.tracer.events_on() {
            self.trigger_head();
            return;
        }
        immediate::run_traced_post(inner, &self.post_seq, self.created, || self.trigger_head());
    }

    fn post_created(&self) -> &'static Location<'static> {
        self.created
    }
}

/// Leave the queue recorded in `link`: on receive (unless the request holds
/// its place until dropped) or on drop.
#[inline]
pub(crate) fn leave(link: &RefCell<Option<QueueLink>>, epoch: &Cell<u32>, dropping: bool) {
    if link.try_borrow().is_ok_and(|l| l.is_none()) {
        return;
    }
    leave_queue(link, epoch, dropping);
}

fn leave_queue(link: &RefCell<Option<QueueLink>>, epoch: &Cell<u32>, dropping: bool) {
    let taken = {
        let mut link = link.borrow_mut();
        match link.as_ref() {
            Some(l) if dropping || !l.hold => link.take(),
            _ => None,
        }
    };
    if let Some(link) = taken {
        epoch.set(epoch.get().wrapping_add(1));
        if let Some(queue) = link.queue.upgrade() {
            queue.remove(link.key);
        }
    }
}

/// A queue of requests (tevent's `tevent_queue`): each request's trigger
/// runs when it reaches the head, one request at a time, first-in,
/// first-out.
///
/// - A queue starts running; [`stop`](Queue::stop) holds triggers back
///   (a request already triggered keeps running), [`start`](Queue::start)
///   resumes.
/// - Triggers run from the loop, in FIFO order with the immediates (as
///   tevent's queue immediate: adding a request or removing one while the
///   head waits for its trigger moves that trigger behind what was
///   scheduled since), except with
///   [`add_optimize_empty`](Queue::add_optimize_empty).
/// - **A request leaves the queue when it is received or dropped, not when
///   it finishes.** The next request is triggered only then: a caller that
///   keeps a finished request without receiving it blocks the queue. (This
///   is the tevent rule users trip over; [`wait_send`](Queue::wait_send)
///   uses it on purpose, and holds its place until dropped.)
/// - `Queue` is a cheap handle (`Clone`): callbacks that start or stop the
///   queue keep a clone. Dropping the last handle removes every entry; the
///   requests are left alone and never triggered.
///
/// # Example
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
/// use tevent::{Context, Queue, Req};
///
/// let ctx = Context::new()?;
/// let queue = Queue::new(&ctx, "writers");
/// let order = Rc::new(RefCell::new(Vec::new()));
/// let mut reqs = Vec::new();
/// for i in 0..3 {
///     let req: Req<u32, ()> = Req::new(&ctx, i);
///     queue.add(&req, |req| {
///         // Our turn: do the work, then finish.
///         req.done(());
///     })?;
///     let order = order.clone();
///     req.set_callback(move |req| {
///         order.borrow_mut().push(*req.state());
///         req.recv().unwrap(); // receiving lets the next one run
///     });
///     reqs.push(req);
/// }
/// ctx.loop_wait()?;
/// assert_eq!(*order.borrow(), vec![0, 1, 2]);
/// # Ok::<(), tevent::Error>(())
/// ```
#[derive(Clone)]
pub struct Queue {
    inner: Rc<QueueInner>,
}

/// An entry of a queue (tevent's `tevent_queue_entry`), returned by
/// [`Queue::add_entry`]: dropping it removes the request from the queue
/// (the request itself is left alone).
#[must_use = "dropping the entry removes the request from the queue at once"]
pub struct QueueEntry {
    queue: Weak<QueueInner>,
    key: EntryKey,
}

impl Queue {
    /// Create a running queue (tevent's `tevent_queue_create`). The name is
    /// for `Debug` and logs.
    #[track_caller]
    pub fn new(ctx: &Context, name: &str) -> Queue {
        let inner = Rc::new(QueueInner {
            ctx: Rc::downgrade(ctx.inner()),
            name: name.to_string(),
            entries: RefCell::new(Entries::new()),
            running: Cell::new(true),
            post_seq: Cell::new(0),
            created: Location::caller(),
        });
        Queue { inner }
    }

    /// Add `req`; `trigger` runs when it reaches the head, from the loop
    /// (tevent's `tevent_queue_add`).
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyQueued`] if the request is already in a queue.
    #[track_caller]
    pub fn add<S, T, F>(&self, req: &Req<S, T>, trigger: F) -> Result<(), Error>
    where
        S: 'static,
        T: 'static,
        F: FnMut(&Req<S, T>) + 'static,
    {
        self.add_internal(req, Some(Box::new(trigger)), false, false)?;
        Ok(())
    }

    /// Like [`add`](Queue::add), returning an entry handle; dropping the
    /// handle removes the request from the queue (tevent's
    /// `tevent_queue_add_entry`).
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyQueued`] if the request is already in a queue.
    #[track_caller]
    pub fn add_entry<S, T, F>(&self, req: &Req<S, T>, trigger: F) -> Result<QueueEntry, Error>
    where
        S: 'static,
        T: 'static,
        F: FnMut(&Req<S, T>) + 'static,
    {
        let key = self.add_internal(req, Some(Box::new(trigger)), false, false)?;
        Ok(self.entry(key))
    }

    /// Like [`add_entry`](Queue::add_entry), but if the queue is empty and
    /// running and the request has no callback yet (its `_send` function is
    /// still running), the trigger runs at once, inside this call (tevent's
    /// `tevent_queue_add_optimize_empty`). The caller must then check
    /// [`Req::is_in_progress`] and [`post`](Req::post) a finished request.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyQueued`] if the request is already in a queue.
    #[track_caller]
    pub fn add_optimize_empty<S, T, F>(
        &self,
        req: &Req<S, T>,
        trigger: F,
    ) -> Result<QueueEntry, Error>
    where
        S: 'static,
        T: 'static,
        F: FnMut(&Req<S, T>) + 'static,
    {
        let key = self.add_internal(req, Some(Box::new(trigger)), true, false)?;
        Ok(self.entry(key))
    }

    /// Add `req` as a blocker: an entry without trigger that holds the queue
    /// while it is at the head, until the request is received or dropped
    /// (tevent's `tevent_queue_add` with a NULL trigger).
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyQueued`] if the request is already in a queue.
    #[track_caller]
    pub fn add_blocker<S: 'static, T: 'static>(
        &self,
        req: &Req<S, T>,
    ) -> Result<QueueEntry, Error> {
        let key = self.add_internal(req, None, false, false)?;
        Ok(self.entry(key))
    }

    #[track_caller]
    fn add_internal<S: 'static, T: 'static>(
        &self,
        req: &Req<S, T>,
        trigger: Option<Trigger<S, T>>,
        allow_direct: bool,
        hold: bool,
    ) -> Result<EntryKey, Error> {
        let cell = req.cell();
        let queued = cell.queue_link.borrow().as_ref().is_some_and(|link| {
            // A link whose entry or queue was dropped meanwhile is stale.
            link.queue
                .upgrade()
                .is_some_and(|q| q.entries.borrow().contains_key(link.key))
        });
        if queued {
            return Err(Error::AlreadyQueued);
        }
        let blocker = trigger.is_none();
        drop(cell.queue_trigger.replace(trigger));
        let member: Weak<ReqCell<S, T>> = Rc::downgrade(cell);
        let (key, was_empty) = {
            let mut entries = self.inner.entries.borrow_mut();
            let was_empty = entries.head().is_none();
            let key = entries.push_back(member, blocker, Location::caller());
            (key, was_empty)
        };
        *cell.queue_link.borrow_mut() = Some(QueueLink {
            queue: Rc::downgrade(&self.inner),
            key,
            hold,
        });
        cell.queue_epoch.set(cell.queue_epoch.get().wrapping_add(1));
        self.inner.trace(key, EventTracePoint::Attach);
        if allow_direct && was_empty && self.inner.running.get() && !req.has_callback() {
            self.inner.trigger_head();
        } else {
            self.inner.kick();
        }
        Ok(key)
    }

    fn entry(&self, key: EntryKey) -> QueueEntry {
        QueueEntry {
            queue: Rc::downgrade(&self.inner),
            key,
        }
    }

    /// A request that finishes when it reaches the head, and then keeps
    /// blocking the queue until it is dropped (tevent's
    /// `tevent_queue_wait_send`): an asynchronous lock. Receiving it (with
    /// [`Req::recv`]) does not release the queue; dropping it does.
    #[track_caller]
    pub fn wait_send(&self) -> Req<(), ()> {
        let ctx = self.inner.ctx.upgrade().map(Context::from_inner);
        let req = match ctx {
            Some(ctx) => Req::new(&ctx, ()),
            None => return orphan_request(),
        };
        let trigger: Trigger<(), ()> = Box::new(|req: &Req<(), ()>| {
            req.done(());
        });
        if self.add_internal(&req, Some(trigger), false, true).is_err() {
            req.oom();
        }
        req
    }

    /// Let triggers run again (tevent's `tevent_queue_start`); the head is
    /// triggered from the loop if it has not been.
    pub fn start(&self) {
        if !self.inner.running.replace(true) {
            self.inner.kick();
        }
    }

    /// Hold triggers back (tevent's `tevent_queue_stop`). A request already
    /// triggered keeps running.
    pub fn stop(&self) {
        self.inner.running.set(false);
    }

    /// Whether the queue is running.
    pub fn running(&self) -> bool {
        self.inner.running.get()
    }

    /// How many requests are queued, the triggered head included.
    pub fn length(&self) -> usize {
        self.inner.entries.borrow().len()
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }
}

/// A request that can never run, for a queue whose context is gone.
fn orphan_request() -> Req<(), ()> {
    // No context to create it on: make a throwaway one. This only happens
    // when a queue outlives its context, which is a caller bug; the request
    // reports it as NoMemory rather than panicking.
    match Context::with_backend("poll") {
        Ok(ctx) => {
            let req = Req::new(&ctx, ());
            req.oom();
            req
        }
        Err(_) => unreachable!("the poll backend cannot fail to initialise"),
    }
}

impl Drop for QueueInner {
    fn drop(&mut self) {
        immediate::cancel_target_post(&self.ctx, &self.post_seq, self.created);
        let entries = std::mem::replace(self.entries.get_mut(), Entries::new());
        // In queue order, as tevent frees them.
        for entry in entries.iter() {
            if let Some(member) = entry.req.upgrade() {
                member.left();
            }
            self.trace_gone(entry.tag, entry.created);
        }
        drop(entries);
    }
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.inner.name)
            .field("length", &self.length())
            .field("running", &self.running())
            .field("created", &format_args!("{}", self.inner.created))
            .finish()
    }
}

impl QueueEntry {
    /// Mark the head entry of a stopped queue as not triggered, so that
    /// [`Queue::start`] triggers it again (tevent's
    /// `tevent_queue_entry_untrigger`).
    ///
    /// # Errors
    ///
    /// [`Error::QueueRunning`] if the queue is running or this entry is not
    /// its head (C tevent aborts here), [`Error::ContextGone`] if the queue
    /// or the entry is gone.
    pub fn untrigger(&self) -> Result<(), Error> {
        let queue = self.queue.upgrade().ok_or(Error::ContextGone)?;
        if queue.running.get() {
            return Err(Error::QueueRunning);
        }
        let mut entries = queue.entries.borrow_mut();
        if entries.head().map(|e| e.key) != Some(self.key) {
            return Err(Error::QueueRunning);
        }
        match entries.get_mut(self.key) {
            Some(e) => {
                e.triggered = false;
                Ok(())
            }
            None => Err(Error::ContextGone),
        }
    }

    /// Attach a number to the entry for tracing (tevent's
    /// `tevent_queue_entry_set_tag`).
    pub fn set_tag(&self, tag: u64) {
        if let Some(queue) = self.queue.upgrade() {
            if let Some(e) = queue.entries.borrow_mut().get_mut(self.key) {
                e.tag = tag;
            }
        }
    }

    /// The tag set with [`set_tag`](QueueEntry::set_tag) (0 by default).
    pub fn tag(&self) -> u64 {
        self.queue
            .upgrade()
            .and_then(|q| q.entries.borrow().get(self.key).map(|e| e.tag))
            .unwrap_or(0)
    }

    /// Whether the entry is still in its queue.
    pub fn is_queued(&self) -> bool {
        self.queue
            .upgrade()
            .is_some_and(|q| q.entries.borrow().contains_key(self.key))
    }
}

impl Drop for QueueEntry {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.upgrade() {
            let member = queue
                .entries
                .borrow()
                .get(self.key)
                .and_then(|e| e.req.upgrade());
            if let Some(member) = member {
                member.left();
            }
            queue.remove(self.key);
        }
    }
}

impl fmt::Debug for QueueEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.queue.upgrade().and_then(|q| {
            let entries = q.entries.borrow();
            entries
                .get(self.key)
                .map(|e| (q.name.clone(), e.triggered, e.tag, e.created))
        });
        let mut d = f.debug_struct("QueueEntry");
        match info {
            Some((queue, triggered, tag, created)) => {
                d.field("queue", &queue)
                    .field("triggered", &triggered)
                    .field("tag", &tag)
                    .field("created", &format_args!("{created}"));
            }
            None => {
                d.field("gone", &true);
            }
        }
        d.finish()
    }
}
