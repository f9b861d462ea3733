//! fd events: flags, masking, sharing an fd, hang-ups, closing.

mod util;

use std::cell::RefCell;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use tevent::{Error, FdFlags};
use util::{
    assert_idle, each_backend, fd_is_open, high_fd, loop_wait_bounded, polling, run_until_idle,
    Counter, Log,
};

#[test]
fn read_event_gets_read() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (_w, r) = util::readable_pair(5);
        let got = Rc::new(RefCell::new(Vec::new()));
        let g = got.clone();
        let mut reader = r.try_clone().unwrap();
        let _fde = ctx
            .add_fd(&r, FdFlags::READ, move |_, _, flags| {
                let mut buf = [0u8; 16];
                let n = reader.read(&mut buf).unwrap();
                g.borrow_mut().push((flags, n));
            })
            .unwrap();
        ctx.loop_once().unwrap();
        assert_eq!(*got.borrow(), [(FdFlags::READ, 5)], "backend {name}");
        // Everything was read: the fd is no longer readable.
        assert_idle(name, &ctx);
        assert_eq!(got.borrow().len(), 1, "backend {name}");
    });
}

#[test]
fn write_event_gets_write_when_there_is_room() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (mut w, mut r) = util::pair();
        let written = util::fill(&mut w);
        let calls = Log::new();
        let c = calls.clone();
        let _fde = ctx
            .add_fd(&w, FdFlags::WRITE, move |_, fde, flags| {
                c.push(format!("{flags:?}"));
                fde.set_flags(FdFlags::EMPTY).unwrap();
            })
            .unwrap();
        // The send buffer is full: not writable.
        assert_idle(name, &ctx);
        assert!(calls.is_empty(), "backend {name}");
        // Drain the peer: room again.
        let mut buf = vec![0u8; written];
        let mut drained = 0;
        while drained < written {
            match r.read(&mut buf[drained..]) {
                Ok(n) => drained += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(drained, written, "backend {name}");
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(calls.get(), ["WRITE"], "backend {name}");
    });
}

#[test]
fn handler_flags_are_masked_with_the_event_flags() {
    each_backend(|name, ctx| {
        polling(&ctx);
        // Readable and writable at once.
        let (_w, r) = util::readable_pair(1);
        let log = Log::new();
        let l = log.clone();
        let read_only = ctx
            .add_fd(&r, FdFlags::READ, move |_, fde, flags| {
                l.push(format!("R:{flags:?}"));
                fde.set_flags(FdFlags::EMPTY).unwrap();
            })
            .unwrap();
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        drop(read_only);
        let l = log.clone();
        let _write_only = ctx
            .add_fd(&r, FdFlags::WRITE, move |_, fde, flags| {
                l.push(format!("W:{flags:?}"));
                fde.set_flags(FdFlags::EMPTY).unwrap();
            })
            .unwrap();
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.get(), ["R:READ", "W:WRITE"], "backend {name}");
    });
}

#[test]
fn read_write_event_on_a_readable_and_writable_fd_gets_one_call_with_both() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (_w, r) = util::readable_pair(1);
        let log = Log::new();
        let l = log.clone();
        let _fde = ctx
            .add_fd(&r, FdFlags::READ | FdFlags::WRITE, move |_, fde, flags| {
                l.push(format!("{flags:?}"));
                fde.set_flags(FdFlags::EMPTY).unwrap();
            })
            .unwrap();
        ctx.loop_once().unwrap();
        assert_eq!(log.get(), ["READ|WRITE"], "backend {name}");
        assert_idle(name, &ctx);
    });
}

