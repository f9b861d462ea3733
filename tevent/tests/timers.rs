//! Timers: order, one per iteration, moving, cancelling, a large queue
//! against a sorted model.

mod util;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tevent::{Context, Deadline, Timer};
use util::{
    assert_idle, context_with_past, each_backend, loop_wait_bounded, polling, run_until_idle,
    Counter, Log, Rng,
};

/// A window of due deadlines after the context's creation.
const PAST: Duration = Duration::from_millis(20);

fn logging_timer(ctx: &Context, log: &Log, deadline: impl Into<Deadline>, label: &str) -> Timer {
    let l = log.clone();
    let label = label.to_string();
    ctx.add_timer(deadline, move |_, _, _| l.push(label.clone()))
}

/// Run `n` iterations, checking that each fires exactly one timer.
fn run_one_each(name: &str, ctx: &Context, log: &Log, n: usize) {
    for i in 0..n {
        let before = log.len();
        ctx.loop_once()
            .unwrap_or_else(|e| panic!("backend {name}: {e}"));
        assert_eq!(
            log.len(),
            before + 1,
            "backend {name}: iteration {i} must fire exactly one timer"
        );
    }
}

#[test]
fn timers_fire_in_deadline_order_one_per_iteration() {
    for name in util::backends() {
        let (ctx, base) = context_with_past(name, PAST);
        polling(&ctx);
        let log = Log::new();
        let ms = Duration::from_millis;
        let _t = [
            logging_timer(&ctx, &log, base + ms(3), "3"),
            logging_timer(&ctx, &log, base + ms(1), "1"),
            logging_timer(&ctx, &log, base + ms(4), "4"),
            logging_timer(&ctx, &log, base + ms(2), "2"),
        ];
        run_one_each(name, &ctx, &log, 4);
        assert_eq!(log.get(), ["1", "2", "3", "4"], "backend {name}");
        assert_idle(name, &ctx);
    }
}

#[test]
fn equal_deadlines_fire_first_in_first_out() {
    for name in util::backends() {
        let (ctx, base) = context_with_past(name, PAST);
        polling(&ctx);
        let log = Log::new();
        let at = base + Duration::from_millis(5);
        let earlier = base + Duration::from_millis(1);
        let _t = [
            logging_timer(&ctx, &log, at, "a"),
            logging_timer(&ctx, &log, at, "b"),
            logging_timer(&ctx, &log, earlier, "first"),
            logging_timer(&ctx, &log, at, "c"),
            logging_timer(&ctx, &log, at, "d"),
        ];
        run_one_each(name, &ctx, &log, 5);
        assert_eq!(log.get(), ["first", "a", "b", "c", "d"], "backend {name}");
    }
}

#[test]
fn asap_timers_fire_first_and_in_the_order_added() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let log = Log::new();
        let now = Instant::now();
        let _t = [
            logging_timer(&ctx, &log, now, "now1"),
            logging_timer(&ctx, &log, Deadline::Asap, "asap1"),
            logging_timer(&ctx, &log, now, "now2"),
            logging_timer(&ctx, &log, Deadline::Asap, "asap2"),
            logging_timer(&ctx, &log, Deadline::Asap, "asap3"),
        ];
        run_one_each(name, &ctx, &log, 5);
        assert_eq!(
            log.get(),
            ["asap1", "asap2", "asap3", "now1", "now2"],
            "backend {name}"
        );
    });
}

#[test]
fn a_timer_that_is_not_due_does_not_fire() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let log = Log::new();
        let late = logging_timer(
            &ctx,
            &log,
            Deadline::after(Duration::from_secs(3600)),
            "late",
        );
        let _due = logging_timer(&ctx, &log, Deadline::Asap, "due");
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.get(), ["due"], "backend {name}");
        assert!(late.is_pending(), "backend {name}");
    });
}

