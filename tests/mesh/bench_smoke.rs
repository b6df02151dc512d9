//! The benchmarks cannot rot: each runs here for a moment on a tiny input.
//! (Nothing here asserts a time; the figures live in docs/benchmarks.md.)

use std::process::Command;

use e2e::bin;

#[test]
fn control_plane_benchmark_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("cp.json");
    let out = Command::new(bin("bench-control-plane"))
        .args([
            "--services",
            "20",
            "--endpoints-per-service",
            "3",
            "--proxies",
            "5",
            "--changes",
            "2",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("run the benchmark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("first full push to every proxy"), "{table}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).expect("json")).expect("valid json");
    assert_eq!(results["endpoints"], 60);
    assert!(results["rss_peak_mib"].as_f64().unwrap_or(0.0) > 0.0);
}

/// `bench/run.sh --quick` with the debug binaries: direct, Trellis and Envoy
/// each run every scenario for half a second (with mTLS between the sidecars,
/// gRPC and new connections included), and every figure comes out.
/// Needs Envoy and oha, which `bench/setup.sh` installs (run.sh calls it).
#[test]
fn data_plane_benchmark_runs() {
    let (block, _lock) = e2e::reserve_block().expect("a loopback block");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(e2e::repo_root().join("bench/run.sh"))
        .arg("--quick")
        .arg("--bin-dir")
        .arg(e2e::bin_dir())
        .args(["--block", &block.to_string(), "--out"])
        .arg(dir.path())
        .output()
        .expect("run bench/run.sh");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("| Figure | Direct | Trellis | Envoy | Trellis ÷ Envoy |"),
        "{table}"
    );
    let text =
        std::fs::read_to_string(dir.path().join("data-plane.json")).expect("data-plane.json");
    let results: serde_json::Value = serde_json::from_str(&text).expect("valid json");
    // mTLS between the sidecars is the default: both pairs ran with it.
    assert_eq!(results["settings"]["mtls"], true, "{}", results["settings"]);
    let figures = results["figures"].as_array().expect("figures");
    assert!(figures.len() >= 23, "{figures:?}");
    for key in [
        "added_p99_ms",
        "grpc_req_per_core_s",
        "grpc_p99_ms",
        "conn_per_core_s",
        "mesh_rss_load_mib",
        "soak_rss_kept_mib",
        "soak_sockets_after",
        "tel_added_p99_ratio",
        "tel_req_per_core_ratio",
    ] {
        assert!(
            figures.iter().any(|f| f["key"] == key),
            "no {key} figure in {figures:?}"
        );
    }
    for f in figures {
        let key = f["key"].as_str().expect("key");
        for side in ["trellis", "envoy"] {
            assert!(
                f[side].as_f64().is_some_and(f64::is_finite),
                "{key}: no {side} figure in {f}"
            );
        }
        // The ratio, unless Envoy's figure is exactly zero (an added latency can be, in a smoke run).
        assert!(
            f["trellis_over_envoy"].as_f64().is_some() || f["envoy"] == 0.0,
            "{key}: no ratio in {f}"
        );
        // Latency and throughput are measured without a proxy too.
        if key.starts_with("lat_") || key.ends_with("_rps") {
            assert!(
                f["direct"].as_f64().is_some_and(f64::is_finite),
                "{key}: no direct figure in {f}"
            );
        }
    }
}
