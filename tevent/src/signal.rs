//! Signal events: Unix signals delivered as loop handlers.
//!
//! The process-wide part: one `sigaction` handler per signal number that
//! only bumps atomic counters, records `siginfo` in a ring, and wakes every
//! context that has signal events through its wakeup fd. Everything else
//! runs in loop context, never inside the OS signal handler.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::panic::Location;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use slotmap::SlotMap;

use crate::context::{Context, Inner};
use crate::trace::{EventKind, EventTracePoint};
use crate::Error;

/// Signal numbers handled: 1 to 64 (Linux's real-time signals included).
const NSIG: usize = 65;
/// How many `siginfo` records per signal are kept between two iterations
/// (tevent keeps 256 too). When more arrive, the oldest are lost and
/// reported as a count without `siginfo`.
pub const SIGINFO_QUEUE: usize = 256;
/// How many contexts can have signal events at the same time.
const MAX_WAKE_FDS: usize = 64;

/// Deliveries per signal since the process started.
static COUNTS: [AtomicU64; NSIG] = [const { AtomicU64::new(0) }; NSIG];
/// Bumped after every delivery: a context compares it with the value it saw
/// last, so an iteration without signals costs one load.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// The `siginfo` rings, allocated when a signal first gets a SIGINFO event
/// and never freed (the handler may read the pointer at any time).
static RINGS: [AtomicPtr<Ring>; NSIG] = [const { AtomicPtr::new(std::ptr::null_mut()) }; NSIG];
/// The wakeup fds of contexts with signal events (-1 = free slot).
static WAKE_FDS: [AtomicI32; MAX_WAKE_FDS] = [const { AtomicI32::new(-1) }; MAX_WAKE_FDS];
/// Handlers currently reading `WAKE_FDS`: a context waits for zero after
/// removing its fd and before closing it, so no handler writes to a closed
/// (and possibly reused) fd number.
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);

struct RingEntry {
    /// `index + 1` once the record at `index` is complete.
    seq: AtomicU64,
    pid: AtomicI32,
    uid: AtomicU32,
    code: AtomicI32,
    value: AtomicUsize,
}

struct Ring {
    write: AtomicU64,
    entries: [RingEntry; SIGINFO_QUEUE],
}

/// Per signal number: how many signal events (of all contexts) use it, and
/// the disposition to restore when the last one goes.
struct Installed {
    users: usize,
    old: Option<libc::sigaction>,
}

static INSTALLED: Mutex<[Installed; NSIG]> = Mutex::new(
    [const {
        Installed {
            users: 0,
            old: None,
        }
    }; NSIG],
);

extern "C" fn on_signal(signum: libc::c_int, info: *mut libc::siginfo_t, _uctx: *mut libc::c_void) {
    // SAFETY: errno is thread-local; reading and restoring it keeps the
    // interrupted code's errno intact.
    let saved_errno = unsafe { *libc::__errno_location() };
    let n = signum as usize;
    if n < NSIG {
        COUNTS[n].fetch_add(1, Ordering::SeqCst);
        let ring = RINGS[n].load(Ordering::Acquire);
        if !ring.is_null() && !info.is_null() {
            // SAFETY: rings are leaked once allocated, so the pointer stays
            // valid; `info` is the kernel's siginfo for this delivery.
            unsafe {
                let ring = &*ring;
                let index = ring.write.fetch_add(1, Ordering::SeqCst);
                let e = &ring.entries[(index % SIGINFO_QUEUE as u64) as usize];
                e.pid.store((*info).si_pid(), Ordering::Relaxed);
                e.uid.store((*info).si_uid(), Ordering::Relaxed);
                e.code.store((*info).si_code, Ordering::Relaxed);
                e.value
                    .store((*info).si_value().sival_ptr as usize, Ordering::Relaxed);
                e.seq.store(index + 1, Ordering::Release);
            }
        }
        GENERATION.fetch_add(1, Ordering::SeqCst);
        IN_HANDLER.fetch_add(1, Ordering::SeqCst);
        let one: u64 = 1;
        for slot in &WAKE_FDS {
            let fd = slot.load(Ordering::SeqCst);
            if fd >= 0 {
                // SAFETY: write(2) is async-signal-safe; the fd stays open
                // while IN_HANDLER is non-zero (see `unpublish_wake_fd`).
                unsafe {
                    libc::write(fd, &one as *const u64 as *const libc::c_void, 8);
                }
            }
        }
        IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
}

fn install(signum: i32, restart: bool) -> io::Result<()> {
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    let entry = &mut installed[signum as usize];
    if entry.users == 0 {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask"
        // value; the handler only uses async-signal-safe operations.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | if restart { libc::SA_RESTART } else { 0 };
            libc::sigemptyset(&mut action.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signum, &action, &mut old) != 0 {
                return Err(io::Error::last_os_error());
            }
            entry.old = Some(old);
        }
    }
    entry.users += 1;
    Ok(())
}

