//! Datagram transports (tsocket's `tdgram`): a [`Dgram`] handle, the
//! asynchronous helpers [`recvfrom_send`], [`sendto_send`],
//! [`sendto_queue_send`] and [`disconnect_send`], and the BSD socket
//! transport ([`udp_socket`], [`udp_broadcast_socket`],
//! [`unix_dgram_socket`], [`existing_socket`]).
//!
//! # C to Rust
//!
//! | tsocket | here |
//! |---|---|
//! | `struct tdgram_context` | [`Dgram`] |
//! | `struct tdgram_context_ops`, `tdgram_context_create` | [`DgramOps`], [`Dgram::new`] |
//! | `tdgram_context_data` | [`Dgram::transport`] |
//! | `tdgram_recvfrom_send` / `_recv` | [`recvfrom_send`] / [`recvfrom_recv`] |
//! | `tdgram_sendto_send` / `_recv` | [`sendto_send`] / [`sendto_recv`] |
//! | `tdgram_sendto_queue_send` / `_recv` | [`sendto_queue_send`] / [`sendto_queue_recv`] |
//! | `tdgram_disconnect_send` / `_recv` | [`disconnect_send`] / [`disconnect_recv`] |
//! | `tdgram_inet_udp_socket` | [`udp_socket`] |
//! | `tdgram_inet_udp_broadcast_socket` | [`udp_broadcast_socket`] |
//! | `tdgram_unix_socket` | [`unix_dgram_socket`] |
//! | `tdgram_bsd_existing_socket` | [`existing_socket`] |
//!
//! The `mem_ctx` argument disappears: a request is owned by whoever holds
//! it, and **dropping an unfinished request cancels it** (talloc_free). A
//! `_recv` function returns `Result<_, `[`Error`]`>` instead of `-1` and
//! `*perrno`.
//!
//! # Rules (the generic layer)
//!
//! Every helper goes through the generic layer, which enforces tsocket's
//! rules for every transport alike:
//!
//! - **At most one recvfrom and one sendto at a time** on a [`Dgram`] (and
//!   its clones): a second one fails with `EBUSY`. Use
//!   [`sendto_queue_send`] to have many senders take turns.
//! - A datagram must not be empty: `EINVAL`.
//! - [`disconnect_send`] fails with `EBUSY` while a recvfrom or sendto is
//!   outstanding, and with `EALREADY` while another disconnect is. While a
//!   disconnect is in flight, new operations fail with `ECONNABORTED`;
//!   after it succeeded, every operation fails with `ENOTCONN`.
//! - An operation is "outstanding" from its `_send` until it finishes
//!   (done, error, or its [end time](tevent::Req::set_endtime) passes) or is
//!   dropped unfinished, whichever comes first: a finished request that has
//!   not been received no longer blocks the next one. (A request that times
//!   out cancels the transport's work at once.)
//! - **Completion is always delivered from the loop**, never inside a
//!   `_send` function, even when the work was done at once (a datagram
//!   handed to the kernel on the first try, an error found while checking
//!   the arguments).
//! - A request keeps its [`Dgram`] alive: dropping your handle while a
//!   request is outstanding does not cancel the request.
//!
//! # The BSD transport
//!
//! - Sockets are non-blocking and close-on-exec; IPv6 sockets are
//!   `IPV6_V6ONLY`. One [`tevent::FdEvent`] per socket, created on first
//!   need: it asks for `READ` while a recvfrom is outstanding and for
//!   `WRITE` only while a sendto waits for room, and for nothing otherwise
//!   (so [`Context::loop_wait`](tevent::Context::loop_wait) can return).
//! - **sendto** tries to send at once; only if the kernel says `EAGAIN` does
//!   it wait for the socket to become writable. `MSG_NOSIGNAL` is used, so
//!   `SIGPIPE` is never raised. If the kernel answers `EMSGSIZE`, `SO_SNDBUF`
//!   is raised (never lowered) to the datagram's size rounded up to 1 KiB and
//!   the send is retried once, as tsocket does; this lets a unix datagram
//!   larger than the default send buffer go through. If that does not help
//!   (a UDP datagram over 65,507 bytes, a size above the system's
//!   `net.core.wmem_max`), the request fails with `EMSGSIZE`.
//! - **recvfrom** waits for the socket to become readable (it does not try
//!   at once: tsocket's `tdgram_bsd_optimize_recvfrom` is not ported), then
//!   receives the next datagram whole, whatever its size: on Linux the size
//!   is read first with `recv(MSG_PEEK | MSG_TRUNC)` (which, unlike
//!   `FIONREAD`, tells "no datagram" from "an empty datagram"), then a
//!   buffer of exactly that size is filled. An empty datagram is delivered
//!   as an empty `Vec`. Elsewhere `FIONREAD` sizes the buffer.
//! - **Writable first:** when one wake-up reports the socket both readable
//!   and writable, only the waiting sendto runs; the recvfrom runs in a
//!   later iteration. This is tsocket's rule ("this avoids deadlocks at the
//!   application level").
//! - A datagram from an unbound unix socket comes from the unnamed address
//!   (`unix:`), which cannot be replied to.
//!
//! Not guaranteed: a socket that is **not connected**, sending over unix
//! datagrams to a receiver whose queue is full, gets `EAGAIN` while Linux
//! still reports it writable; the sendto then retries on every iteration
//! until the receiver makes room (it does not block the loop, but it burns
//! CPU). A connected unix datagram socket ([`unix_dgram_socket`] with a
//! remote) waits properly. UDP gives no such back-pressure at all: the
//! kernel drops what the receiver has no room for.
//!
//! # Example
//!
//! A minimal program: one socket sends, another receives.
//!
//! ```
//! use tevent::Context;
//! use tsocket::{dgram, Address};
//!
//! let ctx = Context::new()?;
//! let local: Address = "ipv4:127.0.0.1:0".parse()?; // port 0: any free port
//! let server = dgram::udp_socket(&local, None)?;
//! let client = dgram::udp_socket(&local, None)?;
//! let server_addr = server.local_address()?;
//!
//! let recv = dgram::recvfrom_send(&ctx, &server);
//! recv.set_callback(|req| {
//!     let (data, src) = dgram::recvfrom_recv(req).expect("a datagram");
//!     println!("{} bytes from {src}", data.len());
//! });
//! let send = dgram::sendto_send(&ctx, &client, b"ping".to_vec(), Some(&server_addr));
//!
//! send.poll()?; // run the loop until the datagram is sent
//! assert_eq!(dgram::sendto_recv(&send)?, 4);
//! ctx.loop_wait()?; // until nothing is left to do: the callback has run
//! assert!(!recv.is_in_progress());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! See `examples/udp_echo.rs` in the repository for an echo server and
//! client.

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::panic::Location;
use std::rc::Rc;

