//! The error type of the event loop.

use std::fmt;
use std::io;
use std::panic::Location;

/// What went wrong in a call into the event loop.
///
/// Every variant that has a C equivalent keeps its errno ([`Error::errno`]),
/// so code ported from tevent can keep reporting the same numbers.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// [`Context::loop_once`](crate::Context::loop_once) was called from
    /// inside a handler of the same context, and nesting was not allowed with
    /// [`Context::allow_nesting`](crate::Context::allow_nesting). C tevent
    /// aborts here; this crate refuses the call (`ELOOP`). The location is
    /// the nested call's.
    Nested {
        /// Where the refused nested call was made.
        location: &'static Location<'static>,
    },
    /// The wait timeout is zero (polling mode, see
    /// [`Context::set_wait_timeout`](crate::Context::set_wait_timeout)) and
    /// nothing was ready (`EAGAIN`).
    WouldBlock,
    /// The context that the handle belonged to has been dropped.
    ContextGone,
    /// The signal number cannot be handled: out of range, or `SIGKILL` /
    /// `SIGSTOP` (`EINVAL`).
    InvalidSignal(i32),
    /// The file descriptor is negative (`EBADF`).
    BadFd(i32),
    /// No backend of that name exists (`ENOENT`).
    UnknownBackend(String),
    /// The request is already in a queue (`EBUSY`).
    AlreadyQueued,
    /// The queue operation needs a stopped queue and its head entry
    /// (`EINVAL`; C tevent aborts).
    QueueRunning,
    /// The operating system refused (the error keeps its errno).
    Io(io::Error),
}

impl Error {
    /// The errno that C tevent reports for the same failure, if there is one.
    ///
    /// ```
    /// let err = tevent::Error::WouldBlock;
    /// assert_eq!(err.errno(), Some(libc::EAGAIN));
    /// ```
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Nested { .. } => Some(libc::ELOOP),
            Error::WouldBlock => Some(libc::EAGAIN),
            Error::ContextGone => Some(libc::EINVAL),
            Error::InvalidSignal(_) => Some(libc::EINVAL),
            Error::BadFd(_) => Some(libc::EBADF),
            Error::UnknownBackend(_) => Some(libc::ENOENT),
            Error::AlreadyQueued => Some(libc::EBUSY),
            Error::QueueRunning => Some(libc::EINVAL),
            Error::Io(e) => e.raw_os_error(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Nested { location } => write!(
                f,
                "nested loop_once at {location} refused: call Context::allow_nesting to permit it"
            ),
            Error::WouldBlock => f.write_str("nothing was ready and the wait timeout is zero"),
            Error::ContextGone => f.write_str("the event context has been dropped"),
            Error::InvalidSignal(n) => write!(f, "signal {n} cannot be handled"),
            Error::BadFd(fd) => write!(f, "invalid file descriptor {fd}"),
            Error::UnknownBackend(name) => write!(f, "no event backend named {name:?}"),
            Error::AlreadyQueued => f.write_str("the request is already in a queue"),
            Error::QueueRunning => {
                f.write_str("untrigger needs a stopped queue and its head entry")
            }
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            Error::WouldBlock => io::Error::from(io::ErrorKind::WouldBlock),
            other => match other.errno() {
                Some(errno) => io::Error::from_raw_os_error(errno),
                None => io::Error::other(other),
            },
        }
    }
}
