//! Queues (`tevent::Queue`): FIFO triggering from the loop, entries,
//! add_optimize_empty, blockers, stop/start/untrigger, wait_send, dropping
//! the queue (also from a trigger), two queues interleaving.
//!
//! Every test runs once per backend, with the backend's name in its
//! assertion messages. Contexts run in polling mode (wait timeout zero), so
//! `loop_once` never blocks and reports `Error::WouldBlock` when it found
//! nothing to do; tests count iterations, never wall time.

use std::cell::RefCell;
use std::rc::Rc;

use tevent::{Context, Error, Immediate, Queue, QueueEntry, Req, ReqState};

mod util;
use util::{
    assert_no_events, assert_stays_idle, each_backend_polling as each_backend, once,
    run_until_idle, Log,
};

// ---------------------------------------------------------------------------
// Helpers (local to this file).

/// A shared slot for a handle that a handler may take and drop.
type Slot<T> = Rc<RefCell<Option<T>>>;

/// The requests of these tests: the state is a label.
type R = Req<&'static str, ()>;

/// What a trigger does once it has logged `"trigger <label>"`.
#[derive(Clone, Copy)]
enum Then {
    /// Finish the request at once.
    Done,
    /// Leave it running.
    Wait,
}

fn trigger(log: &Log, then: Then) -> impl FnMut(&R) + 'static {
    let log = log.clone();
    move |req: &R| {
        log.push(format!("trigger {}", *req.state()));
        if let Then::Done = then {
            req.done(());
        }
    }
}

/// A request whose callback logs `"callback <label>"` and, if `recv`,
/// receives it (which lets the queue go on).
fn request(ctx: &Context, log: &Log, label: &'static str, recv: bool) -> R {
    let req = Req::new(ctx, label);
    let log = log.clone();
    req.set_callback(move |req| {
        log.push(format!("callback {}", *req.state()));
        if recv {
            req.recv().unwrap();
        }
    });
    req
}

/// Add a request that finishes in its trigger and is received in its
/// callback.
fn add_auto(ctx: &Context, q: &Queue, log: &Log, label: &'static str) -> R {
    let req = request(ctx, log, label, true);
    q.add(&req, trigger(log, Then::Done)).unwrap();
    req
}

// ---------------------------------------------------------------------------
// 12. FIFO.

#[test]
fn triggers_run_in_order_one_per_iteration_from_the_loop() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "fifo");
        assert_eq!(q.name(), "fifo");
        let _reqs: Vec<R> = ["0", "1", "2", "3"]
            .into_iter()
            .map(|l| add_auto(&ctx, &q, &log, l))
            .collect();
        assert!(log.is_empty(), "backend {name}: no trigger inside add");
        assert_eq!(q.length(), 4, "backend {name}");
        for (i, label) in ["0", "1", "2", "3"].into_iter().enumerate() {
            once(name, &ctx);
            assert_eq!(
                log.take(),
                [format!("trigger {label}"), format!("callback {label}")],
                "backend {name}: iteration {i}"
            );
            assert_eq!(q.length(), 3 - i, "backend {name}");
        }
        assert_no_events(name, &ctx);
    });
}

