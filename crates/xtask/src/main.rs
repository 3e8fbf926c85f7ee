//! `cargo xtask`: the real test environment, tests, demo and benchmarks.
fn main() {}
