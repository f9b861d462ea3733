//! Datagram transports: the generic layer (with a fake transport) and the
//! BSD socket transport (real sockets on loopback).
//!
//! Tests assert counts of bytes, datagrams and loop iterations, never wall
//! time. A watchdog timer turns a hang into a failure.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::net::UdpSocket;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tevent::{Context, Deadline, Queue, Req, ReqState, WeakReq};
use tsocket::dgram::{self, Dgram, DgramOps, DgramReq, RecvfromReq, SendtoQueueReq, SendtoReq};
use tsocket::Address;

// ---------------------------------------------------------------------------
// Helpers

/// How long a test may go without finishing before it is declared hung.
const WATCHDOG: Duration = Duration::from_secs(30);

fn init_log() {
    let _ = env_logger::builder().is_test(true).try_init();
}

fn backends() -> impl Iterator<Item = &'static str> {
    tevent::backend::names().iter().copied()
}

fn context(backend: &str) -> Context {
    init_log();
    Context::with_backend(backend).expect("a context")
}

/// Run iterations until `done()`; returns how many ran. Panics (through a
/// timer) if the test hangs.
fn run_until(ctx: &Context, mut done: impl FnMut() -> bool) -> u32 {
    let _watchdog = ctx.add_timer(Deadline::after(WATCHDOG), |_, _, _| {
        panic!("watchdog: the test made no progress")
    });
    let mut iterations = 0;
    while !done() {
        ctx.loop_once().expect("loop_once");
        iterations += 1;
    }
    iterations
}

/// Run the loop until `req` has finished.
fn wait<S: 'static, T: 'static>(ctx: &Context, req: &Req<S, T>) -> u32 {
    run_until(ctx, || !req.is_in_progress())
}

fn lo4() -> Address {
    "ipv4:127.0.0.1:0".parse().unwrap()
}

fn lo6() -> Address {
    "ipv6:[::1]:0".parse().unwrap()
}

/// A fresh directory for unix sockets, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tsocket-dgram-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn addr(&self, name: &str) -> Address {
        Address::unix_from_path(self.path(name)).unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Send one datagram and wait for it to be handed to the kernel.
fn send(ctx: &Context, dgram: &Dgram, data: &[u8], dst: Option<&Address>) -> usize {
    let req = dgram::sendto_send(ctx, dgram, data.to_vec(), dst);
    wait(ctx, &req);
    dgram::sendto_recv(&req).expect("sendto")
}

/// Receive one datagram.
fn recv(ctx: &Context, dgram: &Dgram) -> (Vec<u8>, Address) {
    let req = dgram::recvfrom_send(ctx, dgram);
    wait(ctx, &req);
    dgram::recvfrom_recv(&req).expect("recvfrom")
}

fn errno_of_recvfrom(ctx: &Context, req: &RecvfromReq) -> i32 {
    wait(ctx, req);
    dgram::recvfrom_recv(req).unwrap_err().errno()
}

fn errno_of_sendto(ctx: &Context, req: &SendtoReq) -> i32 {
    wait(ctx, req);
    dgram::sendto_recv(req).unwrap_err().errno()
}

/// Run `f` on a view of a transport's socket, for socket options.
fn with_sock<R>(dgram: &Dgram, f: impl FnOnce(&socket2::SockRef<'_>) -> R) -> R {
    let fd = dgram.raw_fd().expect("a BSD socket");
    // SAFETY: the fd belongs to `dgram`, which outlives this call, and
    // nothing disconnects it while `f` runs.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    f(&socket2::SockRef::from(&fd))
}

/// A connected unix datagram socket pair: `a` is a [`Dgram`], `b` a plain
/// non-blocking std socket, `a_raw` a second handle on `a`'s socket (for
/// filling `b`'s queue behind the transport's back).
fn unix_pair() -> (Dgram, UnixDatagram, UnixDatagram) {
    let (a, b) = UnixDatagram::pair().unwrap();
    let a_raw = a.try_clone().unwrap();
    let a = dgram::existing_socket(OwnedFd::from(a)).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b, a_raw)
}

/// Fill the receive queue of `a_raw`'s peer until the kernel says
/// `EAGAIN`; returns how many datagrams it took.
fn fill_peer(a_raw: &UnixDatagram) -> usize {
    a_raw.set_nonblocking(true).unwrap();
    let mut n = 0;
    loop {
        match a_raw.send(b"fill") {
            Ok(_) => n += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return n,
            Err(e) => panic!("filling: {e}"),
        }
    }
}