#[test]
fn a_finished_request_blocks_the_queue_until_received_or_dropped() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        let mut reqs = Vec::new();
        for label in ["0", "1", "2", "3"] {
            // Finished in the trigger, NOT received in the callback.
            let req = request(&ctx, &log, label, false);
            q.add(&req, trigger(&log, Then::Done)).unwrap();
            reqs.push(Some(req));
        }
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 0", "callback 0"], "backend {name}");
        let r0 = reqs[0].take().unwrap();
        assert_eq!(r0.status(), ReqState::Done, "backend {name}");
        // The finished head still counts and still blocks.
        assert_eq!(q.length(), 4, "backend {name}");
        assert_stays_idle(name, &ctx);
        assert!(log.is_empty(), "backend {name}");

        // Receiving it lets the next one run, from the loop.
        r0.recv().unwrap();
        assert!(log.is_empty(), "backend {name}: not inside recv");
        assert_eq!(q.length(), 3, "backend {name}");
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 1", "callback 1"], "backend {name}");
        assert_stays_idle(name, &ctx);

        // So does dropping it, finished but unreceived.
        drop(reqs[1].take());
        assert!(log.is_empty(), "backend {name}: not inside drop");
        assert_eq!(q.length(), 2, "backend {name}");
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 2", "callback 2"], "backend {name}");

        // ...and received() without a result.
        reqs[2].take().unwrap().received();
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 3", "callback 3"], "backend {name}");
        drop(reqs);
        assert_eq!(q.length(), 0, "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn length_counts_the_triggered_head_while_it_runs() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        let r0 = request(&ctx, &log, "0", true);
        q.add(&r0, trigger(&log, Then::Wait)).unwrap();
        let _r1 = add_auto(&ctx, &q, &log, "1");
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 0"], "backend {name}");
        assert!(r0.is_in_progress(), "backend {name}");
        assert_eq!(q.length(), 2, "backend {name}");
        assert_stays_idle(name, &ctx);
        // Neither an add nor stop/start triggers the running head again.
        let _r2 = add_auto(&ctx, &q, &log, "2");
        q.stop();
        q.start();
        assert_eq!(q.length(), 3, "backend {name}");
        let n = run_until_idle(name, &ctx, 10);
        assert!(
            log.is_empty(),
            "backend {name}: {n} iterations ran a trigger"
        );
        // A running head that is dropped unfinished lets the next one run.
        drop(r0);
        assert_eq!(q.length(), 2, "backend {name}");
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 1", "callback 1"], "backend {name}");
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 2", "callback 2"], "backend {name}");
        assert_eq!(q.length(), 0, "backend {name}");
        assert_no_events(name, &ctx);
    });
}

// ---------------------------------------------------------------------------
// 13. Entries, add_optimize_empty, blockers, adding twice.

