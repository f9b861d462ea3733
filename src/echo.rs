//! The echo server of `examples/echo_server.rs`, as a library so that the
//! tests drive the same code: frames of a 4-byte big-endian length and that
//! many bytes are read with `readv_pdu` and written back unchanged with
//! `writev_queue`.
//!
//! Each connection is a small state machine of requests:
//!
//! ```text
//! accept ──> read frame (readv_pdu) ──> echo (writev_queue) ─┐
//!              ^    └─ the next frame is read at once         │
//!              └──────────────────────────────────────────────┘
//! ```
//!
//! Reading does not wait for the write. One write is outstanding per
//! connection (through its write queue); while more input is at hand (a
//! pipelining client), echoes are gathered and go out together in one
//! `writev`, in order. A frame longer than 16 MiB closes that connection
//! only, with a log line. At the end of input the echoes of the frames
//! already read are written, then the connection is closed; any other error
//! closes it at once. When the process runs out of fds, accepting pauses
//! for 100 ms instead of failing in a loop.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use std::time::Duration;

use tevent::{Context, Deadline, Queue, Timer};
use tsocket::{
    accept_recv, accept_send, readv_pdu_recv, readv_pdu_send, writev_queue_recv_bufs,
    writev_queue_send, AcceptReq, Address, Error, Listener, NextRead, NextVector, ReadvPduReq,
    Stream, WritevQueueReq,
};

/// Frames longer than this close the connection.
pub const MAX_FRAME: usize = 16 << 20;

/// At most this many echoes are gathered into one write.
const MAX_GATHER: usize = 64;

/// How long to wait before accepting again after running out of fds.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The next-vector callback for one frame: the header, then the payload.
#[derive(Debug, Default)]
struct Frame {
    header_read: bool,
}

impl NextVector for Frame {
    fn next_vector(&mut self, pdu: &mut Vec<u8>) -> Result<NextRead, Error> {
        if !self.header_read {
            self.header_read = true;
            return Ok(NextRead::Read(4));
        }
        if pdu.len() > 4 {
            return Ok(NextRead::Done);
        }
        let len = u32::from_be_bytes([pdu[0], pdu[1], pdu[2], pdu[3]]) as usize;
        if len > MAX_FRAME {
            log::info!("frame of {len} bytes is over {MAX_FRAME}: closing the connection");
            return Err(Error::new("readv_pdu", libc::EMSGSIZE));
        }
        if len == 0 {
            return Ok(NextRead::Done);
        }
        Ok(NextRead::Read(len))
    }
}

/// One client connection.
struct Conn {
    id: u64,
    server: Weak<Server>,
    stream: Stream,
    queue: Queue,
    /// The frame being read.
    read: RefCell<Option<ReadvPduReq<Frame>>>,
    /// The echo being written (a vector of one or more frames).
    write: RefCell<Option<WritevQueueReq>>,
    /// Frames read while a write was outstanding: they go out together, in
    /// one `writev`, when it finishes (one system call for a whole burst of
    /// pipelined frames instead of one per frame).
    pending: RefCell<Vec<Vec<u8>>>,
    /// Buffers of finished writes, reused for the next frames.
    spare: RefCell<Vec<Vec<u8>>>,
    /// The (emptied) list of the last written batch, reused for the next.
    spare_list: RefCell<Vec<Vec<u8>>>,
    /// The peer finished sending: close once the echoes are out.
    closing: Cell<bool>,
}

struct Server {
    listener: Listener,
    accept: RefCell<Option<AcceptReq>>,
    /// Accepting again after running out of fds.
    accept_retry: RefCell<Option<Timer>>,
    conns: RefCell<HashMap<u64, Rc<Conn>>>,
    next_id: Cell<u64>,
}

