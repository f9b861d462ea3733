//! Connecting stream sockets: [`tcp_connect_send`] and
//! [`unix_connect_send`] (tsocket's `tstream_inet_tcp_connect_send` and
//! `tstream_unix_connect_send`).
//!
//! The connect is non-blocking: `connect(2)` is called in the `_send`
//! function; if it is in progress the request waits for the socket to
//! become writable or to report an error (`WRITE | ERROR`), then reads
//! `SO_ERROR`. A refused or unreachable peer is an error value
//! (`ECONNREFUSED`, `ENETUNREACH`, ...). Give the request an end time with
//! [`Req::set_endtime`] to bound the wait (`ETIMEDOUT`); the socket is
//! closed when the request fails, times out or is dropped.

use std::fmt;

use socket2::{Domain, SockAddr, SockAddrStorage, Socket, Type};
use tevent::{Context, FdEvent, FdFlags, Req, ReqState};

use crate::bsd_stream::{self, so_error};
use crate::stream::Stream;
use crate::{Address, Error};

/// The socket address of `addr`, for socket2.
pub(crate) fn to_sock_addr(addr: &Address) -> SockAddr {
    let (storage, len) = addr.to_sockaddr();
    let mut s = SockAddrStorage::zeroed();
    // SAFETY: `SockAddrStorage` wraps the platform's `sockaddr_storage`
    // (the type viewed as here), and `len` is the length of the address
    // `to_sockaddr` wrote into it, whose family matches its contents.
    unsafe {
        *s.view_as::<libc::sockaddr_storage>() = storage;
        SockAddr::new(s, len)
    }
}

/// The [`Address`] of a socket address from the kernel.
pub(crate) fn from_sock_addr(op: &'static str, sa: &SockAddr) -> Result<Address, Error> {
    // SAFETY: `as_ptr` points to a whole `sockaddr_storage`, valid for
    // reads of `len()` bytes (at most its size).
    unsafe { Address::from_raw_sockaddr(sa.as_ptr().cast::<libc::sockaddr>(), sa.len()) }
        .map_err(|e| Error::new(op, e.errno()))
}

/// Whether an inet address names "any address, any port" (no bind needed).
fn needs_bind(local: &Address) -> bool {
    match local.to_socket_addr() {
        Some(sa) => sa.port() != 0 || !sa.ip().is_unspecified(),
        None => {
            local.unix_path().is_some_and(|p| !p.as_os_str().is_empty())
                || local.unix_abstract_name().is_some()
        }
    }
}

/// Which kind of connect a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Unix,
}

/// Where a connect request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectStep {
    /// `connect()` is in progress: waiting for the socket to become
    /// writable (connected) or to report an error.
    Connecting,
    /// Connected; the request is done.
    Connected,
    /// The connect failed or the request ended otherwise; the socket is
    /// closed.
    Failed,
}

impl fmt::Display for ConnectStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectStep::Connecting => "CONNECTING",
            ConnectStep::Connected => "CONNECTED",
            ConnectStep::Failed => "FAILED",
        })
    }
}

/// The state of a connect request (opaque).
pub struct ConnectState {
    kind: Kind,
    step: ConnectStep,
    /// Declared before `sock`: dropped (unregistered) before it is closed.
    fde: Option<FdEvent>,
    sock: Option<Socket>,
}

impl ConnectState {
    fn set_step(&mut self, step: ConnectStep) {
        log::debug!("{:?} connect: {} => {step}", self.kind, self.step);
        self.step = step;
    }
}

impl fmt::Debug for ConnectState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectState")
            .field("kind", &self.kind)
            .field("step", &self.step)
            .finish()
    }
}

/// A connect request: its result is the stream and the local address.
pub type ConnectReq = Req<ConnectState, (Stream, Address)>;