#[test]
fn dropping_a_queue_entry_removes_its_request() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        let mut reqs = Vec::new();
        let mut entries = Vec::new();
        for label in ["0", "1", "2"] {
            let req = request(&ctx, &log, label, true);
            entries.push(Some(q.add_entry(&req, trigger(&log, Then::Done)).unwrap()));
            reqs.push(req);
        }
        assert!(entries.iter().flatten().all(QueueEntry::is_queued));
        // Remove a waiting entry, then the untriggered head.
        let e1 = entries[1].take().unwrap();
        drop(e1);
        assert_eq!(q.length(), 2, "backend {name}");
        let e0 = entries[0].take().unwrap();
        drop(e0);
        assert_eq!(q.length(), 1, "backend {name}");
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["trigger 2", "callback 2"], "backend {name}");
        // The removed requests are untouched, never triggered.
        for req in &reqs[..2] {
            assert!(req.is_in_progress(), "backend {name}");
        }
        assert!(!entries[2].as_ref().unwrap().is_queued(), "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn dropping_the_entry_of_the_running_head_lets_the_next_one_run() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        let r0 = request(&ctx, &log, "0", true);
        let e0 = q.add_entry(&r0, trigger(&log, Then::Wait)).unwrap();
        let _r1 = add_auto(&ctx, &q, &log, "1");
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 0"], "backend {name}");
        drop(e0);
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 1", "callback 1"], "backend {name}");
        // The first request still runs, and finishes normally.
        assert!(r0.is_in_progress(), "backend {name}");
        r0.done(());
        assert_eq!(log.take(), ["callback 0"], "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn add_optimize_empty_triggers_inside_the_call_on_an_empty_running_queue() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        // Inside a _send: no callback yet.
        let req: R = Req::new(&ctx, "0");
        let _entry = q
            .add_optimize_empty(&req, trigger(&log, Then::Done))
            .unwrap();
        assert_eq!(log.take(), ["trigger 0"], "backend {name}: synchronous");
        // The caller checks and posts.
        assert!(!req.is_in_progress(), "backend {name}");
        let req = req.post();
        let l = log.clone();
        req.set_callback(move |req| {
            l.push(format!("callback {}", *req.state()));
            req.recv().unwrap();
        });
        assert!(log.is_empty(), "backend {name}");
        once(name, &ctx);
        assert_eq!(log.take(), ["callback 0"], "backend {name}");
        assert_eq!(q.length(), 0, "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn add_optimize_empty_does_not_trigger_inside_the_call_otherwise() {
    each_backend(|name, ctx| {
        let log = Log::default();

        // A callback is set (we are not inside a _send).
        let q = Queue::new(&ctx, "with callback");
        let req = request(&ctx, &log, "cb", true);
        let _e = q
            .add_optimize_empty(&req, trigger(&log, Then::Done))
            .unwrap();
        assert!(log.is_empty(), "backend {name}: not synchronous");
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger cb", "callback cb"], "backend {name}");
        assert_no_events(name, &ctx);

        // The queue is not empty (its head is not triggered yet).
        let q = Queue::new(&ctx, "non-empty");
        let _head = add_auto(&ctx, &q, &log, "head");
        let req: R = Req::new(&ctx, "next");
        let _e = q
            .add_optimize_empty(&req, trigger(&log, Then::Wait))
            .unwrap();
        assert!(log.is_empty(), "backend {name}: not synchronous");
        once(name, &ctx);
        assert_eq!(
            log.take(),
            ["trigger head", "callback head"],
            "backend {name}"
        );
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger next"], "backend {name}");
        drop(req);

        // The queue is empty but stopped.
        let q = Queue::new(&ctx, "stopped");
        q.stop();
        let req: R = Req::new(&ctx, "stopped");
        let _e = q
            .add_optimize_empty(&req, trigger(&log, Then::Wait))
            .unwrap();
        assert!(log.is_empty(), "backend {name}: not synchronous");
        assert_stays_idle(name, &ctx);
        q.start();
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger stopped"], "backend {name}");
        drop(req);
        assert_no_events(name, &ctx);
    });
}

#[test]
fn a_blocker_holds_the_queue_until_it_is_dropped() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        let _r0 = add_auto(&ctx, &q, &log, "0");
        let blocker: Req<(), ()> = Req::new(&ctx, ());
        let _be = q.add_blocker(&blocker).unwrap();
        let _r2 = add_auto(&ctx, &q, &log, "2");
        assert_eq!(q.length(), 3, "backend {name}");
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 0", "callback 0"], "backend {name}");
        // The blocker is the head now and has nothing to run.
        assert_stays_idle(name, &ctx);
        assert!(log.is_empty(), "backend {name}");
        assert_eq!(q.length(), 2, "backend {name}");
        assert!(blocker.is_in_progress(), "backend {name}");
        drop(blocker);
        assert_eq!(q.length(), 1, "backend {name}");
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 2", "callback 2"], "backend {name}");
        assert_no_events(name, &ctx);

        // A blocker added to an empty queue holds it at once.
        let blocker: Req<(), ()> = Req::new(&ctx, ());
        let _be = q.add_blocker(&blocker).unwrap();
        let _r3 = add_auto(&ctx, &q, &log, "3");
        assert_stays_idle(name, &ctx);
        blocker.received();
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 3", "callback 3"], "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn adding_a_queued_request_again_is_refused() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        let other = Queue::new(&ctx, "other");
        let req = request(&ctx, &log, "0", true);
        q.add(&req, trigger(&log, Then::Done)).unwrap();
        let again = q.add(&req, trigger(&log, Then::Done));
        assert!(
            matches!(again, Err(Error::AlreadyQueued)),
            "backend {name}: {again:?}"
        );
        assert!(matches!(
            q.add_entry(&req, trigger(&log, Then::Done)),
            Err(Error::AlreadyQueued)
        ));
        assert!(matches!(
            other.add_optimize_empty(&req, trigger(&log, Then::Done)),
            Err(Error::AlreadyQueued)
        ));
        assert!(matches!(other.add_blocker(&req), Err(Error::AlreadyQueued)));
        assert_eq!(Error::AlreadyQueued.errno(), Some(libc::EBUSY));
        assert_eq!((q.length(), other.length()), (1, 0), "backend {name}");
        // The first trigger is the one that runs, once.
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["trigger 0", "callback 0"], "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn a_request_whose_entry_was_dropped_can_be_queued_again() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        let req = request(&ctx, &log, "0", true);
        let entry = q.add_entry(&req, trigger(&log, Then::Done)).unwrap();
        drop(entry);
        assert_eq!(q.length(), 0, "backend {name}");
        // It is in no queue any more (tevent: the entry is freed).
        let again = q.add(&req, trigger(&log, Then::Done));
        assert!(again.is_ok(), "backend {name}: {again:?}");
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["trigger 0", "callback 0"], "backend {name}");
    });
}

