//! The mesh's certificates for the mTLS runs, made here as the mesh's CA
//! makes them: a root, and per workload an ECDSA P-256 key and a leaf whose
//! only SAN is its SPIFFE id. Both Trellis (`--cert-chain/--key/--roots`)
//! and Envoy (static secrets) read the same files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use identity::SpiffeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

pub const TRUST_DOMAIN: &str = "cluster.local";
pub const NAMESPACE: &str = "default";

/// `spiffe://cluster.local/ns/default/sa/<sa>`
pub fn spiffe_id(sa: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/{sa}")
}

/// One workload's files, as Istio names them.
#[derive(Clone, Debug)]
pub struct Workload {
    pub service_account: String,
    pub cert_chain: PathBuf,
    pub key: PathBuf,
    pub roots: PathBuf,
}

/// Writes `<dir>/root-cert.pem` and, per service account, `<dir>/<sa>/{cert-chain,key}.pem`.
pub fn generate(dir: &Path, service_accounts: &[&str]) -> Result<Vec<Workload>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, TRUST_DOMAIN);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let root = params.self_signed(&root_key)?;
    let roots = dir.join("root-cert.pem");
    std::fs::write(&roots, root.pem())?;
    let issuer = Issuer::new(params, root_key);

    let mut out = Vec::new();
    for sa in service_accounts {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        // As the mesh's CA makes them.
        let id = SpiffeId::new(TRUST_DOMAIN, NAMESPACE, sa)?;
        let leaf = identity::workload_cert_params(&id)?.signed_by(&key, &issuer)?;
        let wdir = dir.join(sa);
        std::fs::create_dir_all(&wdir)?;
        let w = Workload {
            service_account: sa.to_string(),
            cert_chain: wdir.join("cert-chain.pem"),
            key: wdir.join("key.pem"),
            roots: roots.clone(),
        };
        std::fs::write(&w.cert_chain, leaf.pem())?;
        std::fs::write(&w.key, key.serialize_pem())?;
        out.push(w);
    }
    Ok(out)
}
