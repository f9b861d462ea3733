//! Trace points: the sequences tevent produces, on every backend.

use std::cell::RefCell;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tevent::{
    Context, Deadline, EventKind, EventTracePoint, FdFlags, LoopTracePoint, Queue, Req, SignalFlags,
};

use EventTracePoint::{Attach, BeforeHandler, Detach};

type Log = Rc<RefCell<Vec<(EventKind, u64, EventTracePoint)>>>;

/// Record every event trace point, numbering the events of each kind at
/// Attach (as tevent's trace tests do) when they have no tag yet.
fn record(ctx: &Context) -> Log {
    let log: Log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let next = RefCell::new(std::collections::HashMap::<EventKind, u64>::new());
    ctx.set_event_trace_callback(move |event, point| {
        if point == Attach && event.tag == 0 {
            let mut next = next.borrow_mut();
            let n = next.entry(event.kind).or_insert(0);
            *n += 1;
            event.tag = *n;
        }
        l.borrow_mut().push((event.kind, event.tag, point));
    });
    log
}

fn take(log: &Log) -> Vec<(EventKind, u64, EventTracePoint)> {
    std::mem::take(&mut *log.borrow_mut())
}

#[test]
fn fd_event_attach_before_handler_detach() {
    for name in tevent::backend::names() {
        let ctx = Context::with_backend(name).unwrap();
        let log = record(&ctx);
        let (_a, b) = UnixStream::pair().unwrap();
        let fde = ctx.add_fd(&b, FdFlags::WRITE, |_, _, _| {}).unwrap();
        assert_eq!(take(&log), [(EventKind::Fd, 1, Attach)], "{name}");
        assert_eq!(fde.tag(), 1, "{name}: the callback's tag is stored");
        ctx.loop_once().unwrap();
        assert_eq!(take(&log), [(EventKind::Fd, 1, BeforeHandler)], "{name}");
        drop(fde);
        assert_eq!(take(&log), [(EventKind::Fd, 1, Detach)], "{name}");
    }
}

#[test]
fn fd_event_dropped_in_its_handler_detaches_once() {
    for name in tevent::backend::names() {
        let ctx = Context::with_backend(name).unwrap();
        let log = record(&ctx);
        let (_a, b) = UnixStream::pair().unwrap();
        let slot = Rc::new(RefCell::new(None));
        let s = slot.clone();
        let fde = ctx
            .add_fd(&b, FdFlags::WRITE, move |_, _, _| {
                s.borrow_mut().take();
            })
            .unwrap();
        *slot.borrow_mut() = Some(fde);
        ctx.loop_once().unwrap();
        assert_eq!(
            take(&log),
            [
                (EventKind::Fd, 1, Attach),
                (EventKind::Fd, 1, BeforeHandler),
                (EventKind::Fd, 1, Detach)
            ],
            "{name}"
        );
    }
}

#[test]
fn timer_detaches_after_firing_and_update_reattaches() {
    for name in tevent::backend::names() {
        let ctx = Context::with_backend(name).unwrap();
        let log = record(&ctx);
        let t = ctx.add_timer(Instant::now(), |_, _, _| {});
        t.update(Instant::now());
        assert_eq!(
            take(&log),
            [
                (EventKind::Timer, 1, Attach),
                (EventKind::Timer, 1, Detach),
                (EventKind::Timer, 1, Attach)
            ],
            "{name}: tevent_update_timer is detach + attach; the tag survives"
        );
        ctx.loop_once().unwrap();
        assert_eq!(
            take(&log),
            [
                (EventKind::Timer, 1, BeforeHandler),
                (EventKind::Timer, 1, Detach)
            ],
            "{name}: a fired timer detaches itself"
        );
        drop(t);
        assert_eq!(take(&log), [], "{name}: no second detach");
    }
}

#[test]
fn timer_dropped_in_its_own_handler_detaches_once() {
    for name in tevent::backend::names() {
        let ctx = Context::with_backend(name).unwrap();
        let log = record(&ctx);
        let slot = Rc::new(RefCell::new(None));
        let s = slot.clone();
        let t = ctx.add_timer(Deadline::Asap, move |_, _, _| {
            s.borrow_mut().take();
        });
        *slot.borrow_mut() = Some(t);
        ctx.loop_once().unwrap();
        assert_eq!(
            take(&log),
            [
                (EventKind::Timer, 1, Attach),
                (EventKind::Timer, 1, BeforeHandler),
                (EventKind::Timer, 1, Detach)
            ],
            "{name}"
        );
    }
}

