//! The BSD socket transport of [`Stream`]: TCP and unix stream sockets (and
//! other stream fds such as pipes), tsocket's `tstream_bsd`.
//!
//! One fd event per stream, with lazily managed flags (tsocket's
//! `tstream_bsd_fde_handler`):
//!
//! - A reader arms `READ` and leaves it armed when it finishes (the next
//!   read usually follows at once; this saves an `epoll_ctl` per read). A
//!   `READ` wake-up without a reader clears it.
//! - A writer is tried at once in `writev_send` (one `send`/`sendmsg`);
//!   only if the kernel did not take everything does it arm
//!   `WRITE | ERROR`, cleared when it finishes.
//! - One wake-up runs one side: `ERROR` first (a reader drains buffered data
//!   first, unless [`bsd_fail_readv_first_error`] is set; otherwise the
//!   socket's error is captured once, as tsocket's
//!   `samba_socket_poll_or_sock_error`: a peer half-close is `ECONNRESET`, a
//!   hang-up `EPIPE`, else `SO_ERROR`, falling back to `EPIPE`, and handed
//!   to the writer, else the reader; with neither, the event just stops
//!   watching), then `WRITE` (the writer only: the reader waits for the next
//!   iteration), then `READ`.
//! - Errors are sticky: once a read or write failed, every later operation
//!   fails with the same errno. End of file is `EPIPE`, for every later read
//!   too; writes go on after it (a peer that half-closed still reads).
//!   Bytes already read ahead ([`bsd_read_ahead`]) were received before the
//!   error or end of file: reads they can complete still get them, unless
//!   [`bsd_fail_readv_first_error`] is set; a read that needs more than
//!   they hold fails with the error.
//! - A monitor ([`monitor_send`](crate::monitor_send)) keeps `ERROR` armed
//!   while the stream is idle. It fails with the first error a read or write
//!   gets (`EPIPE` at end of file), or, when the socket reports an error or
//!   hang-up with no read or write outstanding, with the error captured as
//!   above, which then becomes the stream's sticky error. As in tsocket, a
//!   peer's half-close counts: a monitored stream whose peer shuts down its
//!   sending side fails with `ECONNRESET` and writes to it stop; do not
//!   monitor connections whose peers half-close and still read.
//! - The state of the outstanding read and write (buffers, progress) lives
//!   here, next to a weak reference to its request: a request costs no
//!   allocation besides itself, and dropping it cancels the operation.
//!
//! The `ERROR` flag is what ends a write pending on a peer that stopped
//! reading and then went away (Samba bug 15202: the socket sits in
//! `CLOSE_WAIT`, `sendmsg` keeps returning `EAGAIN` and the kernel reports
//! the half-close as readable; without `ERROR` the writer would spin or
//! wait for ever). It needs a backend that reports a peer's half-close to
//! an event wanting `ERROR` (`"epoll"` and `"poll"` do; tevent's
//! `"polling"` backend only reports full hang-ups).
//!
//! `SIGPIPE` never kills the process: sockets are written with `send` /
//! `sendmsg` and `MSG_NOSIGNAL`; other fds (pipes) with `writev` while
//! `SIGPIPE` is blocked in the calling thread, consuming the signal it
//! raised.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use socket2::{Domain, Socket, Type};
use tevent::{Context, FdEvent, FdFlags, Req};

use crate::stream::{
    DisconnectReq, MonitorReq, ReadvReq, Stream, StreamOps, StreamReq, WeakStreamReq, WritevReq,
    WritevResult,
};
use crate::Error;

/// How many buffers one `sendmsg` covers (more are written in further
/// calls); kept small enough for the stack and below every `IOV_MAX`.
const IOV_BATCH: usize = 64;

/// The state of a BSD read: kept in the stream, not in the request, so that
/// a request costs no allocation besides itself.
struct ReadvState {
    buf: Vec<u8>,
    /// The length `buf` may reach.
    target: usize,
    /// The length `buf` must reach (`target` for `readv_send`; one more
    /// byte than it had for `read_some_send`).
    min_target: usize,
}

/// The state of a BSD write (kept in the stream, like [`ReadvState`]).
struct WritevState {
    bufs: Vec<Vec<u8>>,
    /// The first buffer not completely written.
    index: usize,
    /// How much of `bufs[index]` is written.
    offset: usize,
    /// Bytes written so far.
    total: usize,
}

/// The outstanding read: its request (weakly: dropping the request cancels
/// the read) and its state.
struct Reader {
    req: WeakStreamReq<Vec<u8>>,
    state: ReadvState,
}

/// The outstanding write.
struct Writer {
    req: WeakStreamReq<WritevResult>,
    state: WritevState,
}

/// What one attempt to move bytes achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// The request's bytes are all moved.
    Complete,
    /// Not all of them: wait for the fd.
    Wait,
}

/// The read-ahead buffer: with `size > 0`, a read asks the kernel for up to
/// `size` bytes and later reads are served from `buf[pos..]`.
#[derive(Default)]
struct ReadAhead {
    size: usize,
    buf: Vec<u8>,
    pos: usize,
}

impl ReadAhead {
    fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Move up to `want` buffered bytes to the end of `out`.
    fn take_into(&mut self, out: &mut Vec<u8>, want: usize) -> usize {
        let n = want.min(self.buffered());
        out.extend_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        n
    }
}

/// The transport: a cheap handle, so that the fd handler can hold a weak
/// reference to the shared part.
pub(crate) struct BsdStream {
    inner: Rc<BsdInner>,
}