use tevent::{Context, Queue, QueueEntry, Req, ReqError, ReqState};

use crate::{Address, Error};

pub use crate::bsd_dgram::{existing_socket, udp_broadcast_socket, udp_socket, unix_dgram_socket};

/// The request type of every transport operation ([`DgramOps`]): the state
/// is type-erased, so a transport can keep whatever it needs in it.
pub type DgramReq<T> = Req<Box<dyn Any>, T>;

/// A request made by [`recvfrom_send`]; take its result with
/// [`recvfrom_recv`]: the datagram and who sent it.
pub type RecvfromReq = Req<OpState<(Vec<u8>, Address)>, (Vec<u8>, Address)>;

/// A request made by [`sendto_send`]; take its result with [`sendto_recv`].
pub type SendtoReq = Req<OpState<usize>, usize>;

/// A request made by [`sendto_queue_send`]; take its result with
/// [`sendto_queue_recv`].
pub type SendtoQueueReq = Req<SendtoQueueState, usize>;

/// A request made by [`disconnect_send`]; take its result with
/// [`disconnect_recv`].
pub type DisconnectReq = Req<OpState<()>, ()>;

/// The operations of a datagram transport (tsocket's
/// `tdgram_context_ops`). Wrap an implementation in a [`Dgram`] with
/// [`Dgram::new`] and every helper of this module works on it.
///
/// Contract for implementations:
///
/// - Each `_send` returns a request ([`DgramReq`]) on `ctx`, created with
///   [`Req::new`], and finishes it with [`done`](Req::done) or
///   [`error`](Req::error)`(errno as u64)`.
/// - **Completion is delivered from the loop**: a request finished inside
///   its `_send` must be returned with [`post`](Req::post).
/// - Dropping an unfinished request cancels the operation; the transport
///   must then stay usable for the next one (a
///   [cleanup function](Req::set_cleanup_fn) sees both ends).
/// - The generic layer calls these methods at most once at a time per
///   direction, never with an empty datagram, and never after a successful
///   disconnect, so a transport need not check that (it may, as the BSD
///   transport does).
/// - `&self` methods: keep mutable state in a `RefCell`, and do not hold a
///   borrow while finishing a request (its callback may call back in).
///
/// # Example: a transport that discards everything
///
/// ```
/// use tevent::{Context, Req};
/// use tsocket::dgram::{self, Dgram, DgramOps, DgramReq};
/// use tsocket::Address;
///
/// struct Sink;
///
/// impl DgramOps for Sink {
///     fn name(&self) -> &'static str {
///         "sink"
///     }
///     fn recvfrom_send(&self, ctx: &Context) -> DgramReq<(Vec<u8>, Address)> {
///         Req::new(ctx, Box::new(())) // never completes: nothing arrives
///     }
///     fn sendto_send(&self, ctx: &Context, buf: Vec<u8>, _dst: Option<Address>) -> DgramReq<usize> {
///         let req: DgramReq<usize> = Req::new(ctx, Box::new(()));
///         req.done(buf.len());
///         req.post() // finished inside _send: deliver from the loop
///     }
///     fn disconnect_send(&self, ctx: &Context) -> DgramReq<()> {
///         let req: DgramReq<()> = Req::new(ctx, Box::new(()));
///         req.done(());
///         req.post()
///     }
/// }
///
/// let ctx = Context::new()?;
/// let sink = Dgram::new(Sink);
/// let req = dgram::sendto_send(&ctx, &sink, vec![1, 2, 3], None);
/// req.poll()?;
/// assert_eq!(dgram::sendto_recv(&req)?, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait DgramOps {
    /// The transport's name, for logs and `Debug` (`"bsd"`, `"tls"`, ...).
    fn name(&self) -> &'static str;

    /// Receive the next datagram and its source address.
    fn recvfrom_send(&self, ctx: &Context) -> DgramReq<(Vec<u8>, Address)>;

    /// Send `buf` as one datagram to `dst`, or to the connected peer when
    /// `dst` is `None`. The result is the number of bytes sent.
    fn sendto_send(&self, ctx: &Context, buf: Vec<u8>, dst: Option<Address>) -> DgramReq<usize>;

    /// Release the transport (close the socket). Every later operation
    /// fails with `ENOTCONN`.
    fn disconnect_send(&self, ctx: &Context) -> DgramReq<()>;
}

