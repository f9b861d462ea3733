//! Requests (`tevent::Req`): completion and receiving, post, defer_callback
//! and progress notices, end times, cancel, cleanup functions, dropping a
//! request in flight, poll, sub-requests, wakeup, Debug output.
//!
//! Every test that involves the loop runs once per backend, with the
//! backend's name in its assertion messages. Contexts run in polling mode
//! (wait timeout zero), so `loop_once` never blocks and reports
//! `Error::WouldBlock` when it found nothing to do; tests count iterations,
//! never wall time.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::panic::Location;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tevent::{
    wakeup_recv, wakeup_send, Context, Deadline, Error, FdEvent, FdFlags, Immediate, Req, ReqError,
    ReqState, WeakReq, DEFAULT_WAIT_TIMEOUT,
};

mod util;
use util::{
    assert_no_events, drop_flag, each_backend_polling as each_backend, once, run_until_idle, slot,
    DropGuard, Log, Slot,
};

// ---------------------------------------------------------------------------
// Helpers (local to this file).

/// The caller's location (to compare with the locations a request records).
#[track_caller]
fn here() -> &'static Location<'static> {
    Location::caller()
}

/// A callback that logs `"<label> <status>"`.
fn log_callback<S: 'static, T: 'static>(req: &Req<S, T>, log: &Log, label: &'static str) {
    let log = log.clone();
    req.set_callback(move |req| log.push(format!("{label} {:?}", req.status())));
}

/// A `_send` that finishes at once and posts (tevent's idiom
/// `tevent_req_done(req); return tevent_req_post(req, ev);`).
#[track_caller]
fn finished_send(ctx: &Context, value: u32) -> Req<(), u32> {
    let req = Req::new(ctx, ());
    assert!(req.done(value));
    req.post()
}

/// An immediate that finishes `req` with `done(value)` when it runs.
fn finish_later<S: 'static, T: 'static>(ctx: &Context, req: &Req<S, T>, value: T) -> Immediate {
    let weak = req.downgrade();
    let mut value = Some(value);
    ctx.schedule_immediate(move |_, _| {
        if let (Some(req), Some(v)) = (weak.upgrade(), value.take()) {
            req.done(v);
        }
    })
}

// ---------------------------------------------------------------------------
// 1. Finishing and receiving.