fn uninstall(signum: i32) {
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    let entry = &mut installed[signum as usize];
    entry.users -= 1;
    if entry.users == 0 {
        if let Some(old) = entry.old.take() {
            // SAFETY: restores the disposition saved by `install`.
            unsafe {
                libc::sigaction(signum, &old, std::ptr::null_mut());
            }
        }
    }
}

fn ensure_ring(signum: i32) {
    let slot = &RINGS[signum as usize];
    if !slot.load(Ordering::Acquire).is_null() {
        return;
    }
    let ring = Box::new(Ring {
        write: AtomicU64::new(0),
        entries: [const {
            RingEntry {
                seq: AtomicU64::new(0),
                pid: AtomicI32::new(0),
                uid: AtomicU32::new(0),
                code: AtomicI32::new(0),
                value: AtomicUsize::new(0),
            }
        }; SIGINFO_QUEUE],
    });
    let ptr = Box::into_raw(ring);
    if slot
        .compare_exchange(
            std::ptr::null_mut(),
            ptr,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // SAFETY: another thread published its ring first; ours was never
        // shared.
        drop(unsafe { Box::from_raw(ptr) });
    }
}

fn ring_write_index(signum: i32) -> u64 {
    let ring = RINGS[signum as usize].load(Ordering::Acquire);
    if ring.is_null() {
        0
    } else {
        // SAFETY: rings are never freed.
        unsafe { (*ring).write.load(Ordering::SeqCst) }
    }
}

pub(crate) fn publish_wake_fd(fd: RawFd) -> Result<(), Error> {
    for slot in &WAKE_FDS {
        if slot
            .compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return Ok(());
        }
    }
    Err(Error::Io(io::Error::from_raw_os_error(libc::ENOSPC)))
}

pub(crate) fn unpublish_wake_fd(fd: RawFd) {
    for slot in &WAKE_FDS {
        if slot
            .compare_exchange(fd, -1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            break;
        }
    }
    // A handler on another thread may have read the fd before it was
    // removed; wait until it is done with it before the caller closes it.
    while IN_HANDLER.load(Ordering::SeqCst) != 0 {
        std::hint::spin_loop();
    }
}

/// How a signal event is delivered (tevent's `sa_flags` of `tevent_add_signal`).
///
/// ```
/// use tevent::SignalFlags;
/// let flags = SignalFlags::SIGINFO | SignalFlags::RESTART;
/// assert!(flags.contains(SignalFlags::SIGINFO));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SignalFlags(u8);

