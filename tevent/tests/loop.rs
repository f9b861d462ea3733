//! The loop itself: when `loop_wait` ends, polling mode, wait timeouts,
//! backend selection, and the order of one iteration (signals excepted:
//! they are in `signals.rs`).

mod util;

use std::io::Write;
use std::time::{Duration, Instant};

use tevent::{Context, Deadline, Error, FdFlags, DEFAULT_WAIT_TIMEOUT};
use util::{assert_idle, each_backend, loop_wait_bounded, polling, Counter, Log};

#[test]
fn loop_wait_returns_at_once_without_events() {
    each_backend(|name, ctx| {
        assert!(!ctx.has_events(), "backend {name}");
        ctx.loop_wait()
            .unwrap_or_else(|e| panic!("backend {name}: {e}"));
    });
}

#[test]
fn loop_wait_runs_timers_until_none_remain() {
    each_backend(|name, ctx| {
        let fired = Counter::new();
        let f = fired.clone();
        let _t1 = ctx.add_timer(Deadline::Asap, move |_, _, _| f.inc());
        let f = fired.clone();
        let _t2 = ctx.add_timer(Deadline::after(Duration::from_millis(2)), move |_, _, _| {
            f.inc()
        });
        assert!(ctx.has_events(), "backend {name}");
        loop_wait_bounded(name, &ctx, 100);
        assert_eq!(fired.get(), 2, "backend {name}");
        assert!(!ctx.has_events(), "backend {name}");
    });
}

#[test]
fn loop_wait_runs_immediates_until_none_remain() {
    each_backend(|name, ctx| {
        let runs = Counter::new();
        let r = runs.clone();
        let _im = ctx.schedule_immediate(move |_, im| {
            r.inc();
            if r.get() < 3 {
                im.reschedule();
            }
        });
        assert!(ctx.has_events(), "backend {name}");
        let iterations = loop_wait_bounded(name, &ctx, 100);
        assert_eq!(runs.get(), 3, "backend {name}");
        assert_eq!(iterations, 3, "backend {name}: one immediate per loop_once");
    });
}

#[test]
fn loop_wait_runs_an_active_fd_event_until_it_is_disabled() {
    each_backend(|name, ctx| {
        let (_w, r) = util::readable_pair(1);
        let calls = Counter::new();
        let c = calls.clone();
        let fde = ctx
            .add_fd(&r, FdFlags::READ, move |_, fde, _| {
                c.inc();
                if c.get() == 3 {
                    fde.set_flags(FdFlags::EMPTY).unwrap();
                }
            })
            .unwrap();
        assert!(ctx.has_events(), "backend {name}");
        loop_wait_bounded(name, &ctx, 100);
        assert_eq!(calls.get(), 3, "backend {name}");
        assert_eq!(fde.flags(), FdFlags::EMPTY, "backend {name}");
    });
}

#[test]
fn disabled_fd_event_does_not_keep_loop_wait_running() {
    each_backend(|name, ctx| {
        let (_w, r) = util::readable_pair(1);
        let calls = Counter::new();
        let c = calls.clone();
        let fde = ctx
            .add_fd(&r, FdFlags::EMPTY, move |_, _, _| c.inc())
            .unwrap();
        assert!(!ctx.has_events(), "backend {name}");
        ctx.loop_wait()
            .unwrap_or_else(|e| panic!("backend {name}: {e}"));
        assert_eq!(calls.get(), 0, "backend {name}");
        // Disabled later, it stops counting too.
        fde.set_flags(FdFlags::READ).unwrap();
        assert!(ctx.has_events(), "backend {name}");
        fde.set_flags(FdFlags::EMPTY).unwrap();
        assert!(!ctx.has_events(), "backend {name}");
        ctx.loop_wait()
            .unwrap_or_else(|e| panic!("backend {name}: {e}"));
        assert_eq!(calls.get(), 0, "backend {name}");
    });
}

#[test]
fn unscheduled_immediate_does_not_keep_loop_wait_running() {
    each_backend(|name, ctx| {
        let never = ctx.create_immediate();
        assert!(!ctx.has_events(), "backend {name}");
        ctx.loop_wait()
            .unwrap_or_else(|e| panic!("backend {name}: {e}"));

        // Nor does one that ran and was not rescheduled, or one reset.
        let runs = Counter::new();
        let r = runs.clone();
        let ran = ctx.schedule_immediate(move |_, _| r.inc());
        let r = runs.clone();
        let reset = ctx.schedule_immediate(move |_, _| r.inc());
        reset.reset();
        loop_wait_bounded(name, &ctx, 10);
        assert_eq!(runs.get(), 1, "backend {name}");
        assert!(!ctx.has_events(), "backend {name}");
        drop((never, ran, reset));
    });
}

#[test]
fn polling_mode_returns_would_block_when_nothing_is_ready() {
    each_backend(|name, ctx| {
        assert_eq!(
            ctx.set_wait_timeout(Duration::ZERO),
            DEFAULT_WAIT_TIMEOUT,
            "backend {name}: the previous value is returned"
        );
        assert_eq!(
            ctx.set_wait_timeout(Duration::ZERO),
            Duration::ZERO,
            "backend {name}"
        );
        // Nothing registered.
        let r = ctx.loop_once();
        assert!(matches!(r, Err(Error::WouldBlock)), "backend {name}: {r:?}");
        assert_eq!(r.unwrap_err().errno(), Some(libc::EAGAIN), "backend {name}");

        // A timer that is not due, and an fd that is not ready.
        let fired = Counter::new();
        let f = fired.clone();
        let _t = ctx.add_timer(
            Deadline::after(Duration::from_secs(3600)),
            move |_, _, _| f.inc(),
        );
        let (_w, r) = util::pair();
        let f = fired.clone();
        let _fde = ctx
            .add_fd(&r, FdFlags::READ, move |_, _, _| f.inc())
            .unwrap();
        for _ in 0..3 {
            assert_idle(name, &ctx);
        }
        // loop_wait reports it too, instead of blocking.
        let r = ctx.loop_wait();
        assert!(matches!(r, Err(Error::WouldBlock)), "backend {name}: {r:?}");
        assert_eq!(fired.get(), 0, "backend {name}");
    });
}

