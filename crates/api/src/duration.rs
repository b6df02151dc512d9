//! `google.protobuf.Duration` as Istio users write it.
//!
//! Protobuf-JSON only defines the seconds form (`"5s"`, `"0.100s"`), but Istio
//! decodes its YAML with Go's `time.ParseDuration`, so `"100ms"`, `"1m"`,
//! `"1h30m"` are all in real-world configs (e.g. `baseEjectionTime: 3m` in the
//! Istio docs). We accept the Go grammar, which is a superset of the protobuf
//! form, and always write the canonical protobuf form back out.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A non-negative duration. Negative durations are rejected at parse time:
/// no Istio field gives them a meaning, and Istio's validation rejects them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    pub fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }

    pub fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    pub fn as_std(&self) -> std::time::Duration {
        self.0
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl std::ops::Deref for Duration {
    type Target = std::time::Duration;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

pub use duration::DurationError;

impl FromStr for Duration {
    type Err = DurationError;

    /// Go's `time.ParseDuration` grammar (see the `duration` crate).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        duration::parse(input).map(Duration)
    }
}

impl fmt::Display for Duration {
    /// Canonical protobuf-JSON form: seconds with 0, 3, 6 or 9 fractional digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        if nanos == 0 {
            write!(f, "{secs}s")
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, "{secs}.{:03}s", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            write!(f, "{secs}.{:06}s", nanos / 1_000)
        } else {
            write!(f, "{secs}.{nanos:09}s")
        }
    }
}

/// A string, as `google.protobuf.Duration` is in every Istio CRD schema.
impl schemars::JsonSchema for Duration {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string"})
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"5s\", \"0.5s\" or \"100ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_canonically() {
        let cases = [
            ("5s", "5s"),
            ("100ms", "0.100s"),
            ("1.5s", "1.500s"),
            ("3m", "180s"),
            ("1us", "0.000001s"),
            ("7ns", "0.000000007s"),
        ];
        for (input, want) in cases {
            let d: Duration = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(d.to_string(), want);
            assert_eq!(want.parse::<Duration>().ok(), Some(d));
        }
    }
}
