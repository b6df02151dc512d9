//! A real browser at the address `trellis up` prints shows the product page.

use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use e2e::{Mesh, eventually, http, repo_root};

fn chromium(args: &[&str], profile: &std::path::Path) -> std::io::Result<std::process::Output> {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-proxy-server",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_shows_the_product_page() -> Result<()> {
    let mesh = Mesh::up(&repo_root().join("examples/bookinfo"))?;
    let url = format!("{}/productpage", mesh.gateway);
    let client = http();
    eventually(Duration::from_secs(30), || async {
        let body = client.get(&url).send().await?.text().await?;
        ensure!(
            body.contains("Book Reviews") && !body.contains("Error fetching"),
            "not ready"
        );
        Ok(())
    })
    .await?;
    let profile = tempfile::tempdir()?;
    let out = chromium(&["--dump-dom", &url], profile.path()).map_err(|e| {
        anyhow::anyhow!("chromium must be installed (scripts/test.sh installs it): {e}")
    })?;
    let dom = String::from_utf8_lossy(&out.stdout);
    for text in [
        "Bookinfo Sample",
        "The Comedy of Errors",
        "William Shakespeare",
        "Book Details",
        "Book Reviews",
        "Reviews served by",
    ] {
        assert!(
            dom.contains(text),
            "the rendered page lacks {text:?}:\n{dom:.2000}"
        );
    }
    // A screenshot for people to look at (kept when TRELLIS_SCREENSHOT names a file).
    if let Ok(path) = std::env::var("TRELLIS_SCREENSHOT") {
        let shot = chromium(
            &[
                &format!("--screenshot={path}"),
                "--window-size=1200,900",
                &url,
            ],
            profile.path(),
        )?;
        assert!(
            shot.status.success(),
            "{}",
            String::from_utf8_lossy(&shot.stderr)
        );
    }
    Ok(())
}
