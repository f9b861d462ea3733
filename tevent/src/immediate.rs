//! Immediate events: work for the next iteration of the loop.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::panic::Location;
use std::rc::{Rc, Weak};

use slotmap::SlotMap;

use crate::context::{Context, Inner};
use crate::lazy_fifo;
use crate::trace::{EventKind, EventTracePoint};

slotmap::new_key_type! {
    /// Identifies an immediate inside its context.
    pub(crate) struct ImmKey;
}

/// The handler of an immediate: it gets the context and the immediate itself,
/// so it can reschedule it.
pub(crate) type ImmediateFn = dyn FnMut(&Context, &Immediate);

/// Something that is posted (a request's delivery, a queue's trigger):
/// run in FIFO order with the immediates, but kept in a queue of its own so
/// that a post costs no table slot.
pub(crate) trait PostTarget {
    /// Where the target keeps the number of its pending post (0 if none):
    /// a queue entry with another number is stale.
    fn post_seq(&self) -> &Cell<u64>;
    /// Run the claimed post.
    fn run_post(self: Rc<Self>, ctx: &Context);
    /// Where the target was created (the "immediate" its posts are traced
    /// as).
    fn post_created(&self) -> &'static Location<'static>;

    /// Whether the entry numbered `seq` is the target's pending post.
    #[inline]
    fn is_pending(&self, seq: u64) -> bool {
        self.post_seq().get() == seq
    }

    /// Claim the post numbered `seq`: `false` if it was cancelled or
    /// replaced by a later post since (the entry is then stale).
    #[inline]
    fn claim_post(&self, seq: u64) -> bool {
        let pending = self.is_pending(seq);
        if pending {
            self.post_seq().set(0);
        }
        pending
    }
}

/// Post `target` (replacing its pending post, whose number `seq` holds;
/// 0 if none) and store the new post's number in `seq`. A post is traced as
/// the immediate tevent would use for it, created at `created`.
#[inline(always)]
pub(crate) fn post_target(
    inner: &Inner,
    target: Weak<dyn PostTarget>,
    seq: &Cell<u64>,
    created: &'static Location<'static>,
) {
    let (new, replaced) = inner.immediates.borrow_mut().post(target, seq.get());
    seq.set(new);
    if inner.tracer.events_on() {
        trace_posted(inner, seq, replaced, created);
    }
}

/// The trace points of a new post: `Detach` first if it replaces a pending
/// post or the one running now (as for a rescheduled immediate).
#[cold]
fn trace_posted(
    inner: &Inner,
    seq: &Cell<u64>,
    replaces: bool,
    created: &'static Location<'static>,
) {
    let running = {
        let mut q = inner.immediates.borrow_mut();
        let running = std::ptr::eq(q.traced_running, seq);
        if running {
            q.traced_running = std::ptr::null();
        }
        running
    };
    // Both may hold: the target's callback runs (further up the stack) and
    // a nested iteration posted it meanwhile.
    if replaces {
        trace_post(inner, created, EventTracePoint::Detach);
    }
    if running {
        trace_post(inner, created, EventTracePoint::Detach);
    }
    trace_post(inner, created, EventTracePoint::Attach);
}

/// Run the work of a claimed post (whose target keeps its post number in
/// `seq`) between its `BeforeHandler` and `Detach` trace points. If the
/// work posts the same target again, that post reports the `Detach`.
/// `seq` must stay alive while the work runs (the caller holds its target).
#[cold]
pub(crate) fn run_traced_post(
    inner: &Inner,
    seq: &Cell<u64>,
    created: &'static Location<'static>,
    work: impl FnOnce(),
) {
    trace_post(inner, created, EventTracePoint::BeforeHandler);
    let outer = std::mem::replace(
        &mut inner.immediates.borrow_mut().traced_running,
        seq as *const Cell<u64>,
    );
    // Restores the outer running post and reports this one's `Detach` also
    // if the work panics (the context stays usable then).
    let _running = TracedRunning {
        inner,
        seq,
        outer,
        created,
    };
    work();
}

/// The post whose work runs with tracing on (see [`run_traced_post`]).
struct TracedRunning<'a> {
    inner: &'a Inner,
    seq: &'a Cell<u64>,
    outer: *const Cell<u64>,
    created: &'static Location<'static>,
}