/// A datagram transport (tsocket's `tdgram_context`): a cheap handle to a
/// [`DgramOps`] implementation and the generic layer's bookkeeping.
///
/// Clones are handles to the same transport and share its limits (one
/// recvfrom and one sendto at a time across all clones). The transport is
/// released when the last handle, and the last request using it, is
/// dropped; [`disconnect_send`] releases it earlier.
///
/// The BSD socket transport's constructors are [`udp_socket`],
/// [`udp_broadcast_socket`], [`unix_dgram_socket`] and
/// [`existing_socket`]; for those, [`Dgram::local_address`],
/// [`Dgram::remote_address`] and [`Dgram::raw_fd`] give the socket's
/// details.
#[derive(Clone)]
pub struct Dgram {
    inner: Rc<DgramInner>,
}

struct DgramInner {
    ops: Rc<dyn DgramOps>,
    /// The same object as `ops`, for [`Dgram::transport`].
    any: Rc<dyn Any>,
    recvfrom_busy: Cell<bool>,
    sendto_busy: Cell<bool>,
    disconnect_busy: Cell<bool>,
    disconnected: Cell<bool>,
    created: &'static Location<'static>,
}

/// Which outstanding-operation slot of a [`Dgram`] a request holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Slot {
    Recvfrom,
    Sendto,
    Disconnect,
}

impl Slot {
    fn op(self) -> &'static str {
        match self {
            Slot::Recvfrom => "recvfrom",
            Slot::Sendto => "sendto",
            Slot::Disconnect => "disconnect",
        }
    }
}

