//! Timer events: one-shot handlers at a deadline.

use std::fmt;
use std::panic::Location;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use slotmap::SlotMap;

use crate::context::{Context, Inner};
use crate::trace::{EventKind, EventTracePoint};

slotmap::new_key_type! {
    /// Identifies a timer inside its context.
    pub(crate) struct TimerKey;
}

/// When a timer fires.
///
/// Deadlines are read from the monotonic clock ([`Instant`]), so changing
/// the system time does not move them. (C tevent uses the wall clock.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Deadline {
    /// As soon as possible: before every timer with a real deadline, and in
    /// the order such timers were added (tevent's zero `timeval`).
    Asap,
    /// At this instant, or at the first iteration after it.
    At(Instant),
}

impl Deadline {
    /// The deadline `delay` from now.
    ///
    /// ```
    /// use std::time::Duration;
    /// let d = tevent::Deadline::after(Duration::from_millis(10));
    /// assert!(matches!(d, tevent::Deadline::At(_)));
    /// ```
    pub fn after(delay: Duration) -> Deadline {
        Deadline::At(Instant::now() + delay)
    }
}

impl From<Instant> for Deadline {
    fn from(at: Instant) -> Deadline {
        Deadline::At(at)
    }
}

/// The handler of a timer: the context, the timer (so it can re-arm itself
/// with [`Timer::update`]) and the time the loop read before firing it.
pub(crate) type TimerFn = dyn FnMut(&Context, &Timer, Instant);

/// Something inside the crate (a request's end time) run by a timer without
/// a boxed closure.
pub(crate) trait TimerTarget {
    /// The deadline passed.
    fn expired(self: Rc<Self>, ctx: &Context);
}

pub(crate) enum TimerHandler {
    Boxed(Box<TimerFn>),
    Target(Weak<dyn TimerTarget>),
}

const NOT_QUEUED: usize = usize::MAX;

struct TimerSlot {
    deadline: Deadline,
    /// Index in the heap, or `NOT_QUEUED` once popped for firing.
    pos: usize,
    handler: Option<TimerHandler>,
    detached: bool,
    created: &'static Location<'static>,
    tag: u64,
}

