//! The BSD socket datagram transport (tsocket's `tdgram_bsd`): UDP and
//! unix datagram sockets driven by one [`FdEvent`] each.
//!
//! The behaviour is described in the [`dgram`](crate::dgram) module docs;
//! this file keeps the details:
//!
//! - One [`Sock`] per socket, behind an `Rc<RefCell<_>>`. It holds the
//!   socket, the fd event, and at most one waiting reader and one waiting
//!   writer. The fd event's handler holds a `Weak` to it (the event lives
//!   in the context, so a strong reference would be a cycle); a request's
//!   state holds an `Rc`, so the socket lives as long as its requests.
//! - The event's flags are recomputed from the waiters
//!   ([`update_flags`]) after every change: when a request is queued, when
//!   it finishes (after its callback has run, so that a callback that
//!   starts the next recvfrom causes no `epoll_ctl` churn), and when it is
//!   dropped unfinished (its cleanup function).
//! - No `RefCell` borrow is held while a request is finished: its callback
//!   may call back into the transport.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};

use socket2::{Domain, SockAddr, SockAddrStorage, Socket, Type};
use tevent::{Context, FdEvent, FdFlags, Req, ReqState, WeakReq};

use crate::dgram::{Dgram, DgramOps, DgramReq};
use crate::{Address, Error};

/// Flags for every send: never raise `SIGPIPE`, never block.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
)))]
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT; // SO_NOSIGPIPE is set instead

/// The transport behind a [`Dgram`] made by this module's constructors.
pub(crate) struct BsdDgram {
    sock: Rc<RefCell<Sock>>,
}

/// A socket and what waits on it.
struct Sock {
    /// Dropped before `socket` (field order, and [`Sock::close`]): an fd
    /// event must never outlive its fd.
    fde: Option<FdEvent>,
    /// `None` once disconnected.
    socket: Option<Socket>,
    /// An `AF_UNIX` socket (a sender without an address is then the unnamed
    /// unix address).
    unix: bool,
    reader: Option<Reader>,
    writer: Option<Writer>,
    /// Identifies waiters, so that a cleanup function removes only its own.
    next_id: u64,
}

/// A recvfrom waiting for the socket to become readable.
struct Reader {
    id: u64,
    req: WeakReq<Box<dyn Any>, (Vec<u8>, Address)>,
}

/// A sendto waiting for the socket to become writable (the first try said
/// `EAGAIN`).
struct Writer {
    id: u64,
    req: WeakReq<Box<dyn Any>, usize>,
    buf: Vec<u8>,
    dst: Option<SockAddr>,
}

/// What the first try of a sendto gave.
enum SendOutcome {
    /// The kernel took the datagram: this many bytes.
    Sent(usize),
    /// `EAGAIN`: the writer with this id waits for room.
    Waiting(u64),
    /// Failed with this errno.
    Failed(i32),
}

/// Whether a waiter's request can still be finished.
fn alive<T: 'static>(req: &WeakReq<Box<dyn Any>, T>) -> bool {
    req.upgrade().is_some_and(|r| r.is_in_progress())
}

impl Sock {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// What the fd event must ask for now. `ERROR` goes with `WRITE` so
    /// that a socket error reaches a waiting writer instead of silencing it
    /// (tevent drops `WRITE` from an event that ignores errors).
    fn wanted(&self) -> FdFlags {
        let mut flags = FdFlags::EMPTY;
        if self.reader.is_some() {
            flags |= FdFlags::READ;
        }
        if self.writer.is_some() {
            flags |= FdFlags::WRITE | FdFlags::ERROR;
        }
        flags
    }

    /// Drop the fd event, then close the socket.
    fn close(&mut self) {
        let fde = self.fde.take();
        drop(fde);
        let socket = self.socket.take();
        drop(socket);
    }
}

impl Drop for Sock {
    fn drop(&mut self) {
        self.close();
    }
}

/// What a request of this transport keeps in its state: the socket, so that
/// it outlives the request.
struct BsdReqState {
    _sock: Rc<RefCell<Sock>>,
}

fn errno_of(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(libc::EIO)
}