impl DgramInner {
    fn busy_flag(&self, slot: Slot) -> &Cell<bool> {
        match slot {
            Slot::Recvfrom => &self.recvfrom_busy,
            Slot::Sendto => &self.sendto_busy,
            Slot::Disconnect => &self.disconnect_busy,
        }
    }

    /// Whether an operation of `slot` may start now; the errno if not.
    fn check(&self, slot: Slot) -> Result<(), i32> {
        if self.disconnected.get() {
            return Err(libc::ENOTCONN);
        }
        match slot {
            Slot::Recvfrom | Slot::Sendto => {
                if self.disconnect_busy.get() {
                    return Err(libc::ECONNABORTED);
                }
                if self.busy_flag(slot).get() {
                    return Err(libc::EBUSY);
                }
            }
            Slot::Disconnect => {
                if self.disconnect_busy.get() {
                    return Err(libc::EALREADY);
                }
                if self.recvfrom_busy.get() || self.sendto_busy.get() {
                    return Err(libc::EBUSY);
                }
            }
        }
        Ok(())
    }
}

/// Holds one slot of a [`Dgram`] busy; dropping it frees the slot.
struct Busy {
    inner: Rc<DgramInner>,
    slot: Slot,
}

impl Busy {
    fn take(inner: &Rc<DgramInner>, slot: Slot) -> Busy {
        inner.busy_flag(slot).set(true);
        Busy {
            inner: inner.clone(),
            slot,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.inner.busy_flag(self.slot).set(false);
    }
}

impl Dgram {
    /// Wrap a transport (tsocket's `tdgram_context_create`). The creation
    /// place is recorded for `Debug`.
    ///
    /// See [`DgramOps`] for an example.
    #[track_caller]
    pub fn new<O: DgramOps + 'static>(ops: O) -> Dgram {
        let ops = Rc::new(ops);
        let any: Rc<dyn Any> = ops.clone();
        Dgram {
            inner: Rc::new(DgramInner {
                ops,
                any,
                recvfrom_busy: Cell::new(false),
                sendto_busy: Cell::new(false),
                disconnect_busy: Cell::new(false),
                disconnected: Cell::new(false),
                created: Location::caller(),
            }),
        }
    }

    /// The transport's name ([`DgramOps::name`]; `"bsd"` for sockets).
    pub fn name(&self) -> &'static str {
        self.inner.ops.name()
    }

    /// The transport object, if it is an `O` (tsocket's
    /// `tdgram_context_data`).
    ///
    /// ```
    /// # use tevent::{Context, Req};
    /// # use tsocket::dgram::{Dgram, DgramOps, DgramReq};
    /// # use tsocket::Address;
    /// struct Counter(std::cell::Cell<u32>);
    /// # impl DgramOps for Counter {
    /// #     fn name(&self) -> &'static str { "counter" }
    /// #     fn recvfrom_send(&self, ctx: &Context) -> DgramReq<(Vec<u8>, Address)> { Req::new(ctx, Box::new(())) }
    /// #     fn sendto_send(&self, ctx: &Context, _b: Vec<u8>, _d: Option<Address>) -> DgramReq<usize> { Req::new(ctx, Box::new(())) }
    /// #     fn disconnect_send(&self, ctx: &Context) -> DgramReq<()> { Req::new(ctx, Box::new(())) }
    /// # }
    /// let dgram = Dgram::new(Counter(std::cell::Cell::new(7)));
    /// assert_eq!(dgram.transport::<Counter>().map(|c| c.0.get()), Some(7));
    /// assert!(dgram.transport::<String>().is_none());
    /// ```
    pub fn transport<O: 'static>(&self) -> Option<&O> {
        self.inner.any.downcast_ref::<O>()
    }

    /// Whether a recvfrom is outstanding.
    pub fn recvfrom_pending(&self) -> bool {
        self.inner.recvfrom_busy.get()
    }

    /// Whether a sendto is outstanding (one from [`sendto_queue_send`]
    /// included, once it is its turn).
    pub fn sendto_pending(&self) -> bool {
        self.inner.sendto_busy.get()
    }

    /// Whether a disconnect has succeeded (every operation now fails with
    /// `ENOTCONN`).
    pub fn is_disconnected(&self) -> bool {
        self.inner.disconnected.get()
    }

    /// Whether `self` and `other` are handles to the same transport.
    pub fn ptr_eq(&self, other: &Dgram) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl fmt::Debug for Dgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("Dgram")
            .field("transport", &inner.ops.name())
            .field("recvfrom_pending", &inner.recvfrom_busy.get())
            .field("sendto_pending", &inner.sendto_busy.get())
            .field("disconnect_pending", &inner.disconnect_busy.get())
            .field("disconnected", &inner.disconnected.get())
            .field("created", &format_args!("{}", inner.created))
            .finish()
    }
}

