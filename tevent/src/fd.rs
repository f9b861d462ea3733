//! fd events: handlers for a file descriptor becoming readable or writable.

use std::fmt;
use std::os::fd::{OwnedFd, RawFd};
use std::panic::Location;
use std::rc::{Rc, Weak};

use slotmap::SlotMap;

use crate::backend::Readiness;
use crate::context::{Context, Inner};
use crate::trace::{EventKind, EventTracePoint};
use crate::{Error, FdFlags};

slotmap::new_key_type! {
    /// Identifies an fd event inside its context.
    pub(crate) struct FdKey;
}

/// The handler of an fd event: the context, the event (so it can change its
/// flags) and what happened, masked with the event's flags.
pub(crate) type FdFn = dyn FnMut(&Context, &FdEvent, FdFlags);

struct FdSlot {
    fd: RawFd,
    flags: FdFlags,
    handler: Option<Box<FdFn>>,
    close_fn: Option<Box<dyn FnOnce(RawFd)>>,
    auto_close: bool,
    detached: bool,
    created: &'static Location<'static>,
    tag: u64,
}

/// A detached fd event, dropped by the caller (its fd is left open).
pub(crate) struct FdSlotBox(#[allow(dead_code)] FdSlot);

/// All fd events on one kernel fd share one registration (tevent's "mpx"):
/// the kernel watches the union of their flags.
#[derive(Default)]
struct FdGroup {
    /// In round-robin order: the member that is served moves to the end.
    members: Vec<FdKey>,
    registered: FdFlags,
}

/// The context's fd events, and per kernel fd the group sharing it.
#[derive(Default)]
pub(crate) struct FdTable {
    slots: SlotMap<FdKey, FdSlot>,
    /// Indexed by fd number.
    groups: Vec<Option<FdGroup>>,
    /// Events with non-empty flags: they keep `loop_wait` running.
    active: usize,
}

impl FdTable {
    pub(crate) fn active_count(&self) -> usize {
        self.active
    }

    fn group_mut(&mut self, fd: RawFd) -> &mut FdGroup {
        let i = fd as usize;
        if self.groups.len() <= i {
            self.groups.resize_with(i + 1, || None);
        }
        self.groups[i].get_or_insert_with(FdGroup::default)
    }

    fn wanted(&self, fd: RawFd) -> FdFlags {
        let mut want = FdFlags::EMPTY;
        if let Some(Some(group)) = self.groups.get(fd as usize) {
            for &k in &group.members {
                want |= self.slots[k].flags;
            }
        }
        want
    }

    fn set_slot_flags(&mut self, key: FdKey, flags: FdFlags) {
        let slot = &mut self.slots[key];
        match (slot.flags.is_empty(), flags.is_empty()) {
            (true, false) => self.active += 1,
            (false, true) => self.active -= 1,
            _ => {}
        }
        slot.flags = flags;
    }

    /// Bring the kernel registration of `fd` in line with its members'
    /// flags. On failure every member is disarmed (flags cleared), as tevent
    /// does when the kernel says the fd is gone, so that nothing spins on it.
    fn sync(&mut self, backend: &mut dyn crate::backend::Backend, fd: RawFd) -> Result<(), Error> {
        let want = self.wanted(fd);
        let group = self.group_mut(fd);
        let have = group.registered;
        if want == have {
            return Ok(());
        }
        let result = if have.is_empty() {
            match backend.add(fd, fd as u64, want) {
                // The kernel still watches this fd number: an earlier event
                // on it was dropped after its fd had been closed (which
                // leaves epoll's registration behind) and the number was
                // reused. Take the registration over.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    log::debug!("fd {fd}: stale kernel registration taken over");
                    backend.modify(fd, fd as u64, want)
                }
                other => other,
            }
        } else if want.is_empty() {
            backend.delete(fd)
        } else {
            backend.modify(fd, fd as u64, want)
        };
        match result {
            Ok(()) => {
                self.group_mut(fd).registered = want;
                Ok(())
            }
            Err(e) => {
                log::debug!("fd {fd}: registration {have:?} -> {want:?} failed: {e}");
                if !have.is_empty() && !want.is_empty() {
                    // Best effort: drop the stale registration too.
                    let _ = backend.delete(fd);
                }
                self.disarm(fd);
                Err(Error::Io(e))
            }
        }
    }

    fn disarm(&mut self, fd: RawFd) {
        let members = match self.groups.get_mut(fd as usize) {
            Some(Some(group)) => {
                group.registered = FdFlags::EMPTY;
                group.members.clone()
            }
            _ => return,
        };
        for k in members {
            self.set_slot_flags(k, FdFlags::EMPTY);
        }
    }

    /// Forget every event (after `fork`: the kernel registrations belong to
    /// the backend being replaced). Fds are not closed. The slots are handed
    /// back so their handlers are dropped outside the borrow.
    pub(crate) fn detach_all(&mut self) -> Vec<FdSlotBox> {
        self.groups.clear();
        self.active = 0;
        self.slots.drain().map(|(_, s)| FdSlotBox(s)).collect()
    }

    fn remove(&mut self, backend: &mut dyn crate::backend::Backend, key: FdKey) -> Option<FdSlot> {
        let fd = self.slots.get(key)?.fd;
        self.set_slot_flags(key, FdFlags::EMPTY);
        let slot = self.slots.remove(key)?;
        let group = self.group_mut(fd);
        group.members.retain(|&k| k != key);
        let empty = group.members.is_empty();
        let _ = self.sync(backend, fd);
        if empty {
            self.groups[fd as usize] = None;
        }
        Some(slot)
    }
}

