//! A tour of the event loop: one event of every kind, and the order in which
//! one iteration runs them.
//!
//! Run it with `cargo run --release --example tour` (add `RUST_LOG=trace` to
//! see the library's own log lines).

use std::cell::Cell;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tevent::{Context, Deadline, FdFlags, SignalFlags};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let ctx = Context::new()?;
    println!("backend: {}", ctx.backend_name());
    let start = Instant::now();
    let iteration = Rc::new(Cell::new(0u32));
    let say = {
        let iteration = iteration.clone();
        move |what: &str| {
            println!(
                "[iteration {:2} at {:>6} us] {what}",
                iteration.get(),
                start.elapsed().as_micros()
            )
        }
    };

    // An fd event: a socket pair, read whatever arrives.
    let (mut writer, reader) = UnixStream::pair()?;
    reader.set_nonblocking(true)?;
    let mut r = reader.try_clone()?;
    let s = say.clone();
    let fde = ctx.add_fd(&reader, FdFlags::READ, move |_ctx, fde, flags| {
        let mut buf = [0u8; 64];
        match r.read(&mut buf) {
            Ok(0) => {
                s("fd: end of file, stop watching");
                fde.set_flags(FdFlags::EMPTY).ok();
            }
            Ok(n) => s(&format!(
                "fd {flags:?}: read {:?}",
                String::from_utf8_lossy(&buf[..n])
            )),
            Err(e) => s(&format!("fd: {e}")),
        }
    })?;

    // Timers: deadline order, "as soon as possible" first.
    let s = say.clone();
    let t_late = ctx.add_timer(
        Deadline::after(Duration::from_millis(20)),
        move |_, _, _| {
            s("timer: +20 ms");
        },
    );
    let s = say.clone();
    let t_asap = ctx.add_timer(Deadline::Asap, move |_, _, _| {
        s("timer: as soon as possible")
    });
    // A periodic timer re-arms itself. Its handler owns the writer: when the
    // timer is done, the handler is dropped, the socket closes and the
    // reader sees the end of file.
    let s = say.clone();
    let mut ticks = 0;
    let t_periodic = ctx.add_timer(
        Deadline::after(Duration::from_millis(5)),
        move |_, timer, now| {
            ticks += 1;
            s(&format!(
                "timer: periodic tick {ticks}, writing to the socket"
            ));
            writer.write_all(format!("tick {ticks}").as_bytes()).ok();
            if ticks < 3 {
                timer.update(now + Duration::from_millis(5));
            }
        },
    );

    // Immediates run before timers and fds.
    let s = say.clone();
    let im = ctx.schedule_immediate(move |_, _| s("immediate: first"));
    let s = say.clone();
    let mut again = 0;
    let im2 = ctx.schedule_immediate(move |_, im| {
        again += 1;
        s(&format!("immediate: second, run {again}"));
        if again < 2 {
            im.reschedule();
        }
    });

    // A signal, delivered in loop context before anything else.
    let s = say.clone();
    let sig = ctx.add_signal(libc::SIGUSR1, SignalFlags::EMPTY, move |_, _, info| {
        s(&format!("signal {} x{}", info.signum, info.count));
    })?;
    // SAFETY: raise(3) has no memory-safety preconditions.
    unsafe {
        libc::raise(libc::SIGUSR1);
    }

    // Run until the periodic timer stopped and the late timer fired; the fd
    // event is then the only event left, and the signal event keeps the
    // loop alive: drop both to end `loop_wait`.
    let it = iteration.clone();
    while t_late.is_pending() || t_periodic.is_pending() {
        it.set(it.get() + 1);
        ctx.loop_once()?;
    }
    drop(sig);
    drop(fde);
    drop((t_asap, im, im2));
    ctx.loop_wait()?;
    println!("no events left after {} iterations", iteration.get());
    Ok(())
}
