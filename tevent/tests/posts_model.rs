//! A randomised model check of posts, immediates and queue triggers: random
//! sequences of creating, finishing, posting (also twice), deferring,
//! receiving and dropping requests (also from their own callbacks), nested
//! iterations, callbacks that panic, `reinitialise`, queue adds and
//! stop/start, with immediates beside them. After every sequence the loop must drain to "no events"
//! (no post lost, none counted twice), and with event tracing on, every
//! `Attach` of an immediate or post must have had its `Detach`.
//!
//! Deterministic: the seeds are fixed.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use tevent::{Context, EventKind, EventTracePoint, Queue, Req};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

type Slot = Rc<RefCell<Option<Req<u32, ()>>>>;

/// Run iterations until none finds work; a callback's panic (the model
/// makes some panic on purpose) is caught and the loop goes on.
fn drain(ctx: &Context) {
    let mut n = 0;
    while step(ctx) {
        n += 1;
        assert!(n < 1_000_000, "runaway");
    }
}

/// One iteration; a panic counts as work done.
fn step(ctx: &Context) -> bool {
    match catch_unwind(AssertUnwindSafe(|| ctx.try_loop_once())) {
        Ok(ran) => ran.unwrap(),
        Err(_) => true,
    }
}

#[test]
fn random_sequences_of_posts_drain_and_trace_balanced() {
    for seed in 1..2000u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E3779B97F4A7C15));
        let ctx = Context::with_backend("poll").unwrap();
        ctx.allow_nesting();
        let traced = seed % 2 == 0;
        let balance = Rc::new(Cell::new(0i64));
        if traced {
            let b = balance.clone();
            ctx.set_event_trace_callback(move |event, point| {
                if event.kind == EventKind::Immediate {
                    match point {
                        EventTracePoint::Attach => b.set(b.get() + 1),
                        EventTracePoint::Detach => b.set(b.get() - 1),
                        EventTracePoint::BeforeHandler => {}
                    }
                }
            });
        }
        let slots: Vec<Slot> = (0..6).map(|_| Rc::new(RefCell::new(None))).collect();
        let queue = Queue::new(&ctx, "q");
        let mut ims = Vec::new();
        let ops = Rc::new(Cell::new(0u64));
        for _step in 0..400 {
            assert!(balance.get() >= 0, "seed {seed}: a detach without attach");
            let i = rng.below(slots.len() as u64) as usize;
            let slot = &slots[i];
            let op = rng.below(14);
            // A callback may panic on purpose: the model goes on.
            let _ = catch_unwind(AssertUnwindSafe(|| {
                match op {
                    0 | 1 => {
                        // new request with a callback that may do things
                        let req: Req<u32, ()> = Req::new(&ctx, i as u32);
                        let s2 = slot.clone();
                        let mode = rng.below(6);
                        let ctx2 = ctx.clone();
                        let ops2 = ops.clone();
                        req.set_callback(move |r| {
                            ops2.set(ops2.get() + 1);
                            match mode {
                                0 => {
                                    // drop own handle inside callback
                                    let old = s2.borrow_mut().take();
                                    drop(old);
                                }
                                // re-post itself (defer + notify), two times in three
                                1 if !ops2.get().is_multiple_of(3) => {
                                    r.defer_callback();
                                    r.notify_callback();
                                }
                                2 => {
                                    // nested loop
                                    let _ = ctx2.try_loop_once();
                                }
                                3 => {
                                    let _ = r.recv();
                                }
                                4 if ops2.get().is_multiple_of(5) => panic!("model callback"),
                                _ => {}
                            }
                        });
                        let old = slot.borrow_mut().replace(req);
                        drop(old);
                    }
                    2 => {
                        let r = slot.borrow_mut().take();
                        if let Some(r) = r {
                            if r.is_in_progress() {
                                r.done(());
                            }
                            let r = r.post();
                            *slot.borrow_mut() = Some(r);
                        }
                    }
                    3 => {
                        let r = slot.borrow_mut().take();
                        if let Some(r) = r {
                            let r = r.post().post();
                            *slot.borrow_mut() = Some(r);
                        }
                    }
                    4 => {
                        let r = slot.borrow().as_ref().map(|r| r.downgrade());
                        if let Some(r) = r.and_then(|w| w.upgrade()) {
                            r.defer_callback();
                            r.notify_callback();
                        }
                    }
                    5 => {
                        let r = slot.borrow().as_ref().map(|r| r.downgrade());
                        if let Some(r) = r.and_then(|w| w.upgrade()) {
                            r.received();
                        }
                    }
                    6 => {
                        let old = slot.borrow_mut().take();
                        drop(old);
                    }
                    7 => {
                        if rng.below(4) == 0 {
                            ctx.reinitialise().unwrap();
                        }
                    }
                    8 | 9 => {
                        step(&ctx);
                    }
                    10 => {
                        let r = slot.borrow().as_ref().map(|r| r.downgrade());
                        if let Some(r) = r.and_then(|w| w.upgrade()) {
                            let _ = queue.add(&r, |r| {
                                if r.is_in_progress() {
                                    r.done(());
                                }
                            });
                        }
                    }
                    11 => {
                        let im = ctx.create_immediate();
                        let ctx2 = ctx.clone();
                        im.schedule(move |_, _| {
                            let _ = ctx2.try_loop_once();
                        });
                        ims.push(im);
                    }
                    12 => {
                        if !ims.is_empty() {
                            let k = rng.below(ims.len() as u64) as usize;
                            ims.swap_remove(k);
                        }
                    }
                    _ => {
                        if rng.below(2) == 0 {
                            queue.stop()
                        } else {
                            queue.start()
                        }
                    }
                }
            }));
        }
        drain(&ctx);
        // every post ran or was cancelled
        let ims_sched = ims.iter().any(|i| i.is_scheduled());
        assert!(!ims_sched);
        assert!(
            !ctx.has_events(),
            "seed {seed}: has_events after drain: {ctx:?}"
        );
        for s in &slots {
            let old = s.borrow_mut().take();
            drop(old);
        }
        drop(queue);
        drain(&ctx);
        assert!(!ctx.has_events(), "seed {seed}: has_events at end: {ctx:?}");
        drop(ims);
        if traced {
            assert_eq!(balance.get(), 0, "seed {seed}: attaches without detach");
        }
    }
}
