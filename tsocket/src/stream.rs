//! Byte streams: the [`Stream`] handle, the [`StreamOps`] trait that
//! transports implement, and the request helpers built on them (tsocket's
//! `tstream_context` and `tstream_*_send`/`_recv`).
//!
//! # The model
//!
//! A [`Stream`] is a connected byte stream: a TCP connection, one end of a
//! unix socket pair, or anything else that implements [`StreamOps`] (a TLS
//! layer, an in-memory pair for tests, a fault-injecting wrapper). Every
//! operation is a [`tevent::Req`]: a `_send` function starts it and returns
//! the request, a callback runs when it finishes, and the matching `_recv`
//! function takes the result once. There are no futures.
//!
//! | tsocket (C) | here |
//! |---|---|
//! | `tstream_readv_send` / `_recv` | [`readv_send`] / [`readv_recv`] |
//! | (`read(2)`: whatever has arrived) | [`read_some_send`] / [`read_some_recv`] |
//! | `tstream_readv_pdu_send` / `_recv` (next-vector callback) | [`readv_pdu_send`] / [`readv_pdu_recv`] ([`NextVector`]) |
//! | `tstream_readv_pdu_queue_send` / `_recv` | [`readv_pdu_queue_send`] / [`readv_pdu_queue_recv`] |
//! | `tstream_writev_send` / `_recv` | [`writev_send`] / [`writev_recv`] |
//! | `tstream_writev_queue_send` / `_recv` | [`writev_queue_send`] / [`writev_queue_recv`] |
//! | `tstream_disconnect_send` / `_recv` | [`disconnect_send`] / [`disconnect_recv`] |
//! | `tstream_pending_bytes` | [`pending_bytes`] |
//! | `tstream_monitor_send` / `_recv` | [`monitor_send`] / [`monitor_recv`] |
//! | `tstream_inet_tcp_connect_send` / `_recv` | [`tcp_connect_send`](crate::tcp_connect_send) / [`tcp_connect_recv`](crate::tcp_connect_recv) |
//! | `tstream_unix_connect_send` / `_recv` | [`unix_connect_send`](crate::unix_connect_send) / [`unix_connect_recv`](crate::unix_connect_recv) |
//! | `tstream_unix_socketpair` | [`unix_socketpair`](crate::unix_socketpair) |
//! | `tstream_bsd_existing_socket` | [`existing_socket`](crate::existing_socket) |
//! | `tstream_bsd_optimize_readv`, `tstream_bsd_fail_readv_first_error` | [`bsd_optimize_readv`](crate::bsd_optimize_readv), [`bsd_fail_readv_first_error`](crate::bsd_fail_readv_first_error) |
//! | `tstream_context_create`, `tstream_context_ops` | [`Stream::new`], [`StreamOps`] |
//! | (servers accept raw fds in Samba) | [`Listener`](crate::Listener), [`accept_send`](crate::accept_send) |
//!
//! # Rules (tsocket's, kept)
//!
//! - **One read and one write at a time.** A second [`readv_send`] while a
//!   read is outstanding finishes with `EBUSY` (delivered from the loop, like
//!   every error of a `_send` function); the same for writes. Reads and
//!   writes may run at the same time. Use the queue helpers
//!   ([`writev_queue_send`], [`readv_pdu_queue_send`]) to serialise several
//!   writers or readers.
//! - A read completes only when **all** the bytes asked for have arrived; a
//!   write only when the **whole** vector has been handed to the kernel
//!   (partial writes are continued across wake-ups).
//! - End of file is `EPIPE` (and stays so for later reads; writes go on, as
//!   a peer that half-closed still reads). Errors are sticky on the BSD
//!   transport: once a read or write failed, every later operation fails
//!   with the same errno.
//! - Zero-length reads and writes are refused with `EINVAL`.
//! - [`disconnect_send`] is refused with `EBUSY` while a read or write is
//!   outstanding; while it runs other operations get `ECONNABORTED`, and
//!   after it every operation gets `ENOTCONN`.
//! - When the socket is readable and writable in one wake-up, only the
//!   writing side runs (the reader runs in the next iteration): this avoids
//!   deadlocks at the application level.
//! - An outstanding request may be dropped at any time: that cancels it, and
//!   the stream stays usable for the next request. (Bytes a cancelled request
//!   had already read or written stay consumed or sent.)
//!
//! Differences from C tsocket, on purpose:
//!
//! - Buffers are owned `Vec`s that move into the request and come back with
//!   the result (a read appends to the `Vec` you give it, reading straight
//!   into its spare capacity: pass a cleared `Vec` to reuse its allocation).
//!   On error the buffers are dropped with the request.
//! - The stream-level request helpers return the transport's own request
//!   ([`StreamReq`]) instead of wrapping it: the generic layer validates,
//!   records the request (weakly) as the outstanding read or write, and hands
//!   it back. That saves a request per operation.
//! - Dropping the last handle of a [`Stream`] while a transport request is
//!   outstanding fails that request with `ECONNABORTED`, delivered from the
//!   loop (C frees such requests silently; their callbacks never run).
//!
//! # Example: a length-prefixed PDU reader
//!
//! Each PDU is a 4-byte big-endian length followed by that many bytes. The
//! [`NextVector`] implementation below tells the engine what to read next:
//! first the header, then the payload, then "done". The engine reads exactly
//! that, into the caller's buffer; it never reads ahead and never copies.
//!
//! ```
//! use tevent::Context;
//! use tsocket::{NextRead, NextVector};
//!
//! /// Reads one PDU: a u32 big-endian length, then the payload.
//! #[derive(Debug)]
//! struct U32Pdu {
//!     max: usize,
//! }
//!
//! impl NextVector for U32Pdu {
//!     fn next_vector(&mut self, pdu: &mut Vec<u8>) -> Result<NextRead, tsocket::Error> {
//!         match pdu.len() {
//!             // Nothing yet: read the header.
//!             0 => Ok(NextRead::Read(4)),
//!             // The header: read the payload it announces.
//!             4 => {
//!                 let len = u32::from_be_bytes([pdu[0], pdu[1], pdu[2], pdu[3]]) as usize;
//!                 if len > self.max {
//!                     return Err(tsocket::Error::new("u32_pdu", libc::EMSGSIZE));
//!                 }
//!                 Ok(if len == 0 { NextRead::Done } else { NextRead::Read(len) })
//!             }
//!             // Header and payload: the PDU is complete.
//!             _ => Ok(NextRead::Done),
//!         }
//!     }
//! }
//!
//! let ctx = Context::new()?;
//! let (a, b) = tsocket::unix_socketpair()?;
//!
//! // Send two PDUs in one write.
//! let mut wire = Vec::new();
//! for payload in [&b"hello"[..], &b"tevent"[..]] {
//!     wire.extend_from_slice(&(payload.len() as u32).to_be_bytes());
//!     wire.extend_from_slice(payload);
//! }
//! let write = tsocket::writev_send(&ctx, &a, vec![wire]);
//!
//! // Read them back, one request per PDU, reusing one buffer.
//! let mut buf = Vec::with_capacity(64);
//! for expected in [&b"hello"[..], &b"tevent"[..]] {
//!     buf.clear();
//!     let req = tsocket::readv_pdu_send(&ctx, &b, buf, U32Pdu { max: 1 << 20 });
//!     req.poll()?;
//!     let (pdu, _framer) = tsocket::readv_pdu_recv(&req)?;
//!     assert_eq!(&pdu[4..], expected);
//!     buf = pdu;
//! }
//! write.poll()?;
//! assert_eq!(tsocket::writev_recv(&write)?, 19);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Writing a transport
//!
//! Implement [`StreamOps`] and wrap it with [`Stream::new`]; every helper of
//! this module then works on it. A transport's request is a [`StreamReq`]:
//! its state is a `Box<dyn Any>` that belongs to the transport (the generic
//! layer never looks inside), and it is finished with
//! [`Req::done`](tevent::Req::done) / [`Req::error`](tevent::Req::error)
//! (an errno), posted with [`Req::post`](tevent::Req::post) when it finishes
//! inside the `_send` method. The integration tests of this crate contain a
//! wrapper transport that delivers reads one byte at a time and can inject
//! an error after N bytes.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