struct BsdInner {
    /// The stream's one fd event; declared before `fd` so that it is dropped
    /// (unregistered) before the fd is closed.
    fde: RefCell<Option<FdEvent>>,
    /// The flags `fde` is set to (a mirror, so that re-arming what is armed
    /// costs nothing).
    armed: Cell<FdFlags>,
    /// The socket; `None` after a disconnect.
    fd: RefCell<Option<OwnedFd>>,
    /// The fd number, `-1` after a disconnect.
    raw: Cell<RawFd>,
    /// The sticky error (0: none).
    error: Cell<i32>,
    /// The peer finished sending: every later read is `EPIPE`. Writes go on
    /// (TCP allows them after a half-close) until the kernel refuses them.
    eof: Cell<bool>,
    /// The outstanding read, if any. A read whose request was dropped stays
    /// here (with its buffer) until the next read or wake-up replaces it.
    reader: RefCell<Option<Reader>>,
    /// The outstanding write, if any (the same).
    writer: RefCell<Option<Writer>>,
    /// The monitor's request, while one watches (it keeps `ERROR` armed).
    monitor: RefCell<Option<WeakStreamReq<()>>>,
    /// Try reads at once in `readv_send` (tsocket's `optimize_readv`).
    optimize_readv: Cell<bool>,
    /// Report an error at once instead of draining buffered data first.
    fail_readv_first_error: Cell<bool>,
    /// Bytes read ahead of the reader ([`bsd_read_ahead`]).
    ahead: RefCell<ReadAhead>,
    /// A socket (`sendmsg` with `MSG_NOSIGNAL`) or another fd (`writev`).
    is_socket: bool,
}

/// The errno of the last failed call.
fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Whether an errno means "try again later".
fn is_retry(errno: i32) -> bool {
    errno == libc::EAGAIN || errno == libc::EWOULDBLOCK || errno == libc::EINPROGRESS
}

/// How many bytes `fd` holds ready to read (`FIONREAD`), or the errno.
fn fionread(fd: RawFd) -> Result<usize, i32> {
    let mut value: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points to
    // a live local of that type.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut value) };
    if rc == -1 {
        return Err(last_errno());
    }
    Ok(value.max(0) as usize)
}

/// `SO_ERROR` of `fd` (0 if none).
pub(crate) fn so_error(fd: RawFd) -> Result<i32, i32> {
    let mut error: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `error` and `len` are valid for writes and `len` holds the
    // size of `error`, as getsockopt requires.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut error as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == -1 {
        return Err(last_errno());
    }
    Ok(error)
}

/// The error of a socket that reported a hang-up or error (Samba's
/// `samba_socket_poll_or_sock_error`): a pending `POLLERR` gives `SO_ERROR`,
/// `POLLHUP` gives `EPIPE`, `POLLRDHUP` (the peer's half-close) gives
/// `ECONNRESET`. 0 if the socket shows none of them.
fn poll_or_sock_error(fd: RawFd) -> i32 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let events = libc::POLLRDHUP;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let events = 0;
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let rc = loop {
        // SAFETY: `pfd` is one valid pollfd and the count says so.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        if rc == -1 && last_errno() == libc::EINTR {
            continue;
        }
        break rc;
    };
    if rc == 0 {
        return 0;
    }
    let revents = pfd.revents;
    if rc == 1 && revents & libc::POLLERR == 0 {
        if revents & libc::POLLHUP != 0 {
            return libc::EPIPE;
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if revents & libc::POLLRDHUP != 0 {
            return libc::ECONNRESET;
        }
    }
    // POLLERR, POLLNVAL or a failed poll: the socket's error, else EPIPE
    // (also for an fd that is no socket, a pipe whose reader went away:
    // SO_ERROR would only say ENOTSOCK).
    match so_error(fd) {
        Ok(0) | Err(_) => libc::EPIPE,
        Ok(e) => e,
    }
}

/// Set `O_NONBLOCK` and `FD_CLOEXEC` on `fd`.
pub(crate) fn prepare_fd(fd: RawFd) -> Result<(), i32> {
    // SAFETY: fcntl on an fd the caller owns, with integer arguments only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags == -1 {
            return Err(last_errno());
        }
        if flags & libc::O_NONBLOCK == 0
            && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == -1
        {
            return Err(last_errno());
        }
        let fdflags = libc::fcntl(fd, libc::F_GETFD);
        if fdflags == -1 {
            return Err(last_errno());
        }
        if fdflags & libc::FD_CLOEXEC == 0
            && libc::fcntl(fd, libc::F_SETFD, fdflags | libc::FD_CLOEXEC) == -1
        {
            return Err(last_errno());
        }
    }
    Ok(())
}

/// `writev` on a non-socket fd without dying of `SIGPIPE`: the signal is
/// blocked in this thread around the call, and the one the call raised (if
/// it failed with `EPIPE` and none was pending before) is consumed.
fn writev_nosigpipe(fd: RawFd, iov: &[libc::iovec]) -> isize {
    // SAFETY: the sigset_t values are initialised by sigemptyset /
    // pthread_sigmask / sigpending before being read; `iov` is a valid slice
    // of iovecs describing live buffers, and its length is passed with it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::sigemptyset(&mut pending);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        libc::sigpending(&mut pending);
        let was_pending = libc::sigismember(&pending, libc::SIGPIPE) == 1;
        let n = libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int);
        let errno = last_errno();
        if n == -1 && errno == libc::EPIPE && !was_pending {
            consume_sigpipe(&set);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        // Restore errno for the caller.
        set_errno(errno);
        n
    }
}