impl Drop for TracedRunning<'_> {
    fn drop(&mut self) {
        let detach = match self.inner.immediates.try_borrow_mut() {
            Ok(mut q) => {
                // Still marked running: it was not posted again, and owes
                // its `Detach`.
                let detach = std::ptr::eq(q.traced_running, self.seq);
                q.traced_running = self.outer;
                detach
            }
            Err(_) => false,
        };
        if detach {
            trace_post(self.inner, self.created, EventTracePoint::Detach);
        }
    }
}

/// Cancel the pending post whose number `seq` holds, if any.
#[inline]
pub(crate) fn cancel_target_post(
    ctx: &Weak<Inner>,
    seq: &Cell<u64>,
    created: &'static Location<'static>,
) {
    if seq.get() != 0 {
        cancel_pending_post(ctx, seq, created);
    }
}

fn cancel_pending_post(ctx: &Weak<Inner>, seq: &Cell<u64>, created: &'static Location<'static>) {
    let seq = seq.replace(0);
    if let Some(inner) = ctx.upgrade() {
        let was_pending = inner.immediates.borrow_mut().cancel_post(seq);
        if was_pending && inner.tracer.events_on() {
            trace_post(&inner, created, EventTracePoint::Detach);
        }
    }
}

/// Report a post's trace point (its tag is not kept).
#[cold]
pub(crate) fn trace_post(
    inner: &Inner,
    created: &'static Location<'static>,
    point: EventTracePoint,
) {
    inner
        .tracer
        .event_point(EventKind::Immediate, 0, created, point);
}

/// One entry of the post queue. Cancelling a post leaves its entry in place
/// (stale, skipped when reached) instead of searching the queue.
struct Post {
    seq: u64,
    target: Weak<dyn PostTarget>,
}

impl Post {
    /// The target, if this entry is still its pending post. Upgrading
    /// succeeds only while a handle exists elsewhere, so dropping the `Rc`
    /// returned never frees the target (nor runs user code).
    fn live_target(&self) -> Option<Rc<dyn PostTarget>> {
        self.target.upgrade().filter(|t| t.is_pending(self.seq))
    }
}

pub(crate) enum ImmHandler {
    Boxed(Box<ImmediateFn>),
    /// A job from another thread: runs once, then its slot is freed.
    Job(crate::thread::Job),
}

struct ImmSlot {
    /// Position in the FIFO shared with the posts (set when linked).
    seq: u64,
    prev: Option<ImmKey>,
    next: Option<ImmKey>,
    scheduled: bool,
    handler: Option<ImmHandler>,
    /// Set while the handler runs (it is then taken out of `handler`).
    running: bool,
    detached: bool,
    /// Attached in the trace sense: scheduled, or its handler is running.
    attached: bool,
    created: &'static Location<'static>,
    scheduled_at: Option<&'static Location<'static>>,
    tag: u64,
}

