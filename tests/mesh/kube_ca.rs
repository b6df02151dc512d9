//! The CA on a cluster (see `control::ca_secret`): replicas started
//! together share one self-signed root through the `istio-ca-secret` Secret,
//! and Istio's plug-in `cacerts` Secret takes precedence over it.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::eventually;
use e2e::kube::{Kube, Trellisd, service_account_token};
use identity::{CertChain, KeyAndCsr, SpiffeId};
use wire::certs::{Issued, create_certificate};

/// A certificate for `sleep` from `trellisd`, once it serves, verifying it
/// with the root the leader publishes, or with `root_cert`.
async fn issue(trellisd: &Trellisd, kube: &Kube, root_cert: Option<&Path>) -> Result<Issued> {
    let xds = match root_cert {
        Some(path) => trellisd.xds_verified_by(path)?,
        None => trellisd.xds(kube).await?,
    };
    let ns = &kube.namespace;
    let token = service_account_token(kube, ns, "sleep", "istio-ca")?;
    let id = SpiffeId::new("cluster.local", ns, "sleep")?;
    let key = KeyAndCsr::generate(&id)?;
    eventually(Duration::from_secs(60), || async {
        create_certificate(&xds, &token, key.csr_pem().to_string(), None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    })
    .await
    .with_context(|| trellisd.log())
}

/// `key` of the Secret `name` in istio-system, decoded.
fn secret_key(kube: &Kube, name: &str, key: &str) -> Result<String> {
    kube.kubectl_ok(&[
        "get",
        "secret",
        name,
        "-n",
        "istio-system",
        "-o",
        &format!("go-template={{{{index .data \"{key}\" | base64decode}}}}"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_root_in_the_cluster_and_a_plugged_ca_wins() -> Result<()> {
    let Some(kube) = Kube::start("ca-secret")? else {
        return Ok(());
    };
    kube.kubectl_ok(&["create", "serviceaccount", "sleep", "-n", &kube.namespace])?;
    // Two replicas with CA directories of their own, started at once.
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let dir = |i: usize| dirs[i].path().join("ca").display().to_string();
    let (a, b) = (dir(0), dir(1));
    let first = Trellisd::replica(&kube, 0, &["--ca-dir", &a])?;
    let second = Trellisd::replica(&kube, 1, &["--ca-dir", &b])?;
    let from_first = issue(&first, &kube, None).await?;
    let from_second = issue(&second, &kube, None).await?;
    ensure!(
        from_first.roots_pem.contains("BEGIN CERTIFICATE"),
        "a root: {}",
        from_first.roots_pem
    );
    ensure!(
        from_first.roots_pem == from_second.roots_pem,
        "both replicas sign under one root:\n{}\n{}\n{}\n{}",
        from_first.roots_pem,
        from_second.roots_pem,
        first.log(),
        second.log()
    );
    // It is the one in istio-ca-secret, Istio's Secret for it.
    let stored = secret_key(&kube, "istio-ca-secret", "ca-cert.pem")?;
    ensure!(
        stored.trim() == from_first.roots_pem.trim(),
        "istio-ca-secret holds the root: {stored}"
    );
    ensure!(
        secret_key(&kube, "istio-ca-secret", "ca-key.pem")?.contains("PRIVATE KEY"),
        "and its key"
    );
    let secret_type = kube.kubectl_ok(&[
        "get",
        "secret",
        "istio-ca-secret",
        "-n",
        "istio-system",
        "-o",
        "jsonpath={.type}",
    ])?;
    ensure!(secret_type == "istio.io/ca-root", "type {secret_type}");
    // Issued chains verify under it: each replica's leaf is signed by it.
    for issued in [&from_first, &from_second] {
        let chain = CertChain::from_pem(&issued.chain_pem)?;
        ensure!(chain.spiffe_id()? == SpiffeId::new("cluster.local", &kube.namespace, "sleep")?);
    }

    // The plug-in CA (Istio's `cacerts`: an intermediate under an
    // operator's root) takes precedence over the self-signed root.
    let fixture = e2e::repo_root().join("crates/identity/tests/fixtures/cacerts-openssl");
    let file = |name: &str| format!("--from-file={name}={}", fixture.join(name).display());
    kube.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "cacerts",
        "-n",
        "istio-system",
        &file("ca-cert.pem"),
        &file("ca-key.pem"),
        &file("root-cert.pem"),
        &file("cert-chain.pem"),
    ])?;
    let plugged_dir = tempfile::tempdir()?;
    let c = plugged_dir.path().join("ca").display().to_string();
    let third = Trellisd::replica(&kube, 2, &["--ca-dir", &c])?;
    // Its certificate chains to the plug-in root, which the ConfigMap (the
    // first replica's, the leader) does not have yet: as a proxy would
    // after the operator plugs a CA in, it verifies with the new root.
    let plugged = issue(&third, &kube, Some(&fixture.join("root-cert.pem"))).await?;
    let root = std::fs::read_to_string(fixture.join("root-cert.pem"))?;
    let intermediate = std::fs::read_to_string(fixture.join("ca-cert.pem"))?;
    ensure!(
        plugged.roots_pem.trim() == root.trim(),
        "the plug-in root is trusted: {}\n{}",
        plugged.roots_pem,
        third.log()
    );
    let chain = CertChain::from_pem(&plugged.chain_pem)?;
    let intermediate = CertChain::from_pem(&intermediate)?;
    ensure!(
        chain.certs().get(1) == intermediate.certs().first(),
        "the leaf is signed by the plug-in CA, which comes with it"
    );
    Ok(())
}
