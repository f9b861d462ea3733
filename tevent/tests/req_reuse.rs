//! A freed request's storage is reused by the next request of the same
//! types while weak references to the freed one may remain (a `WeakReq`, a
//! sub-request's parent, a stale post, an end time or queue place being
//! removed). None of them may reach the next request: each test would see
//! it through a `WeakReq` taken by a callback, or a callback run with the
//! wrong state.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use tevent::{Context, Deadline, EventKind, EventTracePoint, Queue, Req, WeakReq};

/// A trace callback that, once armed, runs the loop at the first trace point
/// of `kind`/`point` (a nested loop is not even needed: the drop happens
/// outside the loop).
fn arm_loop_in_trace(ctx: &Context, kind: EventKind, point: EventTracePoint) -> Rc<Cell<bool>> {
    let armed = Rc::new(Cell::new(false));
    let a = armed.clone();
    let weak = ctx.downgrade();
    ctx.set_event_trace_callback(move |ev, p| {
        if a.get() && ev.kind == kind && p == point {
            a.set(false);
            let ctx = weak.upgrade().unwrap();
            ctx.allow_nesting();
            let _ = ctx.loop_once();
        }
    });
    armed
}

/// Drop a request with a pending post and an end time: the post's Detach
/// trace runs user code before the end time is dropped.
#[test]
fn a_dropped_requests_end_time_does_not_fire_while_trace_callbacks_of_its_teardown_run() {
    let ctx = Context::new().unwrap();
    let armed = arm_loop_in_trace(&ctx, EventKind::Immediate, EventTracePoint::Detach);
    let stash: Rc<RefCell<Option<WeakReq<u32, ()>>>> = Rc::new(RefCell::new(None));
    let fired = Rc::new(Cell::new(0));

    let req: Req<u32, ()> = Req::new(&ctx, 1);
    req.set_endtime(Deadline::Asap);
    let (s, f) = (stash.clone(), fired.clone());
    req.set_callback(move |r| {
        f.set(f.get() + 1);
        *s.borrow_mut() = Some(r.downgrade());
    });
    let req = req.post(); // a pending post
    armed.set(true);
    drop(req); // the last handle: cancelled, never called back

    let next: Req<u32, ()> = Req::new(&ctx, 2);
    let reached = stash
        .borrow()
        .as_ref()
        .and_then(|w| w.upgrade())
        .map(|r| *r.state());
    assert_eq!(
        (fired.get(), reached),
        (0, None),
        "(callbacks of the dropped request, state reached through its WeakReq)"
    );
    drop(next);
}

/// Drop a queued request with an end time: the timer's Detach trace runs
/// user code before the queue place goes; the queue triggers it.
#[test]
fn a_dropped_requests_queue_place_does_not_trigger_while_trace_callbacks_of_its_teardown_run() {
    let ctx = Context::new().unwrap();
    let armed = arm_loop_in_trace(&ctx, EventKind::Timer, EventTracePoint::Detach);
    let stash: Rc<RefCell<Option<WeakReq<u32, ()>>>> = Rc::new(RefCell::new(None));
    let triggered = Rc::new(Cell::new(0));
    let queue = Queue::new(&ctx, "q");

    let req: Req<u32, ()> = Req::new(&ctx, 1);
    req.set_endtime(Deadline::after(std::time::Duration::from_secs(3600)));
    let (s, t) = (stash.clone(), triggered.clone());
    queue
        .add(&req, move |r| {
            t.set(t.get() + 1);
            *s.borrow_mut() = Some(r.downgrade());
        })
        .unwrap();
    armed.set(true);
    drop(req);

    let next: Req<u32, ()> = Req::new(&ctx, 2);
    let reached = stash
        .borrow()
        .as_ref()
        .and_then(|w| w.upgrade())
        .map(|r| *r.state());
    assert_eq!(
        (triggered.get(), reached),
        (0, None),
        "(triggers of the dropped request, state reached through its WeakReq)"
    );
    drop(next);
    drop(queue);
}

/// Sets a parent callback (with another parent) when dropped, then drops
/// that parent.
struct Hook {
    child: WeakReq<(), ()>,
    parent2: Option<Req<u32, ()>>,
    calls: Rc<Cell<u32>>,
}

impl Drop for Hook {
    fn drop(&mut self) {
        if let (Some(child), Some(p2)) = (self.child.upgrade(), self.parent2.take()) {
            let c = self.calls.clone();
            child.set_parent_callback(&p2, move |_, p: &Req<u32, ()>| {
                c.set(c.get() + 100 + *p.state());
            });
            drop(p2); // parent2 goes: its storage gets generation 1
        }
    }
}