/// Receive everything queued on `b`; returns the datagrams.
fn drain(b: &UnixDatagram) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match b.recv(&mut buf) {
            Ok(n) => out.push(buf[..n].to_vec()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return out,
            Err(e) => panic!("draining: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Round trips

#[test]
fn udp_ipv4_round_trip_on_every_backend() {
    for backend in backends() {
        let ctx = context(backend);
        let a = dgram::udp_socket(&lo4(), None).unwrap();
        let b = dgram::udp_socket(&lo4(), None).unwrap();
        let a_addr = a.local_address().unwrap();
        let b_addr = b.local_address().unwrap();
        assert!(a_addr.is_ipv4() && a_addr.inet_port() != Some(0));

        assert_eq!(send(&ctx, &a, b"ping", Some(&b_addr)), 4, "{backend}");
        let (data, src) = recv(&ctx, &b);
        assert_eq!(data, b"ping", "{backend}");
        assert_eq!(src, a_addr, "{backend}: the source is the sender");

        // And back, to the address recvfrom gave.
        assert_eq!(send(&ctx, &b, b"pong!", Some(&src)), 5);
        let (data, src) = recv(&ctx, &a);
        assert_eq!((data.as_slice(), src), (&b"pong!"[..], b_addr));
        assert!(!ctx.has_events(), "{backend}: no interest left behind");
    }
}

#[test]
fn udp_ipv6_round_trip() {
    let ctx = context("epoll");
    let a = match dgram::udp_socket(&lo6(), None) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("skipped: no IPv6 loopback here ({e})");
            return;
        }
    };
    let b = dgram::udp_socket(&lo6(), None).unwrap();
    let a_addr = a.local_address().unwrap();
    let b_addr = b.local_address().unwrap();
    assert!(a_addr.is_ipv6());

    // The IPv6 socket is IPV6_V6ONLY.
    assert!(with_sock(&a, |s| s.only_v6()).unwrap());

    let payload: Vec<u8> = (0..=255).collect();
    assert_eq!(send(&ctx, &a, &payload, Some(&b_addr)), 256);
    let (data, src) = recv(&ctx, &b);
    assert_eq!(data, payload);
    assert_eq!(src, a_addr);
}

#[test]
fn udp_connected_socket_sends_without_destination() {
    let ctx = context("epoll");
    let server = dgram::udp_socket(&lo4(), None).unwrap();
    let server_addr = server.local_address().unwrap();
    let client = dgram::udp_socket(&lo4(), Some(&server_addr)).unwrap();
    assert_eq!(client.remote_address().unwrap(), server_addr);
    assert_eq!(
        server.remote_address().unwrap_err().errno(),
        libc::ENOTCONN,
        "an unconnected socket has no remote"
    );

    assert_eq!(send(&ctx, &client, b"hello", None), 5);
    let (data, src) = recv(&ctx, &server);
    assert_eq!(data, b"hello");
    assert_eq!(src, client.local_address().unwrap());

    // An unconnected socket needs a destination.
    let req = dgram::sendto_send(&ctx, &server, b"x".to_vec(), None);
    assert_eq!(errno_of_sendto(&ctx, &req), libc::EDESTADDRREQ);
}

#[test]
fn unspecified_local_address_takes_the_remote_family() {
    // tsocket: an unbound local address follows the remote's family.
    let ctx = context("epoll");
    let server = dgram::udp_socket(&lo4(), None).unwrap();
    let server_addr = server.local_address().unwrap();
    let any6: Address = "ipv6:[::]:0".parse().unwrap();
    let client = dgram::udp_socket(&any6, Some(&server_addr)).unwrap();
    assert!(client.local_address().unwrap().is_ipv4());
    assert_eq!(send(&ctx, &client, b"v4", None), 2);
    assert_eq!(recv(&ctx, &server).0, b"v4");
}

#[test]
fn unix_dgram_round_trip_on_every_backend() {
    for backend in backends() {
        let ctx = context(backend);
        let dir = TempDir::new("round-trip");
        let server = dgram::unix_dgram_socket(&dir.addr("server"), None).unwrap();
        let client = dgram::unix_dgram_socket(&dir.addr("client"), None).unwrap();
        assert_eq!(server.local_address().unwrap(), dir.addr("server"));

        assert_eq!(
            send(&ctx, &client, b"over unix", Some(&dir.addr("server"))),
            9
        );
        let (data, src) = recv(&ctx, &server);
        assert_eq!(data, b"over unix", "{backend}");
        assert_eq!(src, dir.addr("client"), "{backend}");

        assert_eq!(send(&ctx, &server, b"reply", Some(&src)), 5);
        assert_eq!(recv(&ctx, &client), (b"reply".to_vec(), dir.addr("server")));
    }
}

#[test]
fn unix_dgram_from_an_unbound_sender_comes_from_the_unnamed_address() {
    let ctx = context("epoll");
    let dir = TempDir::new("unnamed");
    let server = dgram::unix_dgram_socket(&dir.addr("server"), None).unwrap();
    let unnamed = Address::unix_from_path("").unwrap();
    let client = dgram::unix_dgram_socket(&unnamed, Some(&dir.addr("server"))).unwrap();
    assert_eq!(send(&ctx, &client, b"anon", None), 4);
    let (data, src) = recv(&ctx, &server);
    assert_eq!(data, b"anon");
    assert_eq!(src, unnamed);
    assert_eq!(src.to_string(), "unix:");
}

#[test]
fn zero_length_datagram_is_received_as_empty() {
    let ctx = context("epoll");
    let rx = dgram::udp_socket(&lo4(), None).unwrap();
    let rx_addr = rx.local_address().unwrap().to_socket_addr().unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.send_to(&[], rx_addr).unwrap();
    tx.send_to(b"after", rx_addr).unwrap();

    let (data, src) = recv(&ctx, &rx);
    assert!(data.is_empty(), "an empty datagram, not a hang or an error");
    assert_eq!(src.to_socket_addr(), Some(tx.local_addr().unwrap()));
    assert_eq!(recv(&ctx, &rx).0, b"after");
}

#[test]
fn a_request_keeps_its_transport_alive() {
    let ctx = context("epoll");
    let rx = dgram::udp_socket(&lo4(), None).unwrap();
    let rx_addr = rx.local_address().unwrap();
    let req = dgram::recvfrom_send(&ctx, &rx);
    drop(rx); // the request still holds it

    let tx = dgram::udp_socket(&lo4(), None).unwrap();
    send(&ctx, &tx, b"still there", Some(&rx_addr));
    wait(&ctx, &req);
    assert_eq!(dgram::recvfrom_recv(&req).unwrap().0, b"still there");
}

#[test]
fn a_transport_can_move_to_another_context() {
    let ctx1 = context("epoll");
    let ctx2 = context("poll");
    let rx = dgram::udp_socket(&lo4(), None).unwrap();
    let rx_addr = rx.local_address().unwrap();
    let tx = dgram::udp_socket(&lo4(), None).unwrap();

    send(&ctx1, &tx, b"one", Some(&rx_addr));
    assert_eq!(recv(&ctx1, &rx).0, b"one");
    send(&ctx2, &tx, b"two", Some(&rx_addr));
    assert_eq!(recv(&ctx2, &rx).0, b"two");
    assert!(!ctx1.has_events() && !ctx2.has_events());
}

#[test]
fn ping_pong_driven_by_callbacks() {
    // The usual shape of a program: every callback starts the next request.
    const ROUNDS: u32 = 200;
    let ctx = context("epoll");
    let a = dgram::udp_socket(&lo4(), None).unwrap();
    let b = dgram::udp_socket(&lo4(), None).unwrap();
    let b_addr = b.local_address().unwrap();

    struct Echo {
        sock: Dgram,
        recv: RefCell<Option<RecvfromReq>>,
        send: RefCell<Option<SendtoReq>>,
        count: Cell<u32>,
        limit: u32,
    }
    fn arm(ctx: &Context, echo: &Rc<Echo>) {
        let req = dgram::recvfrom_send(ctx, &echo.sock);
        let weak = Rc::downgrade(echo);
        req.set_callback(move |req| {
            let Some(echo) = weak.upgrade() else { return };
            let ctx = req.context().unwrap();
            let (mut data, src) = dgram::recvfrom_recv(req).unwrap();
            echo.count.set(echo.count.get() + 1);
            if echo.count.get() > echo.limit {
                return;
            }
            data[0] = data[0].wrapping_add(1);
            let send = dgram::sendto_send(&ctx, &echo.sock, data, Some(&src));
            send.set_callback(|req| {
                dgram::sendto_recv(req).unwrap();
            });
            *echo.send.borrow_mut() = Some(send);
            arm(&ctx, &echo);
        });
        *echo.recv.borrow_mut() = Some(req);
    }
    let ea = Rc::new(Echo {
        sock: a.clone(),
        recv: RefCell::new(None),
        send: RefCell::new(None),
        count: Cell::new(0),
        limit: ROUNDS,
    });
    let eb = Rc::new(Echo {
        sock: b.clone(),
        recv: RefCell::new(None),
        send: RefCell::new(None),
        count: Cell::new(0),
        limit: ROUNDS,
    });
    arm(&ctx, &ea);
    arm(&ctx, &eb);
    send(&ctx, &a, &[0], Some(&b_addr));
    run_until(&ctx, || ea.count.get() > ROUNDS || eb.count.get() > ROUNDS);
    assert_eq!(eb.count.get(), ROUNDS + 1);
    assert_eq!(ea.count.get(), ROUNDS);
    // Clean up the request cycle through the Rc (callbacks hold weak refs).
    drop(ea.recv.borrow_mut().take());
    drop(eb.recv.borrow_mut().take());
}

// ---------------------------------------------------------------------------
// 10,000 datagrams through sendto_queue

/// UDP has no back-pressure: a datagram the receiver has no room for is
/// dropped. All 10,000 requests are queued at once; the sender keeps at
/// most `WINDOW` datagrams unreceived by stopping the queue, and the
/// receiver restarts it as it catches up. `WINDOW` datagrams fit in any
/// receive buffer (each costs well under 2 KiB of it), so none can be lost,
/// and the test checks that every one arrives, in order.
#[test]
fn sendto_queue_10000_udp_datagrams_in_order() {
    const N: u32 = 10_000;
    const WINDOW: u32 = 64;
    let ctx = context("epoll");
    let rx = dgram::udp_socket(&lo4(), None).unwrap();
    let rx_addr = rx.local_address().unwrap();
    let tx = dgram::udp_socket(&lo4(), None).unwrap();
    let tx_addr = tx.local_address().unwrap();
    with_sock(&rx, |s| s.set_recv_buffer_size(256 * 1024)).unwrap();

    let queue = Rc::new(Queue::new(&ctx, "udp tx"));
    let sent = Rc::new(Cell::new(0u32));
    let received = Rc::new(Cell::new(0u32));
    let stops = Rc::new(Cell::new(0u32));

    let mut reqs: Vec<SendtoQueueReq> = Vec::with_capacity(N as usize);
    for i in 0..N {
        let req =
            dgram::sendto_queue_send(&ctx, &tx, &queue, i.to_be_bytes().to_vec(), Some(&rx_addr));
        let (sent, received, stops, queue) =
            (sent.clone(), received.clone(), stops.clone(), queue.clone());
        req.set_callback(move |req| {
            assert_eq!(dgram::sendto_queue_recv(req).unwrap(), 4);
            sent.set(sent.get() + 1);
            if sent.get() - received.get() >= WINDOW && queue.running() {
                queue.stop();
                stops.set(stops.get() + 1);
            }
        });
        reqs.push(req);
    }
    assert_eq!(queue.length(), N as usize, "all queued at once");

    struct Receiver {
        sock: Dgram,
        from: Address,
        queue: Rc<Queue>,
        sent: Rc<Cell<u32>>,
        received: Rc<Cell<u32>>,
        req: RefCell<Option<RecvfromReq>>,
    }
    fn arm(ctx: &Context, r: &Rc<Receiver>) {
        let req = dgram::recvfrom_send(ctx, &r.sock);
        let weak = Rc::downgrade(r);
        req.set_callback(move |req| {
            let Some(r) = weak.upgrade() else { return };
            let (data, src) = dgram::recvfrom_recv(req).unwrap();
            let expected = r.received.get();
            assert_eq!(
                data,
                expected.to_be_bytes(),
                "datagram {expected} out of order"
            );
            assert_eq!(src, r.from);
            r.received.set(expected + 1);
            if !r.queue.running() && r.sent.get() - r.received.get() <= WINDOW / 2 {
                r.queue.start();
            }
            if r.received.get() < N {
                arm(&req.context().unwrap(), &r);
            }
        });
        *r.req.borrow_mut() = Some(req);
    }
    let receiver = Rc::new(Receiver {
        sock: rx.clone(),
        from: tx_addr,
        queue: queue.clone(),
        sent: sent.clone(),
        received: received.clone(),
        req: RefCell::new(None),
    });
    arm(&ctx, &receiver);

    run_until(&ctx, || received.get() == N && sent.get() == N);
    assert_eq!(received.get(), N);
    assert!(stops.get() > 0, "the window was exercised");
    assert_eq!(queue.length(), 0);
    assert!(!rx.recvfrom_pending() && !tx.sendto_pending());
    drop(reqs);
}

/// A connected unix datagram socket has back-pressure: when the receiver's
/// queue is full the sender gets `EAGAIN` and waits for `WRITE`. All 10,000
/// requests are queued at once with no pacing at all; the kernel keeps
/// every datagram, and they arrive in order.
#[test]
fn sendto_queue_10000_unix_datagrams_in_order_with_kernel_back_pressure() {
    const N: u32 = 10_000;
    let ctx = context("epoll");
    let dir = TempDir::new("queue");
    let rx = dgram::unix_dgram_socket(&dir.addr("rx"), None).unwrap();
    let tx = dgram::unix_dgram_socket(&dir.addr("tx"), Some(&dir.addr("rx"))).unwrap();
    let queue = Queue::new(&ctx, "unix tx");

    let sent = Rc::new(Cell::new(0u32));
    let mut reqs = Vec::with_capacity(N as usize);
    for i in 0..N {
        let req = dgram::sendto_queue_send(&ctx, &tx, &queue, i.to_le_bytes().to_vec(), None);
        let sent = sent.clone();
        req.set_callback(move |req| {
            assert_eq!(dgram::sendto_queue_recv(req).unwrap(), 4);
            sent.set(sent.get() + 1);
        });
        reqs.push(req);
    }

    let received = Rc::new(Cell::new(0u32));
    let sender_waited = Rc::new(Cell::new(0u32));
    let slot: Rc<RefCell<Option<RecvfromReq>>> = Rc::new(RefCell::new(None));
    fn arm(
        ctx: &Context,
        rx: &Dgram,
        tx: &Dgram,
        slot: &Rc<RefCell<Option<RecvfromReq>>>,
        received: &Rc<Cell<u32>>,
        sender_waited: &Rc<Cell<u32>>,
    ) {
        let req = dgram::recvfrom_send(ctx, rx);
        let (rx2, tx2, slot2, received2, waited2) = (
            rx.clone(),
            tx.clone(),
            Rc::downgrade(slot),
            received.clone(),
            sender_waited.clone(),
        );
        req.set_callback(move |req| {
            let (data, _src) = dgram::recvfrom_recv(req).unwrap();
            let expected = received2.get();
            assert_eq!(
                data,
                expected.to_le_bytes(),
                "datagram {expected} out of order"
            );
            received2.set(expected + 1);
            // A sendto outstanding between iterations is one that got
            // EAGAIN (a first try that succeeds finishes inside _send).
            if tx2.sendto_pending() {
                waited2.set(waited2.get() + 1);
            }
            if expected + 1 < N {
                if let Some(slot) = slot2.upgrade() {
                    arm(
                        &req.context().unwrap(),
                        &rx2,
                        &tx2,
                        &slot,
                        &received2,
                        &waited2,
                    );
                }
            }
        });
        *slot.borrow_mut() = Some(req);
    }
    arm(&ctx, &rx, &tx, &slot, &received, &sender_waited);

    run_until(&ctx, || received.get() == N && sent.get() == N);
    assert_eq!(received.get(), N);
    assert!(
        sender_waited.get() > 0,
        "the sender never had to wait: the EAGAIN path was not exercised"
    );
    assert!(!ctx.has_events(), "no interest left behind");
    drop(reqs);
}

/// An *unconnected* unix datagram sender whose receiver's queue is full
/// gets `EAGAIN` while Linux still reports it writable: the sendto retries
/// on every wake-up (documented). It must not starve the receiver on the
/// same loop: everything still arrives, in order.
#[test]
fn unconnected_unix_sender_to_a_full_receiver_still_gets_through() {
    const N: u32 = 300;
    for backend in backends() {
        let ctx = context(backend);
        let dir = TempDir::new("unconnected");
        let rx = dgram::unix_dgram_socket(&dir.addr("rx"), None).unwrap();
        let tx = dgram::unix_dgram_socket(&dir.addr("tx"), None).unwrap();
        let queue = Queue::new(&ctx, "q");
        let reqs: Vec<_> = (0..N)
            .map(|i| {
                dgram::sendto_queue_send(
                    &ctx,
                    &tx,
                    &queue,
                    i.to_le_bytes().to_vec(),
                    Some(&dir.addr("rx")),
                )
            })
            .collect();
        for req in &reqs {
            req.set_callback(|req| {
                dgram::sendto_queue_recv(req).unwrap();
            });
        }
        let mut got = 0u32;
        while got < N {
            let (data, _) = recv(&ctx, &rx);
            assert_eq!(data, got.to_le_bytes(), "{backend}");
            got += 1;
        }
        run_until(&ctx, || queue.length() == 0);
        assert!(!ctx.has_events(), "{backend}");
    }
}

// ---------------------------------------------------------------------------
// The generic layer's rules, on BSD sockets

#[test]
fn second_recvfrom_is_busy() {
    let ctx = context("epoll");
    let rx = dgram::udp_socket(&lo4(), None).unwrap();
    let first = dgram::recvfrom_send(&ctx, &rx);
    let second = dgram::recvfrom_send(&ctx, &rx);
    assert!(!second.is_in_progress(), "refused at once...");
    let called = Rc::new(Cell::new(false));
    let c = called.clone();
    second.set_callback(move |_| c.set(true));
    assert!(!called.get(), "...but delivered from the loop");
    assert_eq!(run_until(&ctx, || called.get()), 1);
    assert_eq!(errno_of_recvfrom(&ctx, &second), libc::EBUSY);
    assert!(first.is_in_progress(), "the first one is untouched");
    assert!(rx.recvfrom_pending());

    // The first still receives.
    let tx = dgram::udp_socket(&lo4(), None).unwrap();
    send(&ctx, &tx, b"first", Some(&rx.local_address().unwrap()));
    wait(&ctx, &first);
    assert_eq!(dgram::recvfrom_recv(&first).unwrap().0, b"first");
    assert!(!rx.recvfrom_pending());
}

#[test]
fn second_sendto_is_busy_while_one_waits() {
    let ctx = context("epoll");
    let (a, b, a_raw) = unix_pair();
    fill_peer(&a_raw);
    let first = dgram::sendto_send(&ctx, &a, b"first".to_vec(), None);
    assert!(first.is_in_progress(), "blocked on EAGAIN");
    assert!(a.sendto_pending());
    let second = dgram::sendto_send(&ctx, &a, b"second".to_vec(), None);
    assert_eq!(errno_of_sendto(&ctx, &second), libc::EBUSY);

    let filled = drain(&b);
    assert!(!filled.is_empty());
    wait(&ctx, &first);
    assert_eq!(dgram::sendto_recv(&first).unwrap(), 5);
    assert_eq!(drain(&b), vec![b"first".to_vec()]);
}

#[test]
fn empty_datagram_is_invalid() {
    let ctx = context("epoll");
    let sock = dgram::udp_socket(&lo4(), None).unwrap();
    let me = sock.local_address().unwrap();
    let req = dgram::sendto_send(&ctx, &sock, Vec::new(), Some(&me));
    assert_eq!(errno_of_sendto(&ctx, &req), libc::EINVAL);
    assert!(!sock.sendto_pending());

    let queue = Queue::new(&ctx, "q");
    let req = dgram::sendto_queue_send(&ctx, &sock, &queue, Vec::new(), Some(&me));
    assert_eq!(queue.length(), 0, "refused before entering the queue");
    wait(&ctx, &req);
    assert_eq!(
        dgram::sendto_queue_recv(&req).unwrap_err().errno(),
        libc::EINVAL
    );
}

#[test]
fn dropped_recvfrom_leaves_the_socket_usable() {
    let ctx = context("epoll");
    let rx = dgram::udp_socket(&lo4(), None).unwrap();
    let rx_addr = rx.local_address().unwrap();
    let tx = dgram::udp_socket(&lo4(), None).unwrap();

    let req = dgram::recvfrom_send(&ctx, &rx);
    assert!(ctx.has_events(), "READ is armed");
    drop(req);
    assert!(!rx.recvfrom_pending());
    assert!(!ctx.has_events(), "READ is disarmed when nobody reads");

    // Dropped after a wake-up that found nothing too.
    let req = dgram::recvfrom_send(&ctx, &rx);
    ctx.set_wait_timeout(Duration::ZERO);
    assert!(ctx.loop_once().is_err(), "nothing to do yet");
    ctx.set_wait_timeout(tevent::DEFAULT_WAIT_TIMEOUT);
    drop(req);

    send(&ctx, &tx, b"next", Some(&rx_addr));
    assert_eq!(recv(&ctx, &rx).0, b"next");
}

#[test]
fn dropped_sendto_is_never_sent_and_leaves_the_socket_usable() {
    let ctx = context("epoll");
    let (a, b, a_raw) = unix_pair();
    let filled = fill_peer(&a_raw);
    let req = dgram::sendto_send(&ctx, &a, b"cancelled".to_vec(), None);
    assert!(req.is_in_progress() && ctx.has_events(), "WRITE is armed");
    drop(req);
    assert!(!a.sendto_pending());
    assert!(!ctx.has_events(), "WRITE is disarmed when nobody writes");

    assert_eq!(drain(&b).len(), filled);
    assert_eq!(send(&ctx, &a, b"kept", None), 4);
    assert_eq!(
        drain(&b),
        vec![b"kept".to_vec()],
        "the dropped datagram never went"
    );
}

#[test]
fn recvfrom_end_time_cancels_and_frees_the_slot() {
    let ctx = context("epoll");
    let rx = dgram::udp_socket(&lo4(), None).unwrap();
    let req = dgram::recvfrom_send(&ctx, &rx);
    req.set_endtime(Deadline::after(Duration::from_millis(1)));
    assert_eq!(errno_of_recvfrom(&ctx, &req), libc::ETIMEDOUT);
    assert!(!rx.recvfrom_pending());
    assert!(!ctx.has_events(), "the transport's request was cancelled");

    let tx = dgram::udp_socket(&lo4(), None).unwrap();
    send(&ctx, &tx, b"later", Some(&rx.local_address().unwrap()));
    assert_eq!(recv(&ctx, &rx).0, b"later");
}

#[test]
fn finished_but_unreceived_recvfrom_does_not_block_the_next() {
    let ctx = context("epoll");
    let rx = dgram::udp_socket(&lo4(), None).unwrap();
    let rx_addr = rx.local_address().unwrap();
    let tx = dgram::udp_socket(&lo4(), None).unwrap();
    send(&ctx, &tx, b"1", Some(&rx_addr));
    send(&ctx, &tx, b"2", Some(&rx_addr));
    let first = dgram::recvfrom_send(&ctx, &rx);
    wait(&ctx, &first);
    let second = dgram::recvfrom_send(&ctx, &rx); // first not received yet
    wait(&ctx, &second);
    assert_eq!(dgram::recvfrom_recv(&second).unwrap().0, b"2");
    assert_eq!(dgram::recvfrom_recv(&first).unwrap().0, b"1");
}

// ---------------------------------------------------------------------------
// Sizes and errors of the BSD transport

#[test]
fn large_unix_datagrams_are_received_whole() {
    let ctx = context("epoll");
    let dir = TempDir::new("large");
    let rx = dgram::unix_dgram_socket(&dir.addr("rx"), None).unwrap();
    let tx = dgram::unix_dgram_socket(&dir.addr("tx"), Some(&dir.addr("rx"))).unwrap();

    let mut sizes = vec![64 * 1024 + 1, 150_000];
    // Larger than the default send buffer (212,992 bytes on Linux): needs
    // the SO_SNDBUF raise, which the kernel caps at net.core.wmem_max.
    let big = 300 * 1024;
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let before = with_sock(&tx, |s| s.send_buffer_size()).unwrap();
    if wmem_max * 2 >= big + 1024 && before < big + 32 {
        sizes.push(big);
    } else {
        eprintln!("not testing {big} bytes: wmem_max {wmem_max}, SO_SNDBUF {before}");
    }

    for &size in &sizes {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        assert_eq!(send(&ctx, &tx, &payload, None), size);
        let (data, src) = recv(&ctx, &rx);
        assert_eq!(data.len(), size, "received whole");
        assert!(data == payload, "same bytes");
        assert_eq!(src, dir.addr("tx"));
    }
    if sizes.contains(&big) {
        let after = with_sock(&tx, |s| s.send_buffer_size()).unwrap();
        assert!(
            after > before && after >= big,
            "SO_SNDBUF {before} -> {after}"
        );
    }
}

#[test]
fn oversized_udp_datagram_is_emsgsize() {
    let ctx = context("epoll");
    let sock = dgram::udp_socket(&lo4(), None).unwrap();
    let me = sock.local_address().unwrap();
    let req = dgram::sendto_send(&ctx, &sock, vec![0; 70_000], Some(&me));
    assert_eq!(errno_of_sendto(&ctx, &req), libc::EMSGSIZE);
    // The socket still works.
    assert_eq!(send(&ctx, &sock, &[7; 65_507], Some(&me)), 65_507);
    assert_eq!(recv(&ctx, &sock).0.len(), 65_507);
}

#[test]
fn sending_to_a_unix_path_without_listener_reports_the_error() {
    let ctx = context("epoll");
    let dir = TempDir::new("nolistener");
    let unnamed = Address::unix_from_path("").unwrap();
    let tx = dgram::unix_dgram_socket(&unnamed, None).unwrap();

    // No file at all.
    let req = dgram::sendto_send(&ctx, &tx, b"lost?".to_vec(), Some(&dir.addr("nobody")));
    assert_eq!(errno_of_sendto(&ctx, &req), libc::ENOENT);

    // A socket file whose socket is closed.
    let gone = dgram::unix_dgram_socket(&dir.addr("gone"), None).unwrap();
    drop(gone);
    assert!(dir.path("gone").exists());
    let req = dgram::sendto_send(&ctx, &tx, b"lost?".to_vec(), Some(&dir.addr("gone")));
    assert_eq!(errno_of_sendto(&ctx, &req), libc::ECONNREFUSED);

    // Through the queue too, and the queue goes on.
    let queue = Queue::new(&ctx, "q");
    let bad = dgram::sendto_queue_send(&ctx, &tx, &queue, b"x".to_vec(), Some(&dir.addr("nobody")));
    let rx = dgram::unix_dgram_socket(&dir.addr("rx"), None).unwrap();
    let good = dgram::sendto_queue_send(&ctx, &tx, &queue, b"y".to_vec(), Some(&dir.addr("rx")));
    wait(&ctx, &bad);
    assert_eq!(
        dgram::sendto_queue_recv(&bad).unwrap_err().errno(),
        libc::ENOENT
    );
    wait(&ctx, &good);
    assert_eq!(dgram::sendto_queue_recv(&good).unwrap(), 1);
    assert_eq!(recv(&ctx, &rx).0, b"y");

    // And connecting to it fails at construction.
    let err = dgram::unix_dgram_socket(&unnamed, Some(&dir.addr("nobody"))).unwrap_err();
    assert_eq!(err.errno(), libc::ENOENT);
}

#[test]
fn bad_addresses_are_error_values() {
    let v4 = lo4();
    let v6: Address = "ipv6:[::1]:9".parse().unwrap();
    let dir = TempDir::new("bad");
    let unix = dir.addr("s");

    let err = dgram::udp_socket(&v4, Some(&v6)).unwrap_err();
    assert_eq!((err.op(), err.errno()), ("udp_socket", libc::EINVAL));
    assert_eq!(
        dgram::udp_socket(&unix, None).unwrap_err().errno(),
        libc::EINVAL
    );
    assert_eq!(
        dgram::udp_socket(&v4, Some(&unix)).unwrap_err().errno(),
        libc::EINVAL
    );
    assert_eq!(
        dgram::udp_broadcast_socket(&v6).unwrap_err().errno(),
        libc::EINVAL
    );
    assert_eq!(
        dgram::unix_dgram_socket(&v4, None).unwrap_err().errno(),
        libc::EINVAL
    );
    assert_eq!(
        dgram::unix_dgram_socket(&unix, Some(&v4))
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );

    // An address of the wrong family for the socket.
    let ctx = context("epoll");
    let sock = dgram::udp_socket(&v4, None).unwrap();
    let req = dgram::sendto_send(&ctx, &sock, b"x".to_vec(), Some(&unix));
    let errno = errno_of_sendto(&ctx, &req);
    assert!(
        errno == libc::EAFNOSUPPORT || errno == libc::EINVAL,
        "errno {errno}"
    );
    let req = dgram::sendto_send(&ctx, &sock, b"x".to_vec(), Some(&v6));
    let errno = errno_of_sendto(&ctx, &req);
    assert!(
        errno == libc::EAFNOSUPPORT || errno == libc::EINVAL,
        "errno {errno}"
    );
    assert_eq!(
        send(&ctx, &sock, b"ok", Some(&sock.local_address().unwrap())),
        2
    );

    // Binding twice.
    let taken = dgram::udp_socket(&v4, None)
        .unwrap()
        .local_address()
        .unwrap();
    let holder = UdpSocket::bind(taken.to_socket_addr().unwrap());
    if let Ok(_holder) = holder {
        let err = dgram::udp_socket(&taken, None).unwrap_err();
        assert_eq!(err.errno(), libc::EADDRINUSE);
    }
}

#[test]
fn existing_socket_is_adopted_non_blocking() {
    let ctx = context("epoll");
    let std_sock = UdpSocket::bind("127.0.0.1:0").unwrap(); // blocking
    let addr = std_sock.local_addr().unwrap();
    let sock = dgram::existing_socket(OwnedFd::from(std_sock)).unwrap();
    let fd = sock.raw_fd().unwrap();
    // SAFETY: fcntl F_GETFL/F_GETFD only read flags of an open fd.
    let (fl, fdfl) = unsafe {
        (
            libc::fcntl(fd, libc::F_GETFL),
            libc::fcntl(fd, libc::F_GETFD),
        )
    };
    assert_ne!(fl & libc::O_NONBLOCK, 0, "non-blocking");
    assert_ne!(fdfl & libc::FD_CLOEXEC, 0, "close-on-exec");
    assert_eq!(sock.local_address().unwrap().to_socket_addr(), Some(addr));

    let me = sock.local_address().unwrap();
    assert_eq!(send(&ctx, &sock, b"self", Some(&me)), 4);
    assert_eq!(recv(&ctx, &sock), (b"self".to_vec(), me));

    // Not a datagram socket, not a socket.
    let (seqpacket, _peer) =
        socket2::Socket::pair(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None).unwrap();
    let err = dgram::existing_socket(OwnedFd::from(seqpacket)).unwrap_err();
    assert_eq!(err.errno(), libc::EPROTOTYPE);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = dgram::existing_socket(OwnedFd::from(listener)).unwrap_err();
    assert_eq!(err.errno(), libc::EPROTOTYPE);
    let file = std::fs::File::open("/dev/null").unwrap();
    let err = dgram::existing_socket(OwnedFd::from(file)).unwrap_err();
    assert_eq!(err.errno(), libc::ENOTSOCK);
}

#[test]
fn broadcast_socket_has_so_broadcast() {
    let sock = dgram::udp_broadcast_socket(&"ipv4:0.0.0.0:0".parse().unwrap()).unwrap();
    assert!(with_sock(&sock, |s| s.broadcast()).unwrap());
    let plain = dgram::udp_socket(&lo4(), None).unwrap();
    assert!(!with_sock(&plain, |s| s.broadcast()).unwrap());
}

// ---------------------------------------------------------------------------
// Disconnect

#[test]
fn disconnect_then_everything_is_enotconn() {
    let ctx = context("epoll");
    let sock = dgram::udp_socket(&lo4(), None).unwrap();
    let me = sock.local_address().unwrap();
    assert!(sock.raw_fd().is_some());

    let req = dgram::disconnect_send(&ctx, &sock);
    wait(&ctx, &req);
    dgram::disconnect_recv(&req).unwrap();
    assert!(sock.is_disconnected());
    assert_eq!(sock.raw_fd(), None, "the socket is closed");

    let r = dgram::recvfrom_send(&ctx, &sock);
    assert_eq!(errno_of_recvfrom(&ctx, &r), libc::ENOTCONN);
    let s = dgram::sendto_send(&ctx, &sock, b"x".to_vec(), Some(&me));
    assert_eq!(errno_of_sendto(&ctx, &s), libc::ENOTCONN);
    let d = dgram::disconnect_send(&ctx, &sock);
    wait(&ctx, &d);
    assert_eq!(
        dgram::disconnect_recv(&d).unwrap_err().errno(),
        libc::ENOTCONN
    );
    let q = Queue::new(&ctx, "q");
    let s = dgram::sendto_queue_send(&ctx, &sock, &q, b"x".to_vec(), Some(&me));
    wait(&ctx, &s);
    assert_eq!(
        dgram::sendto_queue_recv(&s).unwrap_err().errno(),
        libc::ENOTCONN
    );
    assert_eq!(sock.local_address().unwrap_err().errno(), libc::ENOTCONN);
}

#[test]
fn disconnect_while_recvfrom_outstanding_is_busy() {
    let ctx = context("epoll");
    let sock = dgram::udp_socket(&lo4(), None).unwrap();
    let r = dgram::recvfrom_send(&ctx, &sock);
    let d = dgram::disconnect_send(&ctx, &sock);
    wait(&ctx, &d);
    assert_eq!(dgram::disconnect_recv(&d).unwrap_err().errno(), libc::EBUSY);
    assert!(!sock.is_disconnected());
    assert!(r.is_in_progress(), "the recvfrom goes on");

    drop(r);
    let d = dgram::disconnect_send(&ctx, &sock);
    wait(&ctx, &d);
    dgram::disconnect_recv(&d).unwrap();
    assert!(!ctx.has_events());
}

#[test]
fn disconnect_while_sendto_waits_is_busy() {
    let ctx = context("epoll");
    let (a, b, a_raw) = unix_pair();
    fill_peer(&a_raw);
    let s = dgram::sendto_send(&ctx, &a, b"waiting".to_vec(), None);
    let d = dgram::disconnect_send(&ctx, &a);
    wait(&ctx, &d);
    assert_eq!(dgram::disconnect_recv(&d).unwrap_err().errno(), libc::EBUSY);
    drain(&b);
    wait(&ctx, &s);
    assert_eq!(dgram::sendto_recv(&s).unwrap(), 7);
}

// ---------------------------------------------------------------------------
// Writable first

/// A socket that is readable and writable in the same wake-up, with a
/// recvfrom and a waiting sendto: the sendto finishes in an earlier
/// iteration than the recvfrom.
#[test]
fn writable_side_runs_first_on_every_backend() {
    for backend in backends() {
        let ctx = context(backend);
        let (a, b, a_raw) = unix_pair();
        let filled = fill_peer(&a_raw);

        let iteration = Rc::new(Cell::new(0u32));
        let sent_at = Rc::new(Cell::new(0u32));
        let received_at = Rc::new(Cell::new(0u32));

        let send_req = dgram::sendto_send(&ctx, &a, b"blocked".to_vec(), None);
        assert!(
            send_req.is_in_progress(),
            "{backend}: the sendto waits for room"
        );
        let (it, at) = (iteration.clone(), sent_at.clone());
        send_req.set_callback(move |_| at.set(it.get()));

        let recv_req = dgram::recvfrom_send(&ctx, &a);
        let (it, at) = (iteration.clone(), received_at.clone());
        recv_req.set_callback(move |_| at.set(it.get()));

        // Now make `a` readable and writable at once, outside the loop.
        b.send(b"to a").unwrap();
        assert_eq!(drain(&b).len(), filled);

        while received_at.get() == 0 || sent_at.get() == 0 {
            iteration.set(iteration.get() + 1);
            assert!(iteration.get() < 10, "{backend}: no progress");
            ctx.loop_once().unwrap();
        }
        assert_eq!(
            sent_at.get(),
            1,
            "{backend}: the writer ran in the first wake-up"
        );
        assert_eq!(
            received_at.get(),
            2,
            "{backend}: the reader waited one iteration"
        );
        assert_eq!(dgram::sendto_recv(&send_req).unwrap(), 7);
        assert_eq!(dgram::recvfrom_recv(&recv_req).unwrap().0, b"to a");
        assert_eq!(drain(&b), vec![b"blocked".to_vec()]);
    }
}

// ---------------------------------------------------------------------------
// sendto_queue specifics

#[test]
fn sendto_queue_dropping_a_waiting_request_skips_it() {
    let ctx = context("epoll");
    let rx = dgram::udp_socket(&lo4(), None).unwrap();
    let rx_addr = rx.local_address().unwrap();
    let tx = dgram::udp_socket(&lo4(), None).unwrap();
    let queue = Queue::new(&ctx, "q");
    let r1 = dgram::sendto_queue_send(&ctx, &tx, &queue, b"1".to_vec(), Some(&rx_addr));
    let r2 = dgram::sendto_queue_send(&ctx, &tx, &queue, b"2".to_vec(), Some(&rx_addr));
    let r3 = dgram::sendto_queue_send(&ctx, &tx, &queue, b"3".to_vec(), Some(&rx_addr));
    assert_eq!(queue.length(), 3);
    drop(r2);
    assert_eq!(queue.length(), 2);
    wait(&ctx, &r1);
    assert_eq!(dgram::sendto_queue_recv(&r1).unwrap(), 1);
    wait(&ctx, &r3);
    assert_eq!(dgram::sendto_queue_recv(&r3).unwrap(), 1);
    assert_eq!(recv(&ctx, &rx).0, b"1");
    assert_eq!(recv(&ctx, &rx).0, b"3");
}

#[test]
fn sendto_queue_holds_the_queue_until_received() {
    let ctx = context("epoll");
    let rx = dgram::udp_socket(&lo4(), None).unwrap();
    let rx_addr = rx.local_address().unwrap();
    let tx = dgram::udp_socket(&lo4(), None).unwrap();
    let queue = Queue::new(&ctx, "q");
    let r1 = dgram::sendto_queue_send(&ctx, &tx, &queue, b"1".to_vec(), Some(&rx_addr));
    let r2 = dgram::sendto_queue_send(&ctx, &tx, &queue, b"2".to_vec(), Some(&rx_addr));
    wait(&ctx, &r1);
    // r1 finished but is not received: r2 may not start.
    ctx.set_wait_timeout(Duration::ZERO);
    while ctx.loop_once().is_ok() {}
    ctx.set_wait_timeout(tevent::DEFAULT_WAIT_TIMEOUT);
    assert!(r2.is_in_progress());
    assert_eq!(queue.length(), 2);
    dgram::sendto_queue_recv(&r1).unwrap();
    wait(&ctx, &r2);
    assert_eq!(dgram::sendto_queue_recv(&r2).unwrap(), 1);
}

// ---------------------------------------------------------------------------
// The generic layer with a fake transport

/// A weak handle on a transport request with result `T`.
type WeakDgramReq<T> = WeakReq<Box<dyn Any>, T>;
/// What a recvfrom gives.
type Datagram = (Vec<u8>, Address);

/// A transport whose requests finish when the test says so. It can also
/// misbehave: finish inside `_send` without posting.
#[derive(Default)]
struct Fake {
    calls: RefCell<Vec<&'static str>>,
    recv: RefCell<Option<WeakDgramReq<Datagram>>>,
    send: RefCell<Option<WeakDgramReq<usize>>>,
    disconnect: RefCell<Option<WeakDgramReq<()>>>,
    /// Finish sendto inside `_send`, without `post` (a contract violation
    /// the generic layer absorbs).
    sync_sendto: bool,
}

impl DgramOps for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn recvfrom_send(&self, ctx: &Context) -> DgramReq<(Vec<u8>, Address)> {
        self.calls.borrow_mut().push("recvfrom");
        let req: DgramReq<(Vec<u8>, Address)> = Req::new(ctx, Box::new(()));
        *self.recv.borrow_mut() = Some(req.downgrade());
        req
    }
    fn sendto_send(&self, ctx: &Context, buf: Vec<u8>, _dst: Option<Address>) -> DgramReq<usize> {
        self.calls.borrow_mut().push("sendto");
        let req: DgramReq<usize> = Req::new(ctx, Box::new(()));
        if self.sync_sendto {
            req.done(buf.len()); // and no post
        } else {
            *self.send.borrow_mut() = Some(req.downgrade());
        }
        req
    }
    fn disconnect_send(&self, ctx: &Context) -> DgramReq<()> {
        self.calls.borrow_mut().push("disconnect");
        let req: DgramReq<()> = Req::new(ctx, Box::new(()));
        *self.disconnect.borrow_mut() = Some(req.downgrade());
        req
    }
}

