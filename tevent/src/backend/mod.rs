//! The kernel interface behind a [`Context`](crate::Context): a small trait
//! and the backends that implement it.
//!
//! A backend only registers file descriptors and waits for one of them to
//! become ready. Everything else (timers, immediates, signals, the order in
//! which work runs, fairness between events sharing an fd) lives in the
//! context, so every backend behaves the same; the test suite runs the
//! context's behaviour tests once per backend.
//!
//! | name | what it is |
//! |---|---|
//! | `"epoll"` | Linux `epoll`, called directly; the default on Linux |
//! | `"polling"` | the [`polling`](::polling) crate (epoll, kqueue, event ports, ...); the default elsewhere |
//! | `"poll"` | `poll(2)`: portable, O(n) per wait |
//!
//! `"standard"` is accepted as an alias of the default, as in tevent.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::FdFlags;

#[cfg(target_os = "linux")]
mod epoll;
mod poll;
mod polling;

#[cfg(target_os = "linux")]
pub use self::epoll::EpollBackend;
pub use self::poll::PollBackend;
pub use self::polling::PollingBackend;

/// One readiness report from [`Backend::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The token the fd was registered with.
    pub token: u64,
    /// The fd is readable (`EPOLLIN` / `POLLIN`).
    pub readable: bool,
    /// The fd is writable (`EPOLLOUT` / `POLLOUT`).
    pub writable: bool,
    /// The peer hung up or the fd has an error (`EPOLLHUP`, `EPOLLERR`,
    /// `EPOLLRDHUP` and their poll equivalents).
    pub hangup: bool,
    /// The fd is not open (`POLLNVAL`): the context disarms every event on it.
    pub invalid: bool,
}

/// The operations a context needs from the kernel (tevent's `tevent_ops`,
/// reduced to the fd part).
///
/// Contract:
/// - `add` is called once per fd before `modify`/`delete`, and only with a
///   non-empty interest; an fd whose interest becomes empty is `delete`d.
/// - Registrations are level-triggered: an fd that stays ready is reported
///   again by the next `wait`.
/// - `wait` returns at most one ready fd. Returning `Ok(None)` means the
///   timeout passed or the wait was interrupted; the context then checks its
///   timers and signals. A backend should rotate among several ready fds so
///   that none is starved (the kernel does this for epoll).
/// - `timeout == None` means wait until an fd is ready.
///
/// Interest mapping: `READ` asks for readability and hang-up, `WRITE` for
/// writability, `ERROR` for hang-up and errors only.
pub trait Backend {
    /// The backend's name, as accepted by [`Context::with_backend`](crate::Context::with_backend).
    fn name(&self) -> &'static str;
    /// Start watching `fd` for `interest`, reporting it with `token`.
    fn add(&mut self, fd: RawFd, token: u64, interest: FdFlags) -> io::Result<()>;
    /// Change what `fd` is watched for.
    fn modify(&mut self, fd: RawFd, token: u64, interest: FdFlags) -> io::Result<()>;
    /// Stop watching `fd`.
    fn delete(&mut self, fd: RawFd) -> io::Result<()>;
    /// Wait up to `timeout` for one registered fd to become ready.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Option<Readiness>>;

    /// An fd that is readable whenever a registered fd is ready, for an
    /// outer loop to watch ([`Context::loop_fd`](crate::Context::loop_fd));
    /// `None` if the backend has none.
    fn as_raw_fd(&self) -> Option<RawFd> {
        None
    }

    /// Forget every registration and create the kernel objects anew (after
    /// `fork`, see [`Context::reinitialise`](crate::Context::reinitialise)).
    fn reinitialise(&mut self) -> io::Result<()>;
}

/// The names [`Context::with_backend`](crate::Context::with_backend) accepts, default first.
pub fn names() -> &'static [&'static str] {
    if cfg!(target_os = "linux") {
        &["epoll", "polling", "poll"]
    } else {
        &["polling", "poll"]
    }
}

/// The name of the backend a plain [`Context::new`](crate::Context::new) uses.
pub fn default_name() -> &'static str {
    names()[0]
}

/// Create a backend by name (see the table in the module docs).
pub(crate) fn create(name: &str) -> Result<Box<dyn Backend>, crate::Error> {
    let name = if name == "standard" {
        default_name()
    } else {
        name
    };
    match name {
        #[cfg(target_os = "linux")]
        "epoll" => Ok(Box::new(EpollBackend::new()?)),
        "polling" => Ok(Box::new(PollingBackend::new()?)),
        "poll" => Ok(Box::new(PollBackend::new())),
        other => Err(crate::Error::UnknownBackend(other.to_string())),
    }
}

/// Milliseconds for `timeout`, rounded up so a wait never ends before a
/// deadline (a timer due in 0.3 ms must not cause a busy loop of zero-length
/// waits), capped at `i32::MAX`; `-1` for no timeout.
pub(crate) fn timeout_millis(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(t) => {
            // Without `as_nanos`: its 128-bit division is a library call on
            // every wait.
            if t.as_secs() > (i32::MAX / 1000) as u64 {
                return i32::MAX;
            }
            let ms = t.as_secs() as u32 * 1000 + t.subsec_nanos().div_ceil(1_000_000);
            ms.min(i32::MAX as u32) as i32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::timeout_millis;
    use std::time::Duration;

    #[test]
    fn timeouts_round_up_to_whole_milliseconds() {
        assert_eq!(timeout_millis(None), -1);
        assert_eq!(timeout_millis(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_millis(Some(Duration::from_nanos(1))), 1);
        assert_eq!(timeout_millis(Some(Duration::from_micros(1500))), 2);
        assert_eq!(
            timeout_millis(Some(Duration::from_secs(u64::MAX))),
            i32::MAX
        );
        let ms = |n: u64| timeout_millis(Some(Duration::from_millis(n)));
        assert_eq!(ms(2_147_483_000), 2_147_483_000);
        assert_eq!(ms(i32::MAX as u64), i32::MAX);
        assert_eq!(ms(i32::MAX as u64 + 1), i32::MAX);
        assert_eq!(
            timeout_millis(Some(Duration::new(2_147_483, 999_999_999))),
            i32::MAX
        );
    }
}
