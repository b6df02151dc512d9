//! Which program a container runs on this machine, as `trellis up` and
//! `trellis node` map images: a named command, a Bookinfo image's
//! `trellis-sample` role, or the program an image is named after.

use std::path::PathBuf;

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Container;

/// Finds a program: next to the running `trellis` binary first, then on PATH.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let beside = std::env::current_exe().ok()?.parent()?.join(name);
    if beside.is_file() {
        return Some(beside);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// What a container's image runs on one machine: its `command` if it names a
/// program, else Istio's Bookinfo images map to the matching `trellis-sample`
/// role, and an image named like a program runs that program.
pub fn program_for(c: &Container) -> Result<(PathBuf, Vec<String>)> {
    let args = c.args.clone().unwrap_or_default();
    if let Some(cmd) = c.command.as_ref().and_then(|c| c.first()) {
        let path = if cmd.contains('/') {
            Some(PathBuf::from(cmd))
        } else {
            find_program(cmd)
        };
        let Some(path) = path else {
            bail!(
                "container {}: program {cmd:?} not found next to trellis or on PATH",
                c.name
            )
        };
        let mut all: Vec<String> = c.command.iter().flatten().skip(1).cloned().collect();
        all.extend(args);
        return Ok((path, all));
    }
    let image = c.image.clone().unwrap_or_default();
    let base = image.rsplit('/').next().unwrap_or_default();
    let base = base.split([':', '@']).next().unwrap_or_default();
    if let Some(rest) = base.strip_prefix("examples-bookinfo-") {
        // e.g. examples-bookinfo-reviews-v2 → trellis-sample reviews --version v2
        let (role, version) = rest.rsplit_once("-v").map_or((rest, "1"), |(r, v)| (r, v));
        let Some(sample) = find_program("trellis-sample") else {
            bail!("trellis-sample not found next to trellis or on PATH")
        };
        let mut all = vec![
            role.to_string(),
            "--version".into(),
            format!("v{version}"),
            "--service".into(),
            role.to_string(),
        ];
        all.extend(args);
        return Ok((sample, all));
    }
    match find_program(base) {
        Some(p) => Ok((p, args)),
        None => bail!(
            "container {}: cannot run image {image:?} on this machine: give the container a `command` naming a program",
            c.name
        ),
    }
}