fn would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

/// Bring the fd event's flags in line with the waiters. With `ctx`, the
/// event is created if needed (and re-created if it belongs to another
/// context); without, it is only changed.
fn update_flags(sock: &Rc<RefCell<Sock>>, ctx: Option<&Context>) -> Result<(), tevent::Error> {
    let mut s = sock.borrow_mut();
    let want = s.wanted();
    let Some(fd) = s.socket.as_ref().map(|socket| socket.as_raw_fd()) else {
        return Ok(());
    };
    if let (Some(fde), Some(ctx)) = (&s.fde, ctx) {
        if !fde.context().is_some_and(|c| c.ptr_eq(ctx)) {
            log::debug!("bsd dgram fd {fd}: moving to another event context");
            let old = s.fde.take();
            drop(old);
        }
    }
    if let Some(fde) = &s.fde {
        return fde.set_flags(want);
    }
    let Some(ctx) = ctx else {
        return Ok(());
    };
    if want.is_empty() {
        return Ok(());
    }
    let weak = Rc::downgrade(sock);
    let fde = ctx.add_fd_raw(fd, want, move |_ctx, _fde, flags| {
        if let Some(sock) = weak.upgrade() {
            fde_handler(&sock, flags);
        }
    })?;
    s.fde = Some(fde);
    Ok(())
}

/// The fd event fired. Writable first: when the socket is both readable and
/// writable, only the waiting writer runs; the reader gets its turn in a
/// later iteration (tsocket's rule, against application-level deadlocks).
fn fde_handler(sock: &Rc<RefCell<Sock>>, flags: FdFlags) {
    let (reader, writer) = {
        let s = sock.borrow();
        (s.reader.is_some(), s.writer.is_some())
    };
    log::trace!("bsd dgram: fd event {flags:?} (reader {reader}, writer {writer})");
    if writer && flags.intersects(FdFlags::WRITE | FdFlags::ERROR) {
        writable(sock);
    } else if reader && flags.intersects(FdFlags::READ | FdFlags::ERROR) {
        readable(sock);
    }
    // After the callbacks: drop the interest nobody has any more (a
    // callback that started the next operation kept it).
    if let Err(e) = update_flags(sock, None) {
        log::debug!("bsd dgram: cannot update the fd event: {e}");
    }
}

/// The socket is readable: receive for the waiting reader.
fn readable(sock: &Rc<RefCell<Sock>>) {
    let (req, result) = {
        let mut s = sock.borrow_mut();
        let Some(reader) = s.reader.as_ref() else {
            return;
        };
        if !alive(&reader.req) {
            s.reader = None; // dropped while its cleanup could not run
            return;
        }
        let result = match s.socket.as_ref() {
            Some(socket) => recv_datagram(socket, s.unix),
            None => Err(io::Error::from_raw_os_error(libc::ENOTCONN)),
        };
        match result {
            Err(e) if would_block(&e) => return, // spurious wake-up
            result => match s.reader.take() {
                Some(reader) => (reader.req, result),
                None => return,
            },
        }
    };
    let Some(req) = req.upgrade() else {
        return;
    };
    match result {
        Ok((data, src)) => {
            log::trace!("bsd dgram: received {} bytes from {src}", data.len());
            req.done((data, src));
        }
        Err(e) => {
            log::debug!("bsd dgram: recvfrom failed: {e}");
            req.error(errno_of(&e) as u64);
        }
    }
}

/// The socket is writable (or has an error): retry the waiting writer.
fn writable(sock: &Rc<RefCell<Sock>>) {
    let (req, result) = {
        let mut s = sock.borrow_mut();
        let Some(writer) = s.writer.as_ref() else {
            return;
        };
        if !alive(&writer.req) {
            s.writer = None;
            return;
        }
        let result = match s.socket.as_ref() {
            Some(socket) => send_datagram(socket, &writer.buf, writer.dst.as_ref()),
            None => Err(io::Error::from_raw_os_error(libc::ENOTCONN)),
        };
        match result {
            Err(e) if would_block(&e) => return, // still no room
            result => match s.writer.take() {
                Some(writer) => (writer.req, result),
                None => return,
            },
        }
    };
    let Some(req) = req.upgrade() else {
        return;
    };
    match result {
        Ok(n) => {
            log::trace!("bsd dgram: sent {n} bytes after waiting");
            req.done(n);
        }
        Err(e) => {
            log::debug!("bsd dgram: sendto failed: {e}");
            req.error(errno_of(&e) as u64);
        }
    }
}