#[test]
fn a_periodic_timer_keeps_its_tag() {
    for name in tevent::backend::names() {
        let ctx = Context::with_backend(name).unwrap();
        let mut left = 3;
        let t = ctx.add_timer(Deadline::Asap, move |_, timer, now| {
            left -= 1;
            if left > 0 {
                timer.update(now);
            }
        });
        t.set_tag(42);
        ctx.loop_wait().unwrap();
        assert_eq!(t.tag(), 0, "{name}: gone after the last firing");
        let t = ctx.add_timer(Deadline::after(Duration::from_secs(60)), |_, _, _| {});
        t.set_tag(7);
        t.update(Deadline::after(Duration::from_secs(30)));
        assert_eq!(t.tag(), 7, "{name}: a moved timer keeps its tag");
    }
}

#[test]
fn immediate_rescheduled_in_its_handler() {
    for name in tevent::backend::names() {
        let ctx = Context::with_backend(name).unwrap();
        let log = record(&ctx);
        let mut first = true;
        let im = ctx.schedule_immediate(move |_, im| {
            if first {
                first = false;
                im.reschedule();
            }
        });
        assert_eq!(take(&log), [(EventKind::Immediate, 1, Attach)], "{name}");
        ctx.loop_once().unwrap();
        assert_eq!(
            take(&log),
            [
                (EventKind::Immediate, 1, BeforeHandler),
                (EventKind::Immediate, 1, Detach),
                (EventKind::Immediate, 1, Attach)
            ],
            "{name}: rescheduled inside its handler, so no detach afterwards"
        );
        ctx.loop_once().unwrap();
        assert_eq!(
            take(&log),
            [
                (EventKind::Immediate, 1, BeforeHandler),
                (EventKind::Immediate, 1, Detach)
            ],
            "{name}: immediates detach themselves after running"
        );
        assert_eq!(im.tag(), 1, "{name}: the tag survives rescheduling");
        // Scheduling an already scheduled immediate: detach, attach.
        im.reschedule();
        im.reschedule();
        assert_eq!(
            take(&log),
            [
                (EventKind::Immediate, 1, Attach),
                (EventKind::Immediate, 1, Detach),
                (EventKind::Immediate, 1, Attach)
            ],
            "{name}"
        );
        drop(im);
        assert_eq!(take(&log), [(EventKind::Immediate, 1, Detach)], "{name}");
    }
}

#[test]
fn queue_entry_triggered_synchronously_by_an_add_on_an_empty_queue() {
    for name in tevent::backend::names() {
        let ctx = Context::with_backend(name).unwrap();
        let q = Queue::new(&ctx, "q");
        let log = record(&ctx);
        let req: Req<(), ()> = Req::new(&ctx, ());
        let entry = q.add_optimize_empty(&req, |req| {
            req.done(());
        });
        let entry = entry.unwrap();
        assert_eq!(
            take(&log),
            [
                (EventKind::QueueEntry, 1, Attach),
                (EventKind::QueueEntry, 1, BeforeHandler)
            ],
            "{name}: triggered inside the add"
        );
        assert!(!req.is_in_progress(), "{name}");
        drop(req);
        assert_eq!(take(&log), [(EventKind::QueueEntry, 1, Detach)], "{name}");
        drop(entry);
        assert_eq!(take(&log), [], "{name}: the entry was already gone");
    }
}