#[test]
fn flags_can_be_changed_at_any_time() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (_w, r) = util::readable_pair(1);
        let log = Log::new();
        let l = log.clone();
        let fde = ctx
            .add_fd(&r, FdFlags::EMPTY, move |_, _, flags| {
                l.push(format!("{flags:?}"))
            })
            .unwrap();
        assert_eq!(fde.flags(), FdFlags::EMPTY, "backend {name}");
        assert_eq!(fde.fd(), r.as_raw_fd(), "backend {name}");
        assert_idle(name, &ctx);
        assert!(
            log.is_empty(),
            "backend {name}: an EMPTY event is not called"
        );

        fde.set_flags(FdFlags::READ).unwrap();
        ctx.loop_once().unwrap();
        assert_eq!(log.take(), ["READ"], "backend {name}");

        fde.set_flags(FdFlags::WRITE).unwrap();
        ctx.loop_once().unwrap();
        assert_eq!(log.take(), ["WRITE"], "backend {name}");

        fde.add_flags(FdFlags::READ).unwrap();
        assert_eq!(
            fde.flags(),
            FdFlags::READ | FdFlags::WRITE,
            "backend {name}"
        );
        ctx.loop_once().unwrap();
        assert_eq!(log.take(), ["READ|WRITE"], "backend {name}");

        fde.remove_flags(FdFlags::WRITE).unwrap();
        assert_eq!(fde.flags(), FdFlags::READ, "backend {name}");
        ctx.loop_once().unwrap();
        assert_eq!(log.take(), ["READ"], "backend {name}");

        // Setting the same flags again is harmless.
        fde.set_flags(FdFlags::READ).unwrap();
        ctx.loop_once().unwrap();
        assert_eq!(log.take(), ["READ"], "backend {name}");

        fde.set_flags(FdFlags::EMPTY).unwrap();
        assert_idle(name, &ctx);
        assert!(log.is_empty(), "backend {name}");
        assert!(!ctx.has_events(), "backend {name}");
        ctx.loop_wait().unwrap();
    });
}

#[test]
fn events_sharing_an_fd_are_served_round_robin() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (_w, r) = util::readable_pair(1);
        let log = Log::new();
        let mut events = Vec::new();
        for i in 1..=3 {
            let l = log.clone();
            events.push(
                ctx.add_fd(&r, FdFlags::READ, move |_, _, flags| {
                    assert_eq!(flags, FdFlags::READ);
                    l.push(i.to_string());
                })
                .unwrap(),
            );
        }
        for i in 0..6 {
            ctx.loop_once().unwrap();
            assert_eq!(
                log.len(),
                i + 1,
                "backend {name}: one handler per loop_once"
            );
        }
        assert_eq!(log.get(), ["1", "2", "3", "1", "2", "3"], "backend {name}");
        // One of them stops: the others go on taking turns.
        events[1].set_flags(FdFlags::EMPTY).unwrap();
        log.take();
        for _ in 0..4 {
            ctx.loop_once().unwrap();
        }
        let got = log.get();
        assert!(
            got == ["1", "3", "1", "3"] || got == ["3", "1", "3", "1"],
            "backend {name}: {got:?}"
        );
    });
}

#[test]
fn events_sharing_an_fd_get_only_their_own_flags() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (_w, r) = util::readable_pair(1);
        let log = Log::new();
        let l = log.clone();
        let reader = ctx
            .add_fd(&r, FdFlags::READ, move |_, _, flags| {
                l.push(format!("r:{flags:?}"))
            })
            .unwrap();
        let l = log.clone();
        let writer = ctx
            .add_fd(&r, FdFlags::WRITE, move |_, _, flags| {
                l.push(format!("w:{flags:?}"))
            })
            .unwrap();
        for _ in 0..4 {
            ctx.loop_once().unwrap();
        }
        let mut got = log.take();
        got.sort();
        assert_eq!(
            got,
            ["r:READ", "r:READ", "w:WRITE", "w:WRITE"],
            "backend {name}"
        );
        // Dropping one keeps the other registered.
        drop(writer);
        for _ in 0..2 {
            ctx.loop_once().unwrap();
        }
        assert_eq!(log.take(), ["r:READ", "r:READ"], "backend {name}");
        drop(reader);
        assert_idle(name, &ctx);
    });
}