fn accept_next(ctx: &Context, server: &Rc<Server>) {
    let req = accept_send(ctx, &server.listener);
    let weak = Rc::downgrade(server);
    req.set_callback(move |req| {
        let Some(server) = weak.upgrade() else { return };
        let result = accept_recv(req);
        match result {
            Ok((stream, peer)) => {
                let id = server.next_id.get();
                server.next_id.set(id + 1);
                log::debug!("connection {id} from {peer}");
                if let Some(ctx) = req.context() {
                    let conn = Rc::new(Conn {
                        id,
                        server: Rc::downgrade(&server),
                        queue: Queue::new(&ctx, "echo writes"),
                        stream,
                        read: RefCell::new(None),
                        write: RefCell::new(None),
                        pending: RefCell::new(Vec::new()),
                        spare: RefCell::new(Vec::new()),
                        spare_list: RefCell::new(Vec::new()),
                        closing: Cell::new(false),
                    });
                    // Many small frames per read: one system call per
                    // buffer-full rather than two per frame.
                    tsocket::bsd_read_ahead(&conn.stream, 64 * 1024);
                    server.conns.borrow_mut().insert(id, conn.clone());
                    read_next(&ctx, &conn);
                    accept_next(&ctx, &server);
                }
            }
            Err(e) => {
                log::warn!("accept: {e}");
                let Some(ctx) = req.context() else { return };
                if matches!(
                    e.errno(),
                    libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
                ) {
                    // Out of fds or memory: accepting again at once would
                    // fail again at once. Retry when some may be free.
                    let weak = Rc::downgrade(&server);
                    let retry =
                        ctx.add_timer(Deadline::after(ACCEPT_BACKOFF), move |ctx, _timer, _now| {
                            if let Some(server) = weak.upgrade() {
                                accept_next(ctx, &server);
                            }
                        });
                    *server.accept_retry.borrow_mut() = Some(retry);
                } else {
                    accept_next(&ctx, &server);
                }
            }
        }
    });
    *server.accept.borrow_mut() = Some(req);
}

fn read_next(ctx: &Context, conn: &Rc<Conn>) {
    let mut buf = conn.spare.borrow_mut().pop().unwrap_or_default();
    buf.clear();
    let req = readv_pdu_send(ctx, &conn.stream, buf, Frame::default());
    req.set_callback_with(conn, read_done);
    // A read that could not finish from what was already received waits
    // for the socket: send the gathered echoes first.
    let waits = req.is_in_progress();
    *conn.read.borrow_mut() = Some(req);
    if waits {
        flush(ctx, conn);
    }
}

/// A frame arrived (echo it and read the next), or the connection ended.
fn read_done(req: &ReadvPduReq<Frame>, conn: &Rc<Conn>) {
    let Some(server) = conn.server.upgrade() else {
        return;
    };
    match readv_pdu_recv(req) {
        Ok((frame, _)) => {
            let Some(ctx) = req.context() else { return };
            write_frame(&ctx, conn, frame);
            read_next(&ctx, conn);
        }
        // The peer finished sending: echo what it sent, then close.
        Err(e) if e.errno() == libc::EPIPE => {
            let Some(ctx) = req.context() else { return };
            log::debug!("connection {}: end of input", conn.id);
            conn.closing.set(true);
            flush(&ctx, conn);
            close_if_done(&server, conn);
        }
        Err(e) => close(&server, conn, &e),
    }
}

/// Queue the echo of `frame`. Echoes are gathered while the next frame is
/// already at hand (a pipelining client) and written together, in one
/// `writev`, as soon as the reader has to wait for the socket (or the batch
/// is full): a burst of frames costs one system call, and a client that
/// waits for its echo before sending more is never kept waiting.
fn write_frame(ctx: &Context, conn: &Rc<Conn>, frame: Vec<u8>) {
    let gathered = {
        let mut pending = conn.pending.borrow_mut();
        pending.push(frame);
        pending.len()
    };
    if gathered >= MAX_GATHER {
        flush(ctx, conn);
    }
}