#[test]
fn a_request_whose_queue_was_dropped_can_join_another_queue() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        q.stop();
        let req = request(&ctx, &log, "0", true);
        q.add(&req, trigger(&log, Then::Done)).unwrap();
        drop(q);
        let other = Queue::new(&ctx, "other");
        let again = other.add(&req, trigger(&log, Then::Done));
        assert!(again.is_ok(), "backend {name}: {again:?}");
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["trigger 0", "callback 0"], "backend {name}");
    });
}

// ---------------------------------------------------------------------------
// 14. stop / start / running / untrigger.

#[test]
fn a_stopped_queue_accumulates_and_start_triggers_from_the_loop() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        assert!(q.running(), "backend {name}: a new queue runs");
        q.stop();
        assert!(!q.running(), "backend {name}");
        let _reqs: Vec<R> = ["0", "1"]
            .into_iter()
            .map(|l| add_auto(&ctx, &q, &log, l))
            .collect();
        assert_stays_idle(name, &ctx);
        assert!(log.is_empty(), "backend {name}");
        assert_eq!(q.length(), 2, "backend {name}");
        q.start();
        assert!(q.running(), "backend {name}");
        assert!(log.is_empty(), "backend {name}: not inside start");
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 0", "callback 0"], "backend {name}");
        // Stopped again between two requests. Receiving request 0 had
        // already scheduled the queue's trigger immediate: it still runs, and
        // finds the queue stopped (C tevent's immediate does the same).
        q.stop();
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert!(log.is_empty(), "backend {name}: stopped");
        assert_stays_idle(name, &ctx);
        q.start();
        q.start();
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["trigger 1", "callback 1"], "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn requests_dropped_from_the_middle_of_a_long_queue_leave_the_rest_in_order() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        q.stop();
        const LABELS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
        // 300 requests; two of every three leave while queued (the head
        // among them), which also makes the queue compact its storage.
        let mut kept = Vec::new();
        let mut entries = Vec::new();
        for i in 0..300 {
            let label = LABELS[(i / 3) % 10];
            let req = request(&ctx, &log, label, true);
            let entry = q.add_entry(&req, trigger(&log, Then::Done)).unwrap();
            if i % 3 == 2 {
                kept.push((req, entry));
            } else {
                entries.push((req, entry));
            }
        }
        assert_eq!(q.length(), 300, "backend {name}");
        for (i, (req, entry)) in entries.drain(..).enumerate() {
            if i % 2 == 0 {
                drop(entry); // leaves through its entry
            } else {
                drop(req); // leaves with its request
            }
        }
        assert_eq!(q.length(), 100, "backend {name}");
        assert!(
            kept.iter().all(|(_, e)| e.is_queued()),
            "backend {name}: the others are still found"
        );
        q.start();
        let mut expected = Vec::new();
        for i in 0..100 {
            let label = LABELS[i % 10];
            expected.push(format!("trigger {label}"));
            expected.push(format!("callback {label}"));
        }
        assert_eq!(run_until_idle(name, &ctx, 1000), 100, "backend {name}");
        assert_eq!(log.take(), expected, "backend {name}: in the order added");
        assert_eq!(q.length(), 0, "backend {name}");
    });
}

#[test]
fn adding_moves_a_pending_trigger_behind_later_immediates() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        q.stop();
        let _a = add_auto(&ctx, &q, &log, "a");
        q.start(); // the trigger is on its way
        let l = log.clone();
        let _im = ctx.schedule_immediate(move |_, _| l.push("immediate"));
        let _b = add_auto(&ctx, &q, &log, "b"); // moves the trigger, as tevent
        once(name, &ctx);
        assert_eq!(log.take(), ["immediate"], "backend {name}");
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger a", "callback a"], "backend {name}");
    });
}

#[test]
fn a_queue_whose_trigger_was_pending_at_reinitialise_triggers_again() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        let a = add_auto(&ctx, &q, &log, "a");
        ctx.reinitialise().unwrap(); // drops the pending trigger
        assert!(!ctx.has_events(), "backend {name}");
        drop(a);
        let _b = add_auto(&ctx, &q, &log, "b");
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["trigger b", "callback b"], "backend {name}");
        assert_eq!(q.length(), 0, "backend {name}");
    });
}

