//! Signal events. Signals and their dispositions are process-global, so
//! this file runs without the test harness (`harness = false`): `main`
//! runs every test in sequence on the main thread, and nothing races them.
//!
//! Every test raises a signal only while an event for it exists (the
//! default action of `SIGUSR1`/`SIGUSR2` would end the process).

mod util;

use std::any::Any;
use std::cell::RefCell;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tevent::{Context, Deadline, Error, FdFlags, SignalEvent, SignalFlags, SignalInfo};
use util::{each_backend, loop_wait_bounded, polling, run_until_idle, slot, Counter, Log, Slot};

const SIGUSR1: i32 = libc::SIGUSR1;
const SIGUSR2: i32 = libc::SIGUSR2;

type Test = fn();

/// Lists the tests in the order they run; `#[ignore = "..."]` marks one
/// that runs only with `--ignored` or `--include-ignored`.
macro_rules! tests {
    ($($(#[ignore = $reason:literal])? $name:ident,)*) => {
        &[$((stringify!($name), $name as Test, tests!(@reason $($reason)?))),*]
    };
    (@reason) => { None };
    (@reason $reason:literal) => { Some($reason) };
}

const TESTS: &[(&str, Test, Option<&str>)] = tests![
    priority_order_of_one_iteration,
    handler_runs_in_loop_context_with_coalesced_count,
    each_signal_number_has_its_own_handler_and_count,
    siginfo_handler_is_called_once_per_delivery,
    siginfo_keeps_the_sigqueue_value,
    siginfo_overflow_keeps_the_count,
    siginfo_and_coalesced_events_share_a_signal,
    resethand_event_runs_once,
    all_handlers_of_a_signal_are_called_in_one_and_several_contexts,
    event_added_after_a_delivery_does_not_see_it,
    previous_disposition_is_restored_by_the_last_drop,
    dropping_the_context_restores_the_disposition,
    signal_event_keeps_loop_wait_running_until_dropped,
    polling_mode_runs_pending_signals,
    loop_wait_wakes_up_for_a_signal_from_another_thread,
    invalid_signal_numbers_are_refused,
    restart_flag_of_the_first_event_decides,
    handler_drops_its_own_signal_event,
    handler_drops_another_pending_signal_event,
    signal_handler_adds_events_of_every_kind,
    handlers_add_signal_events,
    signal_handler_drops_the_last_user_handle_of_the_context,
    nested_loop_once_from_a_signal_handler_is_refused,
    signal_handler_panic_propagates_and_the_event_stays,
    signal_handler_panic_does_not_lose_other_handlers_deliveries,
];

fn main() {
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let (mut ignored_only, mut include_ignored, mut list) = (false, false, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--ignored" => ignored_only = true,
            "--include-ignored" => include_ignored = true,
            "--list" => list = true,
            "--skip" => skips.extend(args.next()),
            // Other harness options have no effect here; skip their values.
            "--test-threads" | "--format" | "--logfile" | "--color" | "-Z" => {
                args.next();
            }
            a if a.starts_with('-') => {}
            a => filters.push(a.to_string()),
        }
    }
    let selected: Vec<_> = TESTS
        .iter()
        .filter(|(name, _, _)| {
            (filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
                && !skips.iter().any(|s| name.contains(s.as_str()))
        })
        .collect();
    if list {
        for (name, _, _) in &selected {
            println!("{name}: test");
        }
        return;
    }
    println!("\nrunning {} tests", selected.len());
    let (mut passed, mut ignored, mut failed) = (0, 0, Vec::new());
    for (name, test, ignore) in selected {
        let run = match ignore {
            Some(_) => ignored_only || include_ignored,
            None => !ignored_only,
        };
        if !run {
            println!("test {name} ... ignored, {}", ignore.unwrap_or(""));
            ignored += 1;
            continue;
        }
        print!("test {name} ... ");
        std::io::stdout().flush().ok();
        match catch_unwind(test) {
            Ok(()) => {
                println!("ok");
                passed += 1;
            }
            Err(_) => {
                println!("FAILED");
                failed.push(*name);
            }
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; {ignored} ignored\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len()
    );
    if !failed.is_empty() {
        println!("failures:");
        for name in &failed {
            println!("    {name}");
        }
        std::process::exit(101);
    }
}

// ---------------------------------------------------------------------
// Helpers

/// Send `signum` to this thread: the handler has run when this returns.
fn raise(signum: i32) {
    // SAFETY: raise(3) has no memory-safety preconditions.
    assert_eq!(unsafe { libc::raise(signum) }, 0, "raise({signum})");
}

/// Send `signum` to this process with kill(2).
fn kill_self(signum: i32) {
    // SAFETY: kill(2) and getpid(2) have no memory-safety preconditions.
    assert_eq!(
        unsafe { libc::kill(libc::getpid(), signum) },
        0,
        "kill({signum})"
    );
}

/// The current disposition of `signum`.
fn disposition(signum: i32) -> libc::sighandler_t {
    // SAFETY: a zeroed sigaction is a valid out-parameter; a null new
    // action only queries.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(signum, std::ptr::null(), &mut old), 0);
        old.sa_sigaction
    }
}

fn set_disposition(signum: i32, handler: libc::sighandler_t) {
    // SAFETY: SIG_IGN / SIG_DFL are valid dispositions for these signals.
    assert_ne!(unsafe { libc::signal(signum, handler) }, libc::SIG_ERR);
}

/// Record every call of a signal handler as `(signum, count, siginfo?)`.
#[derive(Clone, Default)]
struct Calls(Rc<RefCell<Vec<SignalInfo>>>);

impl Calls {
    fn handler(&self) -> impl FnMut(&Context, &SignalEvent, SignalInfo) + 'static {
        let calls = self.0.clone();
        move |ctx, _, info| {
            assert_eq!(ctx.nesting_level(), 1, "called from the loop");
            calls.borrow_mut().push(info)
        }
    }

    fn take(&self) -> Vec<SignalInfo> {
        std::mem::take(&mut *self.0.borrow_mut())
    }

    fn counts(&self) -> Vec<u64> {
        self.0.borrow().iter().map(|i| i.count).collect()
    }

    fn len(&self) -> usize {
        self.0.borrow().len()
    }
}

fn add(ctx: &Context, signum: i32, flags: SignalFlags, calls: &Calls) -> SignalEvent {
    ctx.add_signal(signum, flags, calls.handler())
        .unwrap_or_else(|e| panic!("add_signal({signum}): {e}"))
}

/// Fail the whole run instead of hanging if `f` does not return in time.
fn with_watchdog<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let (done, wait) = mpsc::channel::<()>();
    let what = what.to_string();
    let dog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(Duration::from_secs(20)) {
            eprintln!("\n{what}: still blocked after 20 s");
            std::process::exit(1);
        }
    });
    let result = f();
    let _ = done.send(());
    dog.join().unwrap();
    result
}

