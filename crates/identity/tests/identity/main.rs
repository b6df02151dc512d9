//! Integration tests of the identity crate: one binary (one link) for all of them.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ca;
mod common;
mod mtls;
mod rotation;