#[test]
fn update_moves_a_timer_later_and_earlier() {
    for name in util::backends() {
        let (ctx, base) = context_with_past(name, PAST);
        polling(&ctx);
        let log = Log::new();
        let ms = Duration::from_millis;
        let a = logging_timer(&ctx, &log, base + ms(1), "a");
        let b = logging_timer(&ctx, &log, base + ms(2), "b");
        let c = logging_timer(&ctx, &log, base + ms(3), "c");
        // a: later than c; c: earlier than everything.
        assert!(a.update(base + ms(4)), "backend {name}");
        assert!(c.update(base), "backend {name}");
        assert_eq!(
            a.deadline(),
            Some(Deadline::At(base + ms(4))),
            "backend {name}"
        );
        run_one_each(name, &ctx, &log, 3);
        assert_eq!(log.take(), ["c", "b", "a"], "backend {name}");

        // A far-away timer moved into the past fires; a due one moved far
        // away does not.
        let far = logging_timer(
            &ctx,
            &log,
            Deadline::after(Duration::from_secs(3600)),
            "far",
        );
        let due = logging_timer(&ctx, &log, base, "due");
        assert!(far.update(base + ms(1)), "backend {name}");
        assert!(
            due.update(Deadline::after(Duration::from_secs(3600))),
            "backend {name}"
        );
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["far"], "backend {name}");
        assert!(due.is_pending(), "backend {name}");

        // Moving to a deadline already taken goes behind the timers there.
        let x = logging_timer(&ctx, &log, base + ms(7), "x");
        let y = logging_timer(&ctx, &log, base + ms(5), "y");
        let z = logging_timer(&ctx, &log, base + ms(5), "z");
        assert!(y.update(base + ms(5)), "backend {name}");
        assert!(x.update(Deadline::Asap), "backend {name}");
        run_one_each(name, &ctx, &log, 3);
        assert_eq!(log.take(), ["x", "z", "y"], "backend {name}");
        drop((a, b, c, z));
    }
}

#[test]
fn a_fired_timer_is_gone() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let fired = Counter::new();
        let f = fired.clone();
        let t = ctx.add_timer(Deadline::Asap, move |_, _, _| f.inc());
        assert!(t.is_pending(), "backend {name}");
        assert_eq!(t.deadline(), Some(Deadline::Asap), "backend {name}");
        ctx.loop_once().unwrap();
        assert_eq!(fired.get(), 1, "backend {name}");
        assert!(!t.is_pending(), "backend {name}");
        assert_eq!(t.deadline(), None, "backend {name}");
        assert!(
            !t.update(Deadline::Asap),
            "backend {name}: update of a fired timer"
        );
        assert!(!ctx.has_events(), "backend {name}");
        assert_idle(name, &ctx);
        assert_eq!(fired.get(), 1, "backend {name}: a timer fires once");
        assert!(format!("{t:?}").contains("gone"), "backend {name}");
    });
}

#[test]
fn dropping_a_timer_cancels_it() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let fired = Counter::new();
        let f = fired.clone();
        let (guard, freed) = util::drop_flag();
        let t = ctx.add_timer(Deadline::Asap, move |_, _, _| {
            let _ = &guard;
            f.inc()
        });
        assert!(ctx.has_events(), "backend {name}");
        drop(t);
        assert!(freed.get(), "backend {name}: the handler is freed");
        assert!(!ctx.has_events(), "backend {name}");
        assert_idle(name, &ctx);
        assert_eq!(fired.get(), 0, "backend {name}");
    });
}

#[test]
fn a_detached_timer_fires_and_is_freed() {
    each_backend(|name, ctx| {
        let fired = Counter::new();
        let f = fired.clone();
        let (guard, freed) = util::drop_flag();
        ctx.add_timer(Deadline::after(Duration::from_millis(1)), move |_, _, _| {
            let _ = &guard;
            f.inc()
        })
        .detach();
        assert!(ctx.has_events(), "backend {name}");
        loop_wait_bounded(name, &ctx, 100);
        assert_eq!(fired.get(), 1, "backend {name}");
        assert!(freed.get(), "backend {name}: freed after firing");
    });
}

#[test]
fn the_handler_gets_a_time_at_or_after_the_deadline() {
    each_backend(|name, ctx| {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let mut timers = Vec::new();
        for delay_ms in [0u64, 1, 3] {
            let deadline = Instant::now() + Duration::from_millis(delay_ms);
            let s = seen.clone();
            timers.push(ctx.add_timer(deadline, move |_, _, now| {
                s.borrow_mut().push((deadline, now));
            }));
        }
        let asap_added = Instant::now();
        let s = seen.clone();
        timers.push(ctx.add_timer(Deadline::Asap, move |_, _, now| {
            s.borrow_mut().push((asap_added, now));
        }));
        loop_wait_bounded(name, &ctx, 100);
        assert_eq!(seen.borrow().len(), 4, "backend {name}");
        for (deadline, now) in seen.borrow().iter() {
            assert!(now >= deadline, "backend {name}: {now:?} < {deadline:?}");
        }
    });
}

#[test]
fn tag_survives_update() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let t = ctx.add_timer(Deadline::after(Duration::from_secs(3600)), |_, t, _| {
            assert_eq!(t.tag(), 9);
        });
        t.set_tag(9);
        assert!(t.update(Deadline::Asap), "backend {name}");
        assert_eq!(t.tag(), 9, "backend {name}");
        ctx.loop_once().unwrap();
        assert!(!t.is_pending(), "backend {name}");
    });
}