#[cfg(not(any(target_os = "macos", target_os = "ios", target_os = "openbsd")))]
fn consume_sigpipe(set: &libc::sigset_t) {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: `set` is an initialised sigset and `zero` a valid timespec;
        // the siginfo pointer may be null.
        let rc = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &zero) };
        if rc == -1 && last_errno() == libc::EINTR {
            continue;
        }
        break;
    }
}

#[cfg(any(target_os = "macos", target_os = "ios", target_os = "openbsd"))]
fn consume_sigpipe(set: &libc::sigset_t) {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is initialised and only holds SIGPIPE, which is pending
    // (the failed write raised it), so sigwait returns at once.
    unsafe {
        libc::sigwait(set, &mut sig);
    }
}

fn set_errno(errno: i32) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: __errno_location returns the calling thread's errno slot.
    unsafe {
        *libc::__errno_location() = errno;
    }
    #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
    // SAFETY: __error returns the calling thread's errno slot.
    unsafe {
        *libc::__error() = errno;
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd"
    )))]
    let _ = errno;
}

#[cfg(not(any(target_os = "macos", target_os = "ios")))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(any(target_os = "macos", target_os = "ios"))]
const SEND_FLAGS: libc::c_int = 0; // SO_NOSIGPIPE is set on the socket instead

/// The request of the operation recorded in `slot` (a reader, a writer,
/// the monitor), if it is alive and in progress; a dead record is dropped,
/// with the state it holds.
fn live_op<X, T: 'static>(
    slot: &RefCell<Option<X>>,
    req: impl FnOnce(&X) -> &WeakStreamReq<T>,
) -> Option<StreamReq<T>> {
    let live = slot.borrow().as_ref().and_then(|x| req(x).upgrade());
    match live {
        Some(r) if r.is_in_progress() => Some(r),
        _ => {
            let dead = slot.take();
            drop(dead);
            None
        }
    }
}

impl BsdInner {
    fn new(fd: OwnedFd, is_socket: bool) -> BsdInner {
        let raw = fd.as_raw_fd();
        BsdInner {
            fde: RefCell::new(None),
            armed: Cell::new(FdFlags::EMPTY),
            fd: RefCell::new(Some(fd)),
            raw: Cell::new(raw),
            error: Cell::new(0),
            eof: Cell::new(false),
            reader: RefCell::new(None),
            writer: RefCell::new(None),
            monitor: RefCell::new(None),
            optimize_readv: Cell::new(false),
            fail_readv_first_error: Cell::new(false),
            ahead: RefCell::new(ReadAhead::default()),
            is_socket,
        }
    }

    /// The errno that refuses any operation now, if one does.
    fn refused(&self) -> Option<i32> {
        if self.raw.get() < 0 {
            return Some(libc::ENOTCONN);
        }
        match self.error.get() {
            0 => None,
            e => Some(e),
        }
    }

    /// Whether a read request is outstanding (as
    /// [`live_reader`](BsdInner::live_reader), without clearing a dead one).
    #[inline]
    fn reading(&self) -> bool {
        match self.reader.try_borrow() {
            Ok(reader) => reader
                .as_ref()
                .is_some_and(|r| r.req.upgrade().is_some_and(|req| req.is_in_progress())),
            // Borrowed: a read is being worked on.
            Err(_) => true,
        }
    }

    /// The reader's request, if it is alive and in progress; a dead
    /// reader's state (and buffer) is dropped.
    fn live_reader(&self) -> Option<ReadvReq> {
        live_op(&self.reader, |r| &r.req)
    }

    /// The writer's request (as [`live_reader`](BsdInner::live_reader)).
    fn live_writer(&self) -> Option<WritevReq> {
        live_op(&self.writer, |w| &w.req)
    }

    /// The monitor's request (as [`live_reader`](BsdInner::live_reader)).
    fn live_monitor(&self) -> Option<MonitorReq> {
        live_op(&self.monitor, |m| m)
    }

    /// Whether a monitor watches (or watched and was not found dead yet).
    fn monitoring(&self) -> bool {
        self.monitor.try_borrow().is_ok_and(|m| m.is_some())
    }

    /// Whether an operation on `ctx` is refused: the fd event belongs to
    /// another (live) context that an outstanding operation uses (reads and
    /// writes must use the same context).
    #[inline]
    fn refuses(&self, ctx: &Context) -> bool {
        let on_other = match self.fde.try_borrow() {
            Ok(fde) => fde.as_ref().is_some_and(|f| !f.belongs_to(ctx)),
            Err(_) => false,
        };
        on_other && self.refuses_other()
    }

    /// [`refuses`](BsdInner::refuses) for an fd event on another context.
    #[cold]
    #[inline(never)]
    fn refuses_other(&self) -> bool {
        let alive = self
            .fde
            .borrow()
            .as_ref()
            .is_some_and(|f| f.context().is_some());
        alive
            && (self.live_reader().is_some()
                || self.live_writer().is_some()
                || self.live_monitor().is_some())
    }

    /// Make sure the fd event exists on `ctx`.
    fn ensure_fde(self: &Rc<Self>, ctx: &Context) -> Result<(), i32> {
        if self
            .fde
            .borrow()
            .as_ref()
            .is_some_and(|f| f.belongs_to(ctx))
        {
            return Ok(());
        }
        if self.refuses(ctx) {
            return Err(libc::EINVAL);
        }
        let weak = Rc::downgrade(self);
        let fde = ctx
            .add_fd_raw(self.raw.get(), FdFlags::EMPTY, move |_ctx, _fde, flags| {
                if let Some(inner) = weak.upgrade() {
                    inner.fde_handler(flags);
                }
            })
            .map_err(|e| e.errno().unwrap_or(libc::EIO))?;
        let old = self.fde.replace(Some(fde));
        drop(old);
        self.armed.set(FdFlags::EMPTY);
        Ok(())
    }

