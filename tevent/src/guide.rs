//! A walk from a first timer to a request with sub-requests, for newcomers
//! and for people porting tevent code.
//!
//! # 1. A context and a timer
//!
//! Everything starts with a [`Context`](crate::Context). Adding an event
//! returns a handle; the event lives as long as the handle (or until it has
//! fired, for a timer). The loop runs until no events remain.
//!
//! ```
//! use std::time::Duration;
//! use tevent::{Context, Deadline};
//!
//! let ctx = Context::new()?;
//! let timer = ctx.add_timer(Deadline::after(Duration::from_millis(2)), |_ctx, _timer, _now| {
//!     println!("two milliseconds later");
//! });
//! ctx.loop_wait()?;
//! assert!(!timer.is_pending()); // a fired timer is gone
//! # Ok::<(), tevent::Error>(())
//! ```
//!
//! In C, `talloc_free(te)` cancels a timer; here `drop(timer)` does. A timer
//! that should fire although nobody keeps its handle is
//! [`detach`](crate::Timer::detach)ed.
//!
//! # 2. State shared between handlers
//!
//! Handlers are `FnMut + 'static` closures. State that several handlers
//! touch lives in an `Rc<RefCell<..>>` (single-threaded, so no locks). Do
//! not capture a `Context` clone in a handler of the same context (that is
//! a reference cycle): use the `&Context` every handler is given.
//!
//! ```
//! use std::cell::RefCell;
//! use std::rc::Rc;
//! use tevent::Context;
//!
//! let ctx = Context::new()?;
//! let seen = Rc::new(RefCell::new(Vec::new()));
//! let s = seen.clone();
//! let im = ctx.schedule_immediate(move |ctx, _im| {
//!     s.borrow_mut().push("immediate");
//!     let s = s.clone();
//!     // Handlers may add events; this one fires in a later iteration.
//!     ctx.schedule_immediate(move |_, _| s.borrow_mut().push("second")).detach();
//! });
//! ctx.loop_wait()?;
//! assert_eq!(*seen.borrow(), ["immediate", "second"]);
//! # drop(im);
//! # Ok::<(), tevent::Error>(())
//! ```
//!
//! # 3. A request
//!
//! An asynchronous operation is a [`Req`](crate::Req): a `_send` function
//! creates it with its state and starts the work; the caller sets a
//! callback; the producer finishes it with `done` or `error`; the callback
//! takes the result with a `_recv` function. A request finished inside
//! `_send` is returned with [`post`](crate::Req::post), so that its callback
//! still runs from the loop.
//!
//! ```
//! use tevent::{Context, Req, ReqError};
//!
//! /// Doubles a number "asynchronously" (finishes inside _send, so posts).
//! fn double_send(ctx: &Context, n: u32) -> Req<(), u32> {
//!     let req = Req::new(ctx, ());
//!     req.done(n * 2);
//!     req.post()
//! }
//!
//! fn double_recv(req: &Req<(), u32>) -> Result<u32, ReqError> {
//!     req.recv()
//! }
//!
//! let ctx = Context::new()?;
//! let req = double_send(&ctx, 21);
//! req.set_callback(|req| println!("got {:?}", double_recv(req)));
//! assert!(!req.is_in_progress()); // finished, but the callback has not run
//! ctx.loop_wait()?; // ...it runs here
//! # Ok::<(), tevent::Error>(())
//! ```
//!
//! # 4. Sub-requests
//!
//! The main pattern of tevent code: a request whose state machine starts
//! sub-requests and finishes when they do. The parent's state owns the
//! sub-request (dropping the parent cancels it, as talloc would free it);
//! the sub-request's callback reaches the parent through
//! [`set_parent_callback`](crate::Req::set_parent_callback), C's
//! `tevent_req_set_callback(subreq, fn, req)`, which holds the parent
//! weakly. Other private data (a connection, a client object) goes with
//! [`set_callback_with`](crate::Req::set_callback_with) the same way.
//! [`Req`](crate::Req)'s documentation has a C
//! program beside its port, and `examples/read_line.rs` a complete one with
//! fd events and end times.
//!
//! ```
//! use std::time::Duration;
//! use tevent::{wakeup_recv, wakeup_send, Context, Deadline, Req};
//!
//! struct TwoNapsState {
//!     naps: u32,
//!     subreq: Option<Req<(), ()>>,
//! }
//!
//! fn two_naps_send(ctx: &Context) -> Req<TwoNapsState, u32> {
//!     let req = Req::new(ctx, TwoNapsState { naps: 0, subreq: None });
//!     two_naps_next(ctx, &req);
//!     req
//! }
//!
//! fn two_naps_next(ctx: &Context, req: &Req<TwoNapsState, u32>) {
//!     let subreq = wakeup_send(ctx, Deadline::after(Duration::from_millis(1)));
//!     subreq.set_parent_callback(req, two_naps_done);
//!     req.state_mut().subreq = Some(subreq);
//! }
//!
//! fn two_naps_done(subreq: &Req<(), ()>, req: &Req<TwoNapsState, u32>) {
//!     let woke = wakeup_recv(subreq);
//!     req.state_mut().subreq = None; // TALLOC_FREE(subreq)
//!     if !woke {
//!         req.error(libc::EIO as u64);
//!         return;
//!     }
//!     let naps = {
//!         let mut state = req.state_mut();
//!         state.naps += 1;
//!         state.naps
//!     };
//!     if naps < 2 {
//!         if let Some(ctx) = req.context() {
//!             two_naps_next(&ctx, req);
//!         }
//!         return;
//!     }
//!     req.done(naps);
//! }
//!
//! let ctx = Context::new()?;
//! let req = two_naps_send(&ctx);
//! req.poll()?; // run the loop until it finishes (sync wrapper)
//! assert_eq!(req.recv(), Ok(2));
//! # Ok::<(), tevent::Error>(())
//! ```
//!
//! # 5. Serialising with a queue
//!
//! A [`Queue`](crate::Queue) runs one request at a time: each request's
//! trigger starts its work when it reaches the head, and the next one starts
//! when the previous request is received or dropped (not merely finished).
//!
//! # 6. Beyond one thread and one loop
//!
//! - Other threads hand work to the loop with a
//!   [`ThreadHandle`](crate::ThreadHandle).
//! - A program with its own main loop drives the context through
//!   [`loop_fd`](crate::Context::loop_fd),
//!   [`next_timeout`](crate::Context::next_timeout) and
//!   [`try_loop_once`](crate::Context::try_loop_once) (see
//!   ["Embedding"](crate::Context#embedding-in-another-loop)).
//! - [`set_trace_callback`](crate::Context::set_trace_callback) and
//!   [`set_event_trace_callback`](crate::Context::set_event_trace_callback)
//!   show what the loop does; `examples/profile.rs` turns them into a live
//!   profile.
