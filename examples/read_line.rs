//! A small tevent program, ported: a request that reads one line from a
//! socket with a time limit, and a parent request that reads two lines
//! through it, one after the other.
//!
//! Run it with `cargo run --example read_line`.
//!
//! The C original, in tevent style (error handling shortened):
//!
//! ```c
//! struct read_line_state { struct tevent_fd *fde; int fd; char buf[256]; size_t len; };
//!
//! static void read_line_readable(struct tevent_context *ev, struct tevent_fd *fde,
//!                                uint16_t flags, void *private_data);
//!
//! struct tevent_req *read_line_send(TALLOC_CTX *mem_ctx, struct tevent_context *ev,
//!                                   int fd, struct timeval endtime)
//! {
//!     struct tevent_req *req;
//!     struct read_line_state *state;
//!
//!     req = tevent_req_create(mem_ctx, &state, struct read_line_state);
//!     if (req == NULL) return NULL;
//!     state->fd = fd;
//!     state->fde = tevent_add_fd(ev, state, fd, TEVENT_FD_READ, read_line_readable, req);
//!     if (tevent_req_nomem(state->fde, req)) return tevent_req_post(req, ev);
//!     if (!tevent_req_set_endtime(req, ev, endtime)) return tevent_req_post(req, ev);
//!     return req;
//! }
//!
//! static void read_line_readable(struct tevent_context *ev, struct tevent_fd *fde,
//!                                uint16_t flags, void *private_data)
//! {
//!     struct tevent_req *req = talloc_get_type_abort(private_data, struct tevent_req);
//!     struct read_line_state *state = tevent_req_data(req, struct read_line_state);
//!     ssize_t n = read(state->fd, state->buf + state->len, sizeof(state->buf) - state->len);
//!     if (n == -1 && errno == EAGAIN) return;
//!     if (n == -1) { tevent_req_error(req, errno); return; }
//!     if (n == 0) { tevent_req_error(req, EPIPE); return; }
//!     state->len += n;
//!     if (memchr(state->buf, '\n', state->len) != NULL) { tevent_req_done(req); return; }
//!     if (state->len == sizeof(state->buf)) tevent_req_error(req, EMSGSIZE);
//! }
//!
//! int read_line_recv(struct tevent_req *req, TALLOC_CTX *mem_ctx, char **line)
//! {
//!     struct read_line_state *state = tevent_req_data(req, struct read_line_state);
//!     int err;
//!     if (tevent_req_is_unix_error(req, &err)) { tevent_req_received(req); return err; }
//!     *line = talloc_strndup(mem_ctx, state->buf, state->len);
//!     tevent_req_received(req);
//!     return 0;
//! }
//!
//! /* two_lines_send / two_lines_step: start read_line_send, and in its
//!    callback receive the line, free the subreq, and either start the
//!    second read or tevent_req_done(req). */
//! ```
//!
//! The Rust below follows it line by line: the state struct owns the fd
//! event and the sub-request (so dropping the request cancels both), the fd
//! handler reaches the request through a `WeakReq`, the sub-request's
//! callback gets its parent as C's `tevent_req_set_callback(subreq, fn, req)`
//! does (`subreq.set_parent_callback(req, fn)`), and `_recv` is
//! `req.recv()`.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use tevent::{Context, Deadline, FdEvent, FdFlags, Req, ReqError, WeakReq};

// ---- read_line: one line from a socket, with an end time ----

struct ReadLineState {
    // Declared before `sock`, so it is dropped (unregistered) before the
    // socket is closed: an fd event must never outlive its fd.
    fde: Option<FdEvent>,
    sock: UnixStream,
    buf: Vec<u8>,
}

/// A line, and the bytes that arrived after it (the start of the next one).
type Line = (String, Vec<u8>);

/// Split the first line off `buf`, if it holds one.
fn split_line(buf: &mut Vec<u8>) -> Option<Line> {
    let end = buf.iter().position(|&b| b == b'\n')?;
    let rest = buf.split_off(end + 1);
    buf.truncate(end);
    Some((String::from_utf8_lossy(buf).into_owned(), rest))
}

/// Read one line; `buffered` holds bytes already read from `sock`.
fn read_line_send(
    ctx: &Context,
    sock: UnixStream,
    mut buffered: Vec<u8>,
    endtime: Instant,
) -> Req<ReadLineState, Line> {
    if let Some(line) = split_line(&mut buffered) {
        // Finished inside _send: deliver from the loop, never from here.
        let req = Req::new(
            ctx,
            ReadLineState {
                fde: None,
                sock,
                buf: Vec::new(),
            },
        );
        req.done(line);
        return req.post();
    }
    let req = Req::new(
        ctx,
        ReadLineState {
            fde: None,
            sock,
            buf: buffered,
        },
    );
    let weak = req.downgrade();
    let fde = ctx.add_fd(
        &req.state().sock,
        FdFlags::READ,
        move |_ctx, _fde, _flags| read_line_readable(&weak),
    );
    match fde {
        Ok(fde) => req.state_mut().fde = Some(fde),
        Err(e) => {
            req.error(e.errno().unwrap_or(libc::EIO) as u64);
            return req.post();
        }
    }
    req.set_endtime(endtime);
    req
}

