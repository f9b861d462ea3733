//! A handler that panics: the panic reaches the caller of `loop_once`, and
//! the context stays usable. (A signal handler's panic: see `signals.rs`.)

mod util;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use tevent::{Context, Deadline, FdFlags};
use util::{assert_idle, each_backend, polling, run_until_idle, Counter, Log};

/// Run one iteration that must panic with `message`.
#[track_caller]
fn loop_once_panics(name: &str, ctx: &Context, message: &str) {
    let result = catch_unwind(AssertUnwindSafe(|| ctx.loop_once()));
    let payload = match result {
        Err(payload) => payload,
        Ok(r) => panic!("backend {name}: loop_once returned {r:?} instead of panicking"),
    };
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert_eq!(
        text, message,
        "backend {name}: the handler's panic propagates"
    );
    assert_eq!(
        ctx.nesting_level(),
        0,
        "backend {name}: nesting level restored"
    );
}

#[test]
fn fd_handler_panic_propagates_and_the_event_stays_registered() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (_w, r) = util::readable_pair(1);
        let calls = Counter::new();
        let c = calls.clone();
        let fde = ctx
            .add_fd(&r, FdFlags::READ, move |_, fde, _| {
                c.inc();
                if c.get() == 1 {
                    panic!("fd handler");
                }
                fde.set_flags(FdFlags::EMPTY).unwrap();
            })
            .unwrap();
        loop_once_panics(name, &ctx, "fd handler");
        assert_eq!(fde.flags(), FdFlags::READ, "backend {name}");
        assert!(ctx.has_events(), "backend {name}");
        // Called again, as if it had returned.
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(calls.get(), 2, "backend {name}");
    });
}

#[test]
fn immediate_that_panicked_is_unscheduled_and_reusable() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let log = Log::new();
        let l = log.clone();
        let mut first = true;
        let im = ctx.schedule_immediate(move |_, _| {
            l.push("bad");
            if std::mem::take(&mut first) {
                panic!("immediate");
            }
        });
        let l = log.clone();
        let _next = ctx.schedule_immediate(move |_, _| l.push("next"));
        loop_once_panics(name, &ctx, "immediate");
        assert!(!im.is_scheduled(), "backend {name}");
        // The others run normally.
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["bad", "next"], "backend {name}");
        // It kept its handler.
        assert!(im.reschedule(), "backend {name}");
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["bad"], "backend {name}");
    });
}

#[test]
fn timer_that_panicked_is_gone() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let log = Log::new();
        let l = log.clone();
        let (guard, freed) = util::drop_flag();
        let t = ctx.add_timer(Deadline::Asap, move |_, _, _| {
            let _ = &guard;
            l.push("bad");
            panic!("timer");
        });
        let l = log.clone();
        let _next = ctx.add_timer(Deadline::Asap, move |_, _, _| l.push("next"));
        loop_once_panics(name, &ctx, "timer");
        assert!(!t.is_pending(), "backend {name}");
        assert!(!t.update(Deadline::Asap), "backend {name}");
        assert!(freed.get(), "backend {name}: its handler was freed");
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.get(), ["bad", "next"], "backend {name}");
        assert!(!ctx.has_events(), "backend {name}");
    });
}

#[test]
fn timer_that_rearmed_itself_before_panicking_stays_pending() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let runs = Counter::new();
        let r = runs.clone();
        let t = ctx.add_timer(Deadline::Asap, move |_, t, _| {
            r.inc();
            if r.get() == 1 {
                t.update(Deadline::Asap);
                panic!("rearmed timer");
            }
        });
        loop_once_panics(name, &ctx, "rearmed timer");
        assert!(t.is_pending(), "backend {name}");
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(runs.get(), 2, "backend {name}");
    });
}

#[test]
fn context_is_fully_usable_after_a_panic() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let _im = ctx.schedule_immediate(|_, _| panic!("boom"));
        loop_once_panics(name, &ctx, "boom");
        // Every table can be borrowed again: add, change and run events of
        // every kind.
        let log = Log::new();
        let l = log.clone();
        let _i = ctx.schedule_immediate(move |_, _| l.push("immediate"));
        let l = log.clone();
        let t = ctx.add_timer(
            Deadline::after(Duration::from_secs(3600)),
            move |_, _, _| l.push("timer"),
        );
        assert!(t.update(Deadline::Asap));
        let (_w, r) = util::readable_pair(1);
        let l = log.clone();
        let fde = ctx
            .add_fd(&r, FdFlags::EMPTY, move |_, fde, _| {
                l.push("fd");
                fde.set_flags(FdFlags::EMPTY).unwrap();
            })
            .unwrap();
        fde.set_flags(FdFlags::READ).unwrap();
        assert_eq!(run_until_idle(name, &ctx, 10), 3, "backend {name}");
        assert_eq!(log.get(), ["immediate", "timer", "fd"], "backend {name}");
        assert_idle(name, &ctx);
        ctx.loop_wait().unwrap();
    });
}

