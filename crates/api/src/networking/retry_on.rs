//! The conditions `HTTPRetry.retryOn` may name (Envoy's `x-envoy-retry-on`
//! and `x-envoy-retry-grpc-on` tokens). Besides these, a token may be a bare
//! HTTP status code ("503").

/// One retry condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryOn {
    FiveXx,
    GatewayError,
    Reset,
    ResetBeforeRequest,
    ConnectFailure,
    EnvoyRatelimited,
    Retriable4xx,
    RefusedStream,
    RetriableStatusCodes,
    RetriableHeaders,
    Http3PostConnectFailure,
    Cancelled,
    DeadlineExceeded,
    Internal,
    ResourceExhausted,
    Unavailable,
}

/// Every condition by its token: the one table of these names.
pub const TOKENS: [(&str, RetryOn); 16] = [
    ("5xx", RetryOn::FiveXx),
    ("gateway-error", RetryOn::GatewayError),
    ("reset", RetryOn::Reset),
    ("reset-before-request", RetryOn::ResetBeforeRequest),
    ("connect-failure", RetryOn::ConnectFailure),
    ("envoy-ratelimited", RetryOn::EnvoyRatelimited),
    ("retriable-4xx", RetryOn::Retriable4xx),
    ("refused-stream", RetryOn::RefusedStream),
    ("retriable-status-codes", RetryOn::RetriableStatusCodes),
    ("retriable-headers", RetryOn::RetriableHeaders),
    (
        "http3-post-connect-failure",
        RetryOn::Http3PostConnectFailure,
    ),
    ("cancelled", RetryOn::Cancelled),
    ("deadline-exceeded", RetryOn::DeadlineExceeded),
    ("internal", RetryOn::Internal),
    ("resource-exhausted", RetryOn::ResourceExhausted),
    ("unavailable", RetryOn::Unavailable),
];

impl RetryOn {
    /// The condition a token names, if any.
    pub fn parse(token: &str) -> Option<Self> {
        TOKENS.iter().find(|(t, _)| *t == token).map(|(_, c)| *c)
    }
}