    /// Set the fd event's flags; a no-op (no call into the context) when
    /// they are already set.
    fn set_flags(&self, flags: FdFlags) -> Result<(), i32> {
        if self.armed.get() == flags {
            return Ok(());
        }
        let fde = self.fde.borrow();
        let Some(fde) = fde.as_ref() else {
            return Err(libc::EINVAL);
        };
        match fde.set_flags(flags) {
            Ok(()) => {
                self.armed.set(flags);
                Ok(())
            }
            Err(e) => {
                // The context disarmed the event.
                self.armed.set(FdFlags::EMPTY);
                Err(e.errno().unwrap_or(libc::EIO))
            }
        }
    }

    fn add_flags(&self, flags: FdFlags) -> Result<(), i32> {
        self.set_flags(self.armed.get() | flags)
    }

    /// Clear `flags`, except `ERROR` while a monitor watches or a reader
    /// waits with [`bsd_fail_readv_first_error`] set (both must see a
    /// hang-up as an error, not drain what is left).
    fn remove_flags(&self, flags: FdFlags) {
        let mut keep = self.armed.get() & !flags;
        if self.monitoring() || (self.fail_readv_first_error.get() && self.reading()) {
            keep |= FdFlags::ERROR;
        }
        let _ = self.set_flags(keep);
    }

    /// Record an error as sticky and return it; it fails the monitor.
    fn set_error(&self, errno: i32) -> i32 {
        if self.error.get() == 0 {
            log::debug!("bsd stream fd {}: error {errno}", self.raw.get());
            self.error.set(errno);
        }
        self.fail_monitor(errno);
        errno
    }

    /// Fail the monitor, if one watches, with `errno`; its callback runs
    /// from the loop (this is called from inside other operations).
    fn fail_monitor(&self, errno: i32) {
        let weak = self.monitor.take();
        if let Some(req) = weak.and_then(|w| w.upgrade()) {
            if req.is_in_progress() {
                log::debug!("bsd stream fd {}: monitor fails: {errno}", self.raw.get());
                req.defer_callback();
                req.error(errno as u64);
            }
        }
    }

    /// Put bytes that were read back in front of the read-ahead buffer: the
    /// next read gets them first.
    fn unread(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut ahead = self.ahead.borrow_mut();
        let pos = ahead.pos;
        let mut buf = Vec::with_capacity(bytes.len() + ahead.buf.len() - pos);
        buf.extend_from_slice(bytes);
        buf.extend_from_slice(&ahead.buf[pos..]);
        ahead.buf = buf;
        ahead.pos = 0;
    }

    /// The sticky error, or `EPIPE` after end of file.
    fn broken(&self) -> Option<i32> {
        self.refused()
            .or_else(|| self.eof.get().then_some(libc::EPIPE))
    }

    /// Why a read is refused now: the sticky error or end of file, once
    /// the bytes read ahead before it are used up (at once with
    /// [`bsd_fail_readv_first_error`]).
    fn read_refused(&self) -> Option<i32> {
        let errno = self.broken()?;
        let drain = self.raw.get() >= 0
            && !self.fail_readv_first_error.get()
            && self.ahead.borrow().buffered() > 0;
        (!drain).then_some(errno)
    }

    /// One `read` of up to `want` bytes, appended to `buf`'s spare capacity.
    /// `Ok(0)` if nothing is available now; `EPIPE` at end of file (and for
    /// every later read). Errors become sticky.
    fn read_once(&self, buf: &mut Vec<u8>, want: usize) -> Result<usize, i32> {
        if let Some(errno) = self.read_refused() {
            return Err(errno);
        }
        {
            let mut ahead = self.ahead.borrow_mut();
            // The usual case with read-ahead: the bytes are in memory.
            if ahead.buffered() > 0 {
                return Ok(ahead.take_into(buf, want));
            }
            if ahead.size == 0 {
                drop(ahead);
                return self.read_into(buf, want);
            }
        }
        self.read_ahead_once(buf, want)
    }

    /// `read_once` with read-ahead: serve buffered bytes, or refill the
    /// buffer with one `read` of up to its size, then serve.
    fn read_ahead_once(&self, buf: &mut Vec<u8>, want: usize) -> Result<usize, i32> {
        let mut ahead = self.ahead.borrow_mut();
        if ahead.buffered() == 0 {
            let size = ahead.size;
            if size == 0 {
                // Turned off while bytes were buffered; they are served now.
                drop(ahead);
                return self.read_into(buf, want);
            }
            let mut fill = std::mem::take(&mut ahead.buf);
            fill.clear();
            ahead.pos = 0;
            let result = self.read_into(&mut fill, size);
            ahead.buf = fill;
            if result? == 0 {
                return Ok(0);
            }
        }
        Ok(ahead.take_into(buf, want))
    }

