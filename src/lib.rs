//! Integration tests and examples for the tevent and tsocket crates live in `tests/` and `examples/`.
