//! Fuzz targets. Under `cargo test` / `cargo nextest` each runs a bounded
//! number of generated inputs (bolero's random engine, plus every file
//! already in its corpus); under `cargo +nightly bolero test` the same target
//! runs coverage-guided with libFuzzer for as long as asked. Every crash
//! found becomes a regression test in `regressions.rs`.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod corpus;
mod istio_yaml;
mod paths;
mod pushed_config;
mod regressions;
mod sniffing;