#[test]
fn hangup_is_read_with_end_of_file_for_a_reader() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (w, r) = util::pair();
        drop(w);
        let log = Log::new();
        let l = log.clone();
        let mut reader = r.try_clone().unwrap();
        let _fde = ctx
            .add_fd(&r, FdFlags::READ, move |_, fde, flags| {
                let mut buf = [0u8; 8];
                let n = reader.read(&mut buf).unwrap();
                l.push(format!("{flags:?} {n}"));
                fde.set_flags(FdFlags::EMPTY).unwrap();
            })
            .unwrap();
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.get(), ["READ 0"], "backend {name}");
    });
}

#[test]
fn hangup_is_error_for_an_error_waiter() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (w, r) = util::pair();
        let log = Log::new();
        let l = log.clone();
        let _fde = ctx
            .add_fd(&r, FdFlags::ERROR, move |_, fde, flags| {
                l.push(format!("{flags:?}"));
                fde.set_flags(FdFlags::EMPTY).unwrap();
            })
            .unwrap();
        // Nothing happened yet.
        assert_idle(name, &ctx);
        drop(w);
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(log.get(), ["ERROR"], "backend {name}");
    });
}

#[test]
fn hangup_with_pending_data_is_read_then_error() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (w, r) = util::readable_pair(3);
        drop(w);
        let log = Log::new();
        let l = log.clone();
        let mut reader = r.try_clone().unwrap();
        let _fde = ctx
            .add_fd(&r, FdFlags::READ | FdFlags::ERROR, move |_, fde, flags| {
                let mut buf = [0u8; 8];
                let n = reader.read(&mut buf).unwrap();
                l.push(format!("{flags:?} {n}"));
                if n == 0 {
                    fde.set_flags(FdFlags::EMPTY).unwrap();
                }
            })
            .unwrap();
        assert_eq!(run_until_idle(name, &ctx, 10), 2, "backend {name}");
        assert_eq!(
            log.get(),
            ["READ|ERROR 3", "READ|ERROR 0"],
            "backend {name}"
        );
    });
}

#[test]
fn hangup_silences_a_write_only_waiter() {
    each_backend(|name, ctx| {
        let (w, r) = util::pair();
        drop(r);
        let calls = Counter::new();
        let c = calls.clone();
        let fde = ctx
            .add_fd(&w, FdFlags::WRITE, move |_, _, _| c.inc())
            .unwrap();
        // tevent's select() rule: not called, but WRITE is cleared so
        // that it does not spin, and loop_wait ends.
        loop_wait_bounded(name, &ctx, 10);
        assert_eq!(calls.get(), 0, "backend {name}");
        assert_eq!(fde.flags(), FdFlags::EMPTY, "backend {name}");
        assert!(!ctx.has_events(), "backend {name}");
    });
}

#[test]
fn after_a_hangup_silenced_a_writer_a_reader_still_gets_read() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (w, r) = util::pair();
        drop(r);
        let calls = Counter::new();
        let c = calls.clone();
        let writer = ctx
            .add_fd(&w, FdFlags::WRITE, move |_, _, _| c.inc())
            .unwrap();
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(calls.get(), 0, "backend {name}");
        assert_eq!(writer.flags(), FdFlags::EMPTY, "backend {name}");
        // Asking for READ afterwards reports the hang-up as READ.
        let c = calls.clone();
        let reader = ctx
            .add_fd(&w, FdFlags::READ, move |_, fde, flags| {
                assert_eq!(flags, FdFlags::READ);
                c.inc();
                fde.set_flags(FdFlags::EMPTY).unwrap();
            })
            .unwrap();
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(calls.get(), 1, "backend {name}");
        drop((writer, reader));
    });
}