#[test]
fn queue_entries_triggered_from_the_loop() {
    for name in tevent::backend::names() {
        let ctx = Context::with_backend(name).unwrap();
        let q = Queue::new(&ctx, "q");
        let reqs: Vec<Req<(), ()>> = (0..2).map(|_| Req::new(&ctx, ())).collect();
        let log = record(&ctx);
        for r in &reqs {
            q.add(r, |req| {
                req.done(());
            })
            .unwrap();
        }
        let entries: Vec<_> = take(&log)
            .into_iter()
            .filter(|e| e.0 == EventKind::QueueEntry)
            .collect();
        assert_eq!(
            entries,
            [
                (EventKind::QueueEntry, 1, Attach),
                (EventKind::QueueEntry, 2, Attach)
            ],
            "{name}"
        );
        ctx.loop_once().unwrap();
        let entries: Vec<_> = take(&log)
            .into_iter()
            .filter(|e| e.0 == EventKind::QueueEntry)
            .collect();
        assert_eq!(
            entries,
            [(EventKind::QueueEntry, 1, BeforeHandler)],
            "{name}"
        );
        drop(q);
        assert_eq!(
            take(&log),
            [
                (EventKind::QueueEntry, 1, Detach),
                (EventKind::QueueEntry, 2, Detach)
            ],
            "{name}: dropping the queue detaches its entries in order"
        );
    }
}

#[test]
fn signal_event_trace_and_reinitialise_detaches() {
    let ctx = Context::new().unwrap();
    let log = record(&ctx);
    let se = ctx
        .add_signal(libc::SIGUSR2, SignalFlags::EMPTY, |_, _, _| {})
        .unwrap();
    // SAFETY: raise(3) delivers SIGUSR2 to this thread; a handler is installed.
    unsafe { libc::raise(libc::SIGUSR2) };
    ctx.loop_once().unwrap();
    assert_eq!(
        take(&log),
        [
            (EventKind::Signal, 1, Attach),
            (EventKind::Signal, 1, BeforeHandler)
        ]
    );
    let _im = ctx.schedule_immediate(|_, _| {});
    take(&log);
    ctx.reinitialise().unwrap();
    let mut detached = take(&log);
    detached.sort_by_key(|e| e.0 != EventKind::Signal);
    assert_eq!(
        detached,
        [
            (EventKind::Signal, 1, Detach),
            (EventKind::Immediate, 1, Detach)
        ],
        "re_initialise detaches every event"
    );
    drop(se);
    assert_eq!(take(&log), [], "no second detach");
}

#[test]
fn loop_trace_points_around_the_wait() {
    for name in tevent::backend::names() {
        let ctx = Context::with_backend(name).unwrap();
        let points = Rc::new(RefCell::new(Vec::new()));
        let p = points.clone();
        ctx.set_trace_callback(move |point| p.borrow_mut().push(point));
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"x").unwrap();
        let _fde = ctx.add_fd(&b, FdFlags::READ, |_, fde, _| {
            fde.set_flags(FdFlags::EMPTY).unwrap();
        });
        ctx.loop_once().unwrap();
        assert_eq!(
            *points.borrow(),
            [
                LoopTracePoint::BeforeLoopOnce,
                LoopTracePoint::BeforeWait,
                LoopTracePoint::AfterWait,
                LoopTracePoint::AfterLoopOnce
            ],
            "{name}"
        );
        ctx.clear_trace_callback();
        ctx.set_wait_timeout(Duration::ZERO);
        let _ = ctx.loop_once();
        assert_eq!(points.borrow().len(), 4, "{name}: cleared");
    }
}

/// The `Immediate` trace points of `log` (posts are traced as immediates),
/// without their numbers.
fn immediate_points(log: &Log) -> Vec<EventTracePoint> {
    take(log)
        .into_iter()
        .filter(|e| e.0 == EventKind::Immediate)
        .map(|e| e.2)
        .collect()
}

#[test]
fn a_post_made_again_from_its_own_callback_detaches_the_running_one_first() {
    for name in tevent::backend::names() {
        let ctx = Context::with_backend(name).unwrap();
        ctx.set_wait_timeout(Duration::ZERO);
        let req: Req<(), ()> = Req::new(&ctx, ());
        req.done(());
        let req = req.post();
        let runs = Rc::new(RefCell::new(0));
        let r = runs.clone();
        req.set_callback(move |req| {
            *r.borrow_mut() += 1;
            if *r.borrow() == 1 {
                req.defer_callback();
                req.notify_callback(); // posts it again
            }
        });
        let log = record(&ctx);
        while ctx.loop_once().is_ok() {}
        assert_eq!(*runs.borrow(), 2, "{name}");
        assert_eq!(
            immediate_points(&log),
            [BeforeHandler, Detach, Attach, BeforeHandler, Detach],
            "{name}: as a rescheduled immediate"
        );
    }
}