use tevent::{Context, Queue, QueueEntry, Req, WeakReq};

use crate::Error;

/// The request type of transport operations: its state is type-erased so
/// that each transport keeps in it whatever it needs, and belongs to the
/// transport (callers must not touch it, nor replace the request's cleanup
/// function).
pub type StreamReq<T> = Req<Box<dyn Any>, T>;

/// A read request ([`readv_send`], [`StreamOps::readv_send`]): its result is
/// the caller's buffer with the bytes appended.
pub type ReadvReq = StreamReq<Vec<u8>>;

/// The result of a write: the number of bytes written and the caller's
/// buffers, handed back.
pub type WritevResult = (usize, Vec<Vec<u8>>);

/// A write request ([`writev_send`], [`StreamOps::writev_send`]): its result
/// is the number of bytes written and the caller's buffers.
pub type WritevReq = StreamReq<WritevResult>;

/// A disconnect request ([`disconnect_send`], [`StreamOps::disconnect_send`]).
pub type DisconnectReq = StreamReq<()>;

/// A monitor request ([`monitor_send`], [`StreamOps::monitor_send`]): it
/// never succeeds; it fails when the connection does.
pub type MonitorReq = StreamReq<()>;

/// The operations of a stream transport (tsocket's `tstream_context_ops`).
///
/// Implement it for a new transport and wrap the value with
/// [`Stream::new`]; the helpers of this module ([`readv_send`],
/// [`readv_pdu_send`], [`writev_queue_send`], ...) then work on it.
///
/// The generic layer calls these methods only after validating the
/// arguments (non-zero lengths, no overflow), and only while no other read
/// (for `readv_send`, `read_some_send`, `try_readv`) or write (for
/// `writev_send`) of the same stream is outstanding, and not after a
/// disconnect. A transport may still check, since the methods are public.
///
/// Contract of the `_send` methods: return a request that is in progress
/// (and finishes later, from the loop) or that is already finished **and
/// posted** ([`Req::post`]); never run the caller's callback inside the
/// method. Errors are errnos ([`Req::error`]): `EPIPE` for end of file.
pub trait StreamOps: Any {
    /// The transport's name, for `Debug` and logs (`"bsd"` for sockets).
    fn name(&self) -> &'static str;

    /// How many bytes can be read now without waiting (tsocket's
    /// `tstream_pending_bytes`); 0 if none.
    ///
    /// # Errors
    ///
    /// The transport's error (the BSD transport also reports a peer that
    /// hung up, and remembers the error for later operations).
    fn pending_bytes(&self) -> Result<usize, Error>;

    /// Append exactly `want` bytes (`want > 0`) to `buf` and finish with it.
    /// Implementations should read straight into `buf`'s spare capacity
    /// (reserving `want` more bytes), without an intermediate copy.
    fn readv_send(&self, ctx: &Context, buf: Vec<u8>, want: usize) -> ReadvReq;

    /// An optional fast path: append up to `want` bytes (`want > 0`) to
    /// `buf` from what is available **now**, without waiting, and return how
    /// many were appended (0 if none are available). A transport that would
    /// refuse a [`readv_send`](StreamOps::readv_send) on `ctx` appends
    /// nothing (so that the refusal takes no bytes).
    ///
    /// [`readv_pdu_send`] calls it for every vector after the first one (the
    /// data is then likely to have arrived already), which saves a request
    /// and a loop iteration per vector. The default appends nothing, so the
    /// engine falls back on [`readv_send`](StreamOps::readv_send).
    ///
    /// # Errors
    ///
    /// The transport's error; `EPIPE` for end of file.
    fn try_readv(&self, ctx: &Context, buf: &mut Vec<u8>, want: usize) -> Result<usize, Error> {
        let _ = (ctx, buf, want);
        Ok(0)
    }

    /// How many received bytes the transport holds in memory, ready for
    /// [`try_readv`](StreamOps::try_readv) without a system call (a
    /// read-ahead buffer). [`readv_pdu_send`] then reads the first vector
    /// from them at once too. The default is 0.
    fn buffered(&self) -> usize {
        0
    }

