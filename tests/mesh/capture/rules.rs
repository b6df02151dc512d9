//! `trellis-proxy iptables` on its own, in a namespace of its own.

use anyhow::{Result, ensure};
use e2e::{bin, reserve_block};

use super::lab::{Lab, check, prerequisites, run};

/// `trellis-proxy iptables` in a fresh namespace: applying twice gives the
/// same table, --cleanup leaves nothing of ours.
#[test]
fn iptables_rules_are_idempotent_and_removable() -> Result<()> {
    if let Some(missing) = prerequisites() {
        eprintln!("skipped: needs root and iptables ({missing})");
        return Ok(());
    }
    let (block, _lock) = reserve_block()?;
    let mut lab = Lab::new(block)?;
    lab.add_namespace("rules")?;
    let proxy = bin("trellis-proxy").display().to_string();
    let save = |lab: &Lab| -> Result<String> {
        let out = check(&mut lab.exec("rules", &["iptables-save", "-t", "nat"]))?;
        Ok(out
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"))
    };
    check(&mut lab.exec(
        "rules",
        &[&proxy, "iptables", "--excludeOutboundPorts", "5432"],
    ))?;
    let first = save(&lab)?;
    check(&mut lab.exec(
        "rules",
        &[&proxy, "iptables", "--excludeOutboundPorts", "5432"],
    ))?;
    ensure!(save(&lab)? == first, "re-running changes nothing");
    ensure!(
        first.contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"),
        "{first}"
    );
    ensure!(
        first
            .lines()
            .filter(|l| *l == "-A OUTPUT -p tcp -j ISTIO_OUTPUT")
            .count()
            == 1,
        "one jump to ISTIO_OUTPUT: {first}"
    );
    let v6 = check(&mut lab.exec("rules", &["ip6tables-save", "-t", "nat"]))?;
    ensure!(
        v6.contains("-A ISTIO_OUTPUT -d ::1/128 -j RETURN"),
        "IPv6 rules: {v6}"
    );
    let dry = check(&mut lab.exec("rules", &[&proxy, "iptables", "--dry-run", "--cleanup"]));
    ensure!(dry.is_err(), "--dry-run and --cleanup conflict");
    check(&mut lab.exec("rules", &[&proxy, "iptables", "--cleanup"]))?;
    let after = save(&lab)?;
    ensure!(
        !after.contains("ISTIO"),
        "cleanup removes every chain and jump: {after}"
    );
    let bad = run(&mut lab.exec(
        "rules",
        &[
            &proxy,
            "iptables",
            "--excludeOutboundIPRanges",
            "10.0.0.0/33",
        ],
    ))?;
    ensure!(
        !bad.status.success()
            && String::from_utf8_lossy(&bad.stderr).contains("excludeOutboundIPRanges"),
        "a bad range is named: {}",
        String::from_utf8_lossy(&bad.stderr)
    );
    Ok(())
}
