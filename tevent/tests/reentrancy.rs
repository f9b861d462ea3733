//! What handlers may do to the loop that runs them: drop events (their own
//! and others that are ready), add events, change flags and deadlines,
//! drop the context, run nested loops. (Signal events: see `signals.rs`.)

mod util;

use std::any::Any;
use std::cell::RefCell;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use tevent::{Context, Deadline, Error, FdEvent, FdFlags, Immediate, Timer};
use util::{
    assert_idle, each_backend, loop_wait_bounded, polling, run_until_idle, slot, Counter, Log, Slot,
};

// ---------------------------------------------------------------------
// Dropping the event that is running

#[test]
fn fd_handler_drops_its_own_event() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (_w, r) = util::readable_pair(1);
        let own: Slot<FdEvent> = slot();
        let calls = Counter::new();
        let (guard, freed) = util::drop_flag();
        let (o, c) = (own.clone(), calls.clone());
        let fde = ctx
            .add_fd(&r, FdFlags::READ, move |ctx, fde, _| {
                let _ = &guard;
                c.inc();
                let me = o.borrow_mut().take();
                drop(me);
                // The view of the event reports it gone; the context works.
                assert_eq!(fde.flags(), FdFlags::EMPTY);
                assert!(!ctx.has_events());
            })
            .unwrap();
        *own.borrow_mut() = Some(fde);
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(calls.get(), 1, "backend {name}");
        assert!(
            freed.get(),
            "backend {name}: handler freed after it returned"
        );
        loop_wait_bounded(name, &ctx, 1);
    });
}

#[test]
fn fd_handler_drops_its_own_event_and_watches_the_fd_again() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (_w, r) = util::readable_pair(1);
        let r = Rc::new(r);
        let own: Slot<FdEvent> = slot();
        let log = Log::new();
        let (o, l, r2) = (own.clone(), log.clone(), r.clone());
        let fde = ctx
            .add_fd(&*r, FdFlags::READ, move |ctx, _, _| {
                l.push("old");
                drop(o.borrow_mut().take());
                let l2 = l.clone();
                let new = ctx
                    .add_fd(&*r2, FdFlags::READ, move |_, fde, _| {
                        l2.push("new");
                        fde.set_flags(FdFlags::EMPTY).unwrap();
                    })
                    .unwrap();
                *o.borrow_mut() = Some(new);
            })
            .unwrap();
        *own.borrow_mut() = Some(fde);
        assert_eq!(run_until_idle(name, &ctx, 10), 2, "backend {name}");
        assert_eq!(log.get(), ["old", "new"], "backend {name}");
    });
}

#[test]
fn timer_handler_drops_its_own_timer() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let own: Slot<Timer> = slot();
        let calls = Counter::new();
        let (guard, freed) = util::drop_flag();
        let (o, c) = (own.clone(), calls.clone());
        let t = ctx.add_timer(Deadline::Asap, move |_, t, _| {
            let _ = &guard;
            c.inc();
            drop(o.borrow_mut().take());
            assert!(!t.is_pending());
            assert!(!t.update(Deadline::Asap), "a dropped timer cannot re-arm");
        });
        *own.borrow_mut() = Some(t);
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(calls.get(), 1, "backend {name}");
        assert!(freed.get(), "backend {name}");
        assert!(!ctx.has_events(), "backend {name}");
    });
}

#[test]
fn timer_handler_rearms_then_drops_its_own_timer() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let own: Slot<Timer> = slot();
        let calls = Counter::new();
        let (o, c) = (own.clone(), calls.clone());
        let t = ctx.add_timer(Deadline::Asap, move |_, t, _| {
            c.inc();
            assert!(t.update(Deadline::Asap));
            drop(o.borrow_mut().take());
        });
        *own.borrow_mut() = Some(t);
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(calls.get(), 1, "backend {name}");
        assert!(!ctx.has_events(), "backend {name}");
    });
}