/// A waiter's request finished or was dropped: remove the waiter if it is
/// still there (the handler takes it out before finishing the request) and
/// drop the interest it needed.
fn remove_waiter(sock: &Rc<RefCell<Sock>>, id: u64) {
    let removed = match sock.try_borrow_mut() {
        Ok(mut s) => {
            if s.reader.as_ref().is_some_and(|r| r.id == id) {
                s.reader = None;
                true
            } else if s.writer.as_ref().is_some_and(|w| w.id == id) {
                s.writer = None;
                true
            } else {
                false
            }
        }
        // Cannot happen (no borrow is held while requests finish or drop);
        // if it did, the handler finds the dead waiter and clears it.
        Err(_) => false,
    };
    if removed {
        if let Err(e) = update_flags(sock, None) {
            log::debug!("bsd dgram: cannot update the fd event: {e}");
        }
    }
}

/// Set the cleanup function of a waiter's request.
fn watch_waiter<T: 'static>(req: &DgramReq<T>, sock: &Rc<RefCell<Sock>>, id: u64) {
    let weak: Weak<RefCell<Sock>> = Rc::downgrade(sock);
    req.set_cleanup_fn(move |_state, status| {
        if status == ReqState::InProgress {
            return;
        }
        if let Some(sock) = weak.upgrade() {
            remove_waiter(&sock, id);
        }
    });
}

/// Send one datagram, retrying on `EINTR`; on `EMSGSIZE`, raise
/// `SO_SNDBUF` once and retry.
fn send_datagram(socket: &Socket, buf: &[u8], dst: Option<&SockAddr>) -> io::Result<usize> {
    let mut raised = false;
    loop {
        let result = match dst {
            Some(dst) => socket.send_to_with_flags(buf, dst, SEND_FLAGS),
            None => socket.send_with_flags(buf, SEND_FLAGS),
        };
        match result {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) && !raised => {
                raised = true;
                if !raise_send_buffer(socket, buf.len()) {
                    return Err(e);
                }
            }
            result => return result,
        }
    }
}

/// Raise `SO_SNDBUF` to `len` rounded up to 1 KiB, as tsocket does on
/// `EMSGSIZE`. Returns whether it was raised (never lowered; the kernel
/// caps it at `net.core.wmem_max`).
fn raise_send_buffer(socket: &Socket, len: usize) -> bool {
    let want = len.div_ceil(1024).saturating_mul(1024);
    let current = socket.send_buffer_size().unwrap_or(0);
    // Linux doubles the value it is given (for its own bookkeeping) and
    // reports the doubled value.
    let effective = if cfg!(any(target_os = "linux", target_os = "android")) {
        want.saturating_mul(2)
    } else {
        want
    };
    if current >= effective {
        return false;
    }
    match socket.set_send_buffer_size(want) {
        Ok(()) => {
            let now = socket.send_buffer_size().unwrap_or(0);
            log::debug!("bsd dgram: SO_SNDBUF raised from {current} to {now} for {len} bytes");
            now > current
        }
        Err(e) => {
            log::debug!("bsd dgram: cannot raise SO_SNDBUF: {e}");
            false
        }
    }
}

