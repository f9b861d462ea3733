//! Accepting connections: [`Listener`] and [`accept_send`].
//!
//! tsocket has no accept helper (Samba's servers accept raw fds and wrap
//! them with `tstream_bsd_existing_socket`); this module is that glue, in
//! the same request style: [`Listener::bind`] makes a listening socket,
//! [`accept_send`] waits for one connection and finishes with a
//! [`Stream`] and the peer's address.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::rc::Rc;

use socket2::{Domain, Socket, Type};
use tevent::{Context, FdEvent, FdFlags, Req};

use crate::bsd_stream;
use crate::connect::{from_sock_addr, to_sock_addr};
use crate::stream::{fail, Stream};
use crate::{Address, Error};

/// The backlog [`Listener::bind`] asks for (the kernel caps it at its own
/// limit, `net.core.somaxconn` on Linux).
pub const DEFAULT_BACKLOG: i32 = libc::SOMAXCONN;

struct ListenerInner {
    sock: Socket,
    local: Address,
    tcp: bool,
}

/// A listening stream socket: TCP (IPv4 or IPv6) or unix.
///
/// A cheap handle: clones refer to the same socket, which is closed when
/// the last handle (and the last [`accept_send`] request using it) is
/// dropped. A unix socket's path is not removed on drop; remove it
/// yourself if you want to.
///
/// ```
/// let listener = tsocket::Listener::bind(&"ipv6:[::1]:0".parse()?)?;
/// assert!(listener.local_address().inet_port().unwrap() != 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Listener {
    inner: Rc<ListenerInner>,
}

impl Listener {
    /// Listen on `addr` with [`DEFAULT_BACKLOG`]: an inet address (port 0
    /// picks a free port; see [`local_address`](Listener::local_address)),
    /// or a unix path (which must not exist yet).
    ///
    /// TCP sockets get `SO_REUSEADDR`; IPv6 sockets bound to a specific
    /// address get `IPV6_V6ONLY`. The socket is non-blocking and
    /// close-on-exec.
    ///
    /// # Errors
    ///
    /// The errno of `socket`, `bind` or `listen` (`EADDRINUSE`, `EACCES`,
    /// ...).
    pub fn bind(addr: &Address) -> Result<Listener, Error> {
        Listener::bind_with_backlog(addr, DEFAULT_BACKLOG)
    }

    /// Like [`bind`](Listener::bind), with the `listen(2)` backlog.
    ///
    /// # Errors
    ///
    /// As [`bind`](Listener::bind).
    pub fn bind_with_backlog(addr: &Address, backlog: i32) -> Result<Listener, Error> {
        let io = |e: std::io::Error| Error::from_io("bind", &e);
        let (domain, tcp) = match addr.to_socket_addr() {
            Some(std::net::SocketAddr::V4(_)) => (Domain::IPV4, true),
            Some(std::net::SocketAddr::V6(_)) => (Domain::IPV6, true),
            None => (Domain::UNIX, false),
        };
        let sock = Socket::new(domain, Type::STREAM, None).map_err(io)?;
        if let Some(sa) = addr.to_socket_addr() {
            sock.set_reuse_address(true).map_err(io)?;
            if sa.is_ipv6() && !sa.ip().is_unspecified() {
                sock.set_only_v6(true).map_err(io)?;
            }
        }
        sock.bind(&to_sock_addr(addr)).map_err(io)?;
        sock.listen(backlog).map_err(io)?;
        sock.set_nonblocking(true).map_err(io)?;
        let local = match sock.local_addr() {
            Ok(sa) => from_sock_addr("bind", &sa)?,
            Err(e) => return Err(io(e)),
        };
        log::debug!("listening on {local}");
        Ok(Listener {
            inner: Rc::new(ListenerInner { sock, local, tcp }),
        })
    }

    /// Listen on a socket that is already bound and listening (inherited
    /// from a parent process, socket activation). It is made non-blocking
    /// and close-on-exec.
    ///
    /// # Errors
    ///
    /// The errno of `fcntl` or `getsockname` (`ENOTSOCK`, ...); `EINVAL`
    /// for an address family other than inet or unix.
    pub fn from_fd(fd: OwnedFd) -> Result<Listener, Error> {
        bsd_stream::prepare_fd(fd.as_raw_fd()).map_err(|errno| Error::new("listen", errno))?;
        let sock = Socket::from(fd);
        let local = match sock.local_addr() {
            Ok(sa) => from_sock_addr("listen", &sa)?,
            Err(e) => return Err(Error::from_io("listen", &e)),
        };
        let tcp = local.to_socket_addr().is_some();
        Ok(Listener {
            inner: Rc::new(ListenerInner { sock, local, tcp }),
        })
    }

    /// The address the socket is bound to (with the port the kernel chose
    /// for port 0).
    pub fn local_address(&self) -> &Address {
        &self.inner.local
    }