    /// Append at least one and at most `max` bytes (`max > 0`) to `buf`:
    /// what has arrived when the stream becomes readable, like `read(2)`.
    /// For byte relays (echo servers, proxies) that do not frame PDUs.
    ///
    /// The default reads exactly one byte with
    /// [`readv_send`](StreamOps::readv_send), which is correct but slow;
    /// transports should read what is there in one go (the BSD transport
    /// makes one `read` of up to `max` bytes).
    fn read_some_send(&self, ctx: &Context, buf: Vec<u8>, max: usize) -> ReadvReq {
        let _ = max;
        self.readv_send(ctx, buf, 1)
    }

    /// Deliver every byte of `bufs` (whose total is not 0) and finish with
    /// the number of bytes and the buffers. Partial writes are continued
    /// until the whole vector is written or an error occurs.
    fn writev_send(&self, ctx: &Context, bufs: Vec<Vec<u8>>) -> WritevReq;

    /// Close the transport (the BSD transport closes its fd). Later
    /// operations fail with `ENOTCONN`.
    fn disconnect_send(&self, ctx: &Context) -> DisconnectReq;

    /// Watch the connection (tsocket's optional `monitor_send`): return a
    /// request that stays in progress while the connection is healthy and
    /// fails with the connection's error when the transport sees one, also
    /// while no read or write is outstanding. It should finish through the
    /// loop ([`Req::defer_callback`]), since it is usually failed from inside
    /// another operation's completion.
    ///
    /// The default is a transport that cannot watch: the request fails with
    /// `ENOSYS`.
    fn monitor_send(&self, ctx: &Context) -> MonitorReq {
        failed_req(ctx, libc::ENOSYS)
    }
}

/// A weak reference to a transport request.
pub(crate) type WeakStreamReq<T> = WeakReq<Box<dyn Any>, T>;

/// Where the generic layer records an outstanding request.
type Slot<T> = RefCell<Option<WeakStreamReq<T>>>;

/// The generic layer's state (tsocket's `struct tstream_context`), with the
/// transport as its last, possibly unsized field: one allocation per stream.
struct StreamInner<O: ?Sized> {
    /// The outstanding read, if its request is alive and in progress.
    readv: Slot<Vec<u8>>,
    /// The outstanding write, if its request is alive and in progress.
    writev: Slot<WritevResult>,
    /// The disconnect request, once one was started.
    disconnect: Slot<()>,
    /// The monitor, if its request is alive and in progress.
    monitor: Slot<()>,
    /// A disconnect was started: no more reads and writes.
    disconnecting: Cell<bool>,
    ops: O,
}

/// Whether a slot's request is alive and has not finished.
fn busy<T: 'static>(slot: &Slot<T>) -> bool {
    slot.borrow()
        .as_ref()
        .and_then(WeakReq::upgrade)
        .is_some_and(|req| req.is_in_progress())
}

/// Record `req` in `slot` if it is still running.
fn occupy<T: 'static>(slot: &Slot<T>, req: &StreamReq<T>) {
    let weak = req.is_in_progress().then(|| req.downgrade());
    let old = slot.replace(weak);
    drop(old);
}

/// Fail a slot's live request with `ECONNABORTED`, from the loop.
fn abort_slot<T: 'static>(slot: &Slot<T>) {
    let weak = slot.take();
    if let Some(req) = weak.and_then(|w| w.upgrade()) {
        if req.is_in_progress() {
            req.defer_callback();
            req.error(libc::ECONNABORTED as u64);
        }
    }
}

impl<O: ?Sized> Drop for StreamInner<O> {
    fn drop(&mut self) {
        // The transport goes away with us: its outstanding requests would
        // never finish. Tell their callers, from the loop.
        abort_slot(&self.readv);
        abort_slot(&self.writev);
        abort_slot(&self.disconnect);
        abort_slot(&self.monitor);
    }
}

impl<O: ?Sized> StreamInner<O> {
    /// The errno for an operation refused because of a disconnect.
    fn closed_errno(&self) -> Option<i32> {
        if !self.disconnecting.get() {
            None
        } else if busy(&self.disconnect) {
            Some(libc::ECONNABORTED)
        } else {
            Some(libc::ENOTCONN)
        }
    }
}

/// A connected byte stream (tsocket's `tstream_context`): a cheap handle to
/// a transport ([`StreamOps`]) and the generic layer's state (which read and
/// write are outstanding, whether it was disconnected).
///
/// Clones refer to the same stream. The transport is dropped (for BSD
/// sockets: the fd closed) when the last handle is dropped; requests of the
/// helpers in this module keep a handle while they run. A transport request
/// still outstanding when the last handle goes ([`readv_send`],
/// [`writev_send`], ...: they do not keep the stream alive) fails with
/// `ECONNABORTED`, delivered from the loop.
///
/// Streams are made by [`unix_socketpair`](crate::unix_socketpair),
/// [`existing_socket`](crate::existing_socket),
/// [`tcp_connect_send`](crate::tcp_connect_send),
/// [`unix_connect_send`](crate::unix_connect_send),
/// [`accept_send`](crate::accept_send), or [`Stream::new`] for a transport of
/// your own.
#[derive(Clone)]
pub struct Stream {
    inner: Rc<StreamInner<dyn StreamOps>>,
}