// ---------------------------------------------------------------------
// Order and delivery

/// tevent's complete order: all pending signals, then one immediate per
/// iteration, `Asap` timers, due timers, then one fd event per iteration.
fn priority_order_of_one_iteration() {
    each_backend(|name, ctx| {
        let log = Log::new();
        let l = log.clone();
        let _sig = ctx
            .add_signal(SIGUSR1, SignalFlags::EMPTY, move |_, _, info| {
                l.push(format!("S{}", info.count))
            })
            .unwrap();
        let l = log.clone();
        let _a = ctx.schedule_immediate(move |_, _| l.push("A"));
        let l = log.clone();
        let _b = ctx.schedule_immediate(move |_, _| l.push("B"));
        let l = log.clone();
        let _c = ctx.add_timer(Deadline::Asap, move |_, _, _| l.push("C"));
        let l = log.clone();
        let _d = ctx.add_timer(Instant::now(), move |_, _, _| l.push("D"));
        let l = log.clone();
        let _e = ctx.add_timer(Deadline::Asap, move |_, _, _| l.push("E"));
        let (_w, r) = util::readable_pair(1);
        let l = log.clone();
        let _f = ctx
            .add_fd(&r, FdFlags::READ, move |_, fde, flags| {
                l.push(format!("F{}", flags.bits()));
                fde.set_flags(FdFlags::EMPTY).unwrap();
            })
            .unwrap();
        let (g, _g_peer) = util::pair();
        let l = log.clone();
        let _g = ctx
            .add_fd(&g, FdFlags::WRITE, move |_, fde, flags| {
                l.push(format!("G{}", flags.bits()));
                fde.set_flags(FdFlags::EMPTY).unwrap();
            })
            .unwrap();
        raise(SIGUSR1);
        raise(SIGUSR1);
        let mut per_call = Vec::new();
        for _ in 0..8 {
            ctx.loop_once()
                .unwrap_or_else(|e| panic!("backend {name}: {e}"));
            per_call.push(log.take());
        }
        assert_eq!(
            per_call[..6],
            [["S2"], ["A"], ["B"], ["C"], ["E"], ["D"]],
            "backend {name}"
        );
        assert!(
            per_call[6..].iter().all(|c| c.len() == 1),
            "backend {name}: one fd event per loop_once: {per_call:?}"
        );
        let mut fds: Vec<String> = per_call[6..].concat();
        fds.sort();
        assert_eq!(fds, ["F1", "G2"], "backend {name}");
    });
}

