//! `StringMatch`: the `{exact|prefix|regex: ...}` oneof used by route matches
//! and CORS origins.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

/// How a string (path, header, query parameter, origin, ...) is matched.
///
/// Istio documents `{}` (no match type) as "the header must be present, with
/// any value", and treats an empty prefix as the same catch-all. We decode `{}`
/// as `Prefix("")` so consumers only need three cases: an empty prefix matches
/// any present value, which is exactly the presence semantics (and, under
/// `withoutHeaders`, absence).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    /// RE2 syntax, matched against the whole value.
    Regex(String),
}

impl StringMatch {
    const FIELDS: &'static [&'static str] = &["exact", "prefix", "regex"];

    /// The pattern text, whatever the match type.
    pub fn value(&self) -> &str {
        match self {
            StringMatch::Exact(s) | StringMatch::Prefix(s) | StringMatch::Regex(s) => s,
        }
    }

    /// True for the match that accepts any present value.
    pub fn is_presence(&self) -> bool {
        matches!(self, StringMatch::Prefix(p) if p.is_empty())
    }
}

/// An object of the three optional strings (Istio's schema adds a oneOf
/// over them; the parser refuses two at once).
impl schemars::JsonSchema for StringMatch {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StringMatch".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "properties": {
                "exact": {"type": "string"},
                "prefix": {"type": "string"},
                "regex": {"type": "string"},
            },
        })
    }
}

/// Written as a one-key map by hand: serde's derived enum encoding would
/// become a YAML tag (`!exact v`) under serde_yaml_ng, which Istio rejects.
impl Serialize for StringMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (key, value) = match self {
            StringMatch::Exact(v) => ("exact", v),
            StringMatch::Prefix(v) => ("prefix", v),
            StringMatch::Regex(v) => ("regex", v),
        };
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(key, value)?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for StringMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringMatch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a string match such as {exact: \"v\"}, {prefix: \"/a\"} or {regex: \".*\"}",
                )
            }
            // `myheader:` with no value: same as `{}`.
            fn visit_unit<E: de::Error>(self) -> Result<StringMatch, E> {
                Ok(StringMatch::Prefix(String::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<StringMatch, A::Error> {
                let mut out: Option<StringMatch> = None;
                while let Some(key) = m.next_key::<String>()? {
                    let value: String = m.next_value()?;
                    let this = match key.as_str() {
                        "exact" => StringMatch::Exact(value),
                        "prefix" => StringMatch::Prefix(value),
                        "regex" => StringMatch::Regex(value),
                        other => return Err(de::Error::unknown_field(other, StringMatch::FIELDS)),
                    };
                    if out.is_some() {
                        return Err(de::Error::custom(
                            "only one of `exact`, `prefix` or `regex` may be set",
                        ));
                    }
                    out = Some(this);
                }
                Ok(out.unwrap_or(StringMatch::Prefix(String::new())))
            }
        }
        d.deserialize_any(V)
    }
}