impl Stream {
    /// Wrap a transport (tsocket's `tstream_context_create`).
    ///
    /// ```
    /// # use tevent::Context;
    /// # use tsocket::{DisconnectReq, Error, ReadvReq, Stream, StreamOps, StreamReq, WritevReq};
    /// /// A transport that is always at end of file.
    /// struct Empty;
    ///
    /// impl StreamOps for Empty {
    ///     fn name(&self) -> &'static str { "empty" }
    ///     fn pending_bytes(&self) -> Result<usize, Error> { Ok(0) }
    ///     fn readv_send(&self, ctx: &Context, _buf: Vec<u8>, _want: usize) -> ReadvReq {
    ///         let req: ReadvReq = StreamReq::new(ctx, Box::new(()));
    ///         req.error(libc::EPIPE as u64);
    ///         req.post()
    ///     }
    ///     fn writev_send(&self, ctx: &Context, bufs: Vec<Vec<u8>>) -> WritevReq {
    ///         let req: WritevReq = StreamReq::new(ctx, Box::new(()));
    ///         let n = bufs.iter().map(Vec::len).sum();
    ///         req.done((n, bufs)); // like /dev/null
    ///         req.post()
    ///     }
    ///     fn disconnect_send(&self, ctx: &Context) -> DisconnectReq {
    ///         let req: DisconnectReq = StreamReq::new(ctx, Box::new(()));
    ///         req.done(());
    ///         req.post()
    ///     }
    /// }
    ///
    /// let ctx = Context::new()?;
    /// let stream = Stream::new(Empty);
    /// let req = tsocket::readv_send(&ctx, &stream, Vec::new(), 4);
    /// req.poll()?;
    /// assert_eq!(tsocket::readv_recv(&req).unwrap_err().errno(), libc::EPIPE);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new<O: StreamOps>(ops: O) -> Stream {
        let inner: Rc<StreamInner<dyn StreamOps>> = Rc::new(StreamInner {
            readv: RefCell::new(None),
            writev: RefCell::new(None),
            disconnect: RefCell::new(None),
            monitor: RefCell::new(None),
            disconnecting: Cell::new(false),
            ops,
        });
        Stream { inner }
    }

    /// The transport's name (`"bsd"` for sockets).
    pub fn name(&self) -> &'static str {
        self.inner.ops.name()
    }

    /// The transport.
    pub fn ops(&self) -> &dyn StreamOps {
        &self.inner.ops
    }

    /// The transport as its concrete type, if it is a `T`.
    pub fn ops_as<T: StreamOps>(&self) -> Option<&T> {
        let any: &dyn Any = &self.inner.ops;
        any.downcast_ref::<T>()
    }

    /// Whether a read is outstanding.
    pub fn is_reading(&self) -> bool {
        busy(&self.inner.readv)
    }

    /// Whether a write is outstanding.
    pub fn is_writing(&self) -> bool {
        busy(&self.inner.writev)
    }

    /// Whether a [`monitor_send`] request is outstanding.
    pub fn is_monitored(&self) -> bool {
        busy(&self.inner.monitor)
    }

    /// Whether a disconnect was started (operations are then refused).
    pub fn is_disconnected(&self) -> bool {
        self.inner.disconnecting.get()
    }

    /// Whether two handles refer to the same stream.
    pub fn ptr_eq(&self, other: &Stream) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    /// The generic layer's fast-path read ([`StreamOps::try_readv`]): only
    /// when no read is outstanding and the stream is not disconnected.
    fn try_readv(&self, ctx: &Context, buf: &mut Vec<u8>, want: usize) -> Result<usize, Error> {
        if let Some(errno) = self.inner.closed_errno() {
            return Err(Error::new("readv", errno));
        }
        if busy(&self.inner.readv) {
            return Ok(0);
        }
        self.inner.ops.try_readv(ctx, buf, want)
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("transport", &self.name())
            .field("reading", &self.is_reading())
            .field("writing", &self.is_writing())
            .field("monitored", &self.is_monitored())
            .field("disconnected", &self.is_disconnected())
            .finish()
    }
}

/// Finish `req` with `err` (never with errno 0, which would leave it
/// running).
pub(crate) fn fail<S: 'static, T: 'static>(req: &Req<S, T>, err: Error) {
    let code = if err.errno() == 0 {
        libc::EIO as u64
    } else {
        err.code()
    };
    req.error(code);
}

/// A transport request that failed before it started, posted.
#[track_caller]
fn failed_req<T: 'static>(ctx: &Context, errno: i32) -> StreamReq<T> {
    let req: StreamReq<T> = Req::new(ctx, Box::new(()));
    req.error(errno as u64);
    req.post()
}

/// The errno for an invalid read of `want` more bytes after `len`.
fn check_read_len(len: usize, want: usize) -> Option<i32> {
    if want == 0 {
        return Some(libc::EINVAL);
    }
    match len.checked_add(want) {
        Some(total) if total <= isize::MAX as usize => None,
        _ => Some(libc::EMSGSIZE),
    }
}

/// Read exactly `want` more bytes into `buf` (tsocket's
/// `tstream_readv_send` with one vector): the request finishes when all of
/// them have arrived, with `buf` and the bytes appended to it.
///
/// The bytes go straight into `buf`'s spare capacity (reserved here): pass a
/// cleared `Vec` with enough capacity to read without allocating.
///
/// Refused (the request finishes with the error, from the loop): `EINVAL`
/// for `want == 0`, `EMSGSIZE` if the length overflows, `EBUSY` while
/// another read is outstanding, `ECONNABORTED` during a disconnect,
/// `ENOTCONN` after it.
///
/// ```
/// let ctx = tevent::Context::new()?;
/// let (a, b) = tsocket::unix_socketpair()?;
/// let write = tsocket::writev_send(&ctx, &a, vec![b"ping".to_vec()]);
/// let read = tsocket::readv_send(&ctx, &b, Vec::new(), 4);
/// read.poll()?;
/// assert_eq!(tsocket::readv_recv(&read)?, b"ping");
/// # drop(write);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[track_caller]
pub fn readv_send(ctx: &Context, stream: &Stream, buf: Vec<u8>, want: usize) -> ReadvReq {
    start_read(ctx, stream, buf, want, |ops, buf| {
        ops.readv_send(ctx, buf, want)
    })
}

/// The generic layer's part of every read: validate, refuse when closed or
/// busy (the refusal posted), else start `read` on the transport and record
/// it as the outstanding read.
#[track_caller]
fn start_read(
    ctx: &Context,
    stream: &Stream,
    buf: Vec<u8>,
    n: usize,
    read: impl FnOnce(&dyn StreamOps, Vec<u8>) -> ReadvReq,
) -> ReadvReq {
    let inner = &stream.inner;
    if let Some(errno) = check_read_len(buf.len(), n) {
        return failed_req(ctx, errno);
    }
    if let Some(errno) = inner.closed_errno() {
        return failed_req(ctx, errno);
    }
    if busy(&inner.readv) {
        return failed_req(ctx, libc::EBUSY);
    }
    let req = read(&inner.ops, buf);
    occupy(&inner.readv, &req);
    req
}