#[test]
fn immediate_handler_drops_its_own_immediate() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let own: Slot<Immediate> = slot();
        let calls = Counter::new();
        let (guard, freed) = util::drop_flag();
        let (o, c) = (own.clone(), calls.clone());
        let im = ctx.schedule_immediate(move |_, im| {
            let _ = &guard;
            c.inc();
            // Rescheduling first does not save it.
            assert!(im.reschedule());
            drop(o.borrow_mut().take());
            assert!(!im.is_scheduled());
            assert!(
                !im.reschedule(),
                "a dropped immediate cannot be rescheduled"
            );
        });
        *own.borrow_mut() = Some(im);
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(calls.get(), 1, "backend {name}");
        assert!(freed.get(), "backend {name}");
        assert!(!ctx.has_events(), "backend {name}");
    });
}

// ---------------------------------------------------------------------
// Dropping another event that is also ready: it must not fire

#[test]
fn fd_handler_drops_another_ready_fd_event() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (_w1, r1) = util::readable_pair(1);
        let (_w2, r2) = util::readable_pair(1);
        let events: [Slot<FdEvent>; 2] = [slot(), slot()];
        let log = Log::new();
        for (i, r) in [&r1, &r2].into_iter().enumerate() {
            let other = events[1 - i].clone();
            let l = log.clone();
            let fde = ctx
                .add_fd(r, FdFlags::READ, move |_, fde, _| {
                    l.push(format!("fd{i}"));
                    drop(other.borrow_mut().take());
                    fde.set_flags(FdFlags::EMPTY).unwrap();
                })
                .unwrap();
            *events[i].borrow_mut() = Some(fde);
        }
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.len(), 1, "backend {name}: {:?}", log.get());
        assert!(!ctx.has_events(), "backend {name}");
    });
}

#[test]
fn fd_handler_drops_another_event_on_the_same_fd() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (_w, r) = util::readable_pair(1);
        let events: [Slot<FdEvent>; 2] = [slot(), slot()];
        let log = Log::new();
        for i in 0..2 {
            let other = events[1 - i].clone();
            let l = log.clone();
            let fde = ctx
                .add_fd(&r, FdFlags::READ, move |_, fde, _| {
                    l.push(format!("fd{i}"));
                    drop(other.borrow_mut().take());
                    fde.set_flags(FdFlags::EMPTY).unwrap();
                })
                .unwrap();
            *events[i].borrow_mut() = Some(fde);
        }
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.get(), ["fd0"], "backend {name}");
    });
}

#[test]
fn timer_handler_drops_another_due_timer() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let log = Log::new();
        let second: Slot<Timer> = slot();
        let (l, s) = (log.clone(), second.clone());
        let _first = ctx.add_timer(Deadline::Asap, move |_, _, _| {
            l.push("first");
            drop(s.borrow_mut().take());
        });
        let l = log.clone();
        *second.borrow_mut() = Some(ctx.add_timer(Deadline::Asap, move |_, _, _| l.push("second")));
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.get(), ["first"], "backend {name}");
    });
}

#[test]
fn immediate_handler_drops_another_scheduled_immediate() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let log = Log::new();
        let second: Slot<Immediate> = slot();
        let (l, s) = (log.clone(), second.clone());
        let _first = ctx.schedule_immediate(move |_, _| {
            l.push("first");
            drop(s.borrow_mut().take());
        });
        let l = log.clone();
        *second.borrow_mut() = Some(ctx.schedule_immediate(move |_, _| l.push("second")));
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.get(), ["first"], "backend {name}");
    });
}

#[test]
fn immediate_handler_drops_a_due_timer_and_a_ready_fd_event() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let log = Log::new();
        let (_w, r) = util::readable_pair(1);
        let timer: Slot<Timer> = slot();
        let fde: Slot<FdEvent> = slot();
        let (l, t, f) = (log.clone(), timer.clone(), fde.clone());
        let _im = ctx.schedule_immediate(move |_, _| {
            l.push("immediate");
            drop(t.borrow_mut().take());
            drop(f.borrow_mut().take());
        });
        let l = log.clone();
        *timer.borrow_mut() = Some(ctx.add_timer(Deadline::Asap, move |_, _, _| l.push("timer")));
        let l = log.clone();
        *fde.borrow_mut() = Some(
            ctx.add_fd(&r, FdFlags::READ, move |_, _, _| l.push("fd"))
                .unwrap(),
        );
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.get(), ["immediate"], "backend {name}");
        assert!(!ctx.has_events(), "backend {name}");
    });
}

