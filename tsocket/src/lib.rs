//! Socket addresses and asynchronous socket helpers on [`tevent`]: a Rust
//! port of Samba's tsocket.
//!
//! Every asynchronous operation is a [`tevent::Req`]: a `_send` function
//! returns it, a callback runs when it finishes, and a `_recv` function
//! takes the result. There are no futures.
//!
//! - [`Address`]: inet (IPv4/IPv6 with a port) and unix addresses, in
//!   tsocket's string forms (`ipv4:127.0.0.1:445`, `unix:/path`).
//! - [`stream`] (tsocket's `tstream`): byte streams over TCP and unix
//!   sockets, [`tcp_connect_send`], a [`Listener`] with [`accept_send`], and
//!   the helpers [`readv_send`], [`readv_pdu_send`] (the guide's next-vector
//!   PDU reader), [`writev_send`], [`writev_queue_send`],
//!   [`disconnect_send`], and [`monitor_send`] (notice a connection that
//!   breaks while idle). Its module docs show a length-prefixed PDU reader.
//! - [`dgram`] (tsocket's `tdgram`): UDP and unix datagram sockets and the
//!   helpers `recvfrom`, `sendto`, `sendto_queue`, `disconnect`. Its module
//!   docs show a minimal recvfrom/sendto program.
//!
//! Transports are traits ([`StreamOps`], [`DgramOps`]); BSD sockets are the
//! first implementations, and any other transport (TLS, an in-memory pair,
//! a fault injector) gets every helper by implementing the trait.
//!
//! Conventions kept from tsocket: one outstanding read and one outstanding
//! write per socket (another gets `EBUSY`), end of file is `EPIPE`, errors
//! are sticky, a socket that is readable and writable in one wake-up runs
//! only its writable side, and `SIGPIPE` never kills the process. Errors are
//! [`Error`] values carrying the errno.
#![deny(missing_docs, missing_debug_implementations)]

pub mod address;
mod error;
mod queued;

pub use address::{Address, AddressError, AddressErrorKind};
pub use error::Error;

mod bsd_stream;
mod connect;
mod listener;
// Byte streams (tsocket's `tstream`): the `Stream` handle, its transport
// trait and requests; the length-prefixed PDU reader example is in the
// module docs.
pub mod stream;
pub use bsd_stream::{
    bsd_fail_readv_first_error, bsd_optimize_readv, bsd_raw_fd, bsd_read_ahead, existing_socket,
    unix_socketpair,
};
pub use connect::{
    tcp_connect_recv, tcp_connect_send, unix_connect_recv, unix_connect_send, ConnectReq,
    ConnectState,
};
pub use listener::{accept_recv, accept_send, AcceptReq, AcceptState, Listener, DEFAULT_BACKLOG};
pub use stream::{
    disconnect_recv, disconnect_send, monitor_recv, monitor_send, pending_bytes, read_some_recv,
    read_some_send, readv_pdu_queue_recv, readv_pdu_queue_send, readv_pdu_recv, readv_pdu_send,
    readv_recv, readv_send, writev_queue_recv, writev_queue_recv_bufs, writev_queue_send,
    writev_recv, writev_recv_bufs, writev_send, DisconnectReq, MonitorReq, NextRead, NextVector,
    ReadvPduQueueReq, ReadvPduQueueState, ReadvPduReq, ReadvPduState, ReadvReq, Stream, StreamOps,
    StreamReq, WritevQueueReq, WritevQueueState, WritevReq, WritevResult,
};

mod bsd_dgram;
// Datagram sockets (tsocket's `tdgram`); the example program is in the
// module docs. (An outer `///` doc here would make rustdoc resolve the
// module's intra-doc links in the crate root, breaking them.)
pub mod dgram;
pub use dgram::{Dgram, DgramOps, DgramReq};