/// The size of the next datagram; `WouldBlock` if there is none.
///
/// `MSG_PEEK | MSG_TRUNC` with an empty buffer returns the real length
/// (0 for an empty datagram) and `EAGAIN` when nothing is queued, unlike
/// `FIONREAD`, which says 0 for both.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn next_datagram_size(socket: &Socket) -> io::Result<usize> {
    loop {
        match socket.recv_with_flags(
            &mut [],
            libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        ) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// An upper bound of the size of the next datagram: `FIONREAD` (the BSDs
/// report every queued byte). Zero is ambiguous (no datagram, or an empty
/// one), so a UDP-sized buffer is used then, in case a datagram arrives in
/// between.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn next_datagram_size(socket: &Socket) -> io::Result<usize> {
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD writes one `c_int` through the pointer, which points
    // to a live local of that type; the fd is open (owned by `socket`).
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut pending) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(match pending {
        n if n > 0 => n as usize,
        _ => 65536,
    })
}

#[cfg(any(target_os = "linux", target_os = "android"))]
const RECV_FLAGS: libc::c_int = libc::MSG_TRUNC | libc::MSG_DONTWAIT;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const RECV_FLAGS: libc::c_int = libc::MSG_DONTWAIT;

/// Receive the next datagram whole, with its source address.
fn recv_datagram(socket: &Socket, unix: bool) -> io::Result<(Vec<u8>, Address)> {
    let size = next_datagram_size(socket)?;
    let mut buf: Vec<u8> = Vec::with_capacity(size);
    let (n, src) = loop {
        match socket.recv_from_with_flags(&mut buf.spare_capacity_mut()[..size], RECV_FLAGS) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => break result?,
        }
    };
    if n > size {
        // With MSG_TRUNC the kernel reports the real length: someone else
        // read the peeked datagram, and the next one did not fit.
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    // SAFETY: recvfrom wrote `n` bytes (n <= size <= capacity) to the start
    // of the spare capacity, so the first `n` elements are initialised.
    unsafe { buf.set_len(n) };
    if buf.capacity() > 2 * n + 64 {
        buf.shrink_to_fit();
    }
    let src = sockaddr_to_address(&src, unix).map_err(io::Error::from_raw_os_error)?;
    Ok((buf, src))
}

/// The kernel's address as an [`Address`]; the errno if it cannot be one.
fn sockaddr_to_address(sa: &SockAddr, unix: bool) -> Result<Address, i32> {
    if let Some(inet) = sa.as_socket() {
        return Ok(Address::from(inet));
    }
    // A sender without an address: Linux reports a length of 0.
    if unix && (sa.len() == 0 || sa.is_unnamed()) {
        return Address::unix_from_path("").map_err(|e| e.errno());
    }
    if let Some(path) = sa.as_pathname() {
        return Address::unix_from_path(path).map_err(|e| e.errno());
    }
    if let Some(name) = sa.as_abstract_namespace() {
        return Address::unix_abstract(name).map_err(|e| e.errno());
    }
    Err(libc::EAFNOSUPPORT)
}

/// An [`Address`] as the kernel wants it.
fn address_to_sockaddr(addr: &Address) -> SockAddr {
    let (ss, len) = addr.to_sockaddr();
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: on unix `SockAddrStorage` is a transparent wrapper of libc's
    // `sockaddr_storage`, which is the type we view it as.
    unsafe { *storage.view_as::<libc::sockaddr_storage>() = ss };
    // SAFETY: `to_sockaddr` wrote a valid address of family `ss_family`
    // that is `len` bytes long, and zeroed the rest.
    unsafe { SockAddr::new(storage, len) }
}

impl BsdDgram {
    fn wrap(socket: Socket, unix: bool) -> Dgram {
        log::debug!(
            "bsd dgram: fd {} ({})",
            socket.as_raw_fd(),
            if unix { "unix" } else { "inet" }
        );
        Dgram::new(BsdDgram {
            sock: Rc::new(RefCell::new(Sock {
                fde: None,
                socket: Some(socket),
                unix,
                reader: None,
                writer: None,
                next_id: 0,
            })),
        })
    }

    fn new_req<T: 'static>(&self, ctx: &Context) -> DgramReq<T> {
        Req::new(
            ctx,
            Box::new(BsdReqState {
                _sock: self.sock.clone(),
            }),
        )
    }
}

