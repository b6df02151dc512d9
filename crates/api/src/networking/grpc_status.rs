//! gRPC status codes by name, as `HTTPFaultInjection.Abort.grpcStatus` gives them.

/// The names, indexed by code: the one table of these names.
pub const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The code of a status given by name ("UNAVAILABLE") or by number ("14").
pub fn code(status: &str) -> Option<u32> {
    if let Ok(n) = status.parse::<u32>() {
        return (n < NAMES.len() as u32).then_some(n);
    }
    NAMES
        .iter()
        .position(|n| *n == status)
        .and_then(|i| u32::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::code;

    #[test]
    fn names_and_numbers() {
        assert_eq!(code("OK"), Some(0));
        assert_eq!(code("UNAVAILABLE"), Some(14));
        assert_eq!(code("UNAUTHENTICATED"), Some(16));
        assert_eq!(code("14"), Some(14));
        assert_eq!(code("17"), None);
        assert_eq!(code("BOGUS"), None);
    }
}
