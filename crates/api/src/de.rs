//! Deserialisation helpers shared by every resource type.
//!
//! Istio decodes its CRDs with protobuf-JSON rules, which are more lenient than
//! serde's defaults: integers may be written as strings (`"80"`), enums may be
//! written by name or by number, and map keys are always strings in JSON even
//! when the proto key type is an integer. The helpers here reproduce that
//! leniency so that any YAML Istio accepts is accepted here too, while the
//! error messages stay in serde's familiar shape (`invalid type: string "x",
//! expected i32`) so they read the same as every other error.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Unexpected, Visitor};

/// An integer type that protobuf-JSON lets users write either as a number or
/// as a decimal string.
pub trait Int: Sized + Copy + FromStr + TryFrom<i64> + TryFrom<u64> {
    /// The Rust name shown in "expected ..." messages.
    const NAME: &'static str;
}

macro_rules! impl_int {
    ($($t:ty),*) => { $( impl Int for $t { const NAME: &'static str = stringify!($t); } )* };
}
impl_int!(i32, u32, i64, u64);

struct Expect(&'static str);
impl de::Expected for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

struct IntVisitor<T>(PhantomData<T>);

impl<'de, T: Int> Visitor<'de> for IntVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::NAME)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &Expect(T::NAME)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &Expect(T::NAME)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // protobuf-JSON accepts `80.0` for an integer field as long as it has no
        // fractional part; anything else is an error.
        if v.fract() == 0.0 && v.is_finite() && v.abs() < 9.0e15 {
            #[allow(clippy::cast_possible_truncation)]
            let i = v as i64;
            return self.visit_i64(i);
        }
        Err(E::invalid_value(Unexpected::Float(v), &Expect(T::NAME)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.trim()
            .parse::<T>()
            .map_err(|_| E::invalid_type(Unexpected::Str(v), &Expect(T::NAME)))
    }
}

/// A required integer that may be written as a number or a string.
pub fn int<'de, D: Deserializer<'de>, T: Int>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(IntVisitor(PhantomData))
}

/// An optional integer (proto3 `optional`, or a wrapper type such as
/// `google.protobuf.UInt32Value`) that may be written as a number or a string.
pub fn opt_int<'de, D: Deserializer<'de>, T: Int>(d: D) -> Result<Option<T>, D::Error> {
    struct OptVisitor<T>(PhantomData<T>);
    impl<'de, T: Int> Visitor<'de> for OptVisitor<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(T::NAME)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            int(d).map(Some)
        }
    }
    d.deserialize_option(OptVisitor(PhantomData))
}

/// [`int_key_map`] for a field whose presence matters: `Some` when written.
pub fn opt_int_key_map<'de, D, K, V>(d: D) -> Result<Option<BTreeMap<K, V>>, D::Error>
where
    D: Deserializer<'de>,
    K: Int + Ord,
    V: de::Deserialize<'de>,
{
    int_key_map(d).map(Some)
}

/// A map keyed by an integer (e.g. `portLevelMtls: {8080: ...}`): YAML users
/// write bare integers, JSON requires strings, both must work.
pub fn int_key_map<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Int + Ord,
    V: de::Deserialize<'de>,
{
    struct Key<K>(K);
    impl<'de, K: Int> de::Deserialize<'de> for Key<K> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            int(d).map(Key)
        }
    }
    struct MapVisitor<K, V>(PhantomData<(K, V)>);
    impl<'de, K: Int + Ord, V: de::Deserialize<'de>> Visitor<'de> for MapVisitor<K, V> {
        type Value = BTreeMap<K, V>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a map keyed by {}", K::NAME)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((Key(k), v)) = m.next_entry::<Key<K>, V>()? {
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(MapVisitor(PhantomData))
}

/// Declares an Istio enum: serialised by name, deserialised by name or by its
/// proto number (both are valid protobuf-JSON). The first variant is the
/// proto default (value 0). Its schema names the names only, as Istio's CRDs do.
macro_rules! istio_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = ($num:expr, $text:literal) ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in proto order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            const NAMES: &'static [&'static str] = &[$($text),+];

            /// The name Istio uses for this value.
            pub fn as_str(&self) -> &'static str {
                match self { $( $name::$variant => $text ),+ }
            }

            /// The proto enum number.
            pub fn number(&self) -> i32 {
                match self { $( $name::$variant => $num ),+ }
            }

            /// Looks a value up by its Istio name.
            pub fn from_name(s: &str) -> Option<Self> {
                match s { $( $text => Some($name::$variant), )+ _ => None }
            }

            /// Looks a value up by its proto number.
            pub fn from_number(n: i64) -> Option<Self> {
                $( if n == $num { return Some($name::$variant); } )+
                None
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::ALL[0]
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// A string of the names (the form every Istio CRD schema takes).
        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "enum": $name::NAMES})
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "one of {}", $name::NAMES.join(", "))
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::from_name(v).ok_or_else(|| E::unknown_variant(v, $name::NAMES))
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$name, E> {
                        $name::from_number(v).ok_or_else(|| {
                            E::invalid_value(serde::de::Unexpected::Signed(v), &self)
                        })
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$name, E> {
                        match i64::try_from(v) {
                            Ok(i) => self.visit_i64(i),
                            Err(_) => Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self)),
                        }
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}
pub(crate) use istio_enum;

/// `skip_serializing_if` helper for plain `bool` fields that default to false.
pub fn is_false(b: &bool) -> bool {
    !*b
}

/// A list of strings where scalar numbers are accepted and kept as their
/// decimal text (AuthorizationPolicy `ports: [8080]`).
pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Item(String);
    impl<'de> de::Deserialize<'de> for Item {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Item;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Item, E> {
                    Ok(Item(v.to_string()))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Item, E> {
                    Ok(Item(v.to_string()))
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Item, E> {
                    Ok(Item(v.to_string()))
                }
            }
            d.deserialize_any(V)
        }
    }
    let items: Option<Vec<Item>> = de::Deserialize::deserialize(d)?;
    Ok(items.unwrap_or_default().into_iter().map(|i| i.0).collect())
}

/// Reads `null` as the type's default (YAML `spec:` with nothing after it).
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: de::Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

struct FloatVisitor;

impl Visitor<'_> for FloatVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }

    #[allow(clippy::cast_precision_loss)] // percentages and ratios: exactness beyond 2^53 is moot
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }

    #[allow(clippy::cast_precision_loss)]
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }

    /// protobuf-JSON also accepts doubles as strings (`"12.5"`).
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        v.trim()
            .parse::<f64>()
            .map_err(|_| E::invalid_type(Unexpected::Str(v), &Expect("f64")))
    }
}

/// A `double` that may be written as a number or a numeric string.
pub fn float<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_any(FloatVisitor)
}

/// An optional `double` (e.g. `google.protobuf.DoubleValue`).
pub fn opt_float<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct OptVisitor;
    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<f64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            float(d).map(Some)
        }
    }
    d.deserialize_option(OptVisitor)
}
