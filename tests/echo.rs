//! The echo server (`examples/echo_server.rs`, `src/echo.rs`) over real TCP
//! on loopback: many clients at once, the 16 MiB limit, and clients that
//! misbehave.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::Duration;

use tevent::Context;
use tevent_tsocket::echo::{EchoServer, MAX_FRAME};

fn start() -> (Context, EchoServer, String) {
    let ctx = Context::new().unwrap();
    ctx.set_wait_timeout(Duration::from_millis(100));
    let server = EchoServer::start(&ctx, &"ipv4:127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_address().to_socket_addr().unwrap().to_string();
    (ctx, server, addr)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Run the loop until every client thread has finished; return their
/// results.
fn serve<T>(ctx: &Context, clients: Vec<JoinHandle<T>>) -> Vec<T> {
    let mut rounds = 0u64;
    while !clients.iter().all(|c| c.is_finished()) {
        ctx.loop_once().unwrap();
        rounds += 1;
        assert!(rounds < 10_000_000, "clients did not finish");
    }
    clients.into_iter().map(|c| c.join().unwrap()).collect()
}

fn client(addr: String, id: u8, frames: usize, window: usize) -> JoinHandle<Result<(), String>> {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(&addr).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let payload =
            |i: usize| -> Vec<u8> { (0..(i % 300)).map(|j| (i + j) as u8 ^ id).collect() };
        let mut sent = 0;
        let mut received = 0;
        while received < frames {
            while sent < frames && sent - received < window {
                s.write_all(&frame(&payload(sent)))
                    .map_err(|e| e.to_string())?;
                sent += 1;
            }
            let mut header = [0u8; 4];
            s.read_exact(&mut header)
                .map_err(|e| format!("client {id}: {e}"))?;
            let len = u32::from_be_bytes(header) as usize;
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).map_err(|e| e.to_string())?;
            if body != payload(received) {
                return Err(format!("client {id}: frame {received} differs"));
            }
            received += 1;
        }
        Ok(())
    })
}

#[test]
fn many_clients_at_once_get_their_frames_back_in_order() {
    let (ctx, server, addr) = start();
    let clients = (0..16)
        .map(|id| client(addr.clone(), id, 500, if id % 2 == 0 { 1 } else { 32 }))
        .collect();
    for result in serve(&ctx, clients) {
        result.unwrap();
    }
    // The clients closed: so did their connections.
    for _ in 0..1000 {
        if server.connections() == 0 {
            break;
        }
        ctx.loop_once().unwrap();
    }
    assert_eq!(server.connections(), 0);
}

#[test]
fn a_frame_over_16_mib_closes_that_connection_only() {
    let (ctx, server, addr) = start();
    let a = addr.clone();
    let bad = std::thread::spawn(move || {
        let mut s = TcpStream::connect(&a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(&((MAX_FRAME + 1) as u32).to_be_bytes())
            .unwrap();
        let mut buf = [0u8; 1];
        // The server closes the connection: end of file (or a reset).
        matches!(s.read(&mut buf), Ok(0) | Err(_))
    });
    let good = client(addr.clone(), 7, 200, 8);
    let bad_closed = serve(&ctx, vec![bad]);
    assert!(bad_closed[0], "the oversized frame's connection was closed");
    serve(&ctx, vec![good]).pop().unwrap().unwrap();
    drop(server);
}

#[test]
fn a_frame_of_16_mib_is_echoed_whole() {
    let (ctx, _server, addr) = start();
    let big = std::thread::spawn(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let payload: Vec<u8> = (0..MAX_FRAME).map(|i| (i * 7 + i / 4093) as u8).collect();
        let wire = frame(&payload);
        let mut w = s.try_clone().unwrap();
        // Write from another thread: the echo comes back while we send.
        let writer = std::thread::spawn(move || w.write_all(&wire).unwrap());
        let mut header = [0u8; 4];
        s.read_exact(&mut header).unwrap();
        assert_eq!(u32::from_be_bytes(header) as usize, MAX_FRAME);
        let mut body = vec![0u8; MAX_FRAME];
        s.read_exact(&mut body).unwrap();
        writer.join().unwrap();
        body == payload
    });
    assert!(serve(&ctx, vec![big])[0], "the 16 MiB echo differs");
}

#[test]
fn a_client_that_leaves_in_the_middle_of_a_frame_does_not_disturb_others() {
    let (ctx, server, addr) = start();
    let a = addr.clone();
    let leaver = std::thread::spawn(move || {
        let mut s = TcpStream::connect(&a).unwrap();
        s.write_all(&frame(b"whole")).unwrap();
        s.write_all(&frame(&[1u8; 100])[..30]).unwrap();
        let mut echo = [0u8; 9];
        s.read_exact(&mut echo).unwrap();
        &echo[4..] == b"whole"
    });
    let good = client(addr, 3, 100, 4);
    let results = serve(&ctx, vec![leaver]);
    assert!(results[0]);
    serve(&ctx, vec![good]).pop().unwrap().unwrap();
    for _ in 0..1000 {
        if server.connections() == 0 {
            break;
        }
        ctx.loop_once().unwrap();
    }
    assert_eq!(
        server.connections(),
        0,
        "the half-frame connection was closed"
    );
}

/// A client that half-closes right after a frame (here: after the next
/// frame's header) still gets the echo of every complete frame.
#[test]
fn frames_before_the_end_of_input_are_echoed_before_the_close() {
    for tail in [0usize, 4, 9] {
        let (ctx, _server, addr) = start();
        let c = std::thread::spawn(move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut wire = frame(b"first");
            wire.extend_from_slice(&frame(b"second-frame")[..tail]);
            s.write_all(&wire).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got
        });
        let got = serve(&ctx, vec![c]).pop().unwrap();
        assert_eq!(got, frame(b"first"), "tail {tail}");
    }
}
