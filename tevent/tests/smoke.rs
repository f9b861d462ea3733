use std::cell::RefCell;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Instant;
use tevent::{Context, Deadline, FdFlags, SignalFlags};

#[test]
fn priority_order_of_one_iteration() {
    for name in tevent::backend::names() {
        let ctx = Context::with_backend(name).unwrap();
        let log = Rc::new(RefCell::new(Vec::<String>::new()));
        let l = log.clone();
        let _sig = ctx
            .add_signal(libc::SIGUSR1, SignalFlags::EMPTY, move |_, _, info| {
                l.borrow_mut().push(format!("S{}", info.count))
            })
            .unwrap();
        let l = log.clone();
        let _a = ctx.schedule_immediate(move |_, _| l.borrow_mut().push("A".into()));
        let l = log.clone();
        let _b = ctx.schedule_immediate(move |_, _| l.borrow_mut().push("B".into()));
        let l = log.clone();
        let _c = ctx.add_timer(Deadline::Asap, move |_, _, _| {
            l.borrow_mut().push("C".into())
        });
        let l = log.clone();
        let _d = ctx.add_timer(Instant::now(), move |_, _, _| {
            l.borrow_mut().push("D".into())
        });
        let l = log.clone();
        let _e = ctx.add_timer(Deadline::Asap, move |_, _, _| {
            l.borrow_mut().push("E".into())
        });
        let (mut w, r) = UnixStream::pair().unwrap();
        w.write_all(b"x").unwrap();
        let l = log.clone();
        let _f = ctx
            .add_fd(&r, FdFlags::READ, move |_, fde, flags| {
                l.borrow_mut().push(format!("F{}", flags.bits()));
                fde.set_flags(FdFlags::EMPTY).unwrap();
            })
            .unwrap();
        unsafe {
            libc::raise(libc::SIGUSR1);
            libc::raise(libc::SIGUSR1);
        }
        for _ in 0..7 {
            ctx.loop_once().unwrap();
        }
        assert_eq!(
            *log.borrow(),
            vec!["S2", "A", "B", "C", "E", "D", "F1"],
            "backend {name}"
        );
    }
}