    /// One `read(2)` of up to `want` bytes into `buf`'s spare capacity.
    fn read_into(&self, buf: &mut Vec<u8>, want: usize) -> Result<usize, i32> {
        if buf.try_reserve(want).is_err() {
            return Err(libc::ENOMEM);
        }
        let len = buf.len();
        let count = want.min(buf.capacity() - len).min(isize::MAX as usize);
        loop {
            // SAFETY: the pointer is to `buf`'s spare capacity, which holds
            // at least `count` bytes (reserved above) and is valid for
            // writes; read(2) writes at most `count` bytes there.
            let n = unsafe {
                libc::read(
                    self.raw.get(),
                    buf.as_mut_ptr().add(len).cast::<libc::c_void>(),
                    count,
                )
            };
            if n > 0 {
                // SAFETY: the kernel initialised the first `n <= count`
                // bytes of the spare capacity.
                unsafe { buf.set_len(len + n as usize) };
                log::trace!("bsd stream fd {}: read {n} of {want}", self.raw.get());
                return Ok(n as usize);
            }
            if n == 0 {
                self.eof.set(true);
                self.fail_monitor(libc::EPIPE);
                return Err(libc::EPIPE);
            }
            let errno = last_errno();
            if errno == libc::EINTR {
                continue;
            }
            if is_retry(errno) {
                return Ok(0);
            }
            return Err(self.set_error(errno));
        }
    }

    /// Read for the request's state until it is complete or nothing is
    /// available.
    fn read_step(&self, state: &mut ReadvState) -> Result<Progress, i32> {
        loop {
            let missing = state.target.saturating_sub(state.buf.len());
            if missing == 0 {
                return Ok(Progress::Complete);
            }
            let n = self.read_once(&mut state.buf, missing)?;
            if state.buf.len() >= state.min_target {
                return Ok(Progress::Complete);
            }
            // A short read from the kernel means the socket is drained: wait
            // for it. (The read-ahead buffer running dry is not: read again.)
            if n == 0 || self.ahead.borrow().size == 0 {
                // Unless the bytes read ahead before an error or end of
                // file are used up: nothing more will come.
                if let Some(errno) = self.read_refused() {
                    return Err(errno);
                }
                return Ok(Progress::Wait);
            }
        }
    }

    /// One `sendmsg` (or `writev`) of the unwritten part of the vector, up to
    /// `IOV_BATCH` buffers. Returns the bytes written and whether that was
    /// everything offered.
    fn write_some(&self, state: &WritevState) -> Result<(usize, bool), i32> {
        let mut iov = [const { MaybeUninit::<libc::iovec>::uninit() }; IOV_BATCH];
        let mut count = 0;
        let mut offered = 0usize;
        for (i, b) in state.bufs[state.index..].iter().enumerate() {
            if count == IOV_BATCH {
                break;
            }
            let part = if i == 0 { &b[state.offset..] } else { &b[..] };
            if part.is_empty() {
                continue;
            }
            iov[count].write(libc::iovec {
                iov_base: part.as_ptr() as *mut libc::c_void,
                iov_len: part.len(),
            });
            offered += part.len();
            count += 1;
        }
        if count == 0 {
            return Ok((0, true));
        }
        // SAFETY: the first `count` entries were initialised above.
        let iov: &[libc::iovec] =
            unsafe { std::slice::from_raw_parts(iov.as_ptr().cast::<libc::iovec>(), count) };
        loop {
            let n = if !self.is_socket {
                writev_nosigpipe(self.raw.get(), iov)
            } else if count == 1 {
                // SAFETY: the iovec describes a live slice of `state.bufs`.
                unsafe { libc::send(self.raw.get(), iov[0].iov_base, iov[0].iov_len, SEND_FLAGS) }
            } else {
                // SAFETY: a zeroed msghdr is valid (null name and control,
                // no flags); its iovecs point into `state.bufs`, which
                // outlives the call, and `count` of them are initialised.
                unsafe {
                    let mut msg: libc::msghdr = std::mem::zeroed();
                    msg.msg_iov = iov.as_ptr().cast_mut();
                    msg.msg_iovlen = count as _;
                    libc::sendmsg(self.raw.get(), &msg, SEND_FLAGS)
                }
            };
            if n >= 0 {
                let n = n as usize;
                log::trace!("bsd stream fd {}: wrote {n} of {offered}", self.raw.get());
                return Ok((n, n == offered));
            }
            let errno = last_errno();
            if errno == libc::EINTR {
                continue;
            }
            if is_retry(errno) || errno == libc::ENOBUFS {
                return Ok((0, false));
            }
            return Err(self.set_error(errno));
        }
    }

    /// Write for the request's state until it is complete or the kernel
    /// takes no more.
    fn write_step(&self, state: &mut WritevState) -> Result<Progress, i32> {
        if let Some(errno) = self.refused() {
            return Err(errno);
        }
        loop {
            if state.index >= state.bufs.len() {
                return Ok(Progress::Complete);
            }
            let (mut n, all) = self.write_some(state)?;
            state.total += n;
            // Advance over what was written, then over empty buffers.
            while n > 0 && state.index < state.bufs.len() {
                let left = state.bufs[state.index].len() - state.offset;
                if n < left {
                    state.offset += n;
                    n = 0;
                } else {
                    n -= left;
                    state.index += 1;
                    state.offset = 0;
                }
            }
            while state.index < state.bufs.len() && state.bufs[state.index].len() == state.offset {
                state.index += 1;
                state.offset = 0;
            }
            if state.index >= state.bufs.len() {
                return Ok(Progress::Complete);
            }
            if !all {
                // The kernel took less than offered: it is full.
                return Ok(Progress::Wait);
            }
        }
    }

