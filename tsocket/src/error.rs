//! The error type of the socket helpers.

use std::fmt;
use std::io;

use tevent::ReqError;

/// Why a socket operation failed: an errno, as tsocket reports it through
/// `perrno`, and the operation that failed.
///
/// tsocket's conventions are kept: end of file on a stream is `EPIPE`, a
/// second outstanding read or write is `EBUSY`, an operation after
/// `disconnect` is `ENOTCONN`, an expired end time is `ETIMEDOUT`.
///
/// ```
/// let err = tsocket::Error::new("recvfrom", libc::EBUSY);
/// assert_eq!(err.errno(), libc::EBUSY);
/// assert_eq!(err.kind(), std::io::ErrorKind::ResourceBusy);
/// assert!(err.to_string().starts_with("recvfrom: "));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Error {
    op: &'static str,
    errno: i32,
}

impl Error {
    /// An error of operation `op` with `errno`.
    pub const fn new(op: &'static str, errno: i32) -> Error {
        Error { op, errno }
    }

    /// An error from an [`io::Error`] (`EIO` if it carries no errno).
    pub fn from_io(op: &'static str, err: &io::Error) -> Error {
        Error::new(op, err.raw_os_error().unwrap_or(libc::EIO))
    }

    /// An error from a request that did not succeed (`ETIMEDOUT` for an
    /// expired end time, the producer's code for a user error).
    pub fn from_req(op: &'static str, err: ReqError) -> Error {
        Error::new(op, err.errno())
    }

    /// The errno.
    pub const fn errno(&self) -> i32 {
        self.errno
    }

    /// The operation that failed (`"recvfrom"`, `"writev"`, ...).
    pub const fn op(&self) -> &'static str {
        self.op
    }

    /// The errno as an [`io::ErrorKind`].
    pub fn kind(&self) -> io::ErrorKind {
        io::Error::from_raw_os_error(self.errno).kind()
    }

    /// The errno as a request error code, for [`tevent::Req::error`].
    pub const fn code(&self) -> u64 {
        self.errno as u64
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.op,
            io::Error::from_raw_os_error(self.errno)
        )
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("op", &self.op)
            .field("errno", &self.errno)
            .field(
                "message",
                &io::Error::from_raw_os_error(self.errno).to_string(),
            )
            .finish()
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::from_raw_os_error(e.errno)
    }
}
