//! Immediates: FIFO, moving to the tail, reset, reschedule, detach, tags.

mod util;

use tevent::{Context, Immediate};
use util::{assert_idle, each_backend, loop_wait_bounded, polling, run_until_idle, Counter, Log};

fn logging(ctx: &Context, log: &Log, label: &'static str) -> Immediate {
    let l = log.clone();
    ctx.schedule_immediate(move |_, _| l.push(label))
}

/// Run `n` iterations, checking that each runs exactly one immediate.
fn run_one_each(name: &str, ctx: &Context, log: &Log, n: usize) {
    for i in 0..n {
        let before = log.len();
        ctx.loop_once()
            .unwrap_or_else(|e| panic!("backend {name}: {e}"));
        assert_eq!(
            log.len(),
            before + 1,
            "backend {name}: iteration {i} must run exactly one immediate"
        );
    }
}

#[test]
fn immediates_run_first_in_first_out_one_per_iteration() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let log = Log::new();
        let _ims = [
            logging(&ctx, &log, "a"),
            logging(&ctx, &log, "b"),
            logging(&ctx, &log, "c"),
        ];
        run_one_each(name, &ctx, &log, 3);
        assert_eq!(log.get(), ["a", "b", "c"], "backend {name}");
        assert_idle(name, &ctx);
    });
}

#[test]
fn scheduling_a_scheduled_immediate_moves_it_to_the_tail() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let log = Log::new();
        let a = logging(&ctx, &log, "a");
        let b = logging(&ctx, &log, "b");
        let c = logging(&ctx, &log, "c");
        // With a new handler...
        let l = log.clone();
        a.schedule(move |_, _| l.push("a2"));
        // ...or the same one.
        assert!(b.reschedule(), "backend {name}");
        assert!(a.is_scheduled() && b.is_scheduled(), "backend {name}");
        run_one_each(name, &ctx, &log, 3);
        assert_eq!(log.get(), ["c", "a2", "b"], "backend {name}");
        assert_idle(name, &ctx);
        drop(c);
    });
}

#[test]
fn reset_unschedules_and_keeps_the_immediate_reusable() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let log = Log::new();
        let a = logging(&ctx, &log, "a");
        let _b = logging(&ctx, &log, "b");
        a.reset();
        assert!(!a.is_scheduled(), "backend {name}");
        a.reset(); // twice is harmless
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["b"], "backend {name}");
        assert!(!ctx.has_events(), "backend {name}");
        // Its handler is kept.
        assert!(a.reschedule(), "backend {name}");
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["a"], "backend {name}");
        // And it takes new ones.
        let l = log.clone();
        a.schedule(move |_, _| l.push("a-again"));
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["a-again"], "backend {name}");
    });
}

#[test]
fn reschedule_reuses_the_last_handler() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let im = ctx.create_immediate();
        assert!(!im.is_scheduled(), "backend {name}");
        assert!(!im.reschedule(), "backend {name}: no handler was ever set");
        assert!(!im.is_scheduled(), "backend {name}");
        assert!(!ctx.has_events(), "backend {name}");
        let runs = Counter::new();
        let r = runs.clone();
        im.schedule(move |_, _| r.inc());
        for i in 1..=3 {
            assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
            assert_eq!(runs.get(), i, "backend {name}");
            assert!(!im.is_scheduled(), "backend {name}");
            assert!(im.reschedule(), "backend {name}");
        }
    });
}

#[test]
fn dropping_an_immediate_cancels_it() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let runs = Counter::new();
        let r = runs.clone();
        let (guard, freed) = util::drop_flag();
        let im = ctx.schedule_immediate(move |_, _| {
            let _ = &guard;
            r.inc()
        });
        assert!(ctx.has_events(), "backend {name}");
        drop(im);
        assert!(freed.get(), "backend {name}: the handler is freed");
        assert!(!ctx.has_events(), "backend {name}");
        assert_idle(name, &ctx);
        assert_eq!(runs.get(), 0, "backend {name}");
    });
}

#[test]
fn a_self_rescheduling_immediate_runs_after_those_queued_before_it() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let log = Log::new();
        let l = log.clone();
        let mut first = true;
        let _a = ctx.schedule_immediate(move |_, im| {
            l.push("a");
            if first {
                first = false;
                im.reschedule();
                assert!(im.is_scheduled());
            }
        });
        let _b = logging(&ctx, &log, "b");
        let _c = logging(&ctx, &log, "c");
        run_one_each(name, &ctx, &log, 4);
        assert_eq!(log.get(), ["a", "b", "c", "a"], "backend {name}");
        assert_idle(name, &ctx);
    });
}

#[test]
fn a_handler_can_schedule_a_new_handler_on_its_immediate() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let log = Log::new();
        let l = log.clone();
        let im = ctx.schedule_immediate(move |_, im| {
            l.push("first");
            let l2 = l.clone();
            im.schedule(move |_, _| l2.push("second"));
        });
        assert_eq!(run_until_idle(name, &ctx, 10), 2, "backend {name}");
        assert_eq!(log.take(), ["first", "second"], "backend {name}");
        // The last handler set is the one kept.
        assert!(im.reschedule(), "backend {name}");
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["second"], "backend {name}");
    });
}

#[test]
fn a_detached_immediate_runs_once_then_is_freed() {
    each_backend(|name, ctx| {
        let runs = Counter::new();
        let r = runs.clone();
        let (guard, freed) = util::drop_flag();
        ctx.schedule_immediate(move |_, _| {
            let _ = &guard;
            r.inc()
        })
        .detach();
        assert!(ctx.has_events(), "backend {name}");
        assert!(!freed.get(), "backend {name}");
        loop_wait_bounded(name, &ctx, 10);
        assert_eq!(runs.get(), 1, "backend {name}");
        assert!(freed.get(), "backend {name}: freed after it ran");
    });
}

#[test]
fn a_detached_immediate_may_reschedule_itself() {
    each_backend(|name, ctx| {
        let runs = Counter::new();
        let r = runs.clone();
        let (guard, freed) = util::drop_flag();
        ctx.schedule_immediate(move |_, im| {
            let _ = &guard;
            r.inc();
            if r.get() < 3 {
                im.reschedule();
            }
        })
        .detach();
        loop_wait_bounded(name, &ctx, 10);
        assert_eq!(runs.get(), 3, "backend {name}");
        assert!(freed.get(), "backend {name}");
    });
}

#[test]
fn tag_survives_rescheduling() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let seen = Log::new();
        let s = seen.clone();
        let im = ctx.create_immediate();
        im.set_tag(7);
        im.schedule(move |_, im| {
            s.push(im.tag().to_string());
            if s.len() < 2 {
                im.reschedule();
            }
        });
        assert_eq!(im.tag(), 7, "backend {name}");
        assert_eq!(run_until_idle(name, &ctx, 10), 2, "backend {name}");
        assert_eq!(seen.get(), ["7", "7"], "backend {name}");
        let s = seen.clone();
        im.schedule(move |_, im| s.push(im.tag().to_string()));
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(im.tag(), 7, "backend {name}");
        assert_eq!(seen.get(), ["7", "7", "7"], "backend {name}");
    });
}

#[test]
fn debug_shows_where_the_immediate_was_created() {
    each_backend(|name, ctx| {
        #[rustfmt::skip]
        let (im, line) = (ctx.create_immediate(), line!());
        let debug = format!("{im:?}");
        let here = format!("{}:{}", file!(), line);
        assert!(
            debug.contains(&here),
            "backend {name}: {debug} lacks {here}"
        );
    });
}
