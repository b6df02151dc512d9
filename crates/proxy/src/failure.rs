//! How an attempt to reach an upstream can fail without a response: what
//! the connection layer reports and the retry policy decides on.

/// An attempt that produced no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connection could not be made.
    Connect,
    /// HTTP/2 REFUSED_STREAM: the upstream did not process the request.
    Refused,
    /// The connection or stream broke after the request was sent.
    Reset,
    /// No response headers within the per-try timeout.
    PerTryTimeout,
}
