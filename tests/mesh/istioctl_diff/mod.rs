//! Differential tests: `trellis validate` and `trellis analyze` against
//! istioctl itself (built from the istio.io/istio module by
//! scripts/istioctl.sh), on generated resources — valid ones and minimally
//! broken variants of each field of each kind — plus hand-written seeds of
//! the tricky cases. No expectation is kept by hand: istioctl's verdict is
//! the expectation, except for the deliberate differences listed in
//! docs/reference/analysis.md (and in `validate::KNOWN_DIFFERENCES`).
//!
//! Bounded in the suite (`TRELLIS_DIFF_CASES`, default 120 generated
//! documents and 24 generated folders); set it higher to search longer. A
//! disagreement prints the document, both verdicts and the seed to replay;
//! each one found becomes a seed in `generator::SEEDS` once fixed.
//!
//! `generator` makes the inputs; `validate` and `analyze` compare the
//! verdicts of the two tools on them.

mod analyze;
mod generator;
mod measure;
mod validate;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail, ensure};
use e2e::repo_root;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// istioctl's path, or `None` (outside CI) when it has not been built.
pub(super) fn istioctl(test: &str) -> Result<Option<PathBuf>> {
    let out = Command::new(repo_root().join("scripts/istioctl.sh"))
        .arg("--where")
        .output()
        .context("scripts/istioctl.sh --where")?;
    ensure!(out.status.success(), "scripts/istioctl.sh --where failed");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if path.is_file() {
        return Ok(Some(path));
    }
    if std::env::var_os("CI").is_some() {
        bail!("istioctl is not built: run scripts/istioctl.sh (scripts/test.sh does)");
    }
    eprintln!(
        "SKIPPED {test}: istioctl is not built (run scripts/istioctl.sh, as scripts/test.sh does)"
    );
    Ok(None)
}

pub(super) fn cases() -> usize {
    std::env::var("TRELLIS_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120)
}

fn seed() -> [u8; 32] {
    let n: u64 = std::env::var("TRELLIS_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(19);
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&n.to_le_bytes());
    s
}

pub(super) fn runner() -> TestRunner {
    TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed()),
    )
}

pub(super) fn run(program: &Path, args: &[&str]) -> Result<Output> {
    Command::new(program)
        .args(args)
        .env("HOME", std::env::temp_dir())
        .output()
        .with_context(|| format!("running {}", program.display()))
}

pub(super) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