/// The buffer of a finished [`readv_send`] request, with the bytes appended.
///
/// # Errors
///
/// The read's error (`EPIPE` at end of file, `ETIMEDOUT` after an end time,
/// ...). The buffer is dropped with the request.
pub fn readv_recv(req: &ReadvReq) -> Result<Vec<u8>, Error> {
    req.recv().map_err(|e| Error::from_req("readv", e))
}

/// Read what has arrived: at least one byte, at most `max`, appended to
/// `buf` (the counterpart of `read(2)`; tsocket has no such request). The
/// request finishes at the first wake-up that finds data, with one `read`
/// on BSD sockets. Use it to relay bytes without framing them (an echo
/// server, a proxy); use [`readv_pdu_send`] to read PDUs.
///
/// Refused as [`readv_send`] (`EINVAL` for `max == 0`); end of file is
/// `EPIPE`.
///
/// ```
/// let ctx = tevent::Context::new()?;
/// let (a, b) = tsocket::unix_socketpair()?;
/// let write = tsocket::writev_send(&ctx, &a, vec![b"some bytes".to_vec()]);
/// let read = tsocket::read_some_send(&ctx, &b, Vec::with_capacity(4096), 4096);
/// read.poll()?;
/// assert_eq!(tsocket::read_some_recv(&read)?, b"some bytes");
/// # drop(write);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[track_caller]
pub fn read_some_send(ctx: &Context, stream: &Stream, buf: Vec<u8>, max: usize) -> ReadvReq {
    start_read(ctx, stream, buf, max, |ops, buf| {
        ops.read_some_send(ctx, buf, max)
    })
}

/// The buffer of a finished [`read_some_send`] request, with at least one
/// byte appended.
///
/// # Errors
///
/// As [`readv_recv`].
pub fn read_some_recv(req: &ReadvReq) -> Result<Vec<u8>, Error> {
    req.recv().map_err(|e| Error::from_req("read_some", e))
}

/// What a [`NextVector`] callback asks the PDU engine to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextRead {
    /// Append exactly this many more bytes to the PDU buffer (0 is refused
    /// with `EINVAL`), then ask again.
    Read(usize),
    /// The PDU is complete: finish the request with the buffer.
    Done,
}

/// The caller's side of [`readv_pdu_send`]: decides, from the bytes read so
/// far, how many bytes to read next (tsocket's `tstream_readv_pdu_next_vector_t`).
///
/// It is called once when the request starts and again each time the
/// previous vector was filled completely. The engine never reads more than
/// it is asked for, and never copies: the bytes are appended to the PDU
/// buffer the caller passed in.
///
/// Implemented for closures `FnMut(&mut Vec<u8>) -> Result<NextRead, Error>`
/// and for `&mut` references to implementations.
pub trait NextVector {
    /// What to read next, given the PDU buffer so far. The buffer may be
    /// inspected and changed (for example truncated after a header that is
    /// not wanted in the result).
    ///
    /// # Errors
    ///
    /// An error fails the request with it (for example `EMSGSIZE` for a
    /// length above the protocol's maximum).
    fn next_vector(&mut self, pdu: &mut Vec<u8>) -> Result<NextRead, Error>;
}

impl<F> NextVector for F
where
    F: FnMut(&mut Vec<u8>) -> Result<NextRead, Error>,
{
    fn next_vector(&mut self, pdu: &mut Vec<u8>) -> Result<NextRead, Error> {
        self(pdu)
    }
}

/// Where a [`readv_pdu_send`] request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PduStep {
    /// About to ask the next-vector callback what to read.
    Ask,
    /// A transport read of the current vector is in flight (`subreq`).
    Reading,
    /// The callback said the PDU is complete.
    Done,
    /// The callback or a read failed.
    Failed,
}

impl fmt::Display for PduStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PduStep::Ask => "ASK",
            PduStep::Reading => "READING",
            PduStep::Done => "DONE",
            PduStep::Failed => "FAILED",
        })
    }
}

/// The state of a [`readv_pdu_send`] request (opaque).
pub struct ReadvPduState<N> {
    stream: Stream,
    step: PduStep,
    /// The caller's callback; taken out while it runs and for the result.
    next: Option<N>,
    /// The PDU so far; out of the state while a read fills it.
    buf: Option<Vec<u8>>,
    /// How many vectors were asked for.
    vectors: usize,
    subreq: Option<ReadvReq>,
}

impl<N> fmt::Debug for ReadvPduState<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadvPduState")
            .field("stream", &self.stream)
            .field("step", &self.step)
            .field("vectors", &self.vectors)
            .field("len", &self.buf.as_ref().map(Vec::len))
            .finish()
    }
}

impl<N> ReadvPduState<N> {
    fn set_step(&mut self, step: PduStep) {
        log::trace!("readv_pdu: {} => {step}", self.step);
        self.step = step;
    }
}

/// A [`readv_pdu_send`] request: its result is the PDU buffer and the
/// caller's [`NextVector`], handed back.
pub type ReadvPduReq<N> = Req<ReadvPduState<N>, (Vec<u8>, N)>;

/// Read one PDU (tsocket's `tstream_readv_pdu_send`): `next` says how many
/// bytes to append to `buf`, again and again, until it says
/// [`NextRead::Done`]; the request then finishes with the buffer and `next`.
///
/// The first vector waits for the stream to become readable; later vectors
/// are first read from what has already arrived ([`StreamOps::try_readv`]),
/// without a request or a loop iteration, and only wait if the bytes are
/// not all there. Nothing is allocated per vector beyond what the buffer
/// must grow by.
///
/// Errors: the callback's error; `EINVAL` for [`NextRead::Read`]`(0)`; the
/// read errors of [`readv_send`] (`EPIPE` when the stream ends, also in the
/// middle of a PDU: the partial PDU is dropped, not reported).
///
/// See the [module documentation](self) for a complete example.
#[track_caller]
pub fn readv_pdu_send<N: NextVector + 'static>(
    ctx: &Context,
    stream: &Stream,
    buf: Vec<u8>,
    next: N,
) -> ReadvPduReq<N> {
    let req = Req::new(
        ctx,
        ReadvPduState {
            stream: stream.clone(),
            step: PduStep::Ask,
            next: Some(next),
            buf: Some(buf),
            vectors: 0,
            subreq: None,
        },
    );
    readv_pdu_ask_for_next_vector(ctx, &req);
    if !req.is_in_progress() {
        return req.post();
    }
    req
}

