//! A UDP echo server and its client, on the event loop.
//!
//! The server receives datagrams with `recvfrom` and sends each one back to
//! its sender through a `sendto` queue. The client sends `--count`
//! datagrams with distinct payloads (at most `--window` unanswered at a
//! time, since UDP drops what a full receive buffer cannot hold), checks
//! every echo, prints a summary, and exits non-zero on a mismatch or when
//! an echo does not come within `--timeout-ms` (a request end time).
//!
//! ```text
//! cargo run --example udp_echo -- --listen ipv4:127.0.0.1:7001
//! cargo run --example udp_echo -- --client ipv4:127.0.0.1:7001 --count 10000
//! ```
//!
//! Addresses are tsocket strings (`ipv4:127.0.0.1:7001`,
//! `ipv6:[::1]:7001`) or `host:port` with a numeric host (`127.0.0.1:7001`,
//! `[::1]:7001`). Try the server by hand:
//!
//! ```text
//! nc -u 127.0.0.1 7001               # type lines; each one comes back
//! socat - UDP:127.0.0.1:7001         # the same with socat
//! echo hello | socat -t1 - UDP:127.0.0.1:7001
//! ```
//!
//! The server stops on Ctrl-C (`SIGINT`) and prints how many datagrams it
//! echoed. Add `RUST_LOG=debug` (or `trace`) to see the library's logs.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::process::ExitCode;
use std::rc::{Rc, Weak};
use std::time::Duration;

use tevent::{Context, Deadline, Queue, SignalEvent, SignalFlags};
use tsocket::dgram::{self, RecvfromReq, SendtoQueueReq};
use tsocket::{Address, Dgram};

const USAGE: &str = "usage:
  udp_echo --listen ADDR
  udp_echo --client ADDR [--count N] [--window W] [--timeout-ms MS]

ADDR is a tsocket address (ipv4:127.0.0.1:7001, ipv6:[::1]:7001) or
HOST:PORT with a numeric host (127.0.0.1:7001, [::1]:7001).";

enum Mode {
    Listen(Address),
    Client {
        server: Address,
        count: u64,
        window: u64,
        timeout: Duration,
    },
}

fn parse_address(text: &str) -> Result<Address, String> {
    text.parse::<Address>()
        .or_else(|_| Address::inet_from_hostport_strings("ip", Some(text), 0))
        .map_err(|e| format!("bad address {text:?}: {e}"))
}