fn handler_runs_in_loop_context_with_coalesced_count() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let calls = Calls::default();
        let se = add(&ctx, SIGUSR1, SignalFlags::EMPTY, &calls);
        assert_eq!(se.signum(), SIGUSR1, "backend {name}");
        assert!(se.is_active(), "backend {name}");
        for _ in 0..3 {
            raise(SIGUSR1);
        }
        assert_eq!(
            calls.len(),
            0,
            "backend {name}: never inside the OS handler"
        );
        ctx.loop_once().unwrap();
        assert_eq!(
            calls.take(),
            [SignalInfo {
                signum: SIGUSR1,
                count: 3,
                siginfo: None
            }],
            "backend {name}"
        );
        // Nothing new: nothing runs.
        util::assert_idle(name, &ctx);
        raise(SIGUSR1);
        ctx.loop_once().unwrap();
        assert_eq!(calls.counts(), [1], "backend {name}");
    });
}

fn each_signal_number_has_its_own_handler_and_count() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (one, two) = (Calls::default(), Calls::default());
        let _a = add(&ctx, SIGUSR1, SignalFlags::EMPTY, &one);
        let _b = add(&ctx, SIGUSR2, SignalFlags::EMPTY, &two);
        raise(SIGUSR2);
        raise(SIGUSR1);
        raise(SIGUSR2);
        // All pending signals in one iteration.
        ctx.loop_once().unwrap();
        assert_eq!(one.counts(), [1], "backend {name}");
        assert_eq!(two.counts(), [2], "backend {name}");
        assert_eq!(two.take()[0].signum, SIGUSR2, "backend {name}");
        util::assert_idle(name, &ctx);
    });
}

fn siginfo_handler_is_called_once_per_delivery() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let calls = Calls::default();
        let _se = add(&ctx, SIGUSR1, SignalFlags::SIGINFO, &calls);
        kill_self(SIGUSR1);
        kill_self(SIGUSR1);
        raise(SIGUSR1);
        run_until_idle(name, &ctx, 10);
        let calls = calls.take();
        assert_eq!(calls.len(), 3, "backend {name}: {calls:?}");
        // SAFETY: getpid/getuid have no preconditions.
        let (pid, uid) = unsafe { (libc::getpid(), libc::getuid()) };
        for (i, call) in calls.iter().enumerate() {
            assert_eq!(call.signum, SIGUSR1, "backend {name}");
            assert_eq!(call.count, 1, "backend {name}");
            let info = call
                .siginfo
                .unwrap_or_else(|| panic!("backend {name}: no siginfo"));
            assert_eq!(info.pid, pid, "backend {name}");
            assert_eq!(info.uid, uid, "backend {name}");
            let code = if i < 2 { libc::SI_USER } else { libc::SI_TKILL };
            assert_eq!(info.code, code, "backend {name}: delivery {i}");
        }
    });
}

fn siginfo_keeps_the_sigqueue_value() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let calls = Calls::default();
        let _se = add(&ctx, SIGUSR2, SignalFlags::SIGINFO, &calls);
        let value = libc::sigval {
            sival_ptr: 1234 as *mut libc::c_void,
        };
        // SAFETY: sigqueue(3) has no memory-safety preconditions.
        assert_eq!(unsafe { libc::sigqueue(libc::getpid(), SIGUSR2, value) }, 0);
        run_until_idle(name, &ctx, 10);
        let calls = calls.take();
        assert_eq!(calls.len(), 1, "backend {name}");
        let info = calls[0].siginfo.unwrap();
        assert_eq!(info.code, libc::SI_QUEUE, "backend {name}");
        assert_eq!(info.value, 1234, "backend {name}");
    });
}

