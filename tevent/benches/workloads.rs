//! W1–W4 of `/work/shared/anchors/workloads.md` on this crate, structured
//! exactly like the C anchor `anchors/tevent-c/bench_tevent.c` so that the two
//! can be compared line by line (same N, same generator, same timed regions,
//! same output format).
//!
//! Usage: `workloads [WORKLOAD [N]]` (also through `cargo bench -p tevent
//! --bench workloads -- W1 100000`; cargo's own `--bench` flag is ignored).
//!
//! - `WORKLOAD` is one of `W1`, `W2`, `W3-1000`, `W3-10000`, `W3-100000`,
//!   `W4`; without it every workload runs.
//! - `N` overrides the op count, except for W3 (its N is in its name).
//! - The backend is chosen with `TEVENT_BACKEND=NAME` or `--backend NAME`
//!   (`epoll`, `polling`, `poll`); the default is the crate's default.
//!
//! Output: a `# backend: ...` header, then per workload the C anchor's line
//! `ID <ns> ns/op (<N> ops)` followed by `# allocs/op ID <x> (...)`, the
//! heap allocations made inside the timed region (counted by a wrapper
//! around the system allocator).
//!
//! Each workload runs in an `#[inline(never)] fn workload_wN`, so that
//! `valgrind --tool=callgrind --toggle-collect='*workload_w1*' BENCH W1 100000`
//! counts what the C anchor's `--toggle-collect=w1` counts. Handlers are
//! free functions (not closures defined inside `workload_wN`): a nested
//! symbol whose name matched the pattern would toggle collection off.

use std::alloc::{GlobalAlloc, Layout, System};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tevent::{Context, FdEvent, FdFlags, Immediate, Queue, Req, ReqError, Timer};

// ---------------------------------------------------------------------------
// Counting allocator

/// The system allocator, counting every allocation (`alloc`,
/// `alloc_zeroed` and `realloc` each count as one) and the bytes requested.
struct CountingAlloc;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to `System`.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Relaxed);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Relaxed);
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(new_size as u64, Relaxed);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// (allocations, bytes) so far.
#[derive(Clone, Copy)]
struct AllocCount(u64, u64);

fn alloc_count() -> AllocCount {
    AllocCount(ALLOCS.load(Relaxed), ALLOC_BYTES.load(Relaxed))
}

impl std::ops::Sub for AllocCount {
    type Output = AllocCount;
    fn sub(self, rhs: AllocCount) -> AllocCount {
        AllocCount(self.0 - rhs.0, self.1 - rhs.1)
    }
}

// ---------------------------------------------------------------------------
// Helpers shared with the C anchor's common.h

fn die(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::exit(1);
}

/// Marsaglia xorshift64 (13, 7, 17); W3 seeds it with 42.
fn xorshift64(s: &mut u64) -> u64 {
    let mut x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    x
}

/// The C anchor's `report`, plus the allocation line.
fn report(id: &str, elapsed: Duration, ops: i64, allocs: AllocCount) {
    let ns = elapsed.as_nanos() as f64;
    println!("{id} {:.1} ns/op ({ops} ops)", ns / ops as f64);
    println!(
        "# allocs/op {id} {:.4} ({} allocations, {} bytes in the timed region)",
        allocs.0 as f64 / ops as f64,
        allocs.0,
        allocs.1
    );
}

fn read1(fd: RawFd) -> u8 {
    let mut c = 0u8;
    // SAFETY: reading one byte into a local.
    let r = unsafe { libc::read(fd, (&mut c as *mut u8).cast(), 1) };
    if r != 1 {
        die(&format!("read: {}", std::io::Error::last_os_error()));
    }
    c
}

fn write1(fd: RawFd, c: u8) {
    // SAFETY: writing one byte from a local.
    let r = unsafe { libc::write(fd, (&c as *const u8).cast(), 1) };
    if r != 1 {
        die(&format!("write: {}", std::io::Error::last_os_error()));
    }
}

// The C anchor's globals `done` and `target` (relaxed loads and stores
// compile to plain moves).
static DONE: AtomicI64 = AtomicI64::new(0);
static TARGET: AtomicI64 = AtomicI64::new(0);

/// `++done`, returning the new value.
fn bump_done() -> i64 {
    let d = DONE.load(Relaxed) + 1;
    DONE.store(d, Relaxed);
    d
}

fn start(n: i64) {
    DONE.store(0, Relaxed);
    TARGET.store(n, Relaxed);
}