#[test]
fn debug_shows_where_the_timer_was_created() {
    each_backend(|name, ctx| {
        #[rustfmt::skip]
        let (t, line) = (ctx.add_timer(Deadline::Asap, |_, _, _| {}), line!());
        let debug = format!("{t:?}");
        let here = format!("{}:{}", file!(), line);
        assert!(
            debug.contains(&here),
            "backend {name}: {debug} lacks {here}"
        );
    });
}

/// Add `n` timers with pseudo-random, already due deadlines (many equal),
/// drop the ones `cancel` picks, and check that the rest fire one per
/// iteration in (deadline, insertion) order.
fn random_timers_against_a_sorted_model(seed: u64, n: usize, cancel: impl Fn(&mut Rng) -> bool) {
    for name in util::backends() {
        let (ctx, base) = context_with_past(name, PAST);
        polling(&ctx);
        let fired = Rc::new(RefCell::new(Vec::with_capacity(n)));
        let mut rng = Rng::new(seed);
        let mut model = Vec::with_capacity(n);
        let mut timers = Vec::with_capacity(n);
        for id in 0..n {
            // Microsecond steps in a window of PAST: collisions are likely,
            // which also exercises the first-in, first-out rule.
            let offset = Duration::from_micros(rng.below(PAST.as_micros() as u64));
            let f = fired.clone();
            timers.push(Some(
                ctx.add_timer(base + offset, move |_, _, _| f.borrow_mut().push(id)),
            ));
            model.push((offset, id));
        }
        let mut kept = Vec::with_capacity(n);
        for (offset, id) in model {
            if cancel(&mut rng) {
                timers[id] = None;
            } else {
                kept.push((offset, id));
            }
        }
        kept.sort();
        let expected: Vec<usize> = kept.iter().map(|&(_, id)| id).collect();
        for i in 0..expected.len() {
            ctx.loop_once()
                .unwrap_or_else(|e| panic!("backend {name}: {e}"));
            assert_eq!(
                fired.borrow().len(),
                i + 1,
                "backend {name}: one timer per iteration"
            );
        }
        assert_idle(name, &ctx);
        assert!(!ctx.has_events(), "backend {name}");
        let fired = fired.borrow();
        if *fired != expected {
            let first = fired.iter().zip(&expected).position(|(a, b)| a != b);
            panic!(
                "backend {name}: {} timers fired out of order, first difference at {first:?}",
                fired.len()
            );
        }
    }
}

#[test]
fn ten_thousand_random_timers_fire_in_sorted_order() {
    random_timers_against_a_sorted_model(0x5eed, 10_000, |_| false);
}

#[test]
fn cancelling_a_random_half_leaves_the_rest_in_order() {
    random_timers_against_a_sorted_model(0xc0ffee, 10_000, |rng| rng.below(2) == 0);
}

/// A deadline before the context was created is as legal as any other
/// (an `Instant` taken earlier, a deadline computed from an old request):
/// such timers must still fire in deadline order.
#[test]
fn deadlines_before_the_context_was_created_fire_in_deadline_order() {
    let long_ago = Instant::now()
        .checked_sub(Duration::from_secs(1))
        .expect("monotonic clock older than 1s");
    each_backend(|name, ctx| {
        polling(&ctx);
        let log = Log::new();
        let ms = Duration::from_millis;
        let _t = [
            logging_timer(&ctx, &log, long_ago + ms(30), "3"),
            logging_timer(&ctx, &log, long_ago + ms(10), "1"),
            logging_timer(&ctx, &log, long_ago + ms(20), "2"),
        ];
        run_one_each(name, &ctx, &log, 3);
        assert_eq!(log.get(), ["1", "2", "3"], "backend {name}");
    });
}

/// When nothing else is ready, one `loop_once` waits for the first timer
/// and fires it (tevent runs the due timer after the wait times out).
#[test]
fn one_loop_once_waits_for_the_next_timer_and_fires_it() {
    each_backend(|name, ctx| {
        let fired = Counter::new();
        let f = fired.clone();
        let (_w, r) = util::pair();
        let _idle_fd = ctx.add_fd(&r, tevent::FdFlags::READ, |_, _, _| {}).unwrap();
        let _t = ctx.add_timer(Deadline::after(Duration::from_millis(5)), move |_, _, _| {
            f.inc()
        });
        ctx.loop_once().unwrap();
        assert_eq!(fired.get(), 1, "backend {name}");
    });
}