#[test]
fn a_parent_callback_set_from_the_drop_of_the_one_it_replaces_checks_its_own_parent() {
    let ctx = Context::new().unwrap();
    let calls = Rc::new(Cell::new(0));
    // parent1: of another type, on storage that was used once (generation 1).
    drop(Req::<u8, ()>::new(&ctx, 0));
    let parent1: Req<u8, ()> = Req::new(&ctx, 1);
    // parent2: fresh storage (generation 0).
    let parent2: Req<u32, ()> = Req::new(&ctx, 7);
    let child: Req<(), ()> = Req::new(&ctx, ());
    let hook = Hook {
        child: child.downgrade(),
        parent2: Some(parent2),
        calls: calls.clone(),
    };
    child.set_callback(move |_| {
        let _ = &hook;
    });
    child.set_parent_callback(&parent1, |_, _| {});
    // parent2 is gone; its storage now holds an unrelated request.
    let unrelated: Req<u32, ()> = Req::new(&ctx, 42);
    child.done(());
    assert_eq!(
        calls.get(),
        0,
        "called back with a later request on parent2's storage"
    );
    drop(unrelated);
    drop(parent1);
}

/// Randomised: WeakReqs, parent callbacks, posts, end times and queues
/// interleaved with drops and reuse (no trace callback). Every request has
/// a unique id in its state; a weak holder must only ever reach its own id.
#[test]
fn random_weak_references_never_reach_another_request() {
    for seed in 1..120u64 {
        let mut rng = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let ctx = Context::new().unwrap();
        ctx.set_wait_timeout(std::time::Duration::from_millis(0));
        let queue = Queue::new(&ctx, "q");
        let bad = Rc::new(Cell::new(0u32));
        let mut id = 0u64;
        let mut live: Vec<Req<u64, ()>> = Vec::new();
        let mut weaks: Vec<(WeakReq<u64, ()>, u64)> = Vec::new();
        let mut children: Vec<Req<(), ()>> = Vec::new();
        for _ in 0..3000 {
            match next(10) {
                0 | 1 => {
                    id += 1;
                    let r: Req<u64, ()> = Req::new(&ctx, id);
                    let (b, my) = (bad.clone(), id);
                    r.set_callback(move |r| {
                        if r.try_state().is_some_and(|s| *s != my) {
                            b.set(b.get() + 1);
                        }
                    });
                    live.push(r);
                }
                2 if !live.is_empty() => {
                    let i = next(live.len() as u64) as usize;
                    drop(live.swap_remove(i));
                }
                3 if !live.is_empty() => {
                    let i = next(live.len() as u64) as usize;
                    if let Some(st) = live[i].try_state().map(|s| *s) {
                        weaks.push((live[i].downgrade(), st));
                    }
                }
                4 if !weaks.is_empty() => {
                    let i = next(weaks.len() as u64) as usize;
                    if let Some(r) = weaks[i].0.upgrade() {
                        if r.try_state().is_some_and(|s| *s != weaks[i].1) {
                            bad.set(bad.get() + 1000);
                        }
                    }
                }
                5 if !live.is_empty() => {
                    let i = next(live.len() as u64) as usize;
                    let r = live.swap_remove(i);
                    if r.try_state().is_none() {
                        continue;
                    }
                    match next(3) {
                        0 => live.push(r.post()),
                        1 => {
                            r.set_endtime(Deadline::Asap);
                            live.push(r);
                        }
                        _ => {
                            let my = *r.state();
                            let b = bad.clone();
                            let _ = queue.add(&r, move |r| {
                                if r.try_state().is_some_and(|s| *s != my) {
                                    b.set(b.get() + 10000);
                                }
                                r.done(());
                            });
                            live.push(r);
                        }
                    }
                }
                6 if !live.is_empty() => {
                    let i = next(live.len() as u64) as usize;
                    let Some(my) = live[i].try_state().map(|s| *s) else {
                        continue;
                    };
                    let c: Req<(), ()> = Req::new(&ctx, ());
                    let b = bad.clone();
                    c.set_parent_callback(&live[i], move |_, p| {
                        if p.try_state().is_some_and(|s| *s != my) {
                            b.set(b.get() + 100000);
                        }
                    });
                    children.push(c);
                }
                7 if !children.is_empty() => {
                    let i = next(children.len() as u64) as usize;
                    let c = children.swap_remove(i);
                    c.done(());
                    if next(2) == 0 {
                        children.push(c);
                    }
                }
                8 => {
                    let _ = ctx.try_loop_once();
                }
                _ if !live.is_empty() => {
                    let i = next(live.len() as u64) as usize;
                    if live[i].is_in_progress() {
                        live[i].done(());
                    } else {
                        let _ = live[i].recv();
                    }
                }
                _ => {}
            }
        }
        assert_eq!(bad.get(), 0, "seed {seed}");
    }
}
