//! The command-line tools' shared parts: talking to the control plane,
//! printing resources, and `trellis up`, the one-machine mesh.
#![deny(unsafe_code)]

pub mod analyze;
pub mod client;
pub mod cluster;
pub mod commands;
pub mod dashboard;
pub mod describe;
pub mod files;
pub mod install;
pub mod iptables;
pub mod kube_inject;
pub mod local;
pub mod logging;
pub mod meshes;
pub mod node;
pub mod up;
