//! Socket addresses and asynchronous socket helpers on [`tevent`]: a Rust
//! port of Samba's tsocket.
//!
//! Every asynchronous operation is a [`tevent::Req`]: a `_send` function
//! returns it, a callback runs when it finishes, and a `_recv` function
//! takes the result. There are no futures.
#![deny(missing_docs, missing_debug_implementations)]

pub mod address;
mod error;

pub use address::{Address, AddressError, AddressErrorKind};
pub use error::Error;