fn siginfo_overflow_keeps_the_count() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let calls = Calls::default();
        let _se = add(&ctx, SIGUSR2, SignalFlags::SIGINFO, &calls);
        let n = tevent::SIGINFO_QUEUE + 44;
        for _ in 0..n {
            raise(SIGUSR2);
        }
        run_until_idle(name, &ctx, 10);
        let calls = calls.take();
        let total: u64 = calls.iter().map(|c| c.count).sum();
        assert_eq!(
            total, n as u64,
            "backend {name}: every delivery is accounted for"
        );
        let with_info = calls.iter().filter(|c| c.siginfo.is_some()).count();
        assert_eq!(with_info, tevent::SIGINFO_QUEUE, "backend {name}");
        assert!(
            calls.iter().all(|c| c.siginfo.is_some() == (c.count == 1)),
            "backend {name}: lost records come as a count without siginfo"
        );
    });
}

fn siginfo_and_coalesced_events_share_a_signal() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (plain, info) = (Calls::default(), Calls::default());
        let _a = add(&ctx, SIGUSR1, SignalFlags::EMPTY, &plain);
        let _b = add(&ctx, SIGUSR1, SignalFlags::SIGINFO, &info);
        raise(SIGUSR1);
        raise(SIGUSR1);
        ctx.loop_once().unwrap();
        assert_eq!(plain.counts(), [2], "backend {name}");
        assert_eq!(info.counts(), [1, 1], "backend {name}");
    });
}

fn resethand_event_runs_once() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (once, always) = (Calls::default(), Calls::default());
        let oneshot = add(&ctx, SIGUSR1, SignalFlags::RESETHAND, &once);
        let _keep = add(&ctx, SIGUSR1, SignalFlags::EMPTY, &always);
        raise(SIGUSR1);
        raise(SIGUSR1);
        ctx.loop_once().unwrap();
        assert_eq!(once.counts(), [2], "backend {name}");
        assert!(!oneshot.is_active(), "backend {name}");
        assert_eq!(oneshot.signum(), 0, "backend {name}");
        raise(SIGUSR1);
        ctx.loop_once().unwrap();
        assert_eq!(once.counts(), [2], "backend {name}: not called again");
        assert_eq!(always.counts(), [2, 1], "backend {name}");
        drop(oneshot); // already gone: harmless
        assert_ne!(disposition(SIGUSR1), libc::SIG_DFL, "backend {name}");

        // Alone, it restores the previous disposition after its call.
        drop(_keep);
        assert_eq!(disposition(SIGUSR1), libc::SIG_DFL, "backend {name}");
        let once = Calls::default();
        let oneshot = add(
            &ctx,
            SIGUSR1,
            SignalFlags::RESETHAND | SignalFlags::SIGINFO,
            &once,
        );
        raise(SIGUSR1);
        loop_wait_bounded(name, &ctx, 10);
        assert_eq!(once.counts(), [1], "backend {name}");
        assert!(once.take()[0].siginfo.is_some(), "backend {name}");
        assert!(!oneshot.is_active(), "backend {name}");
        assert_eq!(disposition(SIGUSR1), libc::SIG_DFL, "backend {name}");
    });
}

fn all_handlers_of_a_signal_are_called_in_one_and_several_contexts() {
    for name in util::backends() {
        let a = util::context(name);
        let b = util::context(name);
        polling(&a);
        polling(&b);
        let log = Log::new();
        let mut events = Vec::new();
        for (ctx, label) in [(&a, "a1"), (&a, "a2"), (&b, "b1")] {
            let l = log.clone();
            events.push(
                ctx.add_signal(SIGUSR1, SignalFlags::EMPTY, move |_, _, info| {
                    l.push(format!("{label}:{}", info.count))
                })
                .unwrap(),
            );
        }
        raise(SIGUSR1);
        a.loop_once().unwrap();
        assert_eq!(
            log.take(),
            ["a1:1", "a2:1"],
            "backend {name}: in the order added"
        );
        b.loop_once().unwrap();
        assert_eq!(log.take(), ["b1:1"], "backend {name}");
        util::assert_idle(name, &a);
        util::assert_idle(name, &b);
        raise(SIGUSR1);
        raise(SIGUSR1);
        b.loop_once().unwrap();
        a.loop_once().unwrap();
        assert_eq!(log.take(), ["b1:2", "a1:2", "a2:2"], "backend {name}");
    }
}