#[test]
fn an_already_triggered_head_keeps_running_after_stop() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        // r0's trigger starts work that finishes it from the loop.
        let r0: Req<Option<Immediate>, ()> = Req::new(&ctx, None);
        let l = log.clone();
        r0.set_callback(move |req| {
            l.push("callback 0");
            req.recv().unwrap();
        });
        let l = log.clone();
        q.add(&r0, move |req| {
            l.push("trigger 0");
            let weak = req.downgrade();
            let ctx = req.context().expect("context alive");
            let im = ctx.schedule_immediate(move |_, _| {
                if let Some(req) = weak.upgrade() {
                    req.done(());
                }
            });
            *req.state_mut() = Some(im);
        })
        .unwrap();
        let _r1 = add_auto(&ctx, &q, &log, "1");
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 0"], "backend {name}");
        q.stop();
        once(name, &ctx);
        assert_eq!(log.take(), ["callback 0"], "backend {name}");
        assert_stays_idle(name, &ctx);
        assert!(log.is_empty(), "backend {name}: stopped");
        q.start();
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 1", "callback 1"], "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn untrigger_the_head_of_a_stopped_queue_and_start_triggers_it_again() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        let r0 = request(&ctx, &log, "0", true);
        let e0 = q.add_entry(&r0, trigger(&log, Then::Wait)).unwrap();
        let r1 = request(&ctx, &log, "1", true);
        let e1 = q.add_entry(&r1, trigger(&log, Then::Wait)).unwrap();
        // On a running queue: refused (C tevent aborts).
        assert!(
            matches!(e1.untrigger(), Err(Error::QueueRunning)),
            "backend {name}"
        );
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 0"], "backend {name}");
        assert!(
            matches!(e0.untrigger(), Err(Error::QueueRunning)),
            "backend {name}: the queue runs"
        );
        q.stop();
        // Not the head: refused.
        assert!(
            matches!(e1.untrigger(), Err(Error::QueueRunning)),
            "backend {name}"
        );
        e0.untrigger()
            .unwrap_or_else(|e| panic!("backend {name}: untrigger: {e}"));
        assert_stays_idle(name, &ctx);
        q.start();
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 0"], "backend {name}: again");
        assert_stays_idle(name, &ctx);
        r0.done(());
        assert_eq!(log.take(), ["callback 0"], "backend {name}");
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 1"], "backend {name}");
        drop(q);
        assert!(
            matches!(e1.untrigger(), Err(Error::ContextGone)),
            "backend {name}: the queue is gone"
        );
        drop(r1);
        assert_no_events(name, &ctx);
    });
}

#[test]
fn entries_have_tags_and_debug_output() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "tagged");
        let req = request(&ctx, &log, "0", true);
        let entry = q.add_entry(&req, trigger(&log, Then::Wait)).unwrap();
        assert_eq!(entry.tag(), 0, "backend {name}");
        entry.set_tag(42);
        assert_eq!(entry.tag(), 42, "backend {name}");
        let text = format!("{entry:?}");
        assert!(
            text.contains("tagged") && text.contains("42"),
            "backend {name}: {text}"
        );
        let text = format!("{q:?}");
        assert!(
            text.contains("tagged") && text.contains("queue.rs"),
            "backend {name}: {text}"
        );
        drop(req);
        assert!(!entry.is_queued(), "backend {name}");
        assert_eq!(q.length(), 0, "backend {name}");
        // The trigger immediate scheduled by the add is not cancelled when
        // the queue empties (as in C): it runs once and finds nothing.
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert!(log.is_empty(), "backend {name}");
        assert_no_events(name, &ctx);
    });
}

// ---------------------------------------------------------------------------
// 15. wait_send.

