//! Workload identity and mutual TLS for the mesh.
//!
//! - [`SpiffeId`] — `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
//! - [`Ca`] (control plane) — self-signed root kept on disk, or Istio plug-in
//!   `cacerts`; signs a CSR only for the identity the caller authenticated as.
//! - [`KeyAndCsr`] (proxy) — a private key that never leaves memory, and its CSR.
//! - [`CertManager`] (proxy) — the current certificate, renewed at half-life with
//!   jitter and backoff; the certificate resolver of every mesh TLS config.
//! - [`TrustBundle`] — the mesh roots, swappable at runtime for root rotation.
//! - [`server_config`] / [`client_config`] — rustls configs for mesh mTLS, with
//!   secure naming on the client side; [`peer_identity`] and
//!   [`PeerIdentity::xfcc`] for authorization and `X-Forwarded-Client-Cert`.
//!
//! Crypto is rustls with the *ring* provider ([`crypto_provider`]).

#![forbid(unsafe_code)]

mod ca;
mod cert;
mod lifetime;
mod peer;
mod rotation;
mod spiffe;
mod tls;
mod trust;
mod verify;
mod workload;

pub use ca::{
    CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, CLOCK_SKEW_ALLOWANCE, Ca, CaError,
    DEFAULT_WORKLOAD_TTL, MAX_WORKLOAD_TTL, ROOT_CERT_FILE, ROOT_TTL, workload_cert_params,
};
pub use cert::{CertChain, CertError, CertInfo, spiffe_id_of};
pub use lifetime::{SECRET_TTL, SecretTtlError, secret_ttl};
pub use peer::{PeerIdentity, peer_identity};
pub use rotation::{CertManager, RotationConfig};
pub use spiffe::{SpiffeId, SpiffeIdError};
pub use tls::{
    ALPN_H2, ALPN_HTTP11, ClientAuth, TlsError, client_config, crypto_provider, server_config,
};
pub use trust::TrustBundle;
pub use verify::{VerifyError, explain, handshake_failure_reason};
pub use workload::KeyAndCsr;
