//! A live profile of a busy loop, built on the trace points: which handlers
//! ran, how long each took, and how long the loop slept.
//!
//! Run it with `cargo run --release --example profile`. It runs a small
//! workload (an fd ping-pong, a periodic timer, a chain of immediates) for
//! two seconds and prints a profile every half second.
//!
//! One iteration runs at most one handler, so a handler's time is the time
//! from its `BeforeHandler` trace point to the end of the iteration
//! (`AfterLoopOnce`); the sleep is `BeforeWait` to `AfterWait`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::panic::Location;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tevent::{Context, Deadline, EventKind, EventTracePoint, FdFlags, LoopTracePoint};

#[derive(Default)]
struct Profile {
    /// The handler running in this iteration: where its event was created.
    current: Option<(EventKind, &'static Location<'static>, Instant)>,
    wait_started: Option<Instant>,
    /// Per handler: calls and total time.
    handlers: BTreeMap<String, (u64, Duration)>,
    slept: Duration,
    iterations: u64,
}

impl Profile {
    fn print(&mut self, over: Duration) {
        println!(
            "--- {} iterations in {:?}; slept {:?} ({:.0}%)",
            self.iterations,
            over,
            self.slept,
            100.0 * self.slept.as_secs_f64() / over.as_secs_f64()
        );
        let mut rows: Vec<_> = self.handlers.iter().collect();
        rows.sort_by_key(|(_, (_, total))| std::cmp::Reverse(*total));
        for (name, (calls, total)) in rows {
            println!(
                "{:>9} calls {:>10.3?} total {:>8.0?}/call  {name}",
                calls,
                total,
                *total / (*calls).max(1) as u32
            );
        }
        self.handlers.clear();
        self.slept = Duration::ZERO;
        self.iterations = 0;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let ctx = Context::new()?;
    let profile = Rc::new(RefCell::new(Profile::default()));

    let p = profile.clone();
    ctx.set_event_trace_callback(move |event, point| {
        if point == EventTracePoint::BeforeHandler {
            p.borrow_mut().current = Some((event.kind, event.created, Instant::now()));
        }
    });
    let p = profile.clone();
    ctx.set_trace_callback(move |point| {
        let mut p = p.borrow_mut();
        match point {
            LoopTracePoint::BeforeWait => p.wait_started = Some(Instant::now()),
            LoopTracePoint::AfterWait => {
                if let Some(start) = p.wait_started.take() {
                    p.slept += start.elapsed();
                }
            }
            LoopTracePoint::AfterLoopOnce => {
                p.iterations += 1;
                if let Some((kind, at, start)) = p.current.take() {
                    let entry = p
                        .handlers
                        .entry(format!("{kind:?} created at {at}"))
                        .or_default();
                    entry.0 += 1;
                    entry.1 += start.elapsed();
                }
            }
            LoopTracePoint::BeforeLoopOnce => {}
        }
    });

    // The workload: an fd ping-pong between two socket ends...
    let (a, b) = UnixStream::pair()?;
    a.set_nonblocking(true)?;
    b.set_nonblocking(true)?;
    let mut fdes = Vec::new();
    for sock in [&a, &b] {
        let mut s = sock.try_clone()?;
        fdes.push(ctx.add_fd(sock, FdFlags::READ, move |_, _, _| {
            let mut buf = [0u8; 1];
            if s.read(&mut buf).is_ok() {
                let _ = s.write_all(&buf);
            }
        })?);
    }
    (&a).write_all(b"x")?;
    // ...and a periodic timer that does some work and hands a little more
    // to an immediate.
    let _tick = ctx.add_timer(Deadline::Asap, |ctx, timer, now| {
        let mut x = 0u64;
        for i in 0..20_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        ctx.schedule_immediate(|_, _| {
            std::hint::black_box((0..1_000u64).sum::<u64>());
        })
        .detach();
        timer.update(now + Duration::from_millis(1));
    });

    let end = Instant::now() + Duration::from_secs(2);
    let mut next_report = Instant::now() + Duration::from_millis(500);
    let mut last = Instant::now();
    while Instant::now() < end {
        ctx.loop_once()?;
        if Instant::now() >= next_report {
            profile.borrow_mut().print(last.elapsed());
            last = Instant::now();
            next_report = last + Duration::from_millis(500);
        }
    }
    Ok(())
}
