//! Trellis's copy of Istio's configuration API: the resource types,
//! parsing of YAML/JSON files into them, and validation with field paths.
//!
//! Field names and shapes follow `istio/api`'s protos one for one (with
//! protobuf-JSON's leniency), so a file written for Istio parses unchanged.
//! Nothing here does I/O: callers pass text and get values or errors back.
#![forbid(unsafe_code)]

pub(crate) mod de;
pub mod duration;
pub mod meta;
pub mod networking;
pub mod operator;
pub mod resource;
pub mod schema;
pub mod security;
pub mod selector;
pub mod telemetry;
pub mod validate;

pub use duration::Duration;
pub use resource::{Kind, Object, ParseError, Resource, SlimPod, parse, parse_each, parse_value};
pub use validate::{FieldError, validate};