/// An fd event (tevent's `tevent_fd`): a handler called when a file
/// descriptor is ready for what its [`FdFlags`] ask.
///
/// - The flags can change at any time ([`set_flags`](FdEvent::set_flags));
///   empty flags unregister the fd from the kernel and do not keep
///   [`Context::loop_wait`] running.
/// - Several fd events may watch the same fd; they share one kernel
///   registration and are served round-robin, one handler per
///   [`Context::loop_once`].
/// - A hang-up or error is reported as `READ` to an event that wants `READ`
///   and as `ERROR` to one that wants `ERROR`. An event that wants only
///   `WRITE` is not called: its `WRITE` flag is cleared instead (tevent's
///   select-compatible rule), so it does not spin.
/// - Dropping the handle unregisters the fd, then runs the close function
///   (or closes the fd with [`set_auto_close`](FdEvent::set_auto_close)).
///
/// **Drop the event before closing its fd** (unless it closes the fd
/// itself): the kernel keeps watching a closed fd's file, and the number may
/// be reused by an unrelated file.
///
/// # Example
///
/// ```
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
/// use tevent::{Context, FdFlags};
///
/// let ctx = Context::new()?;
/// let (mut a, b) = UnixStream::pair()?;
/// b.set_nonblocking(true)?;
/// a.write_all(b"ping")?;
/// let mut b2 = b.try_clone()?;
/// let fde = ctx.add_fd(&b, FdFlags::READ, move |_ctx, fde, flags| {
///     assert!(flags.contains(FdFlags::READ));
///     let mut buf = [0u8; 4];
///     b2.read_exact(&mut buf).unwrap();
///     assert_eq!(&buf, b"ping");
///     fde.set_flags(FdFlags::EMPTY).unwrap(); // done: stop watching
/// })?;
/// ctx.loop_wait()?;
/// assert_eq!(fde.flags(), FdFlags::EMPTY);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FdEvent {
    ctx: Weak<Inner>,
    key: FdKey,
    owned: bool,
}

impl FdEvent {
    #[track_caller]
    pub(crate) fn add(
        inner: &Rc<Inner>,
        fd: RawFd,
        flags: FdFlags,
        handler: Box<FdFn>,
    ) -> Result<FdEvent, Error> {
        if fd < 0 {
            return Err(Error::BadFd(fd));
        }
        let created = Location::caller();
        let mut table = inner.fds.borrow_mut();
        let key = table.slots.insert(FdSlot {
            fd,
            flags: FdFlags::EMPTY,
            handler: Some(handler),
            close_fn: None,
            auto_close: false,
            detached: false,
            created,
            tag: 0,
        });
        table.set_slot_flags(key, flags);
        table.group_mut(fd).members.push(key);
        let mut backend = inner.backend.borrow_mut();
        if let Err(e) = table.sync(&mut **backend, fd) {
            let slot = table.remove(&mut **backend, key);
            drop(backend);
            drop(table);
            drop(slot);
            return Err(e);
        }
        drop(backend);
        drop(table);
        log::trace!("fd event {key:?} on fd {fd} {flags:?} added at {created}");
        trace(inner, key, EventTracePoint::Attach);
        Ok(FdEvent {
            ctx: Rc::downgrade(inner),
            key,
            owned: true,
        })
    }

    /// The file descriptor (`-1` once the event or its context is gone).
    pub fn fd(&self) -> RawFd {
        self.with_slot(|s| s.fd).unwrap_or(-1)
    }