fn event_added_after_a_delivery_does_not_see_it() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let (early, late) = (Calls::default(), Calls::default());
        let _a = add(&ctx, SIGUSR1, SignalFlags::EMPTY, &early);
        raise(SIGUSR1);
        let _b = add(&ctx, SIGUSR1, SignalFlags::EMPTY, &late);
        run_until_idle(name, &ctx, 10);
        assert_eq!(early.counts(), [1], "backend {name}");
        assert_eq!(late.counts(), [0u64; 0], "backend {name}");
    });
}

fn previous_disposition_is_restored_by_the_last_drop() {
    set_disposition(SIGUSR2, libc::SIG_IGN);
    for name in util::backends() {
        let a = util::context(name);
        let b = util::context(name);
        let calls = Calls::default();
        let first = add(&a, SIGUSR2, SignalFlags::EMPTY, &calls);
        let installed = disposition(SIGUSR2);
        assert_ne!(installed, libc::SIG_IGN, "backend {name}");
        assert_ne!(installed, libc::SIG_DFL, "backend {name}");
        let second = add(&b, SIGUSR2, SignalFlags::EMPTY, &calls);
        let third = add(&a, SIGUSR2, SignalFlags::SIGINFO, &calls);
        drop(first);
        assert_eq!(disposition(SIGUSR2), installed, "backend {name}");
        drop(third);
        assert_eq!(disposition(SIGUSR2), installed, "backend {name}");
        drop(second);
        assert_eq!(
            disposition(SIGUSR2),
            libc::SIG_IGN,
            "backend {name}: restored"
        );
        // And again, with a detached event.
        add(&a, SIGUSR2, SignalFlags::EMPTY, &calls).detach();
        assert_eq!(disposition(SIGUSR2), installed, "backend {name}");
        drop(a);
        assert_eq!(disposition(SIGUSR2), libc::SIG_IGN, "backend {name}");
    }
    set_disposition(SIGUSR2, libc::SIG_DFL);
}

fn dropping_the_context_restores_the_disposition() {
    each_backend(|name, ctx| {
        let calls = Calls::default();
        let se = add(&ctx, SIGUSR1, SignalFlags::EMPTY, &calls);
        assert_ne!(disposition(SIGUSR1), libc::SIG_DFL, "backend {name}");
        drop(ctx);
        assert_eq!(disposition(SIGUSR1), libc::SIG_DFL, "backend {name}");
        assert!(!se.is_active(), "backend {name}");
        assert!(se.context().is_none(), "backend {name}");
        drop(se); // nothing left to remove
        assert_eq!(disposition(SIGUSR1), libc::SIG_DFL, "backend {name}");
        // A new event installs it again.
        let ctx = util::context(name);
        let se = add(&ctx, SIGUSR1, SignalFlags::EMPTY, &calls);
        assert_ne!(disposition(SIGUSR1), libc::SIG_DFL, "backend {name}");
        drop(se);
        assert_eq!(disposition(SIGUSR1), libc::SIG_DFL, "backend {name}");
    });
}

fn signal_event_keeps_loop_wait_running_until_dropped() {
    each_backend(|name, ctx| {
        let log = Log::new();
        let own: Slot<SignalEvent> = slot();
        let (l, o) = (log.clone(), own.clone());
        *own.borrow_mut() = Some(
            ctx.add_signal(SIGUSR1, SignalFlags::EMPTY, move |_, _, _| {
                l.push("signal");
                drop(o.borrow_mut().take());
            })
            .unwrap(),
        );
        let l = log.clone();
        let _t = ctx.add_timer(Deadline::Asap, move |_, _, _| {
            l.push("timer");
            raise(SIGUSR1);
        });
        assert!(ctx.has_events(), "backend {name}");
        let n = loop_wait_bounded(name, &ctx, 10);
        assert_eq!(n, 2, "backend {name}");
        assert_eq!(log.get(), ["timer", "signal"], "backend {name}");
        assert!(!ctx.has_events(), "backend {name}");
    });
}