/// Connect a TCP socket to `remote` (tsocket's
/// `tstream_inet_tcp_connect_send`), optionally bound to `local` first (a
/// local address that is "any address, port 0" is not bound). The stream
/// has `TCP_NODELAY` set.
///
/// Errors (from the loop): `EINVAL` if `remote` is not an inet address or
/// `local` is not one of the same family; the errno of `socket`, `bind` or
/// `connect` (`ECONNREFUSED`, `ENETUNREACH`, `EADDRINUSE`, ...);
/// `ETIMEDOUT` after an end time set with [`Req::set_endtime`].
///
/// ```
/// use std::time::Duration;
/// use tevent::Deadline;
///
/// let ctx = tevent::Context::new()?;
/// let listener = tsocket::Listener::bind(&"ipv4:127.0.0.1:0".parse()?)?;
/// let accept = tsocket::accept_send(&ctx, &listener);
/// let connect = tsocket::tcp_connect_send(&ctx, None, listener.local_address());
/// connect.set_endtime(Deadline::after(Duration::from_secs(5)));
/// connect.poll()?;
/// let (client, local) = tsocket::tcp_connect_recv(&connect)?;
/// accept.poll()?;
/// let (server, peer) = tsocket::accept_recv(&accept)?;
/// assert_eq!(peer, local);
/// # drop((client, server));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[track_caller]
pub fn tcp_connect_send(ctx: &Context, local: Option<&Address>, remote: &Address) -> ConnectReq {
    connect_send(ctx, Kind::Tcp, local, remote)
}

/// The stream and local address of a finished [`tcp_connect_send`]
/// request.
///
/// # Errors
///
/// Why the connect failed (`ECONNREFUSED`, `ETIMEDOUT`, ...).
pub fn tcp_connect_recv(req: &ConnectReq) -> Result<(Stream, Address), Error> {
    req.recv().map_err(|e| Error::from_req("connect", e))
}

/// Connect a unix stream socket to the path `remote` (tsocket's
/// `tstream_unix_connect_send`), optionally bound to `local` first (an
/// empty path is not bound).
///
/// Errors (from the loop): `EINVAL` if `remote` or `local` is not a unix
/// address; the errno of `connect` (`ENOENT` for a missing path,
/// `ECONNREFUSED` if nothing listens there, `EAGAIN` if the listener's
/// backlog is full, as Linux reports it for unix sockets).
#[track_caller]
pub fn unix_connect_send(ctx: &Context, local: Option<&Address>, remote: &Address) -> ConnectReq {
    connect_send(ctx, Kind::Unix, local, remote)
}

/// The stream of a finished [`unix_connect_send`] request.
///
/// # Errors
///
/// Why the connect failed.
pub fn unix_connect_recv(req: &ConnectReq) -> Result<Stream, Error> {
    req.recv()
        .map(|(stream, _)| stream)
        .map_err(|e| Error::from_req("connect", e))
}

#[track_caller]
fn connect_send(
    ctx: &Context,
    kind: Kind,
    local: Option<&Address>,
    remote: &Address,
) -> ConnectReq {
    let req = Req::new(
        ctx,
        ConnectState {
            kind,
            step: ConnectStep::Connecting,
            fde: None,
            sock: None,
        },
    );
    // Whatever ends the request (error, end time, drop) closes the socket.
    req.set_cleanup_fn(|state: &mut ConnectState, rstate| {
        if rstate != ReqState::Done && state.step == ConnectStep::Connecting {
            state.set_step(ConnectStep::Failed);
        }
        state.fde = None;
        state.sock = None;
    });
    match connect_start(ctx, &req, kind, local, remote) {
        // Connected at once (unix sockets usually are).
        Ok(true) => connect_finish(&req),
        // In progress: the fd event takes it from here.
        Ok(false) => return req,
        // Refused before anything was sent, or failed at once.
        Err(errno) => {
            req.state_mut().set_step(ConnectStep::Failed);
            req.error(errno as u64);
        }
    }
    req.post()
}

