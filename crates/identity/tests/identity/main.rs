//! Integration tests of the identity crate: one binary (one link) for all of them.

mod ca;
mod common;
mod mtls;
mod rotation;
