//! Jobs scheduled from other threads through a `ThreadHandle`.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tevent::{Context, Deadline, FdFlags};

const THREADS: usize = 8;
const JOBS: usize = 100_000;

/// 8 threads × 100,000 jobs while the loop also serves an fd ping-pong and
/// a periodic timer: every job runs exactly once, each thread's jobs run in
/// the order it sent them, and an fd event never waits more than a bounded
/// number of iterations.
#[test]
fn jobs_from_eight_threads_run_once_in_order_without_starving_fds() {
    for name in tevent::backend::names() {
        let ctx = Context::with_backend(name).unwrap();
        // Per thread: the next sequence number expected.
        let next = Rc::new(RefCell::new(vec![0usize; THREADS]));
        let ran = Rc::new(Cell::new(0usize));
        let iterations = Rc::new(Cell::new(0u64));

        // An fd that is always readable again right after being served: the
        // handler records the iteration it ran in and re-arms by writing.
        let (mut a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut b2 = b.try_clone().unwrap();
        let mut a2 = a.try_clone().unwrap();
        let last_fd = Rc::new(Cell::new(0u64));
        let max_gap = Rc::new(Cell::new(0u64));
        let fd_runs = Rc::new(Cell::new(0u64));
        let (it, lf, mg, fr) = (
            iterations.clone(),
            last_fd.clone(),
            max_gap.clone(),
            fd_runs.clone(),
        );
        let _fde = ctx
            .add_fd(&b, FdFlags::READ, move |_, _, _| {
                let mut buf = [0u8; 16];
                let _ = b2.read(&mut buf);
                let now = it.get();
                mg.set(mg.get().max(now - lf.get()));
                lf.set(now);
                fr.set(fr.get() + 1);
                a2.write_all(b"x").unwrap();
            })
            .unwrap();
        a.write_all(b"x").unwrap();

        let timer_runs = Rc::new(Cell::new(0u32));
        let tr = timer_runs.clone();
        let _timer = ctx.add_timer(Deadline::Asap, move |_, timer, now| {
            tr.set(tr.get() + 1);
            timer.update(now + Duration::from_millis(1));
        });

        // The jobs are Send; they report to the loop thread through a
        // thread-local, set up below.
        type Sink = Rc<dyn Fn(usize, usize)>;
        thread_local! {
            static SINK: RefCell<Option<Sink>> = const { RefCell::new(None) };
        }
        let (n, r) = (next.clone(), ran.clone());
        SINK.with(|s| {
            *s.borrow_mut() = Some(Rc::new(move |thread: usize, seq: usize| {
                let mut next = n.borrow_mut();
                assert_eq!(next[thread], seq, "thread {thread} out of order");
                next[thread] += 1;
                r.set(r.get() + 1);
            }))
        });

        let start = Arc::new(std::sync::Barrier::new(THREADS));
        let senders: Vec<_> = (0..THREADS)
            .map(|t| {
                let handle = ctx.thread_handle();
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    for seq in 0..JOBS {
                        handle
                            .schedule(move |_ctx| {
                                SINK.with(|s| (s.borrow().as_ref().unwrap())(t, seq))
                            })
                            .unwrap_or_else(|_| panic!("context gone"));
                    }
                })
            })
            .collect();

        let total = THREADS * JOBS;
        while ran.get() < total {
            iterations.set(iterations.get() + 1);
            ctx.loop_once().unwrap();
            assert!(iterations.get() < 100 * total as u64, "{name}: stuck");
        }
        for s in senders {
            s.join().unwrap();
        }
        // Drain anything that raced in at the end (nothing should be left).
        assert_eq!(ran.get(), total, "{name}");
        assert!(next.borrow().iter().all(|&n| n == JOBS), "{name}");
        assert!(fd_runs.get() > 0 && timer_runs.get() > 0, "{name}");
        // A batch is at most 256 jobs; with the timer and the fd itself the
        // gap between two fd events stays small.
        assert!(
            max_gap.get() <= 300,
            "{name}: an fd event waited {} iterations",
            max_gap.get()
        );
        SINK.with(|s| *s.borrow_mut() = None);
    }
}

#[test]
fn scheduling_after_the_context_is_gone_hands_the_job_back() {
    let ctx = Context::new().unwrap();
    let handle = ctx.thread_handle();
    assert!(handle.is_alive());
    let queued = Arc::new(());
    let q = queued.clone();
    handle.schedule(move |_| drop(q)).unwrap();
    drop(ctx);
    // The queued job was dropped with the context, not leaked.
    assert_eq!(Arc::strong_count(&queued), 1);
    assert!(!handle.is_alive());
    let job = std::thread::spawn(move || match handle.schedule(|_| {}) {
        Err(tevent::ContextGone(_job)) => true,
        Ok(()) => false,
    });
    assert!(job.join().unwrap());
}

#[test]
fn a_job_wakes_a_blocked_loop() {
    for name in tevent::backend::names() {
        let ctx = Context::with_backend(name).unwrap();
        let handle = ctx.thread_handle();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            handle.schedule(|_| {}).unwrap();
        });
        // No events: without the wakeup this would wait the 30 s default.
        ctx.set_wait_timeout(Duration::from_secs(30));
        let begin = std::time::Instant::now();
        ctx.loop_once().unwrap(); // woken by the job's wakeup
        ctx.loop_once().unwrap(); // runs it
        t.join().unwrap();
        assert!(
            begin.elapsed() < Duration::from_secs(20),
            "{name}: not woken"
        );
    }
}
