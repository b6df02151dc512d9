//! The install verbs' arguments (istioctl's flags) and what each runs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use super::apply::{self, InstallOptions};
use super::manifest::{self, Manifest, Request};
use crate::cluster::Cluster;

/// What the manifests are made from, as istioctl takes it.
#[derive(Args, Clone, Debug)]
pub struct Settings {
    /// IstioOperator files (install.istio.io/v1alpha1), later over earlier.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// `path=value` over the files, as istioctl's (`profile=demo`,
    /// `meshConfig.accessLogFile=/dev/stdout`, `values.global.hub=...`).
    #[arg(short = 's', long = "set")]
    pub sets: Vec<String>,
    /// default, demo, minimal or empty (istioctl's profiles).
    #[arg(long)]
    pub profile: Option<String>,
}

impl Settings {
    /// The manifest, with its warnings printed to stderr.
    pub fn manifest(&self) -> Result<Manifest> {
        let m = manifest::generate(&Request {
            files: self.files.clone(),
            sets: self.sets.clone(),
            profile: self.profile.clone(),
        })?;
        for w in &m.warnings {
            eprintln!("warning: {w}");
        }
        Ok(m)
    }
}

#[derive(Subcommand, Clone, Debug)]
pub enum ManifestAction {
    /// Print the manifests an install applies (YAML, one document per object).
    Generate(Settings),
}

#[derive(Args, Clone, Debug)]
pub struct InstallArgs {
    #[command(flatten)]
    pub settings: Settings,
    /// Accepted for istioctl's habit (`-y`): install never asks.
    #[arg(short = 'y', long)]
    pub skip_confirmation: bool,
    /// How long to wait for the Deployments to be available.
    #[arg(long, default_value = "300s", value_parser = duration::parse)]
    pub readiness_timeout: Duration,
    /// Apply and return without waiting for the Deployments.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args, Clone, Debug)]
pub struct UninstallArgs {
    /// Also delete the CRDs (and every Istio resource stored in them) and
    /// the control plane's namespace, if the install created them.
    #[arg(long)]
    pub purge: bool,
    /// Accepted for istioctl's habit (`-y`).
    #[arg(short = 'y', long)]
    pub skip_confirmation: bool,
}

#[derive(Args, Clone, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Args, Clone, Debug)]
pub struct CheckArgs {
    /// Before install: may this user create what the install creates?
    #[arg(long)]
    pub pre: bool,
}

pub fn manifest(action: &ManifestAction) -> Result<()> {
    match action {
        ManifestAction::Generate(settings) => {
            crate::commands::print(&settings.manifest()?.to_yaml()?)
        }
    }
}

pub async fn install(args: &InstallArgs, cluster: &Cluster) -> Result<()> {
    let m = args.settings.manifest()?;
    let (client, _) = cluster.connect().await?;
    let readiness_timeout = (!args.no_wait).then_some(args.readiness_timeout);
    apply::install(&client, &m, &InstallOptions { readiness_timeout }).await
}

pub async fn uninstall(args: &UninstallArgs, cluster: &Cluster) -> Result<()> {
    let (client, _) = cluster.connect().await?;
    super::uninstall::uninstall(&client, args.purge, Duration::from_secs(180)).await
}

pub async fn verify_install(args: &VerifyArgs, cluster: &Cluster) -> Result<()> {
    let m = args.settings.manifest()?;
    let (client, _) = cluster.connect().await?;
    let (report, ok) = super::check::verify(&client, &m).await?;
    crate::commands::print(&report)?;
    if !ok {
        bail!("the install is incomplete");
    }
    Ok(())
}

pub async fn check(args: &CheckArgs, cluster: &Cluster) -> Result<()> {
    let (report, ok) = super::check::check(cluster, args.pre).await;
    crate::commands::print(&report)?;
    if !ok {
        bail!("some checks failed");
    }
    Ok(())
}