    /// The current flags (empty once the event or its context is gone).
    pub fn flags(&self) -> FdFlags {
        self.with_slot(|s| s.flags).unwrap_or_default()
    }

    /// Change what the event waits for (tevent's `tevent_fd_set_flags`).
    /// Setting the current flags again costs nothing; otherwise the kernel
    /// registration is updated at once.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the kernel refuses (for example `EBADF` when the fd
    /// was closed behind the event's back); every event on that fd is then
    /// disarmed (flags cleared) so that none of them spins.
    /// [`Error::ContextGone`] if the context was dropped.
    pub fn set_flags(&self, flags: FdFlags) -> Result<(), Error> {
        let inner = self.ctx.upgrade().ok_or(Error::ContextGone)?;
        let mut table = inner.fds.borrow_mut();
        let Some(slot) = table.slots.get(self.key) else {
            return Err(Error::ContextGone);
        };
        if slot.flags == flags {
            return Ok(());
        }
        let fd = slot.fd;
        table.set_slot_flags(self.key, flags);
        let mut backend = inner.backend.borrow_mut();
        table.sync(&mut **backend, fd)
    }

    /// Add flags (tevent's `TEVENT_FD_READABLE` and friends).
    pub fn add_flags(&self, flags: FdFlags) -> Result<(), Error> {
        self.set_flags(self.flags() | flags)
    }

    /// Remove flags (tevent's `TEVENT_FD_NOT_READABLE` and friends).
    pub fn remove_flags(&self, flags: FdFlags) -> Result<(), Error> {
        self.set_flags(self.flags() & !flags)
    }

    /// Close the fd when the event is dropped, after it has been
    /// unregistered (tevent's `tevent_fd_set_auto_close`). Also applies when
    /// the context is dropped first.
    pub fn set_auto_close(&self, auto_close: bool) {
        self.with_slot_mut(|s| s.auto_close = auto_close);
    }

    /// Run `close_fn` with the fd when the event is dropped, after it has
    /// been unregistered (tevent's `tevent_fd_set_close_fn`). It replaces
    /// auto-close.
    pub fn set_close_fn<F: FnOnce(RawFd) + 'static>(&self, close_fn: F) {
        let old = self.with_slot_mut(|s| s.close_fn.replace(Box::new(close_fn)));
        drop(old);
    }

    /// Hand the event to the context: it stays registered until the context
    /// is dropped. Its handler can still change its flags.
    pub fn detach(mut self) {
        self.owned = false;
        self.with_slot_mut(|s| s.detached = true);
    }

    /// Attach a number to the event for tracing (tevent's `tevent_fd_set_tag`).
    pub fn set_tag(&self, tag: u64) {
        self.with_slot_mut(|s| s.tag = tag);
    }

    /// The tag set with [`set_tag`](FdEvent::set_tag) (0 by default).
    pub fn tag(&self) -> u64 {
        self.with_slot(|s| s.tag).unwrap_or(0)
    }

    /// The context the event belongs to, if it still exists.
    pub fn context(&self) -> Option<Context> {
        self.ctx.upgrade().map(Context::from_inner)
    }

    /// Whether the event belongs to `ctx` (cheaper than comparing
    /// [`context`](FdEvent::context): no reference count changes).
    pub fn belongs_to(&self, ctx: &Context) -> bool {
        std::ptr::eq(self.ctx.as_ptr(), Rc::as_ptr(ctx.inner()))
    }

    fn with_slot<R>(&self, f: impl FnOnce(&FdSlot) -> R) -> Option<R> {
        let inner = self.ctx.upgrade()?;
        let table = inner.fds.try_borrow().ok()?;
        table.slots.get(self.key).map(f)
    }

    fn with_slot_mut<R>(&self, f: impl FnOnce(&mut FdSlot) -> R) -> Option<R> {
        let inner = self.ctx.upgrade()?;
        let mut table = inner.fds.borrow_mut();
        table.slots.get_mut(self.key).map(f)
    }
}

impl Drop for FdEvent {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let Some(inner) = self.ctx.upgrade() else {
            return;
        };
        let slot = {
            let mut table = inner.fds.borrow_mut();
            let mut backend = inner.backend.borrow_mut();
            table.remove(&mut **backend, self.key)
        };
        if let Some(slot) = slot {
            trace_gone(&inner, slot.tag, slot.created);
            close_slot(slot);
        }
    }
}

/// Report a trace point for a live event of this table (no borrow held).
#[inline]
fn trace(inner: &Inner, key: FdKey, point: EventTracePoint) {
    inner.tracer.report(
        EventKind::Fd,
        point,
        || {
            inner
                .fds
                .borrow()
                .slots
                .get(key)
                .map(|s| (s.tag, s.created))
        },
        |tag| {
            if let Some(slot) = inner.fds.borrow_mut().slots.get_mut(key) {
                slot.tag = tag;
            }
        },
    );
}