fn polling_mode_runs_pending_signals() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let calls = Calls::default();
        let _se = add(&ctx, SIGUSR2, SignalFlags::EMPTY, &calls);
        util::assert_idle(name, &ctx);
        raise(SIGUSR2);
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(calls.counts(), [1], "backend {name}");
    });
}

fn loop_wait_wakes_up_for_a_signal_from_another_thread() {
    each_backend(|name, ctx| {
        // Wait for ever: only the signal can end the wait.
        ctx.set_wait_timeout(Duration::MAX);
        let calls = Calls::default();
        let se = add(&ctx, SIGUSR1, SignalFlags::RESETHAND, &calls);
        with_watchdog(&format!("backend {name}: loop_wait"), || {
            let sender = std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                kill_self(SIGUSR1);
            });
            ctx.loop_wait()
                .unwrap_or_else(|e| panic!("backend {name}: {e}"));
            sender.join().unwrap();
        });
        assert_eq!(calls.counts(), [1], "backend {name}");
        assert!(!se.is_active(), "backend {name}");
    });
}

fn invalid_signal_numbers_are_refused() {
    each_backend(|name, ctx| {
        for signum in [0, -1, 65, 1000, libc::SIGKILL, libc::SIGSTOP] {
            match ctx.add_signal(signum, SignalFlags::EMPTY, |_, _, _| {}) {
                Err(e @ Error::InvalidSignal(n)) => {
                    assert_eq!(n, signum, "backend {name}");
                    assert_eq!(e.errno(), Some(libc::EINVAL), "backend {name}");
                }
                other => {
                    panic!("backend {name}: signal {signum}: expected InvalidSignal, got {other:?}")
                }
            }
        }
        assert!(!ctx.has_events(), "backend {name}");
        // glibc keeps signal 32 for its threads: sigaction refuses, and the
        // failed add leaves nothing behind.
        #[cfg(target_env = "gnu")]
        {
            match ctx.add_signal(32, SignalFlags::EMPTY, |_, _, _| {}) {
                Err(Error::Io(e)) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "backend {name}")
                }
                other => panic!("backend {name}: signal 32: expected Io(EINVAL), got {other:?}"),
            }
            assert!(!ctx.has_events(), "backend {name}");
        }
        // The highest real-time signal is fine.
        let rtmax = libc::SIGRTMAX();
        let calls = Calls::default();
        let se = add(&ctx, rtmax, SignalFlags::EMPTY, &calls);
        polling(&ctx);
        raise(rtmax);
        ctx.loop_once().unwrap();
        assert_eq!(calls.counts(), [1], "backend {name}");
        drop(se);
    });
}

fn sa_flags(signum: i32) -> i32 {
    // SAFETY: as in `disposition`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(signum, std::ptr::null(), &mut old), 0);
        old.sa_flags
    }
}

fn restart_flag_of_the_first_event_decides() {
    each_backend(|name, ctx| {
        let calls = Calls::default();
        let first = add(&ctx, SIGUSR2, SignalFlags::RESTART, &calls);
        assert_ne!(sa_flags(SIGUSR2) & libc::SA_RESTART, 0, "backend {name}");
        let second = add(&ctx, SIGUSR2, SignalFlags::EMPTY, &calls);
        assert_ne!(sa_flags(SIGUSR2) & libc::SA_RESTART, 0, "backend {name}");
        drop((first, second));
        let plain = add(&ctx, SIGUSR2, SignalFlags::EMPTY, &calls);
        assert_eq!(sa_flags(SIGUSR2) & libc::SA_RESTART, 0, "backend {name}");
        assert_eq!(
            SignalFlags::from_sa_flags(libc::SA_RESTART | libc::SA_SIGINFO),
            SignalFlags::RESTART | SignalFlags::SIGINFO
        );
        drop(plain);
    });
}

// ---------------------------------------------------------------------
// Re-entrancy

fn handler_drops_its_own_signal_event() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let own: Slot<SignalEvent> = slot();
        let calls = Counter::new();
        let (guard, freed) = util::drop_flag();
        let (o, c) = (own.clone(), calls.clone());
        *own.borrow_mut() = Some(
            ctx.add_signal(SIGUSR1, SignalFlags::SIGINFO, move |_, se, _| {
                let _ = &guard;
                c.inc();
                drop(o.borrow_mut().take());
                assert!(!se.is_active());
            })
            .unwrap(),
        );
        // Two deliveries: SIGINFO would call it twice, but it is gone
        // after the first call.
        raise(SIGUSR1);
        raise(SIGUSR1);
        run_until_idle(name, &ctx, 10);
        assert_eq!(calls.get(), 1, "backend {name}");
        assert!(freed.get(), "backend {name}");
        assert_eq!(disposition(SIGUSR1), libc::SIG_DFL, "backend {name}");
        assert!(!ctx.has_events(), "backend {name}");
    });
}

