//! Durations as Istio reads them: Go's `time.ParseDuration` grammar
//! (`"5s"`, `"100ms"`, `"1h30m"`, `"1.5h"`), which Istio uses both for its
//! configuration (protobuf-JSON's `"0.100s"` form is a subset) and for its
//! proxies' environment (e.g. `SECRET_TTL`). A crate of its own so that the
//! Istio API types and the proxy share one grammar without depending on each other.

#![forbid(unsafe_code)]

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("negative duration `{0}` is not allowed")]
    Negative(String),
    #[error(
        "invalid duration `{0}`: expected a number followed by a unit (ns, us, ms, s, m, h), e.g. \"5s\" or \"100ms\""
    )]
    Syntax(String),
    #[error("duration `{0}` is too large")]
    Overflow(String),
}

/// Parses Go's `time.ParseDuration` grammar: `[-+]?(<decimal><unit>)+`, or a
/// bare `0`; negative durations are refused.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let syntax = || DurationError::Syntax(input.to_string());
    let overflow = || DurationError::Overflow(input.to_string());
    let (negative, mut rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(syntax());
    }
    // Accumulate in nanoseconds with u128 so `1.5h` etc. are exact and
    // overflow is detected rather than wrapped.
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let frac_len = r.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &r[..frac_len];
            rest = &r[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(syntax());
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => return Err(syntax()),
        };
        let int_val: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| overflow())?
        };
        let mut part = int_val.checked_mul(nanos_per_unit).ok_or_else(overflow)?;
        // Fractions beyond nanosecond precision are truncated, as Go does.
        let mut scale = nanos_per_unit;
        for d in frac_part.bytes().take(30) {
            scale /= 10;
            if scale == 0 {
                break;
            }
            part += u128::from(d - b'0') * scale;
        }
        total = total.checked_add(part).ok_or_else(overflow)?;
    }
    if negative && total != 0 {
        return Err(DurationError::Negative(input.to_string()));
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| overflow())?;
    // The remainder is < 1e9 so it always fits.
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| overflow())?;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_and_protobuf_forms() {
        let ok = [
            ("5s", 5_000_000_000u128),
            ("0.5s", 500_000_000),
            ("100ms", 100_000_000),
            ("1m", 60_000_000_000),
            ("1h", 3_600_000_000_000),
            ("1.5s", 1_500_000_000),
            ("1h30m", 5_400_000_000_000),
            ("0", 0),
            ("0s", 0),
            ("-0s", 0),
            ("250us", 250_000),
            ("10ns", 10),
            (".5s", 500_000_000),
            ("0.100s", 100_000_000),
        ];
        for (s, nanos) in ok {
            let d = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(d.as_nanos(), nanos, "{s}");
        }
    }

    #[test]
    fn rejects_bad_forms() {
        for s in ["", "5", "s", "5x", "1.s.", "-1s", "abc", "5 s", "1e3s", "."] {
            assert!(parse(s).is_err(), "{s:?} should be rejected");
        }
        assert_eq!(parse("-1s"), Err(DurationError::Negative("-1s".into())));
    }
}