impl DgramOps for BsdDgram {
    fn name(&self) -> &'static str {
        "bsd"
    }

    #[track_caller]
    fn recvfrom_send(&self, ctx: &Context) -> DgramReq<(Vec<u8>, Address)> {
        let req = self.new_req(ctx);
        let queued = {
            let mut s = self.sock.borrow_mut();
            if s.socket.is_none() {
                Err(libc::ENOTCONN)
            } else if s.reader.as_ref().is_some_and(|r| alive(&r.req)) {
                Err(libc::EBUSY)
            } else {
                let id = s.next_id();
                s.reader = Some(Reader {
                    id,
                    req: req.downgrade(),
                });
                Ok(id)
            }
        };
        let id = match queued {
            Ok(id) => id,
            Err(errno) => {
                req.error(errno as u64);
                return req.post();
            }
        };
        if let Err(e) = update_flags(&self.sock, Some(ctx)) {
            self.sock.borrow_mut().reader = None;
            req.error(e.errno().unwrap_or(libc::EIO) as u64);
            return req.post();
        }
        watch_waiter(&req, &self.sock, id);
        req
    }

    #[track_caller]
    fn sendto_send(&self, ctx: &Context, buf: Vec<u8>, dst: Option<Address>) -> DgramReq<usize> {
        let req = self.new_req(ctx);
        let dst = dst.as_ref().map(address_to_sockaddr);
        // Fast path: try at once; wait for WRITE only on EAGAIN.
        let outcome = {
            let mut s = self.sock.borrow_mut();
            let tried = if s.writer.as_ref().is_some_and(|w| alive(&w.req)) {
                Err(io::Error::from_raw_os_error(libc::EBUSY))
            } else {
                match s.socket.as_ref() {
                    Some(socket) => send_datagram(socket, &buf, dst.as_ref()),
                    None => Err(io::Error::from_raw_os_error(libc::ENOTCONN)),
                }
            };
            match tried {
                Ok(n) => SendOutcome::Sent(n),
                Err(e) if would_block(&e) => {
                    let id = s.next_id();
                    s.writer = Some(Writer {
                        id,
                        req: req.downgrade(),
                        buf,
                        dst,
                    });
                    SendOutcome::Waiting(id)
                }
                Err(e) => SendOutcome::Failed(errno_of(&e)),
            }
        };
        match outcome {
            SendOutcome::Sent(n) => {
                log::trace!("bsd dgram: sent {n} bytes at once");
                req.done(n);
                req.post()
            }
            SendOutcome::Failed(errno) => {
                log::debug!(
                    "bsd dgram: sendto failed: {}",
                    io::Error::from_raw_os_error(errno)
                );
                req.error(errno as u64);
                req.post()
            }
            SendOutcome::Waiting(id) => {
                log::trace!("bsd dgram: sendto waits for room");
                if let Err(e) = update_flags(&self.sock, Some(ctx)) {
                    self.sock.borrow_mut().writer = None;
                    req.error(e.errno().unwrap_or(libc::EIO) as u64);
                    return req.post();
                }
                watch_waiter(&req, &self.sock, id);
                req
            }
        }
    }

    #[track_caller]
    fn disconnect_send(&self, ctx: &Context) -> DgramReq<()> {
        let req = self.new_req(ctx);
        let result = {
            let mut s = self.sock.borrow_mut();
            if s.socket.is_none() {
                Err(libc::ENOTCONN)
            } else if s.reader.as_ref().is_some_and(|r| alive(&r.req))
                || s.writer.as_ref().is_some_and(|w| alive(&w.req))
            {
                Err(libc::EBUSY)
            } else {
                s.reader = None;
                s.writer = None;
                s.close();
                Ok(())
            }
        };
        match result {
            Ok(()) => {
                log::debug!("bsd dgram: disconnected");
                req.done(());
            }
            Err(errno) => {
                req.error(errno as u64);
            }
        }
        req.post()
    }
}

impl fmt::Debug for BsdDgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("BsdDgram");
        if let Ok(s) = self.sock.try_borrow() {
            d.field("fd", &s.socket.as_ref().map(|socket| socket.as_raw_fd()))
                .field("unix", &s.unix)
                .field("reader", &s.reader.is_some())
                .field("writer", &s.writer.is_some());
        }
        d.finish()
    }
}