/// The engine's loop: ask the callback, read what it wants (straight away
/// if it is there), until it says done or something fails.
fn readv_pdu_ask_for_next_vector<N: NextVector + 'static>(ctx: &Context, req: &ReadvPduReq<N>) {
    // Take the callback and buffer out of the state once: the callback is
    // user code and must run without a borrow of the request.
    let (stream, next, buf, mut vectors) = {
        let mut state = req.state_mut();
        (
            state.stream.clone(),
            state.next.take(),
            state.buf.take(),
            state.vectors,
        )
    };
    let (Some(mut next), Some(mut buf)) = (next, buf) else {
        // Cannot happen: only this function takes them, and puts them back
        // before it returns. Fail rather than panic.
        pdu_failed(req, Error::new("readv_pdu", libc::EINVAL));
        return;
    };
    loop {
        let want = match next.next_vector(&mut buf) {
            // The callback failed: so does the request, with its error.
            Err(err) => return pdu_failed(req, err),
            // The PDU is complete: hand back the buffer and the callback.
            Ok(NextRead::Done) => {
                req.state_mut().set_step(PduStep::Done);
                req.done((buf, next));
                return;
            }
            // An empty vector: the caller's bug (tsocket: EINVAL).
            Ok(NextRead::Read(0)) => return pdu_failed(req, Error::new("readv_pdu", libc::EINVAL)),
            Ok(NextRead::Read(want)) => want,
        };
        if let Some(errno) = check_read_len(buf.len(), want) {
            return pdu_failed(req, Error::new("readv_pdu", errno));
        }
        // Read `want` more bytes: from what has arrived if this is not the
        // first vector (the data has likely arrived) or the transport holds
        // bytes in memory, else (or for the rest) through a request.
        let mut missing = want;
        if vectors > 0 || stream.ops().buffered() > 0 {
            match stream.try_readv(ctx, &mut buf, want) {
                Ok(got) => missing = want - got.min(want),
                Err(err) => return pdu_failed(req, err),
            }
        }
        vectors += 1;
        if missing == 0 {
            // All there already: ask for the next vector.
            continue;
        }
        let subreq = readv_send(ctx, &stream, buf, missing);
        subreq.set_parent_callback(req, readv_pdu_readv_done);
        let mut state = req.state_mut();
        state.next = Some(next);
        state.vectors = vectors;
        state.subreq = Some(subreq);
        state.set_step(PduStep::Reading);
        return;
    }
}

/// Fail a PDU read (the callback and the partial PDU are dropped).
fn pdu_failed<N: NextVector + 'static>(req: &ReadvPduReq<N>, err: Error) {
    req.state_mut().set_step(PduStep::Failed);
    fail(req, err);
}

/// A vector was read (or the read failed).
fn readv_pdu_readv_done<N: NextVector + 'static>(
    subreq: &ReadvReq,
    req: &Req<ReadvPduState<N>, (Vec<u8>, N)>,
) {
    let result = readv_recv(subreq);
    let old = {
        let mut state = req.state_mut();
        state.subreq.take()
    };
    drop(old);
    match result {
        Ok(buf) => {
            {
                let mut state = req.state_mut();
                state.buf = Some(buf);
                state.set_step(PduStep::Ask);
            }
            let Some(ctx) = req.context() else {
                return;
            };
            readv_pdu_ask_for_next_vector(&ctx, req);
        }
        Err(err) => {
            req.state_mut().set_step(PduStep::Failed);
            fail(req, err);
        }
    }
}

/// The PDU and the caller's [`NextVector`] of a finished [`readv_pdu_send`]
/// request.
///
/// # Errors
///
/// The callback's error, or the read's (`EPIPE` at end of file); the
/// partial PDU is dropped.
pub fn readv_pdu_recv<N: NextVector + 'static>(
    req: &ReadvPduReq<N>,
) -> Result<(Vec<u8>, N), Error> {
    req.recv().map_err(|e| Error::from_req("readv_pdu", e))
}

/// The state of a [`readv_pdu_queue_send`] request (opaque).
pub struct ReadvPduQueueState<N: 'static> {
    stream: Stream,
    /// The buffer and callback, until the request's turn comes.
    pending: Option<(Vec<u8>, N)>,
    subreq: Option<ReadvPduReq<N>>,
    entry: Option<QueueEntry>,
}

impl<N: 'static> fmt::Debug for ReadvPduQueueState<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadvPduQueueState")
            .field("stream", &self.stream)
            .field("waiting", &self.pending.is_some())
            .field("reading", &self.subreq.is_some())
            .finish()
    }
}

/// A [`readv_pdu_queue_send`] request.
pub type ReadvPduQueueReq<N> = Req<ReadvPduQueueState<N>, (Vec<u8>, N)>;

/// [`readv_pdu_send`] serialised through `queue` (tsocket's
/// `tstream_readv_pdu_queue_send`): the read starts when the request
/// reaches the head of the queue (at once if the queue is empty).
///
/// **A request leaves the queue only when it is received
/// ([`readv_pdu_queue_recv`]) or dropped**, not when it finishes: receive or
/// drop finished requests, or the next reader never starts.
#[track_caller]
pub fn readv_pdu_queue_send<N: NextVector + 'static>(
    ctx: &Context,
    stream: &Stream,
    queue: &Queue,
    buf: Vec<u8>,
    next: N,
) -> ReadvPduQueueReq<N> {
    let req = Req::new(
        ctx,
        ReadvPduQueueState {
            stream: stream.clone(),
            pending: Some((buf, next)),
            subreq: None,
            entry: None,
        },
    );
    crate::queued::enter_queue(req, queue, readv_pdu_queue_trigger, |state| {
        &mut state.entry
    })
}