#[test]
fn immediate_handler_resets_another_scheduled_immediate() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let log = Log::new();
        let second: Rc<Slot<Immediate>> = Rc::new(slot());
        let (l, s) = (log.clone(), second.clone());
        let _first = ctx.schedule_immediate(move |_, _| {
            l.push("first");
            s.borrow().as_ref().unwrap().reset();
        });
        let l = log.clone();
        *second.borrow_mut() = Some(ctx.schedule_immediate(move |_, _| l.push("second")));
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["first"], "backend {name}");
        // Reset, not gone.
        assert!(
            second.borrow().as_ref().unwrap().reschedule(),
            "backend {name}"
        );
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.take(), ["second"], "backend {name}");
    });
}

#[test]
fn loop_of_another_context_may_run_inside_a_handler() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let other = util::context(name);
        polling(&other);
        let log = Log::new();
        let l = log.clone();
        let _inner = other.schedule_immediate(move |_, _| l.push("other context"));
        let l = log.clone();
        let _outer = ctx.schedule_immediate(move |_, _| {
            l.push("start");
            other.loop_once().unwrap();
            assert_eq!(other.nesting_level(), 0);
            l.push("end");
        });
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(
            log.get(),
            ["start", "other context", "end"],
            "backend {name}"
        );
    });
}

#[test]
fn debug_output_works_inside_handlers() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let out = Log::new();
        let (_w, r) = util::readable_pair(1);
        let o = out.clone();
        let _fde = ctx
            .add_fd(&r, FdFlags::READ, move |ctx, fde, _| {
                o.push(format!("{ctx:?} {fde:?}"));
                fde.set_flags(FdFlags::EMPTY).unwrap();
            })
            .unwrap();
        let o = out.clone();
        let _t = ctx.add_timer(Deadline::Asap, move |ctx, t, _| {
            o.push(format!("{ctx:?} {t:?}"))
        });
        let o = out.clone();
        let _im = ctx.schedule_immediate(move |ctx, im| o.push(format!("{ctx:?} {im:?}")));
        assert_eq!(run_until_idle(name, &ctx, 10), 3, "backend {name}");
        let out = out.get();
        assert_eq!(out.len(), 3, "backend {name}");
        for line in &out {
            assert!(line.contains("nesting: 1"), "backend {name}: {line}");
            assert!(line.contains(file!()), "backend {name}: {line}");
        }
    });
}

// ---------------------------------------------------------------------
// Adding events from inside handlers

/// From inside a handler: add an immediate, an `Asap` timer, a timer with a
/// deadline, and an fd event on a readable fd; each logs its kind.
fn add_every_kind(ctx: &Context, log: &Log, keep: &Rc<RefCell<Vec<Box<dyn Any>>>>, r: &UnixStream) {
    let mut keep = keep.borrow_mut();
    let l = log.clone();
    keep.push(Box::new(
        ctx.schedule_immediate(move |_, _| l.push("immediate")),
    ));
    let l = log.clone();
    keep.push(Box::new(
        ctx.add_timer(Deadline::Asap, move |_, _, _| l.push("asap")),
    ));
    let l = log.clone();
    keep.push(Box::new(ctx.add_timer(
        Deadline::after(Duration::from_millis(1)),
        move |_, _, _| l.push("timer"),
    )));
    let l = log.clone();
    keep.push(Box::new(
        ctx.add_fd(r, FdFlags::READ, move |_, fde, _| {
            l.push("fd");
            fde.set_flags(FdFlags::EMPTY).unwrap();
        })
        .unwrap(),
    ));
}

