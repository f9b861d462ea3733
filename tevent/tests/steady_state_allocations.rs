//! What the crate promises about allocation in steady state, counted with a
//! wrapper around the system allocator: a request run after another of its
//! types allocates nothing (its context reuses the storage), nor does a
//! post, a re-scheduled immediate or an fd event's dispatch.

use std::cell::Cell;
use std::rc::Rc;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use tevent::{Context, FdFlags, Req};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

/// A C-style `_send` that finishes at once and posts.
fn finished_send(ctx: &Context, value: u32) -> Req<u32, u32> {
    let req = Req::new(ctx, value);
    req.done(value);
    req.post()
}

/// The caller's side: the request in flight and how many finished.
struct Client {
    req: std::cell::RefCell<Option<Req<u32, u32>>>,
    done: Cell<u32>,
}

fn client_done(req: &Req<u32, u32>, client: &Rc<Client>) {
    assert_eq!(req.recv(), Ok(client.done.get()));
    let old = client.req.borrow_mut().take();
    drop(old);
    client.done.set(client.done.get() + 1);
}

fn client_start(ctx: &Context, client: &Rc<Client>) {
    let req = finished_send(ctx, client.done.get());
    req.set_callback_with(client, client_done);
    *client.req.borrow_mut() = Some(req);
}

#[test]
fn requests_one_after_another_allocate_nothing() {
    let ctx = Context::with_backend("poll").unwrap();
    let client = Rc::new(Client {
        req: std::cell::RefCell::new(None),
        done: Cell::new(0),
    });
    let cycle = |n: u32| {
        for _ in 0..n {
            client_start(&ctx, &client);
            ctx.loop_once().unwrap();
        }
    };
    cycle(10); // the first request's storage, the post queue's buffer
    let n = allocations(|| cycle(1000));
    assert_eq!(client.done.get(), 1010);
    assert_eq!(n, 0, "allocations in 1000 request life cycles");
}

#[test]
fn a_rescheduled_immediate_allocates_nothing() {
    let ctx = Context::with_backend("poll").unwrap();
    let im = ctx.create_immediate();
    let count = Rc::new(Cell::new(0u32));
    let c = count.clone();
    im.schedule(move |_, im| {
        c.set(c.get() + 1);
        if c.get() < 2000 {
            im.reschedule();
        }
    });
    for _ in 0..10 {
        ctx.loop_once().unwrap();
    }
    let n = allocations(|| {
        while count.get() < 2000 {
            ctx.loop_once().unwrap();
        }
    });
    assert_eq!(n, 0, "allocations in 1990 immediate runs");
}

#[test]
fn fd_event_dispatch_allocates_nothing() {
    // Every backend: each has its own wait and its own readiness list.
    for backend in ["epoll", "poll", "polling"] {
        let ctx = Context::with_backend(backend).unwrap();
        let (mut writer, reader) = UnixStream::pair().unwrap();
        reader.set_nonblocking(true).unwrap();
        let seen = Rc::new(Cell::new(0u32));
        let s = seen.clone();
        let mut reader_end = reader.try_clone().unwrap();
        let _fde = ctx
            .add_fd(&reader, FdFlags::READ, move |_, _, _| {
                let mut byte = [0u8; 1];
                if matches!(reader_end.read(&mut byte), Ok(1)) {
                    s.set(s.get() + 1);
                }
            })
            .unwrap();
        let mut round = |n: u32| {
            for _ in 0..n {
                let before = seen.get();
                writer.write_all(b"x").unwrap();
                ctx.loop_once().unwrap();
                assert_eq!(seen.get(), before + 1, "backend {backend}");
            }
        };
        round(10);
        let n = allocations(|| round(500));
        assert_eq!(n, 0, "backend {backend}: allocations in 500 fd dispatches");
    }
}