#[test]
fn dropping_the_handle_deregisters() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (_w, r) = util::readable_pair(1);
        let calls = Counter::new();
        let c = calls.clone();
        let (guard, handler_dropped) = util::drop_flag();
        let fde = ctx
            .add_fd(&r, FdFlags::READ, move |_, _, _| {
                let _ = &guard;
                c.inc();
            })
            .unwrap();
        ctx.loop_once().unwrap();
        assert_eq!(calls.get(), 1, "backend {name}");
        drop(fde);
        assert!(
            handler_dropped.get(),
            "backend {name}: the handler is freed"
        );
        assert!(!ctx.has_events(), "backend {name}");
        assert_idle(name, &ctx);
        assert_eq!(calls.get(), 1, "backend {name}");
        // The fd can be watched again.
        let c = calls.clone();
        let _again = ctx
            .add_fd(&r, FdFlags::READ, move |_, _, _| c.inc())
            .unwrap();
        ctx.loop_once().unwrap();
        assert_eq!(calls.get(), 2, "backend {name}");
    });
}

#[test]
fn auto_close_closes_the_fd_after_drop() {
    each_backend(|name, ctx| {
        let (mut w, r) = util::pair();
        let fd = high_fd(r).into_raw_fd();
        let fde = ctx.add_fd_raw(fd, FdFlags::READ, |_, _, _| {}).unwrap();
        fde.set_auto_close(true);
        assert!(fd_is_open(fd), "backend {name}");
        drop(fde);
        assert!(!fd_is_open(fd), "backend {name}: fd {fd} still open");
        // And the peer sees the close.
        let mut buf = [0u8; 1];
        assert_eq!(w.read(&mut buf).unwrap(), 0, "backend {name}");
    });
}

#[test]
fn without_auto_close_the_fd_stays_open() {
    each_backend(|name, ctx| {
        let (_w, r) = util::pair();
        let fd = high_fd(r);
        let fde = ctx.add_fd(&fd, FdFlags::READ, |_, _, _| {}).unwrap();
        drop(fde);
        assert!(fd_is_open(fd.as_raw_fd()), "backend {name}");
    });
}

#[test]
fn close_fn_runs_with_the_fd_after_drop() {
    each_backend(|name, ctx| {
        let (_w, r) = util::pair();
        let fd: OwnedFd = high_fd(r);
        let raw = fd.as_raw_fd();
        let closed = Rc::new(RefCell::new(Vec::<RawFd>::new()));
        let c = closed.clone();
        let fde = ctx.add_fd(&fd, FdFlags::READ, |_, _, _| {}).unwrap();
        let ctx2 = ctx.clone();
        polling(&ctx);
        fde.set_auto_close(true);
        fde.set_close_fn(move |fd| {
            // Called once the event is unregistered: the context no longer
            // counts it.
            assert!(!ctx2.has_events());
            c.borrow_mut().push(fd);
        });
        assert_idle(name, &ctx); // nothing to read; the event stays
        assert!(
            closed.borrow().is_empty(),
            "backend {name}: not before the drop"
        );
        drop(fde);
        assert_eq!(*closed.borrow(), [raw], "backend {name}");
        // The close function replaces auto-close: the fd is still ours.
        assert!(fd_is_open(raw), "backend {name}");
        drop(fd);
        assert!(!fd_is_open(raw), "backend {name}");
    });
}

#[test]
fn close_fn_and_auto_close_run_when_the_context_is_dropped_first() {
    each_backend(|name, ctx| {
        let (_w, r) = util::pair();
        let owned = high_fd(r);
        let raw = owned.as_raw_fd();
        let auto = ctx
            .add_fd_owned(owned, FdFlags::READ, |_, _, _| {})
            .unwrap();
        let (_w2, r2) = util::pair();
        let closed = Rc::new(RefCell::new(Vec::<RawFd>::new()));
        let c = closed.clone();
        let with_fn = ctx.add_fd(&r2, FdFlags::READ, |_, _, _| {}).unwrap();
        with_fn.set_close_fn(move |fd| c.borrow_mut().push(fd));
        drop(ctx);
        assert!(!fd_is_open(raw), "backend {name}");
        assert_eq!(*closed.borrow(), [r2.as_raw_fd()], "backend {name}");
        // The handles are inert, and dropping them closes nothing twice.
        assert_eq!(auto.fd(), -1, "backend {name}");
        assert!(matches!(
            auto.set_flags(FdFlags::WRITE),
            Err(Error::ContextGone)
        ));
        drop((auto, with_fn));
        assert_eq!(closed.borrow().len(), 1, "backend {name}");
        assert!(fd_is_open(r2.as_raw_fd()), "backend {name}");
    });
}

