//! The PDU reader's promise on allocation, counted with a wrapper around
//! the system allocator: reading PDUs one after another with `readv_pdu`
//! into a buffer the caller hands back each time allocates nothing per PDU
//! once warmed up, whether its bytes were read ahead or it waits for the
//! socket: the engine copies into the caller's buffer and allocates nothing
//! of its own, and the context reuses the storage of the PDU request and of
//! the reads it waits on.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;

use tevent::Context;
use tsocket::{readv_pdu_recv, readv_pdu_send, Error, NextRead, NextVector, ReadvPduReq, Stream};

#[path = "../../tevent/tests/common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

/// A 4-byte big-endian length, then that many bytes.
#[derive(Default)]
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
        Ok(if len == 0 {
            NextRead::Done
        } else {
            NextRead::Read(len)
        })
    }
}

/// Reads frames one after another, handing its buffer back each time.
struct Reader {
    stream: Stream,
    req: RefCell<Option<ReadvPduReq<Frame>>>,
    spare: RefCell<Option<Vec<u8>>>,
    frames: Cell<u32>,
}

fn read_next(ctx: &Context, reader: &Rc<Reader>) {
    let mut buf = reader.spare.borrow_mut().take().unwrap_or_default();
    buf.clear();
    let req = readv_pdu_send(ctx, &reader.stream, buf, Frame::default());
    req.set_callback_with(reader, read_done);
    *reader.req.borrow_mut() = Some(req);
}

fn read_done(req: &ReadvPduReq<Frame>, reader: &Rc<Reader>) {
    let (frame, _) = readv_pdu_recv(req).expect("a whole frame");
    assert_eq!(frame.len(), 4 + 64);
    assert!(frame[4..].iter().all(|&b| b == frame[4]));
    reader.frames.set(reader.frames.get() + 1);
    *reader.spare.borrow_mut() = Some(frame);
    let done = reader.req.borrow_mut().take();
    drop(done);
    if let Some(ctx) = req.context() {
        read_next(&ctx, reader);
    }
}

fn frames(count: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..count {
        out.extend_from_slice(&64u32.to_be_bytes());
        out.extend_from_slice(&[i as u8; 64]);
    }
    out
}

/// `batch` frames written at once, read until all arrived, `rounds` times.
fn run(ctx: &Context, reader: &Rc<Reader>, peer: &mut UnixStream, bytes: &[u8], rounds: u32) {
    for _ in 0..rounds {
        let target = reader.frames.get() + (bytes.len() / 68) as u32;
        peer.write_all(bytes).unwrap();
        let mut iterations = 0;
        while reader.frames.get() < target {
            ctx.loop_once().unwrap();
            iterations += 1;
            assert!(iterations < 10_000, "frames do not arrive");
        }
    }
}

fn reader_pair(ctx: &Context, read_ahead: bool) -> (Rc<Reader>, UnixStream) {
    let (peer, ours) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let stream = tsocket::existing_socket(OwnedFd::from(ours)).unwrap();
    if read_ahead {
        tsocket::bsd_read_ahead(&stream, 64 * 1024);
    }
    let reader = Rc::new(Reader {
        stream,
        req: RefCell::new(None),
        spare: RefCell::new(None),
        frames: Cell::new(0),
    });
    read_next(ctx, &reader);
    (reader, peer)
}

#[test]
fn reading_pdus_one_after_another_allocates_nothing_per_pdu() {
    for read_ahead in [false, true] {
        let ctx = Context::with_backend("poll").unwrap();
        let (reader, mut peer) = reader_pair(&ctx, read_ahead);
        // One frame per write (every PDU waits for the socket), then 32 per
        // write (most PDUs find their bytes already there).
        let one = frames(1);
        let many = frames(32);
        run(&ctx, &reader, &mut peer, &one, 10);
        run(&ctx, &reader, &mut peer, &many, 3);
        let before = reader.frames.get();
        let n = allocations(|| {
            run(&ctx, &reader, &mut peer, &one, 200);
            run(&ctx, &reader, &mut peer, &many, 20);
        });
        assert_eq!(reader.frames.get() - before, 200 + 20 * 32);
        assert_eq!(n, 0, "read ahead {read_ahead}: allocations in 840 PDUs");
    }
}