#[test]
fn wait_send_finishes_from_the_loop_when_it_reaches_the_head() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        let r0 = request(&ctx, &log, "0", true);
        q.add(&r0, trigger(&log, Then::Wait)).unwrap();
        let wait = q.wait_send();
        let l = log.clone();
        wait.set_callback(move |w| l.push(format!("wait {:?}", w.status())));
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["trigger 0"], "backend {name}");
        assert!(wait.is_in_progress(), "backend {name}");
        r0.done(());
        assert_eq!(log.take(), ["callback 0"], "backend {name}");
        assert!(wait.is_in_progress(), "backend {name}: not inside recv");
        once(name, &ctx);
        assert_eq!(log.take(), ["wait Done"], "backend {name}");
        assert_eq!(wait.status(), ReqState::Done, "backend {name}");
        // (Receiving it before the drop is the ignored test
        // dropping_a_received_wait_request_releases_the_queue.)
        drop(wait);
        assert_eq!(q.length(), 0, "backend {name}");

        // On an empty queue: from the first iteration, not inside the call.
        let wait = q.wait_send();
        assert!(wait.is_in_progress(), "backend {name}");
        once(name, &ctx);
        assert_eq!(wait.status(), ReqState::Done, "backend {name}");
        drop(wait);
        assert_no_events(name, &ctx);
    });
}

#[test]
fn a_received_wait_request_keeps_blocking_the_queue() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        let wait = q.wait_send();
        once(name, &ctx);
        assert_eq!(wait.recv(), Ok(()), "backend {name}");
        let _r1 = add_auto(&ctx, &q, &log, "1");
        assert_stays_idle(name, &ctx);
        assert!(log.is_empty(), "backend {name}: the lock is still held");
        assert_eq!(q.length(), 2, "backend {name}");
        // Kept for the other test: dropping `wait` must release the queue.
        drop(wait);
    });
}

#[test]
fn dropping_an_unreceived_wait_request_releases_the_queue() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        let wait = q.wait_send();
        once(name, &ctx);
        assert_eq!(wait.status(), ReqState::Done, "backend {name}");
        let _r1 = add_auto(&ctx, &q, &log, "1");
        assert_stays_idle(name, &ctx);
        drop(wait);
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 1", "callback 1"], "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn dropping_a_received_wait_request_releases_the_queue() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let q = Queue::new(&ctx, "q");
        let wait = q.wait_send();
        once(name, &ctx);
        assert_eq!(wait.recv(), Ok(()), "backend {name}");
        let _r1 = add_auto(&ctx, &q, &log, "1");
        assert_stays_idle(name, &ctx);
        assert_eq!(q.length(), 2, "backend {name}");
        drop(wait);
        assert_eq!(q.length(), 1, "backend {name}");
        once(name, &ctx);
        assert_eq!(log.take(), ["trigger 1", "callback 1"], "backend {name}");
        assert_no_events(name, &ctx);
    });
}

// ---------------------------------------------------------------------------
// 16. Dropping the queue.

#[test]
fn a_trigger_may_drop_the_queue_itself() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let holder: Slot<Queue> = Rc::new(RefCell::new(Some(Queue::new(&ctx, "q"))));
        let r0 = request(&ctx, &log, "0", true);
        let (h, l) = (holder.clone(), log.clone());
        holder
            .borrow()
            .as_ref()
            .unwrap()
            .add(&r0, move |req: &R| {
                l.push("trigger 0");
                let q = h.borrow_mut().take();
                drop(q);
                l.push("queue dropped");
                req.done(());
            })
            .unwrap();
        let rest: Vec<R> = ["1", "2"]
            .into_iter()
            .map(|l| add_auto(&ctx, holder.borrow().as_ref().unwrap(), &log, l))
            .collect();
        once(name, &ctx);
        assert_eq!(
            log.take(),
            ["trigger 0", "queue dropped", "callback 0"],
            "backend {name}"
        );
        assert!(holder.borrow().is_none(), "backend {name}");
        // The others are never triggered, and left alone.
        assert_stays_idle(name, &ctx);
        assert!(log.is_empty(), "backend {name}");
        for req in &rest {
            assert!(req.is_in_progress(), "backend {name}");
        }
        // The loop goes on.
        let l = log.clone();
        let _next = ctx.schedule_immediate(move |_, _| l.push("next"));
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["next"], "backend {name}");
        // They still finish normally.
        rest[0].done(());
        assert_eq!(log.take(), ["callback 1"], "backend {name}");
        drop(rest);
        assert_no_events(name, &ctx);
    });
}