    /// The fd handler (tsocket's `tstream_bsd_fde_handler`).
    fn fde_handler(self: &Rc<Self>, flags: FdFlags) {
        log::trace!("bsd stream fd {}: {flags:?}", self.raw.get());
        if flags.contains(FdFlags::ERROR) {
            let reader = self.live_reader();
            if flags.contains(FdFlags::READ)
                && reader.is_some()
                && !self.fail_readv_first_error.get()
            {
                // Drain what was received before the error.
                if let Some(reader) = reader {
                    self.readable(&reader);
                }
                return;
            }
            let writer = self.live_writer();
            if reader.is_none() && writer.is_none() {
                if self.live_monitor().is_some() {
                    // An idle stream broke: capture the error for the
                    // monitor (and every later operation).
                    let errno = match self.error.get() {
                        0 => match poll_or_sock_error(self.raw.get()) {
                            0 => libc::EPIPE,
                            e => e,
                        },
                        e => e,
                    };
                    self.set_error(errno);
                }
                // Nobody (else) to tell, e.g. the writer that armed ERROR
                // was dropped or timed out: stop watching. Without a
                // monitor the error is not captured, so a later reader
                // still gets the data buffered before it.
                let _ = self.set_flags(FdFlags::EMPTY);
                return;
            }
            if self.error.get() == 0 {
                let errno = match poll_or_sock_error(self.raw.get()) {
                    0 => libc::EPIPE,
                    e => e,
                };
                self.set_error(errno);
            }
            if flags.contains(FdFlags::WRITE) {
                if let Some(writer) = writer.as_ref() {
                    self.writable(writer);
                    return;
                }
            }
            if let Some(reader) = reader {
                self.readable(&reader);
                return;
            }
            if let Some(writer) = writer {
                self.writable(&writer);
            }
            return;
        }
        if flags.contains(FdFlags::WRITE) {
            // Writable wins: the reader runs in a later iteration.
            match self.live_writer() {
                Some(writer) => self.writable(&writer),
                None => {
                    self.remove_flags(FdFlags::WRITE | FdFlags::ERROR);
                }
            }
            return;
        }
        if flags.contains(FdFlags::READ) {
            match self.live_reader() {
                Some(reader) => self.readable(&reader),
                None => {
                    // READ stays armed after a read (lazily); nobody reads
                    // now, so stop being woken for it.
                    self.remove_flags(FdFlags::READ);
                }
            }
        }
    }

    /// Advance the reader; finish it when its buffer is full or on error.
    fn readable(&self, req: &ReadvReq) {
        let progress = {
            let mut reader = self.reader.borrow_mut();
            match reader.as_mut() {
                Some(reader) => self.read_step(&mut reader.state),
                None => return,
            }
        };
        if progress == Ok(Progress::Wait) {
            return;
        }
        // Finished: free the slot before the callback (which may read again).
        let Some(reader) = self.reader.take() else {
            return;
        };
        match progress {
            Ok(_) => {
                req.done(reader.state.buf);
            }
            Err(errno) => {
                drop(reader);
                req.error(errno as u64);
            }
        }
    }

    /// Advance the writer; finish it when everything is written or on error.
    fn writable(&self, req: &WritevReq) {
        let progress = {
            let mut writer = self.writer.borrow_mut();
            match writer.as_mut() {
                Some(writer) => self.write_step(&mut writer.state),
                None => return,
            }
        };
        if progress == Ok(Progress::Wait) {
            return;
        }
        let Some(writer) = self.writer.take() else {
            return;
        };
        self.remove_flags(FdFlags::WRITE | FdFlags::ERROR);
        match progress {
            Ok(_) => {
                req.done((writer.state.total, writer.state.bufs));
            }
            Err(errno) => {
                drop(writer);
                req.error(errno as u64);
            }
        }
    }
}

impl BsdStream {
    fn new(fd: OwnedFd, is_socket: bool) -> BsdStream {
        BsdStream {
            inner: Rc::new(BsdInner::new(fd, is_socket)),
        }
    }

    /// A read of exactly `want` bytes, or (`some`) of at least one and at
    /// most `want`.
    #[track_caller]
    fn read_send(&self, ctx: &Context, buf: Vec<u8>, want: usize, some: bool) -> ReadvReq {
        let inner = &self.inner;
        // The state lives in the stream: the request's own is empty (a
        // zero-sized box does not allocate).
        let req: ReadvReq = Req::new(ctx, Box::new(()));
        let len = buf.len();
        let Some(target) = len.checked_add(want).filter(|_| want > 0) else {
            req.error(libc::EINVAL as u64);
            return req.post();
        };
        let refused = if inner.live_reader().is_some() {
            Some(libc::EBUSY)
        } else {
            inner.read_refused()
        };
        if let Some(errno) = refused {
            req.error(errno as u64);
            return req.post();
        }
        // The fd event is checked before anything is read: bytes taken from
        // the socket for a request that then fails would be lost.
        if let Err(errno) = inner.ensure_fde(ctx) {
            req.error(errno as u64);
            return req.post();
        }
        let mut state = ReadvState {
            buf,
            target,
            min_target: if some { len + 1 } else { target },
        };
        // Bytes already read ahead never wake the fd event: use them now.
        if inner.optimize_readv.get() || inner.ahead.borrow().buffered() > 0 {
            match inner.read_step(&mut state) {
                Ok(Progress::Wait) => {}
                Ok(Progress::Complete) => {
                    req.done(state.buf);
                    return req.post();
                }
                Err(errno) => {
                    req.error(errno as u64);
                    return req.post();
                }
            }
        }
        // To fail at the first error the reader must be told about it: a
        // hang-up reaches a READ-only waiter as plain READ.
        let flags = if inner.fail_readv_first_error.get() {
            FdFlags::READ | FdFlags::ERROR
        } else {
            FdFlags::READ
        };
        if let Err(errno) = inner.add_flags(flags) {
            // What was read already goes back, for the next read.
            inner.unread(&state.buf[len..]);
            req.error(errno as u64);
            return req.post();
        }
        let old = inner.reader.replace(Some(Reader {
            req: req.downgrade(),
            state,
        }));
        drop(old);
        req
    }
}

