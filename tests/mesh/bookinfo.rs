//! The Bookinfo demo: the product page through the gateway, every service
//! reached through its sidecar, and Istio's routing tasks applied live.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use e2e::{Mesh, counter_sum, eventually, http, repo_root};

/// Which reviews version served a product page (from "Reviews served by: reviews-vN-…").
fn reviews_version(page: &str) -> Option<String> {
    let at = page.find("reviews-v")?;
    Some(page[at + "reviews-".len()..at + "reviews-".len() + 2].to_string())
}

async fn product_page(client: &reqwest::Client, gateway: &str) -> Result<String> {
    let resp = client.get(format!("{gateway}/productpage")).send().await?;
    ensure!(resp.status() == 200, "status {}", resp.status());
    let body = resp.text().await?;
    ensure!(
        body.contains("The Comedy of Errors") && body.contains("Book Details"),
        "not the product page: {body:.300}"
    );
    ensure!(
        !body.contains("Error fetching"),
        "an upstream failed: {body}"
    );
    Ok(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_through_sidecars_and_live_routing() -> Result<()> {
    let root = repo_root();
    let mesh = Mesh::up(&root.join("examples/bookinfo"))?;
    let client = http();

    let first = eventually(Duration::from_secs(30), || {
        product_page(&client, &mesh.gateway)
    })
    .await?;
    assert!(first.contains("William Shakespeare"));

    // Without routing rules reviews rotates across v1, v2 and v3.
    let mut versions = BTreeSet::new();
    let mut saw_stars = false;
    for _ in 0..30 {
        let page = product_page(&client, &mesh.gateway).await?;
        saw_stars |= page.contains("<span class=\"glyphicon glyphicon-star\">");
        versions.extend(reviews_version(&page));
    }
    assert!(versions.len() >= 2, "reviews versions seen: {versions:?}");
    assert!(saw_stars, "no page showed ratings");

    // Every service was reached through its sidecar: each inbound sidecar counted requests.
    let pods = mesh.pods()?;
    for app in ["productpage", "details", "reviews", "ratings"] {
        let mut total = 0.0;
        for pod in pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["app"] == app)
        {
            let admin = pod["metadata"]["annotations"]["proxy.trellis.io/admin"]
                .as_str()
                .unwrap_or_default();
            let stats = client
                .get(format!("http://{admin}/stats/prometheus"))
                .send()
                .await?
                .text()
                .await?;
            total += counter_sum(
                &stats,
                "istio_requests_total",
                &[("reporter", "destination")],
            );
        }
        assert!(total > 0.0, "no request reached {app} through a sidecar");
    }

    // Istio's task: route everything to v1, applied while the mesh runs.
    for file in ["destination-rule-all.yaml", "virtual-service-all-v1.yaml"] {
        let path = root.join("examples/bookinfo/networking").join(file);
        let out = mesh.trellis(&["apply", "-f", &path.display().to_string()]);
        assert!(
            out.status.success(),
            "apply {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The operator's view: the productpage sidecar's own config has the subset clusters and routes.
    let productpage = pods
        .iter()
        .find(|p| p["metadata"]["labels"]["app"] == "productpage")
        .expect("productpage pod");
    let pod = format!(
        "{}.default",
        productpage["metadata"]["name"].as_str().unwrap_or_default()
    );
    // Waited for in the proxy's own config first: five v1 pages in a row
    // can also come from the rotation while the push is on its way.
    eventually(Duration::from_secs(15), || async {
        let out = mesh.trellis(&["proxy-config", "clusters", &pod]);
        let clusters = String::from_utf8_lossy(&out.stdout);
        ensure!(
            clusters.contains("outbound|9080|v1|reviews.default.svc.cluster.local"),
            "{clusters}"
        );
        let out = mesh.trellis(&["proxy-config", "routes", &pod, "-o", "json"]);
        let routes: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let origin = routes
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|rc| rc["virtual_hosts"].as_array().cloned().unwrap_or_default())
            .find(|vh| vh["name"] == "reviews.default.svc.cluster.local:9080")
            .map(|reviews| reviews["routes"][0]["origin"].clone());
        ensure!(
            origin.as_ref().and_then(|o| o.as_str()) == Some("VirtualService/default/reviews"),
            "reviews route origin: {origin:?}"
        );
        Ok(())
    })
    .await?;
    eventually(Duration::from_secs(15), || async {
        for _ in 0..5 {
            let page = product_page(&client, &mesh.gateway).await?;
            if reviews_version(&page).as_deref() != Some("v1") {
                bail!("still served by {:?}", reviews_version(&page));
            }
        }
        Ok(())
    })
    .await?;
    for _ in 0..20 {
        let page = product_page(&client, &mesh.gateway).await?;
        assert_eq!(reviews_version(&page).as_deref(), Some("v1"));
        assert!(
            !page.contains("<span class=\"glyphicon glyphicon-star"),
            "v1 shows no stars"
        );
    }

    // jason sees v2 (black stars); others keep v1.
    let path = root.join("examples/bookinfo/networking/virtual-service-reviews-test-v2.yaml");
    let out = mesh.trellis(&["apply", "-f", &path.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(Duration::from_secs(15), || async {
        let resp = client
            .get(format!("{}/productpage", mesh.gateway))
            .header("cookie", "user=jason")
            .send()
            .await?;
        let page = resp.text().await?;
        ensure!(
            reviews_version(&page).as_deref() == Some("v2"),
            "jason got {:?}",
            reviews_version(&page)
        );
        ensure!(
            page.contains("<font color=\"black\">"),
            "v2 has black stars"
        );
        Ok(())
    })
    .await?;
    let page = product_page(&client, &mesh.gateway).await?;
    assert_eq!(reviews_version(&page).as_deref(), Some("v1"));
    Ok(())
}
