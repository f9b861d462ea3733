//! Integration tests and examples for the `tevent` and `tsocket` crates
//! live in `tests/` and `examples/`; this library holds the pieces the
//! examples and the tests share.

pub mod echo;