#[test]
fn dropping_a_queue_leaves_its_requests_untouched() {
    each_backend(|name, ctx| {
        let log = Log::default();
        for running in [true, false] {
            let q = Queue::new(&ctx, "q");
            if !running {
                q.stop();
            }
            let reqs: Vec<R> = ["0", "1"]
                .into_iter()
                .map(|label| {
                    let req = add_auto(&ctx, &q, &log, label);
                    let l = log.clone();
                    req.set_cleanup_fn(move |s, st| l.push(format!("cleanup {s} {st:?}")));
                    req
                })
                .collect();
            drop(q);
            assert!(log.is_empty(), "backend {name}: running={running}");
            // The queue's pending trigger went with it.
            assert_no_events(name, &ctx);
            for req in &reqs {
                assert!(req.is_in_progress(), "backend {name}");
                assert!(req.try_state().is_some(), "backend {name}");
            }
            assert!(log.is_empty(), "backend {name}: never triggered");
            reqs[0].done(());
            assert_eq!(
                log.take(),
                ["cleanup 0 Done", "callback 0", "cleanup 0 Received"],
                "backend {name}"
            );
            drop(reqs);
            assert_eq!(log.take(), ["cleanup 1 Received"], "backend {name}");
        }
    });
}

// ---------------------------------------------------------------------------
// 17. Two queues.

#[test]
fn two_queues_interleave_one_trigger_per_iteration() {
    each_backend(|name, ctx| {
        let log = Log::default();
        let qa = Queue::new(&ctx, "a");
        let qb = Queue::new(&ctx, "b");
        let mut reqs = Vec::new();
        for label in ["a0", "a1", "a2"] {
            reqs.push(add_auto(&ctx, &qa, &log, label));
        }
        for label in ["b0", "b1", "b2"] {
            reqs.push(add_auto(&ctx, &qb, &log, label));
        }
        // Each queue triggers its head through one immediate of its own.
        // After the adds the immediate FIFO is [A, B]. Running A's trigger
        // finishes and receives a0 inside the iteration, which schedules A
        // again, behind B: [B, A]; and so on. So the order is fully
        // determined by the FIFO of immediates: a0 b0 a1 b1 a2 b2.
        let mut order = Vec::new();
        let mut iterations = 0;
        loop {
            match ctx.loop_once() {
                Ok(()) => iterations += 1,
                Err(Error::WouldBlock) => break,
                Err(e) => panic!("backend {name}: {e}"),
            }
            let ran = log.take();
            assert_eq!(ran.len(), 2, "backend {name}: one trigger ({ran:?})");
            order.push(ran[0].trim_start_matches("trigger ").to_string());
            assert!(iterations <= 6, "backend {name}");
        }
        assert_eq!(iterations, 6, "backend {name}");
        assert_eq!(
            order,
            ["a0", "b0", "a1", "b1", "a2", "b2"],
            "backend {name}"
        );
        assert_eq!((qa.length(), qb.length()), (0, 0), "backend {name}");
        assert_no_events(name, &ctx);
    });
}

#[test]
fn a_trigger_that_moved_its_request_to_another_queue_as_a_blocker_does_not_run_there() {
    let ctx = Context::new().unwrap();
    let q1 = Queue::new(&ctx, "q1");
    let q2 = Queue::new(&ctx, "q2");
    let req: Req<(), ()> = Req::new(&ctx, ());
    let calls = Rc::new(std::cell::Cell::new(0));
    let entry: Rc<RefCell<Option<QueueEntry>>> = Rc::new(RefCell::new(None));
    let (c, e, q2b) = (calls.clone(), entry.clone(), q2.clone());
    let first = q1
        .add_entry(&req, move |r| {
            c.set(c.get() + 1);
            drop(e.borrow_mut().take()); // leave q1
            *e.borrow_mut() = Some(q2b.add_blocker(r).unwrap());
        })
        .unwrap();
    *entry.borrow_mut() = Some(first);
    ctx.loop_once().unwrap();
    assert_eq!(calls.get(), 1);
    // A blocker has no trigger: untriggering and starting q2 runs nothing.
    q2.stop();
    entry.borrow().as_ref().unwrap().untrigger().unwrap();
    q2.start();
    for _ in 0..3 {
        ctx.try_loop_once().unwrap();
    }
    assert_eq!(calls.get(), 1);
}

