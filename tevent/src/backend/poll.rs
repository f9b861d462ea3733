//! `poll(2)`: the simple, portable backend.
//!
//! Every wait passes the whole fd array to the kernel, so a wait costs O(n)
//! in the number of registered fds. When several fds are ready, the search
//! for the one to report starts after the one reported last, so a busy fd
//! cannot starve the others.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{timeout_millis, Backend, Readiness};
use crate::FdFlags;

/// The `poll(2)` backend (`"poll"`).
#[derive(Debug, Default)]
pub struct PollBackend {
    fds: Vec<libc::pollfd>,
    tokens: Vec<u64>,
    index: HashMap<RawFd, usize>,
    next: usize,
}

impl PollBackend {
    /// Create an empty fd set.
    pub fn new() -> PollBackend {
        PollBackend::default()
    }
}

fn poll_events(interest: FdFlags) -> libc::c_short {
    let mut events = 0;
    if interest.contains(FdFlags::READ) {
        events |= libc::POLLIN | libc::POLLRDHUP;
    }
    if interest.contains(FdFlags::WRITE) {
        events |= libc::POLLOUT;
    }
    if interest.contains(FdFlags::ERROR) {
        events |= libc::POLLRDHUP;
    }
    events
}

impl Backend for PollBackend {
    fn name(&self) -> &'static str {
        "poll"
    }

    fn add(&mut self, fd: RawFd, token: u64, interest: FdFlags) -> io::Result<()> {
        if fd < 0 {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        if self.index.contains_key(&fd) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.index.insert(fd, self.fds.len());
        self.fds.push(libc::pollfd {
            fd,
            events: poll_events(interest),
            revents: 0,
        });
        self.tokens.push(token);
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, token: u64, interest: FdFlags) -> io::Result<()> {
        let i = *self
            .index
            .get(&fd)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        self.fds[i].events = poll_events(interest);
        self.tokens[i] = token;
        Ok(())
    }

    fn delete(&mut self, fd: RawFd) -> io::Result<()> {
        let i = self
            .index
            .remove(&fd)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        self.fds.swap_remove(i);
        self.tokens.swap_remove(i);
        if let Some(moved) = self.fds.get(i) {
            self.index.insert(moved.fd, i);
        }
        Ok(())
    }

    fn reinitialise(&mut self) -> io::Result<()> {
        *self = PollBackend::new();
        Ok(())
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Option<Readiness>> {
        // SAFETY: `fds` is a valid, initialised array of `fds.len()` pollfd
        // structures that stays borrowed for the duration of the call.
        let n = unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                timeout_millis(timeout),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(err);
        }
        if n == 0 {
            return Ok(None);
        }
        let len = self.fds.len();
        for step in 0..len {
            let i = (self.next + step) % len;
            let revents = self.fds[i].revents;
            if revents == 0 {
                continue;
            }
            self.next = i + 1;
            return Ok(Some(Readiness {
                token: self.tokens[i],
                readable: revents & libc::POLLIN != 0,
                writable: revents & libc::POLLOUT != 0,
                hangup: revents & (libc::POLLHUP | libc::POLLERR | libc::POLLRDHUP) != 0,
                invalid: revents & libc::POLLNVAL != 0,
            }));
        }
        Ok(None)
    }
}