/// The state of a request made by [`recvfrom_send`], [`sendto_send`] or
/// [`disconnect_send`] (opaque): the transport, the slot it holds, and the
/// transport's sub-request.
pub struct OpState<T: 'static> {
    dgram: Dgram,
    slot: Slot,
    /// Held from `_send` until the request finishes or is dropped.
    busy: Option<Busy>,
    /// The transport's request, while it is in flight.
    subreq: Option<DgramReq<T>>,
}

impl<T: 'static> fmt::Debug for OpState<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpState")
            .field("op", &self.slot.op())
            .field("transport", &self.dgram.name())
            .field("holds_slot", &self.busy.is_some())
            .field("in_flight", &self.subreq.is_some())
            .finish()
    }
}

/// Start one operation of the generic layer: check the rules, take the
/// slot, call the transport through `send`, and finish when its request
/// does. `invalid` is an argument error found by the caller.
#[track_caller]
fn op_send<T: 'static>(
    ctx: &Context,
    dgram: &Dgram,
    slot: Slot,
    invalid: Option<i32>,
    send: impl FnOnce(&dyn DgramOps) -> DgramReq<T>,
) -> Req<OpState<T>, T> {
    let req = Req::new(
        ctx,
        OpState {
            dgram: dgram.clone(),
            slot,
            busy: None,
            subreq: None,
        },
    );
    let checked = match invalid {
        Some(errno) => Err(errno),
        None => dgram.inner.check(slot),
    };
    if let Err(errno) = checked {
        log::debug!(
            "{} on {}: refused: {}",
            slot.op(),
            dgram.name(),
            std::io::Error::from_raw_os_error(errno)
        );
        req.error(errno as u64);
        return req.post();
    }
    req.state_mut().busy = Some(Busy::take(&dgram.inner, slot));
    req.set_cleanup_fn(op_cleanup::<T>);
    log::trace!("{} on {}: started", slot.op(), dgram.name());

    let subreq = send(&*dgram.inner.ops);
    if !subreq.is_in_progress() {
        // The transport finished inside its _send (it posted, or should
        // have): take the result now and deliver it through our own post.
        let result = subreq.recv();
        drop(subreq);
        op_finish(&req, slot, result);
        return req.post();
    }
    subreq.set_parent_callback(&req, op_done);
    req.state_mut().subreq = Some(subreq);
    req
}

/// The transport's request finished: finish ours the same way.
fn op_done<T: 'static>(subreq: &DgramReq<T>, req: &Req<OpState<T>, T>) {
    let result = subreq.recv();
    let slot = {
        let mut state = req.state_mut();
        let sub = state.subreq.take(); // the sub-request is spent
        drop(sub);
        state.slot
    };
    op_finish(req, slot, result);
}

fn op_finish<T: 'static>(req: &Req<OpState<T>, T>, slot: Slot, result: Result<T, ReqError>) {
    match result {
        Ok(value) => {
            log::trace!("{}: done", slot.op());
            req.done(value);
        }
        Err(err) => {
            log::debug!("{}: failed: {err}", slot.op());
            req.error(err.errno() as u64);
        }
    }
}

/// Runs when the request finishes (before its callback) and when it is
/// received or dropped: free the slot, cancel the transport's request if it
/// is still running (the end time passed), and record a successful
/// disconnect.
fn op_cleanup<T>(state: &mut OpState<T>, status: ReqState) {
    if status == ReqState::InProgress {
        return;
    }
    if status == ReqState::Done && state.slot == Slot::Disconnect {
        state.dgram.inner.disconnected.set(true);
    }
    let busy = state.busy.take();
    drop(busy);
    let subreq = state.subreq.take();
    drop(subreq);
}

