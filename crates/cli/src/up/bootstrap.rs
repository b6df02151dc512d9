//! Workload identity for a mesh on one machine: `up` is the only one that
//! knows which process runs as which service account, so it issues the
//! bootstrap tokens (derived from a secret only it and `trellisd` can read),
//! tells `trellisd` where its CA lives, and gives the proxies the mesh root
//! they verify `trellisd`'s TLS certificate with before sending a token.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use control::bootstrap_token::TokenSecret;

/// The proxies read their bootstrap token from this variable.
pub const BOOTSTRAP_TOKEN_ENV: &str = "TRELLIS_BOOTSTRAP_TOKEN";
/// Istio's plug-in CA directory, if the user gives one in the mesh directory.
const PLUG_IN_CA_DIR: &str = "cacerts";
/// The mesh root for the proxies, in the state directory (as Istio's `root-cert.pem`).
const ROOT_CERT_FILE: &str = "root-cert.pem";

pub struct MeshIdentity {
    pub trust_domain: String,
    ca_dir: PathBuf,
    root_cert: PathBuf,
    secret_path: PathBuf,
    secret: TokenSecret,
}

/// Creates (or reuses) the token secret in `state`, and picks the CA: the
/// plug-in files in `<dir>/cacerts` if present, else a self-signed root kept
/// in `<state>/ca` so that restarts keep the same trust. The CA is opened
/// (made, the first time) here, so a broken one stops `up` before anything
/// starts, and its roots written to `<state>/root-cert.pem`.
pub fn prepare(dir: &Path, state: &Path, trust_domain: &str) -> Result<MeshIdentity> {
    let plug_in = dir.join(PLUG_IN_CA_DIR);
    let ca_dir = if plug_in.is_dir() {
        if !plug_in.join(identity::ROOT_CERT_FILE).is_file() {
            bail!(
                "{}: a plug-in CA needs {}, {}, {} (and optionally {})",
                plug_in.display(),
                identity::CA_CERT_FILE,
                identity::CA_KEY_FILE,
                identity::ROOT_CERT_FILE,
                identity::CERT_CHAIN_FILE
            );
        }
        plug_in
    } else {
        state.join("ca")
    };
    let ca = if ca_dir.join(identity::ROOT_CERT_FILE).is_file() {
        identity::Ca::from_cacerts(&ca_dir)
    } else {
        identity::Ca::self_signed(trust_domain, &ca_dir)
    }
    .with_context(|| format!("the mesh CA in {}", ca_dir.display()))?;
    let root_cert = state.join(ROOT_CERT_FILE);
    std::fs::write(&root_cert, ca.roots().concat())
        .with_context(|| format!("writing the mesh root {}", root_cert.display()))?;
    let secret_path = state.join("token-secret");
    let secret = TokenSecret::create(&secret_path).with_context(|| {
        format!(
            "creating the bootstrap token secret {}",
            secret_path.display()
        )
    })?;
    Ok(MeshIdentity {
        trust_domain: trust_domain.to_string(),
        ca_dir,
        root_cert,
        secret_path,
        secret,
    })
}

impl MeshIdentity {
    pub fn trellisd_args(&self) -> [String; 4] {
        [
            "--ca-dir".into(),
            self.ca_dir.display().to_string(),
            "--token-secret".into(),
            self.secret_path.display().to_string(),
        ]
    }

    /// The mesh root (PEM) the proxies verify the control plane with.
    pub fn root_cert(&self) -> &Path {
        &self.root_cert
    }

    /// The environment entry giving a proxy of `namespace/service_account` its token.
    pub fn proxy_env(&self, namespace: &str, service_account: &str) -> (String, String) {
        (
            BOOTSTRAP_TOKEN_ENV.to_string(),
            self.secret.token(namespace, service_account),
        )
    }
}