/// One request in a queue whose trigger, on its first run, makes the queue
/// trigger it again while it runs (stop, untrigger, start, and a nested
/// iteration: where tevent calls the trigger nested), then runs `then`.
/// Every run records the request's status and the queue's length.
struct Retrigger {
    ctx: Context,
    queue: Queue,
    req: Req<(), ()>,
    entry: Rc<RefCell<Option<QueueEntry>>>,
    runs: Rc<RefCell<Vec<(ReqState, usize)>>>,
}

type AfterRetrigger = fn(&Req<(), ()>, &Queue, &RefCell<Option<QueueEntry>>);

fn retrigger(then: AfterRetrigger) -> Retrigger {
    let ctx = Context::new().unwrap();
    ctx.allow_nesting();
    let queue = Queue::new(&ctx, "q");
    let req: Req<(), ()> = Req::new(&ctx, ());
    let entry: Rc<RefCell<Option<QueueEntry>>> = Rc::new(RefCell::new(None));
    let runs = Rc::new(RefCell::new(Vec::new()));
    let (r, e, q, cx) = (runs.clone(), entry.clone(), queue.clone(), ctx.clone());
    let added = queue
        .add_entry(&req, move |req| {
            r.borrow_mut().push((req.status(), q.length()));
            if r.borrow().len() == 1 {
                q.stop();
                e.borrow().as_ref().unwrap().untrigger().unwrap();
                q.start();
                cx.loop_once().unwrap();
                then(req, &q, &e);
            }
        })
        .unwrap();
    *entry.borrow_mut() = Some(added);
    Retrigger {
        ctx,
        queue,
        req,
        entry,
        runs,
    }
}

impl Retrigger {
    fn run(&self) {
        for _ in 0..5 {
            self.ctx.try_loop_once().unwrap();
        }
    }
}

#[test]
fn a_head_triggered_again_while_its_trigger_runs_runs_it_again() {
    // tevent calls the trigger again, nested; here it runs again when it
    // returns, and the head is not left stuck.
    let t = retrigger(|_, _, _| {});
    t.run();
    assert_eq!(t.runs.borrow().len(), 2);
    assert!(!t.ctx.has_events(), "the head is not stuck");
}

#[test]
fn a_trigger_called_again_while_it_ran_runs_again_even_if_untriggered_since() {
    let t = retrigger(|_, q, e| {
        q.stop();
        e.borrow().as_ref().unwrap().untrigger().unwrap();
    });
    t.ctx.loop_once().unwrap();
    assert_eq!(t.runs.borrow().len(), 2);
}

#[test]
fn a_trigger_is_not_run_again_for_a_request_that_left_its_queue() {
    // The trigger then finishes, receives and removes its request: the
    // pending re-run is dropped (tevent's nested call would have come while
    // it was still the triggered head).
    let t = retrigger(|r, _, e| {
        r.done(());
        r.recv().unwrap();
        drop(e.borrow_mut().take());
    });
    t.run();
    assert_eq!(*t.runs.borrow(), [(ReqState::InProgress, 1)]);
    assert!(!t.ctx.has_events());
}

#[test]
fn a_trigger_whose_entry_was_dropped_while_it_ran_is_not_run_again() {
    let t = retrigger(|_, _, e| drop(e.borrow_mut().take()));
    t.ctx.loop_once().unwrap();
    assert_eq!(
        t.runs.borrow().len(),
        1,
        "no re-run for a request in no queue"
    );
    assert_eq!(t.queue.length(), 0);
}

#[test]
fn a_trigger_that_panics_with_a_re_run_pending_does_not_pass_it_on() {
    let t = retrigger(|_, _, _| panic!("trigger"));
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.ctx.loop_once()));
    assert!(run.is_err());
    drop(t.entry.borrow_mut().take());
    // In a new queue, with a new trigger: it runs once.
    let q = Queue::new(&t.ctx, "q2");
    let count = Rc::new(std::cell::Cell::new(0));
    let c = count.clone();
    q.add(&t.req, move |_| c.set(c.get() + 1)).unwrap();
    for _ in 0..3 {
        t.ctx.try_loop_once().unwrap();
    }
    assert_eq!(count.get(), 1);
}