impl Fake {
    fn live_recv(&self) -> Option<DgramReq<(Vec<u8>, Address)>> {
        self.recv.borrow().as_ref().and_then(|w| w.upgrade())
    }
}

#[test]
fn fake_transport_gets_the_generic_rules() {
    let ctx = context("epoll");
    let d = Dgram::new(Fake::default());
    let fake = || d.transport::<Fake>().unwrap();
    assert_eq!(d.name(), "fake");

    let r1 = dgram::recvfrom_send(&ctx, &d);
    let r2 = dgram::recvfrom_send(&ctx, &d);
    assert_eq!(errno_of_recvfrom(&ctx, &r2), libc::EBUSY);
    assert_eq!(
        *fake().calls.borrow(),
        ["recvfrom"],
        "the transport saw one"
    );

    // Dropping the outstanding one cancels the transport's request too.
    assert!(fake().live_recv().is_some());
    drop(r1);
    assert!(fake().live_recv().is_none());
    assert!(!d.recvfrom_pending());

    // The transport's result comes through.
    let r3 = dgram::recvfrom_send(&ctx, &d);
    let from = lo4();
    fake()
        .live_recv()
        .unwrap()
        .done((b"fake".to_vec(), from.clone()));
    assert!(!r3.is_in_progress());
    assert_eq!(dgram::recvfrom_recv(&r3).unwrap(), (b"fake".to_vec(), from));

    // Transport errors come through with their errno.
    let r4 = dgram::recvfrom_send(&ctx, &d);
    fake().live_recv().unwrap().error(libc::ECONNREFUSED as u64);
    let err = dgram::recvfrom_recv(&r4).unwrap_err();
    assert_eq!((err.op(), err.errno()), ("recvfrom", libc::ECONNREFUSED));

    // Disconnect: refused while busy, then in flight, then done.
    let r5 = dgram::recvfrom_send(&ctx, &d);
    let busy = dgram::disconnect_send(&ctx, &d);
    wait(&ctx, &busy);
    assert_eq!(
        dgram::disconnect_recv(&busy).unwrap_err().errno(),
        libc::EBUSY
    );
    drop(r5);
    let disc = dgram::disconnect_send(&ctx, &d);
    assert!(disc.is_in_progress());
    let again = dgram::disconnect_send(&ctx, &d);
    wait(&ctx, &again);
    assert_eq!(
        dgram::disconnect_recv(&again).unwrap_err().errno(),
        libc::EALREADY
    );
    let during = dgram::recvfrom_send(&ctx, &d);
    assert_eq!(errno_of_recvfrom(&ctx, &during), libc::ECONNABORTED);
    let live = fake()
        .disconnect
        .borrow()
        .as_ref()
        .unwrap()
        .upgrade()
        .unwrap();
    live.done(());
    drop(live);
    dgram::disconnect_recv(&disc).unwrap();
    assert!(d.is_disconnected());
    let after = dgram::sendto_send(&ctx, &d, b"x".to_vec(), None);
    assert_eq!(errno_of_sendto(&ctx, &after), libc::ENOTCONN);
    assert_eq!(
        *fake().calls.borrow(),
        ["recvfrom", "recvfrom", "recvfrom", "recvfrom", "disconnect"],
        "refused operations never reach the transport"
    );
    // Not a BSD socket.
    assert_eq!(d.local_address().unwrap_err().errno(), libc::EOPNOTSUPP);
    assert_eq!(d.raw_fd(), None);
}