/// A detached immediate, dropped by the caller.
pub(crate) struct ImmSlotBox(#[allow(dead_code)] ImmSlot);

/// What [`ImmediateQueue::detach_all`] removed.
pub(crate) struct Detached {
    slots: Vec<ImmSlotBox>,
    posts: VecDeque<Post>,
}

impl Detached {
    /// Report the `Detach` trace point of every immediate and post that was
    /// attached.
    pub(crate) fn trace_detach(&self, inner: &Inner) {
        self.slots.iter().for_each(|s| s.trace_detach(inner));
        for target in self.posts.iter().filter_map(Post::live_target) {
            trace_post(inner, target.post_created(), EventTracePoint::Detach);
        }
    }
}

/// The context's immediates: a table of objects and the FIFO of the
/// scheduled ones (an intrusive doubly-linked list through the table, so
/// scheduling, moving to the tail and cancelling are O(1)), beside the
/// queue of request posts. Both take their sequence numbers from one
/// counter, so together they run in the order they were scheduled.
pub(crate) struct ImmediateQueue {
    slots: SlotMap<ImmKey, ImmSlot>,
    head: Option<ImmKey>,
    tail: Option<ImmKey>,
    scheduled: usize,
    posts: VecDeque<Post>,
    /// Posts neither run nor cancelled (stale entries excluded).
    live_posts: usize,
    /// Posts numbered below this were dropped by `detach_all`.
    posts_floor: u64,
    next_seq: u64,
    /// With event tracing on: the post number cell of the target whose post
    /// runs now (compared, never dereferenced), so that a post it makes
    /// again reports the running one's `Detach`.
    traced_running: *const Cell<u64>,
}

impl Default for ImmediateQueue {
    fn default() -> Self {
        ImmediateQueue {
            slots: SlotMap::default(),
            head: None,
            tail: None,
            scheduled: 0,
            posts: VecDeque::new(),
            live_posts: 0,
            posts_floor: 1,
            // 0 means "no post" to the requests.
            next_seq: 1,
            traced_running: std::ptr::null(),
        }
    }
}

impl ImmediateQueue {
    /// Immediates and posts waiting to run.
    pub(crate) fn scheduled_count(&self) -> usize {
        self.scheduled + self.live_posts
    }

    fn insert(&mut self, created: &'static Location<'static>) -> ImmKey {
        self.slots.insert(ImmSlot {
            seq: 0,
            prev: None,
            next: None,
            scheduled: false,
            handler: None,
            running: false,
            detached: false,
            attached: false,
            created,
            scheduled_at: None,
            tag: 0,
        })
    }

    /// Remove every immediate and post (after `fork`), handing them back
    /// to be traced and dropped outside the borrow.
    pub(crate) fn detach_all(&mut self) -> Detached {
        self.head = None;
        self.tail = None;
        self.scheduled = 0;
        self.live_posts = 0;
        self.posts_floor = self.next_seq;
        Detached {
            slots: self.slots.drain().map(|(_, s)| ImmSlotBox(s)).collect(),
            posts: std::mem::take(&mut self.posts),
        }
    }

    /// Queue a post and return its sequence number, and whether it
    /// replaces a pending one. `replaces` is the number of the target's
    /// earlier post if that one has not run yet (0 if none): it goes stale,
    /// and the new post takes its place at the tail. (A number below the
    /// floor is a post that `detach_all` dropped: nothing is replaced.)
    #[inline]
    pub(crate) fn post(&mut self, target: Weak<dyn PostTarget>, replaces: u64) -> (u64, bool) {
        let replaced = replaces >= self.posts_floor;
        if replaced && replaces + 1 == self.next_seq {
            // Nothing was scheduled since: it is at the tail already.
            return (replaces, true);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if !replaced {
            self.live_posts += 1;
        }
        if lazy_fifo::mostly_stale(self.posts.len(), self.live_posts) {
            self.drop_stale_posts();
        }
        self.posts.push_back(Post { seq, target });
        (seq, replaced)
    }

    /// Remove the stale entries when they are most of the post queue (a
    /// target posted again and again, e.g. a queue's trigger moved to the
    /// tail on every add, while the loop does not run).
    #[cold]
    fn drop_stale_posts(&mut self) {
        self.posts.retain(|p| p.live_target().is_some());
    }

    /// Cancel the post numbered `seq` that has not run yet (its entry goes
    /// stale). Returns whether it was still pending.
    pub(crate) fn cancel_post(&mut self, seq: u64) -> bool {
        if seq >= self.posts_floor {
            self.live_posts -= 1;
            true
        } else {
            false
        }
    }

    /// Queue a job from another thread as a one-shot, detached immediate.
    pub(crate) fn push_job(
        &mut self,
        job: crate::thread::Job,
        created: &'static Location<'static>,
    ) -> ImmKey {
        let key = self.insert(created);
        let slot = &mut self.slots[key];
        slot.handler = Some(ImmHandler::Job(job));
        slot.detached = true;
        slot.attached = true;
        self.link_tail(key);
        key
    }

    #[inline]
    fn unlink(&mut self, key: ImmKey) {
        let (prev, next) = match self.slots.get_mut(key) {
            Some(slot) if slot.scheduled => {
                slot.scheduled = false;
                (slot.prev.take(), slot.next.take())
            }
            _ => return,
        };
        match prev {
            Some(p) => self.slots[p].next = next,
            None => self.head = next,
        }
        match next {
            Some(n) => self.slots[n].prev = prev,
            None => self.tail = prev,
        }
        self.scheduled -= 1;
    }

    /// Append `key` to the FIFO, moving it to the tail if it is already
    /// scheduled.
    #[inline]
    fn link_tail(&mut self, key: ImmKey) {
        self.unlink(key);
        let tail = self.tail;
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = &mut self.slots[key];
        slot.seq = seq;
        slot.scheduled = true;
        slot.prev = tail;
        slot.next = None;
        match tail {
            Some(t) => self.slots[t].next = Some(key),
            None => self.head = Some(key),
        }
        self.tail = Some(key);
        self.scheduled += 1;
    }

    #[inline]
    fn pop_front(&mut self) -> Option<ImmKey> {
        let key = self.head?;
        self.unlink(key);
        Some(key)
    }

    /// Schedule `key` with `handler` (or with its previous handler when
    /// `handler` is `None`). Returns the handler that was replaced, to be
    /// dropped by the caller outside the borrow, or `Err(())` when there is
    /// no handler to run.
    fn schedule(
        &mut self,
        key: ImmKey,
        handler: Option<ImmHandler>,
        at: &'static Location<'static>,
    ) -> Result<(Option<ImmHandler>, bool), ()> {
        let Some(slot) = self.slots.get_mut(key) else {
            return Err(());
        };
        let old = match handler {
            Some(h) => slot.handler.replace(h),
            None if slot.handler.is_some() || slot.running => None,
            None => return Err(()),
        };
        slot.scheduled_at = Some(at);
        let was_attached = std::mem::replace(&mut slot.attached, true);
        self.link_tail(key);
        Ok((old, was_attached))
    }

    /// Mark `key` detached in the trace sense; whether it was attached.
    fn take_attached(&mut self, key: ImmKey) -> bool {
        self.slots
            .get_mut(key)
            .is_some_and(|s| std::mem::replace(&mut s.attached, false))
    }
}

/// An immediate event (tevent's `tevent_immediate`): a handler that runs in
/// the next iteration of the loop, before any timer or fd event.
///
/// The object is created once ([`Context::create_immediate`]) and can be
/// scheduled many times. Scheduling an immediate that is already scheduled
/// moves it to the tail of the queue. Immediates run first-in, first-out,
/// one per [`Context::loop_once`]. A handler may reschedule its own
/// immediate (through the `&Immediate` it is given); it then runs again in a
/// later iteration, after the immediates that were queued before it.
///
/// Dropping the handle cancels the immediate and frees it; [`Immediate::detach`]
/// hands it to the context instead (it is freed after its handler has run).
///
/// # Example
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
///
/// let ctx = tevent::Context::new()?;
/// let runs = Rc::new(Cell::new(0));
/// let im = ctx.create_immediate();
/// let r = runs.clone();
/// im.schedule(move |_ctx, im| {
///     r.set(r.get() + 1);
///     if r.get() < 3 {
///         im.reschedule(); // run again in a later iteration
///     }
/// });
/// ctx.loop_wait()?;
/// assert_eq!(runs.get(), 3);
/// # Ok::<(), tevent::Error>(())
/// ```
pub struct Immediate {
    ctx: Weak<Inner>,
    key: ImmKey,
    owned: bool,
}

impl Immediate {
    #[track_caller]
    pub(crate) fn create(inner: &Rc<Inner>) -> Immediate {
        let key = inner.immediates.borrow_mut().insert(Location::caller());
        Immediate {
            ctx: Rc::downgrade(inner),
            key,
            owned: true,
        }
    }

    /// Schedule `handler` to run in a later iteration (tevent's
    /// `tevent_schedule_immediate`). Replaces the previous handler; if the
    /// immediate was already scheduled, it moves to the tail of the queue.
    /// Does nothing if the context is gone.
    #[track_caller]
    pub fn schedule<F>(&self, handler: F)
    where
        F: FnMut(&Context, &Immediate) + 'static,
    {
        self.schedule_handler(Some(ImmHandler::Boxed(Box::new(handler))));
    }

    #[track_caller]
    fn schedule_handler(&self, handler: Option<ImmHandler>) -> bool {
        let Some(inner) = self.ctx.upgrade() else {
            return false;
        };
        let at = Location::caller();
        let result = inner
            .immediates
            .borrow_mut()
            .schedule(self.key, handler, at);
        match result {
            Ok((old, was_attached)) => {
                drop(old);
                if was_attached {
                    trace(&inner, self.key, EventTracePoint::Detach);
                }
                trace(&inner, self.key, EventTracePoint::Attach);
                true
            }
            Err(()) => false,
        }
    }

    /// Schedule again with the handler given to the last
    /// [`schedule`](Immediate::schedule). This allocates nothing, which
    /// makes it the cheapest way for a handler to run itself again.
    ///
    /// Returns `false` (and does nothing) if no handler was ever set or the
    /// context is gone.
    #[track_caller]
    pub fn reschedule(&self) -> bool {
        self.schedule_handler(None)
    }

    /// Unschedule the immediate but keep it for later use (tevent's
    /// `tevent_reset_immediate`).
    pub fn reset(&self) {
        if let Some(inner) = self.ctx.upgrade() {
            let was_attached = {
                let mut q = inner.immediates.borrow_mut();
                q.unlink(self.key);
                q.take_attached(self.key)
            };
            if was_attached {
                trace(&inner, self.key, EventTracePoint::Detach);
            }
        }
    }

    /// Whether the immediate is waiting in the queue.
    pub fn is_scheduled(&self) -> bool {
        self.with_slot(|s| s.scheduled).unwrap_or(false)
    }

    /// Hand the immediate to the context: it is no longer cancelled when
    /// this handle would have been dropped, and is freed once it has run
    /// without being rescheduled (or when the context is dropped).
    pub fn detach(mut self) {
        let Some(inner) = self.ctx.upgrade() else {
            return;
        };
        self.owned = false;
        let removed = {
            let mut q = inner.immediates.borrow_mut();
            match q.slots.get_mut(self.key) {
                Some(slot) if !slot.scheduled && !slot.running => q.slots.remove(self.key),
                Some(slot) => {
                    slot.detached = true;
                    None
                }
                None => None,
            }
        };
        drop(removed);
    }

    /// Attach a number to the immediate for tracing (tevent's
    /// `tevent_immediate_set_tag`). It survives rescheduling.
    pub fn set_tag(&self, tag: u64) {
        if let Some(inner) = self.ctx.upgrade() {
            if let Some(slot) = inner.immediates.borrow_mut().slots.get_mut(self.key) {
                slot.tag = tag;
            }
        }
    }

    /// The tag set with [`set_tag`](Immediate::set_tag) (0 by default, or if
    /// the immediate is gone).
    pub fn tag(&self) -> u64 {
        self.with_slot(|s| s.tag).unwrap_or(0)
    }

    /// The context the immediate belongs to, if it still exists.
    pub fn context(&self) -> Option<Context> {
        self.ctx.upgrade().map(Context::from_inner)
    }

    fn with_slot<R>(&self, f: impl FnOnce(&ImmSlot) -> R) -> Option<R> {
        let inner = self.ctx.upgrade()?;
        let q = inner.immediates.try_borrow().ok()?;
        q.slots.get(self.key).map(f)
    }
}

impl Drop for Immediate {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let Some(inner) = self.ctx.upgrade() else {
            return;
        };
        let removed = {
            let mut q = inner.immediates.borrow_mut();
            q.unlink(self.key);
            q.slots.remove(self.key)
        };
        if let Some(slot) = &removed {
            if slot.attached {
                trace_gone(&inner, slot.tag, slot.created);
            }
        }
        drop(removed);
    }
}

/// Report a trace point for a live event of this table (no borrow held).
#[inline]
fn trace(inner: &Inner, key: ImmKey, point: EventTracePoint) {
    inner.tracer.report(
        EventKind::Immediate,
        point,
        || {
            inner
                .immediates
                .borrow()
                .slots
                .get(key)
                .map(|s| (s.tag, s.created))
        },
        |tag| {
            if let Some(slot) = inner.immediates.borrow_mut().slots.get_mut(key) {
                slot.tag = tag;
            }
        },
    );
}

/// Report the detach of a removed event of this table.
#[inline]
fn trace_gone(inner: &Inner, tag: u64, created: &'static Location<'static>) {
    inner.tracer.report_gone(EventKind::Immediate, tag, created);
}

impl ImmSlotBox {
    /// Report this detached immediate's `Detach` trace point, if it was
    /// attached.
    pub(crate) fn trace_detach(&self, inner: &Inner) {
        if self.0.attached {
            trace_gone(inner, self.0.tag, self.0.created);
        }
    }
}

/// After a job import: the new immediate's `Attach`.
pub(crate) fn trace_imported(inner: &Inner, key: ImmKey) {
    if inner.tracer.events_on() {
        trace(inner, key, EventTracePoint::Attach);
    }
}

impl fmt::Debug for Immediate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Immediate");
        match self.with_slot(|s| (s.scheduled, s.tag, s.created, s.scheduled_at)) {
            Some((scheduled, tag, created, at)) => {
                d.field("scheduled", &scheduled).field("tag", &tag);
                d.field("created", &format_args!("{created}"));
                if let Some(at) = at {
                    d.field("scheduled_at", &format_args!("{at}"));
                }
            }
            None => {
                d.field("gone", &true);
            }
        }
        d.finish()
    }
}