#[test]
fn add_fd_owned_closes_on_drop() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (mut w, r) = util::readable_pair(1);
        let owned = high_fd(r);
        let raw = owned.as_raw_fd();
        let calls = Counter::new();
        let c = calls.clone();
        let fde = ctx
            .add_fd_owned(owned, FdFlags::READ, move |_, _, _| c.inc())
            .unwrap();
        assert_eq!(fde.fd(), raw, "backend {name}");
        ctx.loop_once().unwrap();
        assert_eq!(calls.get(), 1, "backend {name}");
        drop(fde);
        assert!(!fd_is_open(raw), "backend {name}: fd {raw} still open");
        // The peer sees the close (as a reset: a byte was left unread).
        let mut buf = [0u8; 1];
        match w.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("backend {name}: peer still connected: {other:?}"),
        }
    });
}

#[test]
fn add_fd_raw_rejects_a_negative_fd() {
    each_backend(|name, ctx| {
        match ctx.add_fd_raw(-1, FdFlags::READ, |_, _, _| {}) {
            Err(Error::BadFd(-1)) => {}
            other => panic!("backend {name}: expected BadFd(-1), got {other:?}"),
        }
        let err = ctx
            .add_fd_raw(-1, FdFlags::EMPTY, |_, _, _| {})
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::EBADF), "backend {name}");
        assert!(!ctx.has_events(), "backend {name}");
    });
}

#[test]
fn epoll_refuses_a_regular_file() {
    let ctx = util::context("epoll");
    let file = File::open("Cargo.toml").unwrap();
    match ctx.add_fd(&file, FdFlags::READ, |_, _, _| {}) {
        Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
        other => panic!("expected Io(EPERM), got {other:?}"),
    }
    assert!(!ctx.has_events());
    // add_fd_owned closes the fd it was given when it fails.
    let owned = high_fd(File::open("Cargo.toml").unwrap());
    let raw = owned.as_raw_fd();
    let err = ctx
        .add_fd_owned(owned, FdFlags::READ, |_, _, _| {})
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EPERM));
    assert!(!fd_is_open(raw), "fd {raw} leaked");
    // The context still works.
    polling(&ctx);
    let (_w, r) = util::readable_pair(1);
    let calls = Counter::new();
    let c = calls.clone();
    let _fde = ctx
        .add_fd(&r, FdFlags::READ, move |_, _, _| c.inc())
        .unwrap();
    ctx.loop_once().unwrap();
    assert_eq!(calls.get(), 1);
}

#[test]
fn debug_shows_where_the_event_was_created() {
    each_backend(|name, ctx| {
        let (_w, r) = util::pair();
        #[rustfmt::skip]
        let (fde, line) = (ctx.add_fd(&r, FdFlags::READ, |_, _, _| {}).unwrap(), line!());
        let debug = format!("{fde:?}");
        let here = format!("{}:{}", file!(), line);
        assert!(
            debug.contains(&here),
            "backend {name}: {debug} lacks {here}"
        );
        assert!(debug.contains("READ"), "backend {name}: {debug}");
        drop(ctx);
        assert!(format!("{fde:?}").contains("gone"), "backend {name}");
    });
}