impl StreamOps for BsdStream {
    fn name(&self) -> &'static str {
        "bsd"
    }

    fn pending_bytes(&self) -> Result<usize, Error> {
        let inner = &*self.inner;
        // Bytes read ahead are readable even after an error (see
        // `read_refused`).
        let buffered = inner.ahead.borrow().buffered();
        if buffered > 0 && inner.read_refused().is_none() {
            // Plus what the socket holds (which a failing FIONREAD does not
            // hide: those bytes are readable now either way).
            return Ok(buffered + fionread(inner.raw.get()).unwrap_or(0));
        }
        if let Some(errno) = inner.refused() {
            return Err(Error::new("pending_bytes", errno));
        }
        let value = fionread(inner.raw.get())
            .map_err(|errno| Error::new("pending_bytes", inner.set_error(errno)))?;
        if value > 0 {
            return Ok(value);
        }
        if !inner.is_socket {
            return Ok(0);
        }
        match poll_or_sock_error(inner.raw.get()) {
            0 => Ok(0),
            errno => Err(Error::new("pending_bytes", inner.set_error(errno))),
        }
    }

    #[track_caller]
    fn readv_send(&self, ctx: &Context, buf: Vec<u8>, want: usize) -> ReadvReq {
        self.read_send(ctx, buf, want, false)
    }

    #[track_caller]
    fn read_some_send(&self, ctx: &Context, buf: Vec<u8>, max: usize) -> ReadvReq {
        self.read_send(ctx, buf, max, true)
    }

    fn buffered(&self) -> usize {
        self.inner.ahead.borrow().buffered()
    }

    fn try_readv(&self, ctx: &Context, buf: &mut Vec<u8>, want: usize) -> Result<usize, Error> {
        let inner = &self.inner;
        if want == 0 || inner.reading() || inner.refuses(ctx) {
            return Ok(0);
        }
        inner
            .read_once(buf, want)
            .map_err(|errno| Error::new("readv", errno))
    }

    #[track_caller]
    fn writev_send(&self, ctx: &Context, bufs: Vec<Vec<u8>>) -> WritevReq {
        let inner = &self.inner;
        let req: WritevReq = Req::new(ctx, Box::new(()));
        if inner.live_writer().is_some() {
            req.error(libc::EBUSY as u64);
            return req.post();
        }
        // The fd event is checked before anything is written: a request that
        // fails after writing part of its bytes would corrupt the stream.
        if let Err(errno) = inner.ensure_fde(ctx) {
            req.error(errno as u64);
            return req.post();
        }
        let mut state = WritevState {
            bufs,
            index: 0,
            offset: 0,
            total: 0,
        };
        // Fast path: write now; only wait if the kernel did not take it all.
        match inner.write_step(&mut state) {
            Ok(Progress::Complete) => {
                req.done((state.total, state.bufs));
                return req.post();
            }
            Err(errno) => {
                req.error(errno as u64);
                return req.post();
            }
            Ok(Progress::Wait) => {}
        }
        if let Err(errno) = inner.add_flags(FdFlags::WRITE | FdFlags::ERROR) {
            if state.total > 0 {
                // Part of the vector went out: the stream cannot be used
                // for this protocol any more.
                inner.set_error(errno);
            }
            req.error(errno as u64);
            return req.post();
        }
        let old = inner.writer.replace(Some(Writer {
            req: req.downgrade(),
            state,
        }));
        drop(old);
        req
    }

    #[track_caller]
    fn disconnect_send(&self, ctx: &Context) -> DisconnectReq {
        let inner = &self.inner;
        let req: DisconnectReq = Req::new(ctx, Box::new(()));
        let fd = inner.fd.borrow_mut().take();
        let Some(fd) = fd else {
            req.error(libc::ENOTCONN as u64);
            return req.post();
        };
        // Drop the fd event before closing the fd.
        let fde = inner.fde.borrow_mut().take();
        drop(fde);
        inner.armed.set(FdFlags::EMPTY);
        drop(inner.reader.take());
        drop(inner.writer.take());
        // The generic layer fails the monitor with ECONNABORTED.
        drop(inner.monitor.take());
        inner.raw.set(-1);
        let raw = fd.into_raw_fd();
        // SAFETY: `raw` came from the OwnedFd just released, so this closes
        // it exactly once.
        let rc = unsafe { libc::close(raw) };
        if rc == -1 && last_errno() != libc::EINTR {
            req.error(last_errno() as u64);
        } else {
            req.done(());
        }
        req.post()
    }
    #[track_caller]
    fn monitor_send(&self, ctx: &Context) -> MonitorReq {
        let inner = &self.inner;
        let req: MonitorReq = Req::new(ctx, Box::new(()));
        if let Some(errno) = inner.broken() {
            req.error(errno as u64);
            return req.post();
        }
        if let Err(errno) = inner
            .ensure_fde(ctx)
            .and_then(|()| inner.add_flags(FdFlags::ERROR))
        {
            req.error(errno as u64);
            return req.post();
        }
        let old = inner.monitor.replace(Some(req.downgrade()));
        drop(old);
        req
    }
}

impl fmt::Debug for BsdStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BsdStream")
            .field("fd", &self.inner.raw.get())
            .field("error", &self.inner.error.get())
            .finish()
    }
}