fn loop_until_done(ctx: &Context) {
    while DONE.load(Relaxed) < TARGET.load(Relaxed) {
        if let Err(e) = ctx.loop_once() {
            die(&format!("loop_once failed: {e}"));
        }
    }
}

// ---------------------------------------------------------------------------
// W1: one immediate that re-schedules itself.

fn w1_handler(_ctx: &Context, im: &Immediate) {
    if bump_done() < TARGET.load(Relaxed) {
        // The allocation-free path: the handler set by `schedule` is kept.
        im.reschedule();
    }
}

#[inline(never)]
fn workload_w1(ctx: &Context, id: &str, n: i64) {
    let im = ctx.create_immediate();
    start(n);
    let a0 = alloc_count();
    let t0 = Instant::now();
    // A fn item is zero-sized: boxing it as the handler allocates nothing.
    im.schedule(w1_handler);
    loop_until_done(ctx);
    let elapsed = t0.elapsed();
    report(id, elapsed, n, alloc_count() - a0);
    drop(im);
}

// ---------------------------------------------------------------------------
// W2: n timers due "now", then run until all fired.

fn w2_handler(_ctx: &Context, _te: &Timer, _now: Instant) {
    bump_done();
}

/// The handles are kept in a Vec allocated before the timed region (rather
/// than detached); it is returned so that the handles (all fired, so their
/// drops only find their slots gone) are dropped by the caller, outside
/// both the timed region and the callgrind toggle. C tevent frees a timer
/// when it fires, and so does this crate.
#[inline(never)]
fn workload_w2(ctx: &Context, id: &str, n: i64) -> Vec<Timer> {
    let mut timers = Vec::with_capacity(n as usize);
    start(n);
    let a0 = alloc_count();
    let t0 = Instant::now();
    for _ in 0..n {
        timers.push(ctx.add_timer(Instant::now(), w2_handler));
    }
    loop_until_done(ctx);
    let elapsed = t0.elapsed();
    report(id, elapsed, n, alloc_count() - a0);
    timers
}

// ---------------------------------------------------------------------------
// W3: n timers at random deadlines in [now+10s, now+1000s], dropped in
// shuffled order.

fn w3_handler(_ctx: &Context, _te: &Timer, _now: Instant) {
    die("W3 timer fired");
}

