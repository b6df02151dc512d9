//! `trellis install` and its relatives, as istioctl's: the manifests a
//! profile, IstioOperator files and `--set` overrides describe
//! (`manifest generate`), applied to a cluster (`install`), removed
//! (`uninstall`), compared with the cluster (`verify-install`), and the
//! cluster's health before and after (`check`).

mod apply;
mod check;
pub mod command;
mod control_plane;
mod crds;
mod envoy_filter_crd;
mod gateway;
mod kinds;
pub mod manifest;
pub mod profile;
mod uninstall;

pub use manifest::{Manifest, Request, generate};

/// The label every installed object carries, valued with the owning
/// IstioOperator's name; `uninstall` deletes by it.
pub const INSTALL_LABEL: &str = "trellis.io/install";