/// What is first in the FIFO.
enum Next {
    Post(Rc<dyn PostTarget>),
    /// An immediate taken off the FIFO, its handler taken out of its slot.
    Immediate(ImmKey, ImmHandler),
    /// An immediate whose handler is running further up the stack.
    Requeued,
    Empty,
}

/// Take the first post or immediate, whichever was scheduled first
/// (skipping stale posts).
#[inline]
fn next(q: &mut ImmediateQueue) -> Next {
    loop {
        let post_first = match (q.posts.front(), q.head) {
            (Some(post), Some(head)) => post.seq < q.slots[head].seq,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => {
                // A burst of posts ran: give its memory back.
                lazy_fifo::release_if_empty(&mut q.posts);
                return Next::Empty;
            }
        };
        if !post_first {
            return next_immediate(q);
        }
        let Some(post) = q.posts.pop_front() else {
            return Next::Empty;
        };
        // Upgrading succeeds only while a handle exists elsewhere, so the
        // `Rc` dropped below for a stale post never frees the request here.
        if let Some(target) = post.target.upgrade() {
            if target.claim_post(post.seq) {
                q.live_posts -= 1;
                return Next::Post(target);
            }
        }
        // Stale: cancelled, replaced, or its request is gone.
    }
}

/// Take the first scheduled immediate off the FIFO, with its handler.
#[inline]
fn next_immediate(q: &mut ImmediateQueue) -> Next {
    let Some(key) = q.pop_front() else {
        return Next::Empty;
    };
    let slot = &mut q.slots[key];
    match slot.handler.take() {
        Some(h) => {
            slot.running = true;
            Next::Immediate(key, h)
        }
        None => {
            // Its handler is running further up the stack (a nested loop):
            // it cannot run twice at once, so it waits its turn again
            // instead of being lost.
            q.link_tail(key);
            Next::Requeued
        }
    }
}