impl SignalFlags {
    /// Coalesce: the handler is called once with the number of deliveries
    /// since its last call.
    pub const EMPTY: SignalFlags = SignalFlags(0);
    /// `SA_SIGINFO`: the handler is called once per delivery, with the
    /// sender's [`SigInfo`].
    pub const SIGINFO: SignalFlags = SignalFlags(1);
    /// `SA_RESETHAND`: one-shot. The event is removed after its first call
    /// (the process keeps handling the signal while other events want it;
    /// the kernel's own reset-to-default is not used, since it would kill the
    /// process on a second, racing delivery).
    pub const RESETHAND: SignalFlags = SignalFlags(2);
    /// `SA_RESTART`: system calls interrupted by the signal are restarted.
    /// As in tevent, the flag of the first event installed for a signal
    /// number decides.
    pub const RESTART: SignalFlags = SignalFlags(4);

    /// Flags from C `sa_flags` (`SA_SIGINFO`, `SA_RESETHAND`, `SA_RESTART`;
    /// other bits are ignored).
    pub fn from_sa_flags(sa_flags: i32) -> SignalFlags {
        let mut f = SignalFlags::EMPTY;
        if sa_flags & libc::SA_SIGINFO != 0 {
            f = f | SignalFlags::SIGINFO;
        }
        if sa_flags & libc::SA_RESETHAND != 0 {
            f = f | SignalFlags::RESETHAND;
        }
        if sa_flags & libc::SA_RESTART != 0 {
            f = f | SignalFlags::RESTART;
        }
        f
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: SignalFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for SignalFlags {
    type Output = SignalFlags;
    fn bitor(self, rhs: SignalFlags) -> SignalFlags {
        SignalFlags(self.0 | rhs.0)
    }
}

/// Who sent a signal (from the kernel's `siginfo_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigInfo {
    /// `si_pid`: the sending process.
    pub pid: i32,
    /// `si_uid`: the sender's real user id.
    pub uid: u32,
    /// `si_code`: why the signal was sent (`SI_USER`, `SI_QUEUE`, ...).
    pub code: i32,
    /// `si_value`: the value passed to `sigqueue(3)`, as an integer.
    pub value: usize,
}

/// What a signal handler is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalInfo {
    /// The signal number.
    pub signum: i32,
    /// Deliveries this call stands for: the coalesced count, or 1 in
    /// [`SignalFlags::SIGINFO`] mode (more, with `siginfo == None`, when
    /// over [`SIGINFO_QUEUE`] deliveries piled up and the oldest were lost).
    pub count: u64,
    /// The sender, in [`SignalFlags::SIGINFO`] mode.
    pub siginfo: Option<SigInfo>,
}

slotmap::new_key_type! {
    /// Identifies a signal event inside its context.
    pub(crate) struct SigKey;
}

pub(crate) type SignalFn = dyn FnMut(&Context, &SignalEvent, SignalInfo);

struct SigSlot {
    signum: i32,
    flags: SignalFlags,
    /// `COUNTS[signum]` when this event last looked.
    seen: u64,
    /// Next `siginfo` record to read.
    ring_pos: u64,
    order: u64,
    handler: Option<Box<SignalFn>>,
    created: &'static Location<'static>,
    tag: u64,
}

/// The signal events of one context.
#[derive(Default)]
pub(crate) struct SignalTable {
    slots: SlotMap<SigKey, SigSlot>,
    /// Handler calls collected but not made yet. They live here, not on
    /// the stack, so that a handler that panics does not lose the calls
    /// after it: the next iteration makes them.
    queued: std::collections::VecDeque<(SigKey, SignalInfo)>,
    last_generation: u64,
    next_order: u64,
    /// The context's wakeup fd is published to the signal handler.
    published: bool,
}