/// Receive the next datagram (tsocket's `tdgram_recvfrom_send`). Take the
/// result with [`recvfrom_recv`] once the request has finished.
///
/// Only one recvfrom may be outstanding per transport: a second one fails
/// with `EBUSY`. Dropping the request cancels the receive (a datagram that
/// arrives later waits for the next recvfrom).
///
/// # Example
///
/// ```
/// use tevent::Context;
/// use tsocket::{dgram, Address};
///
/// let ctx = Context::new()?;
/// let any_port: Address = "ipv4:127.0.0.1:0".parse()?;
/// let a = dgram::udp_socket(&any_port, None)?;
/// let b = dgram::udp_socket(&any_port, Some(&a.local_address()?))?; // connected to a
///
/// let req = dgram::recvfrom_send(&ctx, &a);
/// let busy = dgram::recvfrom_send(&ctx, &a); // one at a time
/// dgram::sendto_send(&ctx, &b, b"hi".to_vec(), None).poll()?;
/// req.poll()?;
/// let (data, src) = dgram::recvfrom_recv(&req)?;
/// assert_eq!((data.as_slice(), src), (&b"hi"[..], b.local_address()?));
/// busy.poll()?;
/// assert_eq!(dgram::recvfrom_recv(&busy).unwrap_err().errno(), libc::EBUSY);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[track_caller]
pub fn recvfrom_send(ctx: &Context, dgram: &Dgram) -> RecvfromReq {
    op_send(ctx, dgram, Slot::Recvfrom, None, |ops| {
        ops.recvfrom_send(ctx)
    })
}

/// The datagram and its source address (tsocket's `tdgram_recvfrom_recv`).
/// Receives the request.
///
/// # Errors
///
/// `EBUSY` (another recvfrom was outstanding), `ENOTCONN` (disconnected),
/// `ECONNABORTED` (a disconnect was in flight), `ETIMEDOUT` (the request's
/// end time passed), or the transport's errno (for a connected UDP socket,
/// `ECONNREFUSED` after the peer's port was found closed).
pub fn recvfrom_recv(req: &RecvfromReq) -> Result<(Vec<u8>, Address), Error> {
    req.recv().map_err(|e| Error::from_req("recvfrom", e))
}

/// Send `buf` as one datagram (tsocket's `tdgram_sendto_send`) to `dst`, or
/// to the connected peer when `dst` is `None`. Take the result with
/// [`sendto_recv`].
///
/// Only one sendto may be outstanding per transport (`EBUSY` otherwise):
/// with several senders, use [`sendto_queue_send`]. Dropping an unfinished
/// request cancels the send; the datagram is then not sent (datagrams are
/// sent whole or not at all).
///
/// # Example
///
/// ```
/// use tevent::Context;
/// use tsocket::{dgram, Address};
///
/// let ctx = Context::new()?;
/// let sock = dgram::udp_socket(&"ipv4:127.0.0.1:0".parse()?, None)?;
/// let me = sock.local_address()?;
/// let req = dgram::sendto_send(&ctx, &sock, b"to myself".to_vec(), Some(&me));
/// req.poll()?;
/// assert_eq!(dgram::sendto_recv(&req)?, 9);
///
/// let empty = dgram::sendto_send(&ctx, &sock, Vec::new(), Some(&me));
/// empty.poll()?;
/// assert_eq!(dgram::sendto_recv(&empty).unwrap_err().errno(), libc::EINVAL);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[track_caller]
pub fn sendto_send(ctx: &Context, dgram: &Dgram, buf: Vec<u8>, dst: Option<&Address>) -> SendtoReq {
    let invalid = buf.is_empty().then_some(libc::EINVAL);
    let dst = dst.cloned();
    op_send(ctx, dgram, Slot::Sendto, invalid, move |ops| {
        ops.sendto_send(ctx, buf, dst)
    })
}

/// The number of bytes sent (tsocket's `tdgram_sendto_recv`). Receives the
/// request.
///
/// # Errors
///
/// `EINVAL` (empty datagram), `EBUSY` (another sendto was outstanding),
/// `ENOTCONN`, `ECONNABORTED`, `ETIMEDOUT`, or the transport's errno:
/// `EMSGSIZE` (too large even after raising `SO_SNDBUF`), `ENOENT` or
/// `ECONNREFUSED` (no unix socket listens at the destination path),
/// `EDESTADDRREQ` (no destination on an unconnected socket), ...
pub fn sendto_recv(req: &SendtoReq) -> Result<usize, Error> {
    req.recv().map_err(|e| Error::from_req("sendto", e))
}