fn read_line_readable(weak: &WeakReq<ReadLineState, Line>) {
    let Some(req) = weak.upgrade() else { return };
    let mut chunk = [0u8; 256];
    let result = req.state_mut().sock.read(&mut chunk);
    let n = match result {
        Err(e) if e.kind() == ErrorKind::WouldBlock => return,
        Err(e) => {
            req.error(e.raw_os_error().unwrap_or(libc::EIO) as u64);
            return;
        }
        Ok(0) => {
            req.error(libc::EPIPE as u64);
            return;
        }
        Ok(n) => n,
    };
    let line = {
        let mut state = req.state_mut();
        state.buf.extend_from_slice(&chunk[..n]);
        match split_line(&mut state.buf) {
            Some(line) => Some(line),
            None if state.buf.len() >= 256 => None,
            None => return,
        }
    };
    match line {
        Some(line) => req.done(line),
        None => req.error(libc::EMSGSIZE as u64),
    };
}

fn read_line_recv(req: &Req<ReadLineState, Line>) -> Result<Line, ReqError> {
    req.recv()
}

// ---- two_lines: two read_line sub-requests in sequence ----

struct TwoLinesState {
    sock: UnixStream,
    endtime: Instant,
    lines: Vec<String>,
    buffered: Vec<u8>,
    subreq: Option<Req<ReadLineState, Line>>,
}

fn two_lines_send(
    ctx: &Context,
    sock: UnixStream,
    timeout: Duration,
) -> Req<TwoLinesState, Vec<String>> {
    let req = Req::new(
        ctx,
        TwoLinesState {
            sock,
            endtime: Instant::now() + timeout,
            lines: Vec::new(),
            buffered: Vec::new(),
            subreq: None,
        },
    );
    two_lines_next(ctx, &req);
    req
}

/// Start reading the next line.
fn two_lines_next(ctx: &Context, req: &Req<TwoLinesState, Vec<String>>) {
    let (sock, endtime, buffered) = {
        let mut state = req.state_mut();
        let buffered = std::mem::take(&mut state.buffered);
        (state.sock.try_clone(), state.endtime, buffered)
    };
    let sock = match sock {
        Ok(sock) => sock,
        Err(e) => {
            req.error(e.raw_os_error().unwrap_or(libc::EIO) as u64);
            return;
        }
    };
    let subreq = read_line_send(ctx, sock, buffered, endtime);
    subreq.set_parent_callback(req, two_lines_line_done);
    req.state_mut().subreq = Some(subreq);
}

fn two_lines_line_done(subreq: &Req<ReadLineState, Line>, req: &Req<TwoLinesState, Vec<String>>) {
    let result = read_line_recv(subreq);
    let subreq = req.state_mut().subreq.take(); // TALLOC_FREE(subreq)
    drop(subreq);
    let (line, rest) = match result {
        Ok(line) => line,
        Err(e) => {
            req.error(e.errno() as u64);
            return;
        }
    };
    let count = {
        let mut state = req.state_mut();
        state.lines.push(line);
        state.buffered = rest;
        state.lines.len()
    };
    if count < 2 {
        if let Some(ctx) = req.context() {
            two_lines_next(&ctx, req);
        }
        return;
    }
    let lines = std::mem::take(&mut req.state_mut().lines);
    req.done(lines);
}

fn two_lines_recv(req: &Req<TwoLinesState, Vec<String>>) -> Result<Vec<String>, ReqError> {
    req.recv()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let ctx = Context::new()?;
    let (mut peer, sock) = UnixStream::pair()?;
    sock.set_nonblocking(true)?;

    // The peer writes the two lines in awkward pieces, from timers.
    let pieces: Vec<&'static [u8]> = vec![b"hel", b"lo\nwor", b"ld\n"];
    let mut next = 0;
    ctx.add_timer(Deadline::Asap, move |_ctx, timer, now| {
        if let Err(e) = peer.write_all(pieces[next]) {
            println!("peer: {e}");
            return;
        }
        next += 1;
        if next < pieces.len() {
            timer.update(now + Duration::from_millis(2));
        }
    })
    .detach();

    let req = two_lines_send(&ctx, sock, Duration::from_secs(5));
    req.set_callback(|req| match two_lines_recv(req) {
        Ok(lines) => println!("got {lines:?}"),
        Err(e) => println!("failed: {e}"),
    });
    ctx.loop_wait()?;
    Ok(())
}