#[test]
fn queue_triggers_and_posts_trace_balanced() {
    for name in tevent::backend::names() {
        let ctx = Context::with_backend(name).unwrap();
        ctx.set_wait_timeout(Duration::ZERO);
        let log = record(&ctx);
        let q = Queue::new(&ctx, "q");
        let reqs: Vec<Req<u32, ()>> = (0..3).map(|i| Req::new(&ctx, i)).collect();
        for r in &reqs {
            q.add(r, |r| {
                r.done(());
            })
            .unwrap();
            // Received in its callback: the next trigger is posted from
            // inside the running one.
            r.set_callback(|r| {
                r.recv().unwrap();
            });
        }
        while ctx.loop_once().is_ok() {}
        drop(reqs);
        drop(q);
        let points = immediate_points(&log);
        let count = |p| points.iter().filter(|&&x| x == p).count();
        assert_eq!(count(Attach), count(Detach), "{name}: {points:?}");
        assert_eq!(count(BeforeHandler), 3, "{name}: {points:?}");
    }
}

#[test]
fn posts_dropped_by_reinitialise_detach() {
    let ctx = Context::with_backend("poll").unwrap();
    let log = record(&ctx);
    let req: Req<(), ()> = Req::new(&ctx, ());
    req.done(());
    let req = req.post();
    assert_eq!(immediate_points(&log), [Attach]);
    ctx.reinitialise().unwrap();
    assert_eq!(immediate_points(&log), [Detach]);
    // Posted again: a new post, not one replacing the dropped one.
    let req = req.post();
    assert_eq!(immediate_points(&log), [Attach]);
    drop(req);
    assert_eq!(immediate_points(&log), [Detach], "detached once");
}

#[test]
fn a_post_made_again_from_a_nested_iteration_and_from_its_callback_traces_balanced() {
    let ctx = Context::with_backend("poll").unwrap();
    ctx.set_wait_timeout(Duration::ZERO);
    ctx.allow_nesting();
    let log = record(&ctx);
    let a: Req<(), ()> = Req::new(&ctx, ());
    let b: Req<(), ()> = Req::new(&ctx, ());
    a.done(());
    b.done(());
    let a = a.post();
    let b = b.post();
    let a_weak = a.downgrade();
    // B's callback (run by A's nested iteration) posts A again.
    b.set_callback(move |_| {
        if let Some(a) = a_weak.upgrade() {
            drop(a.post());
        }
    });
    let runs = Rc::new(RefCell::new(0));
    let r = runs.clone();
    let nested_ctx = ctx.clone();
    a.set_callback(move |a| {
        *r.borrow_mut() += 1;
        if *r.borrow() == 1 {
            assert!(nested_ctx.try_loop_once().unwrap(), "runs B");
            a.defer_callback();
            a.notify_callback(); // and A posts itself too
        }
    });
    while ctx.loop_once().is_ok() {}
    drop((a, b));
    let points = immediate_points(&log);
    let count = |p| points.iter().filter(|&&x| x == p).count();
    assert_eq!(*runs.borrow(), 2);
    assert_eq!(count(Attach), count(Detach), "{points:?}");
}

#[test]
fn a_removed_queue_entry_detaches_before_the_next_trigger_is_scheduled() {
    // tevent's entry destructor reports DETACH, then schedules the queue's
    // immediate for the next entry.
    let ctx = Context::new().unwrap();
    let queue = Queue::new(&ctx, "q");
    let first: Req<(), ()> = Req::new(&ctx, ());
    let second: Req<(), ()> = Req::new(&ctx, ());
    queue.add(&first, |_| {}).unwrap();
    queue.add(&second, |_| {}).unwrap();
    ctx.loop_once().unwrap(); // triggers the first
    let log = record(&ctx);
    drop(first);
    let points: Vec<_> = take(&log).into_iter().map(|(k, _, p)| (k, p)).collect();
    assert_eq!(
        points,
        [
            (EventKind::QueueEntry, Detach),
            (EventKind::Immediate, Attach)
        ]
    );
    drop(second);
}