    /// Accept one connection now, if one is waiting: `Ok(None)` if none is.
    fn try_accept(&self) -> Result<Option<(Stream, Address)>, i32> {
        loop {
            match self.inner.sock.accept() {
                Ok((sock, peer)) => {
                    let io = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
                    sock.set_nonblocking(true).map_err(io)?;
                    if self.inner.tcp {
                        sock.set_tcp_nodelay(true).map_err(io)?;
                    }
                    #[cfg(any(target_os = "macos", target_os = "ios"))]
                    sock.set_nosigpipe(true).map_err(io)?;
                    let peer = if peer.len() == 0 && !self.inner.tcp {
                        // Some kernels report an unnamed unix peer as empty.
                        Address::unix_from_path("").map_err(|e| e.errno())?
                    } else {
                        from_sock_addr("accept", &peer).map_err(|e| e.errno())?
                    };
                    return Ok(Some((bsd_stream::from_socket(sock), peer)));
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(None),
                    #[allow(unreachable_patterns)] // EWOULDBLOCK == EAGAIN on Linux
                    Some(libc::EWOULDBLOCK) => return Ok(None),
                    // The connection died while queued, or a signal: next.
                    Some(libc::ECONNABORTED) | Some(libc::EINTR) => continue,
                    Some(errno) if is_connection_error(errno) => continue,
                    Some(errno) => return Err(errno),
                    None => return Err(libc::EIO),
                },
            }
        }
    }
}

/// Linux passes a new connection's pending network errors to accept(2);
/// they concern that connection, not the listener (accept(2), "Error
/// handling"), so accepting goes on.
fn is_connection_error(errno: i32) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if errno == libc::ENONET {
        return true;
    }
    matches!(
        errno,
        libc::ENETDOWN
            | libc::EPROTO
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::EHOSTUNREACH
            | libc::EOPNOTSUPP
            | libc::ENETUNREACH
    )
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.sock.as_fd()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.sock.as_raw_fd()
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("fd", &self.inner.sock.as_raw_fd())
            .field("local", &self.inner.local)
            .finish()
    }
}

/// The state of an accept request (opaque).
pub struct AcceptState {
    /// Declared before `listener`: dropped (unregistered) before the
    /// listener can be closed.
    fde: Option<FdEvent>,
    listener: Listener,
}

impl fmt::Debug for AcceptState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcceptState")
            .field("listener", &self.listener)
            .field("waiting", &self.fde.is_some())
            .finish()
    }
}

/// An accept request: its result is the connection and the peer's address.
pub type AcceptReq = Req<AcceptState, (Stream, Address)>;

/// Accept one connection on `listener`. A connection already waiting is
/// accepted at once (the request is then finished, and posted); otherwise
/// the request waits for one. Accepted sockets are non-blocking and
/// close-on-exec, and TCP ones have `TCP_NODELAY`.
///
/// Several accept requests may wait on one listener; each gets its own
/// connection. Connections aborted while queued are skipped.
///
/// Errors (from the loop): the errno of `accept` (`EMFILE`, ...).
#[track_caller]
pub fn accept_send(ctx: &Context, listener: &Listener) -> AcceptReq {
    let req = Req::new(
        ctx,
        AcceptState {
            fde: None,
            listener: listener.clone(),
        },
    );
    match listener.try_accept() {
        // A connection was waiting.
        Ok(Some(conn)) => {
            req.done(conn);
            return req.post();
        }
        // None yet: wait for the listener to become readable.
        Ok(None) => {}
        Err(errno) => {
            req.error(errno as u64);
            return req.post();
        }
    }
    let weak = req.downgrade();
    let fde = ctx.add_fd(listener, FdFlags::READ, move |_ctx, _fde, _flags| {
        if let Some(req) = weak.upgrade() {
            accept_handler(&req);
        }
    });
    match fde {
        Ok(fde) => req.state_mut().fde = Some(fde),
        Err(e) => {
            req.error(e.errno().unwrap_or(libc::EIO) as u64);
            return req.post();
        }
    }
    // A finished request stops watching the listener.
    req.set_cleanup_fn(|state: &mut AcceptState, _| state.fde = None);
    req
}

/// The listener is readable: accept.
fn accept_handler(req: &AcceptReq) {
    if !req.is_in_progress() {
        return;
    }
    let listener = req.state().listener.clone();
    match listener.try_accept() {
        Ok(Some(conn)) => {
            req.done(conn);
        }
        // Another request took it, or it was aborted: keep waiting.
        Ok(None) => {}
        Err(errno) => fail(req, Error::new("accept", errno)),
    }
}

/// The connection and peer address of a finished [`accept_send`] request.
///
/// # Errors
///
/// Why the accept failed (`EMFILE`, `ETIMEDOUT` after an end time, ...).
pub fn accept_recv(req: &AcceptReq) -> Result<(Stream, Address), Error> {
    req.recv().map_err(|e| Error::from_req("accept", e))
}