/// The request's turn in the queue: start the read.
fn readv_pdu_queue_trigger<N: NextVector + 'static>(req: &ReadvPduQueueReq<N>) {
    if !req.is_in_progress() {
        // Finished while it waited (an end time): it must not read. It
        // leaves the queue when received or dropped.
        return;
    }
    let (stream, pending) = {
        let mut state = req.state_mut();
        (state.stream.clone(), state.pending.take())
    };
    let (Some((buf, next)), Some(ctx)) = (pending, req.context()) else {
        return;
    };
    let subreq = readv_pdu_send(&ctx, &stream, buf, next);
    subreq.set_parent_callback(req, readv_pdu_queue_done);
    req.state_mut().subreq = Some(subreq);
}

/// The queued read finished.
fn readv_pdu_queue_done<N: NextVector + 'static>(
    subreq: &ReadvPduReq<N>,
    req: &Req<ReadvPduQueueState<N>, (Vec<u8>, N)>,
) {
    let result = readv_pdu_recv(subreq);
    let old = req.state_mut().subreq.take();
    drop(old);
    match result {
        Ok(value) => {
            req.done(value);
        }
        Err(err) => fail(req, err),
    }
}

/// The PDU and callback of a finished [`readv_pdu_queue_send`] request;
/// receiving it lets the next queued request start.
///
/// # Errors
///
/// As [`readv_pdu_recv`].
pub fn readv_pdu_queue_recv<N: NextVector + 'static>(
    req: &ReadvPduQueueReq<N>,
) -> Result<(Vec<u8>, N), Error> {
    req.recv()
        .map_err(|e| Error::from_req("readv_pdu_queue", e))
}

/// Write every byte of `bufs` (tsocket's `tstream_writev_send`): the request
/// finishes when the whole vector has been handed to the kernel, with the
/// number of bytes (and the buffers, see [`writev_recv_bufs`]).
///
/// The BSD transport writes at once if it can (one `sendmsg` for the whole
/// vector) and only waits for the socket to become writable if the kernel
/// took part of it; the rest is written across wake-ups.
///
/// Refused (from the loop): `EINVAL` if the vector holds no byte, `EBUSY`
/// while another write is outstanding (use [`writev_queue_send`] for several
/// writers), `ECONNABORTED` during a disconnect, `ENOTCONN` after it.
#[track_caller]
pub fn writev_send(ctx: &Context, stream: &Stream, bufs: Vec<Vec<u8>>) -> WritevReq {
    let inner = &stream.inner;
    let mut total: usize = 0;
    for b in &bufs {
        match total.checked_add(b.len()) {
            Some(t) => total = t,
            None => return failed_req(ctx, libc::EMSGSIZE),
        }
    }
    if total == 0 {
        return failed_req(ctx, libc::EINVAL);
    }
    if let Some(errno) = inner.closed_errno() {
        return failed_req(ctx, errno);
    }
    if busy(&inner.writev) {
        return failed_req(ctx, libc::EBUSY);
    }
    let req = inner.ops.writev_send(ctx, bufs);
    occupy(&inner.writev, &req);
    req
}

/// The number of bytes written by a finished [`writev_send`] request (the
/// whole vector).
///
/// # Errors
///
/// The write's error (`EPIPE` or `ECONNRESET` when the peer is gone,
/// `ETIMEDOUT` after an end time, ...).
pub fn writev_recv(req: &WritevReq) -> Result<usize, Error> {
    writev_recv_bufs(req).map(|(n, _)| n)
}

/// Like [`writev_recv`], and hands back the buffers for reuse.
///
/// # Errors
///
/// As [`writev_recv`].
pub fn writev_recv_bufs(req: &WritevReq) -> Result<(usize, Vec<Vec<u8>>), Error> {
    req.recv().map_err(|e| Error::from_req("writev", e))
}

/// The state of a [`writev_queue_send`] request (opaque).
pub struct WritevQueueState {
    stream: Stream,
    /// The buffers, until the request's turn comes.
    bufs: Option<Vec<Vec<u8>>>,
    subreq: Option<WritevReq>,
    entry: Option<QueueEntry>,
}

impl fmt::Debug for WritevQueueState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WritevQueueState")
            .field("stream", &self.stream)
            .field("waiting", &self.bufs.is_some())
            .field("writing", &self.subreq.is_some())
            .finish()
    }
}

/// A [`writev_queue_send`] request: its result is the number of bytes and
/// the buffers.
pub type WritevQueueReq = Req<WritevQueueState, (usize, Vec<Vec<u8>>)>;

/// [`writev_send`] serialised through `queue` (tsocket's
/// `tstream_writev_queue_send`): the way for several writers to share a
/// stream. The write starts when the request reaches the head of the queue;
/// with an empty queue it starts at once, inside this call (tevent's
/// `add_optimize_empty`).
///
/// **A request leaves the queue only when it is received
/// ([`writev_queue_recv`]) or dropped**, not when it finishes: receive (or
/// drop) each finished request in its callback, or the next writer never
/// starts.
///
/// ```
/// let ctx = tevent::Context::new()?;
/// let (a, b) = tsocket::unix_socketpair()?;
/// let queue = tevent::Queue::new(&ctx, "writers");
/// let reqs: Vec<_> = ["one ", "two ", "three"]
///     .iter()
///     .map(|s| {
///         let req = tsocket::writev_queue_send(&ctx, &a, &queue, vec![s.as_bytes().to_vec()]);
///         req.set_callback(|req| {
///             tsocket::writev_queue_recv(req).unwrap(); // lets the next one start
///         });
///         req
///     })
///     .collect();
/// let read = tsocket::readv_send(&ctx, &b, Vec::new(), 13);
/// read.poll()?;
/// assert_eq!(tsocket::readv_recv(&read)?, b"one two three");
/// # drop(reqs);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[track_caller]
pub fn writev_queue_send(
    ctx: &Context,
    stream: &Stream,
    queue: &Queue,
    bufs: Vec<Vec<u8>>,
) -> WritevQueueReq {
    let req = Req::new(
        ctx,
        WritevQueueState {
            stream: stream.clone(),
            bufs: Some(bufs),
            subreq: None,
            entry: None,
        },
    );
    crate::queued::enter_queue(req, queue, writev_queue_trigger, |state| &mut state.entry)
}