/// Report the detach of a removed event of this table.
#[inline]
fn trace_gone(inner: &Inner, tag: u64, created: &'static Location<'static>) {
    inner.tracer.report_gone(EventKind::Fd, tag, created);
}

impl FdSlotBox {
    /// Report this detached event's `Detach` trace point.
    pub(crate) fn trace_detach(&self, inner: &Inner) {
        trace_gone(inner, self.0.tag, self.0.created);
    }
}

/// Run the close function or auto-close of an event that has been
/// unregistered; the handler is dropped afterwards.
fn close_slot(mut slot: FdSlot) {
    if let Some(close_fn) = slot.close_fn.take() {
        close_fn(slot.fd);
    } else if slot.auto_close {
        // SAFETY: auto-close hands ownership of the fd to the event (the
        // caller promised not to close it elsewhere), and the event is gone.
        drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(slot.fd) });
    }
}

/// Close the fds of events still alive when their context is dropped.
pub(crate) fn close_all(table: FdTable) {
    for (_, slot) in table.slots {
        close_slot(slot);
    }
}

impl fmt::Debug for FdEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("FdEvent");
        match self.with_slot(|s| (s.fd, s.flags, s.tag, s.created)) {
            Some((fd, flags, tag, created)) => {
                d.field("fd", &fd)
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

/// Handle one readiness report: pick the event to serve and run it.
pub(crate) fn dispatch(ctx: &Context, ready: Readiness) {
    let inner = ctx.inner();
    let fd = ready.token as RawFd;
    let (key, handler, flags) = {
        let mut table = inner.fds.borrow_mut();
        let Some(Some(group)) = table.groups.get(fd as usize) else {
            return;
        };
        if ready.invalid {
            log::debug!("fd {fd} is not open: disarming its events");
            table.disarm(fd);
            let _ = inner.backend.borrow_mut().delete(fd);
            return;
        }
        let mut members_want = FdFlags::EMPTY;
        for &k in &group.members {
            members_want |= table.slots[k].flags;
        }
        if ready.hangup && !members_want.intersects(FdFlags::READ | FdFlags::ERROR) {
            // Nobody listens for the error: silence the writers instead of
            // calling them (they would spin on a dead fd).
            let members = group.members.clone();
            for k in members {
                let f = table.slots[k].flags & !FdFlags::WRITE;
                table.set_slot_flags(k, f);
            }
            let mut backend = inner.backend.borrow_mut();
            let _ = table.sync(&mut **backend, fd);
            return;
        }
        let mut happened = FdFlags::EMPTY;
        if ready.readable {
            happened |= FdFlags::READ;
        }
        if ready.writable {
            happened |= FdFlags::WRITE;
        }
        if ready.hangup {
            happened |= FdFlags::READ | FdFlags::ERROR;
        }
        let table = &mut *table;
        let group = table.groups[fd as usize].as_mut().expect("group exists");
        let mut chosen = None;
        for (i, &k) in group.members.iter().enumerate() {
            let f = table.slots[k].flags & happened;
            if !f.is_empty() {
                chosen = Some((i, k, f));
                break;
            }
        }
        let Some((i, key, flags)) = chosen else {
            return;
        };
        // Round-robin: the served event goes to the back of the line.
        if group.members.len() > 1 {
            let k = group.members.remove(i);
            group.members.push(k);
        }
        let Some(handler) = table.slots[key].handler.take() else {
            // Its handler is running further up the stack (nested loop).
            return;
        };
        (key, handler, flags)
    };
    let mut running = Running {
        inner,
        key,
        handler: Some(handler),
    };
    let view = FdEvent {
        ctx: Rc::downgrade(inner),
        key,
        owned: false,
    };
    trace(inner, key, EventTracePoint::BeforeHandler);
    if let Some(f) = running.handler.as_mut() {
        f(ctx, &view, flags);
    }
    drop(running);
}

/// Puts the handler back after it returned (or panicked), unless the event
/// was dropped meanwhile.
struct Running<'a> {
    inner: &'a Rc<Inner>,
    key: FdKey,
    handler: Option<Box<FdFn>>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut leftover = self.handler.take();
        if let Some(slot) = self.inner.fds.borrow_mut().slots.get_mut(self.key) {
            if slot.handler.is_none() {
                slot.handler = leftover.take();
            }
        }
        drop(leftover);
    }
}
