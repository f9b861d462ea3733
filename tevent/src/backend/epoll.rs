//! Linux `epoll`, driven directly through `rustix`.
//!
//! One `epoll_wait` per wait with room for a single event, as C tevent does:
//! the kernel queues level-triggered ready fds round-robin, so fairness
//! between busy fds comes for free, and an event is never handed out after
//! another handler could have made it stale.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};

use super::{timeout_millis, Backend, Readiness};
use crate::FdFlags;

/// The `epoll` backend (`"epoll"`), the default on Linux.
#[derive(Debug)]
pub struct EpollBackend {
    epfd: OwnedFd,
}

impl EpollBackend {
    /// Create an epoll instance (`epoll_create1(EPOLL_CLOEXEC)`).
    pub fn new() -> io::Result<EpollBackend> {
        let epfd = epoll::create(CreateFlags::CLOEXEC)?;
        Ok(EpollBackend { epfd })
    }
}

fn event_flags(interest: FdFlags) -> EventFlags {
    let mut flags = EventFlags::empty();
    if interest.contains(FdFlags::READ) {
        flags |= EventFlags::IN | EventFlags::RDHUP;
    }
    if interest.contains(FdFlags::WRITE) {
        flags |= EventFlags::OUT;
    }
    if interest.contains(FdFlags::ERROR) {
        flags |= EventFlags::RDHUP;
    }
    flags
}

fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the fd is only used for the duration of one epoll_ctl call.
    // The context's contract (as tevent's) is that an fd event is dropped
    // before its fd is closed; if a caller breaks it, epoll_ctl fails with
    // EBADF or acts on whatever fd now has that number: a kernel-level
    // misdirection, never a memory-safety issue.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

impl Backend for EpollBackend {
    fn name(&self) -> &'static str {
        "epoll"
    }

    fn add(&mut self, fd: RawFd, token: u64, interest: FdFlags) -> io::Result<()> {
        epoll::add(
            &self.epfd,
            borrow(fd),
            EventData::new_u64(token),
            event_flags(interest),
        )?;
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, token: u64, interest: FdFlags) -> io::Result<()> {
        epoll::modify(
            &self.epfd,
            borrow(fd),
            EventData::new_u64(token),
            event_flags(interest),
        )?;
        Ok(())
    }

    fn delete(&mut self, fd: RawFd) -> io::Result<()> {
        epoll::delete(&self.epfd, borrow(fd))?;
        Ok(())
    }

    fn as_raw_fd(&self) -> Option<RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(&self.epfd))
    }

    fn reinitialise(&mut self) -> io::Result<()> {
        self.epfd = epoll::create(CreateFlags::CLOEXEC)?;
        Ok(())
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Option<Readiness>> {
        let ms = timeout_millis(timeout);
        let ts;
        let ts_ref = if ms < 0 {
            None
        } else {
            ts = rustix::time::Timespec {
                tv_sec: (ms / 1000).into(),
                tv_nsec: ((ms % 1000) * 1_000_000).into(),
            };
            Some(&ts)
        };
        let mut events = [Event {
            flags: EventFlags::empty(),
            data: EventData::new_u64(0),
        }];
        let n = match epoll::wait(&self.epfd, &mut events[..], ts_ref) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Ok(None);
        }
        let ev = events[0];
        let flags = ev.flags;
        Ok(Some(Readiness {
            token: ev.data.u64(),
            readable: flags.contains(EventFlags::IN),
            writable: flags.contains(EventFlags::OUT),
            hangup: flags.intersects(EventFlags::HUP | EventFlags::ERR | EventFlags::RDHUP),
            invalid: false,
        }))
    }
}