fn handler_drops_another_pending_signal_event() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let log = Log::new();
        // Same signal: events run in the order added.
        let second: Slot<SignalEvent> = slot();
        let (l, s) = (log.clone(), second.clone());
        let _first = ctx
            .add_signal(SIGUSR1, SignalFlags::EMPTY, move |_, _, _| {
                l.push("first");
                drop(s.borrow_mut().take());
            })
            .unwrap();
        let l = log.clone();
        *second.borrow_mut() = Some(
            ctx.add_signal(SIGUSR1, SignalFlags::EMPTY, move |_, _, _| l.push("second"))
                .unwrap(),
        );
        // Another signal: handled after SIGUSR1 (ascending numbers).
        let usr2: Slot<SignalEvent> = slot();
        let u = usr2.clone();
        let l = log.clone();
        let _dropper = ctx
            .add_signal(SIGUSR1, SignalFlags::EMPTY, move |_, _, _| {
                l.push("dropper");
                drop(u.borrow_mut().take());
            })
            .unwrap();
        let l = log.clone();
        *usr2.borrow_mut() = Some(
            ctx.add_signal(SIGUSR2, SignalFlags::EMPTY, move |_, _, _| l.push("usr2"))
                .unwrap(),
        );
        raise(SIGUSR2);
        raise(SIGUSR1);
        run_until_idle(name, &ctx, 10);
        assert_eq!(log.get(), ["first", "dropper"], "backend {name}");
    });
}

fn signal_handler_adds_events_of_every_kind() {
    each_backend(|name, ctx| {
        let log = Log::new();
        let keep: Rc<RefCell<Vec<Box<dyn Any>>>> = Rc::default();
        let (_w, r) = util::readable_pair(1);
        let r = Rc::new(r);
        let (l, k, r2) = (log.clone(), keep.clone(), r.clone());
        let se = ctx
            .add_signal(SIGUSR1, SignalFlags::RESETHAND, move |ctx, _, _| {
                l.push("signal");
                let mut keep = k.borrow_mut();
                let l2 = l.clone();
                keep.push(Box::new(
                    ctx.schedule_immediate(move |_, _| l2.push("immediate")),
                ));
                let l2 = l.clone();
                keep.push(Box::new(
                    ctx.add_timer(Deadline::Asap, move |_, _, _| l2.push("timer")),
                ));
                let l2 = l.clone();
                keep.push(Box::new(
                    ctx.add_fd(&*r2, FdFlags::READ, move |_, fde, _| {
                        l2.push("fd");
                        fde.set_flags(FdFlags::EMPTY).unwrap();
                    })
                    .unwrap(),
                ));
                let l2 = l.clone();
                keep.push(Box::new(
                    ctx.add_signal(SIGUSR2, SignalFlags::RESETHAND, move |_, _, _| {
                        l2.push("signal2")
                    })
                    .unwrap(),
                ));
                raise(SIGUSR2);
            })
            .unwrap();
        raise(SIGUSR1);
        loop_wait_bounded(name, &ctx, 10);
        assert_eq!(
            log.get(),
            ["signal", "signal2", "immediate", "timer", "fd"],
            "backend {name}"
        );
        drop(se);
    });
}

fn handlers_add_signal_events() {
    for from in util::KINDS {
        each_backend(|name, ctx| {
            polling(&ctx);
            let calls = Calls::default();
            let keep: Slot<SignalEvent> = slot();
            let (c, k) = (calls.clone(), keep.clone());
            let handler = move |ctx: &Context| {
                *k.borrow_mut() = Some(add(ctx, SIGUSR2, SignalFlags::EMPTY, &c));
                raise(SIGUSR2);
            };
            let _parent = util::once_from(&ctx, from, handler);
            assert_eq!(
                run_until_idle(name, &ctx, 10),
                2,
                "backend {name}, from {from}"
            );
            assert_eq!(calls.counts(), [1], "backend {name}, from {from}");
        });
    }
}

