//! `trellis up` itself: bad input stops it before anything starts; the
//! CLI sees the pods; a crashed process is restarted.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use e2e::{Mesh, bin, eventually, http, pids_with_arg, repo_root, reserve_block};

#[test]
fn malformed_manifest_stops_up_before_anything_starts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let good =
        std::fs::read_to_string(repo_root().join("examples/bookinfo/bookinfo-gateway.yaml"))?;
    std::fs::write(dir.path().join("a-good.yaml"), good)?;
    std::fs::write(
        dir.path().join("b-bad.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ok\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: broken\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination:\n        host: reviews\n      weight: lots\n",
    )?;
    let (block, _lock) = reserve_block()?;
    let out = Command::new(bin("trellis"))
        .args([
            "up",
            &dir.path().display().to_string(),
            "--block",
            &block.to_string(),
            "--state-dir",
        ])
        .arg(dir.path().join("state"))
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("b-bad.yaml"), "names the file: {stderr}");
    assert!(
        stderr.contains("document 2"),
        "names the document: {stderr}"
    );
    assert!(stderr.contains("weight"), "names the field: {stderr}");
    assert!(stderr.contains("nothing was started"), "{stderr}");
    assert!(
        !dir.path().join("state/logs").exists(),
        "no process was started"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_listed_and_a_crashed_sidecar_is_restarted() -> Result<()> {
    let mesh = Mesh::up(&repo_root().join("examples/bookinfo"))?;
    let pods = mesh.pods()?;
    let names: Vec<&str> = pods
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        pods.len(),
        7,
        "6 Bookinfo pods and the ingress gateway: {names:?}"
    );
    for prefix in [
        "productpage-v1-",
        "details-v1-",
        "ratings-v1-",
        "reviews-v1-",
        "reviews-v2-",
        "reviews-v3-",
        "istio-ingressgateway-",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(prefix)),
            "{prefix} in {names:?}"
        );
    }
    let table = mesh.trellis(&["get", "pods"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("productpage-v1-") && table.contains("2/2") && table.contains("Running"),
        "{table}"
    );
    assert!(
        table.lines().next().is_some_and(|h| h.contains("RESTARTS")),
        "{table}"
    );

    // Kill the details sidecar: the page degrades, then recovers once it is restarted.
    let details = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["app"] == "details")
        .expect("details pod");
    let ip = details["status"]["podIP"]
        .as_str()
        .expect("pod ip")
        .to_string();
    let client = http();
    eventually(Duration::from_secs(30), || async {
        let page = client
            .get(format!("{}/productpage", mesh.gateway))
            .send()
            .await?
            .text()
            .await?;
        anyhow::ensure!(
            page.contains("Book Details") && !page.contains("Error fetching product details"),
            "not ready"
        );
        Ok(())
    })
    .await?;
    let pids = pids_with_arg(&ip);
    assert!(
        !pids.is_empty(),
        "the details sidecar runs with --pod-ip {ip}"
    );
    for pid in pids {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )?;
    }
    eventually(Duration::from_secs(30), || async {
        let page = client
            .get(format!("{}/productpage", mesh.gateway))
            .send()
            .await?
            .text()
            .await?;
        anyhow::ensure!(
            !page.contains("Error fetching product details"),
            "details not back yet"
        );
        Ok(())
    })
    .await?;
    // `get pods` counts the restart, as kubectl's RESTARTS column does.
    let name = details["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    eventually(Duration::from_secs(10), || async {
        let pods = mesh.pods()?;
        let pod = pods
            .iter()
            .find(|p| p["metadata"]["name"] == name.as_str())
            .ok_or_else(|| anyhow::anyhow!("{name} gone"))?;
        let proxy = pod
            .pointer("/status/containerStatuses")
            .and_then(|c| c.as_array())
            .and_then(|c| c.iter().find(|c| c["name"] == "istio-proxy"))
            .ok_or_else(|| anyhow::anyhow!("no istio-proxy status: {pod}"))?;
        anyhow::ensure!(
            proxy["restartCount"] == 1 && proxy["ready"] == true,
            "{proxy}"
        );
        Ok(())
    })
    .await?;
    let table = String::from_utf8_lossy(&mesh.trellis(&["get", "pods"]).stdout).into_owned();
    let row = table
        .lines()
        .find(|l| l.contains(&name))
        .unwrap_or_default();
    assert!(
        row.split_whitespace().collect::<Vec<_>>().get(2..5) == Some(&["2/2", "Running", "1"]),
        "READY 2/2, STATUS Running, RESTARTS 1: {table}"
    );
    Ok(())
}