/// Create, bind and connect the socket. `Ok(true)` if connected at once,
/// `Ok(false)` if in progress (the fd event is set up).
fn connect_start(
    ctx: &Context,
    req: &ConnectReq,
    kind: Kind,
    local: Option<&Address>,
    remote: &Address,
) -> Result<bool, i32> {
    let io = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    let domain = match (kind, remote.to_socket_addr()) {
        (Kind::Tcp, Some(std::net::SocketAddr::V4(_))) => Domain::IPV4,
        (Kind::Tcp, Some(std::net::SocketAddr::V6(_))) => Domain::IPV6,
        (Kind::Unix, None) if remote.is_unix() => Domain::UNIX,
        _ => return Err(libc::EINVAL),
    };
    let bind = match local {
        Some(local) if local.is_unix() != remote.is_unix() => return Err(libc::EINVAL),
        Some(local) if needs_bind(local) => {
            if local.is_ipv4() != remote.is_ipv4() {
                return Err(libc::EINVAL);
            }
            Some(local)
        }
        _ => None,
    };
    let sock = Socket::new(domain, Type::STREAM, None).map_err(io)?;
    sock.set_nonblocking(true).map_err(io)?;
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    sock.set_nosigpipe(true).map_err(io)?;
    if let Some(local) = bind {
        if let Some(sa) = local.to_socket_addr() {
            if sa.port() != 0 {
                sock.set_reuse_address(true).map_err(io)?;
            }
            if sa.is_ipv6() && !sa.ip().is_unspecified() {
                sock.set_only_v6(true).map_err(io)?;
            }
        }
        sock.bind(&to_sock_addr(local)).map_err(io)?;
    }
    if kind == Kind::Tcp {
        sock.set_tcp_nodelay(true).map_err(io)?;
    }
    let result = sock.connect(&to_sock_addr(remote));
    let in_progress = match result {
        Ok(()) => false,
        Err(e) => match e.raw_os_error() {
            // Under way (an interrupted connect also goes on by itself).
            Some(libc::EINPROGRESS) | Some(libc::EINTR) => true,
            // Failed at once. Linux reports a full unix listener backlog
            // as EAGAIN: that connect did not start, and its socket would
            // report a hang-up, so it is an error here rather than a wait.
            Some(errno) => return Err(errno),
            None => return Err(libc::EIO),
        },
    };
    if !in_progress {
        req.state_mut().sock = Some(sock);
        return Ok(true);
    }
    let weak = req.downgrade();
    let fde = ctx
        .add_fd(
            &sock,
            FdFlags::WRITE | FdFlags::ERROR,
            move |_ctx, _fde, flags| {
                if let Some(req) = weak.upgrade() {
                    connect_handler(&req, flags);
                }
            },
        )
        .map_err(|e| e.errno().unwrap_or(libc::EIO))?;
    let mut state = req.state_mut();
    state.sock = Some(sock);
    state.fde = Some(fde);
    Ok(false)
}

/// The socket became writable or reported an error.
fn connect_handler(req: &ConnectReq, flags: FdFlags) {
    let step = req.state().step;
    match step {
        // The connect is in progress: SO_ERROR says how it ended.
        ConnectStep::Connecting => {
            let fd = {
                let state = req.state();
                state.sock.as_ref().map(std::os::fd::AsRawFd::as_raw_fd)
            };
            let Some(fd) = fd else {
                return;
            };
            log::trace!("connect fd {fd}: {flags:?}");
            match so_error(fd) {
                Ok(0) => connect_finish(req),
                // Spurious wake-up: keep waiting.
                Ok(libc::EINPROGRESS) | Ok(libc::EALREADY) | Ok(libc::EINTR) => {}
                Ok(errno) | Err(errno) => {
                    req.state_mut().set_step(ConnectStep::Failed);
                    req.error(errno as u64);
                }
            }
        }
        // Already finished: a late event (the cleanup drops the fd event).
        ConnectStep::Connected | ConnectStep::Failed => {}
    }
}

/// Connected: make the stream and finish.
fn connect_finish(req: &ConnectReq) {
    let (fde, sock) = {
        let mut state = req.state_mut();
        (state.fde.take(), state.sock.take())
    };
    // The stream registers its own fd event.
    drop(fde);
    let Some(sock) = sock else {
        req.error(libc::EINVAL as u64);
        return;
    };
    let local = match sock.local_addr() {
        Ok(sa) => from_sock_addr("connect", &sa),
        Err(e) => Err(Error::from_io("connect", &e)),
    };
    match local {
        Ok(local) => {
            req.state_mut().set_step(ConnectStep::Connected);
            let stream = bsd_stream::from_socket(sock);
            req.done((stream, local));
        }
        Err(err) => {
            req.state_mut().set_step(ConnectStep::Failed);
            crate::stream::fail(req, err);
        }
    }
}
