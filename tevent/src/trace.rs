//! Trace points (tevent's `tevent_set_trace_callback` and the per-event
//! `tevent_set_trace_*_callback` family).

use std::cell::Cell;
use std::fmt;
use std::panic::Location;

/// Where the loop is (tevent's `enum tevent_trace_point`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoopTracePoint {
    /// The loop is about to wait for fds (the kernel wait, only).
    BeforeWait,
    /// The wait returned.
    AfterWait,
    /// A `loop_once` (or `try_loop_once`) starts.
    BeforeLoopOnce,
    /// A `loop_once` (or `try_loop_once`) ends (also when it failed).
    AfterLoopOnce,
}

/// What happens to an event (tevent's `enum tevent_event_trace_point`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventTracePoint {
    /// The event was added or scheduled.
    Attach,
    /// Its handler (or a queue entry's trigger) is about to run.
    BeforeHandler,
    /// It was removed: dropped, cancelled, unscheduled, or it has fired for
    /// the last time (a timer, an immediate that was not rescheduled).
    Detach,
}

/// The kind of a traced event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// An [`FdEvent`](crate::FdEvent).
    Fd,
    /// A [`Timer`](crate::Timer).
    Timer,
    /// A [`SignalEvent`](crate::SignalEvent).
    Signal,
    /// An [`Immediate`](crate::Immediate); also a request's post and a
    /// queue's trigger (the immediates tevent uses for them), reported with
    /// the request's or queue's creation place and tag 0 (a tag set on them
    /// is not kept).
    Immediate,
    /// A [`Queue`](crate::Queue) entry.
    QueueEntry,
}

/// The event an event trace callback is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceEvent {
    /// What kind of event.
    pub kind: EventKind,
    /// The event's tag. The callback may change it (for example number the
    /// events at `Attach`, as tevent's trace tests do); the new value is
    /// stored in the event.
    pub tag: u64,
    /// Where the event was created.
    pub created: &'static Location<'static>,
}

type LoopCallback = Box<dyn FnMut(LoopTracePoint)>;
type EventCallback = Box<dyn FnMut(&mut TraceEvent, EventTracePoint)>;

/// The context's trace callbacks. A callback is taken out while it runs, so
/// trace points reached from inside a trace callback are not reported.
#[derive(Default)]
pub(crate) struct Tracer {
    loop_cb: Cell<Option<LoopCallback>>,
    event_cb: Cell<Option<EventCallback>>,
    loop_on: Cell<bool>,
    event_on: Cell<bool>,
}

impl Tracer {
    pub(crate) fn set_loop(&self, cb: Option<LoopCallback>) -> Option<LoopCallback> {
        self.loop_on.set(cb.is_some());
        self.loop_cb.replace(cb)
    }

    pub(crate) fn set_event(&self, cb: Option<EventCallback>) -> Option<EventCallback> {
        self.event_on.set(cb.is_some());
        self.event_cb.replace(cb)
    }

    #[inline]
    pub(crate) fn loop_point(&self, point: LoopTracePoint) {
        if self.loop_on.get() {
            self.call_loop(point);
        }
    }

    #[cold]
    fn call_loop(&self, point: LoopTracePoint) {
        if let Some(mut cb) = self.loop_cb.take() {
            cb(point);
            if let Some(replaced) = self.loop_cb.take() {
                self.loop_cb.set(Some(replaced));
            } else {
                self.loop_cb.set(Some(cb));
            }
        }
    }

    /// Whether event trace points are reported (callers skip the work of
    /// building a [`TraceEvent`] otherwise).
    #[inline]
    pub(crate) fn events_on(&self) -> bool {
        self.event_on.get()
    }

    /// Report `point` for a live event kept in a table: `read` looks up its
    /// tag and creation place (`None`: the event is gone, nothing is
    /// reported), `write` stores a tag the callback changed. Neither may be
    /// called with the table borrowed.
    #[inline]
    pub(crate) fn report<R, W>(&self, kind: EventKind, point: EventTracePoint, read: R, write: W)
    where
        R: FnOnce() -> Option<(u64, &'static Location<'static>)>,
        W: FnOnce(u64),
    {
        if !self.events_on() {
            return;
        }
        if let Some((tag, created)) = read() {
            let new = self.event_point(kind, tag, created, point);
            if new != tag {
                write(new);
            }
        }
    }

    /// Report the `Detach` of an event that has been removed.
    #[inline]
    pub(crate) fn report_gone(
        &self,
        kind: EventKind,
        tag: u64,
        created: &'static Location<'static>,
    ) {
        if self.events_on() {
            self.event_point(kind, tag, created, EventTracePoint::Detach);
        }
    }

    /// Report `point` for an event; returns its tag, possibly changed by
    /// the callback. Must be called with no table borrowed.
    #[cold]
    pub(crate) fn event_point(
        &self,
        kind: EventKind,
        tag: u64,
        created: &'static Location<'static>,
        point: EventTracePoint,
    ) -> u64 {
        let Some(mut cb) = self.event_cb.take() else {
            return tag;
        };
        let mut event = TraceEvent { kind, tag, created };
        cb(&mut event, point);
        if let Some(replaced) = self.event_cb.take() {
            self.event_cb.set(Some(replaced));
        } else {
            self.event_cb.set(Some(cb));
        }
        event.tag
    }
}

impl fmt::Debug for Tracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracer")
            .field("loop", &self.loop_on.get())
            .field("events", &self.event_on.get())
            .finish()
    }
}