fn parse_args() -> Result<Mode, String> {
    let mut args = std::env::args().skip(1);
    let mut listen = None;
    let mut client = None;
    let mut count = 1000u64;
    let mut window = 32u64;
    let mut timeout_ms = 2000u64;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--listen" => listen = Some(parse_address(&value("--listen")?)?),
            "--client" => client = Some(parse_address(&value("--client")?)?),
            "--count" => {
                count = value("--count")?
                    .parse()
                    .map_err(|e| format!("--count: {e}"))?
            }
            "--window" => {
                window = value("--window")?
                    .parse()
                    .map_err(|e| format!("--window: {e}"))?
            }
            "--timeout-ms" => {
                timeout_ms = value("--timeout-ms")?
                    .parse()
                    .map_err(|e| format!("--timeout-ms: {e}"))?
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    match (listen, client) {
        (Some(addr), None) => Ok(Mode::Listen(addr)),
        (None, Some(server)) => {
            if server.inet_port() == Some(0) {
                return Err("the client needs the server's port".into());
            }
            Ok(Mode::Client {
                server,
                count,
                window: window.max(1),
                timeout: Duration::from_millis(timeout_ms),
            })
        }
        _ => Err("give exactly one of --listen and --client".into()),
    }
}

fn main() -> ExitCode {
    env_logger::init();
    let mode = match parse_args() {
        Ok(mode) => mode,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("udp_echo: {msg}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match mode {
        Mode::Listen(addr) => serve(&addr),
        Mode::Client {
            server,
            count,
            window,
            timeout,
        } => run_client(&server, count, window, timeout),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("udp_echo: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// The server

/// The server's state. Requests' callbacks hold a `Weak` to it: the server
/// owns its requests, so a strong reference would be a cycle.
struct Server {
    sock: Dgram,
    queue: Queue,
    /// The outstanding recvfrom.
    recv: RefCell<Option<RecvfromReq>>,
    /// Echoes in the queue or in flight, by number; each one removes itself
    /// when it is done (receiving it lets the next one go).
    replies: RefCell<HashMap<u64, SendtoQueueReq>>,
    next_reply: Cell<u64>,
    echoed: Cell<u64>,
    failed_sends: Cell<u64>,
    /// Ctrl-C: stop.
    sigint: RefCell<Option<SignalEvent>>,
}

fn serve(addr: &Address) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let ctx = Context::new()?;
    let sock = dgram::udp_socket(addr, None)?;
    let server = Rc::new(Server {
        queue: Queue::new(&ctx, "echo replies"),
        sock,
        recv: RefCell::new(None),
        replies: RefCell::new(HashMap::new()),
        next_reply: Cell::new(0),
        echoed: Cell::new(0),
        failed_sends: Cell::new(0),
        sigint: RefCell::new(None),
    });
    println!("listening on {}", server.sock.local_address()?);

    let weak = Rc::downgrade(&server);
    let sigint = ctx.add_signal(libc::SIGINT, SignalFlags::EMPTY, move |_, _, _| {
        let Some(server) = weak.upgrade() else { return };
        println!("interrupted: stopping");
        // Dropping the requests cancels them; with the signal event gone too
        // nothing is left and loop_wait returns.
        drop(server.recv.borrow_mut().take());
        drop(std::mem::take(&mut *server.replies.borrow_mut()));
        drop(server.sigint.borrow_mut().take());
    })?;
    *server.sigint.borrow_mut() = Some(sigint);

    server_recv(&ctx, &server);
    ctx.loop_wait()?;
    println!(
        "echoed {} datagrams ({} replies failed)",
        server.echoed.get(),
        server.failed_sends.get()
    );
    Ok(ExitCode::SUCCESS)
}

/// Wait for the next datagram.
fn server_recv(ctx: &Context, server: &Rc<Server>) {
    let req = dgram::recvfrom_send(ctx, &server.sock);
    let weak = Rc::downgrade(server);
    req.set_callback(move |req| {
        if let Some(server) = weak.upgrade() {
            server_received(req, &server);
        }
    });
    *server.recv.borrow_mut() = Some(req);
}

/// A datagram came: queue its echo, and wait for the next one.
fn server_received(req: &RecvfromReq, server: &Rc<Server>) {
    let Some(ctx) = req.context() else { return };
    match dgram::recvfrom_recv(req) {
        Ok((data, src)) if data.is_empty() => {
            log::debug!("empty datagram from {src}: nothing to echo");
        }
        Ok((data, src)) => {
            log::debug!("{} bytes from {src}", data.len());
            let id = server.next_reply.get();
            server.next_reply.set(id + 1);
            let reply =
                dgram::sendto_queue_send(&ctx, &server.sock, &server.queue, data, Some(&src));
            let weak = Rc::downgrade(server);
            reply.set_callback(move |reply| {
                let Some(server) = weak.upgrade() else { return };
                match dgram::sendto_queue_recv(reply) {
                    Ok(_) => server.echoed.set(server.echoed.get() + 1),
                    Err(e) => {
                        eprintln!("echo {id}: {e}");
                        server.failed_sends.set(server.failed_sends.get() + 1);
                    }
                }
                let done = server.replies.borrow_mut().remove(&id);
                drop(done);
            });
            server.replies.borrow_mut().insert(id, reply);
        }
        Err(e) if e.errno() == libc::ENOTCONN => {
            eprintln!("recvfrom: {e}: stopping");
            return;
        }
        Err(e) => eprintln!("recvfrom: {e}"),
    }
    server_recv(&ctx, server);
}

// ---------------------------------------------------------------------------
// The client

struct Client {
    sock: Dgram,
    queue: Queue,
    count: u64,
    timeout: Duration,
    /// Payloads sent and not echoed yet, oldest first.
    unanswered: RefCell<VecDeque<Vec<u8>>>,
    sends: RefCell<HashMap<u64, SendtoQueueReq>>,
    recv: RefCell<Option<RecvfromReq>>,
    sent: Cell<u64>,
    echoed: Cell<u64>,
    reordered: Cell<u64>,
    mismatches: Cell<u64>,
    failure: RefCell<Option<String>>,
}

fn run_client(
    server: &Address,
    count: u64,
    window: u64,
    timeout: Duration,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let ctx = Context::new()?;
    // Any local address of the server's family; connected, so only the
    // server's datagrams arrive.
    let local = if server.is_ipv4() {
        "ipv4:0.0.0.0:0"
    } else {
        "ipv6:[::]:0"
    };
    let sock = dgram::udp_socket(&local.parse()?, Some(server))?;
    let client = Rc::new(Client {
        queue: Queue::new(&ctx, "echo requests"),
        sock,
        count,
        timeout,
        unanswered: RefCell::new(VecDeque::new()),
        sends: RefCell::new(HashMap::new()),
        recv: RefCell::new(None),
        sent: Cell::new(0),
        echoed: Cell::new(0),
        reordered: Cell::new(0),
        mismatches: Cell::new(0),
        failure: RefCell::new(None),
    });
    println!(
        "sending {count} datagrams from {} to {server} (window {window})",
        client.sock.local_address()?
    );

    if count > 0 {
        client_recv(&ctx, &client);
    }
    while client.sent.get() < count.min(window) {
        client_send(&ctx, &client);
    }
    ctx.loop_wait()?;

    let lost = client.sent.get() - client.echoed.get();
    println!(
        "sent {}, echoed {}, lost {lost}, reordered {}, mismatched {}",
        client.sent.get(),
        client.echoed.get(),
        client.reordered.get(),
        client.mismatches.get()
    );
    if let Some(failure) = client.failure.borrow().as_ref() {
        eprintln!("udp_echo: {failure}");
    }
    let ok = client.failure.borrow().is_none()
        && client.mismatches.get() == 0
        && client.echoed.get() == count;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Queue the next datagram.
fn client_send(ctx: &Context, client: &Rc<Client>) {
    let i = client.sent.get();
    client.sent.set(i + 1);
    let payload = format!("udp_echo {i:08} from pid {}", std::process::id()).into_bytes();
    client.unanswered.borrow_mut().push_back(payload.clone());
    let req = dgram::sendto_queue_send(ctx, &client.sock, &client.queue, payload, None);
    let weak: Weak<Client> = Rc::downgrade(client);
    req.set_callback(move |req| {
        let Some(client) = weak.upgrade() else { return };
        if let Err(e) = dgram::sendto_queue_recv(req) {
            client_fail(&client, format!("datagram {i}: {e}"));
        }
        let done = client.sends.borrow_mut().remove(&i);
        drop(done);
    });
    client.sends.borrow_mut().insert(i, req);
}

/// Wait for the next echo, for at most the timeout.
fn client_recv(ctx: &Context, client: &Rc<Client>) {
    let req = dgram::recvfrom_send(ctx, &client.sock);
    req.set_endtime(Deadline::after(client.timeout));
    let weak = Rc::downgrade(client);
    req.set_callback(move |req| {
        if let Some(client) = weak.upgrade() {
            client_received(req, &client);
        }
    });
    *client.recv.borrow_mut() = Some(req);
}

/// An echo came (or the wait timed out).
fn client_received(req: &RecvfromReq, client: &Rc<Client>) {
    let Some(ctx) = req.context() else { return };
    let data = match dgram::recvfrom_recv(req) {
        Ok((data, _src)) => data,
        Err(e) => {
            let what = if e.errno() == libc::ETIMEDOUT {
                format!(
                    "timeout: no echo within {:?} ({} of {} echoed)",
                    client.timeout,
                    client.echoed.get(),
                    client.count
                )
            } else {
                format!("recvfrom: {e}")
            };
            client_fail(client, what);
            return;
        }
    };
    {
        let mut unanswered = client.unanswered.borrow_mut();
        if unanswered.front() == Some(&data) {
            unanswered.pop_front();
            client.echoed.set(client.echoed.get() + 1);
        } else if let Some(pos) = unanswered.iter().position(|p| *p == data) {
            unanswered.remove(pos);
            client.echoed.set(client.echoed.get() + 1);
            client.reordered.set(client.reordered.get() + 1);
        } else {
            client.mismatches.set(client.mismatches.get() + 1);
            eprintln!("unexpected echo: {:?}", String::from_utf8_lossy(&data));
        }
    }
    if client.sent.get() < client.count {
        client_send(&ctx, client);
    }
    if client.echoed.get() < client.count {
        client_recv(&ctx, client);
    }
}

/// Record the first failure and stop: nothing more is sent or awaited, so
/// `loop_wait` returns once the queued sends are done.
fn client_fail(client: &Client, what: String) {
    let mut failure = client.failure.borrow_mut();
    if failure.is_none() {
        *failure = Some(what);
    }
}