/// A stream on a connected, non-blocking, close-on-exec socket.
pub(crate) fn from_socket(sock: Socket) -> Stream {
    let fd = OwnedFd::from(sock);
    Stream::new(BsdStream::new(fd, true))
}

/// A stream on an fd that is already connected (tsocket's
/// `tstream_bsd_existing_socket`): a stream socket (TCP, unix) or another
/// stream fd such as a pipe. The stream takes ownership and closes the fd
/// when the stream is dropped or disconnected. The fd is made non-blocking
/// and close-on-exec.
///
/// ```
/// use std::io::Write;
/// use std::os::unix::net::UnixStream;
///
/// let ctx = tevent::Context::new()?;
/// let (mut peer, ours) = UnixStream::pair()?;
/// let stream = tsocket::existing_socket(ours.into())?;
/// peer.write_all(b"hi")?;
/// let req = tsocket::readv_send(&ctx, &stream, Vec::new(), 2);
/// req.poll()?;
/// assert_eq!(tsocket::readv_recv(&req)?, b"hi");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// `EINVAL` for a datagram socket; the errno of `fcntl` or `getsockopt`
/// (`EBADF`, ...).
pub fn existing_socket(fd: OwnedFd) -> Result<Stream, Error> {
    let raw = fd.as_raw_fd();
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `ty` and `len` are valid for writes and `len` is its size.
    let rc = unsafe {
        libc::getsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut ty as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    let is_socket = if rc == 0 {
        if ty == libc::SOCK_DGRAM || ty == libc::SOCK_RAW {
            return Err(Error::new("existing_socket", libc::EINVAL));
        }
        true
    } else {
        match last_errno() {
            libc::ENOTSOCK => false,
            errno => return Err(Error::new("existing_socket", errno)),
        }
    };
    prepare_fd(raw).map_err(|errno| Error::new("existing_socket", errno))?;
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    if is_socket {
        let sock = socket2::SockRef::from(&fd);
        sock.set_nosigpipe(true)
            .map_err(|e| Error::from_io("existing_socket", &e))?;
    }
    Ok(Stream::new(BsdStream::new(fd, is_socket)))
}

/// A connected pair of unix stream sockets (tsocket's
/// `tstream_unix_socketpair`), non-blocking and close-on-exec.
///
/// # Errors
///
/// The errno of `socketpair` (`EMFILE`, ...).
pub fn unix_socketpair() -> Result<(Stream, Stream), Error> {
    let (a, b) = Socket::pair(Domain::UNIX, Type::STREAM, None)
        .map_err(|e| Error::from_io("socketpair", &e))?;
    for s in [&a, &b] {
        s.set_nonblocking(true)
            .map_err(|e| Error::from_io("socketpair", &e))?;
        // No MSG_NOSIGNAL there: the socket itself must not raise SIGPIPE.
        #[cfg(any(target_os = "macos", target_os = "ios"))]
        s.set_nosigpipe(true)
            .map_err(|e| Error::from_io("socketpair", &e))?;
    }
    Ok((from_socket(a), from_socket(b)))
}

/// Try reads at once in [`readv_send`](crate::readv_send) instead of
/// waiting for the socket to become readable first (tsocket's
/// `tstream_bsd_optimize_readv`). Useful when data is known to be there;
/// otherwise it costs a failed `read` per request. [`readv_pdu_send`](crate::readv_pdu_send)
/// already reads later vectors at once. Returns the previous setting, or
/// `false` (and does nothing) if `stream` is not a BSD stream.
pub fn bsd_optimize_readv(stream: &Stream, on: bool) -> bool {
    match stream.ops_as::<BsdStream>() {
        Some(bsd) => bsd.inner.optimize_readv.replace(on),
        None => false,
    }
}

/// Read ahead: each `read(2)` asks for up to `size` bytes, and later reads
/// are served from memory until the buffer runs dry; `0` (the default)
/// turns it off. Returns the previous size, or `0` (and does nothing) if
/// `stream` is not a BSD stream.
///
/// This is an extension of tsocket's BSD stream, for servers that read many
/// small PDUs: a PDU reader then makes one system call per buffer-full
/// instead of two per PDU, at the price of one copy of each byte (without
/// it, reads go straight into the caller's buffers). Bytes read ahead count
/// in [`pending_bytes`](crate::pending_bytes).
pub fn bsd_read_ahead(stream: &Stream, size: usize) -> usize {
    match stream.ops_as::<BsdStream>() {
        Some(bsd) => {
            let mut ahead = bsd.inner.ahead.borrow_mut();
            let old = std::mem::replace(&mut ahead.size, size);
            if ahead.buf.capacity() < size {
                let extra = size - ahead.buf.len();
                ahead.buf.reserve(extra);
            }
            old
        }
        None => 0,
    }
}

/// When the socket reports an error while data is still buffered, fail a
/// read at once instead of first delivering the buffered data (tsocket's
/// `tstream_bsd_fail_readv_first_error`; off by default). Returns the
/// previous setting, or `false` if `stream` is not a BSD stream.
pub fn bsd_fail_readv_first_error(stream: &Stream, on: bool) -> bool {
    match stream.ops_as::<BsdStream>() {
        Some(bsd) => bsd.inner.fail_readv_first_error.replace(on),
        None => false,
    }
}

/// The fd of a BSD stream (to set socket options), or `None` if `stream`
/// is not a BSD stream or was disconnected. The stream still owns it.
pub fn bsd_raw_fd(stream: &Stream) -> Option<RawFd> {
    let bsd = stream.ops_as::<BsdStream>()?;
    let raw = bsd.inner.raw.get();
    (raw >= 0).then_some(raw)
}