/// Disconnect the transport (tsocket's `tdgram_disconnect_send`): for BSD
/// sockets, stop watching the socket and close it. Take the result with
/// [`disconnect_recv`].
///
/// Fails with `EBUSY` while a recvfrom or sendto is outstanding,
/// `EALREADY` while another disconnect is, `ENOTCONN` once disconnected.
/// After success every operation fails with `ENOTCONN`.
///
/// # Example
///
/// ```
/// use tevent::Context;
/// use tsocket::{dgram, Address};
///
/// let ctx = Context::new()?;
/// let sock = dgram::udp_socket(&"ipv4:127.0.0.1:0".parse()?, None)?;
/// let req = dgram::disconnect_send(&ctx, &sock);
/// req.poll()?;
/// dgram::disconnect_recv(&req)?;
/// assert!(sock.is_disconnected());
///
/// let late = dgram::recvfrom_send(&ctx, &sock);
/// late.poll()?;
/// assert_eq!(dgram::recvfrom_recv(&late).unwrap_err().errno(), libc::ENOTCONN);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[track_caller]
pub fn disconnect_send(ctx: &Context, dgram: &Dgram) -> DisconnectReq {
    op_send(ctx, dgram, Slot::Disconnect, None, |ops| {
        ops.disconnect_send(ctx)
    })
}

/// Whether the disconnect succeeded (tsocket's `tdgram_disconnect_recv`).
/// Receives the request.
///
/// # Errors
///
/// `EBUSY`, `EALREADY`, `ENOTCONN`, `ETIMEDOUT`, or the transport's errno.
pub fn disconnect_recv(req: &DisconnectReq) -> Result<(), Error> {
    req.recv().map_err(|e| Error::from_req("disconnect", e))
}

/// Where a [`sendto_queue_send`] request is.
enum SendtoQueueStep {
    /// Waiting in the queue for its turn; the datagram is kept here.
    Queued { buf: Vec<u8>, dst: Option<Address> },
    /// Its turn came: the sendto request is in flight.
    Sending { subreq: SendtoReq },
    /// Finished (or cancelled): nothing is owned any more.
    Finished,
}

impl fmt::Display for SendtoQueueStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendtoQueueStep::Queued { .. } => "QUEUED",
            SendtoQueueStep::Sending { .. } => "SENDING",
            SendtoQueueStep::Finished => "FINISHED",
        })
    }
}

/// The state of a request made by [`sendto_queue_send`] (opaque).
pub struct SendtoQueueState {
    dgram: Dgram,
    step: SendtoQueueStep,
    /// The request's place in the queue; released when the request is
    /// received or dropped.
    entry: Option<QueueEntry>,
}

impl SendtoQueueState {
    /// Every change of step goes through here.
    fn set_step(&mut self, step: SendtoQueueStep) -> SendtoQueueStep {
        if std::mem::discriminant(&self.step) != std::mem::discriminant(&step) {
            log::trace!(
                "sendto_queue on {}: {} => {step}",
                self.dgram.name(),
                self.step
            );
        }
        std::mem::replace(&mut self.step, step)
    }
}

impl fmt::Debug for SendtoQueueState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendtoQueueState")
            .field("transport", &self.dgram.name())
            .field("step", &format_args!("{}", self.step))
            .field(
                "sendto",
                match &self.step {
                    SendtoQueueStep::Sending { subreq } => subreq,
                    SendtoQueueStep::Queued { .. } | SendtoQueueStep::Finished => &None::<()>,
                },
            )
            .field(
                "queued",
                &self.entry.as_ref().is_some_and(|e| e.is_queued()),
            )
            .finish()
    }
}