#[test]
fn done_calls_the_callback_and_recv_returns_the_value_exactly_once() {
    each_backend(|name, ctx| {
        let req: Req<u32, String> = Req::new(&ctx, 5);
        let log = Log::default();
        let results = Rc::new(RefCell::new(Vec::new()));
        {
            let log = log.clone();
            let results = results.clone();
            req.set_callback(move |req| {
                log.push(format!("callback {:?} {}", req.status(), *req.state()));
                let first = req.recv();
                let second = req.recv();
                results.borrow_mut().push(first);
                results.borrow_mut().push(second);
            });
        }
        assert!(req.is_in_progress(), "backend {name}");
        assert!(req.done("value".to_string()), "backend {name}");
        assert_eq!(log.take(), ["callback Done 5"], "backend {name}");
        assert_eq!(
            *results.borrow(),
            [Ok("value".to_string()), Err(ReqError::Received)],
            "backend {name}"
        );
        // The result was taken: the request is received, its state is gone.
        assert_eq!(req.status(), ReqState::Received, "backend {name}");
        assert!(!req.is_in_progress(), "backend {name}");
        assert!(req.try_state().is_none(), "backend {name}");
        assert_eq!(req.is_error(), Some(ReqError::Received), "backend {name}");
        assert_eq!(req.recv(), Err(ReqError::Received), "backend {name}");
        assert_eq!(ReqError::Received.errno(), libc::EINVAL, "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn recv_on_an_unfinished_request_reports_in_progress_and_changes_nothing() {
    each_backend(|name, ctx| {
        let req: Req<u32, u32> = Req::new(&ctx, 5);
        let log = Log::default();
        log_callback(&req, &log, "callback");
        let l = log.clone();
        req.set_cleanup_fn(move |_, st| l.push(format!("cleanup {st:?}")));

        assert_eq!(req.recv(), Err(ReqError::InProgress), "backend {name}");
        assert_eq!(req.recv(), Err(ReqError::InProgress), "backend {name}");
        assert_eq!(ReqError::InProgress.errno(), libc::EINVAL, "backend {name}");
        assert_eq!(req.is_error(), Some(ReqError::InProgress), "backend {name}");
        assert_eq!(req.status(), ReqState::InProgress, "backend {name}");
        assert_eq!(req.try_state().map(|s| *s), Some(5), "backend {name}");
        assert!(log.take().is_empty(), "backend {name}: nothing may run");

        // The request still works normally.
        assert!(req.done(9), "backend {name}");
        assert_eq!(
            log.take(),
            ["cleanup Done", "callback Done"],
            "backend {name}"
        );
        assert_eq!(req.recv(), Ok(9), "backend {name}");
        assert_eq!(log.take(), ["cleanup Received"], "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn error_finishes_with_the_user_code() {
    each_backend(|name, ctx| {
        let code = libc::ECONNRESET as u64;
        let req: Req<(), u32> = Req::new(&ctx, ());
        let log = Log::default();
        log_callback(&req, &log, "callback");
        assert!(req.error(code), "backend {name}");
        assert_eq!(log.take(), ["callback UserError"], "backend {name}");
        assert_eq!(req.status(), ReqState::UserError, "backend {name}");
        assert_eq!(req.is_error(), Some(ReqError::User(code)), "backend {name}");
        let err = req.recv().unwrap_err();
        assert_eq!(err, ReqError::User(code), "backend {name}");
        assert_eq!(err.errno(), libc::ECONNRESET, "backend {name}");
        assert_eq!(
            std::io::Error::from(err).raw_os_error(),
            Some(libc::ECONNRESET),
            "backend {name}"
        );
        // An error result is taken once too.
        assert_eq!(req.status(), ReqState::Received, "backend {name}");
        assert!(req.try_state().is_none(), "backend {name}");
        assert_eq!(req.recv(), Err(ReqError::Received), "backend {name}");
        assert_no_events(name, &ctx);
    });
    // A code that is no errno maps to EINVAL.
    assert_eq!(ReqError::User(u64::MAX).errno(), libc::EINVAL);
}

#[test]
fn error_zero_is_refused_and_does_nothing() {
    each_backend(|name, ctx| {
        let req: Req<(), u32> = Req::new(&ctx, ());
        let log = Log::default();
        log_callback(&req, &log, "callback");
        let l = log.clone();
        req.set_cleanup_fn(move |_, st| l.push(format!("cleanup {st:?}")));
        assert!(!req.error(0), "backend {name}");
        assert!(req.is_in_progress(), "backend {name}");
        assert!(req.try_state().is_some(), "backend {name}");
        assert!(log.take().is_empty(), "backend {name}");
        assert!(req.done(1), "backend {name}: still finishable");
        assert_eq!(req.recv(), Ok(1), "backend {name}");
    });
}

#[test]
fn oom_finishes_with_no_memory() {
    each_backend(|name, ctx| {
        let req: Req<(), u32> = Req::new(&ctx, ());
        let log = Log::default();
        log_callback(&req, &log, "callback");
        req.oom();
        assert_eq!(log.take(), ["callback NoMemory"], "backend {name}");
        assert_eq!(req.is_error(), Some(ReqError::NoMemory), "backend {name}");
        let err = req.recv().unwrap_err();
        assert_eq!(err, ReqError::NoMemory, "backend {name}");
        assert_eq!(err.errno(), libc::ENOMEM, "backend {name}");
        assert_eq!(req.status(), ReqState::Received, "backend {name}");
        assert_no_events(name, &ctx);
    });
}

// ---------------------------------------------------------------------------
// 2. post.

#[test]
fn a_request_finished_inside_its_send_is_delivered_by_the_first_loop_once() {
    each_backend(|name, ctx| {
        let req = finished_send(&ctx, 7);
        let log = Log::default();
        let l = log.clone();
        req.set_callback(move |req| l.push(format!("callback {:?}", req.recv())));
        assert_eq!(req.status(), ReqState::Done, "backend {name}");
        assert!(log.take().is_empty(), "backend {name}: not inside _send");
        assert!(ctx.has_events(), "backend {name}: the post is pending");
        once(name, &ctx);
        assert_eq!(log.take(), ["callback Ok(7)"], "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn a_request_failed_inside_its_send_is_delivered_from_the_loop() {
    each_backend(|name, ctx| {
        let req: Req<(), ()> = Req::new(&ctx, ());
        assert!(req.error(libc::EINVAL as u64), "backend {name}");
        let req = req.post();
        let log = Log::default();
        let l = log.clone();
        req.set_callback(move |req| l.push(format!("callback {:?}", req.recv())));
        assert!(log.take().is_empty(), "backend {name}");
        once(name, &ctx);
        assert_eq!(
            log.take(),
            [format!("callback Err(User({}))", libc::EINVAL)],
            "backend {name}"
        );
        assert_no_events(name, &ctx);
    });
}

#[test]
fn posted_requests_complete_first_in_first_out_with_other_immediates() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let l = log.clone();
        let _a = ctx.schedule_immediate(move |_, _| l.push("A"));
        let r1 = finished_send(&ctx, 1);
        let l = log.clone();
        let _b = ctx.schedule_immediate(move |_, _| l.push("B"));
        let r2 = finished_send(&ctx, 2);
        for r in [&r1, &r2] {
            let l = log.clone();
            r.set_callback(move |r| l.push(format!("r{}", r.recv().unwrap())));
        }
        let expected = ["A", "r1", "B", "r2"];
        for (i, want) in expected.iter().enumerate() {
            once(name, &ctx);
            assert_eq!(
                log.take(),
                [*want],
                "backend {name}: iteration {i} runs exactly one of them"
            );
        }
        assert_no_events(name, &ctx);
    });
}

#[test]
fn a_cancelled_post_is_skipped_and_posting_again_moves_to_the_tail() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let dropped = finished_send(&ctx, 1);
        let moved = finished_send(&ctx, 2);
        let l = log.clone();
        let _a = ctx.schedule_immediate(move |_, _| l.push("A"));
        log_callback(&moved, &log, "moved");
        // Posted again: it now waits behind A, and its callback runs once.
        let moved = moved.post();
        drop(dropped);
        once(name, &ctx);
        assert_eq!(
            log.take(),
            ["A"],
            "backend {name}: the cancelled and the replaced post are skipped in one iteration"
        );
        once(name, &ctx);
        assert_eq!(log.take(), ["moved Done"], "backend {name}");
        assert_no_events(name, &ctx);
        assert_eq!(moved.recv(), Ok(2), "backend {name}");
    });
}

// ---------------------------------------------------------------------------
// 3. defer_callback and notify_callback.

#[test]
fn notify_callback_in_progress_is_a_synchronous_progress_notice() {
    each_backend(|name, ctx| {
        let req: Req<(), ()> = Req::new(&ctx, ());
        // Without a callback nothing happens.
        req.notify_callback();
        let log = Log::default();
        let l = log.clone();
        req.set_callback(move |req| l.push(format!("in_progress={}", req.is_in_progress())));
        req.notify_callback();
        req.notify_callback();
        assert_eq!(
            log.take(),
            ["in_progress=true", "in_progress=true"],
            "backend {name}"
        );
        assert!(req.is_in_progress(), "backend {name}");
        assert!(!ctx.has_events(), "backend {name}");
        assert!(req.done(()), "backend {name}");
        assert_eq!(log.take(), ["in_progress=false"], "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn defer_callback_sends_the_next_notice_through_the_loop_once() {
    each_backend(|name, ctx| {
        let req: Req<(), ()> = Req::new(&ctx, ());
        let log = Log::default();
        let l = log.clone();
        req.set_callback(move |req| {
            l.push(format!(
                "{:?} in_progress={}",
                req.status(),
                req.is_in_progress()
            ))
        });
        req.defer_callback();
        // A progress notice honours the defer...
        req.notify_callback();
        assert!(log.take().is_empty(), "backend {name}: deferred");
        assert!(ctx.has_events(), "backend {name}");
        once(name, &ctx);
        assert_eq!(
            log.take(),
            ["InProgress in_progress=true"],
            "backend {name}"
        );
        // ...and the defer was one-shot: the finish is synchronous.
        assert!(req.done(()), "backend {name}");
        assert_eq!(log.take(), ["Done in_progress=false"], "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn defer_callback_sends_the_finish_through_the_loop_and_only_that_one() {
    each_backend(|name, ctx| {
        let req: Req<(), u32> = Req::new(&ctx, ());
        let log = Log::default();
        log_callback(&req, &log, "callback");
        let l = log.clone();
        req.set_cleanup_fn(move |_, st| l.push(format!("cleanup {st:?}")));
        req.defer_callback();
        assert!(req.done(4), "backend {name}");
        // The cleanup function runs at the finish, the callback from the loop.
        assert_eq!(log.take(), ["cleanup Done"], "backend {name}");
        once(name, &ctx);
        assert_eq!(log.take(), ["callback Done"], "backend {name}");
        assert_no_events(name, &ctx);
        // The next notice is synchronous again.
        req.notify_callback();
        assert_eq!(log.take(), ["callback Done"], "backend {name}");
        assert!(!ctx.has_events(), "backend {name}");
        assert_eq!(req.recv(), Ok(4), "backend {name}");
    });
}

// ---------------------------------------------------------------------------
// 4. End times.

#[test]
fn an_expired_endtime_times_the_request_out() {
    each_backend(|name, ctx| {
        for deadline in [Deadline::Asap, Deadline::At(Instant::now())] {
            let req: Req<(), ()> = Req::new(&ctx, ());
            let log = Log::default();
            let l = log.clone();
            req.set_callback(move |req| {
                let err = req.recv().unwrap_err();
                l.push(format!("{err:?} errno={}", err.errno()));
            });
            req.set_endtime(deadline);
            assert!(req.is_in_progress(), "backend {name}");
            assert_eq!(
                run_until_idle(name, &ctx, 10),
                1,
                "backend {name}: one timer"
            );
            assert_eq!(
                log.take(),
                [format!("TimedOut errno={}", libc::ETIMEDOUT)],
                "backend {name}: {deadline:?}"
            );
            assert_eq!(req.status(), ReqState::Received, "backend {name}");
            assert_no_events(name, &ctx);
        }
    });
}

#[test]
fn an_endtime_in_the_future_does_not_fire_early() {
    each_backend(|name, ctx| {
        let req: Req<(), ()> = Req::new(&ctx, ());
        req.set_endtime(Instant::now() + Duration::from_secs(3600));
        assert_eq!(run_until_idle(name, &ctx, 10), 0, "backend {name}");
        assert!(req.is_in_progress(), "backend {name}");
        assert!(ctx.has_events(), "backend {name}: the end time is pending");
        drop(req);
        assert_no_events(name, &ctx);
    });
}

#[test]
fn reset_endtime_removes_the_deadline() {
    each_backend(|name, ctx| {
        let req: Req<(), ()> = Req::new(&ctx, ());
        let log = Log::default();
        log_callback(&req, &log, "callback");
        req.set_endtime(Deadline::Asap);
        assert!(ctx.has_events(), "backend {name}");
        req.reset_endtime();
        // Nothing is left: loop_wait returns at once.
        assert_no_events(name, &ctx);
        assert!(req.is_in_progress(), "backend {name}");
        assert!(log.take().is_empty(), "backend {name}");
        // A replaced end time: only the last one counts.
        req.set_endtime(Instant::now() + Duration::from_secs(3600));
        req.set_endtime(Deadline::Asap);
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["callback TimedOut"], "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn done_before_the_deadline_removes_the_end_time() {
    each_backend(|name, ctx| {
        for deadline in [
            Deadline::Asap,
            Deadline::At(Instant::now() + Duration::from_secs(3600)),
        ] {
            let req: Req<(), u32> = Req::new(&ctx, ());
            let log = Log::default();
            log_callback(&req, &log, "callback");
            req.set_endtime(deadline);
            assert!(req.done(1), "backend {name}");
            assert_eq!(log.take(), ["callback Done"], "backend {name}");
            assert_no_events(name, &ctx);
            assert!(log.take().is_empty(), "backend {name}: {deadline:?}");
            assert_eq!(req.status(), ReqState::Done, "backend {name}");
        }
    });
}

#[test]
fn an_endtime_due_with_a_posted_completion_runs_the_callback_once_with_done() {
    each_backend(|name, ctx| {
        // The end time is due when the request finishes inside its _send.
        let req: Req<(), u32> = Req::new(&ctx, ());
        req.set_endtime(Deadline::Asap);
        assert!(req.done(1), "backend {name}");
        let req = req.post();
        let log = Log::default();
        log_callback(&req, &log, "callback");
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["callback Done"], "backend {name}");
        assert_eq!(req.status(), ReqState::Done, "backend {name}");

        // An end time set after the finish is ignored (the documented
        // choice: C tevent would add the timer and time a finished request
        // out, calling the callback a second time).
        let req: Req<(), u32> = Req::new(&ctx, ());
        assert!(req.done(2), "backend {name}");
        let req = req.post();
        req.set_endtime(Deadline::Asap);
        log_callback(&req, &log, "callback");
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["callback Done"], "backend {name}");
        assert_eq!(req.status(), ReqState::Done, "backend {name}");

        // Due end time and an immediate that finishes the request, both
        // ready for the same iteration: the immediate runs first and removes
        // the end time.
        let req: Req<(), u32> = Req::new(&ctx, ());
        log_callback(&req, &log, "callback");
        req.set_endtime(Deadline::Asap);
        let _im = finish_later(&ctx, &req, 3);
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["callback Done"], "backend {name}");
        assert_eq!(req.recv(), Ok(3), "backend {name}");
        assert_no_events(name, &ctx);
    });
}

// ---------------------------------------------------------------------------
// 5. Cancel.

#[test]
fn cancel_without_a_cancel_fn_is_false() {
    each_backend(|name, ctx| {
        let req: Req<(), ()> = Req::new(&ctx, ());
        assert!(!req.cancel(), "backend {name}");
        assert!(req.is_in_progress(), "backend {name}");
    });
}

#[test]
fn cancel_returns_the_cancel_fn_result_and_the_request_finishes_normally() {
    each_backend(|name, ctx| {
        struct Op {
            pending: Option<Immediate>,
        }
        let req: Req<Op, ()> = Req::new(&ctx, Op { pending: None });
        let log = Log::default();
        let l = log.clone();
        req.set_callback(move |req| {
            let err = req.recv().unwrap_err();
            l.push(format!("callback {err:?} errno={}", err.errno()));
        });
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        // The producer's cancel: arrange an ECANCELED finish from the loop.
        req.set_cancel_fn(move |req| {
            c.set(c.get() + 1);
            let weak = req.downgrade();
            let ctx = req.context().expect("context alive");
            let im = ctx.schedule_immediate(move |_, _| {
                if let Some(req) = weak.upgrade() {
                    req.error(libc::ECANCELED as u64);
                }
            });
            req.state_mut().pending = Some(im);
            true
        });
        assert!(req.cancel(), "backend {name}");
        assert_eq!(calls.get(), 1, "backend {name}");
        // Cancelling started, nothing finished yet.
        assert!(req.is_in_progress(), "backend {name}");
        assert!(log.take().is_empty(), "backend {name}");
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(
            log.take(),
            [format!(
                "callback User({}) errno={}",
                libc::ECANCELED,
                libc::ECANCELED
            )],
            "backend {name}"
        );
        // A received request forgets its cancel function.
        assert!(!req.cancel(), "backend {name}");
        assert_eq!(calls.get(), 1, "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn a_cancel_fn_that_refuses_leaves_the_request_running() {
    each_backend(|name, ctx| {
        let req: Req<(), ()> = Req::new(&ctx, ());
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        req.set_cancel_fn(move |_| {
            c.set(c.get() + 1);
            false
        });
        assert!(!req.cancel(), "backend {name}");
        assert!(!req.cancel(), "backend {name}");
        assert_eq!(calls.get(), 2, "backend {name}: the cancel fn is kept");
        assert!(req.is_in_progress(), "backend {name}");
        assert_no_events(name, &ctx);
    });
}

// ---------------------------------------------------------------------------
// 6. Cleanup functions.

#[test]
fn cleanup_runs_with_the_finish_state_before_the_callback_then_with_received() {
    each_backend(|name, ctx| {
        let req: Req<u32, u32> = Req::new(&ctx, 0);
        let log = Log::default();
        let l = log.clone();
        req.set_cleanup_fn(move |state, st| {
            *state += 1;
            l.push(format!("cleanup {st:?}"));
        });
        let l = log.clone();
        // The callback sees the state the cleanup function changed.
        req.set_callback(move |req| l.push(format!("callback state={}", *req.state())));
        assert!(req.done(1), "backend {name}");
        assert_eq!(
            log.take(),
            ["cleanup Done", "callback state=1"],
            "backend {name}"
        );
        // A second finish is ignored and does not run it again.
        assert!(!req.done(2), "backend {name}");
        assert!(req.error(libc::EIO as u64), "backend {name}");
        assert!(log.take().is_empty(), "backend {name}");
        assert_eq!(req.recv(), Ok(1), "backend {name}");
        assert_eq!(log.take(), ["cleanup Received"], "backend {name}");
        assert_eq!(req.recv(), Err(ReqError::Received), "backend {name}");
        req.received();
        drop(req);
        assert!(
            log.take().is_empty(),
            "backend {name}: at most once per state"
        );
        assert_no_events(name, &ctx);
    });
}

#[test]
fn cleanup_runs_with_error_and_timeout_states() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let failed: Req<(), ()> = Req::new(&ctx, ());
        let timed: Req<(), ()> = Req::new(&ctx, ());
        for (req, label) in [(&failed, "failed"), (&timed, "timed")] {
            let l = log.clone();
            req.set_cleanup_fn(move |_, st| l.push(format!("{label} cleanup {st:?}")));
            log_callback(req, &log, label);
        }
        failed.error(libc::EIO as u64);
        timed.set_endtime(Deadline::Asap);
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(
            log.take(),
            [
                "failed cleanup UserError",
                "failed UserError",
                "timed cleanup TimedOut",
                "timed TimedOut"
            ],
            "backend {name}"
        );
        drop(failed);
        drop(timed);
        assert_eq!(
            log.take(),
            ["failed cleanup Received", "timed cleanup Received"],
            "backend {name}"
        );
    });
}

#[test]
fn cleanup_of_a_request_dropped_unfinished_runs_only_with_received() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let req: Req<u32, ()> = Req::new(&ctx, 7);
        let l = log.clone();
        req.set_cleanup_fn(move |state, st| l.push(format!("cleanup {st:?} state={state}")));
        log_callback(&req, &log, "callback");
        drop(req);
        assert_eq!(log.take(), ["cleanup Received state=7"], "backend {name}");

        // Finished, dropped without being received: the finish state, then
        // Received.
        let req: Req<u32, ()> = Req::new(&ctx, 8);
        let l = log.clone();
        req.set_cleanup_fn(move |state, st| l.push(format!("cleanup {st:?} state={state}")));
        req.done(());
        drop(req);
        assert_eq!(
            log.take(),
            ["cleanup Done state=8", "cleanup Received state=8"],
            "backend {name}"
        );
        assert_no_events(name, &ctx);
    });
}

#[test]
fn cleanup_set_on_a_finished_request_runs_only_with_received() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let req: Req<(), u32> = Req::new(&ctx, ());
        req.done(3);
        let l = log.clone();
        req.set_cleanup_fn(move |_, st| l.push(format!("cleanup {st:?}")));
        assert!(log.take().is_empty(), "backend {name}");
        assert_eq!(req.recv(), Ok(3), "backend {name}");
        assert_eq!(log.take(), ["cleanup Received"], "backend {name}");
        drop(req);
        assert!(log.take().is_empty(), "backend {name}");
    });
}

// ---------------------------------------------------------------------------
// 7. Dropping a request in flight.

#[test]
fn dropping_a_request_in_flight_releases_everything_it_owns() {
    each_backend(|name, ctx| {
        struct Flight {
            fde: Option<FdEvent>,
            sub: Option<Req<(), ()>>,
            _flag: DropGuard,
        }
        // Declared before the request: the sockets outlive the fd event.
        let (mut writer, reader) = UnixStream::pair().expect("socketpair");
        writer.write_all(b"x").expect("write");
        let log = Log::default();
        let (flag, state_dropped) = drop_flag();
        let req: Req<Flight, ()> = Req::new(
            &ctx,
            Flight {
                fde: None,
                sub: None,
                _flag: flag,
            },
        );
        // An fd event that would fire at once (the socket is readable).
        let l = log.clone();
        let fde = ctx
            .add_fd(&reader, FdFlags::READ, move |_, _, _| l.push("fd"))
            .unwrap_or_else(|e| panic!("backend {name}: add_fd: {e}"));
        // A sub-request that would finish at once.
        let sub = wakeup_send(&ctx, Deadline::Asap);
        log_callback(&sub, &log, "sub");
        {
            let mut state = req.state_mut();
            state.fde = Some(fde);
            state.sub = Some(sub);
        }
        // An end time that is due, and a pending post (a deferred notice).
        req.set_endtime(Deadline::Asap);
        log_callback(&req, &log, "callback");
        req.defer_callback();
        req.notify_callback();
        assert!(ctx.has_events(), "backend {name}");

        drop(req);
        assert!(state_dropped.get(), "backend {name}: the state is released");
        assert!(!ctx.has_events(), "backend {name}: events left: {ctx:?}");
        assert_no_events(name, &ctx);
        assert!(
            log.take().is_empty(),
            "backend {name}: no callback may fire"
        );
        drop(writer);
    });
}

#[test]
fn dropping_a_finished_posted_request_cancels_the_post() {
    each_backend(|name, ctx| {
        let req = finished_send(&ctx, 1);
        let log = Log::default();
        log_callback(&req, &log, "callback");
        assert!(ctx.has_events(), "backend {name}");
        drop(req);
        assert_no_events(name, &ctx);
        assert!(log.take().is_empty(), "backend {name}");

        // Receiving it cancels the post as well.
        let req = finished_send(&ctx, 2);
        log_callback(&req, &log, "callback");
        assert_eq!(req.recv(), Ok(2), "backend {name}");
        assert_no_events(name, &ctx);
        assert!(log.take().is_empty(), "backend {name}");
    });
}

// ---------------------------------------------------------------------------
// 8. poll.

#[test]
fn poll_runs_the_loop_until_the_request_finishes() {
    each_backend(|name, ctx| {
        let req: Req<(), u32> = Req::new(&ctx, ());
        let runs = Rc::new(Cell::new(0));
        let r = runs.clone();
        let weak = req.downgrade();
        // Finishes the request on its third run.
        let _im = ctx.schedule_immediate(move |_, im| {
            r.set(r.get() + 1);
            if r.get() < 3 {
                im.reschedule();
            } else if let Some(req) = weak.upgrade() {
                req.done(42);
            }
        });
        req.poll()
            .unwrap_or_else(|e| panic!("backend {name}: poll: {e}"));
        assert_eq!(runs.get(), 3, "backend {name}: three iterations");
        assert_eq!(req.recv(), Ok(42), "backend {name}");
        assert_no_events(name, &ctx);

        // A finished request: poll runs nothing (the post stays pending).
        let req = finished_send(&ctx, 5);
        req.poll()
            .unwrap_or_else(|e| panic!("backend {name}: poll: {e}"));
        assert!(ctx.has_events(), "backend {name}: the post was not run");
        assert_eq!(req.recv(), Ok(5), "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn poll_inside_a_handler_is_refused_without_allow_nesting() {
    each_backend(|name, ctx| {
        let req: Rc<Req<(), u32>> = Rc::new(Req::new(&ctx, ()));
        let result = slot::<Result<(), Error>>();
        let (r, res) = (req.clone(), result.clone());
        let _im = ctx.schedule_immediate(move |_, _| *res.borrow_mut() = Some(r.poll()));
        once(name, &ctx);
        let got = result.borrow_mut().take();
        assert!(
            matches!(got, Some(Err(Error::Nested { .. }))),
            "backend {name}: got {got:?}"
        );
        assert!(req.is_in_progress(), "backend {name}");

        // With nesting allowed, the nested loop runs the finishing event.
        ctx.allow_nesting();
        let (r, res) = (req.clone(), result.clone());
        let _outer = ctx.schedule_immediate(move |_, _| *res.borrow_mut() = Some(r.poll()));
        let _finisher = finish_later(&ctx, &req, 9);
        once(name, &ctx);
        let got = result.borrow_mut().take();
        assert!(matches!(got, Some(Ok(()))), "backend {name}: got {got:?}");
        assert_eq!(req.recv(), Ok(9), "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn poll_without_a_context_fails() {
    each_backend(|name, ctx| {
        let req: Req<(), ()> = Req::new(&ctx, ());
        assert!(req.context().is_some(), "backend {name}");
        drop(ctx);
        assert!(req.context().is_none(), "backend {name}");
        assert!(
            matches!(req.poll(), Err(Error::ContextGone)),
            "backend {name}"
        );
    });
}

// ---------------------------------------------------------------------------
// 9. Sub-requests.

/// A request that finishes inside its `_send` with `value + 1`.
fn increment_send(ctx: &Context, value: u32) -> Req<(), u32> {
    finished_send(ctx, value + 1)
}

struct SeqState {
    log: Log,
    first: Option<Req<(), ()>>,
    second: Option<Req<(), u32>>,
}

/// A parent that waits for a wakeup, then for an increment, then finishes
/// with the increment's result.
fn seq_send(ctx: &Context, log: &Log) -> Req<SeqState, u32> {
    let req = Req::new(
        ctx,
        SeqState {
            log: log.clone(),
            first: None,
            second: None,
        },
    );
    let first = wakeup_send(ctx, Deadline::Asap);
    let weak = req.downgrade();
    first.set_callback(move |first| seq_first_done(first, &weak));
    req.state_mut().first = Some(first);
    req
}

fn seq_first_done(first: &Req<(), ()>, weak: &WeakReq<SeqState, u32>) {
    let Some(req) = weak.upgrade() else { return };
    let woke = wakeup_recv(first);
    // TALLOC_FREE(subreq): the sub-request whose callback this is.
    let own = req.state_mut().first.take();
    drop(own);
    req.state().log.push(format!("first woke={woke}"));
    let ctx = req.context().expect("context alive");
    let second = increment_send(&ctx, 40);
    let weak = weak.clone();
    second.set_callback(move |second| seq_second_done(second, &weak));
    req.state_mut().second = Some(second);
}

fn seq_second_done(second: &Req<(), u32>, weak: &WeakReq<SeqState, u32>) {
    let Some(req) = weak.upgrade() else { return };
    let result = second.recv();
    let own = req.state_mut().second.take();
    drop(own);
    req.state().log.push(format!("second {result:?}"));
    match result {
        Ok(v) => req.done(v),
        Err(e) => req.error(e.errno() as u64),
    };
}

#[test]
fn a_parent_runs_two_sub_requests_in_sequence() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let req = seq_send(&ctx, &log);
        let l = log.clone();
        req.set_callback(move |req| l.push(format!("parent {:?}", req.recv())));
        assert!(log.take().is_empty(), "backend {name}");
        // One iteration for the wakeup's timer, one for the increment's post.
        once(name, &ctx);
        assert_eq!(log.take(), ["first woke=true"], "backend {name}");
        assert!(req.is_in_progress(), "backend {name}");
        once(name, &ctx);
        assert_eq!(
            log.take(),
            ["second Ok(41)", "parent Ok(41)"],
            "backend {name}"
        );
        assert_no_events(name, &ctx);
    });
}

/// A sub-request callback in the C style: `fn(subreq, parent)`.
fn child_done(subreq: &Req<(), u32>, parent: &Req<Log, u32>) {
    let value = subreq.recv().unwrap();
    parent.state().push(format!("child {value}"));
    parent.done(value + 1);
}

#[test]
fn a_parent_callback_reaches_the_parent_and_does_not_keep_it_alive() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let parent: Req<Log, u32> = Req::new(&ctx, log.clone());
        let child = finished_send(&ctx, 41);
        child.set_parent_callback(&parent, child_done);
        once(name, &ctx);
        assert_eq!(log.take(), ["child 41"], "backend {name}");
        assert_eq!(parent.recv(), Ok(42), "backend {name}");

        // The parent is gone before the child finishes: the callback does
        // not run, and the child did not keep the parent's state alive.
        let (flag, state_dropped) = drop_flag();
        let parent: Req<DropGuard, ()> = Req::new(&ctx, flag);
        let child = finished_send(&ctx, 1);
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        child.set_parent_callback(&parent, move |_, _| r.set(true));
        drop(parent);
        assert!(state_dropped.get(), "backend {name}");
        once(name, &ctx);
        assert!(!ran.get(), "backend {name}");
        assert_no_events(name, &ctx);
        drop(child);
    });
}

/// C: `struct conn`, the private data of its requests' callbacks.
struct Conn {
    log: Log,
    read: RefCell<Option<Req<(), u32>>>,
}

/// C: `static void conn_read_done(struct tevent_req *subreq)`, whose private
/// data is the connection.
fn conn_read_done(subreq: &Req<(), u32>, conn: &Rc<Conn>) {
    conn.log.push(format!("read {:?}", subreq.recv()));
    // The connection frees its finished request from the callback.
    let done = conn.read.borrow_mut().take();
    drop(done);
}

#[test]
fn a_callback_with_data_gets_it_and_does_not_keep_it_alive() {
    each_backend(|name, ctx| {
        let conn = Rc::new(Conn {
            log: Log::default(),
            read: RefCell::new(None),
        });
        let req = finished_send(&ctx, 7);
        req.set_callback_with(&conn, conn_read_done);
        *conn.read.borrow_mut() = Some(req); // the connection owns its request
        assert_eq!(Rc::strong_count(&conn), 1, "backend {name}: held weakly");
        once(name, &ctx);
        assert_eq!(conn.log.take(), ["read Ok(7)"], "backend {name}");
        assert!(conn.read.borrow().is_none(), "backend {name}");

        // The data is gone before the request finishes: no call.
        let ran = Rc::new(Cell::new(false));
        let data = Rc::new(ran.clone());
        let req = finished_send(&ctx, 1);
        req.set_callback_with(&data, |_, ran: &Rc<Rc<Cell<bool>>>| ran.set(true));
        drop(data);
        once(name, &ctx);
        assert!(!ran.get(), "backend {name}");

        // A later set_callback forgets the data (and its memory).
        let data = Rc::new(0u8);
        let req = finished_send(&ctx, 1);
        req.set_callback_with(&data, |_, _| panic!("replaced"));
        assert_eq!(Rc::weak_count(&data), 1, "backend {name}");
        let r = ran.clone();
        req.set_callback(move |_| r.set(true));
        assert_eq!(Rc::weak_count(&data), 0, "backend {name}");
        once(name, &ctx);
        assert!(ran.get(), "backend {name}");
        assert_no_events(name, &ctx);
        drop(req);
    });
}

#[test]
fn a_callback_may_drop_its_own_request() {
    each_backend(|name, ctx| {
        let holder: Slot<Req<DropGuard, u32>> = slot();
        let (flag, state_dropped) = drop_flag();
        let req = Req::new(&ctx, flag);
        let log = Log::default();
        let (h, l) = (holder.clone(), log.clone());
        req.set_callback(move |req| {
            l.push(format!("callback {:?}", req.status()));
            let own = h.borrow_mut().take();
            drop(own);
            // The handle given to the callback stays usable.
            l.push(format!("after drop {:?}", req.status()));
        });
        let _im = finish_later(&ctx, &req, 1);
        *holder.borrow_mut() = Some(req);
        once(name, &ctx);
        assert_eq!(
            log.take(),
            ["callback Done", "after drop Done"],
            "backend {name}"
        );
        assert!(holder.borrow().is_none(), "backend {name}");
        assert!(state_dropped.get(), "backend {name}: the request is gone");
        // The loop goes on.
        let l = log.clone();
        let _next = ctx.schedule_immediate(move |_, _| l.push("next"));
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["next"], "backend {name}");
        assert_no_events(name, &ctx);
    });
}

struct ParentState {
    sub: Option<Req<(), ()>>,
    _flag: DropGuard,
}

/// A parent owning a wakeup sub-request whose callback finishes the parent
/// through a `WeakReq`; the parent is owned only by `holder`.
fn parent_with_sub(
    ctx: &Context,
    holder: &Slot<Req<ParentState, ()>>,
    log: &Log,
) -> Rc<Cell<bool>> {
    let (flag, dropped) = drop_flag();
    let parent = Req::new(
        ctx,
        ParentState {
            sub: None,
            _flag: flag,
        },
    );
    let sub = wakeup_send(ctx, Deadline::Asap);
    let weak = parent.downgrade();
    let l = log.clone();
    sub.set_callback(move |sub| {
        l.push("sub callback");
        let Some(parent) = weak.upgrade() else {
            l.push("parent gone");
            return;
        };
        let woke = wakeup_recv(sub);
        parent.done(());
        l.push(format!("after parent done woke={woke}"));
        // This was the last handle: the parent's state, and this
        // sub-request with it, go now, while its callback still runs.
        drop(parent);
        l.push(format!("sub still readable: {:?}", sub.status()));
    });
    parent.state_mut().sub = Some(sub);
    *holder.borrow_mut() = Some(parent);
    dropped
}

#[test]
fn a_callback_may_drop_the_parent_through_its_callback() {
    each_backend(|name, ctx| {
        let holder: Slot<Req<ParentState, ()>> = slot();
        let log = Log::default();
        let parent_dropped = parent_with_sub(&ctx, &holder, &log);
        let (h, l) = (holder.clone(), log.clone());
        holder
            .borrow()
            .as_ref()
            .expect("parent")
            .set_callback(move |parent| {
                l.push(format!("parent callback {:?}", parent.status()));
                // Clear the only owner.
                let only = h.borrow_mut().take();
                drop(only);
            });
        once(name, &ctx);
        assert_eq!(
            log.take(),
            [
                "sub callback",
                "parent callback Done",
                "after parent done woke=true",
                "sub still readable: Received"
            ],
            "backend {name}"
        );
        assert!(holder.borrow().is_none(), "backend {name}");
        assert!(parent_dropped.get(), "backend {name}: the parent is gone");
        // The loop goes on.
        let l = log.clone();
        let _next = ctx.schedule_immediate(move |_, _| l.push("next"));
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["next"], "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn a_sub_request_callback_may_drop_the_parent_directly() {
    each_backend(|name, ctx| {
        let holder: Slot<Req<ParentState, ()>> = slot();
        let log = Log::default();
        let (flag, parent_dropped) = drop_flag();
        let parent = Req::new(
            &ctx,
            ParentState {
                sub: None,
                _flag: flag,
            },
        );
        log_callback(&parent, &log, "parent");
        let sub = wakeup_send(&ctx, Deadline::Asap);
        let (h, l) = (holder.clone(), log.clone());
        sub.set_callback(move |sub| {
            l.push("sub callback");
            // Drop the parent, which owns this very sub-request.
            let parent = h.borrow_mut().take();
            drop(parent);
            l.push(format!("sub after drop {:?}", sub.status()));
        });
        parent.state_mut().sub = Some(sub);
        *holder.borrow_mut() = Some(parent);
        once(name, &ctx);
        // The sub-request finished (TimedOut: a wakeup), was released unread
        // with its parent, and the parent's callback never fired.
        assert_eq!(
            log.take(),
            ["sub callback", "sub after drop TimedOut"],
            "backend {name}"
        );
        assert!(parent_dropped.get(), "backend {name}");
        let l = log.clone();
        let _next = ctx.schedule_immediate(move |_, _| l.push("next"));
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["next"], "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn finishing_a_request_twice_is_ignored() {
    each_backend(|name, ctx| {
        let log = Log::default();

        let req: Req<(), u32> = Req::new(&ctx, ());
        log_callback(&req, &log, "callback");
        assert!(req.done(1), "backend {name}");
        assert!(!req.done(2), "backend {name}: a second done is refused");
        // error() reports whether the code is an error; the request is left
        // alone.
        assert!(req.error(libc::EIO as u64), "backend {name}");
        req.oom();
        assert_eq!(log.take(), ["callback Done"], "backend {name}");
        assert_eq!(req.status(), ReqState::Done, "backend {name}");
        assert_eq!(req.recv(), Ok(1), "backend {name}");

        let req: Req<(), u32> = Req::new(&ctx, ());
        log_callback(&req, &log, "callback");
        assert!(req.error(libc::EIO as u64), "backend {name}");
        assert!(!req.done(5), "backend {name}");
        assert!(req.error(libc::EPIPE as u64), "backend {name}");
        assert_eq!(log.take(), ["callback UserError"], "backend {name}");
        assert_eq!(
            req.recv(),
            Err(ReqError::User(libc::EIO as u64)),
            "backend {name}"
        );

        // A timed-out request ignores a late done.
        let req: Req<(), u32> = Req::new(&ctx, ());
        log_callback(&req, &log, "callback");
        req.set_endtime(Deadline::Asap);
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert!(!req.done(3), "backend {name}");
        assert_eq!(log.take(), ["callback TimedOut"], "backend {name}");
        assert_eq!(req.recv(), Err(ReqError::TimedOut), "backend {name}");
        assert_no_events(name, &ctx);
    });
}

// ---------------------------------------------------------------------------
// 10. wakeup.

#[test]
fn wakeup_finishes_at_its_deadline() {
    each_backend(|name, ctx| {
        // Not before the deadline.
        let later = wakeup_send(&ctx, Instant::now() + Duration::from_secs(3600));
        assert_eq!(run_until_idle(name, &ctx, 10), 0, "backend {name}");
        assert!(later.is_in_progress(), "backend {name}");
        drop(later);
        assert_no_events(name, &ctx);

        // A deadline already due: the first iteration.
        let due = wakeup_send(&ctx, Instant::now());
        once(name, &ctx);
        assert_eq!(due.status(), ReqState::TimedOut, "backend {name}");
        assert!(wakeup_recv(&due), "backend {name}");
        assert_eq!(due.status(), ReqState::Received, "backend {name}");
        assert_no_events(name, &ctx);

        // A deadline in the near future, with the loop blocking: the first
        // iteration waits for it and fires it. (A second iteration could
        // only come from an interrupted wait.)
        ctx.set_wait_timeout(DEFAULT_WAIT_TIMEOUT);
        let near = wakeup_send(&ctx, Instant::now() + Duration::from_millis(5));
        let mut iterations = 0;
        while near.is_in_progress() {
            once(name, &ctx);
            iterations += 1;
            assert!(iterations <= 2, "backend {name}: {iterations} iterations");
        }
        assert!(wakeup_recv(&near), "backend {name}");

        // The same through poll.
        let polled = wakeup_send(&ctx, Instant::now() + Duration::from_millis(5));
        polled
            .poll()
            .unwrap_or_else(|e| panic!("backend {name}: poll: {e}"));
        assert!(wakeup_recv(&polled), "backend {name}");
        ctx.set_wait_timeout(Duration::ZERO);
        assert_no_events(name, &ctx);
    });
}

#[test]
fn wakeup_recv_is_false_for_a_wakeup_that_did_not_happen() {
    each_backend(|name, ctx| {
        let req = wakeup_send(&ctx, Instant::now() + Duration::from_secs(3600));
        assert!(!wakeup_recv(&req), "backend {name}");
        // Receiving ended it: the timer is gone.
        assert_eq!(req.status(), ReqState::Received, "backend {name}");
        assert_no_events(name, &ctx);
    });
}

// ---------------------------------------------------------------------------
// 11. Debug output.

#[test]
fn debug_shows_the_creation_and_finish_locations() {
    each_backend(|name, ctx| {
        let (req, created) = (Req::<(), u32>::new(&ctx, ()), here());
        assert!(created.file().ends_with("req.rs"), "{created}");
        let created_at = format!("{}:{}:", created.file(), created.line());
        let text = format!("{req:?}");
        assert!(
            text.contains(&created_at),
            "backend {name}: {text:?} lacks {created_at:?}"
        );
        assert!(text.contains("InProgress"), "backend {name}: {text:?}");
        assert!(!text.contains("finished"), "backend {name}: {text:?}");

        let (ok, finished) = (req.done(1), here());
        assert!(ok, "backend {name}");
        let finished_at = format!("{}:{}:", finished.file(), finished.line());
        assert_ne!(created_at, finished_at);
        let text = format!("{req:?}");
        assert!(
            text.contains(&created_at) && text.contains(&finished_at),
            "backend {name}: {text:?} lacks {created_at:?} or {finished_at:?}"
        );
        assert!(text.contains("Done"), "backend {name}: {text:?}");

        // An error shows its code.
        let failed: Req<(), u32> = Req::new(&ctx, ());
        failed.error(1234);
        let text = format!("{failed:?}");
        assert!(text.contains("1234"), "backend {name}: {text:?}");

        // wakeup_send records its caller.
        let (wake, at) = (wakeup_send(&ctx, Deadline::Asap), here());
        let text = format!("{wake:?}");
        let at = format!("{}:{}:", at.file(), at.line());
        assert!(text.contains(&at), "backend {name}: {text:?} lacks {at:?}");
    });
}

#[test]
fn set_print_fn_replaces_the_debug_output_until_received() {
    each_backend(|name, ctx| {
        let req: Req<u32, ()> = Req::new(&ctx, 17);
        req.set_print_fn(|req, f| write!(f, "my request #{}", *req.state()));
        assert_eq!(format!("{req:?}"), "my request #17", "backend {name}");
        req.done(());
        assert_eq!(format!("{req:?}"), "my request #17", "backend {name}");
        // Receiving forgets the print function (tevent_req_received).
        req.recv().unwrap();
        let text = format!("{req:?}");
        assert!(
            text.starts_with("Req") && text.contains("Received"),
            "backend {name}: {text:?}"
        );
    });
}

/// A cleanup function may receive its own request (Samba code does this to
/// detach from shared structures early): no borrow panic, and the cleanup
/// then runs once more with Received.
#[test]
fn a_cleanup_function_may_receive_its_own_request() {
    for name in tevent::backend::names() {
        let ctx = Context::with_backend(name).unwrap();
        let req: Req<u32, ()> = Req::new(&ctx, 7);
        let states = Rc::new(RefCell::new(Vec::new()));
        let weak = req.downgrade();
        let s = states.clone();
        req.set_cleanup_fn(move |state, st| {
            s.borrow_mut().push((st, *state));
            if st == ReqState::Done {
                if let Some(req) = weak.upgrade() {
                    req.received();
                }
            }
        });
        assert!(req.done(()));
        assert_eq!(
            *states.borrow(),
            vec![(ReqState::Done, 7), (ReqState::Received, 7)],
            "{name}: Received runs after the Done call returns"
        );
        assert_eq!(req.status(), ReqState::Received, "{name}");
        assert!(req.try_state().is_none(), "{name}: the state is released");
    }
}

#[test]
fn a_request_finished_from_its_own_progress_callback_gets_the_completion_callback() {
    // A progress notice whose consumer cancels; the cancel function
    // finishes the request at once, while the callback still runs.
    let ctx = Context::new().unwrap();
    let req: Req<(), ()> = Req::new(&ctx, ());
    req.set_cancel_fn(|r| {
        r.error(libc::ECANCELED as u64);
        true
    });
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    req.set_callback(move |r| {
        s.borrow_mut().push(r.status());
        if r.is_in_progress() {
            assert!(r.cancel());
        }
    });
    req.notify_callback();
    assert_eq!(*seen.borrow(), [ReqState::InProgress, ReqState::UserError]);

    // The same with the request finishing in a nested loop run by the
    // callback.
    ctx.allow_nesting();
    let req: Req<(), ()> = Req::new(&ctx, ());
    let weak = req.downgrade();
    let _im = ctx.schedule_immediate(move |_, _| {
        if let Some(r) = weak.upgrade() {
            r.done(());
        }
    });
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    req.set_callback(move |r| {
        s.borrow_mut().push(r.status());
        if r.is_in_progress() {
            r.poll().unwrap();
        }
    });
    req.notify_callback();
    assert_eq!(*seen.borrow(), [ReqState::InProgress, ReqState::Done]);
    assert!(!ctx.has_events());
}

#[test]
fn every_notice_reaches_a_callback_with_data() {
    let ctx = Context::new().unwrap();
    let client = Rc::new(Cell::new(0u32));
    let req: Req<(), ()> = Req::new(&ctx, ());
    req.set_callback_with(&client, |_, c: &Rc<Cell<u32>>| c.set(c.get() + 1));
    req.notify_callback();
    req.notify_callback();
    req.done(());
    assert_eq!(client.get(), 3);

    // Data (of another type) replaced from inside the running callback.
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let (first, second) = (Rc::new(1u32), Rc::new(String::from("x")));
    let req: Req<(), ()> = Req::new(&ctx, ());
    let (l, s) = (log.clone(), second.clone());
    req.set_callback_with(&first, move |r, d: &Rc<u32>| {
        l.borrow_mut().push(format!("u32 {d}"));
        let l = l.clone();
        r.set_callback_with(&s, move |_, s: &Rc<String>| {
            l.borrow_mut().push(format!("str {s}"))
        });
    });
    req.notify_callback();
    req.notify_callback();
    req.done(());
    assert_eq!(*log.borrow(), ["u32 1", "str x", "str x"]);
}

/// Sets a callback with data of its own type when it is dropped.
struct SetsCallbackOnDrop(WeakReq<(), ()>, Rc<u32>, Rc<Cell<u32>>);

impl Drop for SetsCallbackOnDrop {
    fn drop(&mut self) {
        if let Some(r) = self.0.upgrade() {
            let calls = self.2.clone();
            r.set_callback_with(&self.1, move |_, d: &Rc<u32>| {
                assert_eq!(**d, 3);
                calls.set(calls.get() + 1);
            });
        }
    }
}

#[test]
fn a_callback_set_by_the_drop_of_the_one_it_replaces_keeps_its_own_data() {
    let ctx = Context::new().unwrap();
    let req: Req<(), ()> = Req::new(&ctx, ());
    let calls = Rc::new(Cell::new(0));
    let three = Rc::new(3);
    let guard = SetsCallbackOnDrop(req.downgrade(), three.clone(), calls.clone());
    req.set_callback(move |_| {
        let _ = &guard;
    });
    let other = Rc::new(String::from("two"));
    let c = calls.clone();
    req.set_callback_with(&other, move |_, _: &Rc<String>| c.set(c.get() + 10));
    req.done(());
    // Whichever callback won, it ran once, with data of its own type.
    assert!(matches!(calls.get(), 1 | 10), "calls {}", calls.get());
    drop(three);
}

#[test]
fn a_notice_pending_for_a_callback_that_replaced_itself_goes_to_that_callback() {
    // tevent calls the callback that is set when the notice comes: here the
    // first one (it finished its request, then set another callback).
    let ctx = Context::new().unwrap();
    let req: Req<(), ()> = Req::new(&ctx, ());
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    req.set_callback(move |r| {
        l.borrow_mut().push(format!("A {:?}", r.status()));
        if r.is_in_progress() {
            r.done(());
            let l2 = l.clone();
            r.set_callback(move |r| l2.borrow_mut().push(format!("B {:?}", r.status())));
        }
    });
    req.notify_callback();
    assert_eq!(*log.borrow(), ["A InProgress", "A Done"]);
    req.notify_callback();
    assert_eq!(
        log.borrow().last().unwrap(),
        "B Done",
        "the replacement stays"
    );
}

#[test]
fn a_notice_held_for_a_callback_is_not_taken_by_one_it_runs_nested() {
    // A notifies its own request (held for A), sets B and notifies again
    // (B runs nested): A still gets its notice, B gets one (tevent: A, A, B
    // with A's second call nested).
    let ctx = Context::new().unwrap();
    let req: Req<(), ()> = Req::new(&ctx, ());
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    req.set_callback(move |r| {
        l.borrow_mut().push("A");
        if l.borrow().len() > 1 {
            return;
        }
        r.notify_callback();
        let l2 = l.clone();
        r.set_callback(move |_| l2.borrow_mut().push("B"));
        r.notify_callback();
    });
    req.notify_callback();
    let mut seen = log.borrow().clone();
    seen.sort_unstable();
    assert_eq!(seen, ["A", "A", "B"]);
}

#[test]
fn a_state_reached_inside_a_cleanup_function_goes_to_the_function_set_then() {
    // The running function f receives its request: the state goes to the
    // function set at that moment (tevent calls it nested), g if f set it
    // before receiving, else f itself.
    for set_g_first in [true, false] {
        let ctx = Context::new().unwrap();
        let req: Req<(), u32> = Req::new(&ctx, ());
        let log = Rc::new(RefCell::new(Vec::new()));
        let weak = req.downgrade();
        let l = log.clone();
        req.set_cleanup_fn(move |_, state| {
            l.borrow_mut().push(format!("f {state:?}"));
            let Some(r) = weak.upgrade() else { return };
            let l2 = l.clone();
            let g = move |_: &mut (), state| l2.borrow_mut().push(format!("g {state:?}"));
            if set_g_first {
                r.set_cleanup_fn(g);
                r.received();
            } else {
                r.received();
                r.set_cleanup_fn(g);
            }
        });
        req.done(1);
        let expected = if set_g_first {
            ["f Done", "g Received"]
        } else {
            ["f Done", "f Received"]
        };
        assert_eq!(*log.borrow(), expected, "g set first: {set_g_first}");
    }
}

/// Receives its request when dropped.
struct ReceivesOnDrop(WeakReq<(), u32>);

impl Drop for ReceivesOnDrop {
    fn drop(&mut self) {
        if let Some(r) = self.0.upgrade() {
            r.received();
        }
    }
}

#[test]
fn a_cleanup_function_whose_drop_receives_the_request_leaves_its_replacement_set() {
    // f sets g and returns; dropping f (replaced) receives the request: g,
    // already in place, gets Received.
    let ctx = Context::new().unwrap();
    let req: Req<(), u32> = Req::new(&ctx, ());
    let log = Rc::new(RefCell::new(Vec::new()));
    let (l, weak) = (log.clone(), req.downgrade());
    let on_drop = ReceivesOnDrop(req.downgrade());
    req.set_cleanup_fn(move |_, state| {
        let _ = &on_drop;
        l.borrow_mut().push(format!("f {state:?}"));
        if let Some(r) = weak.upgrade() {
            let l2 = l.clone();
            r.set_cleanup_fn(move |_, state| l2.borrow_mut().push(format!("g {state:?}")));
        }
    });
    req.done(1);
    assert_eq!(*log.borrow(), ["f Done", "g Received"]);
}
