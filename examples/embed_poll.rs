//! The event context driven by an outer loop written with `poll(2)`, which
//! also watches an fd of its own (standard input, or a pipe in the test).
//!
//! Run it with `cargo run --example embed_poll`, type a few lines, and end
//! with Ctrl-D. The context meanwhile runs a periodic timer, an immediate
//! and a request; the outer loop never blocks inside the context.

use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use tevent::{wakeup_recv, wakeup_send, Context, Deadline};

/// Wait with `poll(2)` on the context's fd and `own_fd`, at most `timeout`.
/// Returns whether `own_fd` is readable.
fn outer_wait(ctx_fd: RawFd, own_fd: RawFd, timeout: Option<Duration>) -> std::io::Result<bool> {
    let mut fds = [
        libc::pollfd {
            fd: ctx_fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: own_fd,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = match timeout {
        None => -1,
        Some(t) => {
            t.as_millis().min(i32::MAX as u128) as i32
                + i32::from(t.subsec_nanos() % 1_000_000 != 0)
        }
    };
    // SAFETY: `fds` is a valid array of two initialised pollfd structures.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(err);
    }
    Ok(fds[1].revents != 0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let ctx = Context::new()?;
    let ctx_fd = ctx.loop_fd().ok_or("this backend has no fd to embed")?;
    let start = Instant::now();

    let mut ticks = 0;
    let _tick = ctx.add_timer(
        Deadline::after(Duration::from_millis(500)),
        move |_ctx, timer, now| {
            ticks += 1;
            println!(
                "[{:>5} ms] context: tick {ticks}",
                start.elapsed().as_millis()
            );
            timer.update(now + Duration::from_millis(500));
        },
    );
    let _hello = ctx.schedule_immediate(move |_ctx, _im| {
        println!("[{:>5} ms] context: immediate", start.elapsed().as_millis());
    });
    let req = wakeup_send(&ctx, Deadline::after(Duration::from_millis(1200)));
    req.set_callback(move |req| {
        println!(
            "[{:>5} ms] context: request finished (woke: {})",
            start.elapsed().as_millis(),
            wakeup_recv(req)
        );
    });

    let stdin = std::io::stdin();
    let own_fd = stdin.as_raw_fd();
    let mut input = stdin.lock();
    println!("type lines; Ctrl-D ends");
    loop {
        let own_ready = outer_wait(ctx_fd, own_fd, ctx.next_timeout())?;
        if own_ready {
            let mut buf = [0u8; 256];
            let n = input.read(&mut buf)?;
            if n == 0 {
                println!("outer loop: end of input");
                break;
            }
            print!("outer loop: read {}", String::from_utf8_lossy(&buf[..n]));
        }
        // Bounded, so a context that keeps itself busy cannot starve us.
        for _ in 0..64 {
            if !ctx.try_loop_once()? {
                break;
            }
        }
    }
    Ok(())
}
