//! Driving a context from an outer `poll(2)` loop only: timers, immediates,
//! fd events and a request run to completion without `loop_once`.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use tevent::{wakeup_recv, wakeup_send, Context, Deadline, FdFlags};

fn outer_poll(fd: RawFd, timeout: Option<Duration>) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.map_or(-1, |t| t.as_millis() as i32 + 1);
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// The backends that have an fd to embed.
fn embeddable() -> Vec<&'static str> {
    tevent::backend::names()
        .iter()
        .copied()
        .filter(|n| Context::with_backend(n).unwrap().loop_fd().is_some())
        .collect()
}

#[test]
fn poll_backend_has_no_loop_fd() {
    assert!(Context::with_backend("poll").unwrap().loop_fd().is_none());
    assert!(Context::with_backend("epoll").unwrap().loop_fd().is_some());
}

#[test]
fn outer_poll_loop_drives_every_kind_of_event() {
    for name in embeddable() {
        let ctx = Context::with_backend(name).unwrap();
        let fd = ctx.loop_fd().unwrap();
        let log = Rc::new(RefCell::new(Vec::<&'static str>::new()));

        let l = log.clone();
        let _im = ctx.schedule_immediate(move |_, _| l.borrow_mut().push("immediate"));
        let l = log.clone();
        let _timer = ctx.add_timer(Deadline::after(Duration::from_millis(5)), move |_, _, _| {
            l.borrow_mut().push("timer")
        });
        let (mut a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut b2 = b.try_clone().unwrap();
        let l = log.clone();
        let _fde = ctx
            .add_fd(&b, FdFlags::READ, move |_, fde, _| {
                let mut buf = [0u8; 8];
                let _ = b2.read(&mut buf);
                l.borrow_mut().push("fd");
                fde.set_flags(FdFlags::EMPTY).unwrap();
            })
            .unwrap();
        let req = wakeup_send(&ctx, Deadline::after(Duration::from_millis(10)));
        let l = log.clone();
        req.set_callback(move |req| {
            assert!(wakeup_recv(req));
            l.borrow_mut().push("request");
        });

        assert_eq!(
            ctx.next_timeout(),
            Some(Duration::ZERO),
            "{name}: immediate pending"
        );
        let mut wrote = false;
        let mut rounds = 0;
        while ctx.has_events() {
            rounds += 1;
            assert!(rounds < 1000, "{name}: outer loop did not finish");
            outer_poll(fd, ctx.next_timeout());
            while ctx.try_loop_once().unwrap() {}
            if !wrote && log.borrow().contains(&"timer") {
                a.write_all(b"x").unwrap();
                wrote = true;
            }
        }
        assert_eq!(
            *log.borrow(),
            vec!["immediate", "timer", "fd", "request"],
            "{name}"
        );
        assert_eq!(ctx.next_timeout(), None, "{name}: nothing left");
    }
}

#[test]
fn next_timeout_follows_the_first_timer() {
    let ctx = Context::new().unwrap();
    assert_eq!(ctx.next_timeout(), None);
    let _t = ctx.add_timer(Deadline::after(Duration::from_secs(60)), |_, _, _| {});
    let t = ctx.next_timeout().unwrap();
    assert!(t > Duration::from_secs(59) && t <= Duration::from_secs(60));
    let _asap = ctx.add_timer(Deadline::Asap, |_, _, _| {});
    assert_eq!(ctx.next_timeout(), Some(Duration::ZERO));
}

#[test]
fn try_loop_once_never_blocks() {
    for name in tevent::backend::names() {
        let ctx = Context::with_backend(name).unwrap();
        let _t = ctx.add_timer(Deadline::after(Duration::from_secs(60)), |_, _, _| {});
        // The default wait timeout is 30 s: this must return at once.
        assert!(!ctx.try_loop_once().unwrap(), "{name}");
    }
}

#[test]
fn a_job_from_another_thread_makes_the_loop_fd_readable() {
    for name in embeddable() {
        let ctx = Context::with_backend(name).unwrap();
        let fd = ctx.loop_fd().unwrap();
        let handle = ctx.thread_handle();
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = ran.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            handle
                .schedule(move |_ctx| r.store(true, std::sync::atomic::Ordering::SeqCst))
                .unwrap();
        });
        // Sleeps until the job arrives (no timeout: only the fd can wake us).
        assert_eq!(ctx.next_timeout(), None, "{name}");
        outer_poll(fd, Some(Duration::from_secs(10)));
        t.join().unwrap();
        for _ in 0..4 {
            ctx.try_loop_once().unwrap();
        }
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst), "{name}");
    }
}

#[test]
fn reinitialise_detaches_every_event_and_keeps_working() {
    for name in tevent::backend::names() {
        let ctx = Context::with_backend(name).unwrap();
        let (_a, b) = UnixStream::pair().unwrap();
        let fde = ctx
            .add_fd(&b, FdFlags::READ, |_, _, _| panic!("detached"))
            .unwrap();
        let timer = ctx.add_timer(Deadline::Asap, |_, _, _| panic!("detached"));
        let im = ctx.schedule_immediate(|_, _| panic!("detached"));
        let posted: tevent::Req<(), ()> = tevent::Req::new(&ctx, ());
        posted.done(());
        let posted = posted.post();
        posted.set_callback(|_| panic!("detached"));
        let old_handle = ctx.thread_handle();
        ctx.reinitialise().unwrap();
        assert!(!ctx.has_events(), "{name}");
        assert_eq!(fde.flags(), FdFlags::EMPTY, "{name}");
        assert!(!timer.is_pending() && !im.is_scheduled(), "{name}");
        assert!(
            old_handle.schedule(|_| {}).is_err(),
            "{name}: parent's handle"
        );
        // The fd was not closed.
        // SAFETY: fcntl(F_GETFD) on a plain fd number.
        assert!(unsafe { libc::fcntl(b.as_raw_fd(), libc::F_GETFD) } >= 0);
        // New events work.
        let ran = Rc::new(RefCell::new(false));
        let r = ran.clone();
        let _im2 = ctx.schedule_immediate(move |_, _| *r.borrow_mut() = true);
        ctx.loop_wait().unwrap();
        assert!(*ran.borrow(), "{name}");
        // The request whose post was detached is still finished; dropping
        // it later leaves the new events alone.
        let later = ctx.schedule_immediate(|_, _| {});
        drop(posted);
        assert!(ctx.has_events(), "{name}");
        drop((fde, timer, im, later));
    }
}

#[test]
fn reinitialise_in_a_forked_child() {
    let ctx = Context::new().unwrap();
    let (mut parent_end, child_end) = UnixStream::pair().unwrap();
    let _fde = ctx.add_fd(&child_end, FdFlags::READ, |_, _, _| {}).unwrap();
    // SAFETY: the child only makes async-signal-safe-in-practice calls into
    // this crate and exits with _exit; the test process is single-threaded
    // at this point for this context's purposes.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = (|| -> Result<(), tevent::Error> {
            ctx.reinitialise()?;
            let mut sock = child_end.try_clone().map_err(tevent::Error::Io)?;
            let req = wakeup_send(&ctx, Deadline::after(Duration::from_millis(1)));
            req.poll()?;
            if !wakeup_recv(&req) {
                return Err(tevent::Error::ContextGone);
            }
            sock.write_all(b"ok").map_err(tevent::Error::Io)?;
            Ok(())
        })();
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(if ok.is_ok() { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed"
    );
    let mut buf = [0u8; 2];
    parent_end.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ok");
}