/// Make a non-blocking, close-on-exec datagram socket.
fn new_socket(op: &'static str, domain: Domain) -> Result<Socket, Error> {
    let socket = Socket::new(domain, Type::DGRAM, None).map_err(|e| Error::from_io(op, &e))?;
    prepare(op, &socket)?;
    Ok(socket)
}

/// Non-blocking, close-on-exec, and (where there is no `MSG_NOSIGNAL`) no
/// `SIGPIPE`.
fn prepare(op: &'static str, socket: &Socket) -> Result<(), Error> {
    let io = |e: io::Error| Error::from_io(op, &e);
    socket.set_nonblocking(true).map_err(io)?;
    socket.set_cloexec(true).map_err(io)?;
    #[cfg(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "tvos",
        target_os = "watchos"
    ))]
    socket.set_nosigpipe(true).map_err(io)?;
    Ok(())
}

/// Make an inet datagram socket the way tsocket does
/// (`tdgram_bsd_dgram_socket`).
fn inet_socket(
    op: &'static str,
    local: &Address,
    remote: Option<&Address>,
    broadcast: bool,
) -> Result<Socket, Error> {
    let inval = || Error::new(op, libc::EINVAL);
    let local_sa = local.to_socket_addr().ok_or_else(inval)?;
    if let Some(remote) = remote {
        if !remote.is_inet("ip") {
            return Err(inval());
        }
    }
    // tsocket binds only to a specific address or port; an unbound socket
    // with a remote takes the remote's family (connect binds it).
    let bind = local_sa.port() != 0 || !local_sa.ip().is_unspecified();
    let ipv4 = match remote {
        Some(remote) if !bind => remote.is_ipv4(),
        Some(remote) => {
            if remote.is_ipv4() != local_sa.is_ipv4() {
                log::debug!("{op}: local {local} and remote {remote} differ in family");
                return Err(inval());
            }
            local_sa.is_ipv4()
        }
        None => local_sa.is_ipv4(),
    };
    if broadcast && !ipv4 {
        return Err(inval());
    }
    let domain = if ipv4 { Domain::IPV4 } else { Domain::IPV6 };
    let socket = new_socket(op, domain)?;
    let io = |e: io::Error| Error::from_io(op, &e);
    if !ipv4 {
        socket.set_only_v6(true).map_err(io)?;
    }
    if broadcast {
        socket.set_broadcast(true).map_err(io)?;
    }
    if bind {
        if local_sa.port() != 0 {
            socket.set_reuse_address(true).map_err(io)?;
        }
        socket.bind(&address_to_sockaddr(local)).map_err(io)?;
    }
    if let Some(remote) = remote {
        socket.connect(&address_to_sockaddr(remote)).map_err(io)?;
    }
    Ok(socket)
}

/// A UDP socket (tsocket's `tdgram_inet_udp_socket`): bound to `local`
/// (port 0: a free port; use [`Dgram::local_address`] to learn it), and
/// connected to `remote` if given (then [`sendto_send`](crate::dgram::sendto_send)
/// may pass no destination, and only the remote's datagrams are received).
///
/// As in tsocket, the socket is bound only when `local` names a specific
/// address or port; with the unspecified address and port 0 (for example
/// `ipv6::::0`) it is left unbound and, if `remote` is given, takes the
/// remote's family. IPv6 sockets are `IPV6_V6ONLY`; with a non-zero port
/// `SO_REUSEADDR` is set.
///
/// # Errors
///
/// `EINVAL` if `local` or `remote` is not an inet address, or they differ
/// in family; the errno of `socket`, `bind` (`EADDRINUSE`,
/// `EADDRNOTAVAIL`, ...) or `connect`.
///
/// # Example
///
/// ```
/// use tsocket::{dgram, Address};
///
/// let any: Address = "ipv4:127.0.0.1:0".parse()?;
/// let server = dgram::udp_socket(&any, None)?;
/// let server_addr = server.local_address()?;
/// assert_ne!(server_addr.inet_port(), Some(0));
///
/// let client = dgram::udp_socket(&any, Some(&server_addr))?;
/// assert_eq!(client.remote_address()?, server_addr);
///
/// let v6: Address = "ipv6:[::1]:53".parse()?;
/// assert_eq!(dgram::udp_socket(&any, Some(&v6)).unwrap_err().errno(), libc::EINVAL);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn udp_socket(local: &Address, remote: Option<&Address>) -> Result<Dgram, Error> {
    let socket = inet_socket("udp_socket", local, remote, false)?;
    Ok(BsdDgram::wrap(socket, false))
}