/// The request's turn in the queue: start the write.
fn writev_queue_trigger(req: &WritevQueueReq) {
    if !req.is_in_progress() {
        // Finished while it waited (an end time): its bytes must not go
        // out. It leaves the queue when received or dropped.
        return;
    }
    let (stream, bufs) = {
        let mut state = req.state_mut();
        (state.stream.clone(), state.bufs.take())
    };
    let (Some(bufs), Some(ctx)) = (bufs, req.context()) else {
        return;
    };
    let subreq = writev_send(&ctx, &stream, bufs);
    subreq.set_parent_callback(req, writev_queue_done);
    req.state_mut().subreq = Some(subreq);
}

/// The queued write finished.
fn writev_queue_done(subreq: &WritevReq, req: &Req<WritevQueueState, (usize, Vec<Vec<u8>>)>) {
    let result = writev_recv_bufs(subreq);
    let old = req.state_mut().subreq.take();
    drop(old);
    match result {
        Ok(value) => {
            req.done(value);
        }
        Err(err) => fail(req, err),
    }
}

/// The number of bytes written by a finished [`writev_queue_send`] request;
/// receiving it lets the next queued request start.
///
/// # Errors
///
/// As [`writev_recv`].
pub fn writev_queue_recv(req: &WritevQueueReq) -> Result<usize, Error> {
    writev_queue_recv_bufs(req).map(|(n, _)| n)
}

/// Like [`writev_queue_recv`], and hands back the buffers for reuse.
///
/// # Errors
///
/// As [`writev_recv`].
pub fn writev_queue_recv_bufs(req: &WritevQueueReq) -> Result<(usize, Vec<Vec<u8>>), Error> {
    req.recv().map_err(|e| Error::from_req("writev_queue", e))
}

/// Disconnect the stream (tsocket's `tstream_disconnect_send`); for BSD
/// sockets this closes the fd. Afterwards every operation fails with
/// `ENOTCONN`.
///
/// Refused (from the loop): `EBUSY` while a read or write is outstanding
/// (drop or finish it first), `EALREADY` while a disconnect runs, `ENOTCONN`
/// after one.
#[track_caller]
pub fn disconnect_send(ctx: &Context, stream: &Stream) -> DisconnectReq {
    let inner = &stream.inner;
    if inner.disconnecting.get() {
        let errno = if busy(&inner.disconnect) {
            libc::EALREADY
        } else {
            libc::ENOTCONN
        };
        return failed_req(ctx, errno);
    }
    if busy(&inner.readv) || busy(&inner.writev) {
        return failed_req(ctx, libc::EBUSY);
    }
    inner.disconnecting.set(true);
    let req = inner.ops.disconnect_send(ctx);
    occupy(&inner.disconnect, &req);
    // Nothing is left to watch (tsocket fails the monitor the same way).
    abort_slot(&inner.monitor);
    req
}

/// The outcome of a finished [`disconnect_send`] request.
///
/// # Errors
///
/// The transport's error (for BSD sockets, what `close` reported).
pub fn disconnect_recv(req: &DisconnectReq) -> Result<(), Error> {
    req.recv().map_err(|e| Error::from_req("disconnect", e))
}

/// Watch the connection for failure (tsocket's `tstream_monitor_send`):
/// the request stays in progress while the connection is healthy and fails
/// when it breaks, also while the stream is idle (no read or write
/// outstanding), which is how a server notices a client that went away
/// between requests. Take the error with [`monitor_recv`].
///
/// The monitor fails with the error a read or write of the stream got (the
/// BSD transport: `EPIPE` at end of file, `ECONNRESET`, ...), with the
/// error the socket reports when it hangs up while idle, and with
/// `ECONNABORTED` when the stream is disconnected or dropped. Its callback
/// always runs from the loop, never inside the operation that failed. It
/// does not keep the stream alive.
///
/// Errors (the request fails at once, posted): `EALREADY` if a monitor is
/// already running on the stream, `ECONNABORTED` after a disconnect,
/// `ENOSYS` if the transport cannot watch ([`StreamOps::monitor_send`]).
///
/// ```
/// use tevent::Context;
///
/// let ctx = Context::new()?;
/// let (ours, theirs) = tsocket::unix_socketpair()?;
/// let monitor = tsocket::monitor_send(&ctx, &ours);
/// drop(theirs); // the peer goes away while nothing is read or written
/// monitor.poll()?;
/// let err = tsocket::monitor_recv(&monitor);
/// assert!(matches!(err.errno(), libc::EPIPE | libc::ECONNRESET));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[track_caller]
pub fn monitor_send(ctx: &Context, stream: &Stream) -> MonitorReq {
    let inner = &stream.inner;
    if inner.disconnecting.get() {
        return failed_req(ctx, libc::ECONNABORTED);
    }
    if busy(&inner.monitor) {
        return failed_req(ctx, libc::EALREADY);
    }
    let req = inner.ops.monitor_send(ctx);
    occupy(&inner.monitor, &req);
    req
}

/// The error that ended a [`monitor_send`] request (tsocket's
/// `tstream_monitor_recv`, which always fails). Asking before the request
/// finished gives `EINVAL`, as for any request; receiving ends it.
pub fn monitor_recv(req: &MonitorReq) -> Error {
    match req.recv() {
        Err(e) => Error::from_req("monitor", e),
        // A transport that "succeeded": the monitor ended without a reason.
        Ok(()) => Error::new("monitor", libc::ECONNABORTED),
    }
}

/// How many bytes can be read now without waiting (tsocket's
/// `tstream_pending_bytes`).
///
/// # Errors
///
/// `ENOTCONN` (or `ECONNABORTED` while disconnecting) after a disconnect;
/// the transport's error otherwise. On BSD sockets, with nothing to read, a
/// peer that hung up is reported (`ECONNRESET` after its half-close,
/// `EPIPE` after a full hang-up, or the socket's error) and remembered for
/// later operations, as tsocket does.
pub fn pending_bytes(stream: &Stream) -> Result<usize, Error> {
    if let Some(errno) = stream.inner.closed_errno() {
        return Err(Error::new("pending_bytes", errno));
    }
    stream.inner.ops.pending_bytes()
}
