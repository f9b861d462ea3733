//! Helpers shared by the behaviour tests (each `tests/*.rs` file includes
//! this module, and not every file uses every helper).
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use tevent::{Context, Error};

/// The names of every backend, default first.
pub fn backends() -> impl Iterator<Item = &'static str> {
    tevent::backend::names().iter().copied()
}

/// A fresh context on backend `name`.
pub fn context(name: &str) -> Context {
    let ctx = Context::with_backend(name)
        .unwrap_or_else(|e| panic!("backend {name}: cannot create a context: {e}"));
    assert_eq!(ctx.backend_name(), name, "backend {name}");
    ctx
}

/// Run `test` once per backend, each time with a fresh context.
pub fn each_backend(mut test: impl FnMut(&'static str, Context)) {
    for name in backends() {
        test(name, context(name));
    }
}

/// Run `test` once per backend, each time with a fresh context in polling
/// mode (wait timeout zero: `loop_once` never blocks and reports
/// `Error::WouldBlock` when it found nothing to do).
pub fn each_backend_polling(mut test: impl FnMut(&'static str, Context)) {
    for name in backends() {
        let ctx = context(name);
        polling(&ctx);
        test(name, ctx);
    }
}

/// One iteration that must succeed.
#[track_caller]
pub fn once(name: &str, ctx: &Context) {
    ctx.loop_once()
        .unwrap_or_else(|e| panic!("backend {name}: loop_once: {e}"));
}

/// Nothing is left: no events, `loop_wait` returns at once, and an
/// iteration (in polling mode) finds nothing to do.
#[track_caller]
pub fn assert_no_events(name: &str, ctx: &Context) {
    assert!(!ctx.has_events(), "backend {name}: events left: {ctx:?}");
    ctx.loop_wait()
        .unwrap_or_else(|e| panic!("backend {name}: loop_wait: {e}"));
    assert_idle(name, ctx);
}

/// Many iterations (in polling mode), none of which may find anything to do.
#[track_caller]
pub fn assert_stays_idle(name: &str, ctx: &Context) {
    for i in 0..20 {
        let r = ctx.loop_once();
        assert!(
            matches!(r, Err(Error::WouldBlock)),
            "backend {name}: iteration {i} ran something ({r:?})"
        );
    }
}

/// An ordered record of what the handlers did.
#[derive(Clone, Default)]
pub struct Log(Rc<RefCell<Vec<String>>>);

impl Log {
    pub fn new() -> Log {
        Log::default()
    }

    pub fn push(&self, entry: impl Into<String>) {
        self.0.borrow_mut().push(entry.into());
    }

    /// Everything logged so far (the log keeps it).
    pub fn get(&self) -> Vec<String> {
        self.0.borrow().clone()
    }

    /// Everything logged so far, leaving the log empty.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.borrow_mut())
    }

    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }
}

/// A shared call counter.
#[derive(Clone, Default)]
pub struct Counter(Rc<Cell<usize>>);

impl Counter {
    pub fn new() -> Counter {
        Counter::default()
    }

    pub fn inc(&self) {
        self.0.set(self.0.get() + 1);
    }

    pub fn get(&self) -> usize {
        self.0.get()
    }
}

/// Sets its flag when dropped: moved into a handler, it tells when the
/// context freed that handler.
pub struct DropGuard(Rc<Cell<bool>>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// A guard to move into a handler, and the flag it sets when dropped.
pub fn drop_flag() -> (DropGuard, Rc<Cell<bool>>) {
    let flag = Rc::new(Cell::new(false));
    (DropGuard(flag.clone()), flag)
}

/// A shared slot for a handle that a handler may take and drop.
pub type Slot<T> = Rc<RefCell<Option<T>>>;

pub fn slot<T>() -> Slot<T> {
    Rc::new(RefCell::new(None))
}

/// A connected, non-blocking Unix stream pair.
pub fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).expect("nonblocking");
    b.set_nonblocking(true).expect("nonblocking");
    (a, b)
}

/// A pair whose second end already has `bytes` bytes to read.
pub fn readable_pair(bytes: usize) -> (UnixStream, UnixStream) {
    let (mut w, r) = pair();
    w.write_all(&vec![b'x'; bytes]).expect("write");
    (w, r)
}

/// Fill the send buffer of `s` until it would block; returns the bytes written.
pub fn fill(s: &mut UnixStream) -> usize {
    let buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match s.write(&buf) {
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return total,
            Err(e) => panic!("fill: {e}"),
        }
    }
}

