//! The [`polling`] crate: epoll, kqueue, event ports or IOCP, whichever the
//! platform has.
//!
//! Portable, but on Linux `polling` 3 re-arms a timerfd and its notifier
//! on every wait (about four extra syscalls), which is why `"epoll"` is the
//! default there. Hang-ups are reported through `EPOLLHUP`/`EPOLLERR` only:
//! a half-close by the peer (`EPOLLRDHUP`) reaches an event that wants only
//! [`FdFlags::ERROR`] when the connection is fully closed.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{BorrowedFd, RawFd};
use std::time::Duration;

use polling::{Event, Events, PollMode, Poller};

use super::{Backend, Readiness};
use crate::FdFlags;

/// The backend built on the `polling` crate (`"polling"`).
#[derive(Debug)]
pub struct PollingBackend {
    poller: Poller,
    events: Events,
}

impl PollingBackend {
    /// Create a poller.
    pub fn new() -> io::Result<PollingBackend> {
        Ok(PollingBackend {
            poller: Poller::new()?,
            events: Events::with_capacity(NonZeroUsize::MIN),
        })
    }
}

fn event(token: u64, interest: FdFlags) -> Event {
    let mut ev = Event::new(
        token as usize,
        interest.contains(FdFlags::READ),
        interest.contains(FdFlags::WRITE),
    );
    if interest.intersects(FdFlags::READ | FdFlags::ERROR) {
        ev.set_interrupt(true);
    }
    ev
}

fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: used for one registration call only; the context's contract is
    // that an fd event is dropped before its fd is closed (see the epoll
    // backend for what happens when a caller breaks it: no memory unsafety).
    unsafe { BorrowedFd::borrow_raw(fd) }
}

impl Backend for PollingBackend {
    fn name(&self) -> &'static str {
        "polling"
    }

    fn add(&mut self, fd: RawFd, token: u64, interest: FdFlags) -> io::Result<()> {
        // SAFETY: `polling` requires the fd to be deleted before it is
        // closed; the context deletes it when the last fd event on it is
        // dropped, which its contract requires to happen before the close.
        unsafe {
            self.poller
                .add_with_mode(fd, event(token, interest), PollMode::Level)
        }
    }

    fn modify(&mut self, fd: RawFd, token: u64, interest: FdFlags) -> io::Result<()> {
        self.poller
            .modify_with_mode(borrow(fd), event(token, interest), PollMode::Level)
    }

    fn delete(&mut self, fd: RawFd) -> io::Result<()> {
        self.poller.delete(borrow(fd))
    }

    fn as_raw_fd(&self) -> Option<RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(&self.poller))
    }

    fn reinitialise(&mut self) -> io::Result<()> {
        self.poller = Poller::new()?;
        Ok(())
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Option<Readiness>> {
        self.events.clear();
        match self.poller.wait(&mut self.events, timeout) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
            Err(e) => return Err(e),
        }
        Ok(self.events.iter().next().map(|ev| Readiness {
            token: ev.key as u64,
            readable: ev.readable,
            writable: ev.writable,
            hangup: ev.is_interrupt() || ev.is_err() == Some(true),
            invalid: false,
        }))
    }
}