impl SignalTable {
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

/// A signal event (tevent's `tevent_signal`): a handler for a Unix signal,
/// called from the loop (never inside the OS signal handler).
///
/// Several events may handle the same signal, in one context or several;
/// each sees every delivery. The process's previous disposition of the
/// signal is restored when the last event for it is dropped. Signals run
/// before anything else in an iteration (see [`Context::loop_once`]).
///
/// Dropping the handle removes the event; [`SignalEvent::detach`] hands it to
/// the context.
///
/// # Example
///
/// ```no_run
/// use tevent::{Context, SignalFlags};
///
/// let ctx = Context::new()?;
/// let term = ctx.add_signal(libc::SIGTERM, SignalFlags::EMPTY, |_ctx, _se, info| {
///     println!("SIGTERM x{}", info.count);
/// })?;
/// ctx.loop_once()?;
/// # drop(term);
/// # Ok::<(), tevent::Error>(())
/// ```
pub struct SignalEvent {
    ctx: Weak<Inner>,
    key: SigKey,
    owned: bool,
}

impl SignalEvent {
    #[track_caller]
    pub(crate) fn add(
        inner: &Rc<Inner>,
        signum: i32,
        flags: SignalFlags,
        handler: Box<SignalFn>,
    ) -> Result<SignalEvent, Error> {
        if signum <= 0
            || signum as usize >= NSIG
            || signum == libc::SIGKILL
            || signum == libc::SIGSTOP
        {
            return Err(Error::InvalidSignal(signum));
        }
        let created = Location::caller();
        {
            let mut table = inner.signals.borrow_mut();
            if !table.published {
                publish_wake_fd(inner.wakeup_fd())?;
                table.published = true;
            }
        }
        if flags.contains(SignalFlags::SIGINFO) {
            ensure_ring(signum);
        }
        install(signum, flags.contains(SignalFlags::RESTART))?;
        let mut table = inner.signals.borrow_mut();
        let order = table.next_order;
        table.next_order += 1;
        let key = table.slots.insert(SigSlot {
            signum,
            flags,
            seen: COUNTS[signum as usize].load(Ordering::SeqCst),
            ring_pos: ring_write_index(signum),
            order,
            handler: Some(handler),
            created,
            tag: 0,
        });
        drop(table);
        log::trace!("signal event {key:?} for signal {signum} added at {created}");
        trace(inner, key, EventTracePoint::Attach);
        Ok(SignalEvent {
            ctx: Rc::downgrade(inner),
            key,
            owned: true,
        })
    }

    /// The signal number (0 once the event is gone).
    pub fn signum(&self) -> i32 {
        self.with_slot(|s| s.signum).unwrap_or(0)
    }

    /// Whether the event still exists (a [`SignalFlags::RESETHAND`] event is
    /// gone after its first call).
    pub fn is_active(&self) -> bool {
        self.with_slot(|_| ()).is_some()
    }

    /// Hand the event to the context: it stays until the context is dropped
    /// (or, with [`SignalFlags::RESETHAND`], until it has run).
    pub fn detach(mut self) {
        self.owned = false;
    }

    /// Attach a number to the event for tracing (tevent's `tevent_signal_set_tag`).
    pub fn set_tag(&self, tag: u64) {
        if let Some(inner) = self.ctx.upgrade() {
            if let Some(slot) = inner.signals.borrow_mut().slots.get_mut(self.key) {
                slot.tag = tag;
            }
        }
    }

    /// The tag set with [`set_tag`](SignalEvent::set_tag) (0 by default).
    pub fn tag(&self) -> u64 {
        self.with_slot(|s| s.tag).unwrap_or(0)
    }

    /// The context the event belongs to, if it still exists.
    pub fn context(&self) -> Option<Context> {
        self.ctx.upgrade().map(Context::from_inner)
    }