/// A UDP socket that may send to broadcast addresses (tsocket's
/// `tdgram_inet_udp_broadcast_socket`): IPv4 only, `SO_BROADCAST` set, bound
/// to `local` as by [`udp_socket`], not connected.
///
/// # Errors
///
/// `EINVAL` if `local` is not an IPv4 address; the errno of `socket`,
/// `setsockopt` or `bind`.
///
/// ```
/// use tsocket::{dgram, Address};
///
/// let sock = dgram::udp_broadcast_socket(&"ipv4:0.0.0.0:0".parse()?)?;
/// # drop(sock);
/// let v6: Address = "ipv6:[::1]:0".parse()?;
/// assert_eq!(dgram::udp_broadcast_socket(&v6).unwrap_err().errno(), libc::EINVAL);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn udp_broadcast_socket(local: &Address) -> Result<Dgram, Error> {
    const OP: &str = "udp_broadcast_socket";
    if !local.is_ipv4() {
        return Err(Error::new(OP, libc::EINVAL));
    }
    let socket = inet_socket(OP, local, None, true)?;
    Ok(BsdDgram::wrap(socket, false))
}

/// A unix datagram socket (tsocket's `tdgram_unix_socket`): bound to
/// `local` unless it is the unnamed address (the empty path), connected to
/// `remote` if given.
///
/// Binding creates the socket file; it is not removed when the socket is
/// closed (remove it yourself, as with any unix socket). A connected socket
/// waits properly when the receiver's queue is full; an unconnected one
/// busy-retries (see the [module docs](crate::dgram)).
///
/// # Errors
///
/// `EINVAL` if `local` or `remote` is not a unix address; the errno of
/// `bind` (`EADDRINUSE` if the file exists) or `connect` (`ENOENT`,
/// `ECONNREFUSED` when nothing listens at `remote`).
///
/// ```
/// use tsocket::{dgram, Address};
///
/// let dir = std::env::temp_dir().join(format!("tsocket-doc-unix-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("server");
/// let _ = std::fs::remove_file(&path);
/// let server = dgram::unix_dgram_socket(&Address::unix_from_path(&path)?, None)?;
/// let client = dgram::unix_dgram_socket(&Address::unix_from_path("")?, Some(&server.local_address()?))?;
/// assert_eq!(client.remote_address()?.unix_path(), Some(path.as_path()));
/// # drop((server, client));
/// std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn unix_dgram_socket(local: &Address, remote: Option<&Address>) -> Result<Dgram, Error> {
    const OP: &str = "unix_dgram_socket";
    let inval = || Error::new(OP, libc::EINVAL);
    if !local.is_unix() || remote.is_some_and(|r| !r.is_unix()) {
        return Err(inval());
    }
    let socket = new_socket(OP, Domain::UNIX)?;
    let io = |e: io::Error| Error::from_io(OP, &e);
    let named = local.unix_abstract_name().is_some()
        || local.unix_path().is_some_and(|p| !p.as_os_str().is_empty());
    if named {
        socket.bind(&address_to_sockaddr(local)).map_err(io)?;
    }
    if let Some(remote) = remote {
        socket.connect(&address_to_sockaddr(remote)).map_err(io)?;
    }
    Ok(BsdDgram::wrap(socket, true))
}