/// Whether `fd` is an open file descriptor (`fcntl(F_GETFD)` is not `EBADF`).
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor flags of any fd number.
    let r = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if r != -1 {
        return true;
    }
    let err = io::Error::last_os_error();
    assert_eq!(err.raw_os_error(), Some(libc::EBADF), "fcntl({fd}): {err}");
    false
}

static NEXT_HIGH_FD: AtomicI32 = AtomicI32::new(4096);

/// Move `fd` to a number of its own far above the ones the rest of the
/// process gets (the kernel hands out the lowest free number), so that
/// checking it is closed cannot race with another test thread reusing it.
pub fn high_fd(fd: impl Into<OwnedFd>) -> OwnedFd {
    let fd: OwnedFd = fd.into();
    let min = NEXT_HIGH_FD.fetch_add(1, Ordering::SeqCst);
    // SAFETY: F_DUPFD_CLOEXEC creates a new fd that we then own.
    let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    assert!(high >= min, "F_DUPFD: {}", io::Error::last_os_error());
    // SAFETY: `high` was just created and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(high) }
}

/// Put `ctx` in polling mode (wait timeout zero): `loop_once` never blocks.
pub fn polling(ctx: &Context) {
    ctx.set_wait_timeout(Duration::ZERO);
}

/// In polling mode: run `loop_once` until it reports `WouldBlock`; returns
/// how many iterations ran something. Panics after `max` iterations.
pub fn run_until_idle(name: &str, ctx: &Context, max: usize) -> usize {
    for n in 0..=max {
        match ctx.loop_once() {
            Ok(()) => {}
            Err(Error::WouldBlock) => return n,
            Err(e) => panic!("backend {name}: loop_once: {e}"),
        }
    }
    panic!("backend {name}: still busy after {max} iterations");
}

/// Assert that `loop_once` in polling mode finds nothing to do.
#[track_caller]
pub fn assert_idle(name: &str, ctx: &Context) {
    let r = ctx.loop_once();
    assert!(
        matches!(r, Err(Error::WouldBlock)),
        "backend {name}: expected WouldBlock, got {r:?}"
    );
}

/// Run `loop_wait`, but fail instead of hanging: at most `max` iterations.
#[track_caller]
pub fn loop_wait_bounded(name: &str, ctx: &Context, max: usize) -> usize {
    for n in 0..max {
        if !ctx.has_events() {
            // And the real thing agrees at once.
            ctx.loop_wait()
                .unwrap_or_else(|e| panic!("backend {name}: loop_wait: {e}"));
            return n;
        }
        ctx.loop_once()
            .unwrap_or_else(|e| panic!("backend {name}: loop_once: {e}"));
    }
    panic!("backend {name}: events left after {max} iterations: {ctx:?}");
}

/// A context whose timer epoch lies at least `span` in the past, and the
/// instant right after its creation: every `base + d` with `d < span` is a
/// deadline that is already due and lies after the context was created.
pub fn context_with_past(name: &str, span: Duration) -> (Context, Instant) {
    let ctx = context(name);
    let base = Instant::now();
    std::thread::sleep(span);
    (ctx, base)
}

/// A small deterministic pseudo-random generator (xorshift64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The kinds of events whose handlers the re-entrancy tests act from.
pub const KINDS: [&str; 3] = ["immediate", "timer", "fd"];

/// An event of `kind` (see [`KINDS`]) that runs `handler` once, as soon as
/// it can: an immediate, an `Asap` timer, or an fd event on a readable
/// socket of its own that disarms itself before calling `handler`.
/// Dropping the returned box cancels it.
pub fn once_from(
    ctx: &Context,
    kind: &str,
    mut handler: impl FnMut(&Context) + 'static,
) -> Box<dyn std::any::Any> {
    match kind {
        "immediate" => Box::new(ctx.schedule_immediate(move |ctx, _| handler(ctx))),
        "timer" => Box::new(ctx.add_timer(tevent::Deadline::Asap, move |ctx, _, _| handler(ctx))),
        "fd" => {
            let (w, r) = readable_pair(1);
            let fde = ctx
                .add_fd(&r, tevent::FdFlags::READ, move |ctx, fde, _| {
                    fde.set_flags(tevent::FdFlags::EMPTY).unwrap();
                    handler(ctx)
                })
                .unwrap();
            // The event first, then the sockets.
            Box::new((fde, w, r))
        }
        other => panic!("no event kind {other:?}"),
    }
}