#[test]
fn tag_is_kept() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (_w, r) = util::readable_pair(1);
        let seen = Counter::new();
        let s = seen.clone();
        let fde = ctx
            .add_fd(&r, FdFlags::READ, move |_, fde, _| {
                assert_eq!(fde.tag(), 42);
                s.inc();
                fde.set_flags(FdFlags::EMPTY).unwrap();
            })
            .unwrap();
        assert_eq!(fde.tag(), 0, "backend {name}");
        fde.set_tag(42);
        ctx.loop_once().unwrap();
        assert_eq!(seen.get(), 1, "backend {name}");
        assert_eq!(fde.tag(), 42, "backend {name}");
    });
}

#[test]
fn detached_fd_event_stays_until_the_context_is_dropped() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (_w, r) = util::readable_pair(1);
        let owned = high_fd(r);
        let raw = owned.as_raw_fd();
        let calls = Counter::new();
        let c = calls.clone();
        let (guard, freed) = util::drop_flag();
        ctx.add_fd_owned(owned, FdFlags::READ, move |_, fde, _| {
            let _ = &guard;
            c.inc();
            if c.get() == 2 {
                fde.set_flags(FdFlags::EMPTY).unwrap();
            }
        })
        .unwrap()
        .detach();
        loop_wait_bounded(name, &ctx, 10);
        assert_eq!(calls.get(), 2, "backend {name}");
        assert!(!freed.get(), "backend {name}");
        assert!(fd_is_open(raw), "backend {name}");
        drop(ctx);
        assert!(freed.get(), "backend {name}");
        assert!(!fd_is_open(raw), "backend {name}");
    });
}

#[test]
fn error_waiter_is_not_called_for_data() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (_w, r) = util::readable_pair(1);
        let calls = Counter::new();
        let c = calls.clone();
        let _fde = ctx
            .add_fd(&r, FdFlags::ERROR, move |_, _, _| c.inc())
            .unwrap();
        assert_idle(name, &ctx);
        assert_eq!(calls.get(), 0, "backend {name}");
    });
}

#[test]
fn fds_that_stay_ready_are_served_fairly() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let pairs: Vec<_> = (0..3).map(|_| util::readable_pair(1)).collect();
        let log = Log::new();
        let _events: Vec<_> = pairs
            .iter()
            .enumerate()
            .map(|(i, (_, r))| {
                let l = log.clone();
                ctx.add_fd(r, FdFlags::READ, move |_, _, _| l.push(i.to_string()))
                    .unwrap()
            })
            .collect();
        for _ in 0..9 {
            ctx.loop_once().unwrap();
        }
        let got = log.get();
        for i in 0..3 {
            let n = got.iter().filter(|e| **e == i.to_string()).count();
            assert_eq!(n, 3, "backend {name}: fd {i} in {got:?}");
        }
    });
}

#[test]
fn fd_closed_behind_the_events_back_is_disarmed() {
    each_backend(|name, ctx| {
        let (_w, r) = util::readable_pair(1);
        let fd = high_fd(r).into_raw_fd();
        let calls = Counter::new();
        let c = calls.clone();
        let fde = ctx
            .add_fd_raw(fd, FdFlags::EMPTY, move |_, _, _| c.inc())
            .unwrap();
        // Breaks the contract (drop the event before closing its fd); the
        // loop must not spin or call the handler for the dead fd.
        // SAFETY: `fd` is ours (from `into_raw_fd`) and nothing else uses it.
        assert_eq!(unsafe { libc::close(fd) }, 0);
        // Registering it now fails or is caught by the wait (POLLNVAL):
        // either way every event on it is disarmed.
        let result = fde.set_flags(FdFlags::READ);
        if let Err(e) = &result {
            assert_eq!(e.errno(), Some(libc::EBADF), "backend {name}: {e}");
        }
        loop_wait_bounded(name, &ctx, 10);
        assert_eq!(calls.get(), 0, "backend {name}");
        assert_eq!(fde.flags(), FdFlags::EMPTY, "backend {name}");
    });
}