#[test]
fn panic_in_a_nested_loop_unwinds_both_levels() {
    each_backend(|name, ctx| {
        polling(&ctx);
        ctx.allow_nesting();
        let _outer = ctx.schedule_immediate(|ctx, _| {
            assert_eq!(ctx.nesting_level(), 1);
            let _ = ctx.loop_once();
            unreachable!("the inner panic unwinds through here");
        });
        let _inner = ctx.schedule_immediate(|ctx, _| {
            assert_eq!(ctx.nesting_level(), 2);
            panic!("inner");
        });
        loop_once_panics(name, &ctx, "inner");
        assert_idle(name, &ctx);
        let runs = Counter::new();
        let r = runs.clone();
        let _after = ctx.schedule_immediate(move |ctx, _| {
            assert_eq!(ctx.nesting_level(), 1);
            r.inc()
        });
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(runs.get(), 1, "backend {name}");
    });
}

#[test]
fn a_traced_post_whose_callback_panicked_traces_its_next_post_normally() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let points = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let p = points.clone();
        ctx.set_event_trace_callback(move |event, point| {
            if event.kind == tevent::EventKind::Immediate {
                p.borrow_mut().push(point);
            }
        });
        let req: tevent::Req<(), ()> = tevent::Req::new(&ctx, ());
        req.done(());
        let req = req.post();
        let calls = Counter::default();
        let c = calls.clone();
        req.set_callback(move |_| {
            c.inc();
            if c.get() == 1 {
                panic!("callback");
            }
        });
        loop_once_panics(name, &ctx, "callback");
        assert_eq!(
            std::mem::take(&mut *points.borrow_mut()),
            [
                tevent::EventTracePoint::Attach,
                tevent::EventTracePoint::BeforeHandler,
                tevent::EventTracePoint::Detach
            ],
            "backend {name}: detached by the unwinding, as an immediate"
        );
        // (The callback that panicked is gone with the unwinding.)
        let c = calls.clone();
        req.set_callback(move |_| c.inc());
        // Posted again: a plain new post, not a re-post of a running one.
        let req = req.post();
        assert_eq!(
            *points.borrow(),
            [tevent::EventTracePoint::Attach],
            "backend {name}"
        );
        run_until_idle(name, &ctx, 3);
        assert_eq!(calls.get(), 2, "backend {name}");
        drop(req);
    });
}

#[test]
fn a_callback_that_panics_with_a_notice_pending_does_not_pass_it_on() {
    // The callback finishes its request from a progress notice (a notice
    // is then pending for it), then panics: the next callback set runs
    // once per notice, not once more for the lost one.
    let ctx = Context::new().unwrap();
    let req: tevent::Req<(), ()> = tevent::Req::new(&ctx, ());
    req.set_callback(|r| {
        if r.is_in_progress() {
            r.done(());
            panic!("callback");
        }
    });
    assert!(catch_unwind(AssertUnwindSafe(|| req.notify_callback())).is_err());
    let calls = std::rc::Rc::new(std::cell::Cell::new(0));
    let c = calls.clone();
    req.set_callback(move |_| c.set(c.get() + 1));
    req.notify_callback();
    assert_eq!(calls.get(), 1);
}

#[test]
fn a_cleanup_function_that_panics_leaves_the_request_usable() {
    let ctx = Context::new().unwrap();
    let req: tevent::Req<u32, u32> = tevent::Req::new(&ctx, 7);
    req.set_cleanup_fn(|_, state| {
        if state == tevent::ReqState::Done {
            panic!("cleanup");
        }
    });
    assert!(catch_unwind(AssertUnwindSafe(|| req.done(1))).is_err());
    assert_eq!(req.status(), tevent::ReqState::Done);
    assert_eq!(req.try_state().map(|s| *s), Some(7), "the state is back");
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let s = seen.clone();
    req.set_cleanup_fn(move |_, state| s.borrow_mut().push(state));
    assert_eq!(req.recv(), Ok(1));
    assert_eq!(*seen.borrow(), [tevent::ReqState::Received]);
}

#[test]
fn a_callback_that_panicked_stays_set() {
    let ctx = Context::new().unwrap();
    let req: tevent::Req<(), ()> = tevent::Req::new(&ctx, ());
    let calls = std::rc::Rc::new(std::cell::Cell::new(0));
    let c = calls.clone();
    req.set_callback(move |r| {
        c.set(c.get() + 1);
        if r.is_in_progress() {
            panic!("progress");
        }
    });
    assert!(catch_unwind(AssertUnwindSafe(|| req.notify_callback())).is_err());
    req.done(());
    assert_eq!(calls.get(), 2, "the completion reached the callback");
}

#[test]
fn a_nested_callback_that_panics_keeps_the_outer_ones_pending_notice() {
    // A gets a notice while it runs (held for A), sets B, and notifies:
    // B runs nested and panics; A catches it. A's notice still comes, and
    // B (set by A) stays the callback.
    let ctx = Context::new().unwrap();
    let req: tevent::Req<(), ()> = tevent::Req::new(&ctx, ());
    let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let l = log.clone();
    req.set_callback(move |r| {
        l.borrow_mut().push("A");
        if l.borrow().len() > 1 {
            return;
        }
        r.notify_callback(); // held for A
        let l2 = l.clone();
        r.set_callback(move |_| {
            l2.borrow_mut().push("B");
            if l2.borrow().len() == 2 {
                panic!("B");
            }
        });
        assert!(catch_unwind(AssertUnwindSafe(|| r.notify_callback())).is_err());
    });
    req.notify_callback();
    assert_eq!(*log.borrow(), ["A", "B", "A"]);
    req.notify_callback();
    assert_eq!(*log.borrow(), ["A", "B", "A", "B"]);
}
