//! The mTLS mode of an inbound port, as the snapshot carries it.

use serde::Serialize;

/// PeerAuthentication's mode of one inbound port, UNSET already resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    #[default]
    Permissive,
    Strict,
    Disable,
}

impl MtlsMode {
    pub fn from_pb(mode: i32) -> Result<Self, String> {
        match wire::pb::MtlsMode::try_from(mode) {
            Ok(wire::pb::MtlsMode::Permissive) => Ok(MtlsMode::Permissive),
            Ok(wire::pb::MtlsMode::Strict) => Ok(MtlsMode::Strict),
            Ok(wire::pb::MtlsMode::Disable) => Ok(MtlsMode::Disable),
            Err(_) => Err(format!("unknown mTLS mode {mode}")),
        }
    }
}
