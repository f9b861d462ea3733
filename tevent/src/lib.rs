//! A callback-based, single-threaded event loop: a Rust port of Samba's
//! [tevent](https://tevent.samba.org/).
//!
//! An event [`Context`] holds four kinds of events, each returned as a
//! handle that removes the event when dropped:
//!
//! | tevent | here | fires |
//! |---|---|---|
//! | `tevent_add_fd` | [`Context::add_fd`] → [`FdEvent`] | when an fd is readable / writable / has an error |
//! | `tevent_add_timer` | [`Context::add_timer`] → [`Timer`] | once, at a [`Deadline`] |
//! | `tevent_schedule_immediate` | [`Context::schedule_immediate`] → [`Immediate`] | in the next iteration |
//! | `tevent_add_signal` | [`Context::add_signal`] → [`SignalEvent`] | after a Unix signal, in loop context |
//!
//! The loop is driven by [`Context::loop_once`] (one unit of work, in
//! tevent's order: signals, one immediate, one due timer, one fd event) and
//! [`Context::loop_wait`] (until no events remain).
//!
//! There are no futures here: asynchronous work is written as explicit
//! state machines advanced by handlers, and packaged as requests
//! ([`Req`], tevent's `tevent_req`) that finish with a callback;
//! [`Queue`] serialises them. The [`guide`] walks from a first timer to
//! requests with sub-requests.
//!
//! Beyond the basics: [`ThreadHandle`] lets other threads run work on the
//! loop thread; [`Context::loop_fd`], [`Context::next_timeout`] and
//! [`Context::try_loop_once`] embed the loop in another one; trace
//! callbacks ([`Context::set_trace_callback`],
//! [`Context::set_event_trace_callback`]) show what it does; backends are
//! pluggable ([`backend`]).
//!
//! # Threads
//!
//! A context and its handles are `!Send`: everything runs on the thread that
//! created the context. Handlers are `FnMut + 'static` closures; they
//! receive the `&Context`, so they do not need to capture it.
//!
//! # Example
//!
//! A socket pair, a reader that stops after three messages, and a timer
//! that writes them:
//!
//! ```
//! use std::cell::Cell;
//! use std::io::{Read, Write};
//! use std::os::unix::net::UnixStream;
//! use std::rc::Rc;
//! use std::time::Duration;
//! use tevent::{Context, Deadline, FdFlags};
//!
//! let ctx = Context::new()?;
//! let (mut writer, reader) = UnixStream::pair()?;
//! reader.set_nonblocking(true)?;
//!
//! let received = Rc::new(Cell::new(0));
//! let seen = received.clone();
//! let mut r = reader.try_clone()?;
//! let fde = ctx.add_fd(&reader, FdFlags::READ, move |_ctx, fde, _flags| {
//!     let mut buf = [0u8; 64];
//!     let n = r.read(&mut buf).unwrap();
//!     seen.set(seen.get() + n);
//!     if seen.get() == 3 {
//!         fde.set_flags(FdFlags::EMPTY).unwrap();
//!     }
//! })?;
//!
//! let mut left = 3;
//! let _timer = ctx.add_timer(Deadline::Asap, move |_ctx, timer, now| {
//!     writer.write_all(b"x").unwrap();
//!     left -= 1;
//!     if left > 0 {
//!         timer.update(now + Duration::from_millis(1));
//!     }
//! });
//!
//! ctx.loop_wait()?;
//! assert_eq!(received.get(), 3);
//! # drop(fde);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs, missing_debug_implementations)]

pub mod backend;
mod context;
mod error;
mod fd;
mod flags;
pub mod guide;
mod immediate;
mod lazy_fifo;
mod queue;
mod req;
mod req_pool;
mod signal;
mod thread;
mod timer;
mod trace;

pub use context::{Context, WeakContext, DEFAULT_WAIT_TIMEOUT};
pub use error::Error;
pub use fd::FdEvent;
pub use flags::FdFlags;
pub use immediate::Immediate;
pub use queue::{Queue, QueueEntry};
pub use req::{wakeup_recv, wakeup_send, Req, ReqError, ReqState, WeakReq};
pub use signal::{SigInfo, SignalEvent, SignalFlags, SignalInfo, SIGINFO_QUEUE};
pub use thread::{ContextGone, ThreadHandle};
pub use timer::{Deadline, Timer};
pub use trace::{EventKind, EventTracePoint, LoopTracePoint, TraceEvent};