#[inline(never)]
fn workload_w3(ctx: &Context, id: &str, n: i64) {
    let n = n as usize;
    let now = Instant::now();
    let mut when = Vec::with_capacity(n);
    let mut order = Vec::with_capacity(n);
    let mut s: u64 = 42;
    for i in 0..n {
        let us = 10_000_000 + xorshift64(&mut s) % 990_000_001;
        when.push(now + Duration::from_micros(us));
        order.push(i);
    }
    for i in (1..n).rev() {
        // Fisher-Yates, same generator stream.
        let j = (xorshift64(&mut s) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut te: Vec<Option<Timer>> = Vec::with_capacity(n);
    let a0 = alloc_count();
    let t0 = Instant::now();
    for &w in &when {
        te.push(Some(ctx.add_timer(w, w3_handler)));
    }
    for &i in &order {
        drop(te[i].take());
    }
    let elapsed = t0.elapsed();
    report(id, elapsed, n as i64, alloc_count() - a0);
}

// ---------------------------------------------------------------------------
// W4: 1-byte ping-pong over a socketpair, one READ fd event per end.

fn w4_handler(fds: [RawFd; 2], end: usize) -> impl FnMut(&Context, &FdEvent, FdFlags) {
    move |_ctx, _fde, _flags| {
        let c = read1(fds[end]);
        if end == 1 || bump_done() < TARGET.load(Relaxed) {
            write1(fds[end], c);
        }
    }
}

/// Outside `workload_w4` so no closure is named `workload_w4::{closure}`.
fn w4_add_fd(ctx: &Context, fds: [RawFd; 2], end: usize) -> FdEvent {
    match ctx.add_fd_raw(fds[end], FdFlags::READ, w4_handler(fds, end)) {
        Ok(fde) => fde,
        Err(e) => die(&format!("add_fd: {e}")),
    }
}

#[inline(never)]
fn workload_w4(ctx: &Context, id: &str, n: i64) {
    let mut fds: [RawFd; 2] = [-1; 2];
    // SAFETY: socketpair writes two fds into the array.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        die("socketpair");
    }
    let fde = [w4_add_fd(ctx, fds, 0), w4_add_fd(ctx, fds, 1)];
    start(n);
    let a0 = alloc_count();
    let t0 = Instant::now();
    write1(fds[0], b'x');
    loop_until_done(ctx);
    let elapsed = t0.elapsed();
    report(id, elapsed, n, alloc_count() - a0);
    drop(fde);
    // SAFETY: the fds are ours and their events are gone.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
}

// ---------------------------------------------------------------------------
// W5: the request life cycle, as the C anchor's w5_send/w5_recv/w5_done.

struct W5State {
    value: i64,
}

/// `w5_send`: create, mark done at once, post (completion from the loop).
fn w5_send(ctx: &Context, value: i64) -> Req<W5State, ()> {
    let req = Req::new(ctx, W5State { value });
    req.done(());
    req.post()
}

/// `w5_recv`: is_error, read the state, received.
fn w5_recv(req: &Req<W5State, ()>) -> Result<i64, ReqError> {
    if let Some(err) = req.is_error() {
        req.received();
        return Err(err);
    }
    let value = req.state().value;
    req.received();
    Ok(value)
}

thread_local! {
    /// The request in flight (C: the caller's pointer it frees in w5_done).
    static W5_REQ: std::cell::RefCell<Option<Req<W5State, ()>>> = const { std::cell::RefCell::new(None) };
}

fn w5_done(req: &Req<W5State, ()>) {
    let done = DONE.load(Relaxed);
    match w5_recv(req) {
        Ok(v) if v == done => {}
        _ => die("W5 bad result"),
    }
    // talloc_free(req): drop the caller's handle (the callback's own handle
    // keeps the request alive until it returns).
    let old = W5_REQ.with(|r| r.borrow_mut().take());
    drop(old);
    if bump_done() < TARGET.load(Relaxed) {
        if let Some(ctx) = req.context() {
            w5_start(&ctx);
        }
    }
}

fn w5_start(ctx: &Context) {
    let req = w5_send(ctx, DONE.load(Relaxed));
    req.set_callback(w5_done);
    W5_REQ.with(|r| *r.borrow_mut() = Some(req));
}

#[inline(never)]
fn workload_w5(ctx: &Context, id: &str, n: i64) {
    start(n);
    let a0 = alloc_count();
    let t0 = Instant::now();
    w5_start(ctx);
    loop_until_done(ctx);
    let elapsed = t0.elapsed();
    report(id, elapsed, n, alloc_count() - a0);
}

// ---------------------------------------------------------------------------
// W6: one queue, n requests whose trigger finishes them at once.

fn w6_trigger(req: &Req<i64, ()>) {
    req.done(());
}

thread_local! {
    /// The requests (C: allocated on the context; freed in the callback).
    static W6_REQS: std::cell::RefCell<Vec<Option<Req<i64, ()>>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn w6_done(req: &Req<i64, ()>) {
    bump_done();
    let index = *req.state() as usize;
    // talloc_free(req): dropping it removes its queue entry, which lets the
    // next request's trigger run.
    let old = W6_REQS.with(|r| r.borrow_mut()[index].take());
    drop(old);
}

#[inline(never)]
fn workload_w6(ctx: &Context, id: &str, n: i64) {
    let queue = Queue::new(ctx, "w6");
    W6_REQS.with(|r| {
        let mut r = r.borrow_mut();
        r.clear();
        r.reserve(n as usize);
    });
    start(n);
    let a0 = alloc_count();
    let t0 = Instant::now();
    for i in 0..n {
        let req = Req::new(ctx, i);
        if queue.add(&req, w6_trigger).is_err() {
            die("tevent_queue_add");
        }
        req.set_callback(w6_done);
        W6_REQS.with(|r| r.borrow_mut().push(Some(req)));
    }
    loop_until_done(ctx);
    let elapsed = t0.elapsed();
    report(id, elapsed, n, alloc_count() - a0);
    drop(queue);
}

// ---------------------------------------------------------------------------
// W8: jobs from another thread (one sender, the loop runs them), beside a
// baseline of std::sync::mpsc + polling::Poller::notify in the same run.

#[inline(never)]
fn workload_w8(ctx: &Context, id: &str, n: i64) {
    let handle = ctx.thread_handle();
    start(n);
    let a0 = alloc_count();
    let t0 = Instant::now();
    let sender = std::thread::spawn(move || {
        for _ in 0..n {
            if handle
                .schedule(|_ctx| {
                    bump_done();
                })
                .is_err()
            {
                die("W8: context gone");
            }
        }
    });
    loop_until_done(ctx);
    let elapsed = t0.elapsed();
    sender.join().unwrap_or_else(|_| die("W8 sender panicked"));
    report(id, elapsed, n, alloc_count() - a0);
}

/// The baseline: boxed jobs through an mpsc channel, the receiver woken by
/// `Poller::notify` and draining the channel after each wait.
#[inline(never)]
fn workload_w8_baseline(id: &str, n: i64) {
    let poller =
        std::sync::Arc::new(polling::Poller::new().unwrap_or_else(|e| die(&e.to_string())));
    let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
    start(n);
    let a0 = alloc_count();
    let t0 = Instant::now();
    let p = poller.clone();
    let sender = std::thread::spawn(move || {
        for _ in 0..n {
            if tx
                .send(Box::new(|| {
                    bump_done();
                }))
                .is_err()
            {
                die("W8 baseline: receiver gone");
            }
            let _ = p.notify();
        }
    });
    let mut events = polling::Events::new();
    while DONE.load(Relaxed) < TARGET.load(Relaxed) {
        events.clear();
        let _ = poller.wait(&mut events, None);
        while let Ok(job) = rx.try_recv() {
            job();
        }
    }
    let elapsed = t0.elapsed();
    sender
        .join()
        .unwrap_or_else(|_| die("W8 baseline sender panicked"));
    report(id, elapsed, n, alloc_count() - a0);
}

// ---------------------------------------------------------------------------
// Driver

/// The workloads in the C anchor's order, with their default op counts.
const WORKLOADS: &[(&str, i64)] = &[
    ("W1", 1_000_000),
    ("W2", 100_000),
    ("W3-1000", 1_000),
    ("W3-10000", 10_000),
    ("W3-100000", 100_000),
    ("W4", 200_000),
    ("W5", 1_000_000),
    ("W6", 100_000),
    ("W8", 1_000_000),
    ("W8-baseline", 1_000_000),
];

fn run_workload(ctx: &Context, id: &str, n: i64) {
    match id {
        "W1" => workload_w1(ctx, id, n),
        "W2" => drop(workload_w2(ctx, id, n)),
        "W3-1000" | "W3-10000" | "W3-100000" => workload_w3(ctx, id, n),
        "W4" => workload_w4(ctx, id, n),
        "W5" => workload_w5(ctx, id, n),
        "W6" => workload_w6(ctx, id, n),
        "W8" => workload_w8(ctx, id, n),
        "W8-baseline" => workload_w8_baseline(id, n),
        _ => unreachable!("unknown workload {id}"),
    }
}

/// Whether an `eventpoll` fd is open (the C anchor prints the same proof).
fn have_eventpoll_fd() -> bool {
    (0..256).any(|fd| {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|l| l.to_string_lossy().contains("eventpoll"))
            .unwrap_or(false)
    })
}

fn main() {
    let mut positional = Vec::new();
    let mut backend = std::env::var("TEVENT_BACKEND").ok();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--backend" {
            backend = Some(args.next().unwrap_or_else(|| die("--backend needs a name")));
        } else if let Some(name) = arg.strip_prefix("--backend=") {
            backend = Some(name.to_string());
        } else if arg.starts_with('-') {
            // cargo bench's own flags (--bench, ...)
        } else {
            positional.push(arg);
        }
    }
    let only = positional.first().map(String::as_str);
    let ops: i64 = positional.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    if let Some(id) = only {
        if !WORKLOADS.iter().any(|&(w, _)| w == id) {
            let known: Vec<&str> = WORKLOADS.iter().map(|&(w, _)| w).collect();
            eprintln!("unknown workload {id}; known: {}", known.join(" "));
            std::process::exit(2);
        }
    }

    let name = backend
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| tevent::backend::default_name().to_string());
    let ctx = Context::with_backend(&name)
        .unwrap_or_else(|e| die(&format!("backend {name} not available: {e}")));
    println!(
        "# backend: {} (tevent Rust port, Context::with_backend; eventpoll fd {}); available: {}",
        ctx.backend_name(),
        if have_eventpoll_fd() {
            "present"
        } else {
            "MISSING"
        },
        tevent::backend::names().join(" ")
    );

    for &(id, n) in WORKLOADS {
        if only.is_some_and(|o| o != id) {
            continue;
        }
        let is_w3 = id.starts_with("W3-");
        run_workload(&ctx, id, if ops > 0 && !is_w3 { ops } else { n });
    }
}