#[test]
fn handlers_of_every_kind_add_events_of_every_kind() {
    for from in util::KINDS {
        each_backend(|name, ctx| {
            let log = Log::new();
            let keep: Rc<RefCell<Vec<Box<dyn Any>>>> = Rc::default();
            let (_w, r) = util::readable_pair(1);
            let r = Rc::new(r);
            let (l, k, r2) = (log.clone(), keep.clone(), r.clone());
            let add = move |ctx: &Context| {
                l.push(format!("from {from}"));
                add_every_kind(ctx, &l, &k, &r2);
            };
            let _parent = util::once_from(&ctx, from, add);
            loop_wait_bounded(name, &ctx, 100);
            let mut got = log.get();
            assert_eq!(
                got[..3],
                [format!("from {from}"), "immediate".into(), "asap".into()],
                "backend {name}, added from {from}: {got:?}"
            );
            // The fd and the 1 ms timer: whichever is ready first.
            got[3..].sort();
            assert_eq!(got[3..], ["fd", "timer"], "backend {name}, from {from}");
        });
    }
}

// ---------------------------------------------------------------------
// Changing the running event

#[test]
fn fd_handler_changes_its_own_flags() {
    each_backend(|name, ctx| {
        polling(&ctx);
        // Readable and writable.
        let (_w, r) = util::readable_pair(1);
        let log = Log::new();
        let l = log.clone();
        let fde = ctx
            .add_fd(&r, FdFlags::READ, move |_, fde, flags| {
                l.push(format!("{flags:?}"));
                let next = match flags {
                    f if f == FdFlags::READ => FdFlags::WRITE,
                    f if f == FdFlags::WRITE => FdFlags::READ | FdFlags::WRITE,
                    _ => FdFlags::EMPTY,
                };
                fde.set_flags(next).unwrap();
                assert_eq!(fde.flags(), next);
            })
            .unwrap();
        assert_eq!(run_until_idle(name, &ctx, 10), 3, "backend {name}");
        assert_eq!(log.get(), ["READ", "WRITE", "READ|WRITE"], "backend {name}");
        assert_eq!(fde.flags(), FdFlags::EMPTY, "backend {name}");
    });
}

#[test]
fn immediate_handler_reschedules_itself_and_can_reset_again() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let runs = Counter::new();
        let r = runs.clone();
        let im = ctx.schedule_immediate(move |_, im| {
            r.inc();
            im.reschedule();
            if r.get() >= 3 {
                im.reset(); // changed its mind
            }
        });
        assert_eq!(run_until_idle(name, &ctx, 10), 3, "backend {name}");
        assert_eq!(runs.get(), 3, "backend {name}");
        assert!(!im.is_scheduled(), "backend {name}");
        // Still usable.
        assert!(im.reschedule(), "backend {name}");
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
    });
}

#[test]
fn timer_handler_updates_its_timer_and_it_fires_again() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let runs = Counter::new();
        let r = runs.clone();
        let t = ctx.add_timer(Deadline::Asap, move |_, t, now| {
            r.inc();
            assert!(!t.is_pending(), "unlinked while its handler runs");
            if r.get() < 3 {
                assert!(t.update(now));
                assert!(t.is_pending());
            }
        });
        assert_eq!(run_until_idle(name, &ctx, 10), 3, "backend {name}");
        assert_eq!(runs.get(), 3, "backend {name}");
        assert!(!t.is_pending(), "backend {name}");
        assert!(!t.update(Deadline::Asap), "backend {name}");
    });
}

// ---------------------------------------------------------------------
// Dropping the context from inside a handler

