//! DNS capture: the sidecar answers mesh names and ServiceEntry hosts, and
//! forwards the rest.

use std::time::Duration;

use anyhow::{Result, ensure};

use super::lab::{check, run, wait_for};
use super::pods::Running;

/// 4. A ServiceEntry host gets an auto-allocated VIP; an outside name is
///    forwarded to the host's resolvers (unreachable from these
///    namespaces: the query fails, with a log line naming it).
pub fn answers_mesh_names_and_forwards_others(m: &Running) -> Result<()> {
    let lab = &m.lab;
    let hosts = check(&mut lab.exec("a", &["getent", "hosts", "api.external.test"]))?;
    ensure!(
        hosts.starts_with("240.240."),
        "ServiceEntry host answered by the DNS proxy: {hosts}"
    );
    let b_addr = check(&mut lab.exec("a", &["getent", "ahostsv4", "b"]))?;
    ensure!(
        b_addr.starts_with("240.240."),
        "service b answered by the DNS proxy: {b_addr}"
    );
    let outside = run(&mut lab.exec("a", &["getent", "hosts", "outside.example.org"]))?;
    ensure!(!outside.status.success(), "an outside name is not made up");
    wait_for(
        Duration::from_secs(15),
        "the DNS forward's failure is logged",
        || Ok(lab.log("proxy-a.log").contains("outside.example.org")),
    )?;
    Ok(())
}