    fn with_slot<R>(&self, f: impl FnOnce(&SigSlot) -> R) -> Option<R> {
        let inner = self.ctx.upgrade()?;
        let table = inner.signals.try_borrow().ok()?;
        table.slots.get(self.key).map(f)
    }
}

fn remove(inner: &Inner, key: SigKey) {
    let (removed, unpublish) = {
        let mut table = inner.signals.borrow_mut();
        let removed = table.slots.remove(key);
        // The last signal event gone: stop being woken by other signals.
        let unpublish = table.published && table.slots.is_empty();
        if unpublish {
            table.published = false;
        }
        (removed, unpublish)
    };
    if unpublish {
        unpublish_wake_fd(inner.wakeup_fd());
    }
    if let Some(slot) = removed {
        uninstall(slot.signum);
        trace_gone(inner, slot.tag, slot.created);
        drop(slot);
    }
}

/// Remove every signal event of a context that is being dropped.
/// A removed signal event, dropped by the caller outside any borrow.
pub(crate) struct SigSlotBox(SigSlot);

impl SigSlotBox {
    /// Report this removed event's `Detach` trace point.
    pub(crate) fn trace_detach(&self, inner: &Inner) {
        trace_gone(inner, self.0.tag, self.0.created);
    }
}

/// Remove every signal event of a context (dropped, or re-initialised after
/// `fork`). The events are handed back, to be dropped by the caller outside
/// any borrow of the table.
#[must_use]
pub(crate) fn remove_all(table: &mut SignalTable, wakeup_fd: RawFd) -> Vec<SigSlotBox> {
    let mut removed = Vec::new();
    for (_, slot) in table.slots.drain() {
        uninstall(slot.signum);
        removed.push(SigSlotBox(slot));
    }
    table.queued.clear();
    if table.published {
        unpublish_wake_fd(wakeup_fd);
        table.published = false;
    }
    removed
}

/// Report a trace point for a live event of this table (no borrow held).
#[inline]
fn trace(inner: &Inner, key: SigKey, point: EventTracePoint) {
    inner.tracer.report(
        EventKind::Signal,
        point,
        || {
            inner
                .signals
                .borrow()
                .slots
                .get(key)
                .map(|s| (s.tag, s.created))
        },
        |tag| {
            if let Some(slot) = inner.signals.borrow_mut().slots.get_mut(key) {
                slot.tag = tag;
            }
        },
    );
}

/// Report the detach of a removed event of this table.
#[inline]
fn trace_gone(inner: &Inner, tag: u64, created: &'static Location<'static>) {
    inner.tracer.report_gone(EventKind::Signal, tag, created);
}

impl Drop for SignalEvent {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Some(inner) = self.ctx.upgrade() {
            remove(&inner, self.key);
        }
    }
}

impl fmt::Debug for SignalEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SignalEvent");
        match self.with_slot(|s| (s.signum, s.flags, s.tag, s.created)) {
            Some((signum, flags, tag, created)) => {
                d.field("signum", &signum)
                    .field("flags", &flags)
                    .field("tag", &tag)
                    .field("created", &format_args!("{created}"));
            }
            None => {
                d.field("gone", &true);
            }
        }
        d.finish()
    }
}

/// Whether a delivery happened since this context last looked. Cheap: one
/// atomic load when the context has signal events, nothing otherwise.
#[inline]
pub(crate) fn maybe_pending(inner: &Inner) -> bool {
    inner.signals.try_borrow().is_ok_and(|t| {
        !t.slots.is_empty()
            && (!t.queued.is_empty() || GENERATION.load(Ordering::SeqCst) != t.last_generation)
    })
}

/// Run the handlers of every pending signal: ascending signal number, then
/// in the order the events were added. Returns whether any handler ran.
#[inline]
pub(crate) fn run_pending(ctx: &Context) -> bool {
    // Checked inline: a program with signal events (a server with a SIGTERM
    // handler) pays a load per iteration, not a call.
    maybe_pending(ctx.inner()) && run_pending_slow(ctx)
}