/// Take the first scheduled immediate or post and run it. Returns `false`
/// when none was scheduled.
#[inline]
pub(crate) fn run_one(ctx: &Context) -> bool {
    let next = next(&mut ctx.inner().immediates.borrow_mut());
    match next {
        Next::Post(target) => {
            target.run_post(ctx);
            true
        }
        Next::Immediate(key, handler) => {
            run_immediate(ctx, key, handler);
            true
        }
        Next::Requeued => true,
        Next::Empty => false,
    }
}

/// Run an immediate taken off the FIFO.
fn run_immediate(ctx: &Context, key: ImmKey, handler: ImmHandler) {
    let inner = ctx.inner();
    let mut running = Running {
        inner,
        key,
        handler: Some(handler),
    };
    trace(inner, key, EventTracePoint::BeforeHandler);
    match running.handler.as_mut() {
        Some(ImmHandler::Boxed(f)) => {
            let view = Immediate {
                ctx: Rc::downgrade(inner),
                key,
                owned: false,
            };
            f(ctx, &view);
        }
        Some(ImmHandler::Job(_)) => {
            if let Some(ImmHandler::Job(job)) = running.handler.take() {
                job(ctx);
            }
        }
        None => {}
    }
    drop(running);
}

/// Puts a running handler back into its slot when the handler returns or
/// panics, unless the slot was freed or given a new handler meanwhile.
struct Running<'a> {
    inner: &'a Rc<Inner>,
    key: ImmKey,
    handler: Option<ImmHandler>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut leftover = self.handler.take();
        let mut detach = None;
        let removed = {
            let mut q = self.inner.immediates.borrow_mut();
            match q.slots.get_mut(self.key) {
                Some(slot) => {
                    slot.running = false;
                    if slot.handler.is_none() {
                        slot.handler = leftover.take();
                    }
                    if !slot.scheduled && std::mem::replace(&mut slot.attached, false) {
                        detach = Some((slot.tag, slot.created));
                    }
                    if slot.detached && !slot.scheduled {
                        q.slots.remove(self.key)
                    } else {
                        None
                    }
                }
                None => None,
            }
        };
        if let Some((tag, created)) = detach {
            trace_gone(self.inner, tag, created);
        }
        drop(removed);
        drop(leftover);
    }
}