/// Start writing the gathered echoes unless a write is outstanding (it
/// takes them when it finishes).
fn flush(ctx: &Context, conn: &Rc<Conn>) {
    if conn.write.borrow().is_none() {
        write_pending(ctx, conn);
    }
}

fn write_pending(ctx: &Context, conn: &Rc<Conn>) {
    if conn.pending.borrow().is_empty() {
        return;
    }
    // The list of the last batch, emptied, gathers the next one.
    let next = std::mem::take(&mut *conn.spare_list.borrow_mut());
    let frames = std::mem::replace(&mut *conn.pending.borrow_mut(), next);
    let req = writev_queue_send(ctx, &conn.stream, &conn.queue, frames);
    req.set_callback_with(conn, write_done);
    *conn.write.borrow_mut() = Some(req);
}

/// A batch of echoes is out: recycle its buffers and write the next.
fn write_done(req: &WritevQueueReq, conn: &Rc<Conn>) {
    let Some(server) = conn.server.upgrade() else {
        return;
    };
    let result = writev_queue_recv_bufs(req);
    // Received and dropped: the queue moves on.
    let done = conn.write.borrow_mut().take();
    drop(done);
    match result {
        Ok((_, mut bufs)) => {
            conn.spare.borrow_mut().append(&mut bufs);
            *conn.spare_list.borrow_mut() = bufs;
            if let Some(ctx) = req.context() {
                write_pending(&ctx, conn);
            }
            close_if_done(&server, conn);
        }
        Err(e) => close(&server, conn, &e),
    }
}

/// Close a connection whose peer finished sending once its echoes are out.
fn close_if_done(server: &Server, conn: &Conn) {
    if conn.closing.get() && conn.write.borrow().is_none() && conn.pending.borrow().is_empty() {
        log::debug!("connection {}: echoes written, closing", conn.id);
        let conn = server.conns.borrow_mut().remove(&conn.id);
        drop(conn);
    }
}

/// Drop the connection's requests (cancelling them) and the connection.
fn close(server: &Server, conn: &Conn, why: &Error) {
    if why.errno() == libc::EPIPE {
        log::debug!("connection {} closed by the peer", conn.id);
    } else {
        log::info!("connection {}: {why}; closing it", conn.id);
    }
    let conn = server.conns.borrow_mut().remove(&conn.id);
    if let Some(conn) = conn {
        let read = conn.read.borrow_mut().take();
        let write = conn.write.borrow_mut().take();
        drop((read, write));
    }
}

/// A running echo server: it serves while this handle lives and the
/// context's loop runs. Dropping it closes the listener and every
/// connection.
pub struct EchoServer {
    server: Rc<Server>,
}

impl EchoServer {
    /// Listen on `addr` and serve on `ctx`.
    ///
    /// # Errors
    ///
    /// The listener's bind or listen error.
    pub fn start(ctx: &Context, addr: &Address) -> Result<EchoServer, Error> {
        let listener = Listener::bind(addr)?;
        let server = Rc::new(Server {
            listener,
            accept: RefCell::new(None),
            accept_retry: RefCell::new(None),
            conns: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
        });
        accept_next(ctx, &server);
        Ok(EchoServer { server })
    }

    /// The address it listens on (with the port the kernel chose for 0).
    pub fn local_address(&self) -> &Address {
        self.server.listener.local_address()
    }

    /// How many connections are open.
    pub fn connections(&self) -> usize {
        self.server.conns.borrow().len()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let retry = self.server.accept_retry.borrow_mut().take();
        drop(retry);
        let accept = self.server.accept.borrow_mut().take();
        let conns = std::mem::take(&mut *self.server.conns.borrow_mut());
        drop((accept, conns));
    }
}

impl std::fmt::Debug for EchoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoServer")
            .field("listening", self.local_address())
            .field("connections", &self.connections())
            .finish()
    }
}