#[test]
fn handler_drops_the_last_user_handle_of_the_context() {
    for from in util::KINDS {
        for name in util::backends() {
            let holder: Slot<Context> = slot();
            *holder.borrow_mut() = Some(util::context(name));
            let weak = holder.borrow().as_ref().unwrap().downgrade();
            let (_w, r) = util::readable_pair(1);
            let log = Log::new();
            let (h, l) = (holder.clone(), log.clone());
            let handler = move |ctx: &Context| {
                l.push("start");
                drop(h.borrow_mut().take());
                // The context lives on until the loop returns.
                let l2 = l.clone();
                ctx.add_timer(Deadline::Asap, move |_, _, _| l2.push("never"))
                    .detach();
                assert!(ctx.has_events());
                l.push("end");
            };
            // Events that outlive the context.
            let (other_timer, other_fd, other_im, parent) = {
                let guard = holder.borrow();
                let ctx = guard.as_ref().unwrap();
                let parent = util::once_from(ctx, from, handler);
                (
                    ctx.add_timer(Deadline::after(Duration::from_secs(3600)), |_, _, _| {}),
                    ctx.add_fd(&r, FdFlags::WRITE, |_, _, _| {}).unwrap(),
                    ctx.create_immediate(),
                    parent,
                )
            };
            if from == "fd" {
                // Make sure the fd handler is the one served first.
                other_fd.set_flags(FdFlags::EMPTY).unwrap();
            }
            let running = holder.borrow().clone().unwrap();
            running
                .loop_once()
                .unwrap_or_else(|e| panic!("backend {name}, from {from}: {e}"));
            assert_eq!(log.get(), ["start", "end"], "backend {name}, from {from}");
            assert!(holder.borrow().is_none(), "backend {name}");
            assert!(weak.upgrade().is_some(), "backend {name}: still ours");
            drop(running);

            assert!(
                weak.upgrade().is_none(),
                "backend {name}, from {from}: context gone"
            );
            assert!(other_timer.context().is_none(), "backend {name}");
            assert!(other_fd.context().is_none(), "backend {name}");
            assert!(other_im.context().is_none(), "backend {name}");
            assert!(!other_timer.is_pending(), "backend {name}");
            assert!(!other_timer.update(Deadline::Asap), "backend {name}");
            assert_eq!(other_fd.fd(), -1, "backend {name}");
            assert_eq!(other_fd.flags(), FdFlags::EMPTY, "backend {name}");
            assert!(matches!(
                other_fd.set_flags(FdFlags::READ),
                Err(Error::ContextGone)
            ));
            assert!(!other_im.is_scheduled(), "backend {name}");
            assert!(!other_im.reschedule(), "backend {name}");
            other_im.schedule(|_, _| {}); // a no-op, no panic
            assert!(!log.get().contains(&"never".to_string()), "backend {name}");
            drop((other_timer, other_fd, other_im, parent));
        }
    }
}

#[test]
fn handler_breaks_the_cycle_that_kept_its_context_alive() {
    each_backend(|name, ctx| {
        let weak = ctx.downgrade();
        let (guard, freed) = util::drop_flag();
        let mut captured = Some(ctx.clone());
        let im = ctx.schedule_immediate(move |ctx, _| {
            let _ = &guard;
            assert!(captured.as_ref().unwrap().ptr_eq(ctx));
            captured = None;
        });
        drop(ctx);
        // Only the handler's clone keeps it alive now: drive it through the
        // event's handle.
        assert!(weak.upgrade().is_some(), "backend {name}");
        im.context().unwrap().loop_once().unwrap();
        assert!(weak.upgrade().is_none(), "backend {name}: context freed");
        assert!(freed.get(), "backend {name}: handler freed with it");
        assert!(im.context().is_none(), "backend {name}");
    });
}

// ---------------------------------------------------------------------
// Nested loops

