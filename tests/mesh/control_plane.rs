//! The control plane as operators rely on it: proxies keep serving while it is
//! down, resynchronise when it returns, and report their sync state.

use std::time::Duration;

use anyhow::{Result, ensure};
use e2e::{Mesh, eventually, http, pids_with_arg, repo_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_survives_a_control_plane_crash_and_config_resyncs() -> Result<()> {
    let root = repo_root();
    let mesh = Mesh::up(&root.join("examples/bookinfo"))?;
    let client = http();
    let page = || async {
        let body = client.get(format!("{}/productpage", mesh.gateway)).send().await?.text().await?;
        ensure!(body.contains("Book Details") && !body.contains("Error fetching"), "page not whole");
        Ok(body)
    };
    eventually(Duration::from_secs(30), page).await?;

    let status = mesh.trellis(&["proxy-status"]);
    let table = String::from_utf8_lossy(&status.stdout);
    assert_eq!(table.matches("SYNCED").count(), 7 * 4, "every proxy synced every type:\n{table}");

    // Kill trellisd: no proxy loses its config, so the page keeps working.
    let xds = format!("127.{}.0.1:15010", mesh.block);
    let pids = pids_with_arg(&xds).into_iter().filter(|p| is_trellisd(*p)).collect::<Vec<_>>();
    assert_eq!(pids.len(), 1, "one trellisd serves {xds}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pids[0]), nix::sys::signal::Signal::SIGKILL)?;
    for _ in 0..20 {
        page().await?;
    }

    // `trellis up` restarts it; a change applied then reaches the proxies.
    let all_v1 = ["destination-rule-all.yaml", "virtual-service-all-v1.yaml"];
    eventually(Duration::from_secs(20), || async {
        for file in all_v1 {
            let path = root.join("examples/bookinfo/networking").join(file);
            let out = mesh.trellis(&["apply", "-f", &path.display().to_string()]);
            ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    })
    .await?;
    eventually(Duration::from_secs(20), || async {
        for _ in 0..5 {
            let body = page().await?;
            ensure!(body.contains("reviews-v1-"), "not yet v1 only");
        }
        Ok(())
    })
    .await?;
    eventually(Duration::from_secs(10), || async {
        let out = mesh.trellis(&["proxy-status"]);
        let table = String::from_utf8_lossy(&out.stdout).to_string();
        ensure!(table.matches("SYNCED").count() == 7 * 4, "not all synced again:\n{table}");
        Ok(())
    })
    .await?;
    Ok(())
}

fn is_trellisd(pid: i32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p.ends_with("trellisd"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_apply_is_refused_and_changes_nothing() -> Result<()> {
    let mesh = Mesh::up(&repo_root().join("examples/bookinfo"))?;
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: good}\nspec: {host: reviews}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subet: v1}\n",
    )?;
    let out = mesh.trellis(&["apply", "-f", &bad.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("bad.yaml") && stderr.contains("subet") && stderr.contains("subset"), "{stderr}");
    // The valid document in the same file was not stored either.
    let out = mesh.trellis(&["get", "destinationrules", "good"]);
    assert!(!out.status.success(), "nothing from the refused file was stored");
    let out = mesh.trellis(&["get", "virtualservices", "-A", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let names: Vec<&str> = list["items"].as_array().into_iter().flatten().filter_map(|i| i["metadata"]["name"].as_str()).collect();
    assert_eq!(names, vec!["bookinfo"], "only the demo's own VirtualService");
    Ok(())
}
