//! Socket addresses and asynchronous socket helpers on [`tevent`]: a Rust
//! port of Samba's tsocket.
//!
//! This crate is being built up; its first part is the address type.
#![deny(missing_docs, missing_debug_implementations)]

pub mod address;
pub use address::{Address, AddressError, AddressErrorKind};