#[test]
fn nested_loop_once_is_refused_unless_allowed() {
    for from in util::KINDS {
        each_backend(|name, ctx| {
            polling(&ctx);
            let seen = Rc::new(RefCell::new(Vec::new()));
            // Something the nested call could have run.
            let other = Counter::new();
            let keep: Slot<Immediate> = slot();
            let (s, o, k) = (seen.clone(), other.clone(), keep.clone());
            let handler = move |ctx: &Context| {
                let o = o.clone();
                *k.borrow_mut() = Some(ctx.schedule_immediate(move |_, _| o.inc()));
                assert_eq!(ctx.nesting_level(), 1);
                #[rustfmt::skip]
                let (result, line) = (ctx.loop_once(), line!());
                assert_eq!(ctx.nesting_level(), 1);
                s.borrow_mut().push((result, line));
            };
            let _parent = util::once_from(&ctx, from, handler);
            ctx.loop_once().unwrap();
            assert_eq!(ctx.nesting_level(), 0, "backend {name}");
            let seen = seen.borrow();
            assert_eq!(seen.len(), 1, "backend {name}, from {from}");
            match &seen[0] {
                (Err(e @ Error::Nested { location }), line) => {
                    assert_eq!(location.file(), file!(), "backend {name}");
                    assert_eq!(location.line(), *line, "backend {name}, from {from}");
                    assert_eq!(e.errno(), Some(libc::ELOOP));
                }
                other => panic!("backend {name}, from {from}: expected Nested, got {other:?}"),
            }
            assert_eq!(
                other.get(),
                0,
                "backend {name}: the refused call ran nothing"
            );
            assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
            assert_eq!(other.get(), 1, "backend {name}");
        });
    }
}

#[test]
fn allowed_nested_loop_once_runs_another_pending_event() {
    for from in util::KINDS {
        each_backend(|name, ctx| {
            polling(&ctx);
            ctx.allow_nesting();
            let log = Log::new();
            let inner = move |log: &Log| {
                let l = log.clone();
                move |ctx: &Context| l.push(format!("inner at level {}", ctx.nesting_level()))
            };
            // The event the nested loop finds: queued behind the parent for
            // an immediate or a timer; for an fd event (which runs after
            // everything else) scheduled by the handler itself.
            let keep: Slot<Immediate> = slot();
            let (l, k) = (log.clone(), keep.clone());
            let handler = move |ctx: &Context| {
                l.push("outer start");
                if from == "fd" {
                    let f = inner(&l);
                    *k.borrow_mut() = Some(ctx.schedule_immediate(move |ctx, _| f(ctx)));
                }
                assert_eq!(ctx.nesting_level(), 1);
                ctx.loop_once().unwrap();
                assert_eq!(ctx.nesting_level(), 1);
                l.push("outer end");
            };
            let _parent = util::once_from(&ctx, from, handler);
            let f = inner(&log);
            let _queued: Box<dyn Any> = match from {
                "immediate" => Box::new(ctx.schedule_immediate(move |ctx, _| f(ctx))),
                "timer" => Box::new(ctx.add_timer(Deadline::Asap, move |ctx, _, _| f(ctx))),
                _ => Box::new(()),
            };
            ctx.loop_once().unwrap();
            assert_eq!(
                log.get(),
                ["outer start", "inner at level 2", "outer end"],
                "backend {name}, from {from}"
            );
            assert_eq!(ctx.nesting_level(), 0, "backend {name}");
            assert_idle(name, &ctx);
        });
    }
}

#[test]
fn nested_loop_does_not_rerun_the_running_event() {
    each_backend(|name, ctx| {
        polling(&ctx);
        ctx.allow_nesting();
        let log = Log::new();
        let l = log.clone();
        let _im = ctx.schedule_immediate(move |ctx, im| {
            l.push("start");
            if l.len() == 1 {
                // Re-armed, but it cannot run inside itself.
                im.reschedule();
                let _ = ctx.loop_once();
            }
            l.push("end");
        });
        let l = log.clone();
        let mut first = true;
        let _t = ctx.add_timer(Deadline::Asap, move |ctx, t, _| {
            l.push("timer start");
            if std::mem::take(&mut first) {
                t.update(Deadline::Asap);
                let _ = ctx.loop_once();
            }
            l.push("timer end");
        });
        assert!(run_until_idle(name, &ctx, 10) >= 3, "backend {name}");
        assert_eq!(
            log.get(),
            [
                "start",
                "end",
                "start",
                "end",
                "timer start",
                "timer end",
                "timer start",
                "timer end"
            ],
            "backend {name}"
        );
        assert_eq!(ctx.nesting_level(), 0, "backend {name}");
    });
}