#[test]
fn polling_mode_still_runs_what_is_ready() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let log = Log::new();
        let l = log.clone();
        let _im = ctx.schedule_immediate(move |_, _| l.push("immediate"));
        let l = log.clone();
        let _t = ctx.add_timer(Deadline::Asap, move |_, _, _| l.push("timer"));
        let (_w, r) = util::readable_pair(1);
        let l = log.clone();
        let _fde = ctx
            .add_fd(&r, FdFlags::READ, move |_, fde, _| {
                l.push("fd");
                fde.set_flags(FdFlags::EMPTY).unwrap();
            })
            .unwrap();
        assert_eq!(util::run_until_idle(name, &ctx, 10), 3, "backend {name}");
        assert_eq!(log.get(), ["immediate", "timer", "fd"], "backend {name}");
    });
}

#[test]
fn short_wait_timeout_returns_ok_having_run_nothing() {
    each_backend(|name, ctx| {
        ctx.set_wait_timeout(Duration::from_millis(10));
        ctx.loop_once()
            .unwrap_or_else(|e| panic!("backend {name}: {e}"));

        // Also with an fd event that never becomes ready.
        let calls = Counter::new();
        let c = calls.clone();
        let (_w, r) = util::pair();
        let _fde = ctx
            .add_fd(&r, FdFlags::READ, move |_, _, _| c.inc())
            .unwrap();
        ctx.loop_once()
            .unwrap_or_else(|e| panic!("backend {name}: {e}"));
        assert_eq!(calls.get(), 0, "backend {name}");
    });
}

#[test]
fn backends_are_selected_by_name() {
    let names = tevent::backend::names();
    assert!(!names.is_empty());
    assert_eq!(names[0], tevent::backend::default_name());
    #[cfg(target_os = "linux")]
    assert_eq!(names, ["epoll", "polling", "poll"]);
    for name in names {
        let ctx = Context::with_backend(name).unwrap();
        assert_eq!(ctx.backend_name(), *name);
    }
    assert_eq!(
        Context::new().unwrap().backend_name(),
        tevent::backend::default_name()
    );
    assert_eq!(
        Context::with_backend("standard").unwrap().backend_name(),
        tevent::backend::default_name(),
        "\"standard\" is the default backend, as in tevent"
    );
}

#[test]
fn unknown_backend_is_an_error() {
    match Context::with_backend("select") {
        Err(Error::UnknownBackend(n)) => assert_eq!(n, "select"),
        other => panic!("expected UnknownBackend, got {other:?}"),
    }
    let err = Context::with_backend("").unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENOENT));
}

/// tevent's order of one iteration, without signals (see `signals.rs` for
/// the complete one): immediates, then `Asap` timers, then due timers, then
/// one fd event per iteration.
#[test]
fn one_iteration_runs_one_unit_in_priority_order() {
    each_backend(|name, ctx| {
        let log = Log::new();
        let (mut w, r) = util::pair();
        w.write_all(b"x").unwrap();
        let l = log.clone();
        let _f = ctx
            .add_fd(&r, FdFlags::READ, move |_, fde, flags| {
                l.push(format!("F{}", flags.bits()));
                fde.set_flags(FdFlags::EMPTY).unwrap();
            })
            .unwrap();
        let (g, _g_peer) = util::pair();
        let l = log.clone();
        let _g = ctx
            .add_fd(&g, FdFlags::WRITE, move |_, fde, flags| {
                l.push(format!("G{}", flags.bits()));
                fde.set_flags(FdFlags::EMPTY).unwrap();
            })
            .unwrap();
        let l = log.clone();
        let _d = ctx.add_timer(Instant::now(), move |_, _, _| l.push("D"));
        let l = log.clone();
        let _c = ctx.add_timer(Deadline::Asap, move |_, _, _| l.push("C"));
        let l = log.clone();
        let _e = ctx.add_timer(Deadline::Asap, move |_, _, _| l.push("E"));
        let l = log.clone();
        let _a = ctx.schedule_immediate(move |_, _| l.push("A"));
        let l = log.clone();
        let _b = ctx.schedule_immediate(move |_, _| l.push("B"));

        let mut per_call = Vec::new();
        for _ in 0..7 {
            ctx.loop_once()
                .unwrap_or_else(|e| panic!("backend {name}: {e}"));
            per_call.push(log.take());
        }
        let mut fds: Vec<String> = per_call[5..].iter().flatten().cloned().collect();
        fds.sort();
        assert_eq!(
            per_call[..5],
            [["A"], ["B"], ["C"], ["E"], ["D"]],
            "backend {name}: one unit per loop_once"
        );
        assert!(
            per_call[5..].iter().all(|c| c.len() == 1),
            "backend {name}: one fd event per loop_once: {per_call:?}"
        );
        assert_eq!(fds, ["F1", "G2"], "backend {name}");
        assert!(!ctx.has_events(), "backend {name}");
    });
}