fn signal_handler_drops_the_last_user_handle_of_the_context() {
    for name in util::backends() {
        let holder: Slot<Context> = slot();
        *holder.borrow_mut() = Some(util::context(name));
        let weak = holder.borrow().as_ref().unwrap().downgrade();
        let log = Log::new();
        let (h, l) = (holder.clone(), log.clone());
        let se = holder
            .borrow()
            .as_ref()
            .unwrap()
            .add_signal(SIGUSR1, SignalFlags::EMPTY, move |ctx, se, _| {
                l.push("start");
                drop(h.borrow_mut().take());
                assert!(se.is_active());
                assert!(ctx.has_events());
                l.push("end");
            })
            .unwrap();
        raise(SIGUSR1);
        let running = holder.borrow().clone().unwrap();
        running.loop_once().unwrap();
        assert_eq!(log.get(), ["start", "end"], "backend {name}");
        drop(running);
        assert!(weak.upgrade().is_none(), "backend {name}");
        assert!(!se.is_active(), "backend {name}");
        assert!(se.context().is_none(), "backend {name}");
        assert_eq!(disposition(SIGUSR1), libc::SIG_DFL, "backend {name}");
        drop(se);
    }
}

fn nested_loop_once_from_a_signal_handler_is_refused() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let results = Rc::new(RefCell::new(Vec::new()));
        let r = results.clone();
        let _se = ctx
            .add_signal(SIGUSR1, SignalFlags::EMPTY, move |ctx, _, _| {
                r.borrow_mut().push(ctx.loop_once());
            })
            .unwrap();
        raise(SIGUSR1);
        ctx.loop_once().unwrap();
        let results = results.borrow();
        assert_eq!(results.len(), 1, "backend {name}");
        assert!(
            matches!(results[0], Err(Error::Nested { .. })),
            "backend {name}: {:?}",
            results[0]
        );
        assert_eq!(ctx.nesting_level(), 0, "backend {name}");
    });
}

// ---------------------------------------------------------------------
// Panics

fn loop_once_panics(name: &str, ctx: &Context) {
    let result = catch_unwind(AssertUnwindSafe(|| ctx.loop_once()));
    assert!(
        result.is_err(),
        "backend {name}: the handler's panic propagates"
    );
    assert_eq!(ctx.nesting_level(), 0, "backend {name}");
}

fn signal_handler_panic_propagates_and_the_event_stays() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let calls = Counter::new();
        let c = calls.clone();
        let se = ctx
            .add_signal(SIGUSR1, SignalFlags::EMPTY, move |_, _, _| {
                c.inc();
                if c.get() == 1 {
                    panic!("signal handler");
                }
            })
            .unwrap();
        raise(SIGUSR1);
        loop_once_panics(name, &ctx);
        assert!(se.is_active(), "backend {name}");
        util::assert_idle(name, &ctx);
        raise(SIGUSR1);
        assert_eq!(run_until_idle(name, &ctx, 10), 1, "backend {name}");
        assert_eq!(calls.get(), 2, "backend {name}");
    });
}

/// "The next loop_once works as if the handler had returned": the handlers
/// that would have run after the one that panicked still get their calls.
fn signal_handler_panic_does_not_lose_other_handlers_deliveries() {
    each_backend(|name, ctx| {
        polling(&ctx);
        let _bad = ctx
            .add_signal(SIGUSR1, SignalFlags::EMPTY, |_, _, _| {
                panic!("first handler")
            })
            .unwrap();
        let (after, other_signal, info) = (Calls::default(), Calls::default(), Calls::default());
        let _after = add(&ctx, SIGUSR1, SignalFlags::EMPTY, &after);
        let _info = add(&ctx, SIGUSR1, SignalFlags::SIGINFO, &info);
        let _other = add(&ctx, SIGUSR2, SignalFlags::EMPTY, &other_signal);
        raise(SIGUSR1);
        raise(SIGUSR2);
        loop_once_panics(name, &ctx);
        drop(_bad);
        run_until_idle(name, &ctx, 10);
        assert_eq!(after.counts(), [1], "backend {name}");
        assert_eq!(info.counts(), [1], "backend {name}");
        assert_eq!(other_signal.counts(), [1], "backend {name}");
    });
}
