//! A TCP echo server on tsocket: frames of a 4-byte big-endian length and
//! that many bytes are read with `readv_pdu` and written back unchanged with
//! `writev_queue` (the server itself is `src/echo.rs`).
//!
//! ```text
//! cargo run --release --example echo_server -- --listen 127.0.0.1:7000
//! cargo run --release --example echo_server -- 7000        # = 127.0.0.1:7000
//! ```
//!
//! Any number of clients at once. A frame longer than 16 MiB closes that
//! connection only (with a log line; run with `RUST_LOG=info`). SIGTERM or
//! SIGINT stops the server with exit status 0. It serves the fixed W7
//! client of the benchmark anchors (`echo_client HOST PORT pingpong`);
//! `bench/w7.sh` runs that comparison.

use std::cell::Cell;
use std::rc::Rc;

use tevent::{Context, SignalFlags};
use tevent_tsocket::echo::EchoServer;
use tsocket::Address;

fn parse_args() -> Result<Address, String> {
    let mut listen = "127.0.0.1:7000".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            "-h" | "--help" => {
                return Err("usage: echo_server [--listen ADDR | PORT]".to_string());
            }
            port if port.parse::<u16>().is_ok() => listen = format!("127.0.0.1:{port}"),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    listen
        .parse::<Address>()
        .or_else(|_| Address::inet_from_hostport_strings("ip", Some(&listen), 7000))
        .map_err(|e| e.to_string())
}

fn main() {
    env_logger::init();
    let addr = match parse_args() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&addr) {
        eprintln!("echo_server: {e}");
        std::process::exit(1);
    }
}

fn run(addr: &Address) -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::new()?;
    let server = EchoServer::start(&ctx, addr)?;
    eprintln!("listening on {}", server.local_address());

    let stop = Rc::new(Cell::new(false));
    let mut signals = Vec::new();
    for signum in [libc::SIGTERM, libc::SIGINT] {
        let stop = stop.clone();
        signals.push(ctx.add_signal(signum, SignalFlags::EMPTY, move |_, _, _| stop.set(true))?);
    }
    while !stop.get() {
        ctx.loop_once()?;
    }
    log::info!("stopping: {} connections open", server.connections());
    Ok(())
}