/// A backend that records what the context asks of the real one.
struct Recording {
    real: Box<dyn tevent::backend::Backend>,
    calls: Rc<RefCell<Vec<String>>>,
}

impl tevent::backend::Backend for Recording {
    fn name(&self) -> &'static str {
        self.real.name()
    }
    fn add(&mut self, fd: RawFd, token: u64, interest: FdFlags) -> std::io::Result<()> {
        self.calls
            .borrow_mut()
            .push(format!("add {fd} {interest:?}"));
        self.real.add(fd, token, interest)
    }
    fn modify(&mut self, fd: RawFd, token: u64, interest: FdFlags) -> std::io::Result<()> {
        self.calls
            .borrow_mut()
            .push(format!("modify {fd} {interest:?}"));
        self.real.modify(fd, token, interest)
    }
    fn delete(&mut self, fd: RawFd) -> std::io::Result<()> {
        self.calls.borrow_mut().push(format!("delete {fd}"));
        self.real.delete(fd)
    }
    fn wait(
        &mut self,
        timeout: Option<std::time::Duration>,
    ) -> std::io::Result<Option<tevent::backend::Readiness>> {
        self.real.wait(timeout)
    }
    fn as_raw_fd(&self) -> Option<RawFd> {
        self.real.as_raw_fd()
    }
    fn reinitialise(&mut self) -> std::io::Result<()> {
        self.calls.borrow_mut().push("reinitialise".into());
        self.real.reinitialise()
    }
}

fn real_backend(name: &str) -> Box<dyn tevent::backend::Backend> {
    use tevent::backend::{PollBackend, PollingBackend};
    match name {
        #[cfg(target_os = "linux")]
        "epoll" => Box::new(tevent::backend::EpollBackend::new().unwrap()),
        "polling" => Box::new(PollingBackend::new().unwrap()),
        "poll" => Box::new(PollBackend::new()),
        other => panic!("unknown backend {other}"),
    }
}

#[test]
fn kernel_registration_follows_the_union_of_the_flags() {
    for name in util::backends() {
        let calls = Rc::new(RefCell::new(Vec::new()));
        let ctx = tevent::Context::with_backend_object(Box::new(Recording {
            real: real_backend(name),
            calls: calls.clone(),
        }))
        .unwrap();
        assert_eq!(ctx.backend_name(), name);
        let (_w, r) = util::pair();
        let fd = r.as_raw_fd();
        let mine = move || -> Vec<String> {
            let prefix = [
                format!("add {fd} "),
                format!("modify {fd} "),
                format!("delete {fd}"),
            ];
            calls
                .borrow_mut()
                .drain(..)
                .filter(|c| prefix.iter().any(|p| c.starts_with(p.as_str())))
                .collect()
        };
        mine();
        let a = ctx.add_fd(&r, FdFlags::EMPTY, |_, _, _| {}).unwrap();
        assert_eq!(mine(), [""; 0], "backend {name}: EMPTY is not registered");
        a.set_flags(FdFlags::READ).unwrap();
        assert_eq!(mine(), [format!("add {fd} READ")], "backend {name}");
        let b = ctx.add_fd(&r, FdFlags::WRITE, |_, _, _| {}).unwrap();
        assert_eq!(
            mine(),
            [format!("modify {fd} READ|WRITE")],
            "backend {name}"
        );
        let c = ctx.add_fd(&r, FdFlags::READ, |_, _, _| {}).unwrap();
        assert_eq!(mine(), [""; 0], "backend {name}: nothing changes");
        drop(b);
        assert_eq!(mine(), [format!("modify {fd} READ")], "backend {name}");
        a.set_flags(FdFlags::EMPTY).unwrap();
        assert_eq!(mine(), [""; 0], "backend {name}: c still wants READ");
        drop(c);
        assert_eq!(mine(), [format!("delete {fd}")], "backend {name}");
        drop(a);
        assert_eq!(mine(), [""; 0], "backend {name}");
    }
}