#[cold]
#[inline(never)]
fn run_pending_slow(ctx: &Context) -> bool {
    let inner = ctx.inner();
    let collected = {
        let mut table = inner.signals.borrow_mut();
        let table = &mut *table;
        let generation = GENERATION.load(Ordering::SeqCst);
        let mut collected = false;
        if generation != table.last_generation {
            table.last_generation = generation;
            let mut keys: Vec<(i32, u64, SigKey)> = table
                .slots
                .iter()
                .map(|(k, s)| (s.signum, s.order, k))
                .collect();
            keys.sort_unstable();
            for (signum, _, key) in keys {
                let slot = &mut table.slots[key];
                let total = COUNTS[signum as usize].load(Ordering::SeqCst);
                let pending = total.wrapping_sub(slot.seen);
                if pending == 0 {
                    continue;
                }
                slot.seen = total;
                collected = true;
                if !slot.flags.contains(SignalFlags::SIGINFO) {
                    table.queued.push_back((
                        key,
                        SignalInfo {
                            signum,
                            count: pending,
                            siginfo: None,
                        },
                    ));
                    continue;
                }
                read_ring(slot, signum, key, &mut table.queued);
            }
        }
        collected
    };
    if collected {
        inner.drain_wakeup();
    }
    let mut ran = false;
    loop {
        let next = inner.signals.borrow_mut().queued.pop_front();
        let Some((key, info)) = next else {
            break;
        };
        ran |= call(ctx, key, info);
    }
    ran
}

fn read_ring(
    slot: &mut SigSlot,
    signum: i32,
    key: SigKey,
    calls: &mut std::collections::VecDeque<(SigKey, SignalInfo)>,
) {
    let ring = RINGS[signum as usize].load(Ordering::Acquire);
    if ring.is_null() {
        return;
    }
    // SAFETY: rings are never freed.
    let ring = unsafe { &*ring };
    let write = ring.write.load(Ordering::SeqCst);
    let oldest = write.saturating_sub(SIGINFO_QUEUE as u64);
    if slot.ring_pos < oldest {
        let lost = oldest - slot.ring_pos;
        calls.push_back((
            key,
            SignalInfo {
                signum,
                count: lost,
                siginfo: None,
            },
        ));
        slot.ring_pos = oldest;
    }
    while slot.ring_pos < write {
        let index = slot.ring_pos;
        let e = &ring.entries[(index % SIGINFO_QUEUE as u64) as usize];
        if e.seq.load(Ordering::Acquire) != index + 1 {
            // Still being written by a handler on another thread: the
            // generation bump that follows brings us back here.
            break;
        }
        let info = SigInfo {
            pid: e.pid.load(Ordering::Relaxed),
            uid: e.uid.load(Ordering::Relaxed),
            code: e.code.load(Ordering::Relaxed),
            value: e.value.load(Ordering::Relaxed),
        };
        calls.push_back((
            key,
            SignalInfo {
                signum,
                count: 1,
                siginfo: Some(info),
            },
        ));
        slot.ring_pos += 1;
    }
}

/// Make one handler call; `false` if the event is gone or busy.
fn call(ctx: &Context, key: SigKey, info: SignalInfo) -> bool {
    let inner = ctx.inner();
    let (handler, oneshot) = {
        let mut table = inner.signals.borrow_mut();
        let Some(slot) = table.slots.get_mut(key) else {
            return false; // dropped by an earlier handler
        };
        let Some(h) = slot.handler.take() else {
            return false; // running further up the stack (nested loop)
        };
        (h, slot.flags.contains(SignalFlags::RESETHAND))
    };
    let mut running = Running {
        inner,
        key,
        handler: Some(handler),
        oneshot,
    };
    let view = SignalEvent {
        ctx: Rc::downgrade(inner),
        key,
        owned: false,
    };
    trace(inner, key, EventTracePoint::BeforeHandler);
    if let Some(f) = running.handler.as_mut() {
        f(ctx, &view, info);
    }
    drop(running);
    true
}

struct Running<'a> {
    inner: &'a Rc<Inner>,
    key: SigKey,
    handler: Option<Box<SignalFn>>,
    oneshot: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut leftover = self.handler.take();
        if self.oneshot {
            remove(self.inner, self.key);
        } else if let Some(slot) = self.inner.signals.borrow_mut().slots.get_mut(self.key) {
            if slot.handler.is_none() {
                slot.handler = leftover.take();
            }
        }
        drop(leftover);
    }
}