/// Adopt a datagram socket (tsocket's `tdgram_bsd_existing_socket`), for
/// example one inherited from a parent process or made with options this
/// crate does not set. The transport owns it from now on and closes it on
/// disconnect or when the last handle is gone; on error it is closed too.
///
/// The socket is made non-blocking and close-on-exec. It must be a
/// `SOCK_DGRAM` socket of family `AF_INET`, `AF_INET6` or `AF_UNIX`.
///
/// # Errors
///
/// `ENOTSOCK` if `fd` is not a socket, `EPROTOTYPE` if it is not a
/// `SOCK_DGRAM` socket, `EAFNOSUPPORT` for another family, or the errno of
/// `fcntl`.
///
/// ```
/// use std::os::fd::OwnedFd;
/// use std::os::unix::net::UnixDatagram;
/// use tevent::Context;
/// use tsocket::dgram;
///
/// let (a, b) = UnixDatagram::pair()?;
/// let a = dgram::existing_socket(OwnedFd::from(a))?;
/// b.send(b"hello")?;
///
/// let ctx = Context::new()?;
/// let req = dgram::recvfrom_send(&ctx, &a);
/// req.poll()?;
/// let (data, src) = dgram::recvfrom_recv(&req)?;
/// assert_eq!(data, b"hello");
/// assert_eq!(src.to_string(), "unix:"); // a socket pair has no names
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn existing_socket(fd: OwnedFd) -> Result<Dgram, Error> {
    const OP: &str = "existing_socket";
    let socket = Socket::from(fd);
    let io = |e: io::Error| Error::from_io(OP, &e);
    if socket.r#type().map_err(io)? != Type::DGRAM {
        // Stream sockets have no datagrams; on a SOCK_SEQPACKET socket the
        // end of file would read as an endless run of empty datagrams.
        return Err(Error::new(OP, libc::EPROTOTYPE));
    }
    let family = socket.local_addr().map_err(io)?.domain();
    let unix = if family == Domain::UNIX {
        true
    } else if family == Domain::IPV4 || family == Domain::IPV6 {
        false
    } else {
        return Err(Error::new(OP, libc::EAFNOSUPPORT));
    };
    prepare(OP, &socket)?;
    Ok(BsdDgram::wrap(socket, unix))
}

/// Details of the BSD socket transport. On a [`Dgram`] of another transport
/// these fail with `EOPNOTSUPP` (or return `None`).
impl Dgram {
    fn with_bsd_socket<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Socket, bool) -> Result<R, i32>,
    ) -> Result<R, Error> {
        let bsd = self
            .transport::<BsdDgram>()
            .ok_or(Error::new(op, libc::EOPNOTSUPP))?;
        let s = bsd.sock.borrow();
        let socket = s.socket.as_ref().ok_or(Error::new(op, libc::ENOTCONN))?;
        f(socket, s.unix).map_err(|errno| Error::new(op, errno))
    }

    /// The address the socket is bound to (`getsockname`): with a port
    /// chosen by the kernel if it was bound to port 0.
    ///
    /// # Errors
    ///
    /// `ENOTCONN` after a disconnect, `EOPNOTSUPP` for a transport that is
    /// not a BSD socket, or the errno of `getsockname`.
    pub fn local_address(&self) -> Result<Address, Error> {
        self.with_bsd_socket("local_address", |socket, unix| {
            let sa = socket.local_addr().map_err(|e| errno_of(&e))?;
            sockaddr_to_address(&sa, unix)
        })
    }

    /// The address the socket is connected to (`getpeername`).
    ///
    /// # Errors
    ///
    /// `ENOTCONN` if it is not connected (or after a disconnect),
    /// `EOPNOTSUPP` for a transport that is not a BSD socket.
    pub fn remote_address(&self) -> Result<Address, Error> {
        self.with_bsd_socket("remote_address", |socket, unix| {
            let sa = socket.peer_addr().map_err(|e| errno_of(&e))?;
            sockaddr_to_address(&sa, unix)
        })
    }

    /// The socket's file descriptor, to read or set socket options; `None`
    /// after a disconnect or for a transport that is not a BSD socket.
    ///
    /// The fd stays owned by the transport: do not close it, and do not
    /// read from or write to it while requests are outstanding.
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.with_bsd_socket("raw_fd", |socket, _| Ok(socket.as_raw_fd()))
            .ok()
    }
}
