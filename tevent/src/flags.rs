//! The interest and readiness flags of an fd event.

use std::fmt;
use std::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign, Not};

/// What an fd event waits for, and what its handler is told happened.
///
/// The values match tevent's `TEVENT_FD_READ` (1), `TEVENT_FD_WRITE` (2) and
/// `TEVENT_FD_ERROR` (4), so `FdFlags::from_bits(flags)` ports C code that
/// passes integers around.
///
/// A handler is only ever called with flags that its event asked for: the
/// loop masks what the kernel reported with the event's current flags.
///
/// # Example
///
/// ```
/// use tevent::FdFlags;
///
/// let flags = FdFlags::READ | FdFlags::WRITE;
/// assert!(flags.contains(FdFlags::READ));
/// assert_eq!((flags & !FdFlags::READ), FdFlags::WRITE);
/// assert_eq!(flags.bits(), 3);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FdFlags(u16);

impl FdFlags {
    /// No interest: an fd event with empty flags is not registered with the
    /// kernel and does not keep [`Context::loop_wait`](crate::Context::loop_wait) running.
    pub const EMPTY: FdFlags = FdFlags(0);
    /// The fd is readable. A hang-up or socket error is also reported as
    /// `READ` to an event that wants `READ`, so that the following `read`
    /// returns the end of file or the error.
    pub const READ: FdFlags = FdFlags(1);
    /// The fd is writable.
    pub const WRITE: FdFlags = FdFlags(2);
    /// The peer hung up or the socket has an error (`EPOLLRDHUP`, `EPOLLHUP`,
    /// `EPOLLERR`). Useful to watch a connection for failure without
    /// consuming its data.
    pub const ERROR: FdFlags = FdFlags(4);
    const ALL: u16 = 7;

    /// Flags from tevent's integer encoding; unknown bits are dropped.
    pub const fn from_bits(bits: u16) -> FdFlags {
        FdFlags(bits & Self::ALL)
    }

    /// The integer encoding tevent uses.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: FdFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any flag of `other` is set in `self`.
    pub const fn intersects(self, other: FdFlags) -> bool {
        self.0 & other.0 != 0
    }
}

impl BitOr for FdFlags {
    type Output = FdFlags;
    fn bitor(self, rhs: FdFlags) -> FdFlags {
        FdFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for FdFlags {
    fn bitor_assign(&mut self, rhs: FdFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for FdFlags {
    type Output = FdFlags;
    fn bitand(self, rhs: FdFlags) -> FdFlags {
        FdFlags(self.0 & rhs.0)
    }
}

impl BitAndAssign for FdFlags {
    fn bitand_assign(&mut self, rhs: FdFlags) {
        self.0 &= rhs.0;
    }
}

impl Not for FdFlags {
    type Output = FdFlags;
    fn not(self) -> FdFlags {
        FdFlags(!self.0 & Self::ALL)
    }
}

impl fmt::Debug for FdFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("EMPTY");
        }
        let mut first = true;
        for (flag, name) in [
            (FdFlags::READ, "READ"),
            (FdFlags::WRITE, "WRITE"),
            (FdFlags::ERROR, "ERROR"),
        ] {
            if self.contains(flag) {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::FdFlags;

    #[test]
    fn not_stays_within_known_bits() {
        assert_eq!(
            !FdFlags::EMPTY,
            FdFlags::READ | FdFlags::WRITE | FdFlags::ERROR
        );
        assert_eq!(FdFlags::from_bits(0xff).bits(), 7);
    }

    #[test]
    fn debug_names_each_flag() {
        assert_eq!(
            format!("{:?}", FdFlags::READ | FdFlags::ERROR),
            "READ|ERROR"
        );
        assert_eq!(format!("{:?}", FdFlags::EMPTY), "EMPTY");
    }
}