#[test]
fn a_transport_finishing_inside_send_is_still_delivered_from_the_loop() {
    let ctx = context("epoll");
    let d = Dgram::new(Fake {
        sync_sendto: true,
        ..Fake::default()
    });
    let req = dgram::sendto_send(&ctx, &d, b"abc".to_vec(), None);
    let called = Rc::new(Cell::new(0));
    let c = called.clone();
    req.set_callback(move |req| {
        c.set(c.get() + 1);
        assert_eq!(dgram::sendto_recv(req).unwrap(), 3);
    });
    assert_eq!(called.get(), 0, "not inside _send");
    assert!(!d.sendto_pending(), "the slot is free already");
    let n = run_until(&ctx, || called.get() == 1);
    assert_eq!(n, 1, "one iteration (the post)");
}

#[test]
fn end_time_cancels_the_transport_request() {
    let ctx = context("epoll");
    let d = Dgram::new(Fake::default());
    let req = dgram::sendto_send(&ctx, &d, b"slow".to_vec(), None);
    req.set_endtime(Deadline::Asap);
    let live = || {
        d.transport::<Fake>()
            .unwrap()
            .send
            .borrow()
            .as_ref()
            .and_then(|w| w.upgrade())
    };
    assert!(live().is_some());
    wait(&ctx, &req);
    assert_eq!(req.status(), ReqState::TimedOut);
    assert!(live().is_none(), "cancelled at once, not when received");
    assert!(!d.sendto_pending());
    assert_eq!(
        dgram::sendto_recv(&req).unwrap_err().errno(),
        libc::ETIMEDOUT
    );
}

#[test]
fn debug_output_names_the_transport() {
    let d = dgram::udp_socket(&lo4(), None).unwrap();
    let text = format!("{d:?}");
    assert!(
        text.contains("bsd") && text.contains("recvfrom_pending"),
        "{text}"
    );
    let ctx = context("epoll");
    let req = dgram::recvfrom_send(&ctx, &d);
    assert!(format!("{req:?}").contains("InProgress"));
}