/// A detached timer, dropped by the caller.
pub(crate) struct TimerSlotBox(#[allow(dead_code)] TimerSlot);

/// An entry in the heap: the ordering key is copied here so that sifting
/// touches only the heap's own memory.
#[derive(Clone, Copy)]
struct HeapEntry {
    /// 0 for [`Deadline::Asap`], else nanoseconds since the context's epoch
    /// plus one.
    when: u64,
    /// Insertion counter: first-in, first-out on equal deadlines.
    seq: u64,
    key: TimerKey,
}

impl HeapEntry {
    fn before(&self, other: &HeapEntry) -> bool {
        (self.when, self.seq) < (other.when, other.seq)
    }
}

/// The context's timers: a table of slots and a binary min-heap ordered by
/// (deadline, insertion order) that records each entry's position in its
/// slot, so cancelling any timer is O(log n).
pub(crate) struct TimerQueue {
    slots: SlotMap<TimerKey, TimerSlot>,
    heap: Vec<HeapEntry>,
    next_seq: u64,
    epoch: Instant,
}

impl TimerQueue {
    /// A queue whose tick 0 is well before `now`, so deadlines in the past
    /// (even before the context was created) keep their order.
    pub(crate) fn new(now: Instant) -> TimerQueue {
        const BACK: [u64; 4] = [10 * 365 * 86_400, 86_400, 3_600, 0];
        let epoch = BACK
            .iter()
            .find_map(|&secs| now.checked_sub(Duration::from_secs(secs)))
            .unwrap_or(now);
        TimerQueue {
            slots: SlotMap::with_key(),
            heap: Vec::new(),
            next_seq: 0,
            epoch,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    fn ticks(&self, deadline: Deadline) -> u64 {
        match deadline {
            Deadline::Asap => 0,
            Deadline::At(at) => {
                // u64 nanoseconds cover 584 years; computed without the
                // 128-bit arithmetic of `Duration::as_nanos`.
                let d = at.saturating_duration_since(self.epoch);
                d.as_secs()
                    .saturating_mul(1_000_000_000)
                    .saturating_add(u64::from(d.subsec_nanos()))
                    .saturating_add(1)
                    .min(u64::MAX - 1)
            }
        }
    }

    pub(crate) fn ticks_now(&self, now: Instant) -> u64 {
        self.ticks(Deadline::At(now))
    }

    fn insert(
        &mut self,
        deadline: Deadline,
        handler: TimerHandler,
        created: &'static Location<'static>,
    ) -> TimerKey {
        let key = self.slots.insert(TimerSlot {
            deadline,
            pos: NOT_QUEUED,
            handler: Some(handler),
            detached: false,
            created,
            tag: 0,
        });
        self.push(key);
        key
    }

    fn push(&mut self, key: TimerKey) {
        let when = self.ticks(self.slots[key].deadline);
        let seq = self.next_seq;
        self.next_seq += 1;
        let pos = self.heap.len();
        self.heap.push(HeapEntry { when, seq, key });
        self.slots[key].pos = pos;
        self.sift_up(pos);
    }

    /// Take `key` out of the heap (it stays in the table).
    fn unqueue(&mut self, key: TimerKey) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let pos = slot.pos;
        if pos == NOT_QUEUED {
            return;
        }
        slot.pos = NOT_QUEUED;
        let last = self.heap.len() - 1;
        if pos != last {
            self.heap.swap(pos, last);
            self.heap.pop();
            let moved = self.heap[pos].key;
            self.slots[moved].pos = pos;
            if pos > 0 && self.heap[pos].before(&self.heap[(pos - 1) / 2]) {
                self.sift_up(pos);
            } else {
                self.sift_down(pos);
            }
        } else {
            self.heap.pop();
        }
    }

    fn sift_up(&mut self, mut pos: usize) {
        let entry = self.heap[pos];
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if !entry.before(&self.heap[parent]) {
                break;
            }
            self.heap[pos] = self.heap[parent];
            self.slots[self.heap[pos].key].pos = pos;
            pos = parent;
        }
        self.heap[pos] = entry;
        self.slots[entry.key].pos = pos;
    }

    fn sift_down(&mut self, mut pos: usize) {
        let entry = self.heap[pos];
        let len = self.heap.len();
        loop {
            let left = 2 * pos + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let child = if right < len && self.heap[right].before(&self.heap[left]) {
                right
            } else {
                left
            };
            if !self.heap[child].before(&entry) {
                break;
            }
            self.heap[pos] = self.heap[child];
            self.slots[self.heap[pos].key].pos = pos;
            pos = child;
        }
        self.heap[pos] = entry;
        self.slots[entry.key].pos = pos;
    }

    /// Time from `now` until the first deadline (zero if it has passed).
    pub(crate) fn until_first(&self, now: Instant) -> Option<Duration> {
        let first = self.heap.first()?;
        Some(Duration::from_nanos(
            first.when.saturating_sub(self.ticks_now(now)),
        ))
    }

    /// Remove every timer (after `fork`); the slots are handed back so
    /// their handlers are dropped outside the borrow. Removing (rather than
    /// replacing the table) keeps old handles from matching new timers.
    pub(crate) fn detach_all(&mut self) -> Vec<TimerSlotBox> {
        self.heap.clear();
        self.slots.drain().map(|(_, s)| TimerSlotBox(s)).collect()
    }

    fn remove(&mut self, key: TimerKey) -> Option<TimerSlot> {
        self.unqueue(key);
        self.slots.remove(key)
    }

    /// Check the table and heap invariants (tests only).
    #[cfg(test)]
    fn check(&self) {
        for (i, e) in self.heap.iter().enumerate() {
            assert_eq!(self.slots[e.key].pos, i);
            if i > 0 {
                assert!(!e.before(&self.heap[(i - 1) / 2]));
            }
        }
    }
}

/// A timer event (tevent's `tevent_timer`): a handler that runs once, at or
/// after its [`Deadline`].
///
/// Timers fire in deadline order, first-in, first-out on equal deadlines,
/// and [`Deadline::Asap`] timers before all others; one timer per
/// [`Context::loop_once`]. A timer that has fired is gone: its handle stays
/// valid but inert ([`is_pending`](Timer::is_pending) is `false`). Inside
/// its own handler a timer may re-arm itself with [`update`](Timer::update)
/// (C tevent frees a fired timer regardless), which is how a periodic timer
/// is written.
///
/// Dropping the handle cancels the timer; [`Timer::detach`] hands it to the
/// context instead (fire and forget). Adding and cancelling cost O(log n).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tevent::{Context, Deadline};
///
/// let ctx = Context::new()?;
/// let mut ticks = 0;
/// let timer = ctx.add_timer(Deadline::after(Duration::from_millis(1)), move |_ctx, timer, now| {
///     ticks += 1;
///     if ticks < 3 {
///         timer.update(now + Duration::from_millis(1)); // periodic
///     }
/// });
/// ctx.loop_wait()?;
/// assert!(!timer.is_pending());
/// # Ok::<(), tevent::Error>(())
/// ```
pub struct Timer {
    ctx: Weak<Inner>,
    key: TimerKey,
    owned: bool,
}

impl Timer {
    #[track_caller]
    pub(crate) fn add(inner: &Rc<Inner>, deadline: Deadline, handler: TimerHandler) -> Timer {
        let key = inner
            .timers
            .borrow_mut()
            .insert(deadline, handler, Location::caller());
        trace(inner, key, EventTracePoint::Attach);
        Timer {
            ctx: Rc::downgrade(inner),
            key,
            owned: true,
        }
    }

    /// Move the timer to a new deadline (tevent's `tevent_update_timer`). It
    /// goes behind timers that already have the same deadline. Called from
    /// the timer's own handler, it re-arms the timer.
    ///
    /// Returns `false` (and does nothing) if the timer has already fired or
    /// its context is gone.
    pub fn update(&self, deadline: impl Into<Deadline>) -> bool {
        let Some(inner) = self.ctx.upgrade() else {
            return false;
        };
        let was_pending = {
            let mut timers = inner.timers.borrow_mut();
            let Some(slot) = timers.slots.get_mut(self.key) else {
                return false;
            };
            slot.deadline = deadline.into();
            let was_pending = slot.pos != NOT_QUEUED;
            timers.unqueue(self.key);
            timers.push(self.key);
            was_pending
        };
        // As tevent_update_timer: a pending timer is detached and attached
        // again; one re-armed from its own handler is attached.
        if was_pending {
            trace(&inner, self.key, EventTracePoint::Detach);
        }
        trace(&inner, self.key, EventTracePoint::Attach);
        true
    }

    /// Whether the timer is waiting for its deadline.
    pub fn is_pending(&self) -> bool {
        self.with_slot(|s| s.pos != NOT_QUEUED).unwrap_or(false)
    }

    /// The deadline, while the timer exists.
    pub fn deadline(&self) -> Option<Deadline> {
        self.with_slot(|s| s.deadline)
    }

    /// Hand the timer to the context: it fires even though this handle is
    /// gone, and is freed after it fired (or when the context is dropped).
    pub fn detach(mut self) {
        self.owned = false;
        if let Some(inner) = self.ctx.upgrade() {
            if let Some(slot) = inner.timers.borrow_mut().slots.get_mut(self.key) {
                slot.detached = true;
            }
        }
    }

    /// Attach a number to the timer for tracing (tevent's
    /// `tevent_timer_set_tag`). It survives [`update`](Timer::update).
    pub fn set_tag(&self, tag: u64) {
        if let Some(inner) = self.ctx.upgrade() {
            if let Some(slot) = inner.timers.borrow_mut().slots.get_mut(self.key) {
                slot.tag = tag;
            }
        }
    }

    /// The tag set with [`set_tag`](Timer::set_tag) (0 by default).
    pub fn tag(&self) -> u64 {
        self.with_slot(|s| s.tag).unwrap_or(0)
    }

    /// The context the timer belongs to, if it still exists.
    pub fn context(&self) -> Option<Context> {
        self.ctx.upgrade().map(Context::from_inner)
    }

    fn with_slot<R>(&self, f: impl FnOnce(&TimerSlot) -> R) -> Option<R> {
        let inner = self.ctx.upgrade()?;
        let timers = inner.timers.try_borrow().ok()?;
        timers.slots.get(self.key).map(f)
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Some(inner) = self.ctx.upgrade() {
            let removed = inner.timers.borrow_mut().remove(self.key);
            if let Some(slot) = &removed {
                trace_gone(&inner, slot.tag, slot.created);
            }
            drop(removed);
        }
    }
}

/// Report a trace point for a live event of this table (no borrow held).
#[inline]
fn trace(inner: &Inner, key: TimerKey, point: EventTracePoint) {
    inner.tracer.report(
        EventKind::Timer,
        point,
        || {
            inner
                .timers
                .borrow()
                .slots
                .get(key)
                .map(|s| (s.tag, s.created))
        },
        |tag| {
            if let Some(slot) = inner.timers.borrow_mut().slots.get_mut(key) {
                slot.tag = tag;
            }
        },
    );
}

/// Report the detach of a removed event of this table.
#[inline]
fn trace_gone(inner: &Inner, tag: u64, created: &'static Location<'static>) {
    inner.tracer.report_gone(EventKind::Timer, tag, created);
}

impl TimerSlotBox {
    /// Report this detached timer's `Detach` trace point.
    pub(crate) fn trace_detach(&self, inner: &Inner) {
        trace_gone(inner, self.0.tag, self.0.created);
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Timer");
        match self.with_slot(|s| (s.deadline, s.pos != NOT_QUEUED, s.tag, s.created)) {
            Some((deadline, pending, tag, created)) => {
                d.field("deadline", &deadline)
                    .field("pending", &pending)
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

/// What the timer step of an iteration found.
pub(crate) enum TimerStep {
    /// A timer was due and its handler ran.
    Fired,
    /// The first timer is due after this long.
    Wait(Duration),
    /// No timers.
    Empty,
}

/// Fire the first timer if it is due.
pub(crate) fn run_due(ctx: &Context) -> TimerStep {
    let inner = ctx.inner();
    let (key, handler, now) = {
        let mut timers = inner.timers.borrow_mut();
        let Some(first) = timers.heap.first().copied() else {
            return TimerStep::Empty;
        };
        let now = Instant::now();
        if first.when != 0 {
            let now_ticks = timers.ticks_now(now);
            if first.when > now_ticks {
                return TimerStep::Wait(Duration::from_nanos(first.when - now_ticks));
            }
        }
        // Unlinked before its handler runs, so a nested loop does not see it.
        timers.unqueue(first.key);
        let slot = &mut timers.slots[first.key];
        match slot.handler.take() {
            Some(h) => (first.key, h, now),
            None => {
                // Re-armed inside its own handler, which is still running
                // further up the stack (nested loop): it cannot run twice at
                // once, so it goes behind the timers with the same deadline.
                timers.push(first.key);
                return TimerStep::Fired;
            }
        }
    };
    let mut running = Running {
        inner,
        key,
        handler: Some(handler),
    };
    trace(inner, key, EventTracePoint::BeforeHandler);
    match running.handler.as_mut() {
        Some(TimerHandler::Boxed(f)) => {
            let view = Timer {
                ctx: Rc::downgrade(inner),
                key,
                owned: false,
            };
            f(ctx, &view, now);
        }
        Some(TimerHandler::Target(target)) => {
            if let Some(target) = target.upgrade() {
                target.expired(ctx);
            }
        }
        None => {}
    }
    drop(running);
    TimerStep::Fired
}

/// After a timer's handler returned (or panicked): a timer that was not
/// re-armed is gone; one that was gets its handler back.
struct Running<'a> {
    inner: &'a Rc<Inner>,
    key: TimerKey,
    handler: Option<TimerHandler>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut leftover = self.handler.take();
        let removed = {
            let mut timers = self.inner.timers.borrow_mut();
            match timers.slots.get_mut(self.key) {
                Some(slot) if slot.pos == NOT_QUEUED => timers.slots.remove(self.key),
                Some(slot) => {
                    if slot.handler.is_none() {
                        slot.handler = leftover.take();
                    }
                    None
                }
                None => None,
            }
        };
        if let Some(slot) = &removed {
            trace_gone(self.inner, slot.tag, slot.created);
        }
        drop(removed);
        drop(leftover);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop() -> TimerHandler {
        TimerHandler::Boxed(Box::new(|_, _, _| {}))
    }

    fn pop_order(q: &mut TimerQueue) -> Vec<TimerKey> {
        let mut out = Vec::new();
        while let Some(first) = q.heap.first().copied() {
            q.unqueue(first.key);
            q.check();
            out.push(first.key);
        }
        out
    }

    #[test]
    fn heap_orders_by_deadline_then_insertion() {
        let epoch = Instant::now();
        let mut q = TimerQueue::new(epoch);
        let here = Location::caller();
        let late = q.insert(Deadline::At(epoch + Duration::from_secs(2)), noop(), here);
        let early1 = q.insert(Deadline::At(epoch + Duration::from_secs(1)), noop(), here);
        let asap1 = q.insert(Deadline::Asap, noop(), here);
        let early2 = q.insert(Deadline::At(epoch + Duration::from_secs(1)), noop(), here);
        let asap2 = q.insert(Deadline::Asap, noop(), here);
        q.check();
        assert_eq!(pop_order(&mut q), vec![asap1, asap2, early1, early2, late]);
    }

    #[test]
    fn heap_matches_a_sorted_model_under_random_inserts_and_cancels() {
        let epoch = Instant::now();
        let mut q = TimerQueue::new(epoch);
        let here = Location::caller();
        let mut model: Vec<(u64, u64, TimerKey)> = Vec::new();
        let mut x: u64 = 42;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut seq = 0;
        for _ in 0..5000 {
            let r = next();
            if r % 3 != 0 || model.is_empty() {
                let ms = next() % 50;
                let key = q.insert(
                    Deadline::At(epoch + Duration::from_millis(ms)),
                    noop(),
                    here,
                );
                model.push((ms, seq, key));
                seq += 1;
            } else {
                let i = (next() % model.len() as u64) as usize;
                let (_, _, key) = model.swap_remove(i);
                q.remove(key);
            }
            q.check();
        }
        model.sort();
        let expected: Vec<TimerKey> = model.iter().map(|m| m.2).collect();
        assert_eq!(pop_order(&mut q), expected);
    }
}