/// Send a datagram when it is its turn in `queue` (tsocket's
/// `tdgram_sendto_queue_send`): the way for several senders to share one
/// transport without `EBUSY`. Take the result with [`sendto_queue_recv`].
///
/// The request enters the queue with
/// [`Queue::add_optimize_empty`]: if the queue is empty, the send starts at
/// once (the result is still delivered from the loop).
///
/// **The request keeps its place at the head of the queue until it is
/// received or dropped, not merely until it finishes**: receive (or drop)
/// every finished request, or the queue stalls. Dropping a request that is
/// still waiting takes it out of the queue.
///
/// # Errors (reported by [`sendto_queue_recv`])
///
/// As [`sendto_recv`]; an empty datagram fails with `EINVAL` without
/// entering the queue.
///
/// # Example
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use tevent::{Context, Queue};
/// use tsocket::{dgram, Address};
///
/// let ctx = Context::new()?;
/// let sock = dgram::udp_socket(&"ipv4:127.0.0.1:0".parse()?, None)?;
/// let me = sock.local_address()?;
/// let queue = Queue::new(&ctx, "udp out");
/// let sent = Rc::new(Cell::new(0));
/// let mut reqs = Vec::new();
/// for i in 0..3u8 {
///     let req = dgram::sendto_queue_send(&ctx, &sock, &queue, vec![i], Some(&me));
///     let sent = sent.clone();
///     req.set_callback(move |req| {
///         // Receiving the request lets the next one in the queue go.
///         sent.set(sent.get() + dgram::sendto_queue_recv(req).unwrap());
///     });
///     reqs.push(req);
/// }
/// ctx.loop_wait()?;
/// assert_eq!(sent.get(), 3);
///
/// let mut seen = Vec::new();
/// for _ in 0..3 {
///     let req = dgram::recvfrom_send(&ctx, &sock);
///     req.poll()?;
///     seen.extend(dgram::recvfrom_recv(&req)?.0);
/// }
/// assert_eq!(seen, [0, 1, 2]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[track_caller]
pub fn sendto_queue_send(
    ctx: &Context,
    dgram: &Dgram,
    queue: &Queue,
    buf: Vec<u8>,
    dst: Option<&Address>,
) -> SendtoQueueReq {
    let empty = buf.is_empty();
    let req = Req::new(
        ctx,
        SendtoQueueState {
            dgram: dgram.clone(),
            step: SendtoQueueStep::Queued {
                buf,
                dst: dst.cloned(),
            },
            entry: None,
        },
    );
    if empty {
        req.state_mut().set_step(SendtoQueueStep::Finished);
        req.error(libc::EINVAL as u64);
        return req.post();
    }
    req.set_cleanup_fn(sendto_queue_cleanup);
    crate::queued::enter_queue(req, queue, sendto_queue_trigger, |state| &mut state.entry)
}

/// Its turn in the queue: start the sendto.
fn sendto_queue_trigger(req: &SendtoQueueReq) {
    if !req.is_in_progress() {
        return; // timed out while waiting; it leaves when received
    }
    let Some(ctx) = req.context() else {
        return;
    };
    let (dgram, buf, dst) = {
        let mut state = req.state_mut();
        match state.set_step(SendtoQueueStep::Finished) {
            SendtoQueueStep::Queued { buf, dst } => (state.dgram.clone(), buf, dst),
            other => {
                // Triggered twice (a stopped queue restarted with
                // untrigger): keep what it was doing.
                state.step = other;
                return;
            }
        }
    };
    let subreq = sendto_send(&ctx, &dgram, buf, dst.as_ref());
    subreq.set_parent_callback(req, sendto_queue_done);
    req.state_mut()
        .set_step(SendtoQueueStep::Sending { subreq });
}

/// The sendto finished.
fn sendto_queue_done(subreq: &SendtoReq, req: &Req<SendtoQueueState, usize>) {
    let result = sendto_recv(subreq);
    let spent = req.state_mut().set_step(SendtoQueueStep::Finished);
    drop(spent);
    match result {
        Ok(n) => {
            req.done(n);
        }
        Err(e) => {
            req.error(e.code());
        }
    }
}

/// On finish (end time included) and on receive/drop: cancel a sendto
/// still in flight and forget the datagram. The queue entry goes with the
/// state, when the request is received or dropped.
fn sendto_queue_cleanup(state: &mut SendtoQueueState, status: ReqState) {
    if status == ReqState::InProgress {
        return;
    }
    let old = state.set_step(SendtoQueueStep::Finished);
    drop(old);
}

/// The number of bytes sent (tsocket's `tdgram_sendto_queue_recv`).
/// Receives the request, which lets the next request in the queue go.
///
/// # Errors
///
/// As [`sendto_recv`].
pub fn sendto_queue_recv(req: &SendtoQueueReq) -> Result<usize, Error> {
    req.recv().map_err(|e| Error::from_req("sendto_queue", e))
}
